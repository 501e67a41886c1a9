package peering

import (
	"bytes"
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

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/fill"
)

// Two LAN nodes both download a blob from outside the LAN (an election
// whose answers came late made two winners, or one began before it heard
// of the other). The one further along, or about as far and first in the
// election's order, keeps the download; the other leaves its own and
// streams from it at the offset it reached. Never both.
func TestTwoDownloadersOneYields(t *testing.T) {
	body := bytes.Repeat([]byte("two winners "), 200<<10/12)
	sum := sha256.Sum256(body)
	d := cachestore.Digest{Algo: "sha256", Hex: hex.EncodeToString(sum[:])}
	size := int64(len(body))
	tests := []struct {
		name string
		// progress of a, of b; priorities of a, b (ids: a 1, b 2)
		aDone, bDone int64
		aPrio, bPrio int32
		aYields      bool
	}{
		{"b far ahead", 1 << 10, 150 << 10, 100, 100, true},
		{"b far ahead though a ranks first", 1 << 10, 150 << 10, 200, 100, true},
		{"level, a ranks first (lower id)", 10 << 10, 12 << 10, 100, 100, false},
		{"level, b ranks first (priority)", 10 << 10, 12 << 10, 100, 200, true},
		{"a far ahead, b ranks first", 150 << 10, 1 << 10, 100, 200, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// b's HTTP side serves the blob from any offset, as its
			// growing file would.
			var asked atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				asked.Add(1)
				http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
			}))
			defer srv.Close()
			defer http.DefaultClient.CloseIdleConnections()
			port, _ := strconv.Atoi(srv.URL[strings.LastIndex(srv.URL, ":")+1:])
			// One port number for HTTP and UDP, as in the daemon: the
			// datagrams name it, and b's blobs are served on it.
			a := testNode(t, Config{ID: NodeID{1}, Priority: tc.aPrio, Heartbeat: time.Hour})
			b := testNode(t, Config{ID: NodeID{2}, Priority: tc.bPrio, Heartbeat: time.Hour, Port: uint16(port),
				ListenUDP: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))})
			// Each knows the other, as mDNS would tell them.
			a.Table().Seen(Peer{ID: NodeID{2}, Addr: netip.MustParseAddr("127.0.0.1"), Port: b.Addr().Port(), Priority: tc.bPrio})
			b.Table().Seen(Peer{ID: NodeID{1}, Addr: netip.MustParseAddr("127.0.0.1"), Port: a.Addr().Port(), Priority: tc.aPrio})
			// a asks, nobody has it: a downloads it (b said no: it did
			// not want it yet).
			src := a.Source(t.Context(), d, size, func() int64 { return tc.aDone })
			if _, err := src.Open(t.Context(), 0); !errors.Is(err, ErrNoPeer) {
				t.Fatalf("a: %v, want this node to download it", err)
			}
			defer a.Done(d, false)
			yield := src.(*Source).Yield()
			if yield == nil {
				t.Fatal("a downloads the blob but its source offers no yield")
			}
			// b has asked a a question before (about another blob): a is
			// a member to b, whose heartbeat b may yield to.
			if _, _, declined := b.query(t.Context(), testDigest); !declined[NodeID{1}] {
				t.Fatal("a did not answer b's question")
			}
			// b began too, without hearing of a; its first heartbeat goes
			// out at once, and a's reaches b as a answers b's want.
			b.startBeats(d, size, func() int64 { return tc.bDone }, false)
			defer b.Done(d, false)
			b.sendAll(Message{Type: MsgWant, Digest: d, Total: size})
			if !tc.aYields {
				// b leaves it to a instead: wait for that, then check a did not.
				select {
				case <-yieldOf(b, d):
				case <-time.After(10 * time.Second):
					t.Fatal("neither node left the download to the other")
				}
				select {
				case <-yield:
					t.Fatal("both nodes left the download to each other")
				default:
				}
				return
			}
			select {
			case <-yield:
			case <-time.After(10 * time.Second):
				t.Fatal("a kept its download beside b's")
			}
			select {
			case <-yieldOf(b, d):
				t.Fatal("b left its download too: nobody keeps it")
			default:
			}
			// Opened again, a's LAN source streams from b at a's offset.
			st, err := src.Open(t.Context(), tc.aDone)
			if err != nil {
				t.Fatalf("a after yielding: %v", err)
			}
			defer st.Body.Close()
			var got bytes.Buffer
			got.Write(body[:tc.aDone])
			got.ReadFrom(st.Body)
			if !bytes.Equal(got.Bytes(), body) || st.From != "peer "+(NodeID{2}).String() {
				t.Fatalf("a got %d bytes from %s, want the blob from b", got.Len(), st.From)
			}
			if beating, relay := a.beatingAs(d); !beating || !relay {
				t.Fatalf("a heartbeats %v, relay %v: want a relay now", beating, relay)
			}
		})
	}
}

