package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPreloadSiteOverNetns is a site whose hub only serves what it
// preloaded: a mirror behind a 50 Mbit/s WAN with a signed apt repository
// and an rpm repository, a hub in preload mode with a preload list (an apt
// glob, an rpm glob), and a node that may use only the hub.
//
//   - Before any run, the node's request is refused, with no WAN traffic.
//   - `warren preload run --dry-run` prints the counts and bytes, and
//     fetches none of the artifacts; `warren preload run` fetches exactly
//     those, each once; a second run moves nothing.
//   - With the mirror stopped, real apt-get (update, install
//     --download-only) and dnf (download) on the node get the preloaded
//     packages, every one checked against its hash.
func TestPreloadSiteOverNetns(t *testing.T) {
	requireRootStep(t, "WARREN_NETNS", "the preload namespace test (ip netns)")
	requireTools(t, "ip", "tc", "curl", "/usr/bin/python3", "apt-get", "apt-ftparchive", "dpkg-deb", "gpg", "xz", "gzip", "dnf", "createrepo_c", "rpmbuild")
	const mirror, hubAddr = "10.79.0.100", "10.79.0.50"
	base := t.TempDir()
	repo := buildAptRepo(t, base)
	_, rpmSums := buildRPMRepo(t, base) // in base/rpmrepo
	arch := strings.TrimSpace(run(t, base, nil, "dpkg", "--print-architecture"))

	lan := newLAN(t, "wrp", "10.79.0")
	lan.host("up", mirror)
	lan.sh("ip", "netns", "exec", lan.ns("up"), "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "50mbit", "burst", "256k", "latency", "100ms")
	lan.host("hub", hubAddr)
	lan.host("h1", "10.79.0.1")
	mirrorCmd := exec.Command("ip", "netns", "exec", lan.ns("up"), "/usr/bin/python3", "-m", "http.server", "80", "--bind", mirror, "--directory", base)
	upLog, _ := startLogged(t, mirrorCmd, "mirror")
	gets := func() map[string]int {
		out := map[string]int{}
		for _, m := range regexp.MustCompile(`"GET (\S+) HTTP/1\.1" 200`).FindAllStringSubmatch(upLog.String(), -1) {
			out[m[1]]++
		}
		return out
	}
	waitUntil(t, "the mirror", 20*time.Second, func() bool {
		_, err := lan.curl("h1", "-o", "/dev/null", "http://"+mirror+"/repo/dists/stable/InRelease")
		return err == nil
	})

	aptURL, rpmURL := "http://"+mirror+"/repo", "http://"+mirror+"/rpmrepo/"
	conf := filepath.Join(base, "hub.yaml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`role: hub
hub_mode: preload
preload_schedule: ""
preload:
  apt: [{url: %q, suites: [stable], components: [main], architectures: [%s], packages: ["warren-e2e-*"]}]
  rpm: [{baseurl: %q, packages: ["warren-e2e-hel*", "libwarren*"]}]
`, aptURL, arch, rpmURL)), 0o644)
	hubCache := filepath.Join(base, "hubcache")
	hub := exec.Command("ip", "netns", "exec", lan.ns("hub"), warrenBinary(t), "serve", "--config", conf, "--listen", "0.0.0.0:3142",
		"--cache-dir", hubCache, "--log-level", "debug")
	hubLogs, ready := startLogged(t, hub, "hub")
	waitReady(t, ready, hubLogs, "hub")
	node := exec.Command("ip", "netns", "exec", lan.ns("h1"), warrenBinary(t), "serve", "--config", "/dev/null", "--listen", "127.0.0.1:3142",
		"--discovery", "off", "--cache-dir", filepath.Join(base, "nodecache"), "--hub", "http://"+hubAddr+":3142", "--hub-only", "--log-level", "debug")
	nodeLogs, ready := startLogged(t, node, "node h1")
	waitReady(t, ready, nodeLogs, "node h1")

	smallPath := "/repo/pool/main/warren-e2e-small_1.0_all.deb"
	code, _ := exec.Command("ip", "netns", "exec", lan.ns("h1"), "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
		"-x", "http://127.0.0.1:3142", "http://"+mirror+smallPath).Output()
	if string(code) != "404" || gets()[smallPath] != 0 {
		t.Fatalf("before any preload run: %s, mirror GETs %d; want 404 and none", code, gets()[smallPath])
	}

	// The artifacts the list names: both debs (the glob) and both rpms.
	artifacts := []string{"/repo/pool/main/warren-e2e-big_1.0_all.deb", smallPath}
	for p := range rpmSums {
		artifacts = append(artifacts, "/rpmrepo"+p)
	}
	fetched := func() (n int) {
		g := gets()
		for _, a := range artifacts {
			n += g[a]
		}
		return n
	}
	out, err := runApp(t, "preload", "run", "--dry-run", "--config", conf, "--cache-dir", hubCache)
	if err != nil || !strings.Contains(out, "the list names 4 artifacts; 4 are not held") || fetched() != 0 {
		t.Fatalf("preload run --dry-run: %v, %d artifacts fetched\n%s", err, fetched(), out)
	}
	t.Logf("dry run: %s", strings.TrimSpace(out))
	out, err = runApp(t, "preload", "run", "--config", conf, "--cache-dir", hubCache)
	if err != nil || !strings.Contains(out, "fetched 4") {
		t.Fatalf("preload run: %v\n%s", err, out)
	}
	t.Logf("run: %s", strings.TrimSpace(out))
	g := gets()
	for _, a := range artifacts {
		if g[a] != 1 {
			t.Fatalf("%s fetched %d times by the run, want once", a, g[a])
		}
	}
	if out, err = runApp(t, "preload", "run", "--config", conf, "--cache-dir", hubCache); err != nil || !strings.Contains(out, "fetched 0") {
		t.Fatalf("a second run: %v\n%s", err, out)
	}

	// The WAN is down: the mirror stops.
	mirrorCmd.Process.Signal(syscall.SIGKILL)
	mirrorCmd.Wait()

	sources := fmt.Sprintf("deb [signed-by=%s] %s/ stable main", repo.keyring, aptURL)
	apt := newAptClient(t, base, "apt-h1", sources, "http://127.0.0.1:3142")
	apt.in = lan.ns("h1")
	if out, err := apt.try("update"); err != nil || strings.Contains(out, "W:") {
		t.Fatalf("apt-get update with the mirror down: %v\n%s", err, out)
	}
	if out, err := apt.try("install", "-y", "--download-only", "warren-e2e-big", "warren-e2e-small"); err != nil {
		t.Fatalf("apt-get install --download-only with the mirror down: %v\n%s", err, out)
	}
	for pool, sum := range repo.debs {
		if got := sha256File(t, filepath.Join(apt.dir, "cache", "archives", filepath.Base(pool))); got != sum {
			t.Fatalf("apt got %s with sha256 %s, want %s", pool, got, sum)
		}
	}
	dl := filepath.Join(base, "dnf-h1", "dl")
	dnfIn(t, lan.ns("h1"), base, "dnf-h1", rpmURL, "http://127.0.0.1:3142", "download", "--destdir="+dl, "warren-e2e-hello", "libwarren++-e2e")
	for p, sum := range rpmSums {
		if got := sha256File(t, filepath.Join(dl, filepath.Base(p))); got != sum {
			t.Fatalf("dnf got %s with sha256 %s, want %s", p, got, sum)
		}
	}
}
