package peering

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/fill"
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
	// ListenUDP is the UDP address to bind: [::]:3142 binds both
	// families, 0.0.0.0:3142 IPv4 alone.
	ListenUDP netip.AddrPort
	// Broadcast are where queries and wants go besides the known peers:
	// subnet broadcast addresses, and MulticastOn each IPv6 interface
	// (whose group the node joins).
	Broadcast []netip.AddrPort
	// LANs are the networks of those broadcast addresses: a peer in one,
	// once its own broadcasts have reached this node, gets what goes to
	// many by broadcast alone, not a copy of its own as well.
	LANs []netip.Prefix
	// Static peers are greeted periodically; they answer and join the table.
	Static []netip.AddrPort
	// GreetEvery is how often (plus up to a fifth more, at random) this
	// node says hello to its static peers and (unless passive) every peer
	// in its table (default DefaultGreetEvery): the hellos keep it in
	// their tables, which drop a peer not heard from for PeerExpiry.
	GreetEvery time.Duration

	MaxPeers       int           // peers kept in the table
	PeerRetries    int           // failed peer tries before upstream
	QueryTimeout   time.Duration // how long to wait for "has it" answers
	ElectionWindow time.Duration // how long wants are collected
	Heartbeat      time.Duration // "downloading" interval
	MaxWait        time.Duration // bound on waiting for other peers
	// BusyLimit is how long a peer may keep answering "busy" to this
	// node's blob requests for one fill before that counts as a failed
	// try (default: the fill's default stall timeout): a host that claims the
	// blob and never serves it must not hold a download for MaxWait.
	BusyLimit time.Duration
	// HolderMinRate is the average a peer that holds the whole blob must
	// send at (bytes/s).
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
	// TLS, when set, makes blob fetches https with this client
	// configuration (peer_tls: the node's certificate, the peer's checked
	// against the site CA; tls.go checks it names the node asked).
	TLS *tls.Config
	// Conn, when set, is the datagram socket (ListenUDP is then unused):
	// the simulator's network.
	Conn   PacketConn
	Logger *slog.Logger
	Now    func() time.Time
}

// PacketConn is the datagram socket a Node speaks through: a UDP socket,
// or a simulated network's (LocalAddr is then a *net.UDPAddr too).
type PacketConn interface {
	ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
	WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error)
	LocalAddr() net.Addr
	Close() error
}

// peerHeaderTimeout is how long a peer has to answer a blob request's
// head. One that is downloading the blob itself answers "not yet" sooner
// (notYetWait) while it has no byte.
const peerHeaderTimeout = 15 * time.Second