// yieldOf is the yield channel of n's download of d, closed or not: nil
// when n does not download d.
func yieldOf(n *Node, d cachestore.Digest) <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if b := n.beating[d]; b != nil {
		return b.yield
	}
	return nil
}

// Streams left for slowness (the engine's stall rule, a holder under its
// minimum rate) are not failed tries while the LAN has other peers to go
// on from: on a busy machine every transfer is slow, and going to the WAN
// then multiplies it without making anything faster. The slow peer is
// skipped for a short while, never for the ten minutes wrong bytes cost.
// (Before, peer_retries slow peers sent the fill upstream, each banned
// for ten minutes.)
func TestSlowPeersAreNotFailedTries(t *testing.T) {
	var asked atomic.Int32
	var peers []netip.AddrPort
	for id := byte(1); id <= 4; id++ {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			asked.Add(1)
			w.Write([]byte("some"))
		}))
		t.Cleanup(srv.Close)
		port, _ := strconv.Atoi(srv.URL[strings.LastIndex(srv.URL, ":")+1:])
		p := testNode(t, Config{ID: NodeID{id}, Port: uint16(port), Priority: 100, Has: func(cachestore.Digest) bool { return true }})
		peers = append(peers, p.Addr())
	}
	// The node's heartbeats read the clock too: it moves atomically.
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	r := testNode(t, Config{ID: NodeID{9}, PeerRetries: 2, Static: peers, Now: clock})
	waitPeers(t, r, 4)
	src := r.Source(t.Context(), testDigest, 1000, func() int64 { return 0 })
	tried := map[string]bool{}
	for {
		st, err := src.Open(t.Context(), 0)
		if err != nil {
			if !errors.Is(err, ErrNoPeer) {
				t.Fatal(err)
			}
			break
		}
		tried[st.From] = true
		st.Body.Close()
		st.Blame(fmt.Errorf("%w: below its minimum rate", fill.ErrStalled)) // as the engine does
		if len(tried) > 4 {
			t.Fatalf("tried %d peers of 4", len(tried))
		}
	}
	r.Done(testDigest, false)
	if len(tried) != 4 {
		t.Fatalf("the fill left the LAN after %d slow peers of 4 (peer_retries 2)", len(tried))
	}
	for _, p := range r.Table().Peers() {
		if r.Table().Good(p.ID) {
			t.Fatalf("peer %s, too slow, is asked again at once", p.ID)
		}
	}
	now.Add(int64(slowPeerPause + time.Second))
	for _, p := range r.Table().Peers() {
		if !r.Table().Good(p.ID) {
			t.Fatalf("peer %s, only too slow, is still skipped after %s", p.ID, slowPeerPause)
		}
	}
}

