package peering

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/warren-cache/warren/cachestore"
)

// dualTestNode is a node on both loopbacks, one port for both families
// (as the daemon's [::]:port), and where it is reached over each.
func dualTestNode(t *testing.T, cfg Config) (n *Node, to4, to6 netip.AddrPort) {
	t.Helper()
	// A TCP port held open names a number the UDP sockets of both
	// families can bind (the daemon's one port).
	ln, err := net.Listen("tcp", "[::]:0")
	if err != nil {
		t.Fatalf("a dual-stack socket: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	cfg.Port, cfg.ListenUDP = port, netip.AddrPortFrom(netip.IPv6Unspecified(), port)
	n = testNode(t, cfg)
	return n, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port), netip.AddrPortFrom(netip.IPv6Loopback(), port)
}

// udp6From is a socket on ::1, to play a peer's IPv6 side.
func udp6From(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// read waits for a datagram on c that match accepts.
func read(t *testing.T, c *net.UDPConn, what string, match func(Message) bool) Message {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, MaxDatagram)
	for {
		k, _, err := c.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("%s never came: %v", what, err)
		}
		if m, err := Decode(buf[:k], nil); err == nil && match(m) {
			return m
		}
	}
}

// A datagram naming a known peer from its other family is that peer's
// only once the address is tied to it. Without a group secret, until the
// peer echoed a challenge from there (a challenge that went to its known
// address, which an impostor never sees), nothing it says is taken: not
// its table entry, nor its wants, haves and beats; a question is answered
// at the peer's known address. Once tied, it counts. (Before, any LAN host
// could rewrite a peer's entry and votes from the other family.)
func TestPeerHeardTheOtherWay(t *testing.T) {
	b6 := udp6From(t)
	a, to4, to6 := dualTestNode(t, Config{ID: NodeID{1}, Broadcast: []netip.AddrPort{b6.LocalAddr().(*net.UDPAddr).AddrPort()}})
	b4 := udpFrom(t, "127.0.0.1")
	b := NodeID{2}
	bPort := uint16(b4.LocalAddr().(*net.UDPAddr).Port)
	dA := cachestore.Digest{Algo: "sha256", Hex: "aa" + testDigest.Hex[2:]}
	dB := cachestore.Digest{Algo: "sha256", Hex: "bb" + testDigest.Hex[2:]}

	// b joins over IPv4; a, on an IPv6 socket too, asks it at once for
	// its other addresses.
	got := exchange(t, b4, to4, nil, signed(t, Message{Type: MsgHello, From: b, HTTPPort: bPort, Priority: 100}, nil))
	i := slices.IndexFunc(got, func(m Message) bool { return m.Type == MsgHello && m.Prove && m.To == b })
	if p, ok := a.Table().Get(b); !ok || p.Addr != netip.MustParseAddr("127.0.0.1") || i < 0 {
		t.Fatalf("b joined at %v (%v), challenged: %v", p.Addr, ok, i >= 0)
	}
	prove := got[i]

	// Over IPv6, before any proof: anyone's.
	dropped := a.Dropped.Load()
	exchange(t, b6, to6, nil,
		signed(t, Message{Type: MsgHave, From: b, HTTPPort: 1, Digest: dA}, nil),
		signed(t, Message{Type: MsgWant, From: b, HTTPPort: 1, Digest: dA, Total: 10}, nil),
		signed(t, Message{Type: MsgDownloading, From: b, HTTPPort: 1, Digest: dA, Done: 1, Total: 10}, nil),
		signed(t, Message{Type: MsgHello, From: b, HTTPPort: 1, Passive: true, Priority: 0}, nil),
		signed(t, Message{Type: MsgQuery, From: b, HTTPPort: 1, ReqID: 77, Digest: dA}, nil))
	p, _ := a.Table().Get(b)
	snap, _ := a.snapshot(dA)
	if p.Port != bPort || p.Passive || p.Priority != 100 || len(p.Also) > 0 {
		t.Fatalf("an untied datagram over IPv6 rewrote b's entry: %+v", p)
	}
	if snap.haves[b] || len(snap.wants) > 0 || len(snap.beats) > 0 {
		t.Fatalf("an untied datagram over IPv6 was counted as b's: haves %v, wants %d, beats %d", snap.haves, len(snap.wants), len(snap.beats))
	}
	if n := a.Dropped.Load() - dropped; n != 4 {
		t.Fatalf("%d datagrams dropped, want the 4 untied ones (the question is answered)", n)
	}
	read(t, b4, "the answer at b's known address", func(m Message) bool { return m.Type == MsgAnswer && m.ReqID == 77 && m.To == b })

	// An echo of another challenge ties nothing.
	wrong := signed(t, Message{Type: MsgHello, From: b, Echo: true, ReqID: prove.ReqID, Done: prove.Done ^ 1}, nil)
	exchange(t, b6, to6, nil, wrong, signed(t, Message{Type: MsgHave, From: b, Digest: dB}, nil))
	if snap, _ := a.snapshot(dB); snap.haves[b] || a.Table().Holds(b, netip.IPv6Loopback()) {
		t.Fatal("a wrong echo tied ::1 to b")
	}
	// b's own echo, from its IPv6 address: tied, and what b says from
	// there is b's.
	dropped = a.Dropped.Load()
	echo := signed(t, Message{Type: MsgHello, From: b, HTTPPort: bPort, Priority: 100, Echo: true, ReqID: prove.ReqID, Done: prove.Done}, nil)
	exchange(t, b6, to6, nil, echo, signed(t, Message{Type: MsgHave, From: b, HTTPPort: bPort, Priority: 100, Digest: dB}, nil))
	if snap, _ := a.snapshot(dB); !snap.haves[b] || !a.Table().Holds(b, netip.IPv6Loopback()) {
		t.Fatal("b's echo of the challenge did not tie its IPv6 address")
	}
	if p, _ := a.Table().Get(b); p.Addr != netip.MustParseAddr("127.0.0.1") || p.Port != bPort {
		t.Fatalf("a tie moved b: %+v", p)
	}
	if n := a.Dropped.Load() - dropped; n != 0 {
		t.Fatalf("%d of a tied address's datagrams dropped", n)
	}

	// The other side: a echoes a challenge to it from each address it
	// sends from (its broadcast targets: here b6), and to the challenger.
	got = exchange(t, b4, to4, nil, signed(t, Message{Type: MsgHello, From: b, To: NodeID{1}, Prove: true, ReqID: 99, Done: 5}, nil))
	if !slices.ContainsFunc(got, func(m Message) bool { return m.Echo && m.ReqID == 99 && m.Done == 5 && m.To == b }) {
		t.Fatalf("no echo to the challenger: %+v", got)
	}
	read(t, b6, "the echo to a broadcast target", func(m Message) bool { return m.Echo && m.ReqID == 99 && m.Done == 5 && m.To == NodeID{} })
}

