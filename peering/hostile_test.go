package peering

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/warren-cache/warren/cachestore"
)

// udpFrom is a socket on a loopback address of the test's choice (all of
// 127/8 is this machine's), to play a LAN host.
func udpFrom(t *testing.T, ip string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(ip+":0")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sendRaw sends datagrams from c to n, then a query with a fresh sender and
// waits for its answer: n reads its socket in order, so every datagram
// before it has been handled when the answer comes.
func sendRaw(t *testing.T, c *net.UDPConn, n *Node, secret []byte, datagrams ...[]byte) {
	t.Helper()
	exchange(t, c, n.Addr(), secret, datagrams...)
}

// exchange is sendRaw to the node at to, returning what else came to c
// meanwhile (decoded; undecodable datagrams left out).
func exchange(t *testing.T, c *net.UDPConn, ap netip.AddrPort, secret []byte, datagrams ...[]byte) []Message {
	t.Helper()
	to := net.UDPAddrFromAddrPort(ap)
	for _, b := range datagrams {
		if _, err := c.WriteToUDP(b, to); err != nil {
			t.Fatal(err)
		}
	}
	// A new id for every probe: two probes under one id from two
	// addresses would make the second an impostor's, dropped unanswered
	// (one byte of the clock as the id collided about once in 40 runs).
	var id NodeID
	rand.Read(id[:])
	probe := Message{Type: MsgQuery, From: id, ReqID: 4242, Digest: testDigest,
		Sent: time.Now().UnixMilli(), Nonce: uint64(time.Now().UnixNano())}
	b, err := Encode(probe, secret)
	if err != nil {
		t.Fatal(err)
	}
	c.WriteToUDP(b, to)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, MaxDatagram)
	var got []Message
	for {
		k, _, err := c.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no answer to the probe: %v", err)
		}
		m, err := Decode(buf[:k], secret)
		switch {
		case err != nil:
		case m.Type == MsgAnswer && m.ReqID == 4242:
			return got
		default:
			got = append(got, m)
		}
	}
}

func signed(t *testing.T, m Message, secret []byte) []byte {
	t.Helper()
	if m.Sent == 0 {
		m.Sent = time.Now().UnixMilli()
	}
	if m.Nonce == 0 {
		m.Nonce = uint64(time.Now().UnixNano())
	}
	b, err := Encode(m, secret)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// In a group with a secret, a captured datagram sent again, from anywhere,
// is dropped, and so is one sent outside the replay window; a fresh signed
// message may move a peer (DHCP gave it a new address).
func TestReplayedDatagramDropped(t *testing.T) {
	secret := []byte("group")
	a := testNode(t, Config{ID: NodeID{1}, Secret: secret})
	real, attacker := udpFrom(t, "127.0.0.1"), udpFrom(t, "127.0.0.2")
	b := NodeID{2}
	hello := signed(t, Message{Type: MsgHello, From: b, HTTPPort: 3142}, secret)
	sendRaw(t, real, a, secret, hello)
	if p, ok := a.Table().Get(b); !ok || p.Addr != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("b not in the table at 127.0.0.1: %+v %v", p, ok)
	}
	dropped := a.Dropped.Load()
	have := signed(t, Message{Type: MsgHave, From: b, HTTPPort: 3142, Digest: testDigest}, secret)
	sendRaw(t, real, a, secret, have)
	old := signed(t, Message{Type: MsgHave, From: b, HTTPPort: 3142, Digest: testDigest, Sent: time.Now().Add(-2 * ReplayWindow).UnixMilli()}, secret)
	sendRaw(t, attacker, a, secret, hello, have, old)
	if p, _ := a.Table().Get(b); p.Addr != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("a replayed datagram moved b to %s", p.Addr)
	}
	if got := a.Dropped.Load() - dropped; got != 3 {
		t.Fatalf("%d datagrams dropped, want the 2 replays and the stale one", got)
	}
	// A fresh signed message sent to many (To zero) does not move it: a
	// member that missed it could be sent it again.
	sendRaw(t, attacker, a, secret, signed(t, Message{Type: MsgHello, From: b, HTTPPort: 3142}, secret))
	if p, _ := a.Table().Get(b); p.Addr != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("a signed message to many moved b to %s", p.Addr)
	}
	// A fresh signed message for a, from the new address, moves it.
	sendRaw(t, attacker, a, secret, signed(t, Message{Type: MsgHello, From: b, To: NodeID{1}, HTTPPort: 3142}, secret))
	if p, _ := a.Table().Get(b); p.Addr != netip.MustParseAddr("127.0.0.2") {
		t.Fatalf("a fresh signed message for a did not move b: %s", p.Addr)
	}
}

