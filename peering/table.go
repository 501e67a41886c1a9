package peering

import (
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Peer is what the table knows of another node.
type Peer struct {
	ID        NodeID
	Addr      netip.Addr
	Port      uint16 // HTTP and UDP
	Priority  int32
	Passive   bool
	FreeBytes uint64
	LastSeen  time.Time
	// BadUntil: the peer sent a wrong blob and is not asked until then.
	BadUntil time.Time
}

// AddrPort is where the peer listens.
func (p Peer) AddrPort() netip.AddrPort { return netip.AddrPortFrom(p.Addr, p.Port) }

// Table is the set of known peers, at most max of them; peers not heard
// from for expireAfter are dropped (zeroconf reports no removals).
type Table struct {
	max         int
	expireAfter time.Duration
	now         func() time.Time

	mu     sync.Mutex // guards peers and joined
	peers  map[NodeID]*Peer
	joined chan struct{} // closed and replaced when a peer joins
}

// NewTable makes an empty table.
func NewTable(max int, expireAfter time.Duration, now func() time.Time) *Table {
	return &Table{max: max, expireAfter: expireAfter, now: now, peers: map[NodeID]*Peer{}, joined: make(chan struct{})}
}

// Seen records that p was heard from now; when the table is full, the peer
// heard from longest ago makes room.
func (t *Table) Seen(p Peer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p.LastSeen = t.now()
	if old, ok := t.peers[p.ID]; ok {
		p.BadUntil = old.BadUntil
		*old = p
		return
	}
	t.expireLocked()
	if len(t.peers) >= t.max {
		var oldest *Peer
		for _, q := range t.peers {
			if oldest == nil || q.LastSeen.Before(oldest.LastSeen) {
				oldest = q
			}
		}
		delete(t.peers, oldest.ID)
	}
	t.peers[p.ID] = &p
	close(t.joined)
	t.joined = make(chan struct{})
}

// Joined is closed when the next peer joins the table (apt-proxy-detect and
// tests wait on it rather than poll).
func (t *Table) Joined() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.joined
}

// MarkBad keeps a peer that sent wrong bytes out of candidate lists for d.
func (t *Table) MarkBad(id NodeID, d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p, ok := t.peers[id]; ok {
		p.BadUntil = t.now().Add(d)
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
	return *p, true
}

// Good reports whether id is known and not marked bad.
func (t *Table) Good(id NodeID) bool {
	p, ok := t.Get(id)
	return ok && !t.now().Before(p.BadUntil)
}

// Peers lists the live peers, by id.
func (t *Table) Peers() []Peer {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked()
	out := make([]Peer, 0, len(t.peers))
	for _, p := range t.peers {
		out = append(out, *p)
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
