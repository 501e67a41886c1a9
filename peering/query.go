package peering

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/warren-cache/warren/cachestore"
)

// The question "who has it and is ready?", asked of every known peer.

// askable are the peers whose answers a question waits for: the table's
// non-passive peers that answer questions. A static peer joins the table
// when it answers our hello; one that is down is not asked, so it costs a
// miss nothing; one that leaves silentLimit questions in a row unanswered
// (a host greeting under forged ids) is still asked, but not waited for.
func (n *Node) askable() map[NodeID]bool {
	_, waited := n.asked()
	return waited
}

// asked are the peers a question goes to (the non-passive ones) and,
// of them, those it waits for (see askable), from one look at the table:
// those that have answered a question before and did not leave the last
// silentLimit unanswered; every one not silent while none has answered
// yet.
func (n *Node) asked() (asked, waited map[NodeID]bool) {
	asked, waited = map[NodeID]bool{}, map[NodeID]bool{}
	peers := n.table.Peers()
	proven := slices.ContainsFunc(peers, func(p Peer) bool { return !p.Passive && p.Answered && p.Silent < silentLimit })
	for _, p := range peers {
		if p.Passive {
			continue
		}
		asked[p.ID] = true
		if p.Silent < silentLimit && (p.Answered || !proven) {
			waited[p.ID] = true
		}
	}
	return asked, waited
}

// question is one this node asked lately: when, and of whom. An answer
// counts only from a peer it asked (handle.go): anyone can send one naming
// a live request id.
type question struct {
	at    time.Time
	asked map[NodeID]bool // not changed once asked
	// timed are the asked peers whose answer's delay was recorded (once
	// each: lateness.go); n.mu guards it.
	timed map[NodeID]bool
}

// query asks the group who has d and is ready. It returns the ready
// holders heard by the first one plus a short grace, or when every known
// peer has answered, or by the query timeout. settled says every known peer
// answered and none has or wants d: nobody to wait for. declined are the
// peers that answered they neither have nor want it.
func (n *Node) query(ctx context.Context, d cachestore.Digest) (ready []Peer, settled bool, declined map[NodeID]bool) {
	declined = map[NodeID]bool{}
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
	// Every asked peer that has not answered when the question times out
	// counts a silence (the waited-for ones and the silent ones alike); a
	// question that ended early, on a ready holder, blames no one.
	unanswered, expected := n.asked()
	askedOf := maps.Clone(unanswered)
	n.questions.Add(id, &question{at: n.now(), asked: askedOf, timed: map[NodeID]bool{}})
	n.sendAll(Message{Type: MsgQuery, ReqID: id, Digest: d})
	timeout := time.NewTimer(n.cfg.QueryTimeout)
	defer timeout.Stop()
	var grace <-chan time.Time
	busy := false
	for {
		select {
		case <-ctx.Done():
			return ready, false, declined
		case <-timeout.C:
			n.table.Asked(unanswered)
			return ready, false, declined
		case <-grace:
			return ready, false, declined
		case m := <-ch:
			delete(expected, m.From)
			delete(unanswered, m.From)
			if askedOf[m.From] {
				n.table.Answered(m.From) // a host not asked proves nothing by answering
			}
			if m.Has || m.Want {
				busy = true
			} else {
				declined[m.From] = true
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
				return ready, !busy, declined
			}
		}
	}
}