// A signed datagram captured on its way to one member and sent, fresh and
// unseen, to another from the attacker's address is dropped there: the MAC
// covers its receiver. (In version 2 it was accepted and moved the sender's
// address.)
func TestReplayToAnotherMemberDropped(t *testing.T) {
	secret := []byte("group")
	c := testNode(t, Config{ID: NodeID{3}, Secret: secret})
	real, attacker := udpFrom(t, "127.0.0.1"), udpFrom(t, "127.0.0.2")
	b := NodeID{2}
	sendRaw(t, real, c, secret, signed(t, Message{Type: MsgHello, From: b, To: NodeID{3}, HTTPPort: 3142}, secret))
	dropped := c.Dropped.Load()
	// Captured on its way from b to a (NodeID{1}), never seen by c.
	toA := signed(t, Message{Type: MsgHave, From: b, To: NodeID{1}, HTTPPort: 3142, Digest: testDigest}, secret)
	sendRaw(t, attacker, c, secret, toA)
	if p, _ := c.Table().Get(b); p.Addr != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("a datagram for another member moved b to %s", p.Addr)
	}
	if got := c.Dropped.Load() - dropped; got != 1 {
		t.Fatalf("%d datagrams dropped, want the one meant for another member", got)
	}
}

// Without a secret nothing can be authenticated: a message naming a known
// peer from another address is dropped, so no one takes over a peer's
// address with one datagram.
func TestImpostorCannotMovePeer(t *testing.T) {
	a := testNode(t, Config{ID: NodeID{1}})
	real, attacker := udpFrom(t, "127.0.0.1"), udpFrom(t, "127.0.0.3")
	b := NodeID{2}
	sendRaw(t, real, a, nil, signed(t, Message{Type: MsgHello, From: b, HTTPPort: 3142}, nil))
	dropped := a.Dropped.Load()
	sendRaw(t, attacker, a, nil,
		signed(t, Message{Type: MsgHave, From: b, HTTPPort: 3142, Digest: testDigest}, nil),
		signed(t, Message{Type: MsgHello, From: b, HTTPPort: 3142}, nil))
	if p, _ := a.Table().Get(b); p.Addr != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("an unauthenticated message moved b to %s", p.Addr)
	}
	if got := a.Dropped.Load() - dropped; got != 2 {
		t.Fatalf("%d datagrams dropped, want the impostor's 2", got)
	}
	if snap, _ := a.snapshot(testDigest); snap.haves[b] {
		t.Fatal("the impostor's have was recorded")
	}
}

// One source gets its burst and then its rate, whatever it sends.
func TestSourceRateLimit(t *testing.T) {
	a := testNode(t, Config{ID: NodeID{1}})
	src := netip.MustParseAddr("192.0.2.9")
	allowed := 0
	for range 5 * sourceBurst {
		if a.admit(src) {
			allowed++
		}
	}
	if allowed < sourceBurst || allowed > sourceBurst+sourceRate {
		t.Fatalf("%d of %d datagrams admitted from one source, want about the burst (%d)", allowed, 5*sourceBurst, sourceBurst)
	}
	if !a.admit(netip.MustParseAddr("192.0.2.10")) {
		t.Fatal("another source was limited too")
	}
}

