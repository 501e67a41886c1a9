package peering

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/internal/taskgroup"
)

// Config is what a Node needs.
type Config struct {
	ID       NodeID
	Priority int32
	// Passive nodes use peers but never serve, announce or stand for election.
	Passive bool
	// Port is this node's HTTP port (blobs) and UDP port: one number for both.
	Port uint16
	// ListenUDP is the UDP address to bind, e.g. 0.0.0.0:3142.
	ListenUDP netip.AddrPort
	// Broadcast are where queries and wants go besides the known peers
	// (subnet broadcast addresses).
	Broadcast []netip.AddrPort
	// Static peers are greeted periodically; they answer and join the table.
	Static []netip.AddrPort

	MaxPeers       int           // default 30
	PeerRetries    int           // failed peer tries before upstream; default 3
	QueryTimeout   time.Duration // how long to wait for "has it" answers; default 150ms
	ElectionWindow time.Duration // how long wants are collected; default 300ms
	Heartbeat      time.Duration // "downloading" interval; default 1s
	MaxWait        time.Duration // bound on waiting for other peers; default 10m
	// BusyLimit is how long a peer may keep answering "busy" to this
	// node's blob requests for one fill before that counts as a failed
	// try (default 10s, the fill's stall timeout): a host that claims the
	// blob and never serves it must not hold a download for MaxWait.
	BusyLimit time.Duration
	// HolderMinRate is the average a peer that holds the whole blob must
	// send at (bytes/s; default 128 KiB/s, far below any LAN).
	HolderMinRate int64
	SpaceAware    bool
	Secret        []byte

	// FreeBytes is the room this node has for new blobs.
	FreeBytes func() uint64
	// Has reports whether a verified blob is stored here.
	Has func(cachestore.Digest) bool
	// Recheck asks for a stored blob to be rehashed soon (a peer says the
	// bytes it got from us were wrong); nil: ignored.
	Recheck func(cachestore.Digest)
	// Blobs is this node's blob server (nil for a passive node): its free
	// slots decide "ready".
	Blobs *BlobServer

	Client *http.Client // for blob fetches; nil builds one
	Logger *slog.Logger
	Now    func() time.Time
}

// Node is this machine's member of the peer group.
type Node struct {
	cfg   Config
	log   *slog.Logger
	now   func() time.Time
	conn  *net.UDPConn
	table *Table
	hc    *http.Client
	ready atomic.Bool // false while starting and stopping

	mu        sync.Mutex                      // guards queries, elections, nextReq, rechecked
	queries   map[uint32]chan Message         // open queries by request id
	elections map[cachestore.Digest]*election // what the group wants, per digest
	beating   map[cachestore.Digest]*beat     // downloads this node heartbeats
	nextReq   uint32
	// rechecked is when each digest was last rechecked on a peer's word:
	// at most once a minute, so a LAN host cannot keep us rehashing.
	rechecked *lru.Cache[cachestore.Digest, time.Time]
	pruned    time.Time // when elections were last swept

	// Datagram admission, used by the read loop only.
	limits  *lru.Cache[netip.Addr, *rate.Limiter] // per source address, the least recently heard forgotten first
	replay  map[replayKey]int64                   // (sender, nonce) seen, until when (ms)
	skewLog time.Time                             // last "clock off" warning

	// tasks are the queries and heartbeats running; Run closes it as it
	// ends, so none starts after and none outlives the node.
	tasks taskgroup.Group

	// Dropped counts datagrams refused (garbage, wrong version, bad MAC,
	// replayed, over a source's rate, an impostor's).
	Dropped atomic.Int64
}

type replayKey struct {
	from  NodeID
	nonce uint64
}

// Bounds on what a LAN host can make a node do or keep.
const (
	// ReplayWindow: with a group secret, a datagram sent longer ago (or
	// further ahead, by the sender's clock) is dropped; members' clocks
	// must agree within it (NTP).
	ReplayWindow = 30 * time.Second
	// Datagrams per second (and burst) taken from one source address;
	// a busy node sends a few dozen.
	sourceRate  = 200
	sourceBurst = 400
	maxSources  = 4096    // limiters kept; beyond, they start afresh
	maxReplay   = 1 << 17 // nonces remembered; beyond, unseen ones are dropped
	// maxElections bounds the digests others' wants and heartbeats are
	// kept for; maxVoters the nodes kept per digest.
	maxElections = 4096
	maxVoters    = 64
)

