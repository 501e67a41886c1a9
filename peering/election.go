package peering

import (
	"bytes"
	"time"

	"github.com/warren-cache/warren/cachestore"
)

// The election: what this node heard of others' wants, heartbeats and
// haves per digest, and the winner every node computes alike.

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

// wanting says whether this node is after d itself: asking about it, in its
// election, or downloading it.
func (n *Node) wanting(d cachestore.Digest) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	e := n.elections[d]
	return e != nil && e.interest || n.beating[d] != nil
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
	for k, v := range e.beats {
		c.beats[k] = v
	}
	for k, v := range e.haves {
		c.haves[k] = v
	}
	for k, v := range e.dead {
		c.dead[k] = v
	}
	return c, e.changed
}
