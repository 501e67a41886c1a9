package peering

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/warren-cache/warren/cachestore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// closeIdle drops the default client's kept-alive connections at the end
// of a test, so goleak sees only what the code under test left.
func closeIdle(t *testing.T) { t.Cleanup(http.DefaultClient.CloseIdleConnections) }

func TestPickWeighted(t *testing.T) {
	ps := []Peer{{Priority: 100}, {Priority: 300}}
	counts := [2]int{}
	for range 20000 {
		counts[pickWeighted(ps)]++
	}
	if share := float64(counts[0]) / 20000; share < 0.22 || share > 0.28 {
		t.Fatalf("priority 100 of 400 chosen %.3f of the time, want about 0.25", share)
	}
}

func TestComputeWinner(t *testing.T) {
	a, b, c := NodeID{1}, NodeID{2}, NodeID{3}
	want := func(id NodeID, prio int32, free uint64, passive bool) Message {
		return Message{From: id, Priority: prio, FreeBytes: free, Passive: passive}
	}
	tests := []struct {
		name       string
		wants      []Message
		dead       []NodeID
		size       int64
		spaceAware bool
		winner     NodeID
		none       bool
	}{
		{"highest priority", []Message{want(a, 100, 1e9, false), want(b, 200, 1e9, false)}, nil, 10, true, b, false},
		{"tie to lowest id", []Message{want(c, 100, 1e9, false), want(a, 100, 1e9, false)}, nil, 10, true, a, false},
		{"no room, no stand", []Message{want(a, 100, 5, false), want(b, 50, 1e9, false)}, nil, 10, true, b, false},
		{"room ignored when not space aware", []Message{want(a, 100, 5, false), want(b, 50, 1e9, false)}, nil, 10, false, a, false},
		{"passive never stands", []Message{want(a, 900, 1e9, true), want(b, 1, 1e9, false)}, nil, 10, true, b, false},
		{"dead dropped", []Message{want(a, 900, 1e9, false), want(b, 1, 1e9, false)}, []NodeID{a}, 10, true, b, false},
		{"nobody can", []Message{want(a, 1, 1, false)}, nil, 10, true, NodeID{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := election{wants: map[NodeID]Message{}, dead: map[NodeID]bool{}}
			for _, m := range tt.wants {
				e.wants[m.From] = m
			}
			for _, id := range tt.dead {
				e.dead[id] = true
			}
			got, ok := computeWinner(e, tt.size, tt.spaceAware)
			if ok == tt.none || ok && got != tt.winner {
				t.Fatalf("winner %v (ok %v), want %v (none %v)", got, ok, tt.winner, tt.none)
			}
		})
	}
}

// testBlob stores body in a fresh store and returns the store and digest.
func testBlob(t *testing.T, body []byte) (*cachestore.Store, cachestore.Digest) {
	return testBlobTB(t, body)
}