// beat is a download this node was elected for.
type beat struct {
	cancel   context.CancelFunc
	size     int64
	progress func() int64
}

// election is what this node heard about one digest.
type election struct {
	wants    map[NodeID]Message // who wants it, with their priority and room
	beats    map[NodeID]Message // latest "downloading" per node
	beatAt   map[NodeID]time.Time
	haves    map[NodeID]bool
	dead     map[NodeID]bool // downloaders whose heartbeats stopped
	touched  time.Time
	changed  chan struct{} // closed and replaced on every change
	interest bool          // this node wants it now
}

// ErrNoPeer means no peer delivered the blob; fetch it upstream. Fetch
// wraps it with the reason.
var ErrNoPeer = errors.New("no peer delivered the blob")

// Listen binds the UDP socket; Run then serves it.
func Listen(cfg Config) (*Node, error) {
	if cfg.MaxPeers <= 0 {
		cfg.MaxPeers = 30
	}
	if cfg.PeerRetries <= 0 {
		cfg.PeerRetries = 3
	}
	if cfg.QueryTimeout <= 0 {
		cfg.QueryTimeout = 150 * time.Millisecond
	}
	if cfg.ElectionWindow <= 0 {
		cfg.ElectionWindow = 300 * time.Millisecond
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = time.Second
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 10 * time.Minute
	}
	if cfg.BusyLimit <= 0 {
		cfg.BusyLimit = 10 * time.Second
	}
	if cfg.HolderMinRate <= 0 {
		cfg.HolderMinRate = 128 << 10
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.FreeBytes == nil {
		cfg.FreeBytes = func() uint64 { return 0 }
	}
	if cfg.Has == nil {
		cfg.Has = func(cachestore.Digest) bool { return false }
	}
	// SO_BROADCAST: queries and wants go to subnet broadcast addresses.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", cfg.ListenUDP.String())
	if err != nil {
		return nil, fmt.Errorf("listen for peers on udp %s: %w", cfg.ListenUDP, err)
	}
	conn := pc.(*net.UDPConn)
	hc := cfg.Client
	if hc == nil {
		hc = &http.Client{Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: 3 * time.Second}).DialContext,
			ResponseHeaderTimeout: 15 * time.Second,
			MaxIdleConnsPerHost:   4,
			DisableCompression:    true,
		}}
	}
	n := &Node{
		cfg: cfg, log: cfg.Logger, now: cfg.Now, conn: conn, hc: hc,
		table:     NewTable(cfg.MaxPeers, 90*time.Second, cfg.Now),
		queries:   map[uint32]chan Message{},
		elections: map[cachestore.Digest]*election{},
		beating:   map[cachestore.Digest]*beat{},
		replay:    map[replayKey]int64{},
		nextReq:   rand.Uint32(),
	}
	// Both only rate-limit: an address or digest forgotten costs a fresh
	// limiter or one more recheck, never memory.
	n.limits, _ = lru.New[netip.Addr, *rate.Limiter](maxSources)
	n.rechecked, _ = lru.New[cachestore.Digest, time.Time](1024)
	if cfg.Blobs != nil {
		cfg.Blobs.attach(n.table)
	}
	return n, nil
}

