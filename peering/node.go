package peering

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/warren-cache/warren/cachestore"
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
	SpaceAware     bool
	Secret         []byte

	// FreeBytes is the room this node has for new blobs.
	FreeBytes func() uint64
	// Has reports whether a verified blob is stored here.
	Has func(cachestore.Digest) bool
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

	mu        sync.Mutex                      // guards queries, elections, nextReq
	queries   map[uint32]chan Message         // open queries by request id
	elections map[cachestore.Digest]*election // what the group wants, per digest
	beating   map[cachestore.Digest]*beat     // downloads this node heartbeats
	nextReq   uint32

	wg sync.WaitGroup // heartbeat goroutines

	// Dropped counts datagrams refused (garbage, wrong version, bad MAC).
	Dropped atomic.Int64
}

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
		nextReq:   rand.Uint32(),
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
			n.log.Warn("peer socket read failed", slog.Any("err", err))
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
		n.handle(m, src)
	}
}

// greet says hello to static peers now and then, with jitter, so they
// answer and land in the table even without mDNS.
func (n *Node) greet(ctx context.Context) {
	if n.cfg.Passive {
		return // passive nodes announce nothing
	}
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
	n.wg.Wait()
}

func (n *Node) handle(m Message, src netip.AddrPort) {
	_, inTable := n.table.Get(m.From)
	n.table.Seen(Peer{ID: m.From, Addr: src.Addr().Unmap(), Port: m.HTTPPort, Priority: m.Priority, Passive: m.Passive, FreeBytes: m.FreeBytes})
	switch m.Type {
	case MsgHello:
		if !inTable && !n.cfg.Passive {
			n.send(Message{Type: MsgHello}, src)
		}
	case MsgQuery:
		if n.cfg.Passive || !n.cfg.Has(m.Digest) {
			return
		}
		slots := 0
		if n.cfg.Blobs != nil {
			slots = n.cfg.Blobs.FreeSlots()
		}
		n.send(Message{Type: MsgAnswer, ReqID: m.ReqID, Digest: m.Digest, Has: true,
			Ready: n.ready.Load() && slots > 0, FreeSlots: uint8(min(slots, 255))}, src)
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
		n.update(m.Digest, func(e *election) { e.wants[m.From] = m })
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
			e.beats[m.From], e.beatAt[m.From] = m, n.now()
			delete(e.dead, m.From)
		})
	case MsgHave:
		n.update(m.Digest, func(e *election) { e.haves[m.From] = true })
	}
}

