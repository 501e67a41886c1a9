package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The load of BenchmarkClientLoad: a site server's busy hour.
const (
	loadClients     = 200     // clients downloading at full speed, at once
	loadRequests    = 10      // artifacts each of them downloads
	loadSlowReaders = 480     // clients reading a body slowly, holding their connection
	loadSlowRate    = 4 << 10 // bytes/s a slow reader reads
	loadArtifacts   = 24      // distinct artifacts
	loadArtifactLen = 2 << 20 // bytes each
	// loadAddresses is how many loopback addresses the clients come
	// from: 680 clients over 32 addresses are at most 22 a address, under
	// the default max_client_connections (64), as a LAN's machines would
	// be; max_connections (1024) is above the 680 in all.
	loadAddresses = 32
)

// loadCounts are what the clients got.
type loadCounts struct {
	served   atomic.Int64 // fast downloads with the whole, exact artifact
	refused  atomic.Int64 // 503: a connection cap
	failed   atomic.Int64 // anything else, fast or slow
	held     atomic.Int64 // slow readers that got a 200 and held on
	slowRef  atomic.Int64 // slow readers refused (503 or the connection cut at once)
	slowRead atomic.Int64 // bytes the slow readers read
}

// BenchmarkClientLoad has the real daemon serve 200 clients downloading at
// once while 480 more read an artifact's body at 4 KB/s and hold their
// connections, from a real upstream (every artifact a miss the first time,
// one fill each), and reports the daemon's peak RSS (goal: at most 64 MB)
// and what was served and refused. The daemon runs with the settings it
// ships with (its memory_limit, its connection caps).
func BenchmarkClientLoad(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("reads /proc")
	}
	r := rand.New(rand.NewPCG(3, 4))
	artifacts := make([][]byte, loadArtifacts)
	for i := range artifacts {
		artifacts[i] = make([]byte, loadArtifactLen)
		for j := range artifacts[i] {
			artifacts[i][j] = byte(r.Uint32())
		}
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var i int
		if _, err := fmt.Sscanf(r.URL.Path, "/debian/pool/main/a/art%d.deb", &i); err != nil || i < 0 || i >= len(artifacts) {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(artifacts[i])))
		w.Write(artifacts[i])
	}))
	defer up.Close()
	artifactURL := func(i int) string { return fmt.Sprintf("%s/debian/pool/main/a/art%d.deb", up.URL, i%loadArtifacts) }

	proxyURL, cmd, _ := startWarren(b, "--cache-dir", b.TempDir())
	pu, _ := url.Parse(proxyURL)
	// client is one client machine's HTTP client: its own connection to
	// the proxy, from loopback address 127.0.1.<n>; rcvbuf, when set,
	// is its socket's receive buffer (a slow reader's is small, so that
	// the kernel does not take the body off the daemon's hands).
	client := func(n, rcvbuf int) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(1+n%loadAddresses))}}
		if rcvbuf > 0 {
			d.Control = func(_, _ string, c syscall.RawConn) error {
				var serr error
				err := c.Control(func(fd uintptr) {
					serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
				})
				return errors.Join(err, serr)
			}
		}
		return &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu), DialContext: d.DialContext, MaxIdleConnsPerHost: 1}}
	}

	var c loadCounts
	var took time.Duration
	for b.Loop() {
		c = loadCounts{}
		ctx, stop := context.WithCancel(b.Context())
		var slow, started sync.WaitGroup
		for i := range loadSlowReaders {
			slow.Add(1)
			started.Add(1)
			go func() {
				defer slow.Done()
				slowRead(ctx, client(loadClients+i, 4<<10), artifactURL(i), &c, started.Done)
			}()
		}
		started.Wait() // every slow reader holds its answer, or was refused
		start := time.Now()
		var fast sync.WaitGroup
		for i := range loadClients {
			fast.Add(1)
			go func() {
				defer fast.Done()
				hc := client(i, 0)
				defer hc.CloseIdleConnections()
				for j := range loadRequests {
					n := i + j*7
					fastGet(hc, artifactURL(n), artifacts[n%loadArtifacts], &c)
				}
			}()
		}
		fast.Wait()
		took = time.Since(start)
		stop()
		slow.Wait()
	}
	reportPeakRSS(b, cmd.Process.Pid, "MB-peak-RSS")
	b.ReportMetric(float64(c.served.Load()), "served")
	b.ReportMetric(float64(c.refused.Load()), "refused")
	b.ReportMetric(float64(c.held.Load()), "slow-held")
	b.ReportMetric(float64(c.slowRef.Load()), "slow-refused")
	b.ReportMetric(float64(c.slowRead.Load())/float64(max(c.held.Load(), 1))/(1<<10), "KB-per-slow-reader")
	b.ReportMetric(float64(c.served.Load())*loadArtifactLen/(1<<20)/took.Seconds(), "MB/s-served")
	if f := c.failed.Load(); f > 0 {
		b.Errorf("%d downloads failed other than by a 503 (wrong bytes, an error)", f)
	}
	if n := c.served.Load() + c.refused.Load() + c.held.Load() + c.slowRef.Load() + c.failed.Load(); n != loadClients*loadRequests+loadSlowReaders {
		b.Errorf("counted %d outcomes of %d downloads and %d slow readers", n, loadClients*loadRequests, loadSlowReaders)
	}
}

// fastGet downloads u and counts it: served when the body is want.
func fastGet(hc *http.Client, u string, want []byte, c *loadCounts) {
	resp, err := hc.Get(u)
	if err != nil {
		c.failed.Add(1)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusServiceUnavailable {
		io.Copy(io.Discard, resp.Body)
		c.refused.Add(1)
		return
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || string(body) != string(want) {
		c.failed.Add(1)
		return
	}
	c.served.Add(1)
}

// slowRead asks for u and reads its body at loadSlowRate until ctx ends,
// holding the connection; started is called once the answer's head came
// (or the request failed).
func slowRead(ctx context.Context, hc *http.Client, u string, c *loadCounts, started func()) {
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := hc.Do(req)
	if err != nil {
		c.failed.Add(1)
		started()
		return
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusServiceUnavailable:
		c.slowRef.Add(1)
		started()
		return
	default:
		c.failed.Add(1)
		started()
		return
	}
	c.held.Add(1)
	started()
	const chunk = 1 << 10
	buf := make([]byte, chunk)
	tick := time.NewTicker(time.Second * chunk / loadSlowRate)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		n, err := io.ReadFull(resp.Body, buf)
		c.slowRead.Add(int64(n))
		if err != nil {
			return
		}
	}
}
