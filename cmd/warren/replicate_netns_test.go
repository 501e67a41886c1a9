package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReplicationOverNetns is a chain of hubs, each on its own link to
// the switch: a main hub that preloads from a mirror behind a 50 Mbit/s
// WAN, a secondary hub pulling from it, a spoke pulling from the
// secondary (its link at 16 Mbit/s), and a node that may use only the
// spoke.
//
//   - `warren replicate run` on the secondary, then on the spoke, with the
//     mirror stopped: a second run moves zero bytes.
//   - The spoke's first run, killed midway and run again, completes
//     without fetching again a blob it had stored.
//   - With every WAN link down, a plain apt-get and dnf using the spoke as
//     their proxy install what they never asked for (the spoke learnt
//     what it pulled), and so does the node, and Chocolatey's calls
//     succeed from replicated answers.
//   - A wrong token gets 401 and a failed run in `warren replicate log`; a
//     token limited to the rpm repository reads no apt file; the main hub
//     pulling from the spoke is refused as a loop.
func TestReplicationOverNetns(t *testing.T) {
	requireRootStep(t, "WARREN_NETNS", "the replication namespace test (ip netns)")
	requireTools(t, "ip", "tc", "curl", "/usr/bin/python3", "apt-get", "apt-ftparchive", "dpkg-deb", "gpg", "xz", "gzip", "dnf", "createrepo_c", "rpmbuild")
	const mirror, mainAddr, secAddr, spokeAddr = "10.81.0.100", "10.81.0.50", "10.81.0.51", "10.81.0.52"
	const mainToken, rpmToken, spokeToken, loopToken = "main-token-for-the-secondary", "main-token-for-rpm-only", "secondary-token-for-the-spoke", "spoke-token-the-main-tries"
	base := t.TempDir()
	repo := buildAptRepo(t, base)
	_, rpmSums := buildRPMRepo(t, base) // in base/rpmrepo
	arch := strings.TrimSpace(run(t, base, nil, "dpkg", "--print-architecture"))
	feedURL := "http://" + mirror + "/feed/api/v2/"
	nupkg := writeStaticFeed(t, filepath.Join(base, "feed", "api", "v2"), feedURL, "tool", "1.0.0")

	lan := newLAN(t, "wrr", "10.81.0")
	lan.host("up", mirror)
	lan.sh("ip", "netns", "exec", lan.ns("up"), "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "50mbit", "burst", "256k", "latency", "100ms")
	for name, addr := range map[string]string{"main": mainAddr, "sec": secAddr, "spoke": spokeAddr, "h1": "10.81.0.1", "h2": "10.81.0.2"} {
		lan.host(name, addr)
	}
	// The secondary's link to the spoke is slow enough that a kill lands
	// in the middle of the spoke's first run.
	lan.sh("ip", "netns", "exec", lan.ns("sec"), "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "16mbit", "burst", "64k", "latency", "200ms")
	script := filepath.Join(base, "mirror.py")
	os.WriteFile(script, []byte(staticMirrorPy), 0o644)
	mirrorCmd := exec.Command("ip", "netns", "exec", lan.ns("up"), "/usr/bin/python3", script, base, mirror)
	startLogged(t, mirrorCmd, "mirror")
	waitUntil(t, "the mirror", 20*time.Second, func() bool {
		_, err := lan.curl("h1", "-o", "/dev/null", "http://"+mirror+"/repo/dists/stable/InRelease")
		return err == nil
	})

	aptURL, rpmURL := "http://"+mirror+"/repo", "http://"+mirror+"/rpmrepo/"
	hubConf := func(name, extra string) string {
		conf := filepath.Join(base, name+".yaml")
		os.WriteFile(conf, []byte(fmt.Sprintf("role: hub\nreplicate_schedule: 0s\npreload_schedule: \"\"\nchocolatey: {upstream: %q}\n%s", feedURL, extra)), 0o644)
		return conf
	}
	mainConf := hubConf("main", fmt.Sprintf(`preload:
  apt: [{url: %q, suites: [stable], components: [main], architectures: [%s], packages: ["warren-e2e-*"]}]
  rpm: [{baseurl: %q, packages: ["warren-e2e-hel*", "libwarren*"]}]
  chocolatey: [{feed: %q, ids: [tool]}]
replication:
  tokens:
    - {name: secondary, token: %s}
    - {name: rpm-only, token: %s, repositories: {rpm: [{baseurl: %q}]}}
replicate_from:
  - {name: spoke, url: "http://%s:3142", token: %s}
`, aptURL, arch, rpmURL, feedURL, mainToken, rpmToken, rpmURL, spokeAddr, loopToken))
	secConf := hubConf("sec", fmt.Sprintf(`replication:
  tokens: [{name: spoke, token: %s}]
replicate_from:
  - {name: main, url: "http://%s:3142", token: %s}
  - {name: main-wrong-token, url: "http://%s:3142", token: not-one-of-its-tokens}
`, spokeToken, mainAddr, mainToken, mainAddr))
	spokeConf := hubConf("spoke", fmt.Sprintf(`replication:
  tokens: [{name: main-test, token: %s}]
replicate_from:
  - {name: secondary, url: "http://%s:3142", token: %s}
`, loopToken, secAddr, spokeToken))
	type hubProc struct {
		conf, cache string
		cmd         *exec.Cmd
		logs        *syncBuffer
	}
	start := func(name, conf string) *hubProc {
		h := &hubProc{conf: conf, cache: filepath.Join(base, name+"cache")}
		h.cmd = exec.Command("ip", "netns", "exec", lan.ns(name), warrenBinary(t), "serve", "--config", conf, "--listen", "0.0.0.0:3142",
			"--cache-dir", h.cache, "--log-level", "debug")
		var ready <-chan struct{}
		h.logs, ready = startLogged(t, h.cmd, name)
		waitReady(t, ready, h.logs, name)
		return h
	}
	replicate := func(h *hubProc, args ...string) string {
		t.Helper()
		out, err := runApp(t, append([]string{"replicate", "run", "--config", h.conf, "--cache-dir", h.cache}, args...)...)
		if err != nil {
			t.Fatalf("warren replicate run %v: %v\n%s", args, err, out)
		}
		return out
	}
	mainHub, sec := start("main", mainConf), start("sec", secConf)
	spoke := start("spoke", spokeConf)
	node := exec.Command("ip", "netns", "exec", lan.ns("h1"), warrenBinary(t), "serve", "--config", "/dev/null", "--listen", "127.0.0.1:3142",
		"--discovery", "off", "--cache-dir", filepath.Join(base, "nodecache"), "--hub", "http://"+spokeAddr+":3142", "--hub-only",
		"--chocolatey-upstream", feedURL, "--log-level", "debug")
	nodeLogs, ready := startLogged(t, node, "node h1")
	waitReady(t, ready, nodeLogs, "node h1")

	if out, err := runApp(t, "preload", "run", "--config", mainConf, "--cache-dir", mainHub.cache); err != nil || !strings.Contains(out, "fetched 5") {
		t.Fatalf("the main hub's preload run: %v\n%s", err, out)
	}
	// Every WAN link is down from here: the mirror stops.
	mirrorCmd.Process.Signal(syscall.SIGKILL)
	mirrorCmd.Wait()

	out := replicate(sec, "--from", "main")
	fetched := regexp.MustCompile(`fetched (\d+) blobs \(([^)]+)\)`)
	m := fetched.FindStringSubmatch(out)
	if m == nil || m[1] == "0" || strings.Contains(out, "failed") {
		t.Fatalf("the secondary's first run:\n%s", out)
	}
	t.Logf("secondary, first run: %s", strings.TrimSpace(out))
	secBlobs := m[1]
	if out := replicate(sec, "--from", "main"); !strings.Contains(out, "fetched 0 blobs (0 B)") {
		t.Fatalf("the secondary's second run moved bytes:\n%s", out)
	}

	// The spoke's first run is killed once it has stored something, and
	// before the 20 MB package (10 s on its link) is whole.
	replicated := func(logs string) []string {
		var ds []string
		for _, m := range regexp.MustCompile(`msg=replicated .*digest=(\S+)`).FindAllStringSubmatch(logs, -1) {
			ds = append(ds, m[1])
		}
		return ds
	}
	go runApp(t, "replicate", "run", "--config", spoke.conf, "--cache-dir", spoke.cache)
	waitUntil(t, "the spoke's first stored blob", 60*time.Second, func() bool { return len(replicated(spoke.logs.String())) > 0 })
	spoke.cmd.Process.Signal(syscall.SIGKILL)
	spoke.cmd.Wait()
	before := replicated(spoke.logs.String())
	if strings.Contains(spoke.logs.String(), "msg=\"replication run\"") {
		t.Fatalf("the spoke's run ended before it was killed: the kill proves nothing\n%s", spoke.logs.String())
	}
	spoke = start("spoke", spokeConf)
	out = replicate(spoke)
	t.Logf("spoke, the run after the killed one (%d blobs stored before the kill): %s", len(before), strings.TrimSpace(out))
	// The CLI's answer can come before the daemon's log is read to its
	// end: the run's summary line comes after every blob's.
	waitUntil(t, "the spoke's run in its log", 30*time.Second, func() bool { return strings.Contains(spoke.logs.String(), "msg=\"replication run\"") })
	after := replicated(spoke.logs.String())
	for _, d := range after {
		if slices.Contains(before, d) {
			t.Fatalf("blob %s was fetched again after the restart", d)
		}
	}
	// A blob stored just as the kill landed may have no log line: at most
	// the secondary's count between them, none twice (above), and the
	// next run finds nothing missing (below).
	if m := fetched.FindStringSubmatch(out); m == nil || fmt.Sprint(len(after)) != m[1] || len(before)+len(after) > atoi(secBlobs) || strings.Contains(out, "failed") {
		t.Fatalf("the spoke's run after the kill: %d + %d blobs, the secondary has %s\n%s", len(before), len(after), secBlobs, out)
	}
	if out := replicate(spoke); !strings.Contains(out, "fetched 0 blobs (0 B)") {
		t.Fatalf("the spoke's second run moved bytes:\n%s", out)
	}

	// A plain apt-get and dnf that use the spoke as their proxy (no
	// warren on their machine, no digest sent) install with every WAN
	// link down what they never asked for before: the spoke learnt what it
	// pulled as if it had fetched it from the mirror.
	sources := fmt.Sprintf("deb [signed-by=%s] %s/ stable main", repo.keyring, aptURL)
	plain := newAptClient(t, base, "apt-h2", sources, "http://"+spokeAddr+":3142")
	plain.in = lan.ns("h2")
	if out, err := plain.try("update"); err != nil || strings.Contains(out, "W:") {
		t.Fatalf("a plain apt-get update through the spoke, WAN down: %v\n%s", err, out)
	}
	if out, err := plain.try("install", "-y", "--download-only", "warren-e2e-big", "warren-e2e-small"); err != nil {
		t.Fatalf("a plain apt-get install through the spoke, WAN down: %v\n%s", err, out)
	}
	for pool, sum := range repo.debs {
		if got := sha256File(t, filepath.Join(plain.dir, "cache", "archives", filepath.Base(pool))); got != sum {
			t.Fatalf("plain apt got %s with sha256 %s, want %s", pool, got, sum)
		}
	}
	plainDl := filepath.Join(base, "dnf-h2", "dl")
	dnfIn(t, lan.ns("h2"), base, "dnf-h2", rpmURL, "http://"+spokeAddr+":3142", "download", "--destdir="+plainDl, "warren-e2e-hello", "libwarren++-e2e")
	for p, sum := range rpmSums {
		if got := sha256File(t, filepath.Join(plainDl, filepath.Base(p))); got != sum {
			t.Fatalf("plain dnf got %s with sha256 %s, want %s", p, got, sum)
		}
	}

	// The node installs from the spoke with every WAN link down.
	apt := newAptClient(t, base, "apt-h1", sources, "http://127.0.0.1:3142")
	apt.in = lan.ns("h1")
	if out, err := apt.try("update"); err != nil || strings.Contains(out, "W:") {
		t.Fatalf("apt-get update with the WAN down: %v\n%s", err, out)
	}
	if out, err := apt.try("install", "-y", "--download-only", "warren-e2e-big", "warren-e2e-small"); err != nil {
		t.Fatalf("apt-get install --download-only with the WAN down: %v\n%s", err, out)
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
	feed := "http://127.0.0.1:3142/chocolatey/api/v2/"
	var entry string
	for _, call := range []string{"", "$metadata", "Packages()?$filter=(tolower(Id)%20eq%20'tool')%20and%20IsLatestVersion&semVerLevel=2.0.0",
		"FindPackagesById()?id='tool'&semVerLevel=2.0.0", "Packages(Id='tool',Version='1.0.0')"} {
		out, err := lan.curl("h1", feed+call)
		if err != nil {
			t.Fatalf("choco's call %q with the WAN down: %v %s", call, err, out)
		}
		entry = out
	}
	src := regexp.MustCompile(`<content type="application/zip" src="([^"]+)"`).FindStringSubmatch(entry)
	pkgFile := filepath.Join(base, "tool.nupkg")
	if src == nil {
		t.Fatalf("no package download in the entry: %q", entry)
	}
	if out, err := lan.curl("h1", "-o", pkgFile, src[1]); err != nil || sha256File(t, pkgFile) != sha256Hex(nupkg) {
		t.Fatalf("the Chocolatey package with the WAN down: %v %s", err, out)
	}

	// A wrong token: 401, and a failed run in the log.
	if out, err := runApp(t, "replicate", "run", "--from", "main-wrong-token", "--config", sec.conf, "--cache-dir", sec.cache); err == nil || !strings.Contains(out, "401") {
		t.Fatalf("a run with a wrong token: %v\n%s", err, out)
	}
	if out, err := runApp(t, "replicate", "log", "--config", sec.conf, "--cache-dir", sec.cache); err != nil || !regexp.MustCompile(`main-wrong-token .*failed: .*401`).MatchString(out) ||
		!regexp.MustCompile(`(?m)main\s.*\sok$`).MatchString(out) {
		t.Fatalf("the secondary's replicate log shows neither the failed run nor the good ones: %v\n%s", err, out)
	}
	// The rpm-only token reads only the rpm repository.
	changes, err := lan.curl("sec", "-H", "Authorization: Bearer "+rpmToken, "http://"+mainAddr+":3142/_warren/replication/v1/changes")
	if err != nil {
		t.Fatalf("the change feed with the rpm-only token: %v %s", err, changes)
	}
	var page struct {
		Entries []struct{ Key string }
	}
	if err := json.Unmarshal([]byte(changes), &page); err != nil || len(page.Entries) == 0 {
		t.Fatalf("the change feed with the rpm-only token: %v %s", err, changes)
	}
	for _, e := range page.Entries {
		if !strings.HasPrefix(e.Key, rpmURL) {
			t.Fatalf("the rpm-only token read %s", e.Key)
		}
	}
	var bigSum string
	for pool, sum := range repo.debs {
		if strings.Contains(pool, "big") {
			bigSum = sum
		}
	}
	code, _ := exec.Command("ip", "netns", "exec", lan.ns("sec"), "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Authorization: Bearer "+rpmToken,
		"http://"+mainAddr+":3142/_warren/replication/v1/blobs/sha256:"+bigSum).Output()
	if string(code) != "404" {
		t.Fatalf("an apt package's blob asked with the rpm-only token: %s, want 404", code)
	}
	// The main hub pulling from the spoke would close a circle.
	if out, err := runApp(t, "replicate", "run", "--from", "spoke", "--config", mainHub.conf, "--cache-dir", mainHub.cache); err == nil || !strings.Contains(out, "replication loop") {
		t.Fatalf("the main hub pulling from its spoke: %v\n%s", err, out)
	}
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