// A node that went to the WAN because no answer said "has it" in time
// (the holder's came late, or it finished meanwhile) leaves its download
// when it hears that a LAN peer holds the blob, and takes the rest from
// that peer. (Before, it went on fetching the whole blob over the WAN.)
func TestDownloaderLeavesItToAHolder(t *testing.T) {
	body := bytes.Repeat([]byte("held "), 40<<10)
	sum := sha256.Sum256(body)
	d := cachestore.Digest{Algo: "sha256", Hex: hex.EncodeToString(sum[:])}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}))
	defer srv.Close()
	defer http.DefaultClient.CloseIdleConnections()
	port, _ := strconv.Atoi(srv.URL[strings.LastIndex(srv.URL, ":")+1:])
	holder := testNode(t, Config{ID: NodeID{2}, Priority: 100, Port: uint16(port),
		ListenUDP: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))})
	n := testNode(t, Config{ID: NodeID{1}, Priority: 100, Heartbeat: time.Hour})
	n.Table().Seen(Peer{ID: NodeID{2}, Addr: netip.MustParseAddr("127.0.0.1"), Port: uint16(port), Priority: 100})
	holder.Table().Seen(Peer{ID: NodeID{1}, Addr: netip.MustParseAddr("127.0.0.1"), Port: n.Addr().Port(), Priority: 100})
	src := n.Source(t.Context(), d, int64(len(body)), func() int64 { return 1000 })
	if _, err := src.Open(t.Context(), 0); !errors.Is(err, ErrNoPeer) {
		t.Fatalf("%v: want this node to download it (nobody had it yet)", err)
	}
	defer n.Done(d, false)
	yield := src.(*Source).Yield()
	holder.Done(d, true) // it has it now, and says so
	select {
	case <-yield:
	case <-time.After(10 * time.Second):
		t.Fatal("the downloader kept fetching over the WAN beside a LAN holder")
	}
	st, err := src.Open(t.Context(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Body.Close()
	got, _ := io.ReadAll(st.Body)
	if !bytes.Equal(got, body[1000:]) || st.From != "peer "+(NodeID{2}).String() {
		t.Fatalf("after leaving the download: %d bytes from %s, want the rest from the holder", len(got), st.From)
	}
}

// answerAs reads n's question from c, a socket playing the LAN host id,
// and answers it "neither have nor want" at once: id has answered one of
// n's questions, as a member does.
func answerAs(t *testing.T, c *net.UDPConn, n *Node, id NodeID) {
	t.Helper()
	m := questionTo(t, c)
	port := uint16(c.LocalAddr().(*net.UDPAddr).Port)
	if _, err := c.WriteToUDP(signed(t, Message{Type: MsgAnswer, From: id, To: m.From, ReqID: m.ReqID, Digest: m.Digest, HTTPPort: port}, nil),
		net.UDPAddrFromAddrPort(n.Addr())); err != nil {
		t.Fatal(err)
	}
}

// A heartbeat or a "have" is one datagram anyone on the LAN can send
// (without a group secret): a downloader leaves its download only to a
// member that has answered its questions, only for a heartbeat about
// this blob (its Total the size this node expects, its Done within it),
// and only once a fill, since each yield costs the fill a reopened
// upstream stream. (Before, one forged heartbeat from an id never heard
// before made a node drop its WAN stream, and every forged one again.)
func TestYieldOnlyToAMemberOnce(t *testing.T) {
	const size = 1 << 20
	member := udpFrom(t, "127.0.0.1")
	memberID := NodeID{5}
	stranger := udpFrom(t, "127.0.0.33")
	strangerID := NodeID{0xee}
	a := testNode(t, Config{ID: NodeID{1}, Priority: 100, Heartbeat: time.Hour})
	a.Table().Seen(Peer{ID: memberID, Addr: netip.MustParseAddr("127.0.0.1"), Port: uint16(member.LocalAddr().(*net.UDPAddr).Port), Priority: 100})
	src := a.Source(t.Context(), testDigest, size, func() int64 { return 4096 })
	answerAs(t, member, a, memberID)
	if _, err := src.Open(t.Context(), 0); !errors.Is(err, ErrNoPeer) {
		t.Fatalf("a: %v, want this node to download it", err)
	}
	defer a.Done(testDigest, false)
	yield := src.(*Source).Yield()
	if yield == nil {
		t.Fatal("a downloads the blob but its source offers no yield")
	}
	beat := func(c *net.UDPConn, id NodeID, done, total int64) []byte {
		port := uint16(c.LocalAddr().(*net.UDPAddr).Port)
		return signed(t, Message{Type: MsgDownloading, From: id, Digest: testDigest, Done: done, Total: total, Priority: 100, HTTPPort: port}, nil)
	}
	for _, tc := range []struct {
		name string
		from *net.UDPConn
		dg   []byte
	}{
		{"a stranger far ahead", stranger, beat(stranger, strangerID, size-1, size)},
		{"a stranger that holds it", stranger, signed(t, Message{Type: MsgHave, From: strangerID, Digest: testDigest,
			HTTPPort: uint16(stranger.LocalAddr().(*net.UDPAddr).Port)}, nil)},
		{"a member, about a blob of another size", member, beat(member, memberID, 2*size-1, 2*size)},
		{"a member, further than its total", member, beat(member, memberID, size+1, size)},
	} {
		sendRaw(t, tc.from, a, nil, tc.dg)
		select {
		case <-yield:
			t.Fatalf("%s made the downloader leave its download", tc.name)
		default:
		}
	}
	// The member's heartbeat about this blob, further along: a yields.
	sendRaw(t, member, a, nil, beat(member, memberID, size-1, size))
	select {
	case <-yield:
	default:
		t.Fatal("a kept its download beside a member's further along")
	}
	if w, ok := a.yielded(testDigest); !ok || w != memberID {
		t.Fatalf("a yielded to %v (%v), want the member", w, ok)
	}
	// The member had nothing after all: a downloads again, as its source
	// does when out of peers, and yields no more in this fill.
	a.startBeats(testDigest, size, func() int64 { return 4096 }, false)
	if ch := src.(*Source).Yield(); ch != nil {
		t.Fatal("a downloader that yielded once in this fill offers a second yield")
	}
	sendRaw(t, member, a, nil, beat(member, memberID, size-1, size))
	if beating, relay := a.beatingAs(testDigest); !beating || relay {
		t.Fatalf("a heartbeats %v, relay %v: want it downloading", beating, relay)
	}
}
