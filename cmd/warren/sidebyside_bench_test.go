package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkSideBySide runs the same cache-hit work through warren, nginx
// serving the files statically (the pace a cache cannot beat) and
// apt-cacher-ng, all on loopback with private configs, in one interleaved
// run (each round takes every server in turn, the order rotating), and
// prints warren's ratios to each: big files (one 20 MB artifact, 4
// clients, MB/s), small files (200 of 20 KB, 16 keep-alive clients,
// req/s), and 10 cold clients all asking for the same 20 artifacts of 1 MB
// at once behind a WAN of 20 ms a request (time, and GETs upstream). It
// reports warren's resident memory idle and its peak under that load.
// make bench installs nginx and apt-cacher-ng (make bench-deps); without
// them the bench skips.
func BenchmarkSideBySide(b *testing.B) {
	nginxBin, err1 := exec.LookPath("nginx")
	acngBin, err2 := exec.LookPath("apt-cacher-ng")
	if err := errors.Join(err1, err2); err != nil {
		b.Skipf("needs nginx and apt-cacher-ng (make bench-deps installs them): %v", err)
	}
	dir := b.TempDir()
	os.Chmod(dir, 0o755) // nginx's workers may run as nobody
	site := newBenchSite(b, filepath.Join(dir, "up"))
	up := httptest.NewUnstartedServer(site)
	up.Listener.Close()
	up.Listener = lowPortListener(b) // apt-cacher-ng is allowed to fetch from it
	up.Start()
	defer up.Close()
	upPort := up.URL[strings.LastIndex(up.URL, ":")+1:]

	warrenURL, warrenCmd, _ := startWarren(b, "--cache-dir", filepath.Join(dir, "warren"))
	nginxURL, nginxPid := startNginx(b, nginxBin, dir, site.root)
	acngURL, acngPid := startAcng(b, acngBin, dir, upPort)
	servers := []benchServer{
		{name: "warren", proxy: warrenURL, pid: warrenCmd.Process.Pid},
		{name: "nginx", direct: nginxURL, pid: nginxPid},
		{name: "apt-cacher-ng", proxy: acngURL, pid: acngPid},
	}
	for i := range servers {
		servers[i].client = benchClient(servers[i].proxy)
		defer servers[i].client.CloseIdleConnections()
	}

	// apt update, then each artifact once: warren learns the hashes and
	// both caches hold every file the hit work asks for.
	warm := append([]string{"/dists/stable/Release", "/dists/stable/main/binary-amd64/Packages", site.big}, site.small...)
	for _, s := range []benchServer{servers[0], servers[2]} {
		for _, p := range warm {
			if _, err := s.get(context.Background(), up.URL, p); err != nil {
				b.Fatalf("%s, warming %s: %v", s.name, p, err)
			}
		}
	}
	idle := procStatusMB(b, warrenCmd.Process.Pid, "VmRSS:")

	const rounds, span = 3, 2 * time.Second
	type figures struct{ bigMBs, smallRPS, serverCPU, clientCPU []float64 }
	got := make([]figures, len(servers))
	for r := range rounds {
		for k := range servers {
			i := (k + r) % len(servers)
			s := servers[i]
			n, err := s.hammer(up.URL, []string{site.big}, 4, span)
			if err != nil {
				b.Fatalf("%s, big files: %v", s.name, err)
			}
			got[i].bigMBs = append(got[i].bigMBs, float64(n)/span.Seconds()/1e6)
			stopProfile := profileWarren(b, s.name == "warren" && r == 0, filepath.Join(dir, "warren", "admin.sock"), span)
			serverBefore, clientBefore := treeCPU(s.pid), selfCPU()
			n, err = s.hammer(up.URL, site.small, 16, span)
			serverCPU, clientCPU := treeCPU(s.pid)-serverBefore, selfCPU()-clientBefore
			stopProfile()
			if err != nil {
				b.Fatalf("%s, small files: %v", s.name, err)
			}
			reqs := float64(n) / float64(site.smallSize)
			got[i].smallRPS = append(got[i].smallRPS, reqs/span.Seconds())
			got[i].serverCPU = append(got[i].serverCPU, float64(serverCPU.Microseconds())/reqs)
			got[i].clientCPU = append(got[i].clientCPU, float64(clientCPU.Microseconds())/reqs)
		}
	}
	peak := procStatusMB(b, warrenCmd.Process.Pid, "VmHWM:")

	// Cold: 10 clients at once, each asking for the 20 artifacts in its
	// own order; the upstream counts what each cache asked it.
	type cold struct {
		took time.Duration
		gets int
	}
	colds := map[string]cold{}
	for i, s := range []benchServer{servers[2], servers[0]} {
		paths := site.coldSet(i)
		before := site.gets(paths)
		begin := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, 10)
		for c := range 10 {
			order := slices.Clone(paths)
			rand.New(rand.NewPCG(uint64(c), 1)).Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, p := range order {
					if _, err := s.get(context.Background(), up.URL, p); err != nil {
						errs <- fmt.Errorf("%s, cold %s: %w", s.name, p, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		colds[s.name] = cold{time.Since(begin), site.gets(paths) - before}
	}

	med := func(v []float64) float64 { v = slices.Clone(v); slices.Sort(v); return v[len(v)/2] }
	w, ng, ac := got[0], got[1], got[2]
	fmt.Printf("side by side on loopback, %d interleaved rounds of %s each (medians):\n", rounds, span)
	fmt.Printf("  %-14s %14s %14s\n", "", "big MB/s", "small req/s")
	for i, s := range servers {
		fmt.Printf("  %-14s %14.0f %14.0f\n", s.name, med(got[i].bigMBs), med(got[i].smallRPS))
	}
	fmt.Printf("  CPU per small hit, server / this load generator: warren %.0f / %.0f µs, nginx %.0f / %.0f µs, apt-cacher-ng %.0f / %.0f µs\n",
		med(w.serverCPU), med(w.clientCPU), med(ng.serverCPU), med(ng.clientCPU), med(ac.serverCPU), med(ac.clientCPU))
	fmt.Printf("  warren/nginx:         big %.2f, small %.2f\n", med(w.bigMBs)/med(ng.bigMBs), med(w.smallRPS)/med(ng.smallRPS))
	fmt.Printf("  warren/apt-cacher-ng: big %.2f, small %.2f\n", med(w.bigMBs)/med(ac.bigMBs), med(w.smallRPS)/med(ac.smallRPS))
	fmt.Printf("  10 cold clients, 20 artifacts of 1 MB each, 20 ms WAN: warren %.2fs with %d upstream GETs, apt-cacher-ng %.2fs with %d (time ratio %.2f)\n",
		colds["warren"].took.Seconds(), colds["warren"].gets, colds["apt-cacher-ng"].took.Seconds(), colds["apt-cacher-ng"].gets,
		colds["warren"].took.Seconds()/colds["apt-cacher-ng"].took.Seconds())
	fmt.Printf("  warren RSS: idle %.1f MB, peak under the hit load %.1f MB\n", idle, peak)
	b.ReportMetric(med(w.serverCPU), "µs-CPU-small-hit-warren")
	b.ReportMetric(med(ng.serverCPU), "µs-CPU-small-hit-nginx")
	b.ReportMetric(med(w.bigMBs)/med(ng.bigMBs), "big-x-nginx")
	b.ReportMetric(med(w.smallRPS)/med(ng.smallRPS), "small-x-nginx")
	b.ReportMetric(med(w.smallRPS)/med(ac.smallRPS), "small-x-acng")
	b.ReportMetric(float64(colds["warren"].gets), "cold-GETs-warren")
	b.ReportMetric(float64(colds["apt-cacher-ng"].gets), "cold-GETs-acng")
	b.ReportMetric(peak, "MB-peak-RSS")
	b.ReportMetric(idle, "MB-idle-RSS")
}

// benchSite is the upstream: an apt repository on disk (so that nginx can
// serve the very same files) whose every request waits out a WAN round
// trip, counting GETs per path.
type benchSite struct {
	root       string
	big        string
	small      []string
	smallSize  int64
	cold       [2][]string // one set per cache, so both start cold
	mu         sync.Mutex
	count      map[string]int
	fileServer http.Handler
}

func newBenchSite(b *testing.B, root string) *benchSite {
	s := &benchSite{root: root, smallSize: 20 << 10, count: map[string]int{}, fileServer: http.FileServer(http.Dir(root))}
	r := rand.New(rand.NewPCG(7, 7))
	var pkgs strings.Builder
	add := func(name string, size int) string {
		p := "/pool/main/" + name
		body := make([]byte, size)
		for i := range body {
			body[i] = byte(r.UintN(256))
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), body, 0o644); err != nil {
			b.Fatal(err)
		}
		sum := sha256.Sum256(body)
		fmt.Fprintf(&pkgs, "Package: %s\nVersion: 1:2.0~rc1+dfsg-1\nArchitecture: all\nFilename: %s\nSize: %d\nSHA256: %s\n\n",
			strings.TrimSuffix(name, ".deb"), p[1:], size, hex.EncodeToString(sum[:]))
		return p
	}
	s.big = add("big_1_all.deb", 20<<20)
	for i := range 200 {
		s.small = append(s.small, add(fmt.Sprintf("s/small%03d_1_all.deb", i), int(s.smallSize)))
	}
	for set := range s.cold {
		for i := range 20 {
			s.cold[set] = append(s.cold[set], add(fmt.Sprintf("c/cold%d-%02d_1_all.deb", set, i), 1<<20))
		}
	}
	psum := sha256.Sum256([]byte(pkgs.String()))
	rel := fmt.Sprintf("Suite: stable\nCodename: stable\nSHA256:\n %s %d main/binary-amd64/Packages\n", hex.EncodeToString(psum[:]), pkgs.Len())
	for p, body := range map[string]string{"dists/stable/Release": rel, "dists/stable/main/binary-amd64/Packages": pkgs.String()} {
		os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755)
		if err := os.WriteFile(filepath.Join(root, p), []byte(body), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

func (s *benchSite) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.count[r.URL.Path]++
	s.mu.Unlock()
	select { // the WAN's round trip
	case <-time.After(20 * time.Millisecond):
	case <-r.Context().Done():
		return
	}
	s.fileServer.ServeHTTP(w, r)
}

func (s *benchSite) coldSet(i int) []string { return s.cold[i] }

// gets is how many GETs the upstream had for paths.
func (s *benchSite) gets(paths []string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, p := range paths {
		n += s.count[p]
	}
	return n
}

// benchServer is one server under test: a proxy the clients send the
// upstream's URLs to, or a web server (direct) holding the same files.
type benchServer struct {
	name, proxy, direct string
	client              *http.Client
	pid                 int // the server's process (and its children)
}

func benchClient(proxy string) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	if proxy != "" {
		pu, _ := url.Parse(proxy)
		tr.Proxy = http.ProxyURL(pu)
	}
	return &http.Client{Transport: tr, Timeout: 2 * time.Minute}
}

// get fetches path (the upstream's, or the same from a direct server) and
// returns its length.
func (s benchServer) get(ctx context.Context, upstream, path string) (int64, error) {
	u := upstream + path
	if s.direct != "" {
		u = s.direct + path
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %s", resp.Status)
	}
	return n, err
}

// hammer has clients fetch paths at random, one request after another on
// kept-alive connections, for span; it returns the bytes received.
func (s benchServer) hammer(upstream string, paths []string, clients int, span time.Duration) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), span)
	defer cancel()
	var total atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(c), 3))
			for ctx.Err() == nil {
				n, err := s.get(ctx, upstream, paths[r.IntN(len(paths))])
				if err != nil {
					if ctx.Err() == nil {
						errs <- err
					}
					return
				}
				total.Add(n)
			}
		}()
	}
	wg.Wait()
	close(errs)
	return total.Load(), <-errs
}

