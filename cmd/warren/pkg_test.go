package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestPackages installs the built .deb on this machine and checks what an
// administrator gets: files, the warren user, a working binary, apt through
// the shipped auto-detect helper with the daemon up (through warren) and
// down (DIRECT), then purge. The .rpm is checked with rpm -qip/-qlp. Run by
// `make test-pkg` (root, after make deb rpm).
func TestPackages(t *testing.T) {
	requireRootStep(t, "WARREN_PKG", "the package test (it installs a .deb)")
	requireTools(t, "dpkg", "rpm", "apt-get", "apt-ftparchive", "gpg")
	debs, _ := filepath.Glob("../../dist/warren_*.deb")
	rpms, _ := filepath.Glob("../../dist/warren-*.rpm")
	if len(debs) != 1 || len(rpms) != 1 {
		t.Fatalf("want one .deb and one .rpm in dist/ (make deb rpm), found %v %v", debs, rpms)
	}
	sh := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	t.Cleanup(func() { exec.Command("dpkg", "--purge", "warren").Run() })

	// The .rpm, read with Debian's rpm.
	info := sh("rpm", "-qip", rpms[0])
	list := sh("rpm", "-qlp", rpms[0])
	if !strings.Contains(info, "warren") || !strings.Contains(info, "LAN peer-to-peer") {
		t.Fatalf("rpm -qip:\n%s", info)
	}
	for _, f := range []string{"/usr/bin/warren", "/lib/systemd/system/warren.service", "/etc/warren/warren.yaml", "/usr/lib/warren/apt-proxy-detect"} {
		if !strings.Contains(list, f) {
			t.Fatalf("rpm lacks %s:\n%s", f, list)
		}
	}
	if strings.Contains(list, "apt.conf.d") {
		t.Fatalf("the rpm ships apt's snippet:\n%s", list)
	}
	// The config may hold tokens: never readable by all (its group is
	// warren once the post-install script has run).
	if l := sh("rpm", "-qlvp", rpms[0]); !regexp.MustCompile(`(?m)^-rw-r----- .*/etc/warren/warren.yaml$`).MatchString(l) {
		t.Fatalf("the rpm's warren.yaml is not mode 0640:\n%s", l)
	}

	// The .deb, installed for real.
	sh("dpkg", "-i", debs[0])
	for _, f := range []string{"/usr/bin/warren", "/lib/systemd/system/warren.service", "/etc/warren/warren.yaml",
		"/etc/apt/apt.conf.d/30warren", "/usr/lib/warren/apt-proxy-detect", "/etc/ca-certificates/update.d/warren"} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("after dpkg -i: %v", err)
		}
	}
	// update-ca-certificates runs its hooks: warren's refreshes a bundle
	// only where apt-setup was run, and never fails the update.
	sh("/etc/ca-certificates/update.d/warren")
	if _, err := os.Stat("/etc/warren/ca-bundle.crt"); err == nil {
		t.Fatal("the ca-certificates hook wrote a bundle where apt-setup was never run")
	}
	if out := sh("getent", "passwd", "warren"); !strings.Contains(out, "warren") {
		t.Fatalf("no warren user: %s", out)
	}
	if out := sh("stat", "-c", "%U", "/var/cache/warren"); strings.TrimSpace(out) != "warren" {
		t.Fatalf("/var/cache/warren owned by %s", out)
	}
	// The config may hold tokens: root writes it, the daemon (group
	// warren) reads it, nobody else does.
	configMode := func(when string) {
		t.Helper()
		if out := strings.TrimSpace(sh("stat", "-c", "%a %U %G", "/etc/warren/warren.yaml")); out != "640 root warren" {
			t.Fatalf("%s, /etc/warren/warren.yaml is %s, want 640 root warren", when, out)
		}
	}
	configMode("after dpkg -i")
	if out := sh("/usr/bin/warren", "--version"); !strings.Contains(out, "warren version") {
		t.Fatalf("--version: %s", out)
	}
	unit := sh("cat", "/lib/systemd/system/warren.service")
	for _, want := range []string{"User=warren", "CacheDirectory=warren", "ProtectSystem=strict", "NoNewPrivileges=yes"} {
		if !strings.Contains(unit, want) {
			t.Fatalf("unit lacks %s", want)
		}
	}
	sh("/usr/bin/warren", "config", "check", "--config", "/etc/warren/warren.yaml")

	// The administrator's settings: a free loopback port, no discovery
	// (peering traffic never leaves this machine), and the test's upstream
	// on loopback allowed.
	addr := freeLoopbackPort(t)
	settings := fmt.Sprintf("listen: %q\ndiscovery: \"off\"\nallow_upstream: [127.0.0.0/8]\n", addr)
	if err := os.WriteFile("/etc/warren/warren.yaml", []byte(settings), 0o644); err != nil {
		t.Fatal(err)
	}
	// An upgrade (here the same package again) keeps the administrator's
	// file, and leaves it 0640 root:warren even if it was loosened.
	os.Chmod("/etc/warren/warren.yaml", 0o644)
	sh("dpkg", "-i", debs[0])
	configMode("after an upgrade over a changed (and loosened) config")
	if b, _ := os.ReadFile("/etc/warren/warren.yaml"); string(b) != settings {
		t.Fatalf("an upgrade replaced the administrator's config:\n%s", b)
	}
	// As the service runs it: user warren (the signal goes to warren itself).
	u, err := user.Lookup("warren")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	daemon := exec.Command("/usr/bin/warren", "serve", "--config", "/etc/warren/warren.yaml")
	daemon.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	logs, ready := startLogged(t, daemon, "packaged warren")
	stop := func() { daemon.Process.Signal(os.Interrupt); daemon.Wait() }
	waitReady(t, ready, logs, "the packaged daemon")

	base := t.TempDir()
	repo := buildAptRepo(t, base)
	up := serveDir(t, repo.root)
	sources := fmt.Sprintf("deb [signed-by=%s] %s/ stable main", repo.keyring, up.URL)
	shipped, _ := os.ReadFile("/etc/apt/apt.conf.d/30warren")
	aptWithHelper := func(name string) *aptClient {
		c := newAptClient(t, base, name, sources, "")
		os.WriteFile(filepath.Join(c.dir, "apt.conf.d", "30warren"), shipped, 0o644)
		return c
	}
	const small = "/pool/main/warren-e2e-small_1.0_all.deb"
	c1 := aptWithHelper("via-warren")
	c1.run("update")
	c1.run("download", "warren-e2e-small")
	if !strings.Contains(logs.String(), "url="+up.URL+small) {
		t.Fatalf("apt did not go through warren with the daemon up; warren log:\n%s", logs.String())
	}
	if out := sh("/usr/lib/warren/apt-proxy-detect", "http://example.invalid/x"); strings.TrimSpace(out) != "http://"+addr {
		t.Fatalf("helper with the daemon up: %q", out)
	}

	stop()
	if out := sh("/usr/lib/warren/apt-proxy-detect", "http://example.invalid/x"); strings.TrimSpace(out) != "DIRECT" {
		t.Fatalf("helper with the daemon down: %q", out)
	}
	before := up.count(small)
	c2 := aptWithHelper("direct")
	c2.run("update")
	c2.run("download", "warren-e2e-small")
	if up.count(small) != before+1 {
		t.Fatalf("with warren down apt did not fetch DIRECT")
	}

	sh("dpkg", "--purge", "warren")
	for _, f := range []string{"/usr/bin/warren", "/etc/apt/apt.conf.d/30warren", "/usr/lib/warren/apt-proxy-detect", "/var/cache/warren", "/etc/warren", "/etc/ca-certificates/update.d/warren"} {
		if _, err := os.Stat(f); err == nil {
			t.Fatalf("%s is still there after dpkg --purge", f)
		}
	}
	if exec.Command("getent", "passwd", "warren").Run() == nil {
		t.Fatal("the warren user is still there after purge")
	}
}
