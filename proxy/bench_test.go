package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/internal/siteca"
)

// BenchmarkServeHit20MB is the hit path for a large artifact: proxy request
// over loopback TCP, blob served with sendfile. Reports MB/s.
func BenchmarkServeHit20MB(b *testing.B) {
	up := newUpstream(b, 20<<20)
	h := newHarness(b, up)
	warm(b, h, up.debURL)
	serveBig(b, h.client, up.debURL, len(up.deb))
}

// BenchmarkServeHitHTTPS20MB is the same hit through an intercepted https
// repository: TLS with a site-CA leaf between client and warren. Its
// cpu-s/GB against BenchmarkServeHit20MB's is what TLS costs per GB
// (client and proxy share the process: both ends' crypto is counted).
func BenchmarkServeHitHTTPS20MB(b *testing.B) {
	up := newUpstream(b, 20<<20)
	public := newTestCA(b, "a public CA")
	_, port := tlsOrigin(b, up, public)
	ca, err := siteca.Init(b.TempDir(), []string{"localhost"}, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	h := newHarness(b, up, func(c *testConfig, _ *cachestore.Config) {
		c.Intercept = siteInterceptor{ca}
		c.UpstreamRoots = public.pool
		c.ConnectPorts = []int{port}
	})
	pu, _ := url.Parse(h.front.URL)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: roots}, DisableCompression: true}}
	base := "https://localhost:" + strconv.Itoa(port)
	for _, p := range []string{releasePath, packagesPath, debPath, debPath} {
		resp, err := client.Get(base + p)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if up.count(debPath) != 1 {
		b.Fatalf("the deb was fetched %d times: not cached over https", up.count(debPath))
	}
	serveBig(b, client, base+debPath, len(up.deb))
}

// serveBig GETs u in a loop, reporting MB/s and the process's CPU seconds
// per GB served.
func serveBig(b *testing.B, c *http.Client, u string, size int) {
	b.SetBytes(int64(size))
	cpu0 := cpuTime()
	b.ResetTimer()
	for b.Loop() {
		resp, err := c.Get(u)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if n != int64(size) {
			b.Fatalf("got %d bytes", n)
		}
	}
	gb := float64(b.N) * float64(size) / 1e9
	b.ReportMetric((cpuTime()-cpu0).Seconds()/gb, "cpu-s/GB")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkServeHitSmall is the hit path for small cached files (4 KiB),
// 8 clients with keep-alive. Reports requests/s.
func BenchmarkServeHitSmall(b *testing.B) {
	up := newUpstream(b, 4096)
	h := newHarness(b, up)
	warm(b, h, up.debURL)
	h.client.Transport.(*http.Transport).MaxIdleConnsPerHost = 16
	start := time.Now()
	b.SetParallelism(4) // 4 x GOMAXPROCS client goroutines
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := h.client.Get(up.debURL)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}

func warm(b *testing.B, h *harness, u string) {
	resp, err := h.client.Get(u)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	resp, err = h.client.Get(u)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.Header.Get("X-Cache") != "HIT from warren" {
		b.Fatalf("not a hit: %q", resp.Header.Get("X-Cache"))
	}
}

// A small hit copies through one of the server's buffers: http.ServeContent
// alone allocates a copy buffer (up to 32 KB) for every hit, and the
// garbage collection that follows was a third of a small hit's CPU.
func TestSmallHitAllocatesNoBodySizedBuffer(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation figures mean nothing under the race detector (sync.Pool drops at random)")
	}
	const size = 256 << 10 // small enough for a kept descriptor
	up := newUpstream(t, size)
	h := newHarness(t, up)
	h.learn() // hash-known, as apt's are: served from the blob
	get := func() {
		resp, err := h.client.Get(up.debURL)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.Header.Get("X-Cache") != "HIT from warren" {
			t.Fatalf("not a hit: %q", resp.Header.Get("X-Cache"))
		}
	}
	h.mustGet(up.debURL, 200)
	h.settle()
	get()
	const hits = 40
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range hits {
		get()
	}
	runtime.ReadMemStats(&after)
	// About 8 KB a hit with the pooled buffer; a copy buffer of its own
	// (32 KB at most, the body's size below that) is over 40.
	if per := (after.TotalAlloc - before.TotalAlloc) / hits; per > 16<<10 {
		t.Fatalf("a hit of %d bytes allocated %d bytes (client and server together): a copy buffer per hit", size, per)
	}
}