// update changes (creating) the election state of d and wakes its waiters.
func (n *Node) update(d cachestore.Digest, f func(*election)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := n.now()
	for k, e := range n.elections { // forget what nobody has cared about for a while
		if !e.interest && now.Sub(e.touched) > 2*time.Minute {
			delete(n.elections, k)
		}
	}
	e := n.elections[d]
	if e == nil {
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

// Fetch writes the blob d (size bytes, -1 unknown) from offset off on into
// w, from LAN peers: those that answer "has it, ready", or the one the
// group elects to download it. It returns the ids of the peers that sent
// bytes. An error wrapping ErrNoPeer means: fetch it upstream yourself;
// when this node won the election, it then heartbeats "downloading" with
// progress() until Done.
func (n *Node) Fetch(ctx context.Context, d cachestore.Digest, size, off int64, w io.Writer, progress func() int64) ([]string, error) {
	if len(n.targets()) == 0 {
		return nil, fmt.Errorf("%w: no peers known", ErrNoPeer)
	}
	f := &fetcher{n: n, d: d, size: size, off: off, w: w}
	answers := n.query(ctx, d)
	if len(answers) > 0 {
		if f.fromAny(ctx, answers) {
			return f.sources, nil
		}
		if f.failures >= n.cfg.PeerRetries {
			return f.sources, fmt.Errorf("%w: %d peer tries failed", ErrNoPeer, f.failures)
		}
	}
	if n.cfg.Passive {
		return f.sources, fmt.Errorf("%w: none has it ready (passive nodes take no part in elections)", ErrNoPeer)
	}
	if len(n.table.Peers()) == 0 {
		// Nobody to elect with: a lone node pays only the query timeout.
		return f.sources, fmt.Errorf("%w: no peer has answered yet", ErrNoPeer)
	}
	return f.sources, f.elect(ctx, progress)
}

// query asks the group who has d and is ready; it returns the ready answers
// heard by the first one plus a short grace, or by the query timeout.
func (n *Node) query(ctx context.Context, d cachestore.Digest) []Peer {
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
	n.sendAll(Message{Type: MsgQuery, ReqID: id, Digest: d})
	timeout := time.NewTimer(n.cfg.QueryTimeout)
	defer timeout.Stop()
	var grace <-chan time.Time
	var out []Peer
	for {
		select {
		case <-ctx.Done():
			return out
		case <-timeout.C:
			return out
		case <-grace:
			return out
		case m := <-ch:
			if !m.Has || !m.Ready || !n.table.Good(m.From) {
				continue
			}
			if p, ok := n.table.Get(m.From); ok && !slices.ContainsFunc(out, func(q Peer) bool { return q.ID == p.ID }) {
				out = append(out, p)
			}
			if grace == nil {
				// The first ready answer may be taken at once; a moment more
				// lets the weighted choice see a few.
				grace = time.After(min(20*time.Millisecond, n.cfg.QueryTimeout))
			}
		}
	}
}

// fetcher is one Fetch: where the bytes have come from and how many tries failed.
type fetcher struct {
	n        *Node
	d        cachestore.Digest
	size     int64
	off      int64
	w        io.Writer
	sources  []string
	failures int
	// triedBeat is, per downloader, the heartbeat after which it was last
	// tried: it is tried again only on a newer one, so a dead downloader
	// costs one failed try, not the whole retry budget before re-election.
	triedBeat map[NodeID]time.Time
}

// fromAny tries the candidates, weighted by priority, until one delivers,
// the retries are spent, or all are busy.
func (f *fetcher) fromAny(ctx context.Context, cands []Peer) bool {
	for len(cands) > 0 && f.failures < f.n.cfg.PeerRetries && ctx.Err() == nil {
		i := pickWeighted(cands)
		before := f.failures
		if f.tryOnce(ctx, cands[i]) {
			return true
		}
		// Busy is not a failure, but not now either; a failed peer leaves
		// the list unless it is the only one.
		if f.failures == before || len(cands) > 1 {
			cands = slices.Delete(cands, i, i+1)
		}
	}
	return false
}

// tryOnce is one try of one peer; a failure counts against the retries.
func (f *fetcher) tryOnce(ctx context.Context, p Peer) bool {
	err := f.from(ctx, p)
	if err == nil {
		return true
	}
	if !errors.Is(err, errBusy) {
		f.failures++
		f.n.log.Info("peer transfer failed", slog.String("peer", p.ID.String()), slog.String("digest", f.d.String()), slog.Any("err", err))
	}
	return false
}

// pickWeighted chooses at random, each peer weighted by its priority.
func pickWeighted(ps []Peer) int {
	var total int64
	for _, p := range ps {
		total += int64(max(p.Priority, 1))
	}
	r := rand.Int64N(total)
	for i, p := range ps {
		r -= int64(max(p.Priority, 1))
		if r < 0 {
			return i
		}
	}
	return len(ps) - 1
}

var errBusy = errors.New("peer busy")

// from fetches the rest of the blob from p, resuming at what is written.
func (f *fetcher) from(ctx context.Context, p Peer) error {
	u := "http://" + p.AddrPort().String() + BlobPathPrefix + f.d.Algo + "/" + f.d.Hex
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	if f.off > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(f.off, 10)+"-")
	}
	if len(f.n.cfg.Secret) > 0 {
		req.Header.Set(tokenHeader, BlobToken(f.n.cfg.Secret, f.d))
	}
	resp, err := f.n.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		if f.off > 0 {
			if _, err := io.CopyN(io.Discard, resp.Body, f.off); err != nil {
				return fmt.Errorf("skip to offset %d: %w", f.off, err)
			}
		}
	case http.StatusPartialContent:
	case http.StatusServiceUnavailable:
		return errBusy
	default:
		return fmt.Errorf("peer answered %s", resp.Status)
	}
	src := p.ID.String()
	if !slices.Contains(f.sources, src) {
		f.sources = append(f.sources, src)
	}
	n, err := io.Copy(f.w, resp.Body)
	f.off += n
	if err != nil {
		return fmt.Errorf("after %d bytes: %w", n, err)
	}
	if f.size >= 0 && f.off != f.size {
		return fmt.Errorf("peer sent %d of %d bytes", f.off, f.size)
	}
	return nil
}