// What others send cannot grow a node's election state without bound.
func TestElectionStateBounded(t *testing.T) {
	n := testNode(t, Config{ID: NodeID{1}, MaxPeers: 1000})
	src := netip.MustParseAddrPort("127.0.0.1:9")
	from := NodeID{2}
	for i := range maxElections + 500 {
		d := cachestore.Digest{Algo: "sha256", Hex: fmt.Sprintf("%064x", i)}
		n.handle(Message{Type: MsgWant, From: from, Digest: d}, src)
	}
	n.mu.Lock()
	got := len(n.elections)
	n.mu.Unlock()
	if got > maxElections {
		t.Fatalf("%d elections kept, want at most %d", got, maxElections)
	}
	// Many voters for one digest: at most maxVoters kept.
	d := testDigest
	n.updateFor(d, true, func(e *election) { e.interest = true })
	for i := range 3 * maxVoters {
		n.handle(Message{Type: MsgHave, From: NodeID{3, byte(i), byte(i >> 8)}, Digest: d}, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(1000+i)))
	}
	if snap, _ := n.snapshot(d); len(snap.haves) > maxVoters {
		t.Fatalf("%d haves kept for one digest, want at most %d", len(snap.haves), maxVoters)
	}
}

// A full table keeps its members; one address holds at most perAddr ids.
func TestTableKeepsMembers(t *testing.T) {
	tb := NewTable(3, time.Minute, time.Now)
	at := func(ip string, id byte) Peer {
		return Peer{ID: NodeID{id}, Addr: netip.MustParseAddr(ip), Port: 3142}
	}
	for i, ip := range []string{"192.0.2.1", "192.0.2.2"} {
		if !tb.Offer(at(ip, byte(i+1)), false) {
			t.Fatalf("member %s refused", ip)
		}
	}
	// A host claiming many ids gets perAddr of them.
	admitted := 0
	for id := byte(10); id < 20; id++ {
		if tb.Offer(at("192.0.2.66", id), false) {
			admitted++
		}
	}
	if admitted != 1 { // the table has room for one more
		t.Fatalf("%d ids of one host admitted, want 1 (table full after it)", admitted)
	}
	if tb.Offer(at("192.0.2.3", 30), false) {
		t.Fatal("a newcomer pushed a member out of a full table")
	}
	for _, id := range []byte{1, 2} {
		if _, ok := tb.Get(NodeID{id}); !ok {
			t.Fatalf("member %d was dropped", id)
		}
	}
	tb2 := NewTable(30, time.Minute, time.Now)
	n := 0
	for id := byte(10); id < 20; id++ {
		if tb2.Offer(at("192.0.2.66", id), false) {
			n++
		}
	}
	if n != perAddr {
		t.Fatalf("%d ids of one host admitted, want %d", n, perAddr)
	}
}

// Blame goes to the address the bytes came from: an impostor's failure
// never marks the real peer, and the other ids a host claims are skipped.
func TestBlameFollowsTheAddress(t *testing.T) {
	tb := NewTable(30, time.Minute, time.Now)
	real := Peer{ID: NodeID{1}, Addr: netip.MustParseAddr("192.0.2.1"), Port: 3142}
	tb.Offer(real, false)
	liar := Peer{ID: NodeID{2}, Addr: netip.MustParseAddr("192.0.2.66"), Port: 3142}
	alias := Peer{ID: NodeID{3}, Addr: netip.MustParseAddr("192.0.2.66"), Port: 4000}
	tb.Offer(liar, false)
	tb.Offer(alias, false)
	// Bytes that came from the liar's address, blamed on the real id.
	tb.MarkBad(real.ID, liar.AddrPort(), time.Minute)
	if !tb.Good(real.ID) {
		t.Fatal("the real peer was blamed for bytes from another address")
	}
	if tb.Good(liar.ID) || tb.Good(alias.ID) {
		t.Fatal("the address that sent the bytes is still asked")
	}
}

// A bad-blob report is believed only from an address this node sent that
// blob to.
func TestBadBlobNeedsAnUpload(t *testing.T) {
	store, d := testBlob(t, []byte("held"))
	bs := NewBlobServer(store, BlobConfig{Slots: 2})
	rechecks := make(chan cachestore.Digest, 4)
	n := testNode(t, Config{ID: NodeID{1}, Blobs: bs, Has: func(x cachestore.Digest) bool { return x == d },
		Recheck: func(x cachestore.Digest) { rechecks <- x }})
	report := func(ip string) {
		n.handle(Message{Type: MsgBadBlob, From: NodeID{2, ip[len(ip)-1]}, Digest: d}, netip.MustParseAddrPort(ip+":3142"))
	}
	report("192.0.2.5")
	select {
	case <-rechecks:
		t.Fatal("rechecked on the word of a node that got no bytes from us")
	default:
	}
	bs.recordSent(netip.MustParseAddr("192.0.2.6"), d)
	report("192.0.2.6")
	select {
	case got := <-rechecks:
		if got != d {
			t.Fatalf("rechecked %s", got)
		}
	default:
		t.Fatal("no recheck on the word of a node we sent the blob to")
	}
}