// startNginx serves root statically on a loopback port, with a private
// configuration and prefix in dir.
func startNginx(b *testing.B, bin, dir, root string) (string, int) {
	prefix := filepath.Join(dir, "nginx")
	if err := os.MkdirAll(filepath.Join(prefix, "logs"), 0o755); err != nil {
		b.Fatal(err)
	}
	port := freeTCPPort(b)
	user := ""
	if os.Getuid() == 0 {
		user = "user root root;" // the files are in the test's private directory
	}
	conf := fmt.Sprintf(`%s
worker_processes 2;
daemon off;
pid %[2]s/nginx.pid;
error_log %[2]s/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path %[2]s/body;
  proxy_temp_path %[2]s/proxy;
  fastcgi_temp_path %[2]s/fastcgi;
  uwsgi_temp_path %[2]s/uwsgi;
  scgi_temp_path %[2]s/scgi;
  server {
    listen 127.0.0.1:%[3]s;
    root %[4]s;
  }
}
`, user, prefix, port, root)
	confPath := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", prefix, "-c", confPath, "-e", filepath.Join(prefix, "logs", "error.log"))
	startServer(b, cmd, "nginx", "127.0.0.1:"+port)
	return "http://127.0.0.1:" + port, cmd.Process.Pid
}

// startAcng runs apt-cacher-ng in the foreground on a loopback port with a
// private cache, allowed to fetch from the upstream's port.
func startAcng(b *testing.B, bin, dir, upPort string) (string, int) {
	base := filepath.Join(dir, "acng")
	for _, d := range []string{"conf", "cache", "log"} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(base, "conf", "acng.conf"), nil, 0o644); err != nil {
		b.Fatal(err)
	}
	ln := lowPortListener(b)
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	cmd := exec.Command(bin, "-c", filepath.Join(base, "conf"), "ForeGround=1", "Port="+port, "BindAddress=127.0.0.1",
		"CacheDir="+filepath.Join(base, "cache"), "LogDir="+filepath.Join(base, "log"), "PidFile="+filepath.Join(base, "pid"),
		"SocketPath="+filepath.Join(base, "sock"), "AllowUserPorts=80 "+upPort)
	startServer(b, cmd, "apt-cacher-ng", "127.0.0.1:"+port)
	return "http://127.0.0.1:" + port, cmd.Process.Pid
}