func testBlobTB(t testing.TB, body []byte) (*cachestore.Store, cachestore.Digest) {
	s, err := cachestore.Open(cachestore.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	sum := sha256.Sum256(body)
	d := cachestore.Digest{Algo: "sha256", Hex: hex.EncodeToString(sum[:])}
	f, _ := s.BeginFill(cachestore.FillKey(d))
	if err := f.Start(cachestore.FillInfo{Algo: "sha256", Size: int64(len(body))}); err != nil {
		t.Fatal(err)
	}
	f.Write(body)
	if _, err := f.Commit(d, int64(len(body))); err != nil {
		t.Fatal(err)
	}
	return s, d
}

func TestBlobServerSlotsTokenRange(t *testing.T) {
	body := bytes.Repeat([]byte("warren"), 10000)
	store, d := testBlob(t, body)
	secret := []byte("group")
	bs := NewBlobServer(store, BlobConfig{Slots: 1, Secret: secret})
	srv := httptest.NewServer(bs)
	defer srv.Close()
	closeIdle(t)
	u := srv.URL + BlobPathPrefix + d.Algo + "/" + d.Hex
	get := func(hdr map[string]string) *http.Response {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := get(nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("no token: %d", resp.StatusCode)
	}
	// The requester is a peer at 127.0.0.1; tokens are one-use, bound to
	// the blob, the requester and a time.
	table := NewTable(30, time.Minute, time.Now)
	me := NodeID{5}
	table.Seen(Peer{ID: me, Addr: netip.MustParseAddr("127.0.0.1"), Port: 1})
	table.Seen(Peer{ID: NodeID{6}, Addr: netip.MustParseAddr("192.0.2.6"), Port: 1})
	bs.attach(table)
	nonce := uint64(0)
	token := func(id NodeID, dd cachestore.Digest, expiry time.Time) string {
		nonce++
		return BlobToken(secret, dd, id, expiry, nonce)
	}
	soon := time.Now().Add(TokenLife)
	tok := map[string]string{tokenHeader: token(me, d, soon), "Range": "bytes=6-11"}
	resp = get(tok)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || string(b) != "warren" {
		t.Fatalf("range: %d %q", resp.StatusCode, b)
	}
	other := cachestore.Digest{Algo: "sha256", Hex: strings.Repeat("0", 64)}
	for name, bad := range map[string]string{
		"replayed":          tok[tokenHeader],
		"another blob's":    token(me, other, soon),
		"another peer's":    token(NodeID{6}, d, soon),
		"a stranger's":      token(NodeID{7}, d, soon),
		"expired":           token(me, d, time.Now().Add(-time.Second)),
		"far in the future": token(me, d, time.Now().Add(time.Hour)),
		"another secret's":  BlobToken([]byte("other"), d, me, soon, 999),
		"v1":                strings.Repeat("ab", 32),
	} {
		resp := get(map[string]string{tokenHeader: bad})
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s token: %d, want 403", name, resp.StatusCode)
		}
	}
	// Hold the only slot: the next request is busy, with Retry-After.
	bs.slots <- struct{}{}
	resp = get(map[string]string{tokenHeader: token(me, d, soon)})
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("beyond the slots: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	<-bs.slots
	if _, _, _, busy := bs.Stats(); busy != 1 {
		t.Fatalf("busy refusals %d", busy)
	}
	for _, bad := range []string{"/v1/blobs/md5/00", "/v1/blobs/sha256/XYZ", "/v1/blobs/sha256"} {
		resp, _ := http.Get(srv.URL + bad)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d", bad, resp.StatusCode)
		}
	}
}

func TestBlobServerRateLimit(t *testing.T) {
	// The burst (200 KB) is smaller than the blob: every write is paced in
	// chunks (WaitN refuses more than the burst at once).
	body := make([]byte, 300<<10)
	store, d := testBlob(t, body)
	bs := NewBlobServer(store, BlobConfig{Slots: 2, UploadRate: 200 << 10})
	srv := httptest.NewServer(bs)
	defer srv.Close()
	closeIdle(t)
	resp, err := http.Get(srv.URL + BlobPathPrefix + d.Algo + "/" + d.Hex)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if n != int64(len(body)) {
		t.Fatalf("got %d bytes", n)
	}
	srv.Close() // waits for the handler: the client can have the bytes before it has counted them
	// Paced writes drew the bucket down; unpaced ones would leave it full
	// (it refills at 200 KB/s, far from half in the moment since).
	if tok := bs.limiter.Tokens(); tok > float64(bs.limiter.Burst())/2 {
		t.Fatalf("limiter still holds %.0f of %d tokens: the upload was not paced", tok, bs.limiter.Burst())
	}
	if _, _, sent, _ := bs.Stats(); sent != int64(len(body)) {
		t.Fatalf("paced writer counted %d bytes", sent)
	}
}

// testNode runs a Node on 127.0.0.1 until the test ends.
func testNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	if !cfg.ListenUDP.IsValid() {
		cfg.ListenUDP = netip.MustParseAddrPort("127.0.0.1:0")
	}
	if cfg.ID == (NodeID{}) {
		cfg.ID = NodeID{byte(len(t.Name())), byte(time.Now().UnixNano())}
	}
	n, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if n.cfg.Port == 0 {
		// One number for HTTP and UDP, as in the daemon: the datagrams
		// name it, and a peer answers there.
		n.cfg.Port = n.Addr().Port()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return n
}

// fakePeer is a node that says it has every blob, whose HTTP side answers
// with status.
func fakePeer(t *testing.T, id byte, status int) *Node {
	return countingFakePeer(t, id, status, new(atomic.Int32))
}

// countingFakePeer is fakePeer counting the blob requests it gets.
func countingFakePeer(t *testing.T, id byte, status int, asked *atomic.Int32) *Node {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	port, _ := strconv.Atoi(srv.URL[strings.LastIndex(srv.URL, ":")+1:])
	store, _ := testBlob(t, []byte("x"))
	return testNode(t, Config{ID: NodeID{id}, Port: uint16(port), Priority: 100,
		Has: func(cachestore.Digest) bool { return true }, Blobs: NewBlobServer(store, BlobConfig{Slots: 2})})
}

// Peers that say they have a blob and then fail to give it are each asked
// once, not again for a while: the node then fetches it itself.
func TestFetchFailuresThenUpstream(t *testing.T) {
	var asked1, asked2 atomic.Int32
	p1, p2 := countingFakePeer(t, 1, http.StatusInternalServerError, &asked1), countingFakePeer(t, 2, http.StatusInternalServerError, &asked2)
	r := testNode(t, Config{ID: NodeID{9}, PeerRetries: 3, ElectionWindow: 50 * time.Millisecond,
		Static: []netip.AddrPort{p1.Addr(), p2.Addr()}})
	waitPeers(t, r, 2)
	var buf bytes.Buffer
	_, err := fetch(t, r, testDigest, 10, 0, &buf, func() int64 { return 0 })
	if !errors.Is(err, ErrNoPeer) || asked1.Load() != 1 || asked2.Load() != 1 {
		t.Fatalf("err = %v, peers asked %d and %d times; want ErrNoPeer, each asked once", err, asked1.Load(), asked2.Load())
	}
	r.Done(testDigest, false)
	// Within the pause, a second fill asks neither.
	_, err = fetch(t, r, testDigest, 10, 0, &buf, func() int64 { return 0 })
	if !errors.Is(err, ErrNoPeer) || asked1.Load() != 1 || asked2.Load() != 1 {
		t.Fatalf("second fill: %v, peers asked %d and %d times; want them skipped", err, asked1.Load(), asked2.Load())
	}
	r.Done(testDigest, false)
}

// 503 from every peer is "busy", not failure: no try is spent on it, and
// with nobody else wanting the blob this node is elected.
func TestFetchBusyIsNotFailure(t *testing.T) {
	p1, p2 := fakePeer(t, 1, http.StatusServiceUnavailable), fakePeer(t, 2, http.StatusServiceUnavailable)
	r := testNode(t, Config{ID: NodeID{9}, PeerRetries: 1, ElectionWindow: 50 * time.Millisecond,
		Heartbeat: 20 * time.Millisecond, Static: []netip.AddrPort{p1.Addr(), p2.Addr()}})
	waitPeers(t, r, 2)
	var buf bytes.Buffer
	_, err := fetch(t, r, testDigest, 10, 0, &buf, func() int64 { return 0 })
	if !errors.Is(err, ErrNoPeer) || !strings.Contains(err.Error(), "elected") {
		t.Fatalf("err = %v, want this node elected (busy peers are no failure)", err)
	}
	r.Done(testDigest, false)
}

// A real peer with the blob serves it; the bytes arrive whole.
func TestFetchFromPeer(t *testing.T) {
	body := bytes.Repeat([]byte("peer bytes "), 5000)
	store, d := testBlob(t, body)
	bs := NewBlobServer(store, BlobConfig{Slots: 2, Secret: []byte("s")})
	srv := httptest.NewServer(bs)
	defer srv.Close()
	port, _ := strconv.Atoi(srv.URL[strings.LastIndex(srv.URL, ":")+1:])
	p := testNode(t, Config{ID: NodeID{1}, Port: uint16(port), Priority: 100, Secret: []byte("s"), Blobs: bs,
		Has: func(x cachestore.Digest) bool { return x == d }})
	r := testNode(t, Config{ID: NodeID{9}, Secret: []byte("s"), Static: []netip.AddrPort{p.Addr()}})
	waitPeers(t, r, 1)
	var buf bytes.Buffer
	buf.Write(body[:100]) // resume: the first 100 bytes are already here
	src, err := fetch(t, r, d, int64(len(body)), 100, &buf, func() int64 { return 0 })
	if err != nil || !bytes.Equal(buf.Bytes(), body) || len(src) != 1 || src[0] != (NodeID{1}).String() {
		t.Fatalf("fetch: %v, %d bytes, sources %v", err, buf.Len(), src)
	}
	// A node outside the group (no secret) is ignored by both.
	stranger := testNode(t, Config{ID: NodeID{7}, Static: []netip.AddrPort{p.Addr()}})
	// As mDNS would: the stranger knows of p, so its unsigned query goes out
	// (and, unanswered, holds it for the query timeout; p drops it long
	// before that ends).
	stranger.Table().Seen(Peer{ID: NodeID{1}, Addr: netip.MustParseAddr("127.0.0.1"), Port: p.Addr().Port(), Priority: 100})
	if _, err := fetch(t, stranger, d, int64(len(body)), 0, io.Discard, func() int64 { return 0 }); err == nil {
		t.Fatal("a node without the group secret got the blob")
	}
	stranger.Done(d, false)
	if p.Dropped.Load() == 0 {
		t.Fatal("the peer did not drop the stranger's unsigned datagrams")
	}
}

// A node whose query nobody answers, and that knows no peer, goes upstream
// without an election: it pays only the query timeout.
func TestFetchLoneNodeSkipsElection(t *testing.T) {
	silent := netip.MustParseAddrPort("127.0.0.1:9") // discard: nobody answers
	r := testNode(t, Config{ID: NodeID{9}, Static: []netip.AddrPort{silent}, QueryTimeout: 20 * time.Millisecond})
	_, err := fetch(t, r, testDigest, 10, 0, io.Discard, func() int64 { return 0 })
	if !errors.Is(err, ErrNoPeer) || !strings.Contains(err.Error(), "no peer known") {
		t.Fatalf("err = %v, want ErrNoPeer without an election", err)
	}
	if n := r.Table().Peers(); len(n) != 0 {
		t.Fatalf("table %v", n)
	}
}

// A node that knows no peer asks no one, even with a static peer that is
// down (it never answered a hello) and a broadcast address configured:
// with a query timeout of an hour, asking would hold the test until its
// deadline.
func TestLoneNodeAsksNoOne(t *testing.T) {
	down := netip.MustParseAddrPort("127.0.0.1:9") // discard: nobody answers
	r := testNode(t, Config{ID: NodeID{9}, QueryTimeout: time.Hour, ElectionWindow: time.Hour,
		Static: []netip.AddrPort{down}, Broadcast: []netip.AddrPort{netip.MustParseAddrPort("127.255.255.255:9")}})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := r.Source(ctx, testDigest, 10, func() int64 { return 0 }).Open(ctx, 0)
	if !errors.Is(err, ErrNoPeer) || !strings.Contains(err.Error(), "no peer known") {
		t.Fatalf("err = %v, want ErrNoPeer at once (no peer known)", err)
	}
	r.Done(testDigest, false)
}

// Peers that neither have nor want a blob say so at once, and the asker
// moves on when all have answered: not at the query timeout, and without an
// election window (both an hour here; waiting on either would hold the
// test until its deadline). It downloads the blob itself and says so.
func TestEveryPeerSaidNo(t *testing.T) {
	a := testNode(t, Config{ID: NodeID{1}, Priority: 100})
	b := testNode(t, Config{ID: NodeID{2}, Priority: 100, QueryTimeout: time.Hour, ElectionWindow: time.Hour})
	b.Table().Seen(Peer{ID: NodeID{1}, Addr: netip.MustParseAddr("127.0.0.1"), Port: a.Addr().Port(), Priority: 100})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := b.Source(ctx, testDigest, 10, func() int64 { return 0 }).Open(ctx, 0)
	if !errors.Is(err, ErrNoPeer) || !strings.Contains(err.Error(), "no peer has or wants it") {
		t.Fatalf("err = %v, want ErrNoPeer at once (every peer said no)", err)
	}
	if !b.wanting(testDigest) {
		t.Fatal("b is fetching the blob but does not say it wants it: a latecomer would elect itself")
	}
	b.Done(testDigest, false)
	if b.wanting(testDigest) {
		t.Fatal("b still says it wants the blob after Done")
	}
}

// A node that starts wanting a blob after the election (it never heard the
// winner's want) is told at once that the winner is downloading it, and
// streams from the winner instead of electing itself and downloading it a
// second time.
func TestLatecomerFollowsTheDownloader(t *testing.T) {
	body := bytes.Repeat([]byte("growing "), 4000)
	sum := sha256.Sum256(body)
	d := cachestore.Digest{Algo: "sha256", Hex: hex.EncodeToString(sum[:])}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	defer srv.Close()
	defer http.DefaultClient.CloseIdleConnections()
	port, _ := strconv.Atoi(srv.URL[strings.LastIndex(srv.URL, ":")+1:])
	// A's heartbeats are far apart; B's election window is short: only the
	// answer to B's want can reach B in time.
	a := testNode(t, Config{ID: NodeID{1}, Port: uint16(port), Priority: 100, Heartbeat: time.Hour,
		ElectionWindow: 20 * time.Millisecond, QueryTimeout: 20 * time.Millisecond, Static: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9")}})
	a.Table().Seen(Peer{ID: NodeID{7}, Addr: netip.MustParseAddr("127.0.0.1"), Port: 9}) // someone to elect with
	if _, err := fetch(t, a, d, int64(len(body)), 0, io.Discard, func() int64 { return 10 }); !errors.Is(err, ErrNoPeer) || !strings.Contains(err.Error(), "elected") {
		t.Fatalf("a: %v, want elected", err)
	}
	defer a.Done(d, false)
	b := testNode(t, Config{ID: NodeID{2}, Priority: 100, Heartbeat: time.Hour, ElectionWindow: 50 * time.Millisecond,
		QueryTimeout: 20 * time.Millisecond, Static: []netip.AddrPort{a.Addr()}})
	b.Table().Seen(Peer{ID: NodeID{1}, Addr: netip.MustParseAddr("127.0.0.1"), Port: uint16(port)})
	var got bytes.Buffer
	src, err := fetch(t, b, d, int64(len(body)), 0, &got, func() int64 { return 0 })
	if err != nil || !bytes.Equal(got.Bytes(), body) || len(src) != 1 {
		t.Fatalf("b: %v, %d bytes, sources %v (it should have followed a)", err, got.Len(), src)
	}
}

// waitPeers waits until n's table holds want peers, with a deadline.
func waitPeers(t *testing.T, n *Node, want int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		joined := n.Table().Joined()
		if len(n.Table().Peers()) >= want {
			return
		}
		select {
		case <-joined:
		case <-deadline:
			t.Fatalf("table has %d peers, want %d", len(n.Table().Peers()), want)
		}
	}
}

// fetch drives the node's Source as the fill engine does, into w: after a
// stream that failed, the next Open. It returns the ids of the peers that
// sent bytes.
func fetch(t *testing.T, n *Node, d cachestore.Digest, size, off int64, w io.Writer, progress func() int64) ([]string, error) {
	src := n.Source(t.Context(), d, size, progress)
	var from []string
	for {
		st, err := src.Open(t.Context(), off)
		if err != nil {
			return from, err
		}
		from = append(from, strings.TrimPrefix(st.From, "peer "))
		k, err := io.Copy(w, st.Body)
		st.Body.Close()
		off += k
		if err == nil && (size < 0 || off == size) {
			return from, nil
		}
	}
}

// A node that downloads without an election (every peer had said no) and
// is busy when a latecomer first asks (its upload slots full) is still the
// one downloader: the latecomer waits for its next heartbeat and follows
// it, instead of electing itself from the wants (which lack the
// downloader) and fetching a second copy.
func TestBusyDownloaderIsFollowedNotOutvoted(t *testing.T) {
	body := bytes.Repeat([]byte("busy "), 8000)
	sum := sha256.Sum256(body)
	d := cachestore.Digest{Algo: "sha256", Hex: hex.EncodeToString(sum[:])}
	var asks atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if asks.Add(1) <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable) // both slots taken, for a while
			return
		}
		w.Write(body)
	}))
	defer srv.Close()
	defer http.DefaultClient.CloseIdleConnections()
	port, _ := strconv.Atoi(srv.URL[strings.LastIndex(srv.URL, ":")+1:])
	// Heartbeats slower than b's election window: a stays busy past it.
	a := testNode(t, Config{ID: NodeID{1}, Port: uint16(port), Priority: 1, Heartbeat: 200 * time.Millisecond})
	b := testNode(t, Config{ID: NodeID{2}, Priority: 1000, Heartbeat: 200 * time.Millisecond, ElectionWindow: 20 * time.Millisecond,
		QueryTimeout: 50 * time.Millisecond})
	b.Table().Seen(Peer{ID: NodeID{1}, Addr: netip.MustParseAddr("127.0.0.1"), Port: uint16(port), Priority: 1})
	// a took the download on its own, and says so every heartbeat to b.
	a.Table().Seen(Peer{ID: NodeID{2}, Addr: netip.MustParseAddr("127.0.0.1"), Port: b.Addr().Port(), Priority: 1000})
	a.update(d, func(e *election) { e.interest = true })
	a.startBeats(d, int64(len(body)), func() int64 { return 100 }, false)
	defer a.Done(d, false)
	var got bytes.Buffer
	src, err := fetch(t, b, d, int64(len(body)), 0, &got, func() int64 { return 0 })
	if err != nil || !bytes.Equal(got.Bytes(), body) || len(src) != 1 || src[0] != (NodeID{1}).String() {
		t.Fatalf("b: %v, %d bytes from %v; want the blob from a, the busy downloader", err, got.Len(), src)
	}
	// b heartbeats as a relay (it passes on what a sends it), never as a
	// downloader of its own.
	if beating, relay := b.beatingAs(d); beating && !relay {
		t.Fatal("b elected itself to download a second copy")
	}
}

