package peering

import (
	"net/netip"
	"slices"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Peer is what the table knows of another node.
type Peer struct {
	ID   NodeID
	Addr netip.Addr
	// Also are other addresses of the peer's host, tied to it (ties.go):
	// its datagrams from them are its own. Replies still go to Addr.
	Also      []netip.Addr
	Port      uint16 // HTTP and UDP
	Priority  int32
	Passive   bool
	FreeBytes uint64
	LastSeen  time.Time
	// BadUntil: the peer sent a wrong blob and is not asked until then.
	BadUntil time.Time
	// Silent counts this node's questions in a row the peer left
	// unanswered; an answer in time resets it (a late one does not). A peer silent for silentLimit
	// questions is no longer waited for, and is the first to give up its
	// place in a full table: a host that greets under many ids and never
	// answers costs neither every miss a wait nor an honest newcomer its
	// place.
	Silent int
	// Answered: the peer has answered one of this node's questions that
	// asked it (in time or late). Until
	// then it is asked but not waited for, unless no peer has answered
	// yet (a node new to its LAN waits for everyone once): a newcomer earns
	// its place among those a miss waits on, so ids forged afresh for
	// every question cost a miss nothing.
	Answered bool
	// Broadcasts: a datagram it sent to many (a broadcast) reached this
	// node, so this node's broadcasts reach it too; cleared when it
	// leaves a question unanswered.
	Broadcasts bool
}

// silentLimit is how many questions in a row a peer may leave unanswered
// before it stops being waited for (a lost datagram or two is no reason).
const silentLimit = 2

// AddrPort is where the peer listens.
func (p Peer) AddrPort() netip.AddrPort { return netip.AddrPortFrom(p.Addr, p.Port) }

// Table is the set of known peers, at most max of them; peers not heard
// from for expireAfter are dropped (zeroconf reports no removals).
//
// A LAN host without the group secret can claim any node id from any
// address, so the table is careful whom it lets in: a full table keeps the
// members it has (newcomers wait for a place, they never push a live peer
// out), one address holds at most perAddr ids (this machine's own nodes
// aside), and a known peer's address moves only on an
// authenticated message.
type Table struct {
	max         int
	expireAfter time.Duration
	now         func() time.Time

	mu       sync.Mutex // guards peers (their ties too), badAddrs, joined and evicted
	peers    map[NodeID]*Peer
	badAddrs map[netip.Addr]time.Time // addresses that sent wrong bytes or failed, until when
	joined   chan struct{}            // closed and replaced when a peer joins
	// evicted is when a newcomer from each source prefix (newcomerPrefix)
	// last pushed a silent member out: at most one an evictEvery per
	// prefix, so a flood of fresh ids from one host cannot churn the
	// table, nor take every place that opens from newcomers elsewhere.
	evicted *lru.Cache[netip.Prefix, time.Time]
}

// evictEvery is how often newcomers from one source prefix may take a
// silent member's place in a full table.
const evictEvery = 10 * time.Second

// evictPrefixes bounds the prefixes whose last eviction is remembered: a
// flood from more prefixes than that within evictEvery gets places as
// fast as it comes, which any other newcomer does too.
const evictPrefixes = 1024

// newcomerPrefix is the source prefix newcomers' evictions are counted
// by: the /24 of an IPv4 address, the /64 of an IPv6 one (a host holds a
// whole /64, and picks addresses in it at will).
func newcomerPrefix(a netip.Addr) netip.Prefix {
	bits := 64
	if a.Is4() {
		bits = 24
	}
	p, _ := a.WithZone("").Prefix(bits)
	return p
}

// perAddr is how many node ids one address may hold in the table: a host
// runs one warren, maybe a second during an upgrade.
const perAddr = 2

// thisMachine is the address several nodes on this machine share (tests,
// a second instance): they are told apart by id alone. Only 127.0.0.1 and
// ::1 count; no LAN host can send from them.
func thisMachine(a netip.Addr) bool {
	return a == netip.AddrFrom4([4]byte{127, 0, 0, 1}) || a == netip.IPv6Loopback()
}

// NewTable makes an empty table.
func NewTable(max int, expireAfter time.Duration, now func() time.Time) *Table {
	evicted, _ := lru.New[netip.Prefix, time.Time](evictPrefixes)
	return &Table{max: max, expireAfter: expireAfter, now: now, peers: map[NodeID]*Peer{},
		badAddrs: map[netip.Addr]time.Time{}, joined: make(chan struct{}), evicted: evicted}
}

// Seen records that p was heard from now, on an authenticated message (or
// from a source the caller trusts): a known peer's address may move.
func (t *Table) Seen(p Peer) bool { return t.Offer(p, true) }

// Offer records that p was heard from now and reports whether it is in
// the table. A known id heard from another address is refused unless
// that address is tied to it (Also: the peer stays at its address), or
// mayMove (the message was authenticated: the peer moves there, its ties
// forgotten): otherwise anyone could take over a peer's address with one
// datagram. A new id is refused when its address already holds perAddr
// ids or the table is full.
func (t *Table) Offer(p Peer, mayMove bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	p.LastSeen = t.now()
	if old, ok := t.peers[p.ID]; ok {
		switch {
		case old.Addr == p.Addr || slices.Contains(old.Also, p.Addr):
			p.Addr, p.Also = old.Addr, old.Also
		case !mayMove:
			return false
		default:
			p.Also = nil
		}
		p.BadUntil, p.Silent, p.Answered = old.BadUntil, old.Silent, old.Answered
		p.Broadcasts = p.Broadcasts || old.Broadcasts
		*old = p
		return true
	}
	p.Also = nil // a newcomer's ties are made by the table, not offered
	t.expireLocked()
	if len(t.peers) >= t.max && !t.dropSilentLocked(newcomerPrefix(p.Addr)) {
		return false
	}
	if !thisMachine(p.Addr) {
		n := 0
		for _, q := range t.peers {
			if q.Addr == p.Addr {
				n++
			}
		}
		if n >= perAddr {
			return false
		}
	}
	t.peers[p.ID] = &p
	close(t.joined)
	t.joined = make(chan struct{})
	return true
}

// dropSilentLocked makes room in a full table, for a newcomer from
// prefix, by dropping the peer that has left the most questions
// unanswered (at least silentLimit), if any and at most once an
// evictEvery for newcomers from that prefix: members that answer keep
// their places.
func (t *Table) dropSilentLocked(prefix netip.Prefix) bool {
	now := t.now()
	if last, ok := t.evicted.Peek(prefix); ok && now.Sub(last) < evictEvery {
		return false
	}
	var worst *Peer
	for _, p := range t.peers {
		if p.Silent >= silentLimit && (worst == nil || p.Silent > worst.Silent) {
			worst = p
		}
	}
	if worst == nil {
		return false
	}
	delete(t.peers, worst.ID)
	t.evicted.Add(prefix, now)
	return true
}

// Asked records the end of a question: the peers in unanswered did not
// answer it; those that did answer were reset by Answered.
func (t *Table) Asked(unanswered map[NodeID]bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id := range unanswered {
		if p, ok := t.peers[id]; ok {
			p.Silent++
			p.Broadcasts = false // its own copies again, in case ours no longer reach it
		}
	}
}

// Answered records that id answered a question.
func (t *Table) Answered(id NodeID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p, ok := t.peers[id]; ok {
		p.Silent, p.Answered = 0, true
	}
}

// AnsweredLate records that id answered a question after it closed: it
// has answered, but its silences stand (that question was left
// unanswered in its time).
func (t *Table) AnsweredLate(id NodeID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p, ok := t.peers[id]; ok {
		p.Answered = true
	}
}

// Joined is closed when the next peer joins the table, or a peer's other
// address is tied to it (apt-proxy-detect and tests wait on it rather than
// poll).
func (t *Table) Joined() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.joined
}