// startServer starts cmd, stops it when the bench ends, and waits until
// addr takes connections.
func startServer(b *testing.B, cmd *exec.Cmd, name, addr string) {
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		b.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	b.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case err := <-exited:
			b.Fatalf("%s exited: %v\n%s", name, err, out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s does not take connections on %s: %v\n%s", name, addr, err, out.String())
		}
	}
}

// lowPortListener listens on a free loopback port below 32768:
// apt-cacher-ng 3.7 can neither listen on nor fetch from a port above
// (it fails with "Error resolving address for binding").
func lowPortListener(b *testing.B) net.Listener {
	for range 100 {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000)))
		if err == nil {
			return ln
		}
	}
	b.Fatal("no free loopback port below 32768")
	return nil
}

func freeTCPPort(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// procStatusMB reads one kB field of /proc/PID/status, in MB.
func procStatusMB(b *testing.B, pid int, field string) float64 {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	b.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// profileWarren takes a CPU profile of the daemon through its admin socket
// for span, when on and WARREN_BENCH_PROFILE names the file to write it
// to: "profile first". The returned func waits for it.
func profileWarren(b *testing.B, on bool, sock string, span time.Duration) func() {
	out := os.Getenv("WARREN_BENCH_PROFILE")
	if !on || out == "" {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
		resp, err := c.Get(fmt.Sprintf("http://warren/debug/pprof/profile?seconds=%d", int(span.Seconds())))
		if err != nil {
			b.Errorf("profile warren: %v", err)
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(out)
		if err != nil {
			b.Errorf("profile warren: %v", err)
			return
		}
		defer f.Close()
		if _, err := io.Copy(f, resp.Body); err != nil {
			b.Errorf("profile warren: %v", err)
		}
	}()
	return func() { <-done }
}

// treeCPU is the CPU time (user and system) used so far by pid and the
// processes below it (nginx's workers). /proc counts in clock ticks of
// 10 ms: over a span of seconds that is fine.
func treeCPU(pid int) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0 // gone
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from after its closing one (utime and stime are fields 14 and 15).
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	var ticks int64
	if len(f) > 12 {
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		ticks = u + s
	}
	total := time.Duration(ticks) * 10 * time.Millisecond
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		kids, _ := os.ReadFile(t)
		for _, k := range strings.Fields(string(kids)) {
			if kp, err := strconv.Atoi(k); err == nil {
				total += treeCPU(kp)
			}
		}
	}
	return total
}

// selfCPU is the CPU time this process (the load generator) used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
