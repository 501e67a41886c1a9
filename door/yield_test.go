package door

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/fill"
)

// yieldingLAN is a LAN that, whenever asked, says at once that a peer is
// further along (its yield is closed), and then has nothing to give.
type yieldingLAN struct{ offered atomic.Int32 }

func (l *yieldingLAN) Open(context.Context, int64) (*fill.Stream, error) {
	return nil, fmt.Errorf("%w: the peer further along gave nothing", fill.ErrSkip)
}

func (l *yieldingLAN) Yield() <-chan struct{} {
	l.offered.Add(1)
	ch := make(chan struct{})
	close(ch)
	return ch
}

// nobody is a LAN source with nothing.
type nobody struct{}

func (nobody) Open(context.Context, int64) (*fill.Stream, error) {
	return nil, fmt.Errorf("%w: nobody has it", fill.ErrSkip)
}

type yieldingPeers struct{ lan *yieldingLAN }

func (p yieldingPeers) Source(context.Context, cachestore.Digest, int64, func() int64) fill.Source {
	return p.lan
}
func (yieldingPeers) Again(cachestore.Digest, int64, func() int64) fill.Source { return nobody{} }
func (yieldingPeers) From([]netip.AddrPort, cachestore.Digest, int64, func() int64) fill.Source {
	return nobody{}
}
func (yieldingPeers) Done(cachestore.Digest, bool) {}

// A fill leaves its upstream download for the LAN at most once, and going
// on from there after the LAN had nothing is no new try of the origin:
// only transfers that broke off spend OriginTries. Here the first
// transfer is left for the LAN, the next two break off, the fourth
// completes. (Before, each yield spent a try and was offered again on
// every stream: three yields, forged ones included, failed a healthy
// origin.)
func TestYieldSpendsNoOriginTry(t *testing.T) {
	body := []byte(strings.Repeat("yield once ", 100<<10))
	sum := sha256.Sum256(body)
	dg := cachestore.Digest{Algo: "sha256", Hex: hex.EncodeToString(sum[:])}
	var gets atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k := gets.Add(1)
		off := 0
		if rg := r.Header.Get("Range"); rg != "" {
			off, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"))
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, len(body)-1, len(body)))
			w.Header().Set("Content-Length", strconv.Itoa(len(body)-off))
			w.WriteHeader(http.StatusPartialContent)
		} else {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		}
		rest := body[off:]
		switch k {
		case 1: // left for the LAN: holds the connection until then
			w.Write(rest[:64<<10])
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		case 2, 3: // breaks off
			w.Write(rest[:64<<10])
		default:
			w.Write(rest)
		}
	}))
	defer srv.Close()
	store, err := cachestore.Open(cachestore.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	lan := &yieldingLAN{}
	d, err := New(Config{Peers: yieldingPeers{lan}, AllowUpstream: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}, store)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(); store.Close() })
	u, _ := url.Parse(srv.URL + "/debian/pool/main/h/hello/hello_1.0_amd64.deb")
	p := d.Plan(t.Context(), u, Credential{})
	if err := d.LearnFacts(map[string]cachestore.Known{p.Key: {Digest: dg, Size: int64(len(body))}}); err != nil {
		t.Fatal(err)
	}
	p = d.Plan(t.Context(), u, Credential{})
	if p.Digest != dg {
		t.Fatalf("plan has no digest: %+v", p)
	}
	if _, err := d.Fetch(t.Context(), p, Asker{}, FetchOptions{}); err != nil {
		t.Fatalf("a healthy origin given up after one yield and two broken transfers (%d GETs, %d yields offered): %v",
			gets.Load(), lan.offered.Load(), err)
	}
	if g, y := gets.Load(), lan.offered.Load(); g != 4 || y != 1 {
		t.Fatalf("%d GETs and %d yields offered; want 4 and 1", g, y)
	}
	if _, err := store.Stat(dg); err != nil {
		t.Fatalf("blob not stored: %v", err)
	}
}
