package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestHubSiteOverNetns is a site with a hub: a mirror behind a link shaped
// to 50 Mbit/s (the WAN), a hub, and six nodes on one LAN (mDNS inside the
// namespaces this test makes), every node using the hub with a token.
//
//   - A wrong token gets 407 (Proxy Authentication Required).
//   - Real apt-get update on all six at once: the mirror serves each index
//     file once.
//   - All six ask for the same 20 MB package at once. The nodes ask the hub
//     first (their share_min_size is above the package's size, so the hub
//     comes before the LAN): the hub fetches it once, streams it to at
//     most max_requesters, and tells the rest to come back after
//     retry_delay; they then take it from the LAN's first requesters.
//     Every copy is checked against the SHA256 its Packages gives.
//   - The hub killed mid-transfer: a node finishes from the origin; a node
//     with hub_only fails, and says the hub is unreachable.
//   - The hub in preload mode: what it does not hold is refused (404 with
//     the reason), with no request to the mirror; what it holds is served.
//
// Run by `make test-netns` (WARREN_NETNS=1) as root; it prints the WAN
// bytes per artifact, the last node's time against one lone WAN download,
// and the hub's peak RSS.
func TestHubSiteOverNetns(t *testing.T) {
	requireRootStep(t, "WARREN_NETNS", "the hub namespace test (ip netns)")
	requireTools(t, "ip", "tc", "curl", "/usr/bin/python3", "apt-get", "apt-ftparchive", "dpkg-deb", "gpg", "xz", "gzip")
	const (
		nodes   = 6
		mirror  = "10.78.0.100"
		hubAddr = "10.78.0.50"
		maxReq  = 2
		token   = "site-token-0123456789"
		wanRate = "50mbit"
		bigPath = "/pool/main/warren-e2e-big_1.0_all.deb"
	)
	base := t.TempDir()
	repo := buildAptRepo(t, base)
	extras := map[string][]byte{}
	for i, name := range []string{"extra1.bin", "extra2.bin", "extra3.bin"} {
		b := randomPayload(16<<20, uint64(100+i))
		extras["/pool/main/"+name] = b
		if err := os.WriteFile(filepath.Join(repo.root, "pool", "main", name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	lan := newLAN(t, "wrh", "10.78.0")
	lan.host("up", mirror)
	lan.sh("ip", "netns", "exec", lan.ns("up"), "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", wanRate, "burst", "256k", "latency", "100ms")
	lan.host("hub", hubAddr)
	for i := 1; i <= nodes; i++ {
		lan.host(fmt.Sprintf("h%d", i), fmt.Sprintf("10.78.0.%d", i))
	}
	// The mirror serves base/mirror, a link to the repository; once the
	// flip file names another tree, it moves there right after its next
	// InRelease (a mirror that syncs while a client is mid-update).
	root, flip := filepath.Join(base, "mirror"), filepath.Join(base, "flip")
	if err := os.Symlink(repo.root, root); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(base, "mirror.py")
	os.WriteFile(script, []byte(mirrorPy), 0o644)
	upLog, _ := startLogged(t, exec.Command("ip", "netns", "exec", lan.ns("up"), "/usr/bin/python3", script, root, mirror, flip), "mirror")
	mirrorGETs := func() map[string]int {
		out := map[string]int{}
		for _, m := range regexp.MustCompile(`"GET (\S+) HTTP/1\.1" 200`).FindAllStringSubmatch(upLog.String(), -1) {
			out[m[1]]++
		}
		return out
	}
	waitUntil(t, "the mirror", 20*time.Second, func() bool {
		_, err := lan.curl("h1", "-o", "/dev/null", "http://"+mirror+"/dists/stable/InRelease")
		return err == nil
	})
	out, err := lan.curl("h1", "-o", "/dev/null", "-w", "%{time_total}", "http://"+mirror+bigPath)
	if err != nil {
		t.Fatalf("lone download: %v %s", err, out)
	}
	lone, _ := strconv.ParseFloat(strings.TrimSpace(out), 64)
	direct := mirrorGETs()

	hubCache := filepath.Join(base, "hubcache")
	startHub := func(args ...string) *exec.Cmd {
		t.Helper()
		full := append([]string{"netns", "exec", lan.ns("hub"), warrenBinary(t), "serve", "--config", "/dev/null", "--role", "hub",
			"--listen", "0.0.0.0:3142", "--cache-dir", hubCache, "--hub-tokens", token, "--max-requesters", strconv.Itoa(maxReq),
			"--retry-delay", "8s", "--index-ttl", "0s", "--log-level", "debug"}, args...)
		cmd := exec.Command("ip", full...)
		logs, ready := startLogged(t, cmd, "hub")
		waitReady(t, ready, logs, "hub")
		return cmd
	}
	hub := startHub()
	hubURL := "http://" + hubAddr + ":3142"
	for i := 1; i <= nodes; i++ {
		cmd := exec.Command("ip", "netns", "exec", lan.ns(fmt.Sprintf("h%d", i)), warrenBinary(t), "serve", "--config", "/dev/null",
			"--listen", "0.0.0.0:3142", "--cache-dir", filepath.Join(base, fmt.Sprintf("cache%d", i)),
			"--hub", hubURL, "--hub-token", token, "--share-min-size", "64MiB", "--log-level", "debug")
		logs, ready := startLogged(t, cmd, fmt.Sprintf("warren h%d", i))
		waitReady(t, ready, logs, fmt.Sprintf("warren h%d", i))
	}
	stats := func(host, addr string) map[string]any {
		out, err := lan.curl(host, "http://"+addr+"/_warren/stats")
		if err != nil {
			return nil
		}
		var m map[string]any
		json.Unmarshal([]byte(out), &m)
		return m
	}
	num := func(m map[string]any, k string) float64 { f, _ := m[k].(float64); return f }
	waitUntil(t, "every node to see its 5 peers over mDNS", 30*time.Second, func() bool {
		for i := 1; i <= nodes; i++ {
			if num(stats(fmt.Sprintf("h%d", i), "127.0.0.1:3142"), "peers") < nodes-1 {
				return false
			}
		}
		return true
	})

	// A wrong token: 407 (a proxy request), and the hub says why.
	code, err := exec.Command("ip", "netns", "exec", lan.ns("h1"), "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
		"-x", hubURL, "--proxy-header", "Proxy-Authorization: Bearer wrong", "http://"+mirror+"/dists/stable/InRelease").Output()
	if err != nil || string(code) != "407" {
		t.Fatalf("a wrong token: %s %v, want 407", code, err)
	}

	// apt-get update on all six at once.
	sources := fmt.Sprintf("deb [signed-by=%s] http://%s/ stable main", repo.keyring, mirror)
	clients := make([]*aptClient, nodes+1)
	for i := 1; i <= nodes; i++ {
		clients[i] = newAptClient(t, base, fmt.Sprintf("apt%d", i), sources, "http://127.0.0.1:3142")
		clients[i].in = lan.ns(fmt.Sprintf("h%d", i))
	}
	all := func(what string, f func(i int) error) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make([]error, nodes+1)
		for i := 1; i <= nodes; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = f(i) }()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("%s on h%d: %v", what, i, err)
			}
		}
	}
	all("apt-get update", func(i int) error { _, err := clients[i].try("update"); return err })
	for path, n := range mirrorGETs() {
		if strings.HasPrefix(path, "/dists/") && n-direct[path] > 1 {
			t.Errorf("the mirror served %s %d times for six apt-get updates, want once", path, n-direct[path])
		}
	}

	// The same 20 MB package on all six at once.
	wanBefore := tbfSentBytes(t, lan.ns("up"))
	begin := time.Now()
	all("apt-get download", func(i int) error {
		if _, err := clients[i].try("download", "warren-e2e-big"); err != nil {
			return err
		}
		got := sha256File(t, filepath.Join(clients[i].dir, "dl", filepath.Base(bigPath)))
		if got != repo.debs[bigPath[1:]] {
			return fmt.Errorf("sha256 %s, want %s", got, repo.debs[bigPath[1:]])
		}
		return nil
	})
	took := time.Since(begin).Seconds()
	wan := tbfSentBytes(t, lan.ns("up")) - wanBefore
	if n := mirrorGETs()[bigPath] - direct[bigPath]; n != 1 {
		t.Fatalf("the mirror served the package %d times for the site, want once", n)
	}
	hs := stats("h1", hubAddr+":3142")
	if peak := num(hs, "hub_streaming_peak"); peak > maxReq || peak < 1 {
		t.Fatalf("the hub streamed the package to %v requesters at once, want 1 to max_requesters=%d", peak, maxReq)
	}
	// The six share a LAN: the hub streams to its first requester and
	// names that one to the rest (hub_told_peers), or, past
	// max_requesters, tells them to wait; either way the rest take the
	// package from the LAN.
	if num(hs, "hub_refused_max-requesters")+num(hs, "hub_told_peers") < 1 {
		t.Fatalf("no requester was told to wait or which LAN peer receives it: the queue was not exercised (%v)", hs)
	}
	var fromLAN, waited, told int
	for i := 1; i <= nodes; i++ {
		s := stats(fmt.Sprintf("h%d", i), "127.0.0.1:3142")
		if num(s, "bytes_peers") >= 20<<20 {
			fromLAN++
		}
		if num(s, "hub_waits") > 0 {
			waited++
		}
		if num(s, "hub_told_peers") > 0 {
			told++
		}
		t.Logf("h%d: from the hub %.1f MB, from peers %.1f MB, waited %v times, told its LAN peers %v times", i, num(s, "bytes_hubs")/1e6, num(s, "bytes_peers")/1e6, num(s, "hub_waits"), num(s, "hub_told_peers"))
	}
	if fromLAN == 0 {
		t.Fatalf("no node took the package from the LAN (%d waited, %d told their LAN peers)", waited, told)
	}
	size := float64(20 << 20)
	fmt.Printf("hub netns test: %d nodes, a 20 MB package, WAN %s, max_requesters %d\n", nodes, wanRate, maxReq)
	fmt.Printf("  WAN bytes / artifact bytes = %.3f (mirror GETs of the package: 1)\n", float64(wan)/size)
	fmt.Printf("  last node done after %.2fs; one lone WAN download %.2fs; ratio %.2f (retry_delay 8s)\n", took, lone, took/lone)
	fmt.Printf("  %d nodes told to wait, %d told which LAN peer receives it, %d took it from the LAN; hub peak RSS %s\n", waited, told, fromLAN, peakRSS(hub.Process.Pid))

	// An index changes upstream while h1 is midway through apt-get update:
	// the mirror moves to a second generation (a new warren-e2e-small,
	// signed with the same key, no by-hash files) right after it serves
	// the InRelease h1's update asked for.
	gen2 := aptRepo{root: filepath.Join(base, "repo2"), keyring: repo.keyring, debs: maps.Clone(repo.debs)}
	run(t, base, nil, "cp", "-a", repo.root, gen2.root)
	gen2.addDeb(t, base, "warren-e2e-small", "1.1", 4096, 9)
	gen2.sign(t, base)
	os.WriteFile(flip, []byte(gen2.root), 0o644)
	// A node asks the hub for InRelease again once its own copy is older
	// than its index_ttl (5 s). The test relied on the download above
	// outlasting that, and failed once the site got faster: the nodes
	// about to update forget theirs instead (an operator's cache rm).
	forgetRelease := func(i int) {
		t.Helper()
		if out, err := exec.Command(warrenBinary(t), "cache", "rm", "--cache-dir", filepath.Join(base, fmt.Sprintf("cache%d", i)),
			"http://"+mirror+"/dists/stable/InRelease").CombinedOutput(); err != nil {
			t.Fatalf("warren cache rm of h%d's InRelease: %v\n%s", i, err, out)
		}
	}
	forgetRelease(1)
	// A machine new to the site (fresh apt state), so that its update
	// fetches the index files and does not stop at an unchanged InRelease.
	clients[1] = newAptClient(t, base, "apt1-fresh", sources, "http://127.0.0.1:3142")
	clients[1].in = lan.ns("h1")
	if out, err := clients[1].try("update"); err != nil || strings.Contains(out, "Hash Sum mismatch") || strings.Contains(out, "W:") {
		t.Fatalf("apt-get update while the mirror moved on: %v\n%s", err, out)
	}
	if _, err := os.Stat(flip); err == nil {
		t.Fatal("the mirror never moved to the second generation: the test proves nothing")
	}
	small := func(i int, version string) {
		t.Helper()
		if out, err := clients[i].try("download", "warren-e2e-small"); err != nil {
			t.Fatalf("h%d: %v %s", i, err, out)
		}
		deb := "pool/main/warren-e2e-small_" + version + "_all.deb"
		if got := sha256File(t, filepath.Join(clients[i].dir, "dl", filepath.Base(deb))); got != gen2.debs[deb] {
			t.Fatalf("h%d: warren-e2e-small %s: sha256 %s, want %s", i, version, got, gen2.debs[deb])
		}
	}
	small(1, "1.0") // h1 is on the generation its InRelease named, whole
	forgetRelease(2)
	if out, err := clients[2].try("update"); err != nil || strings.Contains(out, "Hash Sum mismatch") {
		t.Fatalf("apt-get update after the mirror moved: %v\n%s", err, out)
	}
	small(2, "1.1") // and the next update is on the new one, whole

	// The hub dies mid-transfer.
	killMidTransfer := func(host, node, path string) (string, error) {
		t.Helper()
		type result struct {
			out string
			err error
		}
		done := make(chan result, 1)
		go func() {
			dst := filepath.Join(base, strings.ReplaceAll(host+node+path, "/", "_"))
			out, err := lan.curl(host, "-o", dst, "-x", "http://"+node, "http://"+mirror+path)
			if err == nil && sha256Hex(readFile(dst)) != sha256Hex(extras[path]) {
				err = fmt.Errorf("%s: wrong bytes", path)
			}
			done <- result{out, err}
		}()
		waitUntil(t, "the hub to be fetching "+path, 30*time.Second, func() bool {
			return num(stats("h1", hubAddr+":3142"), "transfers") >= 1
		})
		hub.Process.Signal(syscall.SIGKILL)
		hub.Wait()
		r := <-done
		return r.out, r.err
	}
	if out, err := killMidTransfer("h1", "127.0.0.1:3142", "/pool/main/extra1.bin"); err != nil {
		t.Fatalf("a node whose hub died mid-transfer did not finish from the origin: %v %s", err, out)
	}
	// A node that may use only the hub.
	only := exec.Command("ip", "netns", "exec", lan.ns("h6"), warrenBinary(t), "serve", "--config", "/dev/null",
		"--listen", "127.0.0.1:3143", "--discovery", "off", "--cache-dir", filepath.Join(base, "cache-only"),
		"--hub", hubURL, "--hub-token", token, "--hub-only", "--log-level", "debug")
	onlyLogs, ready := startLogged(t, only, "warren h6 hub_only")
	waitReady(t, ready, onlyLogs, "warren h6 hub_only")
	hub = startHub()
	if _, err := killMidTransfer("h6", "127.0.0.1:3143", "/pool/main/extra2.bin"); err == nil {
		t.Fatal("a hub_only node whose hub died mid-transfer answered a whole file: from where?")
	}
	body, _ := exec.Command("ip", "netns", "exec", lan.ns("h6"), "curl", "-s", "-x", "http://127.0.0.1:3143", "http://"+mirror+"/pool/main/extra2.bin").Output()
	if !strings.Contains(string(body), "hub_only") || !strings.Contains(string(body), "unreachable") {
		t.Fatalf("a hub_only node with its hub down does not tell its client why: %q", body)
	}

	// Preload mode: only what the hub holds.
	hub = startHub("--hub-mode", "preload")
	before := mirrorGETs()
	head, _ := exec.Command("ip", "netns", "exec", lan.ns("h6"), "curl", "-s", "-i", "-x", "http://127.0.0.1:3143", "http://"+mirror+"/pool/main/extra3.bin").Output()
	if !strings.HasPrefix(string(head), "HTTP/1.1 404") || !strings.Contains(string(head), "X-Warren-Refused: not-preloaded") {
		t.Fatalf("a preload-only hub, something it does not hold: %q, want 404 not-preloaded", strings.SplitN(string(head), "\n", 2)[0])
	}
	if out, err := lan.curl("h6", "-o", filepath.Join(base, "held.deb"), "-x", "http://127.0.0.1:3143", "http://"+mirror+bigPath); err != nil ||
		sha256File(t, filepath.Join(base, "held.deb")) != repo.debs[bigPath[1:]] {
		t.Fatalf("a preload-only hub, something it holds: %v %s", err, out)
	}
	for path, n := range mirrorGETs() {
		if n != before[path] {
			t.Fatalf("a preload-only hub went to the mirror for %s", path)
		}
	}
}

// mirrorPy is python's http.server over a root that moves to the tree
// the flip file names right after the next InRelease it serves.
const mirrorPy = `import functools, http.server, os, sys
root, addr, flip = sys.argv[1], sys.argv[2], sys.argv[3]
class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        super().do_GET()
        if self.path == "/dists/stable/InRelease" and os.path.exists(flip):
            target = open(flip).read().strip()
            os.symlink(target, root + ".new")
            os.replace(root + ".new", root)
            os.remove(flip)
http.server.ThreadingHTTPServer((addr, 80), functools.partial(Handler, directory=root)).serve_forever()
`

func readFile(path string) []byte {
	b, _ := os.ReadFile(path)
	return b
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// peakRSS is a process's peak resident set (VmHWM).
func peakRSS(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
