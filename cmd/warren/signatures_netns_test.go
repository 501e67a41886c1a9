package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestSignaturesOverNetns is a site whose mirror turns hostile: a hub
// with the repository's key (signatures.keys), two nodes behind it (which
// have no key for it: the hub guards the site), real apt-get on each, in
// network namespaces of the test's own.
//
//   - The signed generation: apt-get update and a package through a node;
//     the hub's page says the repository verified.
//   - The mirror then serves a new generation, its InRelease re-signed
//     with another key and listing new hashes (a new version of the
//     package). The hub refuses to learn or distribute it and logs why;
//     a node asking for InRelease gets the previous generation, and a new
//     machine's apt-get update and download get the signed package, not
//     the mirror's. Nothing of the forged generation is stored or learnt
//     at the hub, and its page lists the repository as failed, with the
//     reason.
//
// Run by `make test-netns` (WARREN_NETNS=1) as root.
func TestSignaturesOverNetns(t *testing.T) {
	requireRootStep(t, "WARREN_NETNS", "the signatures namespace test (ip netns)")
	requireTools(t, "ip", "curl", "/usr/bin/python3", "apt-get", "apt-ftparchive", "dpkg-deb", "gpg", "xz", "gzip")
	const (
		mirror  = "10.84.0.100"
		hubAddr = "10.84.0.50"
	)
	base := t.TempDir()
	repo := buildAptRepo(t, base)
	lan := newLAN(t, "wsg", "10.84.0")
	lan.host("up", mirror)
	lan.host("hub", hubAddr)
	lan.host("h1", "10.84.0.1")
	lan.host("h2", "10.84.0.2")

	root := filepath.Join(base, "mirror")
	if err := os.Symlink(repo.root, root); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(base, "mirror.py")
	os.WriteFile(script, []byte(mirrorPy), 0o644)
	upLog, _ := startLogged(t, exec.Command("ip", "netns", "exec", lan.ns("up"), "/usr/bin/python3", script, root, mirror, filepath.Join(base, "no-flip")), "mirror")
	mirrorGETs := func(path string) int {
		return len(regexp.MustCompile(`"GET `+regexp.QuoteMeta(path)+` HTTP/1\.1" 200`).FindAllString(upLog.String(), -1))
	}
	waitUntil(t, "the mirror", 20*time.Second, func() bool {
		_, err := lan.curl("h1", "-o", "/dev/null", "http://"+mirror+"/dists/stable/InRelease")
		return err == nil
	})

	// The hub knows the repository's key; apt's and dnf's directories
	// are the test's own, empty (the machine's sources are not this site's).
	empty := filepath.Join(base, "empty")
	os.MkdirAll(empty, 0o755)
	hubCache := filepath.Join(base, "hubcache")
	conf := filepath.Join(base, "hub.yaml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`role: hub
listen: "0.0.0.0:3142"
cache_dir: %s
discovery: "off"
index_ttl: 0s
log_level: debug
verify_signatures: auto
signatures:
  apt_dir: %s
  yum_repos_dir: %s
  keys:
    - url: http://%s/
      keyring: %s
`, hubCache, empty, empty, mirror, repo.keyring)), 0o644)
	hubLogs, ready := startLogged(t, exec.Command("ip", "netns", "exec", lan.ns("hub"), warrenBinary(t), "serve", "--config", conf), "hub")
	waitReady(t, ready, hubLogs, "hub")
	hubURL := "http://" + hubAddr + ":3142"
	for i := 1; i <= 2; i++ {
		cmd := exec.Command("ip", "netns", "exec", lan.ns(fmt.Sprintf("h%d", i)), warrenBinary(t), "serve", "--config", "/dev/null",
			"--listen", "0.0.0.0:3142", "--discovery", "off", "--index-ttl", "0s", "--cache-dir", filepath.Join(base, fmt.Sprintf("cache%d", i)),
			"--hub", hubURL, "--log-level", "debug")
		logs, ready := startLogged(t, cmd, fmt.Sprintf("warren h%d", i))
		waitReady(t, ready, logs, fmt.Sprintf("warren h%d", i))
	}
	sources := fmt.Sprintf("deb [signed-by=%s] http://%s/ stable main", repo.keyring, mirror)
	client := func(host, name string) *aptClient {
		c := newAptClient(t, base, name, sources, "http://127.0.0.1:3142")
		c.in = lan.ns(host)
		return c
	}
	small := "pool/main/warren-e2e-small_1.0_all.deb"
	download := func(c *aptClient) string {
		t.Helper()
		if out, err := c.try("download", "warren-e2e-small"); err != nil {
			t.Fatalf("apt-get download: %v\n%s", err, out)
		}
		matches, _ := filepath.Glob(filepath.Join(c.dir, "dl", "warren-e2e-small_*_all.deb"))
		if len(matches) != 1 {
			t.Fatalf("apt-get download left %q", matches)
		}
		return matches[0]
	}
	hubPage := func() string {
		out, _ := lan.curl("h1", hubURL+"/_warren/")
		return out
	}
	hubStats := func() string {
		out, _ := lan.curl("h1", hubURL+"/_warren/stats")
		return out
	}

	// The signed generation.
	c1 := client("h1", "apt1")
	if out, err := c1.try("update"); err != nil {
		t.Fatalf("apt-get update: %v\n%s", err, out)
	}
	if got := sha256File(t, download(c1)); got != repo.debs[small] {
		t.Fatalf("the signed package: sha256 %s, want %s", got, repo.debs[small])
	}
	if page := hubPage(); !strings.Contains(page, "<td>http://"+mirror+"/dists/stable/</td><td>verified</td>") {
		t.Fatalf("the hub's page does not list the repository as verified:\n%s", page)
	}
	signed := readFile(filepath.Join(repo.root, "dists", "stable", "InRelease"))

	// The mirror turns hostile: a new generation (a new version of the
	// package, new hashes), signed with a key of its own.
	gen2 := aptRepo{root: filepath.Join(base, "hostile"), keyring: repo.keyring, debs: map[string]string{}}
	run(t, base, nil, "cp", "-a", repo.root, gen2.root)
	gen2.addDeb(t, base, "warren-e2e-small", "6.6", 4096, 66)
	hostileKeys := filepath.Join(base, "hostile-gnupg")
	os.MkdirAll(hostileKeys, 0o700)
	t.Cleanup(func() {
		cmd := exec.Command("gpgconf", "--kill", "gpg-agent")
		cmd.Env = append(os.Environ(), "GNUPGHOME="+hostileKeys)
		cmd.Run()
	})
	run(t, base, []string{"GNUPGHOME=" + hostileKeys}, "gpg", "--batch", "--passphrase", "", "--quick-gen-key", "hostile mirror <evil@warren.invalid>", "ed25519", "sign", "never")
	t.Setenv("GNUPGHOME", hostileKeys)
	gen2.sign(t, base)
	forged := readFile(filepath.Join(gen2.root, "dists", "stable", "InRelease"))
	if err := os.Symlink(gen2.root, root+".new"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(root+".new", root); err != nil {
		t.Fatal(err)
	}
	// Its Packages has the signed one's name: what counts is fetches of it
	// from now on.
	forgedPackages := "/dists/stable/main/binary-" + strings.TrimSpace(run(t, base, nil, "dpkg", "--print-architecture")) + "/Packages.xz"
	packagesBefore := mirrorGETs(forgedPackages)

	// A new machine behind h2: its update and download get the signed
	// generation; h1's next update sees nothing new.
	c2 := client("h2", "apt2")
	if out, err := c2.try("update"); err != nil {
		t.Fatalf("apt-get update after the mirror turned: %v\n%s", err, out)
	}
	if mirrorGETs("/dists/stable/InRelease") < 2 {
		t.Fatal("the hub never asked the mirror for its new InRelease: the test proves nothing")
	}
	if got := sha256File(t, download(c2)); got != repo.debs[small] {
		t.Fatalf("after the mirror turned, a new machine got sha256 %s, want the signed package's %s", got, repo.debs[small])
	}
	if out, err := c1.try("update"); err != nil || strings.Contains(out, "W:") || strings.Contains(out, "E:") {
		t.Fatalf("apt-get update on the first machine after the mirror turned: %v\n%s", err, out)
	}
	for i := 1; i <= 2; i++ {
		out, err := lan.curl(fmt.Sprintf("h%d", i), "-x", "http://127.0.0.1:3142", "http://"+mirror+"/dists/stable/InRelease")
		if err != nil || out != string(signed) {
			t.Fatalf("h%d serves an InRelease of %d bytes (%v), want the signed generation's (the forged one is %d)", i, len(out), err, len(forged))
		}
	}
	if n := mirrorGETs(forgedPackages) - packagesBefore; n != 0 {
		t.Fatalf("the forged generation's Packages was fetched %d times: someone followed it", n)
	}

	// The hub says why, stored nothing of it, learnt nothing from it. (Its
	// check may come after the clients were answered from the signed
	// generation: once in seven runs of make test it came more than 10 s
	// after them, cause unknown.)
	hubLogs.waitFor(t, "failed its signature check", 45*time.Second)
	if l := hubLogs.String(); !strings.Contains(l, "signed by a key not trusted for this repository") || !strings.Contains(l, "http://"+mirror+"/dists/stable/InRelease") {
		t.Fatalf("the hub's log does not say which file failed and why:\n%s", tail(l, 30))
	}
	if page := hubPage(); !strings.Contains(page, "<b>failed</b>: signed by a key not trusted for this repository") || !strings.Contains(page, "not handed to nodes") {
		t.Fatalf("the hub's page does not list the repository as failed, with why:\n%s", page)
	}
	if s := hubStats(); !strings.Contains(s, `"repositories_failed":1`) {
		t.Fatalf("the hub's stats: %s", s)
	}
	if out, err := exec.Command(warrenBinary(t), "cache", "show", "--cache-dir", hubCache, "sha256:"+sha256Hex(forged)).CombinedOutput(); err == nil {
		t.Fatalf("the hub stored the forged InRelease:\n%s", out)
	}
	if out, err := exec.Command(warrenBinary(t), "cache", "show", "--cache-dir", hubCache, "http://"+mirror+"/pool/main/warren-e2e-small_6.6_all.deb").CombinedOutput(); err == nil {
		t.Fatalf("the hub learnt the forged generation's package:\n%s", out)
	}
}
