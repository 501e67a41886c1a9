package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/peering"
)

// manyDebs is an upstream with n hash-known artifacts of size bytes each,
// so that every iteration of a benchmark is a fresh miss.
func manyDebs(b *testing.B, n, size int) (base string, urls []string) {
	files := map[string][]byte{}
	var pkgs strings.Builder
	for i := range n {
		body := randomBytes(size, uint64(1000+i))
		p := fmt.Sprintf("pool/main/p/pkg%d/pkg%d_1.0-1+deb12u1_amd64.deb", i, i)
		files["/debian/"+p] = body
		fmt.Fprintf(&pkgs, "Package: pkg%d\nFilename: %s\nSize: %d\nSHA256: %s\n\n", i, p, len(body), sha256hex(body))
		urls = append(urls, "/debian/"+p)
	}
	files["/debian/dists/stable/main/binary-amd64/Packages"] = []byte(pkgs.String())
	files["/debian/dists/stable/InRelease"] = []byte(fmt.Sprintf("Suite: stable\nSHA256:\n %s %d main/binary-amd64/Packages\n",
		sha256hex([]byte(pkgs.String())), pkgs.Len()))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(body)
	}))
	b.Cleanup(srv.Close)
	for i := range urls {
		urls[i] = srv.URL + urls[i]
	}
	return srv.URL, urls
}

// benchNode is a peering node on loopback for the benchmark's life. Like
// a daemon, it uses one port number for UDP and (nominally) HTTP.
func benchNode(b *testing.B, id byte, has func(cachestore.Digest) bool) *peering.Node {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	n, err := peering.Listen(peering.Config{ID: peering.NodeID{id}, Priority: 100, Port: uint16(port),
		ListenUDP: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)), Has: has})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	return n
}

// missHarness is a node in front of manyDebs's upstream, with its store's
// housekeeping running as in the daemon (spare temp files) and the hashes
// of urls learnt, so that each of them is a hash-known miss.
func missHarness(b *testing.B, urls []string, peers door.Peers) *harness {
	base := strings.SplitN(urls[0], "/debian/", 2)[0]
	h := newHarness(b, nil, func(c *testConfig, _ *cachestore.Config) { c.Peers = peers; c.Now = nil })
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); h.store.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-ran })
	firstByte(b, h.client, base+"/debian/dists/stable/InRelease")
	firstByte(b, h.client, base+"/debian/dists/stable/main/binary-amd64/Packages")
	if _, err := h.known(urls[0]); err != nil {
		b.Fatal(err)
	}
	return h
}

// firstByte is the time from sending a GET to its response headers, which
// warren sends with the first byte of the body; the body is read whole.
func firstByte(b *testing.B, c *http.Client, u string) time.Duration {
	start := time.Now()
	resp, err := c.Get(u)
	if err != nil {
		b.Fatal(err)
	}
	took := time.Since(start)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("GET %s: %s", u, resp.Status)
	}
	return took
}

// BenchmarkMissFirstByte is the first-byte time a hash-known miss of a
// shared-size artifact (300 KiB, above share_min_size, so the peers are
// asked first) adds to fetching it from upstream directly: on a lone node
// with peering on (goal: at most +1 ms) and on a node whose LAN peer has
// nothing (goal: at most +10 ms).
func BenchmarkMissFirstByte(b *testing.B) {
	direct := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer direct.CloseIdleConnections()
	for _, tt := range []struct {
		name  string
		peers func(b *testing.B) door.Peers
	}{
		{"no-peering", func(b *testing.B) door.Peers { return nil }},
		{"lone", func(b *testing.B) door.Peers { return benchNode(b, 1, nil) }},
		{"lan-nobody-has-it", func(b *testing.B) door.Peers {
			other := benchNode(b, 2, func(cachestore.Digest) bool { return false })
			self := benchNode(b, 1, nil)
			self.Table().Seen(peering.Peer{ID: peering.NodeID{2}, Addr: netip.MustParseAddr("127.0.0.1"), Port: other.Addr().Port(), Priority: 100})
			return self
		}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			size := 300 << 10
			if os.Getenv("WARREN_BENCH_SMALL") != "" {
				size = 8 << 10 // below share_min_size: upstream first
			}
			_, urls := manyDebs(b, 400, size)
			h := missHarness(b, urls, tt.peers(b))
			var viaWarren, straight time.Duration
			i := 0
			for b.Loop() {
				if i+1 >= len(urls) {
					b.Fatal("ran out of artifacts: raise the count")
				}
				viaWarren += firstByte(b, h.client, urls[i])
				straight += firstByte(b, direct, urls[i+1])
				i += 2
			}
			n := float64(i / 2)
			b.ReportMetric(float64(viaWarren.Microseconds())/n/1000, "ms-first-byte-warren")
			b.ReportMetric(float64(straight.Microseconds())/n/1000, "ms-first-byte-direct")
			b.ReportMetric(float64((viaWarren-straight).Microseconds())/n/1000, "ms-added")
		})
	}
}

// BenchmarkMissSmall is the whole time of a hash-known miss of a small
// artifact (20 KB, below share_min_size: upstream first, the peers the
// fallback) through a lone node with peering on, against fetching it
// straight: what a cold `apt-get install` of many small packages pays per
// package (goal: within 1.2 times direct).
func BenchmarkMissSmall(b *testing.B) {
	direct := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer direct.CloseIdleConnections()
	_, urls := manyDebs(b, 4000, 20<<10)
	h := missHarness(b, urls, benchNode(b, 1, nil))
	whole := func(c *http.Client, u string) time.Duration {
		start := time.Now()
		firstByte(b, c, u)
		return time.Since(start)
	}
	var viaWarren, straight time.Duration
	i := 0
	for b.Loop() {
		if i+1 >= len(urls) {
			b.Fatal("ran out of artifacts: raise the count")
		}
		viaWarren += whole(h.client, urls[i])
		straight += whole(direct, urls[i+1])
		i += 2
	}
	n := float64(i / 2)
	b.ReportMetric(float64(viaWarren.Microseconds())/n/1000, "ms-warren")
	b.ReportMetric(float64(straight.Microseconds())/n/1000, "ms-direct")
	b.ReportMetric(float64(viaWarren)/float64(straight), "ratio")
}
