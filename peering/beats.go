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