// MarkBad keeps the peer at from (which sent wrong bytes, or failed to
// send what it said it had) out of candidate lists for d. Blame goes to
// the address the bytes came from: the id's entry only if it still names
// that address (an impostor's failure never bans the real peer), and the
// address itself, so that the other ids a host claims are skipped too.
func (t *Table) MarkBad(id NodeID, from netip.AddrPort, d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	until := t.now().Add(d)
	if p, ok := t.peers[id]; ok && p.AddrPort() == from {
		p.BadUntil = until
	}
	a := from.Addr()
	if thisMachine(a) {
		return // its nodes are told apart by id alone
	}
	if len(t.badAddrs) >= 256 {
		now := t.now()
		for k, v := range t.badAddrs {
			if now.After(v) {
				delete(t.badAddrs, k)
			}
		}
		if len(t.badAddrs) >= 256 {
			return // bounded; the ids' own marks still hold
		}
	}
	if until.After(t.badAddrs[a]) {
		t.badAddrs[a] = until
	}
}

// Get returns the peer with id.
func (t *Table) Get(id NodeID) (Peer, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.peers[id]
	if !ok {
		return Peer{}, false
	}
	return p.copy(), true
}

// copy is p with a slice of its own.
func (p *Peer) copy() Peer {
	c := *p
	c.Also = slices.Clone(p.Also)
	return c
}