// A peer that stops reading loses its upload slot at the write deadline:
// it cannot hold the slots for ever. (One slot: the next peer gets it.)
func TestUploadWriteDeadlineFreesTheSlot(t *testing.T) {
	body := bytes.Repeat([]byte("slow reader "), 4<<20) // far more than socket buffers
	store, d := testBlob(t, body)
	bs := NewBlobServer(store, BlobConfig{Slots: 1})
	bs.writeTimeout = 200 * time.Millisecond
	ended := make(chan struct{}, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { ended <- struct{}{} }()
		bs.ServeHTTP(w, r)
	}))
	defer srv.Close()
	u := srv.URL + BlobPathPrefix + d.Algo + "/" + d.Hex
	// The stalled reader: asks, reads the headers, then nothing.
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", BlobPathPrefix+d.Algo+"/"+d.Hex)
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the upload to a reader that stopped reading never ended: it holds the slot")
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || n != int64(len(body)) {
		t.Fatalf("the next peer: %d, %d bytes; want the blob (the slot free again)", resp.StatusCode, n)
	}
}

// The election window ends as soon as every peer has said it wants the
// blob or that it does not: with windows of an hour, B elects itself (the
// higher priority) at once from A's want and its own, and A, which also
// waits for a peer that never answers, is not held for B's sake.
func TestElectionEndsWhenEveryoneIsHeard(t *testing.T) {
	silent := Peer{ID: NodeID{7}, Addr: netip.MustParseAddr("127.0.0.1"), Port: 9} // discard: never answers
	// Each node's HTTP port is its UDP port, as in the field: what a peer
	// says of itself then keeps it reachable.
	a := testNode(t, onOnePort(t, Config{ID: NodeID{1}, Priority: 100, Heartbeat: time.Hour, ElectionWindow: time.Hour, QueryTimeout: 20 * time.Millisecond}))
	b := testNode(t, onOnePort(t, Config{ID: NodeID{2}, Priority: 1000, Heartbeat: time.Hour, ElectionWindow: time.Hour, QueryTimeout: time.Hour}))
	a.Table().Seen(silent)
	a.Table().Seen(Peer{ID: NodeID{2}, Addr: netip.MustParseAddr("127.0.0.1"), Port: b.Addr().Port(), Priority: 1000})
	b.Table().Seen(Peer{ID: NodeID{1}, Addr: netip.MustParseAddr("127.0.0.1"), Port: a.Addr().Port(), Priority: 100})

	// A wants the blob: its question goes unanswered by the silent peer,
	// so it elects, announcing its want to B, and waits out its window.
	actx, acancel := context.WithCancel(t.Context())
	aDone := make(chan struct{})
	go func() {
		defer close(aDone)
		a.Source(actx, testDigest, 10, func() int64 { return 0 }).Open(actx, 0)
	}()
	defer func() { acancel(); <-aDone; a.Done(testDigest, false) }()
	deadline := time.After(10 * time.Second)
	for {
		snap, changed := b.snapshot(testDigest)
		if _, ok := snap.wants[NodeID{1}]; ok {
			break
		}
		select {
		case <-changed:
		case <-time.After(5 * time.Millisecond): // no election at B yet: no channel to wait on
		case <-deadline:
			t.Fatal("B never heard A's want")
		}
	}

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	src := b.Source(ctx, testDigest, 10, func() int64 { return 0 })
	_, err := src.Open(ctx, 0)
	if !errors.Is(err, ErrNoPeer) || !strings.Contains(err.Error(), "elected") {
		t.Fatalf("B: %v, want elected at once (every peer heard)", err)
	}
	b.Done(testDigest, false)
	if q, e := src.(*Source).Phases(); q <= 0 || e < q {
		t.Fatalf("phases query=%s election=%s: both should be measured, the election after the question", q, e)
	}
}