// Addr is the bound UDP address.
func (n *Node) Addr() netip.AddrPort { return n.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// Table is the peer table (mdns feeds it too).
func (n *Node) Table() *Table { return n.table }

// Run serves datagrams and greets static peers until ctx ends.
func (n *Node) Run(ctx context.Context) error {
	n.ready.Store(true)
	defer n.ready.Store(false)
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.greet(ctx)
	}()
	go func() {
		<-ctx.Done()
		n.conn.Close()
	}()
	buf := make([]byte, MaxDatagram+1)
	for {
		k, src, err := n.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				<-done
				n.stopBeats()
				n.hc.CloseIdleConnections()
				return nil
			}
			// An error that repeats (the interface under a socket bound
			// to its address went away) is retried each second, never
			// spun on; the node stays up for when it comes back.
			n.log.Warn("peer socket read failed; retrying in a second", slog.Any("err", err))
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		if !n.admit(src.Addr().Unmap()) {
			n.Dropped.Add(1)
			continue
		}
		m, err := Decode(buf[:k], n.cfg.Secret)
		if err != nil {
			n.Dropped.Add(1)
			n.log.Debug("dropped a datagram", slog.String("from", src.String()), slog.Any("err", err))
			continue
		}
		if m.From == n.cfg.ID {
			continue // our own broadcast
		}
		if err := n.fresh(m); err != nil {
			n.Dropped.Add(1)
			n.log.Debug("dropped a datagram", slog.String("from", src.String()), slog.Any("err", err))
			continue
		}
		n.handle(m, src)
	}
}

// admit applies the per-source rate limit, before any decoding: a host
// that floods costs a map lookup per datagram.
func (n *Node) admit(a netip.Addr) bool {
	l, ok := n.limits.Get(a)
	if !ok {
		l = rate.NewLimiter(sourceRate, sourceBurst)
		n.limits.Add(a, l)
	}
	return l.Allow()
}

// errReplay is a datagram seen before, or sent outside the replay window.
var errReplay = errors.New("replayed or stale datagram")

// fresh drops, in a group with a secret, a datagram sent outside the
// replay window or one seen before: a captured datagram cannot be sent
// again. Without a secret anyone can forge a new one, so there is nothing
// to check.
func (n *Node) fresh(m Message) error {
	if len(n.cfg.Secret) == 0 {
		return nil
	}
	now := n.now().UnixMilli()
	window := ReplayWindow.Milliseconds()
	if skew := m.Sent - now; skew > window || skew < -window {
		if t := n.now(); t.Sub(n.skewLog) > time.Minute {
			n.skewLog = t
			n.log.Warn("dropping a peer's datagrams: its clock and ours differ by more than the replay window; keep the group's clocks in sync (NTP)",
				slog.String("peer", m.From.String()), slog.Duration("skew", time.Duration(skew)*time.Millisecond), slog.Duration("window", ReplayWindow))
		}
		return fmt.Errorf("%w: sent %dms from now", errReplay, m.Sent-now)
	}
	k := replayKey{m.From, m.Nonce}
	if until, seen := n.replay[k]; seen && until >= now {
		return fmt.Errorf("%w: nonce %x from %s seen before", errReplay, m.Nonce, m.From)
	}
	if len(n.replay) >= maxReplay {
		for k, until := range n.replay {
			if until < now {
				delete(n.replay, k)
			}
		}
		if len(n.replay) >= maxReplay {
			return fmt.Errorf("%w: too many datagrams in the window to remember", errReplay)
		}
	}
	// Remembered until it would be outside the window anyway.
	n.replay[k] = m.Sent + window
	return nil
}

// greet says hello to static peers now and then, with jitter, so they
// answer and land in the table even without mDNS.
//
// Passive nodes greet too: their hello (flagged passive) offers nothing,
// but the answer puts their static peers in their table, and only peers in
// the table are asked.
func (n *Node) greet(ctx context.Context) {
	for {
		for _, a := range n.cfg.Static {
			n.send(Message{Type: MsgHello}, a)
		}
		jitter := time.Duration(rand.Int64N(int64(5 * time.Second)))
		select {
		case <-ctx.Done():
			return
		case <-time.After(25*time.Second + jitter):
		}
	}
}

func (n *Node) stopBeats() {
	n.mu.Lock()
	for d, b := range n.beating {
		b.cancel()
		delete(n.beating, d)
	}
	n.mu.Unlock()
	n.tasks.Close()
}