// elect announces that this node wants d, collects the others' wants for
// the election window, and computes the same winner every node computes.
// Losers wait for the winner (or anyone with "have"); the winner returns
// ErrNoPeer and heartbeats. Heartbeats that stop for three intervals drop
// the winner and elect again among the rest.
func (f *fetcher) elect(ctx context.Context, progress func() int64) error {
	n := f.n
	d := f.d
	n.update(d, func(e *election) { e.interest = true })
	defer n.update(d, func(e *election) { e.interest = false })
	want := Message{Type: MsgWant, Digest: d, Total: f.size}
	me := n.self(want)
	n.update(d, func(e *election) { e.wants[n.cfg.ID] = me })
	n.sendAll(want)

	deadline := n.now().Add(n.cfg.MaxWait)
	windowEnd := time.After(n.cfg.ElectionWindow)
	decided := false
	var winner NodeID
	var decidedAt time.Time
	for {
		snap, changed := n.snapshot(d)
		// Anyone who has it, or is already downloading it, beats an election.
		if f.tryHolders(ctx, snap) {
			return nil
		}
		if f.failures >= n.cfg.PeerRetries {
			return fmt.Errorf("%w: %d peer tries failed", ErrNoPeer, f.failures)
		}
		if decided {
			last := snap.beatAt[winner]
			if last.IsZero() {
				last = decidedAt
			}
			if n.now().Sub(last) > 3*n.cfg.Heartbeat {
				n.log.Info("elected downloader went quiet; electing again", slog.String("digest", d.String()), slog.String("was", winner.String()))
				n.update(d, func(e *election) { e.dead[winner] = true; delete(e.wants, winner) })
				decided = false
				continue
			}
		}
		if !decided && windowEnd == nil {
			w, ok := computeWinner(snap, f.size, n.cfg.SpaceAware)
			if !ok {
				return fmt.Errorf("%w: no wanting peer has room for it", ErrNoPeer)
			}
			winner, decided, decidedAt = w, true, n.now()
			if winner == n.cfg.ID {
				n.startBeats(d, f.size, progress)
				return fmt.Errorf("%w: this node was elected to download it", ErrNoPeer)
			}
			n.log.Debug("waiting for the elected downloader", slog.String("digest", d.String()), slog.String("winner", winner.String()))
		}
		if n.now().After(deadline) {
			return fmt.Errorf("%w: no peer delivered within %s", ErrNoPeer, n.cfg.MaxWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-windowEnd:
			windowEnd = nil
		case <-changed:
		case <-time.After(n.cfg.Heartbeat):
		}
	}
}

// tryHolders fetches from nodes that have d, or from a live downloader's
// growing file; true when the blob is complete.
func (f *fetcher) tryHolders(ctx context.Context, snap election) bool {
	var cands []Peer
	for id := range snap.haves {
		if p, ok := f.n.table.Get(id); ok && f.n.table.Good(id) && !p.Passive {
			cands = append(cands, p)
		}
	}
	if len(cands) > 0 && f.fromAny(ctx, cands) {
		return true
	}
	for id, at := range snap.beatAt {
		if snap.dead[id] || f.n.now().Sub(at) > 3*f.n.cfg.Heartbeat || id == f.n.cfg.ID || !at.After(f.triedBeat[id]) {
			continue
		}
		if f.triedBeat == nil {
			f.triedBeat = map[NodeID]time.Time{}
		}
		f.triedBeat[id] = at
		if p, ok := f.n.table.Get(id); ok && f.n.table.Good(id) && f.tryOnce(ctx, p) {
			return true
		}
	}
	return false
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
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
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
	}()
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
	if ok && !n.cfg.Passive {
		n.sendAll(Message{Type: MsgHave, Digest: d})
	}
}

// Blame keeps peers that sent bytes of a blob that failed verification out
// of candidate lists for a while.
func (n *Node) Blame(sources []string) {
	for _, s := range sources {
		if id, err := ParseNodeID(s); err == nil {
			n.table.MarkBad(id, 10*time.Minute)
			n.log.Warn("peer sent a blob that failed verification; not asking it for 10m", slog.String("peer", s))
		}
	}
}
