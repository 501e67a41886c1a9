package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSiteOverNetns is a site on one machine: twenty hosts in network
// namespaces on a Linux bridge, and an upstream host behind a link shaped
// to 50 Mbit/s with tc. Each host runs the real warren binary with default
// discovery (mDNS and UDP broadcast, which stay inside the namespaces this
// test makes) and all twenty fetch the same 20 MB artifact through their
// local warren at the same moment. Run by `make test` as its own step
// (WARREN_NETNS=1) when root and ip are there; it says so when skipped.
func TestSiteOverNetns(t *testing.T) {
	requireRootStep(t, "WARREN_NETNS", "the namespace test (ip netns)")
	// The site's promises. The artifact crosses the WAN once (bytes, with
	// room for TCP/IP overhead: about 5%), asserted. Time is printed
	// against the goal of 1.15, not asserted: on this 2-core machine
	// alone it measures 1.11-1.16, but a loaded CI machine's scheduling
	// alone pushed it past 1.3 with one GET (a second WAN download still
	// fails the bytes' assertion).
	runSite(t, siteTest{hosts: 20, tag: "wrn", subnet: "10.77.0", clientTime: 120 * time.Second,
		oneGET: true, maxWAN: 1.10})
}

// TestSite50OverNetns is the site test with fifty hosts: on two cores,
// fifty daemons spreading an artifact saturate the machine, and answers
// come hundreds of milliseconds late,
// the slow-node case of a real site (laptops waking, VMs on busy hosts).
// The protocol must degrade toward waiting for the announced downloader,
// never toward the origin. It prints the WAN's multiple of the artifact
// and the last client's time against one lone download (goals: 2.0 and
// 4), and asserts only what cannot flake on a busy machine: every client
// gets the exact file within 180 s, and the WAN carries at most 3 times
// the artifact. Its own make target (make test-netns50).
func TestSite50OverNetns(t *testing.T) {
	requireRootStep(t, "WARREN_NETNS50", "the fifty-host namespace test (ip netns)")
	runSite(t, siteTest{hosts: 50, tag: "wrf", subnet: "10.78.0", clientTime: 180 * time.Second, maxWAN: 3})
}

// siteTest is one run of the site test: hosts fetching one 20 MB
// artifact at once through their own warren, the upstream behind 50
// Mbit/s.
type siteTest struct {
	hosts       int
	tag, subnet string // the namespaces' prefix, the LAN's /24
	clientTime  time.Duration
	// What is asserted: one upstream GET of the artifact, the WAN bytes
	// and the last client's time against one lone download (0: printed
	// only).
	oneGET          bool
	maxWAN, maxTime float64
}

