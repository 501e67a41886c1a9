package proxy

import (
	"io"
	"net/http"
	"testing"
	"time"
)

// BenchmarkServeHit20MB is the hit path for a large artifact: proxy request
// over loopback TCP, blob served with sendfile. Reports MB/s.
func BenchmarkServeHit20MB(b *testing.B) {
	up := newUpstream(b, 20<<20)
	h := newHarness(b, up)
	warm(b, h, up.debURL)
	b.SetBytes(int64(len(up.deb)))
	b.ResetTimer()
	for b.Loop() {
		resp, err := h.client.Get(up.debURL)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if n != int64(len(up.deb)) {
			b.Fatalf("got %d bytes", n)
		}
	}
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