// onOnePort gives cfg a free loopback port for both its UDP and (said)
// HTTP side.
func onOnePort(t *testing.T, cfg Config) Config {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	port := c.LocalAddr().(*net.UDPAddr).Port
	c.Close()
	cfg.ListenUDP = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	cfg.Port = uint16(port)
	return cfg
}

// A blob whose download has not started (upstream slow to answer) is
// answered "not yet" (503, Retry-After) well before the requester's wait
// for a head runs out: the requester asks again instead of taking this
// node for a stalled one and not asking it for minutes. Once the download
// has started, the blob streams.
func TestBlobNotStartedIsNotYet(t *testing.T) {
	if notYetWait >= peerHeaderTimeout*3/4 {
		t.Fatalf("notYetWait %s is not well within the requester's header timeout %s", notYetWait, peerHeaderTimeout)
	}
	s, err := cachestore.Open(cachestore.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	body := bytes.Repeat([]byte("slow upstream "), 1000)
	sum := sha256.Sum256(body)
	d := cachestore.Digest{Algo: "sha256", Hex: hex.EncodeToString(sum[:])}
	f, _ := s.BeginFill(cachestore.FillKey(d))
	defer f.Abort(errors.New("test over"))
	bs := NewBlobServer(s, BlobConfig{Slots: 2})
	bs.notYet = 50 * time.Millisecond
	srv := httptest.NewServer(bs)
	defer srv.Close()
	closeIdle(t)
	c := &http.Client{Timeout: 10 * time.Second}
	u := srv.URL + BlobPathPrefix + "sha256/" + d.Hex
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("not started: %d %q, Retry-After %q; want 503 with Retry-After", resp.StatusCode, msg, resp.Header.Get("Retry-After"))
	}
	if bs.FreeSlots() != 2 {
		t.Fatalf("%d slots free after the answer, want 2", bs.FreeSlots())
	}
	if err := f.Start(cachestore.FillInfo{Algo: "sha256", Size: int64(len(body))}); err != nil {
		t.Fatal(err)
	}
	f.Write(body)
	if _, err := f.Commit(d, int64(len(body))); err != nil {
		t.Fatal(err)
	}
	resp, err = c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, body) {
		t.Fatalf("started: %d, %d bytes; want 200 and the blob", resp.StatusCode, len(got))
	}
}

