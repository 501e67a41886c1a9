package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// hostWith adds a namespace on the bridge with eth0 at v4 (a /24) and v6
// (a /64), either of which may be "": a host with no IPv4 address at all,
// or one with IPv6 turned off on eth0 (no link-local address either).
// Duplicate-address detection is off, so every address (the link-local
// one too) is usable at once.
func (l *lan) hostWith(name, v4, v6 string) {
	l.add(name)
	host, port, br := l.ns(name), "p-"+name, l.ns("br")
	l.sh("ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.default.disable_ipv6=0",
		"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
	l.sh("ip", "-n", br, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", host)
	l.sh("ip", "-n", br, "link", "set", port, "master", "br0", "up")
	if v6 == "" {
		l.sh("ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=1")
	}
	if v4 != "" {
		l.sh("ip", "-n", host, "addr", "add", v4+"/24", "brd", "+", "dev", "eth0")
	}
	if v6 != "" {
		l.sh("ip", "-n", host, "-6", "addr", "add", v6+"/64", "dev", "eth0", "nodad")
	}
	l.sh("ip", "-n", host, "link", "set", "eth0", "up")
	if v4 != "" {
		l.sh("ip", "-n", host, "route", "add", "224.0.0.0/4", "dev", "eth0")
	}
}

// mirrorV6Py is python's http.server over a directory, on an IPv6 address
// or both families ("::").
const mirrorV6Py = `import functools, http.server, socket, sys
root, addr = sys.argv[1], sys.argv[2]
class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()
Server((addr, 80), functools.partial(http.server.SimpleHTTPRequestHandler, directory=root)).serve_forever()
`

// singleArtifactRepo writes a repository of one artifact of size bytes
// (Release, Packages, the file) under dir, and returns the file's bytes.
func singleArtifactRepo(t *testing.T, dir, path string, size int) []byte {
	t.Helper()
	deb := randomPayload(size, 9)
	sum := sha256.Sum256(deb)
	pkgs := fmt.Sprintf("Package: big\nVersion: 1\nArchitecture: all\nFilename: %s\nSize: %d\nSHA256: %s\n\n", path[1:], size, hex.EncodeToString(sum[:]))
	psum := sha256.Sum256([]byte(pkgs))
	rel := fmt.Sprintf("Suite: stable\nSHA256:\n %s %d main/binary-amd64/Packages\n", hex.EncodeToString(psum[:]), len(pkgs))
	for p, b := range map[string][]byte{"dists/stable/Release": []byte(rel), "dists/stable/main/binary-amd64/Packages": []byte(pkgs), path[1:]: deb} {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
		os.WriteFile(filepath.Join(dir, p), b, 0o644)
	}
	return deb
}

// peersOf is a node's peers as its stats and page show them: how many,
// and each one's family.
func peersOf(t *testing.T, l *lan, host string) (int, []string) {
	out, err := l.curl(host, "-g", "http://[::1]:3142/_warren/stats")
	if err != nil {
		out, err = l.curl(host, "http://127.0.0.1:3142/_warren/stats")
	}
	if err != nil {
		return -1, nil
	}
	var m map[string]any
	json.Unmarshal([]byte(out), &m)
	n, _ := m["peers"].(float64)
	page, _ := l.curl(host, "-g", "http://localhost:3142/_warren/")
	var fams []string
	for _, f := range regexp.MustCompile(`<td>(IPv[46])</td>`).FindAllStringSubmatch(page, -1) {
		fams = append(fams, f[1])
	}
	return int(n), fams
}

// TestIPv6SiteOverNetns is a site on an IPv6-only LAN: a bridge with no
// IPv4 address on any host, a mirror at fd00:86::100 behind 50 Mbit/s,
// and five nodes. Four find each other by mDNS over IPv6 (AAAA records).
// The fifth has no mDNS (another program holds port 5353 on its machine):
// it knows one node as a static peer, [fd00:86::1]:3142, and the others
// only by its datagrams on the link-local multicast group. All five ask
// for one 20 MB artifact (by an IPv6-literal URL) at the same moment: it
// crosses the WAN once, every node gets the exact file, and the nodes
// that never heard of the fifth before know it afterwards.
func TestIPv6SiteOverNetns(t *testing.T) {
	requireRootStep(t, "WARREN_NETNS", "the IPv6 namespace test (ip netns)")
	requireTools(t, "ip", "tc", "curl", "sysctl", "/usr/bin/python3")
	const (
		nodes   = 5
		mirror  = "fd00:86::100"
		path    = "/pool/main/big_1_all.deb"
		size    = 20 << 20
		wanRate = "50mbit"
	)
	base := t.TempDir()
	deb := singleArtifactRepo(t, filepath.Join(base, "repo"), path, size)
	sum := sha256.Sum256(deb)
	lan := newLAN(t, "wr6", "fd00:86:")
	lan.hostWith("up", "", mirror)
	lan.sh("ip", "netns", "exec", lan.ns("up"), "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", wanRate, "burst", "256k", "latency", "100ms")
	for i := 1; i <= nodes; i++ {
		lan.hostWith(fmt.Sprintf("h%d", i), "", fmt.Sprintf("fd00:86::%d", i))
	}
	script := filepath.Join(base, "mirror6.py")
	os.WriteFile(script, []byte(mirrorV6Py), 0o644)
	upLog, _ := startLogged(t, exec.Command("ip", "netns", "exec", lan.ns("up"), "/usr/bin/python3", script, filepath.Join(base, "repo"), mirror), "mirror")
	upURL := "http://[" + mirror + "]"
	waitUntil(t, "the IPv6 mirror", 20*time.Second, func() bool {
		_, err := lan.curl("h1", "-g", "-o", "/dev/null", upURL+"/dists/stable/Release")
		return err == nil
	})
	gets := func() int { return strings.Count(upLog.String(), `"GET `+path+` HTTP/1.1" 200`) }

	logs := make([]*syncBuffer, nodes+1)
	for i := 1; i <= nodes; i++ {
		args := []string{"serve", "--config", "/dev/null", "--listen", "[::]:3142", "--cache-dir", filepath.Join(base, fmt.Sprintf("cache%d", i)), "--log-level", "debug"}
		if i == nodes {
			args = append(args, "--discovery", "both", "--peer", "[fd00:86::1]:3142")
			// mDNS cannot start here: its port is taken.
			holder := exec.Command("ip", "netns", "exec", lan.ns("h5"), "/usr/bin/python3", "-c",
				"import socket,time\ns=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\ns.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0)\ns.bind(('::',5353))\nimport sys\nprint('holding 5353',file=sys.stderr,flush=True)\ntime.sleep(3600)")
			held, _ := startLogged(t, holder, "port 5353 holder")
			held.waitFor(t, "holding 5353", 20*time.Second)
		}
		var ready <-chan struct{}
		logs[i], ready = startLogged(t, exec.Command("ip", append([]string{"netns", "exec", lan.ns(fmt.Sprintf("h%d", i)), warrenBinary(t)}, args...)...), fmt.Sprintf("h%d", i))
		waitReady(t, ready, logs[i], fmt.Sprintf("h%d", i))
	}
	start := time.Now()
	logs[nodes].waitFor(t, "peer discovery by mDNS is not running", 20*time.Second)
	// h1 knows all four (h5 greeted it); h2-h4 know each other and h1 by
	// mDNS, not h5; h5 knows h1.
	waitUntil(t, "the nodes to see their peers over IPv6", 90*time.Second, func() bool {
		for i, want := range map[int]int{1: 4, 2: 3, 3: 3, 4: 3, 5: 1} {
			if n, fams := peersOf(t, lan, fmt.Sprintf("h%d", i)); n != want || len(fams) != n || slices.Contains(fams, "IPv4") {
				return false
			}
		}
		return true
	})
	t.Logf("the nodes found their peers over IPv6 in %.1fs", time.Since(start).Seconds())
	if m, err := lan.curl("h1", "-g", "http://[::1]:3142/metrics"); err != nil || !strings.Contains(m, `warren_peers_by_family{family="ipv6"} 4`) {
		t.Fatalf("h1's metrics do not count its 4 IPv6 peers: %v\n%s", err, grepLines(m, "warren_peers"))
	}

	for i := 1; i <= nodes; i++ { // apt update on every machine
		for _, p := range []string{"/dists/stable/Release", "/dists/stable/main/binary-amd64/Packages"} {
			if out, err := lan.curl(fmt.Sprintf("h%d", i), "-g", "-o", "/dev/null", "-x", "http://[::1]:3142", upURL+p); err != nil {
				t.Fatalf("h%d %s: %v %s", i, p, err, out)
			}
		}
	}
	wanBefore := tbfSentBytes(t, lan.ns("up"))
	type result struct {
		i   int
		err error
		out string
	}
	done := make(chan result, nodes)
	for i := 1; i <= nodes; i++ {
		go func() {
			out, err := lan.curl(fmt.Sprintf("h%d", i), "-g", "-o", filepath.Join(base, fmt.Sprintf("out%d", i)), "-x", "http://[::1]:3142", upURL+path)
			done <- result{i, err, out}
		}()
	}
	for range nodes {
		r := <-done
		if r.err != nil {
			t.Fatalf("h%d: %v %s", r.i, r.err, r.out)
		}
	}
	for i := 1; i <= nodes; i++ {
		if b, err := os.ReadFile(filepath.Join(base, fmt.Sprintf("out%d", i))); err != nil || sha256.Sum256(b) != sum {
			t.Fatalf("h%d got %d bytes that do not match the artifact's SHA256", i, len(b))
		}
	}
	wan := tbfSentBytes(t, lan.ns("up")) - wanBefore
	if n := gets(); n != 1 {
		t.Fatalf("the mirror served the artifact %d times for the IPv6 site, want 1", n)
	}
	if ratio := float64(wan) / float64(size); ratio > 1.10 {
		t.Fatalf("the WAN carried %.3f times the artifact, want at most 1.10", ratio)
	}
	// The multicast group carried h5's question and want to h2-h4, and
	// their answers came back: each now knows the other.
	for i := 2; i <= nodes; i++ {
		if n, _ := peersOf(t, lan, fmt.Sprintf("h%d", i)); n != nodes-1 {
			t.Errorf("h%d knows %d peers after the fetch, want %d (h5 heard over multicast)", i, n, nodes-1)
		}
	}
	fromPeers := 0
	for i := 1; i <= nodes; i++ {
		if m := storedPhases.FindString(logs[i].String()); strings.Contains(m, `from="[peer`) || strings.Contains(m, "peer ") {
			fromPeers++
		}
	}
	fmt.Printf("IPv6-only netns site: %d nodes, WAN bytes / artifact = %.3f (mirror GETs 1), %d nodes took it from peers\n", nodes, float64(wan)/float64(size), fromPeers)
}

// TestDualStackSiteOverNetns is a dual-stack LAN: two nodes with IPv4 and
// IPv6, one with IPv4 alone (IPv6 off on its link), one with IPv6 alone
// (no IPv4 address), and a mirror with both, named mirror.test (A and
// AAAA). A dual-stack node fetches the artifact first; then the IPv4-only
// and the IPv6-only node and the other dual-stack one ask at once, each
// finding the dual-stack nodes over its own family: the mirror serves it
// once, and every node has the exact file.
func TestDualStackSiteOverNetns(t *testing.T) {
	requireRootStep(t, "WARREN_NETNS", "the dual-stack namespace test (ip netns)")
	requireTools(t, "ip", "curl", "sysctl", "/usr/bin/python3")
	const path, size = "/pool/main/big_1_all.deb", 8 << 20
	base := t.TempDir()
	deb := singleArtifactRepo(t, filepath.Join(base, "repo"), path, size)
	sum := sha256.Sum256(deb)
	lan := newLAN(t, "wrd", "10.87.0")
	hosts := []struct{ name, v4, v6 string }{
		{"up", "10.87.0.100", "fd00:87::100"},
		{"d1", "10.87.0.1", "fd00:87::1"}, {"d2", "10.87.0.2", "fd00:87::2"},
		{"v4", "10.87.0.4", ""}, {"v6", "", "fd00:87::6"},
	}
	for _, h := range hosts {
		lan.hostWith(h.name, h.v4, h.v6)
		dir := filepath.Join("/etc/netns", lan.ns(h.name))
		os.MkdirAll(dir, 0o755)
		t.Cleanup(func() { os.RemoveAll(dir) })
		os.WriteFile(filepath.Join(dir, "hosts"), []byte("127.0.0.1 localhost\n::1 localhost\n10.87.0.100 mirror.test\nfd00:87::100 mirror.test\n"), 0o644)
	}
	script := filepath.Join(base, "mirror6.py")
	os.WriteFile(script, []byte(mirrorV6Py), 0o644)
	upLog, _ := startLogged(t, exec.Command("ip", "netns", "exec", lan.ns("up"), "/usr/bin/python3", script, filepath.Join(base, "repo"), "::"), "mirror")
	for _, h := range []string{"v4", "v6"} {
		waitUntil(t, "the mirror from "+h, 20*time.Second, func() bool {
			_, err := lan.curl(h, "-o", "/dev/null", "http://mirror.test/dists/stable/Release")
			return err == nil
		})
	}
	gets := func() int { return strings.Count(upLog.String(), `"GET `+path+` HTTP/1.1" 200`) }
	for _, h := range hosts[1:] {
		cmd := exec.Command("ip", "netns", "exec", lan.ns(h.name), warrenBinary(t), "serve", "--config", "/dev/null", "--listen", ":3142",
			"--cache-dir", filepath.Join(base, h.name+"cache"), "--log-level", "debug")
		logs, ready := startLogged(t, cmd, h.name)
		waitReady(t, ready, logs, h.name)
	}
	want := map[string][]string{"d1": {"IPv4", "IPv4", "IPv6"}, "d2": {"IPv4", "IPv4", "IPv6"}, "v4": {"IPv4", "IPv4"}, "v6": {"IPv6", "IPv6"}}
	waitUntil(t, "each node to see the peers its families reach", 90*time.Second, func() bool {
		for h, w := range want {
			n, fams := peersOf(t, lan, h)
			slices.Sort(fams)
			if n != len(w) || strings.Join(fams, ",") != strings.Join(w, ",") {
				return false
			}
		}
		return true
	})
	get := func(h string) error {
		out, err := lan.curl(h, "-o", filepath.Join(base, "out-"+h), "-x", "http://localhost:3142", "http://mirror.test"+path)
		if err != nil {
			return fmt.Errorf("%s: %v %s", h, err, out)
		}
		if b, _ := os.ReadFile(filepath.Join(base, "out-"+h)); sha256.Sum256(b) != sum {
			return fmt.Errorf("%s got %d bytes that do not match the artifact's SHA256", h, len(b))
		}
		return nil
	}
	for _, h := range []string{"d1", "d2", "v4", "v6"} {
		if _, err := lan.curl(h, "-o", "/dev/null", "-x", "http://localhost:3142", "http://mirror.test/dists/stable/main/binary-amd64/Packages"); err != nil {
			t.Fatalf("%s: the index: %v", h, err)
		}
	}
	if err := get("d1"); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 3)
	for _, h := range []string{"v4", "v6", "d2"} {
		go func() { errs <- get(h) }()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := gets(); n != 1 {
		t.Fatalf("the mirror served the artifact %d times, want 1: the IPv4-only and IPv6-only nodes did not share", n)
	}
	// A dual-stack peer's datagrams come over both families (broadcast
	// and multicast): none of them is taken for an impostor's.
	for _, h := range []string{"d1", "d2"} {
		out, _ := lan.curl(h, "http://localhost:3142/_warren/stats")
		var m map[string]any
		json.Unmarshal([]byte(out), &m)
		if dropped, ok := m["datagrams_dropped"].(float64); !ok || dropped != 0 {
			t.Errorf("%s dropped %v datagrams of its dual-stack peers", h, m["datagrams_dropped"])
		}
	}
	fmt.Println("dual-stack netns site: the IPv4-only, IPv6-only and dual-stack nodes got the artifact from their peers; mirror GETs 1")
}
