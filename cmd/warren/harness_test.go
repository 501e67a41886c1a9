package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The harness of the end-to-end tests: the real binary, free ports,
// processes with their logs, real upstream servers.

// requireTools skips when a tool is missing, unless a step of `make test`
// (which installs them) runs the test: then a missing tool fails it.
func requireTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			for _, step := range []string{"WARREN_E2E", "WARREN_NETNS", "WARREN_PKG"} {
				if os.Getenv(step) == "1" {
					t.Fatalf("%s not found; `make test` installs it (see TEST_DEBS in the Makefile)", tool)
				}
			}
			t.Skipf("%s not found (run `make test` to install the end-to-end tools)", tool)
		}
	}
}

// requireRootStep skips what, a test that changes the machine, unless its
// own step of `make test` runs it (env=1); that step fails it when not root.
func requireRootStep(t testing.TB, env, what string) {
	t.Helper()
	if os.Getenv(env) != "1" {
		t.Skipf("SKIP: %s runs as its own step of `make test` (%s=1)", what, env)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("%s needs root: run `make test` as root", what)
	}
}

// requireRoot skips a test that needs root when not root, unless a step of
// `make test` runs it (WARREN_E2E=1): then it fails, never passes unseen.
func requireRoot(t testing.TB, what string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("WARREN_E2E") == "1" {
		t.Fatalf("%s needs root: run `make test` as root", what)
	}
	t.Skipf("SKIP: %s needs root", what)
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// warrenBinary builds the real binary once per test run.
func warrenBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		// A benchmark may compare builds: WARREN_BINARY names the one to run.
		if bin := os.Getenv("WARREN_BINARY"); bin != "" {
			binPath = bin
			return
		}
		dir, err := os.MkdirTemp("", "warren-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "warren")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// freeLoopbackPort finds a port free on 127.0.0.1 for both TCP and UDP:
// warren uses one number for HTTP and peer datagrams.
func freeLoopbackPort(t testing.TB) string {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp4", addr)
		ln.Close()
		if err == nil {
			pc.Close()
			return addr
		}
	}
	t.Fatal("no port free for both TCP and UDP on 127.0.0.1")
	return ""
}

// startWarren runs the binary on a free loopback port; see startWarrenAt.
func startWarren(t testing.TB, args ...string) (string, *exec.Cmd, *syncBuffer) {
	return startWarrenAt(t, freeLoopbackPort(t), args...)
}

// startWarrenAt runs the binary serving on addr and returns its proxy URL
// once it logs that it is serving. Peering traffic never leaves the
// machine: discovery is off unless the test passes --discovery (static on
// loopback). Upstream may be on loopback unless the test passes
// --allow-upstream.
func startWarrenAt(t testing.TB, addr string, args ...string) (string, *exec.Cmd, *syncBuffer) {
	t.Helper()
	base := []string{"serve", "--listen", addr}
	if !slices.Contains(args, "--discovery") {
		base = append(base, "--discovery", "off")
	}
	// The tests' upstreams listen on loopback, which warren refuses by
	// default; a test of that refusal passes its own --allow-upstream.
	if !slices.Contains(args, "--allow-upstream") {
		base = append(base, "--allow-upstream", "127.0.0.0/8")
	}
	cmd := exec.Command(warrenBinary(t), append(base, args...)...)
	logs, ready := startLogged(t, cmd, "warren "+addr)
	waitReady(t, ready, logs, "warren "+addr)
	return "http://" + addr, cmd, logs
}

// startLogged starts cmd, collects its stderr, and stops it (interrupt,
// wait) when the test ends, showing the log tail if the test failed. ready
// closes when the process logs that warren is serving.
func startLogged(t testing.TB, cmd *exec.Cmd, name string) (*syncBuffer, <-chan struct{}) {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	logs := &syncBuffer{}
	ready := make(chan struct{})
	go func() {
		var once sync.Once
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "warren serving") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s log (tail):\n%s", name, tail(logs.String(), 60))
		}
	})
	return logs, ready
}

// waitReady waits for ready, with a deadline.
func waitReady(t testing.TB, ready <-chan struct{}, logs *syncBuffer, name string) {
	t.Helper()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not start:\n%s", name, logs.String())
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

type syncBuffer struct {
	mu      sync.Mutex // guards b and changed
	b       bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func (s *syncBuffer) WriteString(x string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.WriteString(x)
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.WriteString(string(p))
	return len(p), nil
}

// waitFor waits until the log holds substr, with a deadline.
func (s *syncBuffer) waitFor(t testing.TB, substr string, deadline time.Duration) {
	t.Helper()
	s.waitForCount(t, substr, 1, deadline)
}

// waitForCount waits until the log holds substr n times, with a deadline.
func (s *syncBuffer) waitForCount(t testing.TB, substr string, n int, deadline time.Duration) {
	t.Helper()
	timeout := time.After(deadline)
	for {
		s.mu.Lock()
		found := strings.Count(s.b.String(), substr) >= n
		if s.changed == nil {
			s.changed = make(chan struct{})
		}
		ch := s.changed
		s.mu.Unlock()
		if found {
			return
		}
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("no %d log lines with %q within %s", n, substr, deadline)
		}
	}
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func run(t testing.TB, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// countingServer serves dir and counts GETs per path: the real upstream.
type countingServer struct {
	*httptest.Server
	mu   sync.Mutex // guards gets
	gets map[string]int
}

func serveDir(t testing.TB, dir string) *countingServer {
	cs := &countingServer{gets: map[string]int{}}
	fs := http.FileServer(http.Dir(dir))
	cs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cs.mu.Lock()
		cs.gets[r.URL.Path]++
		cs.mu.Unlock()
		fs.ServeHTTP(w, r)
	}))
	t.Cleanup(cs.Close)
	return cs
}

func (cs *countingServer) count(path string) int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.gets[path]
}

func sha256File(t testing.TB, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// hasHitLine says whether warren's log shows rawURL (as metadata spells it)
// served by a learnt digest from the cache, however the client escaped
// '+', '~' and ':' in its request.
func hasHitLine(logs, rawURL, kind string) bool {
	u, err := url.Parse(rawURL)
	if err != nil {
		return false
	}
	var pat strings.Builder
	pat.WriteString(regexp.QuoteMeta(u.Scheme + "://" + u.Host))
	for _, c := range u.Path {
		switch c {
		case '+':
			pat.WriteString(`(?:\+|%2[bB])`)
		case '~':
			pat.WriteString(`(?:~|%7[eE])`)
		case ':':
			pat.WriteString(`(?::|%3[aA])`)
		default:
			pat.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	re := regexp.MustCompile(`url=` + pat.String() + ` kind=` + regexp.QuoteMeta(kind) + ` hash_known=true outcome=hit`)
	return re.MatchString(logs)
}

// proxyClient is an HTTP client that uses the warren at u as its proxy.
func proxyClient(t *testing.T, u string) *http.Client {
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{Proxy: http.ProxyURL(pu), DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}