func (n *Node) handle(m Message, src netip.AddrPort) {
	_, inTable := n.table.Get(m.From)
	// An authenticated message (the group has a secret; fresh checked it
	// is no replay) may move a peer's address; otherwise a message naming
	// a known peer from elsewhere is an impostor's.
	admitted := n.table.Offer(Peer{ID: m.From, Addr: src.Addr().Unmap(), Port: m.HTTPPort, Priority: m.Priority, Passive: m.Passive, FreeBytes: m.FreeBytes},
		len(n.cfg.Secret) > 0)
	switch {
	case !admitted && inTable:
		n.Dropped.Add(1)
		n.log.Debug("dropped a datagram naming a known peer from another address", slog.String("peer", m.From.String()), slog.String("from", src.String()))
		return
	case !admitted && m.Type != MsgQuery && m.Type != MsgHello:
		// Not in the table (full, or its address holds enough ids): a
		// question is still answered, but what it says of itself is not
		// kept.
		return
	case admitted && !inTable:
		n.log.Debug("peer joined the table", slog.String("peer", m.From.String()), slog.String("addr", src.String()), slog.Bool("passive", m.Passive))
	}
	switch m.Type {
	case MsgHello:
		// Greeted back once, when it joins: a host that is refused a
		// place (or hellos under many ids) gets no answer to each, so
		// hellos cannot bounce between two nodes without end.
		if admitted && !inTable && !n.cfg.Passive {
			n.send(Message{Type: MsgHello}, src)
		}
	case MsgQuery:
		if n.cfg.Passive {
			return
		}
		// Always answered, "no" included: the asker moves on as soon as
		// every peer it knows has answered, not at its timeout.
		has := n.cfg.Has(m.Digest)
		slots := 0
		if n.cfg.Blobs != nil {
			slots = n.cfg.Blobs.FreeSlots()
		}
		n.send(Message{Type: MsgAnswer, ReqID: m.ReqID, Digest: m.Digest, Has: has,
			Ready: has && n.ready.Load() && slots > 0, FreeSlots: uint8(min(slots, 255)), Want: n.wanting(m.Digest)}, src)
	case MsgAnswer:
		n.mu.Lock()
		ch := n.queries[m.ReqID]
		n.mu.Unlock()
		if ch != nil {
			select {
			case ch <- m:
			default:
			}
		}
	case MsgWant:
		n.update(m.Digest, func(e *election) { putVoter(e.wants, m.From, m) })
		// Tell a latecomer what we know at once: that we have it, or that
		// we are downloading it (else it could elect itself and download
		// it a second time).
		if !n.cfg.Passive && n.cfg.Has(m.Digest) {
			n.send(Message{Type: MsgHave, Digest: m.Digest}, src)
			return
		}
		n.mu.Lock()
		b := n.beating[m.Digest]
		n.mu.Unlock()
		if b != nil {
			n.send(Message{Type: MsgDownloading, Digest: m.Digest, Done: max(b.progress(), 0), Total: b.size}, src)
		}
	case MsgDownloading:
		n.update(m.Digest, func(e *election) {
			if putVoter(e.beats, m.From, m) {
				e.beatAt[m.From] = n.now()
				delete(e.dead, m.From)
			}
		})
	case MsgHave:
		n.update(m.Digest, func(e *election) { putVoter(e.haves, m.From, true) })
	case MsgBadBlob:
		n.badBlobReported(m, src)
	}
}

// putVoter sets m[id] unless m already holds maxVoters others.
func putVoter[V any](m map[NodeID]V, id NodeID, v V) bool {
	if _, ok := m[id]; !ok && len(m) >= maxVoters {
		return false
	}
	m[id] = v
	return true
}

// update changes (creating) the election state of d and wakes its waiters.
// Its cost does not grow with what others send: the sweep of forgotten
// elections runs at most every 10 seconds, and a new digest is tracked
// only while fewer than maxElections are (one this node wants always is).
func (n *Node) update(d cachestore.Digest, f func(*election)) {
	n.updateFor(d, false, f)
}

