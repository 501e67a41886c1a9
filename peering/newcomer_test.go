package peering

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// logInto is a logger that sends on ch each time a line says what.
func logInto(ch chan string, what string) *slog.Logger {
	return slog.New(slog.NewTextHandler(lineSignal{ch, what}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type lineSignal struct {
	ch   chan string
	what string
}

func (l lineSignal) Write(b []byte) (int, error) {
	if strings.Contains(string(b), l.what) {
		select {
		case l.ch <- string(b):
		default:
		}
	}
	return len(b), nil
}

// Without a group secret, a LAN host greets under a fresh forged id
// before every question. A newcomer is asked but not waited for until it
// has answered once, so each miss ends as soon as the honest peer (which
// has answered before) says no: the question timeout here is an hour.
// (Before, each forged newcomer was waited for until it had left two
// questions unanswered: a flood of fresh ids kept every miss waiting.)
func TestForgedNewcomersNotWaitedFor(t *testing.T) {
	honest := testNode(t, Config{ID: NodeID{2}, Priority: 100})
	n := testNode(t, Config{ID: NodeID{1}, QueryTimeout: time.Hour})
	n.Table().Seen(Peer{ID: NodeID{2}, Addr: netip.MustParseAddr("127.0.0.1"), Port: honest.Addr().Port(), Priority: 100})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	// The honest peer answers once: from now on it is one to wait for.
	if _, settled, _ := n.query(ctx, testDigest); !settled {
		t.Fatal("the honest peer's answer did not settle the first question")
	}
	for round := range 5 {
		forger := udpFrom(t, fmt.Sprintf("127.0.0.%d", 20+round))
		sendRaw(t, forger, n, nil, signed(t, Message{Type: MsgHello, From: NodeID{9, byte(round)}, HTTPPort: 3142}, nil))
		if _, ok := n.Table().Get(NodeID{9, byte(round)}); !ok {
			t.Fatalf("round %d: the forged id did not even join (the test would prove nothing)", round)
		}
		if _, settled, _ := n.query(ctx, testDigest); !settled || ctx.Err() != nil {
			t.Fatalf("round %d: the question waited for a forged newcomer that never answers (settled %v, %v)", round, settled, ctx.Err())
		}
	}
}

// In a full table, newcomers from one source prefix (a /24, a /64) take
// silent members' places at most once every evictEvery: a flood of fresh
// ids from one host cannot churn the table. A newcomer from elsewhere has
// its own pace.
func TestNewcomersEvictAtAMeasuredPace(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	tb := NewTable(4, time.Hour, func() time.Time { return now })
	peer := func(id byte, addr string) Peer {
		return Peer{ID: NodeID{id}, Addr: netip.MustParseAddr(addr), Port: 3142}
	}
	silent := map[NodeID]bool{}
	for id := byte(1); id <= 4; id++ {
		tb.Offer(peer(id, fmt.Sprintf("10.0.0.%d", id)), false)
		silent[NodeID{id}] = true
	}
	for range silentLimit {
		tb.Asked(silent)
	}
	for _, tc := range []struct {
		p    Peer
		in   bool
		what string
	}{
		{peer(10, "10.0.0.10"), true, "a newcomer found no place in a table full of silent members"},
		{peer(11, "10.0.0.11"), false, "a second newcomer from the same /24 pushed a silent member out at once: a flood could churn the table"},
		{peer(12, "fd00::1:12"), true, "an IPv6 newcomer found no place though its /64 took none"},
		{peer(13, "fd00::2:13"), false, "a second newcomer from the same /64 pushed a silent member out at once"},
		{peer(14, "10.0.1.14"), true, "a newcomer from another /24 was kept out by the first /24's"},
	} {
		if tb.Offer(tc.p, false) != tc.in {
			t.Fatal(tc.what)
		}
	}
	now = now.Add(evictEvery)
	if !tb.Offer(peer(11, "10.0.0.11"), false) {
		t.Fatalf("a newcomer found no place %s later", evictEvery)
	}
}

// A flood of fresh ids (no group secret; the source addresses forged
// across many subnets) offers one every 100 ms and never answers. An
// honest newcomer greeting every second still finds a place in the full
// table: the flood's evictions are paced by their own prefixes, not one
// slot for everyone. (Before, one global slot every 10 s went to whichever
// newcomer offered first, the flood's, and the honest node was locked out,
// its answers dropped, for as long as the flood lasted.)
func TestFloodDoesNotLockOutAnHonestNewcomer(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	tb := NewTable(8, time.Hour, func() time.Time { return now })
	next := 0
	forged := func() Peer {
		next++
		return Peer{ID: NodeID{0xf0, byte(next >> 8), byte(next)}, Addr: netip.AddrFrom4([4]byte{10, 9, byte(next / 2), byte(next)}), Port: 3142}
	}
	for range 8 {
		tb.Offer(forged(), false)
	}
	honest := Peer{ID: NodeID{0x42}, Addr: netip.MustParseAddr("10.0.0.42"), Port: 3142}
	for step := range 1200 { // two minutes in 100 ms steps
		if step%10 == 0 { // a question now and then; the forged ids never answer
			silent := map[NodeID]bool{}
			for _, p := range tb.Peers() {
				silent[p.ID] = true
			}
			tb.Asked(silent)
		}
		tb.Offer(forged(), false)
		if step%10 == 5 && tb.Offer(honest, false) {
			return
		}
		now = now.Add(100 * time.Millisecond)
	}
	t.Fatal("an honest newcomer greeting every second found no place in two minutes of a forged-id flood")
}

// A question's answers come late (a slow peer, a busy machine): the
// election window stretches to twice what answers lately took, so a want
// that comes 400 ms late (the configured window is 300 ms) is counted and
// its sender, first in the election's order, is the one downloader. (Before,
// this node elected itself too: two downloads over the WAN.)
func TestLateWantsCountInTheElection(t *testing.T) {
	const late = 400 * time.Millisecond
	decided := make(chan string, 4)
	n := testNode(t, Config{ID: NodeID{9}, Priority: 100, QueryTimeout: 100 * time.Millisecond,
		ElectionWindow: 300 * time.Millisecond, Heartbeat: time.Hour, Logger: logInto(decided, "waiting for the elected downloader")})
	// The slow peer, first in the election's order (the lower id).
	slow := udpFrom(t, "127.0.0.31")
	slowID, slowPort := NodeID{1}, uint16(slow.LocalAddr().(*net.UDPAddr).Port)
	sendRaw(t, slow, n, nil, signed(t, Message{Type: MsgHello, From: slowID, HTTPPort: slowPort, Priority: 100}, nil))
	to := n.Addr()
	downloading := make(chan struct{}, 1)
	wanted := make(chan struct{}, 1)
	answered := make(chan struct{}, 1)
	go func() { // it answers everything late
		buf := make([]byte, MaxDatagram)
		for {
			k, _, err := slow.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			m, err := Decode(buf[:k], nil)
			if err != nil {
				continue
			}
			var reply Message
			switch m.Type {
			case MsgQuery:
				reply = Message{Type: MsgAnswer, ReqID: m.ReqID, Digest: m.Digest, Want: true}
			case MsgWant:
				reply = Message{Type: MsgWant, Digest: m.Digest, Total: m.Total, FreeBytes: 1 << 40}
				select {
				case wanted <- struct{}{}:
				default:
				}
			case MsgDownloading:
				select {
				case downloading <- struct{}{}:
				default:
				}
				continue
			default:
				continue
			}
			reply.From, reply.To, reply.HTTPPort, reply.Priority = slowID, m.From, slowPort, 100
			b := signed(t, reply, nil)
			time.AfterFunc(late, func() {
				slow.WriteToUDPAddrPort(b, to)
				if reply.Type == MsgAnswer {
					select {
					case answered <- struct{}{}:
					default:
					}
				}
			})
		}
	}()
	// A first miss learns how late its answers come.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	warm := testDigest
	warm.Hex = warm.Hex[:62] + "00"
	n.Source(ctx, warm, 10, func() int64 { return 0 })
	// Its late answer is in once a probe sent after it is answered.
	select {
	case <-answered:
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	sendRaw(t, udpFrom(t, "127.0.0.32"), n, nil)

	go n.Source(ctx, testDigest, 10, func() int64 { return 0 }).Open(ctx, 0)
	select {
	case <-decided:
	case <-downloading:
		t.Fatal("this node elected itself: the slow peer's want came after the window closed")
	case <-ctx.Done():
		t.Fatal("no decision")
	}
	select {
	case <-wanted:
	default:
		t.Fatal("decided before the election")
	}
	n.Done(testDigest, false)
	n.Done(warm, false)
}

// What goes to many goes to a LAN peer by the LAN's broadcast alone once
// that peer's own broadcasts reach this node: a copy of its own as well
// doubled what every member of a fifty-node LAN handled. A peer not heard
// by broadcast, off the LAN, or static keeps its copy, and so does one
// that left a question unanswered (broadcasts may no longer reach it).
func TestBroadcastReachedPeersGetNoCopy(t *testing.T) {
	bcast := netip.MustParseAddrPort("127.255.255.255:9")
	static := netip.MustParseAddrPort("127.0.0.45:3142")
	n := testNode(t, Config{ID: NodeID{1}, Broadcast: []netip.AddrPort{bcast}, LANs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Static: []netip.AddrPort{static}})
	heard := udpFrom(t, "127.0.0.41")
	unheard := udpFrom(t, "127.0.0.42")
	port := func(c *net.UDPConn) uint16 { return uint16(c.LocalAddr().(*net.UDPAddr).Port) }
	// One broadcasts a question (To zero); the other only greets us.
	sendRaw(t, heard, n, nil, signed(t, Message{Type: MsgQuery, From: NodeID{2}, ReqID: 1, Digest: testDigest, HTTPPort: port(heard)}, nil))
	sendRaw(t, unheard, n, nil, signed(t, Message{Type: MsgHello, From: NodeID{3}, HTTPPort: port(unheard)}, nil))
	n.Table().Seen(Peer{ID: NodeID{4}, Addr: static.Addr(), Port: static.Port()})
	n.Table().Offer(Peer{ID: NodeID{4}, Addr: static.Addr(), Port: static.Port(), Broadcasts: true}, false)
	targets := n.targets()
	if _, ok := targets[netip.AddrPortFrom(netip.MustParseAddr("127.0.0.41"), port(heard))]; ok {
		t.Fatal("a peer our broadcasts reach got its own copy too")
	}
	if _, ok := targets[netip.AddrPortFrom(netip.MustParseAddr("127.0.0.42"), port(unheard))]; !ok {
		t.Fatal("a peer never heard by broadcast got no copy")
	}
	if _, ok := targets[static]; !ok {
		t.Fatal("a static peer got no copy")
	}
	if _, ok := targets[bcast]; !ok {
		t.Fatal("nothing went to the broadcast address")
	}
	n.Table().Asked(map[NodeID]bool{{2}: true})
	if _, ok := n.targets()[netip.AddrPortFrom(netip.MustParseAddr("127.0.0.41"), port(heard))]; !ok {
		t.Fatal("a peer that left a question unanswered still gets no copy of its own")
	}
}

// questionTo reads from c (a LAN host) the next question n asks it.
func questionTo(t *testing.T, c *net.UDPConn) Message {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, MaxDatagram)
	for {
		k, _, err := c.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no question came: %v", err)
		}
		if m, err := Decode(buf[:k], nil); err == nil && m.Type == MsgQuery {
			return m
		}
	}
}

// A peer that answers every question just after it closed has answered
// (it is asked, and waited for while it has not left silentLimit
// questions unanswered), but a late answer is no answer in time: its
// silences stand, and it stops being waited for. (Before, a late answer
// reset Silent: one host answering late made every miss wait the full
// query timeout, forever.)
func TestLateAnswererStopsBeingWaitedFor(t *testing.T) {
	honest := testNode(t, Config{ID: NodeID{2}, Priority: 100})
	n := testNode(t, Config{ID: NodeID{1}, QueryTimeout: 50 * time.Millisecond})
	n.Table().Seen(Peer{ID: NodeID{2}, Addr: netip.MustParseAddr("127.0.0.1"), Port: honest.Addr().Port(), Priority: 100})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, settled, _ := n.query(ctx, testDigest); !settled {
		t.Fatal("the honest peer did not settle the first question")
	}
	late := udpFrom(t, "127.0.0.31")
	port := uint16(late.LocalAddr().(*net.UDPAddr).Port)
	id := NodeID{9, 9}
	sendRaw(t, late, n, nil, signed(t, Message{Type: MsgHello, From: id, HTTPPort: port}, nil))
	waited := 0
	for round := range 2*silentLimit + 2 {
		if n.askable()[id] {
			waited++
		}
		done := make(chan struct{})
		go func() { defer close(done); n.query(ctx, testDigest) }()
		q := questionTo(t, late)
		<-done
		sendRaw(t, late, n, nil, signed(t, Message{Type: MsgAnswer, From: id, To: NodeID{1}, ReqID: q.ReqID, Digest: testDigest, HTTPPort: port}, nil))
		if p, _ := n.Table().Get(id); !p.Answered {
			t.Fatalf("round %d: a late answer did not count as an answer", round)
		}
	}
	if n.askable()[id] || waited > silentLimit {
		p, _ := n.Table().Get(id)
		t.Fatalf("a peer that only answers late was waited for in %d questions and still is (silent %d, limit %d)", waited, p.Silent, silentLimit)
	}
}

// An answer counts only from a peer the question was asked of, and
// addressed to this node: a host that guesses a live request id (they
// count up) proves nothing by answering it. (Before, any answer naming a
// live request id made its sender one that answers.)
func TestAnswerCountsOnlyFromTheAsked(t *testing.T) {
	honest := testNode(t, Config{ID: NodeID{2}, Priority: 100})
	n := testNode(t, Config{ID: NodeID{1}})
	n.Table().Seen(Peer{ID: NodeID{2}, Addr: netip.MustParseAddr("127.0.0.1"), Port: honest.Addr().Port(), Priority: 100})
	if _, settled, _ := n.query(t.Context(), testDigest); !settled {
		t.Fatal("the honest peer did not settle the question")
	}
	n.mu.Lock()
	req := n.nextReq
	n.mu.Unlock()
	asked := udpFrom(t, "127.0.0.34")
	askedID, askedPort := NodeID{8, 1}, uint16(asked.LocalAddr().(*net.UDPAddr).Port)
	sendRaw(t, asked, n, nil, signed(t, Message{Type: MsgHello, From: askedID, HTTPPort: askedPort}, nil))
	done := make(chan struct{})
	go func() { defer close(done); n.query(t.Context(), testDigest) }()
	q := questionTo(t, asked)
	<-done
	stranger := udpFrom(t, "127.0.0.35")
	strangerID := NodeID{8, 2}
	for _, tc := range []struct {
		name string
		from *net.UDPConn
		m    Message
	}{
		{"a host not asked, answering an earlier question", stranger, Message{Type: MsgAnswer, From: strangerID, To: NodeID{1}, ReqID: req, Digest: testDigest, HTTPPort: 3142}},
		{"a host not asked, answering the last question", stranger, Message{Type: MsgAnswer, From: strangerID, To: NodeID{1}, ReqID: q.ReqID, Digest: testDigest, HTTPPort: 3142}},
		{"an asked host, answering to another node", asked, Message{Type: MsgAnswer, From: askedID, To: NodeID{7}, ReqID: q.ReqID, Digest: testDigest, HTTPPort: askedPort}},
	} {
		sendRaw(t, tc.from, n, nil, signed(t, tc.m, nil))
		if p, _ := n.Table().Get(tc.m.From); p.Answered {
			t.Fatalf("%s: its sender now counts as one that answers", tc.name)
		}
	}
	// The asked host's own late answer, to this node, counts.
	sendRaw(t, asked, n, nil, signed(t, Message{Type: MsgAnswer, From: askedID, To: NodeID{1}, ReqID: q.ReqID, Digest: testDigest, HTTPPort: askedPort}, nil))
	if p, _ := n.Table().Get(askedID); !p.Answered {
		t.Fatal("the asked host's late answer did not count")
	}
}

// How late answers come stretches the election window, but one host
// cannot stretch it at will: each question counts one delay per peer it
// asked, whatever number of answers that peer sends, and a delay counts as
// at most the configured window. (Before, one host that sent 32 copies of
// a late answer pinned the window at four times the configured one, and
// the quiet time of every downloader 10 s longer.)
func TestLateAnswersStretchTheWindowWithinBounds(t *testing.T) {
	const window = 300 * time.Millisecond
	var mu sync.Mutex
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	n := testNode(t, Config{ID: NodeID{1}, QueryTimeout: 50 * time.Millisecond, ElectionWindow: window, Now: clock})
	late := udpFrom(t, "127.0.0.36")
	port := uint16(late.LocalAddr().(*net.UDPAddr).Port)
	id := NodeID{9, 7}
	sendRaw(t, late, n, nil, signed(t, Message{Type: MsgHello, From: id, HTTPPort: port}, nil))
	done := make(chan struct{})
	go func() { defer close(done); n.query(t.Context(), testDigest) }()
	q := questionTo(t, late)
	<-done
	mu.Lock()
	now = now.Add(1500 * time.Millisecond) // the host waits, or answers an old question
	mu.Unlock()
	var answers [][]byte
	for i := range lateSamples {
		answers = append(answers, signed(t, Message{Type: MsgAnswer, From: id, To: NodeID{1}, ReqID: q.ReqID, Digest: testDigest, HTTPPort: port, Nonce: uint64(i + 1)}, nil))
	}
	sendRaw(t, late, n, nil, answers...)
	n.mu.Lock()
	samples := n.late.n
	n.mu.Unlock()
	if samples != 1 {
		t.Fatalf("%d copies of one late answer made %d delays, want 1", lateSamples, samples)
	}
	if w := n.electionWindow(); w != 4*window {
		t.Fatalf("an answer 1.5 s late made the election window %s, want four times the configured %s", w, window)
	}
	if q := n.quietAfter(); q > 3*n.cfg.Heartbeat+8*window {
		t.Fatalf("an answer 1.5 s late made a downloader's quiet time %s", q)
	}
}

// What an answer in time says is heard from a host the question reached
// by multicast alone, not yet in the table (a node that greeted only one
// of the LAN): it is downloading, so the question is not settled and
// this node does not elect itself beside it. It proves nothing of its
// sender, which stays unanswered. (Before, only the asked were heard: a
// LAN host the asker did not know yet went unheard, and the two
// downloaded the artifact twice.)
func TestAnswerInTimeHeardFromAHostNotAsked(t *testing.T) {
	n := testNode(t, Config{ID: NodeID{1}, QueryTimeout: 10 * time.Second})
	to := net.UDPAddrFromAddrPort(n.Addr())
	// Written straight to the node, with no probe after (sendRaw's probe
	// would put one more id in the table, waited for).
	write := func(c *net.UDPConn, m Message) {
		t.Helper()
		if _, err := c.WriteToUDP(signed(t, m, nil), to); err != nil {
			t.Fatal(err)
		}
	}
	asked := udpFrom(t, "127.0.0.37")
	askedID, askedPort := NodeID{8, 3}, uint16(asked.LocalAddr().(*net.UDPAddr).Port)
	write(asked, Message{Type: MsgHello, From: askedID, HTTPPort: askedPort})
	// The node greets a peer back when it joins the table.
	asked.SetReadDeadline(time.Now().Add(10 * time.Second))
	for buf := make([]byte, MaxDatagram); ; {
		k, _, err := asked.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("the asked host's hello was not greeted back (not in the table): %v", err)
		}
		if m, err := Decode(buf[:k], nil); err == nil && m.Type == MsgHello {
			break
		}
	}
	ask := func() <-chan bool {
		settled := make(chan bool, 1)
		go func() { _, s, _ := n.query(t.Context(), testDigest); settled <- s }()
		return settled
	}
	first := ask()
	q := questionTo(t, asked)
	write(asked, Message{Type: MsgAnswer, From: askedID, To: NodeID{1}, ReqID: q.ReqID, Digest: testDigest, HTTPPort: askedPort})
	if !<-first {
		t.Fatal("the asked host's answer, in time, did not settle the first question")
	}

	second := ask()
	q = questionTo(t, asked)
	stranger := udpFrom(t, "127.0.0.38")
	strangerID := NodeID{8, 4}
	write(stranger, Message{Type: MsgAnswer, From: strangerID, To: NodeID{1}, ReqID: q.ReqID, Digest: testDigest, Want: true, HTTPPort: 3142})
	write(asked, Message{Type: MsgAnswer, From: askedID, To: NodeID{1}, ReqID: q.ReqID, Digest: testDigest, HTTPPort: askedPort})
	if <-second {
		t.Fatal("a host not asked answered in time that it is downloading, and the question was settled as if no one were")
	}
	if p, _ := n.Table().Get(strangerID); p.Answered {
		t.Fatal("a host not asked counts as one that answers")
	}
}