// Node is this machine's member of the peer group.
type Node struct {
	cfg   Config
	log   *slog.Logger
	now   func() time.Time
	conn  PacketConn
	table *Table
	hc    *http.Client
	ready atomic.Bool // false while starting and stopping

	mu        sync.Mutex                      // guards queries, elections, beating, nextReq, rechecked, late, challenges
	queries   map[uint32]chan Message         // open queries by request id
	elections map[cachestore.Digest]*election // what the group wants, per digest
	beating   map[cachestore.Digest]*beat     // downloads this node heartbeats
	nextReq   uint32
	// rechecked is when each digest was last rechecked on a peer's word:
	// at most once a minute, so a LAN host cannot keep us rehashing.
	rechecked *lru.Cache[cachestore.Digest, time.Time]
	pruned    time.Time // when elections were last swept
	// questions are the recent questions, by request id: who was asked
	// (only their answers count), and when, for how late answers come,
	// even after the question closed, which sets the election window
	// (lateness.go).
	questions *lru.Cache[uint32, *question]
	late      lateness
	// challenges are the outstanding proofs of peers' other addresses,
	// by peer (ties.go).
	challenges map[NodeID]challenge
	echoes     *rate.Limiter // echoes of others' challenges
	// multi: the socket takes IPv6, where a peer may be heard from two
	// scopes (and, dual-stack, two families): joining peers are
	// challenged at once.
	multi bool

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

	tls tlsStates // how blob transfers went over TLS, by peer (tls.go)
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

// Defaults of a Config that leaves them zero (cmd/warren's defaults()
// takes the daemon's from here, so each is written once).
const (
	DefaultMaxPeers       = 128
	DefaultPeerRetries    = 3
	DefaultUploadSlots    = 2   // a BlobConfig's, too
	DefaultPriority       = 100 // the daemon's; a zero priority is a priority
	DefaultQueryTimeout   = 150 * time.Millisecond
	DefaultElectionWindow = 300 * time.Millisecond
	DefaultHeartbeat      = time.Second
	DefaultMaxWait        = 10 * time.Minute
	DefaultGreetEvery     = 25 * time.Second
	// PeerExpiry is how long a peer not heard from stays in the table:
	// past three greetings.
	PeerExpiry = 90 * time.Second
	// PassivePeerExpiry is PeerExpiry on a passive node. It greets no
	// one but its static peers, so members keep it in their tables (and
	// greet it) only while its questions are fresh: what keeps its peers
	// is discovery, whose rounds rest up to 6 minutes (mdns), and the
	// answers to its questions. A peer gone meanwhile is asked and not
	// waited for once it leaves questions unanswered (query.go).
	PassivePeerExpiry = 10 * time.Minute
	// DefaultHolderMinRate is far below any LAN, far above a trickle.
	DefaultHolderMinRate = 128 << 10
)

// ErrNoPeer means no peer delivered the blob; fetch it upstream. Fetch
// wraps it with the reason.
var ErrNoPeer = errors.New("no peer delivered the blob")

// Listen binds the UDP socket; Run then serves it.
func Listen(cfg Config) (*Node, error) {
	// Zero means nothing for any of these: it takes the default.
	cfg.MaxPeers = cmp.Or(max(cfg.MaxPeers, 0), DefaultMaxPeers)
	cfg.PeerRetries = cmp.Or(max(cfg.PeerRetries, 0), DefaultPeerRetries)
	cfg.QueryTimeout = cmp.Or(max(cfg.QueryTimeout, 0), DefaultQueryTimeout)
	cfg.ElectionWindow = cmp.Or(max(cfg.ElectionWindow, 0), DefaultElectionWindow)
	cfg.Heartbeat = cmp.Or(max(cfg.Heartbeat, 0), DefaultHeartbeat)
	cfg.MaxWait = cmp.Or(max(cfg.MaxWait, 0), DefaultMaxWait)
	cfg.BusyLimit = cmp.Or(max(cfg.BusyLimit, 0), fill.DefaultStallTimeout)
	cfg.HolderMinRate = cmp.Or(max(cfg.HolderMinRate, 0), DefaultHolderMinRate)
	cfg.GreetEvery = cmp.Or(max(cfg.GreetEvery, 0), DefaultGreetEvery)
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
	conn := cfg.Conn
	if conn == nil {
		c, err := listenUDP(cfg.ListenUDP, cfg.Broadcast, cfg.Logger) // udp.go
		if err != nil {
			return nil, err
		}
		conn = c
	}
	hc := cfg.Client
	if hc == nil {
		hc = &http.Client{Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: 3 * time.Second}).DialContext,
			ResponseHeaderTimeout: peerHeaderTimeout,
			MaxIdleConnsPerHost:   4,
			DisableCompression:    true,
			TLSClientConfig:       cfg.TLS,
			TLSHandshakeTimeout:   peerHeaderTimeout,
		}}
	}
	expiry := PeerExpiry
	if cfg.Passive {
		expiry = PassivePeerExpiry
	}
	n := &Node{
		cfg: cfg, log: cfg.Logger, now: cfg.Now, conn: conn, hc: hc,
		table:      NewTable(cfg.MaxPeers, expiry, cfg.Now),
		queries:    map[uint32]chan Message{},
		elections:  map[cachestore.Digest]*election{},
		beating:    map[cachestore.Digest]*beat{},
		replay:     map[replayKey]int64{},
		nextReq:    rand.Uint32(),
		challenges: map[NodeID]challenge{},
		echoes:     rate.NewLimiter(echoRate, echoBurst),
	}
	if la, ok := conn.LocalAddr().(*net.UDPAddr); ok && la.IP.To4() == nil {
		n.multi = true
	}
	// Both only rate-limit: an address or digest forgotten costs a fresh
	// limiter or one more recheck, never memory.
	n.limits, _ = lru.New[netip.Addr, *rate.Limiter](maxSources)
	n.rechecked, _ = lru.New[cachestore.Digest, time.Time](1024)
	n.questions, _ = lru.New[uint32, *question](256)
	if cfg.Blobs != nil {
		cfg.Blobs.attach(n.table)
	}
	return n, nil
}