// A peer a hub names as receiving the blob that answers busy (its upload
// slots full) is asked again until a slot frees, rather than left for the
// hub, which would only queue this node: the blob comes from it.
func TestHintedBusyPeerIsAskedAgain(t *testing.T) {
	body := bytes.Repeat([]byte("hinted "), 3000)
	store, d := testBlob(t, body)
	bs := NewBlobServer(store, BlobConfig{Slots: 2})
	var asked atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if asked.Add(1) <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable) // both slots taken, twice
			return
		}
		bs.ServeHTTP(w, r)
	}))
	defer srv.Close()
	peer := netip.MustParseAddrPort(srv.Listener.Addr().String())
	// The hub's hint names it; this node does not know it.
	r := testNode(t, Config{ID: NodeID{9}, Heartbeat: 20 * time.Millisecond})
	src := r.From([]netip.AddrPort{peer}, d, int64(len(body)), func() int64 { return 0 })
	st, err := src.Open(t.Context(), 0)
	if err != nil {
		t.Fatalf("open: %v after %d asks, want the hinted peer's stream once it is not busy", err, asked.Load())
	}
	got, err := io.ReadAll(st.Body)
	st.Body.Close()
	if err != nil || !bytes.Equal(got, body) || asked.Load() != 3 {
		t.Fatalf("read %d bytes (%v) after %d asks; want the blob whole on the third", len(got), err, asked.Load())
	}
	r.Done(d, true)
}