func (n *Node) updateFor(d cachestore.Digest, mine bool, f func(*election)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := n.now()
	if now.Sub(n.pruned) > 10*time.Second || len(n.elections) >= maxElections && now.Sub(n.pruned) > time.Second {
		n.pruned = now
		for k, e := range n.elections { // forget what nobody has cared about for a while
			if !e.interest && now.Sub(e.touched) > 2*time.Minute {
				delete(n.elections, k)
			}
		}
	}
	e := n.elections[d]
	if e == nil {
		if len(n.elections) >= maxElections && !mine {
			return
		}
		e = &election{wants: map[NodeID]Message{}, beats: map[NodeID]Message{}, beatAt: map[NodeID]time.Time{},
			haves: map[NodeID]bool{}, dead: map[NodeID]bool{}, changed: make(chan struct{})}
		n.elections[d] = e
	}
	e.touched = now
	f(e)
	close(e.changed)
	e.changed = make(chan struct{})
}

// self is the sender block of every message.
func (n *Node) self(m Message) Message {
	m.From, m.HTTPPort, m.Priority, m.Passive = n.cfg.ID, n.cfg.Port, n.cfg.Priority, n.cfg.Passive
	m.FreeBytes = n.cfg.FreeBytes()
	m.Sent, m.Nonce = n.now().UnixMilli(), rand.Uint64()
	return m
}

func (n *Node) send(m Message, to netip.AddrPort) {
	b, err := Encode(n.self(m), n.cfg.Secret)
	if err != nil {
		n.log.Error("encode peer message", slog.Any("err", err))
		return
	}
	if _, err := n.conn.WriteToUDPAddrPort(b, to); err != nil {
		n.log.Debug("send to peer failed", slog.String("to", to.String()), slog.Any("err", err))
	}
}

// targets are the broadcast addresses, the static peers and every peer in
// the table, each once.
func (n *Node) targets() []netip.AddrPort {
	seen := map[netip.AddrPort]bool{}
	var out []netip.AddrPort
	add := func(a netip.AddrPort) {
		if a.IsValid() && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	for _, a := range n.cfg.Broadcast {
		add(a)
	}
	for _, a := range n.cfg.Static {
		add(a)
	}
	for _, p := range n.table.Peers() {
		add(p.AddrPort())
	}
	return out
}

func (n *Node) sendAll(m Message) int {
	t := n.targets()
	for _, a := range t {
		n.send(m, a)
	}
	return len(t)
}

// askable are the peers worth a question, and so the answers a question
// waits for: the table's non-passive peers. A static peer joins the table
// when it answers our hello; one that is down is not asked, so it costs a
// miss nothing.
func (n *Node) askable() map[NodeID]bool {
	out := map[NodeID]bool{}
	for _, p := range n.table.Peers() {
		if !p.Passive {
			out[p.ID] = true
		}
	}
	return out
}

// wanting says whether this node is after d itself: asking about it, in its
// election, or downloading it.
func (n *Node) wanting(d cachestore.Digest) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	e := n.elections[d]
	return e != nil && e.interest || n.beating[d] != nil
}

// query asks the group who has d and is ready. It returns the ready
// holders heard by the first one plus a short grace, or when every known
// peer has answered, or by the query timeout. settled says every known peer
// answered and none has or wants d: nobody to wait for.
func (n *Node) query(ctx context.Context, d cachestore.Digest) (ready []Peer, settled bool) {
	n.mu.Lock()
	n.nextReq++
	id := n.nextReq
	ch := make(chan Message, 64)
	n.queries[id] = ch
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		delete(n.queries, id)
		n.mu.Unlock()
	}()
	expected := n.askable()
	n.sendAll(Message{Type: MsgQuery, ReqID: id, Digest: d})
	timeout := time.NewTimer(n.cfg.QueryTimeout)
	defer timeout.Stop()
	var grace <-chan time.Time
	busy := false
	for {
		select {
		case <-ctx.Done():
			return ready, false
		case <-timeout.C:
			return ready, false
		case <-grace:
			return ready, false
		case m := <-ch:
			delete(expected, m.From)
			if m.Has || m.Want {
				busy = true
			}
			if m.Has && m.Ready && n.table.Good(m.From) {
				if p, ok := n.table.Get(m.From); ok && !slices.ContainsFunc(ready, func(q Peer) bool { return q.ID == p.ID }) {
					ready = append(ready, p)
				}
				if grace == nil {
					// The first ready answer may be taken at once; a moment
					// more lets the weighted choice see a few.
					grace = time.After(min(20*time.Millisecond, n.cfg.QueryTimeout))
				}
			}
			if len(expected) == 0 && len(ready) == 0 {
				return ready, !busy
			}
		}
	}
}

