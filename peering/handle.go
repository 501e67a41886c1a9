package peering

import (
	"log/slog"
	"net/netip"
	"time"
)

// Dispatch: one admitted datagram, by how it came (ties.go) and its type.

// receive takes one admitted datagram from src.
func (n *Node) receive(m Message, src netip.AddrPort) {
	w, reply := n.way(m, src)
	if m.Type == MsgHello && m.Prove && m.To == n.cfg.ID {
		n.echo(m, reply) // from any address, as a question is answered
	}
	switch {
	case m.Type == MsgHello && m.Echo:
		// Its own challenge's echo tied its source (way); for any other
		// node an echo says nothing.
	case w == wayUntied:
		n.untied(m, src, reply)
	default:
		n.handle(m, reply)
	}
}

// handle acts on a datagram from src, the address its sender is known by
// (or a new sender's).
func (n *Node) handle(m Message, src netip.AddrPort) {
	_, inTable := n.table.Get(m.From)
	// An authenticated message for this node (the group has a secret, its
	// MAC names this node as the receiver, and fresh checked it is no
	// replay) may move a peer's address; otherwise a message naming a known
	// peer from elsewhere is an impostor's. One sent to many cannot: a
	// member that missed it could be sent it again.
	// A datagram for many (To zero) from a peer on our LAN came by
	// broadcast (or to a static address: those keep their own copies).
	broadcasts := m.To == (NodeID{}) && m.Type != MsgHello
	admitted := n.table.Offer(Peer{ID: m.From, Addr: src.Addr().Unmap(), Port: m.HTTPPort, Priority: m.Priority, Passive: m.Passive, FreeBytes: m.FreeBytes,
		Broadcasts: broadcasts}, len(n.cfg.Secret) > 0 && m.To == n.cfg.ID)
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
		n.joined(m.From, src)
	}
	switch m.Type {
	case MsgHello:
		// Greeted back once, when it joins: a host that is refused a
		// place (or hellos under many ids) gets no answer to each, so
		// hellos cannot bounce between two nodes without end.
		if admitted && !inTable && !n.cfg.Passive {
			n.send(Message{Type: MsgHello, To: m.From}, src)
		}
	case MsgQuery:
		n.answer(m, src)
	case MsgAnswer:
		// An answer addressed to this node. In time, what it says is
		// heard from anyone (a host the question went to by multicast
		// alone, not yet in the table, says it is downloading); but it
		// counts for its sender, and late at all, only from a peer the
		// question was asked of: anyone can name a live request id.
		q, ok := n.questions.Get(m.ReqID)
		if !ok || m.To != n.cfg.ID {
			return
		}
		n.mu.Lock()
		ch := n.queries[m.ReqID]
		e := n.elections[m.Digest]
		late := ch == nil && e != nil && e.interest
		first := !q.timed[m.From]
		if q.asked[m.From] {
			q.timed[m.From] = true
		}
		n.mu.Unlock()
		if !q.asked[m.From] {
			if ch != nil {
				select {
				case ch <- m:
				default:
				}
			}
			return
		}
		if first {
			// One delay per question and peer: an answer sent again and
			// again is one answer.
			n.answeredAfter(n.now().Sub(q.at))
		}
		if ch != nil {
			select {
			case ch <- m: // the question resets its silence (query)
			default:
			}
		} else {
			// Late: a peer that answers, however slowly, is one to ask
			// and wait for; but its silences stand, so one that always
			// answers just after the question closed stops being waited
			// for as a silent one does.
			n.table.AnsweredLate(m.From)
		}
		if late && m.Has && !m.Passive {
			// The question closed before this answer came: what it says
			// still counts, as the "have" it would be.
			n.update(m.Digest, func(e *election) { putVoter(e.haves, m.From, true) })
			n.weighHolder(m.Digest, m.From)
		}
	case MsgWant:
		n.update(m.Digest, func(e *election) { putVoter(e.wants, m.From, m) })
		// Tell a latecomer what we know at once: that we have it, or that
		// we are downloading it (else it could elect itself and download
		// it a second time).
		if !n.cfg.Passive && n.cfg.Has(m.Digest) {
			n.send(Message{Type: MsgHave, To: m.From, Digest: m.Digest}, src)
			return
		}
		n.mu.Lock()
		b := n.beating[m.Digest]
		n.mu.Unlock()
		if b != nil {
			beat := n.beatMessage(m.Digest, b)
			beat.To = m.From
			n.send(beat, src)
		}
	case MsgDownloading:
		n.update(m.Digest, func(e *election) {
			if putVoter(e.beats, m.From, m) {
				e.beatAt[m.From] = n.now()
				delete(e.dead, m.From)
			}
		})
		n.weighYield(m.Digest, m.From, m)
	case MsgHave:
		n.update(m.Digest, func(e *election) { putVoter(e.haves, m.From, true) })
		n.weighHolder(m.Digest, m.From)
	case MsgBadBlob:
		n.badBlobReported(m, src)
	}
}

// answer answers a query, at to.
func (n *Node) answer(m Message, to netip.AddrPort) {
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
	n.send(Message{Type: MsgAnswer, To: m.From, ReqID: m.ReqID, Digest: m.Digest, Has: has,
		Ready: has && n.ready.Load() && slots > 0, FreeSlots: uint8(min(slots, 255)), Want: n.wanting(m.Digest)}, to)
}

// joined is a peer that joined the table at addr. On an IPv6-capable
// socket it may be heard another way too (its other family, or scope), so
// its other addresses are asked for at once (ties.go), before it says
// anything that counts from them.
func (n *Node) joined(id NodeID, addr netip.AddrPort) {
	if n.multi {
		n.challengePeer(id, addr)
	}
}

// Discovered offers p, found by discovery (mDNS), to the table as
// Table.Offer does (its address must be the one the table knows, or tied
// to it), and reports whether it is in the table. One that joins is
// greeted at once (unless this node is passive), so that it knows this
// node without browsing for it (browses are minutes apart), and is asked
// for its other addresses as one heard in a datagram is. The hello names
// no receiver: a new node at an address mDNS gave stale greets back too.
func (n *Node) Discovered(p Peer) bool {
	_, known := n.table.Get(p.ID)
	in := n.table.Offer(p, false)
	if in && !known {
		if !n.cfg.Passive {
			n.send(Message{Type: MsgHello}, p.AddrPort())
		}
		n.joined(p.ID, p.AddrPort())
	}
	return in
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
