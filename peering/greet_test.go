package peering

import (
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// A peer found by discovery is greeted at once, so it knows this node
// without a browse of its own, and the two keep each other past the
// table's expiry by their hellos alone: mDNS browses minutes apart, and
// a LAN of fifty members browsing every 20-30 s kept two cores busy.
func TestDiscoveredPeersKeepEachOtherByHellos(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC).UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	a := testNode(t, Config{ID: NodeID{1}, Now: clock, GreetEvery: 20 * time.Millisecond})
	b := testNode(t, Config{ID: NodeID{2}, Now: clock, GreetEvery: 20 * time.Millisecond})

	// a finds b (as mDNS would); b never browses.
	if !a.Discovered(Peer{ID: b.cfg.ID, Addr: netip.MustParseAddr("127.0.0.1"), Port: b.Addr().Port(), Priority: DefaultPriority}) {
		t.Fatal("a did not take the peer it discovered")
	}
	waitPeers(t, b, 1)
	if _, ok := b.Table().Get(a.cfg.ID); !ok {
		t.Fatalf("b's table has %v, not a", b.Table().Peers())
	}

	// Two thirds of the expiry, twice: each time both must hear the other
	// again, and neither may drop the other.
	for step := range 2 {
		now.Add(int64(PeerExpiry * 2 / 3))
		for _, pair := range []struct {
			name   string
			n      *Node
			of     NodeID
			ofName string
		}{{"a", a, b.cfg.ID, "b"}, {"b", b, a.cfg.ID, "a"}} {
			deadline := time.After(10 * time.Second)
			tick := time.NewTicker(5 * time.Millisecond)
			for {
				pair.n.Table().Peers() // expires what is due
				p, ok := pair.n.Table().Get(pair.of)
				if !ok {
					t.Fatalf("step %d: %s dropped %s", step, pair.name, pair.ofName)
				}
				if p.LastSeen.Equal(clock()) {
					break
				}
				select {
				case <-tick.C:
				case <-deadline:
					t.Fatalf("step %d: %s has not heard from %s since %s (now %s)", step, pair.name, pair.ofName, p.LastSeen, clock())
				}
			}
			tick.Stop()
		}
	}
}

// A passive node greets no one but its static peers, so no member greets
// it back while it asks nothing: the peers discovery found stay in its
// table between browse rounds (minutes apart), past the expiry a member's
// table has, and go only after PassivePeerExpiry.
func TestPassiveNodeKeepsDiscoveredPeersBetweenBrowses(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC).UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	p := testNode(t, Config{ID: NodeID{1}, Passive: true, Now: clock, GreetEvery: 20 * time.Millisecond})
	// A member at an address where nothing answers: it never greets p.
	member := Peer{ID: NodeID{2}, Addr: netip.MustParseAddr("127.0.0.1"), Port: 9, Priority: DefaultPriority}
	if !p.Discovered(member) {
		t.Fatal("the passive node did not take the peer it discovered")
	}
	now.Add(int64(4 * PeerExpiry))
	if _, ok := p.Table().Get(member.ID); !ok || len(p.Table().Peers()) != 1 {
		t.Fatalf("the passive node dropped its discovered peer %s after %s, before its next browse", member.ID, 4*PeerExpiry)
	}
	now.Add(int64(PassivePeerExpiry))
	if n := len(p.Table().Peers()); n != 0 {
		t.Fatalf("the passive node kept %d peers not heard from for longer than %s", n, PassivePeerExpiry)
	}
}

// With a group secret, the hellos a node sends on a timer to a peer's
// known address cannot move the peer's entry of it: the peer has left
// that address, and whoever holds it now relays each hello to the peer
// from there. (A hello naming its receiver is authenticated for it and
// would move the entry to the relay's address, kept fresh by the next.)
func TestRelayedHelloMovesNoOne(t *testing.T) {
	secret := []byte("group")
	a := testNode(t, Config{ID: NodeID{1}, Secret: secret, GreetEvery: 20 * time.Millisecond})
	b := testNode(t, Config{ID: NodeID{2}, Secret: secret})
	// b knows a at 127.0.0.1; a knows b at an address b has left, now a
	// stranger's at 127.0.0.2.
	stranger := udpFrom(t, "127.0.0.2")
	// a first: b's hello on discovering a would put b in a's table at
	// 127.0.0.1.
	if !a.Discovered(Peer{ID: b.cfg.ID, Addr: netip.MustParseAddr("127.0.0.2"), Port: stranger.LocalAddr().(*net.UDPAddr).AddrPort().Port(), Priority: DefaultPriority}) {
		t.Fatal("a did not take b, discovered")
	}
	if !b.Discovered(Peer{ID: a.cfg.ID, Addr: netip.MustParseAddr("127.0.0.1"), Port: a.Addr().Port(), Priority: DefaultPriority}) {
		t.Fatal("b did not take a, discovered")
	}
	// The stranger relays a's first hellos (the one at discovery and the
	// timed ones after it) to b, from its own address.
	buf := make([]byte, MaxDatagram+1)
	var relayed [][]byte
	stranger.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(relayed) < 4 {
		k, err := stranger.Read(buf)
		if err != nil {
			t.Fatalf("the stranger heard %d hellos from a: %v", len(relayed), err)
		}
		relayed = append(relayed, slices.Clone(buf[:k]))
	}
	sendRaw(t, stranger, b, secret, relayed...)
	if p, ok := b.Table().Get(a.cfg.ID); !ok || p.Addr != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("a's hellos, relayed from 127.0.0.2, moved a in b's table: %+v (%v)", p, ok)
	}
}
