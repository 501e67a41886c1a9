package peering

import (
	"bytes"
	"context"
	"log/slog"
	"time"

	"github.com/warren-cache/warren/cachestore"
)

// Heartbeats of the downloads this node was elected for.

// beat is a download this node was elected for.
type beat struct {
	cancel   context.CancelFunc
	size     int64
	progress func() int64
	relay    bool // the bytes come from a LAN peer (see Message.Relay)
	// yield is closed when this node, downloading from outside the LAN,
	// should leave the download to yieldTo, a LAN downloader further along
	// or first in the election's order (it took the download too, after an
	// election that answers late made two winners). nil for a relay.
	yield   chan struct{}
	yieldTo NodeID
	// yielded: this node has left a download of this blob once already
	// in this fill (carried from beat to beat until Done). It yields at
	// most once: each yield costs the fill a reopened upstream stream,
	// and a peer that says it is further along and then delivers nothing
	// must not be able to make it leave its download again and again.
	yielded bool
}

// beatMessage is d's heartbeat as of now.
func (n *Node) beatMessage(d cachestore.Digest, b *beat) Message {
	slots := 0
	if n.cfg.Blobs != nil {
		slots = n.cfg.Blobs.FreeSlots()
	}
	n.mu.Lock()
	relay := b.relay // a yield makes a downloader a relay
	n.mu.Unlock()
	return Message{Type: MsgDownloading, Digest: d, Done: max(b.progress(), 0), Total: b.size, Relay: relay, FreeSlots: uint8(min(slots, 255))}
}

// beatingAs says whether this node sends heartbeats for d, and whether as
// a relay.
func (n *Node) beatingAs(d cachestore.Digest) (beating, relay bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	b := n.beating[d]
	return b != nil, b != nil && b.relay
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

// startBeats sends "downloading" for d every heartbeat until Done(d):
// relay says the bytes come from a LAN peer. Called again with the other
// role, it goes on in that one, heartbeating at once.
func (n *Node) startBeats(d cachestore.Digest, size int64, progress func() int64, relay bool) {
	ctx, cancel := context.WithCancel(context.Background())
	n.mu.Lock()
	b := &beat{cancel: cancel, size: size, progress: progress, relay: relay}
	if old := n.beating[d]; old != nil {
		if old.relay == relay {
			n.mu.Unlock()
			cancel()
			return
		}
		old.cancel()
		b.yielded = old.yielded
	}
	if !relay && !b.yielded {
		b.yield = make(chan struct{})
	}
	n.beating[d] = b
	n.mu.Unlock()
	if b.yield != nil {
		// A downloader heard before this one began (its heartbeat came
		// while the question or the election ran) is weighed at once.
		snap, _ := n.snapshot(d)
		for id, m := range snap.beats {
			if !snap.dead[id] && n.now().Sub(snap.beatAt[id]) <= n.quietAfter() {
				n.weighYield(d, id, m)
			}
		}
	}
	n.tasks.Go(func() {
		t := time.NewTicker(n.cfg.Heartbeat)
		defer t.Stop()
		for {
			n.sendAll(n.beatMessage(d, b))
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

// yieldMargin is how much further along another downloader must be for
// this one to leave it the download whatever the election's order: an
// eighth of the blob, at least 128 KiB and at most 4 MiB (1 MiB when the
// size is unknown).
func yieldMargin(size int64) int64 {
	if size < 0 {
		return 1 << 20
	}
	return min(max(size/8, 128<<10), 4<<20)
}

// ranksBefore says whether a comes before b in an election: the higher
// priority, then the lower id.
func ranksBefore(a NodeID, ap int32, b NodeID, bp int32) bool {
	return ap > bp || ap == bp && bytes.Compare(a[:], b[:]) < 0
}

// weighYield is told of another node's heartbeat m for d. When this node
// downloads d from outside the LAN too (an election whose answers came
// late made two winners, or one began before it heard of the other), the
// one further along keeps it, and about as far, the one first in the
// election's order: the other leaves its download and streams from it at
// the offset it reached. Progress read from a heartbeat is never ahead of
// the truth and this node's own is read now, so two downloaders never
// leave it to each other.
//
// A heartbeat is one datagram anyone on the LAN can send, so it is
// weighed only from a peer that has answered this node's questions (a
// member, not an id heard once: Table.Proven), and only when it is about
// this very blob: its Total is the size this node expects (a node that
// does not know the size yields to no heartbeat) and its Done within it.
func (n *Node) weighYield(d cachestore.Digest, from NodeID, m Message) {
	if m.Relay || from == n.cfg.ID || m.Done < 0 || m.Done > m.Total || !n.table.Proven(from) {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	b := n.beating[d]
	if b == nil || b.relay || b.yield == nil || b.yieldTo != (NodeID{}) || m.Total != b.size {
		return
	}
	mine, theirs, margin := b.progress(), m.Done, yieldMargin(b.size)
	ahead := theirs > mine+margin
	level := theirs >= mine-margin && ranksBefore(from, m.Priority, n.cfg.ID, n.cfg.Priority)
	if !ahead && !level {
		return
	}
	b.leaveTo(from)
	n.log.Info("another LAN node downloads this blob too; leaving it the download and streaming from it",
		slog.String("digest", d.String()), slog.String("peer", from.String()),
		slog.Int64("our_bytes", mine), slog.Int64("its_bytes", theirs), slog.Bool("further_along", ahead))
}

// leaveTo makes b's download a relay of from's: the yield (once a fill).
// From now on its bytes come from that peer: a relay's heartbeat, so no
// downloader leaves its download to this one, and none waits on it.
// n.mu is held.
func (b *beat) leaveTo(from NodeID) {
	b.yieldTo, b.relay, b.yielded = from, true, true
	close(b.yield)
}

// weighHolder is told that from holds d. A node downloading d from
// outside the LAN leaves that download to it: its answer came too late
// for the question that sent this node to the WAN. As a heartbeat, a
// "have" counts only from a peer that has answered this node's questions.
func (n *Node) weighHolder(d cachestore.Digest, from NodeID) {
	if from == n.cfg.ID || !n.table.Proven(from) {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	b := n.beating[d]
	if b == nil || b.relay || b.yield == nil || b.yieldTo != (NodeID{}) {
		return
	}
	b.leaveTo(from)
	n.log.Info("a LAN node holds the blob this node downloads; taking the rest from it",
		slog.String("digest", d.String()), slog.String("peer", from.String()), slog.Int64("our_bytes", b.progress()))
}

// yieldCh is the channel closed when this node should leave its download
// of d (weighYield); nil when it does not download d from outside the LAN.
func (n *Node) yieldCh(d cachestore.Digest) <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if b := n.beating[d]; b != nil && !b.relay && b.yield != nil {
		return b.yield
	}
	return nil
}

// yielded is the downloader this node left its download of d to, once:
// the LAN source follows it from there.
func (n *Node) yielded(d cachestore.Digest) (NodeID, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	b := n.beating[d]
	if b == nil || b.yieldTo == (NodeID{}) {
		return NodeID{}, false
	}
	id := b.yieldTo
	b.yieldTo, b.yield = NodeID{}, nil
	return id, true
}