func runSite(t *testing.T, st siteTest) {
	requireTools(t, "ip", "tc", "curl", "/usr/bin/python3")
	hosts := st.hosts
	const (
		size    = 20 << 20
		slots   = 2
		debPath = "/pool/main/big_1_all.deb"
		wanRate = "50mbit"
	)
	upstream := st.subnet + ".200"
	base := t.TempDir()
	roomForNeighbours(t, hosts)
	lan := newLAN(t, st.tag, st.subnet)
	ns, sh := lan.ns, lan.sh
	lan.host("up", upstream)
	// The WAN: everything upstream sends to the site goes through 50 Mbit/s.
	sh("ip", "netns", "exec", ns("up"), "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", wanRate, "burst", "256k", "latency", "100ms")
	for i := 1; i <= hosts; i++ {
		lan.host(fmt.Sprintf("h%d", i), fmt.Sprintf("%s.%d", st.subnet, i))
	}

	// Upstream: a small apt repository served by python's http.server,
	// whose access log counts the GETs.
	repo := filepath.Join(base, "repo")
	r := rand.New(rand.NewPCG(5, 5))
	deb := make([]byte, size)
	for i := range deb {
		deb[i] = byte(r.UintN(256))
	}
	sum := sha256.Sum256(deb)
	pkgs := fmt.Sprintf("Package: big\nVersion: 1\nArchitecture: all\nFilename: %s\nSize: %d\nSHA256: %s\n\n", debPath[1:], size, hex.EncodeToString(sum[:]))
	psum := sha256.Sum256([]byte(pkgs))
	rel := fmt.Sprintf("Suite: stable\nSHA256:\n %s %d main/binary-amd64/Packages\n", hex.EncodeToString(psum[:]), len(pkgs))
	for p, b := range map[string][]byte{"dists/stable/Release": []byte(rel), "dists/stable/main/binary-amd64/Packages": []byte(pkgs), debPath[1:]: deb} {
		os.MkdirAll(filepath.Dir(filepath.Join(repo, p)), 0o755)
		os.WriteFile(filepath.Join(repo, p), b, 0o644)
	}
	upCmd := exec.Command("ip", "netns", "exec", ns("up"), "/usr/bin/python3", "-m", "http.server", "80", "--bind", upstream, "--directory", repo)
	upLog, _ := startLogged(t, upCmd, "upstream")
	debGETs := func() int { return strings.Count(upLog.String(), `"GET `+debPath+` HTTP/1.1" 200`) }
	curl := func(host int, args ...string) (string, error) { return lan.curl(fmt.Sprintf("h%d", host), args...) }
	waitFor := func(what string, deadline time.Duration, ok func() bool) { waitUntil(t, what, deadline, ok) }
	waitFor("the upstream server", 20*time.Second, func() bool {
		_, err := curl(1, "-o", "/dev/null", "http://"+upstream+"/dists/stable/Release")
		return err == nil
	})

	// One lone WAN download, without warren: the yardstick.
	out, err := curl(1, "-o", "/dev/null", "-w", "%{time_total}", "http://"+upstream+debPath)
	if err != nil {
		t.Fatalf("lone download: %v %s", err, out)
	}
	lone, _ := strconv.ParseFloat(strings.TrimSpace(out), 64)
	baseline := debGETs()

	// A warren in every host, default discovery.
	logs := make([]*syncBuffer, hosts+1)
	pids := make([]int, 0, hosts)
	for i := 1; i <= hosts; i++ {
		cmd := exec.Command("ip", "netns", "exec", ns(fmt.Sprintf("h%d", i)), warrenBinary(t), "serve",
			"--listen", "0.0.0.0:3142", "--cache-dir", filepath.Join(base, fmt.Sprintf("cache%d", i)),
			"--upload-slots", strconv.Itoa(slots), "--log-level", "debug")
		logs[i], _ = startLogged(t, cmd, fmt.Sprintf("warren h%d", i))
		pids = append(pids, cmd.Process.Pid) // ip netns exec execs warren
	}
	daemonsCPU := func() (sum time.Duration) {
		for _, pid := range pids {
			sum += treeCPU(pid)
		}
		return sum
	}
	stats := func(host int) map[string]float64 {
		out, err := curl(host, "http://127.0.0.1:3142/_warren/stats")
		if err != nil {
			return nil
		}
		var m map[string]float64
		json.Unmarshal([]byte(out), &m)
		return m
	}
	// Every node finds the others by itself (mDNS), within seconds (a
	// minute or two on a saturated machine).
	start := time.Now()
	waitFor(fmt.Sprintf("every node to see its %d peers over mDNS", hosts-1), time.Duration(hosts)*3*time.Second, func() bool {
		for i := 1; i <= hosts; i++ {
			if s := stats(i); s == nil || s["peers"] < float64(hosts-1) {
				return false
			}
		}
		return true
	})
	t.Logf("all %d nodes found their peers by mDNS in %.1fs", hosts, time.Since(start).Seconds())
	// What the site costs doing nothing (mDNS, hellos), measured over a
	// few seconds: every CPU cycle it takes, a transfer on this one
	// machine does not get (fifty nodes once kept both cores busy).
	idleFrom, idleCPU := time.Now(), daemonsCPU()
	<-time.After(5 * time.Second)
	idle := float64(daemonsCPU()-idleCPU) / float64(time.Since(idleFrom))

	// apt's helper with no local warren answering (nothing on port 1)
	// finds one on the LAN by mDNS.
	helperOut, err := exec.Command("ip", "netns", "exec", ns("h1"), warrenBinary(t), "apt-proxy-detect",
		"--config", "/dev/null", "--listen", "127.0.0.1:1", "--discovery", "mdns", "--timeout", "2s", "http://"+upstream+debPath).CombinedOutput()
	if got := strings.TrimSpace(string(helperOut)); err != nil || !regexp.MustCompile(`^http://`+regexp.QuoteMeta(st.subnet)+`\.[0-9]+:3142$`).MatchString(got) {
		t.Fatalf("apt-proxy-detect without a local warren: %q, %v (want a LAN warren)", got, err)
	}

	for i := 1; i <= hosts; i++ { // apt update on every machine
		for _, p := range []string{"/dists/stable/Release", "/dists/stable/main/binary-amd64/Packages"} {
			if out, err := curl(i, "-o", "/dev/null", "-x", "http://127.0.0.1:3142", "http://"+upstream+p); err != nil {
				diag, _ := exec.Command("sh", "-c", "ip netns exec "+ns("up")+" ss -tanp; ip netns exec "+ns("up")+" tc -s qdisc; ip netns exec "+ns("up")+" ip neigh; ip netns exec "+ns(fmt.Sprintf("h%d", i))+" ip neigh; ip netns exec "+ns(fmt.Sprintf("h%d", i))+" ss -tanp; ip netns exec "+ns(fmt.Sprintf("h%d", i))+" curl -sS -m 5 -o /dev/null -w '%{http_code}' http://"+upstream+"/dists/stable/Release").CombinedOutput()
				t.Fatalf("h%d %s: %v %s\n%s", i, p, err, out, diag)
			}
		}
	}
	wanBefore := tbfSentBytes(t, ns("up"))
	// Every client is started first and held at a shell's read, then all
	// are let go at once: spawning the processes on a small machine takes
	// longer than the differences measured here. Each says when it began
	// (its shell's clock, the machine's) and how long curl took.
	type client struct {
		cmd        *exec.Cmd
		release    io.WriteCloser
		out, times strings.Builder // when it began; curl's times
		start, end float64
	}
	clients := make([]*client, hosts+1)
	for i := 1; i <= hosts; i++ {
		// (Piping the body to sha256sum instead of a file measured worse:
		// 1.49-1.54 against 1.19-1.21, one more process per client.)
		dst := filepath.Join(base, fmt.Sprintf("out%d", i))
		c := &client{}
		c.cmd = exec.Command("ip", "netns", "exec", ns(fmt.Sprintf("h%d", i)), "sh", "-c",
			`read go && date +%s.%N && exec curl -sS --fail --max-time "$3" -o "$1" -w '%{stderr}%{time_starttransfer} %{time_total}' -x http://127.0.0.1:3142 "$2"`,
			"client", dst, "http://"+upstream+debPath, strconv.Itoa(int(st.clientTime.Seconds())))
		c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.times
		var err error
		if c.release, err = c.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		if err := c.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		clients[i] = c
	}
	for i := 1; i <= hosts; i++ {
		io.WriteString(clients[i].release, "go\n")
		clients[i].release.Close()
	}
	first, last := math.Inf(1), 0.0
	var failed []string
	for i := 1; i <= hosts; i++ {
		c := clients[i]
		err := c.cmd.Wait()
		f, times := strings.Fields(c.out.String()), strings.Fields(c.times.String())
		if err != nil || len(f) != 1 || len(times) != 2 {
			failed = append(failed, fmt.Sprintf("h%d's client: %v: %s %s", i, err, c.out.String(), c.times.String()))
			continue
		}
		if b, err := os.ReadFile(filepath.Join(base, fmt.Sprintf("out%d", i))); err != nil || sha256.Sum256(b) != sum {
			failed = append(failed, fmt.Sprintf("h%d got %d bytes that do not match the artifact's SHA256", i, len(b)))
			continue
		}
		c.start, _ = strconv.ParseFloat(f[0], 64)
		total, _ := strconv.ParseFloat(times[1], 64)
		c.end = c.start + total
		first, last = min(first, c.start), max(last, c.end)
	}
	took := last - first
	wan := tbfSentBytes(t, ns("up")) - wanBefore
	gets := debGETs() - baseline
	for i := 1; i <= hosts; i++ {
		s := stats(i)
		if s["uploads_peak"] > slots {
			t.Errorf("h%d served %v uploads at once, more than upload_slots=%d", i, s["uploads_peak"], slots)
		}
		c := clients[i]
		t.Logf("h%d: from peers %.1f MB, from upstream %.1f MB, uploaded %.1f MB, peak uploads %v; client began at +%.3fs, first byte/done after %s s; %s", i,
			s["bytes_peers"]/1e6, s["bytes_upstream"]/1e6, s["bytes_uploaded"]/1e6, s["uploads_peak"], c.start-first, strings.Join(strings.Fields(c.times.String()), "/"),
			storedPhases.FindString(logs[i].String()))
	}
	// When the last node had the verified artifact stored (its log's
	// clock is the clients' one): the line comes once the blob is synced
	// to disk, after its client was let have the last byte.
	stored := 0.0
	for i := 1; i <= hosts; i++ {
		m := storedAt.FindStringSubmatch(logs[i].String())
		if m == nil {
			continue
		}
		if at, err := time.Parse(time.RFC3339Nano, m[1]); err == nil {
			stored = max(stored, float64(at.UnixNano())/1e9-first)
		}
	}
	fmt.Printf("netns site test: %d hosts, %d MB artifact, WAN %s\n", hosts, size>>20, wanRate)
	fmt.Printf("  idle in the 5 s after they all found their peers, the %d daemons used %.0f%% of one core\n", hosts, 100*idle)
	fmt.Printf("  WAN bytes / artifact bytes = %.3f (upstream GETs of the artifact: %d); clients without the exact file: %d\n",
		float64(wan)/float64(size), gets, len(failed))
	fmt.Printf("  one lone WAN download %.2fs; the last node had it stored on disk after %.2fs (ratio %.2f), the last client was done after %.2fs (ratio %.2f)\n",
		lone, stored, stored/lone, took, took/lone)
	if len(failed) > 0 {
		t.Fatalf("%d of %d clients did not get the exact artifact within %s:\n%s", len(failed), hosts, st.clientTime, strings.Join(failed, "\n"))
	}
	if st.oneGET && gets != 1 {
		t.Fatalf("upstream served the artifact %d times for the site, want 1", gets)
	}
	if ratio := float64(wan) / float64(size); st.maxWAN > 0 && ratio > st.maxWAN {
		t.Fatalf("WAN carried %.3f times the artifact for the site, want at most %.2f", ratio, st.maxWAN)
	}
	if ratio := took / lone; st.maxTime > 0 && ratio > st.maxTime {
		t.Fatalf("the last client took %.2f times one lone WAN download, want at most %.2f", ratio, st.maxTime)
	}
}