// With a group secret every datagram is authenticated: a member's over
// its other family is its own, and one for this node ties the address
// (the blob tokens it sends from there are taken).
func TestPeerHeardTheOtherWayWithASecret(t *testing.T) {
	secret := []byte("group")
	a, to4, to6 := dualTestNode(t, Config{ID: NodeID{1}, Secret: secret})
	b4, b6 := udpFrom(t, "127.0.0.1"), udp6From(t)
	b := NodeID{2}
	exchange(t, b4, to4, secret, signed(t, Message{Type: MsgHello, From: b, HTTPPort: 3142}, secret))
	dropped := a.Dropped.Load()
	exchange(t, b6, to6, secret, signed(t, Message{Type: MsgHave, From: b, HTTPPort: 3142, Digest: testDigest}, secret))
	if snap, _ := a.snapshot(testDigest); !snap.haves[b] || a.Dropped.Load() != dropped {
		t.Fatal("a member's signed have over its other family was not taken")
	}
	if a.Table().Holds(b, netip.IPv6Loopback()) {
		t.Fatal("a signed datagram to many tied an address (it could be replayed from anywhere)")
	}
	exchange(t, b6, to6, secret, signed(t, Message{Type: MsgHello, From: b, To: NodeID{1}, HTTPPort: 3142}, secret))
	if p, _ := a.Table().Get(b); !a.Table().Holds(b, netip.IPv6Loopback()) || p.Addr != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("a signed datagram for a did not tie ::1 to b, or moved it: %+v", p)
	}
}