// computeWinner: among the wanting, non-passive nodes with room, the
// highest priority, ties to the lowest id.
func computeWinner(e election, size int64, spaceAware bool) (NodeID, bool) {
	var best Message
	found := false
	for id, m := range e.wants {
		if m.Passive || e.dead[id] || spaceAware && size > 0 && m.FreeBytes < uint64(size) {
			continue
		}
		if !found || m.Priority > best.Priority || m.Priority == best.Priority && bytes.Compare(id[:], best.From[:]) < 0 {
			best, found = m, true
		}
	}
	return best.From, found
}

// snapshot copies the election state of d, with its change channel.
func (n *Node) snapshot(d cachestore.Digest) (election, <-chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	e := n.elections[d]
	if e == nil {
		return election{}, make(chan struct{})
	}
	c := election{wants: map[NodeID]Message{}, beats: map[NodeID]Message{}, beatAt: map[NodeID]time.Time{}, haves: map[NodeID]bool{}, dead: map[NodeID]bool{}}
	for k, v := range e.wants {
		c.wants[k] = v
	}
	for k, v := range e.beatAt {
		c.beatAt[k] = v
	}
	for k, v := range e.haves {
		c.haves[k] = v
	}
	for k, v := range e.dead {
		c.dead[k] = v
	}
	return c, e.changed
}

// startBeats sends "downloading" for d every heartbeat until Done(d).
func (n *Node) startBeats(d cachestore.Digest, size int64, progress func() int64) {
	ctx, cancel := context.WithCancel(context.Background())
	n.mu.Lock()
	if old := n.beating[d]; old != nil {
		old.cancel()
	}
	n.beating[d] = &beat{cancel: cancel, size: size, progress: progress}
	n.mu.Unlock()
	n.tasks.Go(func() {
		t := time.NewTicker(n.cfg.Heartbeat)
		defer t.Stop()
		for {
			n.sendAll(Message{Type: MsgDownloading, Digest: d, Done: max(progress(), 0), Total: size})
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
}

// Done ends this node's part in d: heartbeats stop, and with ok the group
// hears "have" (passive nodes announce nothing).
func (n *Node) Done(d cachestore.Digest, ok bool) {
	n.mu.Lock()
	b := n.beating[d]
	delete(n.beating, d)
	n.mu.Unlock()
	if b != nil {
		b.cancel()
	}
	n.update(d, func(e *election) { e.interest = false })
	if ok && !n.cfg.Passive {
		n.sendAll(Message{Type: MsgHave, Digest: d})
	}
}

// badBlobReported rechecks a blob a peer says we sent it wrong, at most
// once a minute per blob (the report may be a lie; the recheck is cheap
// but not free), and only when this node did upload that blob to the
// reporter's address lately: a report about bytes it never received is
// ignored.
func (n *Node) badBlobReported(m Message, src netip.AddrPort) {
	if n.cfg.Passive || n.cfg.Recheck == nil || n.cfg.Blobs == nil || !n.cfg.Has(m.Digest) {
		return
	}
	if !n.cfg.Blobs.SentTo(src.Addr().Unmap(), m.Digest) {
		n.log.Debug("ignored a bad-blob report from a node we sent no such blob", slog.String("peer", m.From.String()),
			slog.String("from", src.String()), slog.String("digest", m.Digest.String()))
		return
	}
	now := n.now()
	n.mu.Lock()
	last, seen := n.rechecked.Get(m.Digest)
	if seen && now.Sub(last) < time.Minute {
		n.mu.Unlock()
		return
	}
	n.rechecked.Add(m.Digest, now)
	n.mu.Unlock()
	n.log.Warn("a peer says the bytes we sent failed verification; rechecking our copy",
		slog.String("peer", m.From.String()), slog.String("digest", m.Digest.String()))
	n.cfg.Recheck(m.Digest)
}