// roomForNeighbours makes the kernel's neighbour (ARP) table big enough
// for a site of hosts on this one machine, for the test's length. The
// table is the whole machine's, shared by every namespace: fifty hosts
// talking to each other need some 2,500 entries, and past gc_thresh3
// (1,024 by default) the kernel drops ARP entries ("neighbor table
// overflow" in dmesg) and a host cannot reach its upstream. Real LANs
// have a kernel per machine.
func roomForNeighbours(t *testing.T, hosts int) {
	const dir = "/proc/sys/net/ipv4/neigh/default/"
	need := []int{hosts * hosts, 4 * hosts * hosts, 8 * hosts * hosts} // gc_thresh1, 2, 3
	for i, name := range []string{"gc_thresh1", "gc_thresh2", "gc_thresh3"} {
		b, err := os.ReadFile(dir + name)
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		old, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if old >= need[i] {
			continue
		}
		// Raised from the highest threshold down, restored in the reverse
		// order: the kernel wants thresh1 <= thresh2 <= thresh3.
		defer func() {
			if err := os.WriteFile(dir+name, []byte(strconv.Itoa(need[i])), 0o644); err != nil {
				t.Fatalf("raise %s for %d hosts: %v", name, hosts, err)
			}
			t.Cleanup(func() { os.WriteFile(dir+name, []byte(strconv.Itoa(old)), 0o644) })
		}()
	}
}