// maxAlso bounds the addresses tied to one peer: a host's families and
// scopes, on a few interfaces.
const maxAlso = 8

// Tie adds a, another address of peer id's host, to the peer: its
// datagrams from a are its own from now on (the most recent maxAlso are
// kept). Only ties.go's proof or an authenticated message ties.
func (t *Table) Tie(id NodeID, a netip.Addr) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.peers[id]
	if !ok || p.Addr == a || slices.Contains(p.Also, a) {
		return ok
	}
	if len(p.Also) >= maxAlso {
		p.Also = slices.Delete(p.Also, 0, 1)
	}
	p.Also = append(p.Also, a)
	close(t.joined)
	t.joined = make(chan struct{})
	return true
}

// Holds says whether a is peer id's address, or tied to it.
func (t *Table) Holds(id NodeID, a netip.Addr) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.peers[id]
	return ok && (p.Addr == a || slices.Contains(p.Also, a))
}

// Good reports whether id is known and neither it nor its address is
// marked bad.
func (t *Table) Good(id NodeID) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.peers[id]
	if !ok {
		return false
	}
	now := t.now()
	return !now.Before(p.BadUntil) && !now.Before(t.badAddrs[p.Addr])
}

// Proven reports whether id is Good and has answered one of this node's
// questions: a member whose word may make this node leave a download
// (beats.go), not an id heard once.
func (t *Table) Proven(id NodeID) bool {
	t.mu.Lock()
	p, ok := t.peers[id]
	answered := ok && p.Answered
	t.mu.Unlock()
	return answered && t.Good(id)
}

// GoodAddr reports whether neither the address nor the peer at it (if
// known) is marked bad.
func (t *Table) GoodAddr(a netip.AddrPort) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if now.Before(t.badAddrs[a.Addr()]) {
		return false
	}
	for _, p := range t.peers {
		if p.AddrPort() == a && now.Before(p.BadUntil) {
			return false
		}
	}
	return true
}

// Peers lists the live peers, by id.
func (t *Table) Peers() []Peer {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked()
	out := make([]Peer, 0, len(t.peers))
	for _, p := range t.peers {
		out = append(out, p.copy())
	}
	slices.SortFunc(out, func(a, b Peer) int { return slices.Compare(a.ID[:], b.ID[:]) })
	return out
}

func (t *Table) expireLocked() {
	cutoff := t.now().Add(-t.expireAfter)
	for id, p := range t.peers {
		if p.LastSeen.Before(cutoff) {
			delete(t.peers, id)
		}
	}
}