// Addr is the bound UDP address.
func (n *Node) Addr() netip.AddrPort { return n.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// Table is the peer table (mdns feeds it too).
func (n *Node) Table() *Table { return n.table }

// Run serves datagrams and greets peers (greet) until ctx ends.
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
		if m.To != (NodeID{}) && m.To != n.cfg.ID {
			// For another node: a datagram captured on its way there
			// and sent here (with a secret, To is under the MAC), or
			// meant for the node that had this address before.
			n.Dropped.Add(1)
			n.log.Debug("dropped a datagram for another node", slog.String("from", src.String()), slog.String("to", m.To.String()))
			continue
		}
		if err := n.fresh(m); err != nil {
			n.Dropped.Add(1)
			n.log.Debug("dropped a datagram", slog.String("from", src.String()), slog.Any("err", err))
			continue
		}
		n.receive(m, src)
	}
}

// greet says hello now and then, with jitter: to static peers, so they
// answer and land in the table even without mDNS, and (unless this node
// is passive) to each peer in its table, by its known address and naming
// no receiver, so that this node stays in theirs. A hello to a peer that knows this node gets
// no answer; one that forgot it greets back. So discovery need not run
// again to keep a peer: mDNS browses in rounds minutes apart (a LAN of N
// members parses N² answers a browse). Hellos go to known addresses
// alone, never to the LAN at large: a newcomer finds the LAN by its own
// browse and greets what it finds (Discovered).
//
// Passive nodes greet their static peers alone: their hello (flagged
// passive) offers nothing, but the answer puts those peers in their
// table, and only peers in the table are asked. A site of many passive
// nodes greeting every member would fill the members' tables, where
// passive entries are never asked and so never give up their place.
func (n *Node) greet(ctx context.Context) {
	for first := true; ; first = false {
		greeted := map[netip.AddrPort]bool{}
		for _, a := range n.cfg.Static {
			greeted[a] = true
			n.send(Message{Type: MsgHello}, a)
		}
		// The table's peers from the second round on: at start, the
		// table is what discovery just found and greeted.
		if !first && !n.cfg.Passive {
			for _, p := range n.table.Peers() {
				if a := p.AddrPort(); !greeted[a] {
					greeted[a] = true
					// No receiver named, as to many: a hello naming its
					// receiver would be an authenticated one (group_secret)
					// that may move the receiver's entry of this node, and
					// sent on a timer to an address the peer may have left,
					// whoever holds it now could relay it to the peer and
					// keep this node's entry there at its own address. A
					// new node at the address greets back, too.
					n.send(Message{Type: MsgHello}, a)
				}
			}
		}
		jitter := time.Duration(rand.Int64N(int64(n.cfg.GreetEvery/5) + 1))
		select {
		case <-ctx.Done():
			return
		case <-time.After(n.cfg.GreetEvery + jitter):
		}
	}
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
func (n *Node) targets() map[netip.AddrPort]NodeID {
	out := map[netip.AddrPort]NodeID{}
	for _, a := range append(slices.Clone(n.cfg.Broadcast), n.cfg.Static...) {
		if a.IsValid() {
			out[a] = NodeID{} // many nodes, or one not known yet
		}
	}
	// Known peers last: a static address whose node is in the table is
	// addressed to that node. A peer on a LAN this node broadcasts to,
	// whose own broadcasts reach this node, is reached by them: a copy
	// of its own would double what every member of a big LAN handles.
	for _, p := range n.table.Peers() {
		if p.Broadcasts && !slices.Contains(n.cfg.Static, p.AddrPort()) && slices.ContainsFunc(n.cfg.LANs, func(l netip.Prefix) bool { return l.Contains(p.Addr) }) {
			continue
		}
		out[p.AddrPort()] = p.ID
	}
	return out
}

func (n *Node) sendAll(m Message) int {
	t := n.targets()
	for a, id := range t {
		m.To = id
		n.send(m, a)
	}
	return len(t)
}