// lan is hosts in network namespaces of the test's own, joined by a
// bridge: multicast and broadcast reach each of them and nothing else.
type lan struct {
	t      *testing.T
	tag    string
	subnet string // "10.77.0": hosts are subnet.N/24
}

// newLAN makes the bridge; the namespaces go when the test ends.
func newLAN(t *testing.T, prefix, subnet string) *lan {
	l := &lan{t: t, tag: fmt.Sprintf("%s%d", prefix, os.Getpid()%100000), subnet: subnet}
	l.add("br")
	br := l.ns("br")
	l.sh("ip", "-n", br, "link", "add", "br0", "type", "bridge")
	l.sh("ip", "-n", br, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0")
	l.sh("ip", "-n", br, "link", "set", "br0", "up")
	return l
}

func (l *lan) ns(name string) string { return l.tag + "-" + name }

func (l *lan) sh(args ...string) string {
	l.t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (l *lan) add(name string) {
	n := l.ns(name)
	l.t.Cleanup(func() { exec.Command("ip", "netns", "del", n).Run() })
	l.sh("ip", "netns", "add", n)
	l.sh("ip", "-n", n, "link", "set", "lo", "up")
}

// host adds a namespace with eth0 at addr on the bridge.
func (l *lan) host(name, addr string) {
	l.add(name)
	host, port, br := l.ns(name), "p-"+name, l.ns("br")
	l.sh("ip", "-n", br, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", host)
	l.sh("ip", "-n", br, "link", "set", port, "master", "br0", "up")
	l.sh("ip", "-n", host, "addr", "add", addr+"/24", "brd", "+", "dev", "eth0")
	l.sh("ip", "-n", host, "link", "set", "eth0", "up")
	l.sh("ip", "-n", host, "route", "add", "224.0.0.0/4", "dev", "eth0")
}

// curl runs curl in the host's namespace (failing on HTTP errors).
func (l *lan) curl(host string, args ...string) (string, error) {
	full := append([]string{"netns", "exec", l.ns(host), "curl", "-sS", "--fail", "--max-time", "120"}, args...)
	out, err := exec.Command("ip", full...).CombinedOutput()
	return string(out), err
}

// waitUntil polls ok until it holds, failing the test after deadline.
func waitUntil(t *testing.T, what string, deadline time.Duration, ok func() bool) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	end := time.After(deadline)
	for !ok() {
		select {
		case <-tick.C:
		case <-end:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// storedPhases is how a node's log says where the artifact came from and
// how long each phase of its fill took.
var storedPhases = regexp.MustCompile(`\.deb digest=\S+ bytes=\d+ from="[^"]*" first_byte=\S+ took=\S+( query=\S+ election=\S+)?`)

// storedAt is when a node's log says it stored the artifact.
var storedAt = regexp.MustCompile(`time=(\S+) level=INFO msg=stored url=\S+\.deb `)

var tbfSent = regexp.MustCompile(`Sent (\d+) bytes`)

// tbfSentBytes reads how much the shaped WAN link has carried.
func tbfSentBytes(t *testing.T, nsName string) int64 {
	out, err := exec.Command("ip", "netns", "exec", nsName, "tc", "-s", "qdisc", "show", "dev", "eth0").CombinedOutput()
	if err != nil {
		t.Fatalf("tc: %v %s", err, out)
	}
	m := tbfSent.FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("no byte count in tc output: %s", out)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}

// A host with only loopback up (a machine at boot, an isolated one): with
// the default discovery (mDNS) warren still serves, and says discovery is
// not running. In a namespace of the test's own, with only lo.
func TestLoopbackOnlyHostServes(t *testing.T) {
	requireRoot(t, "a network namespace")
	requireTools(t, "ip", "curl")
	ns := fmt.Sprintf("wrn-lo-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v %s", err, out)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, warrenBinary(t), "serve", "--config", "/dev/null",
		"--listen", "127.0.0.1:3142", "--cache-dir", t.TempDir(), "--discovery", "mdns", "--log-level", "debug")
	logs, ready := startLogged(t, cmd, "warren (loopback only)")
	waitReady(t, ready, logs, "warren (loopback only)")
	logs.waitFor(t, "peer discovery by mDNS is not running", 10*time.Second)
	out, err := exec.Command("ip", "netns", "exec", ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:3142/_warren/stats").CombinedOutput()
	if err != nil || string(out) != "200" {
		t.Fatalf("warren in a loopback-only host does not serve: %v %s", err, out)
	}
}
