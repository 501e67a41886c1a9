package peering

import (
	"context"
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
}

// beatMessage is d's heartbeat as of now.
func (n *Node) beatMessage(d cachestore.Digest, b *beat) Message {
	slots := 0
	if n.cfg.Blobs != nil {
		slots = n.cfg.Blobs.FreeSlots()
	}
	return Message{Type: MsgDownloading, Digest: d, Done: max(b.progress(), 0), Total: b.size, Relay: b.relay, FreeSlots: uint8(min(slots, 255))}
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
	if old := n.beating[d]; old != nil {
		if old.relay == relay {
			n.mu.Unlock()
			cancel()
			return
		}
		old.cancel()
	}
	b := &beat{cancel: cancel, size: size, progress: progress, relay: relay}
	n.beating[d] = b
	n.mu.Unlock()
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