// A host sending hellos under many ids is greeted back only for the ids
// that get a place in the table: hellos cannot bounce without end.
func TestHelloFloodNotAmplified(t *testing.T) {
	a := testNode(t, Config{ID: NodeID{1}})
	host := udpFrom(t, "127.0.0.2")
	to := net.UDPAddrFromAddrPort(a.Addr())
	for i := range 10 {
		host.WriteToUDP(signed(t, Message{Type: MsgHello, From: NodeID{9, byte(i)}, HTTPPort: 3142}, nil), to)
	}
	// a reads its socket in order: the answer to this comes after every
	// greeting it sent back.
	host.WriteToUDP(signed(t, Message{Type: MsgQuery, From: NodeID{0xee, 2}, ReqID: 99, Digest: testDigest}, nil), to)
	host.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, MaxDatagram)
	greeted := 0
	for {
		k, _, err := host.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		m, err := Decode(buf[:k], nil)
		if err != nil {
			continue
		}
		if m.Type == MsgHello {
			greeted++
		}
		if m.Type == MsgAnswer && m.ReqID == 99 {
			break
		}
	}
	if greeted != perAddr || len(a.Table().Peers()) != perAddr {
		t.Fatalf("10 hellos under 10 ids: greeted back %d times, %d ids in the table; want %d and %d", greeted, len(a.Table().Peers()), perAddr, perAddr)
	}
}

// A request answered 404 does not make its address's bad-blob reports
// count: only a requester that is sent the blob may report it.
func TestNotFoundIsNoUpload(t *testing.T) {
	store, _ := testBlob(t, []byte("held"))
	bs := NewBlobServer(store, BlobConfig{Slots: 2})
	srv := httptest.NewServer(bs)
	defer srv.Close()
	missing := cachestore.Digest{Algo: "sha256", Hex: strings.Repeat("ab", 32)}
	resp, err := http.Get(srv.URL + BlobPathPrefix + "sha256/" + missing.Hex)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a blob not here: %d, want 404", resp.StatusCode)
	}
	if bs.SentTo(netip.MustParseAddr("127.0.0.1"), missing) {
		t.Fatal("a 404 counts as an upload: that address's bad-blob reports would be believed")
	}
}

// A blob still being filled, asked from an offset at its size: 416 with
// "bytes */size", never the malformed "bytes N-(N-1)/N".
func TestFillRangeAtTheSize(t *testing.T) {
	s, err := cachestore.Open(cachestore.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	body := []byte("growing blob")
	sum := sha256.Sum256(body)
	d := cachestore.Digest{Algo: "sha256", Hex: hex.EncodeToString(sum[:])}
	f, _ := s.BeginFill(cachestore.FillKey(d))
	if err := f.Start(cachestore.FillInfo{Algo: "sha256", Size: int64(len(body))}); err != nil {
		t.Fatal(err)
	}
	defer f.Abort(errors.New("test over"))
	f.Write(body[:4])
	srv := httptest.NewServer(NewBlobServer(s, BlobConfig{Slots: 2}))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+BlobPathPrefix+"sha256/"+d.Hex, nil)
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-", len(body)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := fmt.Sprintf("bytes */%d", len(body)); resp.StatusCode != http.StatusRequestedRangeNotSatisfiable || resp.Header.Get("Content-Range") != want {
		t.Fatalf("offset at the size: %d, Content-Range %q; want 416, %q", resp.StatusCode, resp.Header.Get("Content-Range"), want)
	}
}

// Without a group secret, hosts greet under forged ids and never answer a
// question. After silentLimit questions they are no longer waited for (a
// miss pays no query timeout for them), and in a full table they give up
// their places to an honest newcomer.
func TestSilentForgedIDs(t *testing.T) {
	n := testNode(t, Config{ID: NodeID{1}, MaxPeers: 6, QueryTimeout: 50 * time.Millisecond})
	var forged [][]byte
	for h := range 3 {
		for i := range perAddr {
			forged = append(forged, signed(t, Message{Type: MsgHello, From: NodeID{9, byte(h), byte(i)}, HTTPPort: 3142}, nil))
		}
		sendRaw(t, udpFrom(t, fmt.Sprintf("127.0.0.%d", 2+h)), n, nil, forged[len(forged)-perAddr:]...)
	}
	// The probes' senders joined too; only the forged ids matter here.
	if got := len(n.askable()); got < 6 {
		t.Fatalf("%d peers waited for before any question, want the 6 forged ids", got)
	}
	for q := range silentLimit {
		if _, settled, _ := n.query(t.Context(), testDigest); settled {
			t.Fatalf("question %d settled though no forged id answered", q+1)
		}
	}
	for id := range n.askable() {
		if id[0] == 9 {
			t.Fatalf("forged id %x still waited for after %d unanswered questions", id, silentLimit)
		}
	}
	// The table is full of them; an honest peer answers a hello and gets in.
	honest := udpFrom(t, "127.0.0.9")
	sendRaw(t, honest, n, nil, signed(t, Message{Type: MsgHello, From: NodeID{7, 7}, HTTPPort: 3142}, nil))
	if _, ok := n.Table().Get(NodeID{7, 7}); !ok {
		t.Fatal("an honest newcomer was kept out of a table full of silent forged ids")
	}
}

// A full table of peers that answer keeps them all: a newcomer waits.
func TestFullTableKeepsAnsweringMembers(t *testing.T) {
	tb := NewTable(2, time.Minute, time.Now)
	for i := range 2 {
		tb.Offer(Peer{ID: NodeID{byte(i + 1)}, Addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), Port: 3142}, false)
	}
	tb.Asked(map[NodeID]bool{{1}: true}) // one silence is no reason
	if tb.Offer(Peer{ID: NodeID{9}, Addr: netip.MustParseAddr("10.0.0.9"), Port: 3142}, false) {
		t.Fatal("a full table of answering members let a newcomer push one out")
	}
	tb.Asked(map[NodeID]bool{{1}: true})
	if !tb.Offer(Peer{ID: NodeID{9}, Addr: netip.MustParseAddr("10.0.0.9"), Port: 3142}, false) {
		t.Fatal("a member silent for silentLimit questions kept its place from a newcomer")
	}
	if _, ok := tb.Get(NodeID{2}); !ok {
		t.Fatal("the answering member was dropped instead of the silent one")
	}
}

// A blob a credential scope fetched (a password-protected repository's)
// is not here for peers, whoever asks and however they learnt its digest;
// the same bytes made public are.
func TestPrivateBlobNotServedToPeers(t *testing.T) {
	s, err := cachestore.Open(cachestore.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	body := []byte("alice's private package")
	sum := sha256.Sum256(body)
	d := cachestore.Digest{Algo: "sha256", Hex: hex.EncodeToString(sum[:])}
	store := func(scope string) {
		f, _ := s.BeginFill(cachestore.FillKey(d) + "#" + scope)
		if err := f.Start(cachestore.FillInfo{Algo: "sha256", Size: int64(len(body)), Scope: scope}); err != nil {
			t.Fatal(err)
		}
		f.Write(body)
		if _, err := f.Commit(d, int64(len(body))); err != nil {
			t.Fatal(err)
		}
	}
	store("p0123")
	srv := httptest.NewServer(NewBlobServer(s, BlobConfig{Slots: 2}))
	defer srv.Close()
	closeIdle(t)
	get := func() int {
		resp, err := http.Get(srv.URL + BlobPathPrefix + "sha256/" + d.Hex)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if bytes.Equal(b, body) && resp.StatusCode != http.StatusOK {
			t.Fatalf("the bytes came with status %d", resp.StatusCode)
		}
		return resp.StatusCode
	}
	if code := get(); code != http.StatusNotFound {
		t.Fatalf("a private blob asked by a peer: %d, want 404", code)
	}
	store("") // the same bytes from a public origin
	if code := get(); code != http.StatusOK {
		t.Fatalf("the same blob made public: %d, want 200", code)
	}
}
