package peering

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/fill"
)

// Source is the LAN as one source of a fill: each Open offers the next
// peer to take the blob from (one that has it, or the elected downloader's
// growing file), until the retries are spent, no peer has it, or this
// node is elected to fetch it itself. How the bytes arrive, and whether
// they are right, is the fill engine's business; a peer it blames is not
// asked again for a while.
type Source struct {
	n        *Node
	d        cachestore.Digest
	size     int64
	progress func() int64

	asked    chan struct{} // closed when the query is answered
	answers  []Peer        // ready holders from the query
	settled  bool          // every known peer answered, and none has or wants it
	handed   bool          // a stream was handed out: another Open means it failed
	failures int
	// slowed: the stream handed out was left for being too slow (see
	// slowPeerPause), which costs a try only once slowTries are spent: on
	// a busy machine every transfer is slow, and leaving the LAN for the
	// WAN then multiplies the WAN without making anything faster.
	slowed bool
	slow   int
	over   error // set when the source has nothing more to offer

	// The election, once entered.
	electing  bool
	decided   bool
	winner    NodeID
	decidedAt time.Time
	windowEnd <-chan time.Time
	deadline  time.Time
	triedHave map[NodeID]bool
	// triedBeat is, per downloader, the heartbeat after which it was last
	// tried: it is tried again only on a newer one, so a dead downloader
	// costs one failed try, not the whole retry budget before re-election.
	triedBeat map[NodeID]time.Time
	// busySince is when each peer (by address) first answered "busy" in
	// this fill.
	busySince map[netip.AddrPort]time.Time

	// again: the last source of a fill whose others all failed (Again).
	again bool
	// hinted are peers a hub says receive the blob, tried first (From).
	hinted []netip.AddrPort
	// declined are the peers whose answer said they neither have nor want
	// the blob: with them and every wanting peer heard, the election
	// window has nothing left to collect.
	declined map[NodeID]bool
	// For the log: when the source was made, the question answered and
	// the downloader known.
	began, answeredAt, electedAt time.Time
}

var _ fill.Source = (*Source)(nil)

// Source returns the LAN as a fill source of blob d (size bytes, -1
// unknown). The question "who has it?" is asked at once, in the
// background, so that a caller that tries another source first (small
// artifacts go upstream at once) finds the answers ready. progress feeds
// the heartbeats should this node be elected. The caller ends its part with
// Done.
func (n *Node) Source(ctx context.Context, d cachestore.Digest, size int64, progress func() int64) fill.Source {
	s := n.newSource(d, size, progress)
	// Interest first: a peer that asks about d from now on hears that we
	// want it too, so two nodes can never both think they are alone.
	n.updateFor(d, true, func(e *election) { e.interest = true })
	if len(n.askable()) == 0 {
		// A node that knows no peer asks no one.
		s.settled = true
		close(s.asked)
		return s
	}
	if !n.tasks.Go(func() {
		defer close(s.asked)
		s.answers, s.settled, s.declined = n.query(ctx, d)
		s.answeredAt = n.now()
	}) {
		// The node is stopping: no question, no answers.
		s.settled = true
		close(s.asked)
	}
	return s
}

func (n *Node) newSource(d cachestore.Digest, size int64, progress func() int64) *Source {
	return &Source{n: n, d: d, size: size, progress: progress, asked: make(chan struct{}),
		triedHave: map[NodeID]bool{}, triedBeat: map[NodeID]time.Time{}, busySince: map[netip.AddrPort]time.Time{},
		began: n.now()}
}

// Again returns the LAN as the last source of a fill whose other sources
// all failed: its first Open asks the peers afresh (they may have finished
// the blob meanwhile) and tries those that have it or are receiving it,
// with no election and no waiting. A fill never fails while the LAN holds
// the blob.
func (n *Node) Again(d cachestore.Digest, size int64, progress func() int64) fill.Source {
	s := n.newSource(d, size, progress)
	s.again = true
	return s
}

// From returns the LAN as a source that first tries peers, which a hub
// says receive the blob from it (this node did not know them, or their
// heartbeats had not reached it), then, as Again, whoever has it or is
// receiving it.
func (n *Node) From(peers []netip.AddrPort, d cachestore.Digest, size int64, progress func() int64) fill.Source {
	s := n.newSource(d, size, progress)
	s.again = true
	s.hinted = slices.Clone(peers)
	return s
}

// peerAt is the table's peer at a, or one made for it (a peer this node
// does not know: blame then goes to its address).
func (n *Node) peerAt(a netip.AddrPort) Peer {
	for _, p := range n.table.Peers() {
		if p.AddrPort() == a {
			return p
		}
	}
	return Peer{Addr: a.Addr(), Port: a.Port(), Priority: DefaultPriority}
}

// Phases says how long the question took to be answered and the
// downloader to be known (zero for a phase that did not happen).
func (s *Source) Phases() (query, election time.Duration) {
	select {
	case <-s.asked:
		if !s.answeredAt.IsZero() {
			query = s.answeredAt.Sub(s.began)
		}
	default:
	}
	if !s.electedAt.IsZero() {
		election = s.electedAt.Sub(s.began)
	}
	return query, election
}

// Open offers the next peer's stream of the blob from offset off.
func (s *Source) Open(ctx context.Context, off int64) (*fill.Stream, error) {
	n := s.n
	if s.handed {
		s.handed = false
		if s.slowed && s.slow < slowTries {
			s.slow++
		} else {
			s.failures++
		}
		s.slowed = false
	}
	if s.again {
		return s.openAgain(ctx, off)
	}
	select {
	case <-s.asked:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if w, ok := n.yielded(s.d); ok {
		// This node left its download to w (see Yield): follow w as the
		// winner of an election, waiting on its heartbeats while it is
		// busy, electing again should it go quiet.
		s.over, s.electing, s.windowEnd = nil, true, nil
		s.winner, s.decided, s.decidedAt = w, true, n.now()
		if s.deadline.IsZero() {
			s.deadline = n.now().Add(n.cfg.MaxWait)
		}
	}
	for s.over == nil {
		if s.failures >= n.cfg.PeerRetries {
			s.over = fmt.Errorf("%w: %d peer tries failed", ErrNoPeer, s.failures)
			break
		}
		if p, ok := s.nextAnswer(); ok {
			if st, ok, _ := s.try(ctx, p, off, true); ok {
				return st, nil
			}
			continue
		}
		switch {
		case n.cfg.Passive:
			s.over = fmt.Errorf("%w: none has it ready (passive nodes take no part in elections)", ErrNoPeer)
		case len(n.table.Peers()) == 0:
			// Nobody to elect with: a lone node pays nothing.
			s.over = fmt.Errorf("%w: no peer known", ErrNoPeer)
		case s.settled && !s.electing:
			// Every peer said at once that it neither has nor wants it:
			// no one to wait for. Downloading it now, and saying so, lets
			// any latecomer follow this node instead.
			n.startBeats(s.d, s.size, s.progress, false)
			s.over = fmt.Errorf("%w: no peer has or wants it; this node fetches it", ErrNoPeer)
		default:
			p, complete, err := s.elect(ctx)
			if err != nil {
				s.over = err
				break
			}
			if st, ok, _ := s.try(ctx, p, off, complete); ok {
				return st, nil
			}
		}
	}
	if beating, relay := n.beatingAs(s.d); beating && relay && ctx.Err() == nil {
		// Out of peers: the next bytes come from outside the LAN, and
		// other relays may take this node as their source again.
		n.startBeats(s.d, s.size, s.progress, false)
	}
	return nil, fmt.Errorf("%w: %w", fill.ErrSkip, s.over)
}

// Yield is closed when this node, downloading the blob from outside the
// LAN (this source found no peer to take it from), should leave that
// download to a LAN peer further along: this source, opened again, then
// streams from that peer. nil when this node does not download the blob.
func (s *Source) Yield() <-chan struct{} { return s.n.yieldCh(s.d) }

// openAgain is Open for Again: one fresh question, then whoever has the
// blob or is receiving it, until the tries are spent.
func (s *Source) openAgain(ctx context.Context, off int64) (*fill.Stream, error) {
	n := s.n
	if st, ok := s.openHinted(ctx, off); ok {
		return st, nil
	}
	if s.answeredAt.IsZero() {
		s.answeredAt = n.now()
		close(s.asked)
		if len(n.askable()) > 0 {
			n.log.Info("every source failed; asking the peers again", slog.String("digest", s.d.String()))
			s.answers, _, _ = n.query(ctx, s.d)
		}
	}
	for s.over == nil && ctx.Err() == nil {
		if s.failures >= n.cfg.PeerRetries {
			s.over = fmt.Errorf("%w: %d peer tries failed", ErrNoPeer, s.failures)
			break
		}
		p, ok := s.nextAnswer()
		complete := true
		if !ok {
			snap, _ := n.snapshot(s.d)
			if p, complete, ok = s.holder(snap); !ok {
				s.over = fmt.Errorf("%w: asked again, no peer has it", ErrNoPeer)
				break
			}
		}
		if st, ok, _ := s.try(ctx, p, off, complete); ok {
			return st, nil
		}
	}
	if s.over == nil {
		s.over = ctx.Err()
	}
	return nil, fmt.Errorf("%w: %w", fill.ErrSkip, s.over)
}

// openHinted tries the peers a hub named, in its order. One that answers
// busy (its upload slots full) is asked again after the others, a beat
// later, until it has been busy for BusyLimit: it receives the blob, and
// back at the hub this node would only be queued. false when none gave a
// stream.
func (s *Source) openHinted(ctx context.Context, off int64) (*fill.Stream, bool) {
	n := s.n
	for len(s.hinted) > 0 && ctx.Err() == nil {
		var busy []netip.AddrPort
		for _, a := range s.hinted {
			p := n.peerAt(a)
			if !n.table.GoodAddr(a) {
				continue
			}
			if _, known := n.table.Get(p.ID); !known {
				// So that it knows this node: with a secret, a blob token
				// names a requester its table holds.
				n.send(Message{Type: MsgHello}, a)
			}
			st, ok, wasBusy := s.try(ctx, p, off, false)
			if ok {
				s.hinted = nil
				return st, true
			}
			if wasBusy {
				busy = append(busy, a)
			}
		}
		s.hinted = busy
		if len(busy) == 0 {
			break
		}
		t := time.NewTimer(hintedBusyPause(n.cfg.Heartbeat))
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	return nil, false
}

// hintedBusyPause is the pause before busy hinted peers are asked again: a
// quarter of a heartbeat (a slot frees when one of the peer's uploads ends,
// at LAN speed once its own download is done).
func hintedBusyPause(heartbeat time.Duration) time.Duration { return heartbeat / 4 }

// nextAnswer takes one of the question's ready holders, at random
// weighted by priority, skipping any marked since it answered (its
// address failed us).
func (s *Source) nextAnswer() (Peer, bool) {
	for len(s.answers) > 0 {
		i := pickWeighted(s.answers)
		p := s.answers[i]
		s.answers = slices.Delete(s.answers, i, i+1)
		if s.n.table.Good(p.ID) {
			return p, true
		}
	}
	return Peer{}, false
}

// try opens p's stream (complete: p holds the whole blob, rather than
// downloading it); false (with the failure counted, unless p was merely
// busy, for less than BusyLimit: then busy) when it did not answer with
// the blob.
func (s *Source) try(ctx context.Context, p Peer, off int64, complete bool) (st *fill.Stream, ok, busy bool) {
	s.n.log.Debug("asking a peer for the blob", slog.String("peer", p.ID.String()), slog.String("digest", s.d.String()),
		slog.Int64("offset", off), slog.Bool("holds_it", complete))
	st, err := s.open(ctx, p, off, complete)
	if err == nil {
		s.handed = true
		// Receiving, this node serves what it has to the others that
		// want it: the blob spreads as a tree, not a queue at one node.
		if !s.n.cfg.Passive {
			s.n.startBeats(s.d, s.size, s.progress, true)
		}
		return st, true, false
	}
	if ctx.Err() != nil {
		s.over = ctx.Err()
		return nil, false, false
	}
	if errors.Is(err, errBusy) {
		// By address: a peer a hub named may not be in the table yet.
		first, seen := s.busySince[p.AddrPort()]
		if !seen {
			s.busySince[p.AddrPort()] = s.n.now()
		}
		if !seen || s.n.now().Sub(first) < s.n.cfg.BusyLimit {
			return nil, false, true
		}
		err = fmt.Errorf("busy to every request for %s", s.n.cfg.BusyLimit)
	}
	s.failures++
	// It said it had the blob (or was fetching it) and could not give
	// it: not asked again for a while, whoever else it claims to be.
	s.n.table.MarkBad(p.ID, p.AddrPort(), failedPeerPause)
	s.n.log.Info("peer transfer failed; not asking it for a while", slog.String("peer", p.ID.String()), slog.String("digest", s.d.String()),
		slog.Duration("pause", failedPeerPause), slog.Any("err", err))
	return nil, false, false
}

var errBusy = errors.New("peer busy")

// failedPeerPause is how long a peer that failed to deliver is skipped.
const failedPeerPause = 2 * time.Minute

// slowPeerPause is how long a peer left for being too slow is skipped;
// badPeerPause one whose bytes were wrong or too many. Slowness is often
// this machine's own (a busy CPU, its clock read late), never a lie.
const (
	slowPeerPause = 30 * time.Second
	badPeerPause  = 10 * time.Minute
)

// slowTries is how many streams one fill may leave for slowness before
// each costs a try: enough to go round a few relays.
const slowTries = 6

// open asks p for the blob from off on.
func (s *Source) open(ctx context.Context, p Peer, off int64, complete bool) (*fill.Stream, error) {
	n := s.n
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.blobURL(p.AddrPort(), s.d), nil)
	if err != nil {
		return nil, err
	}
	if len(n.cfg.Secret) > 0 {
		req.Header.Set(tokenHeader, BlobToken(n.cfg.Secret, s.d, n.cfg.ID, n.now().Add(TokenLife), rand.Uint64()))
	}
	resp, size, err := n.getBlob(req, p.ID, off) // tls.go
	if err != nil {
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusOK, http.StatusPartialContent:
	case http.StatusServiceUnavailable:
		resp.Body.Close()
		return nil, errBusy
	default:
		resp.Body.Close()
		return nil, fmt.Errorf("peer answered %s", resp.Status)
	}
	id, addr := p.ID, p.AddrPort()
	var minRate int64
	if complete {
		// A holder sends at LAN speed; a downloader only as fast as its
		// own source, which the stall rule alone watches.
		minRate = n.cfg.HolderMinRate
	}
	return &fill.Stream{
		MinRate: minRate,
		Body:    resp.Body,
		From:    "peer " + id.String(),
		Size:    size,
		Hold:    true, // a peer's bytes reach clients only once they verify
		Blame: func(reason error) {
			if errors.Is(reason, fill.ErrStalled) {
				s.slowed = true
				n.table.MarkBad(id, addr, slowPeerPause)
				n.log.Info("peer too slow; going on from another for now", slog.String("peer", id.String()),
					slog.String("digest", s.d.String()), slog.Duration("pause", slowPeerPause), slog.Any("why", reason))
				return
			}
			if errors.Is(reason, cachestore.ErrDigestMismatch) {
				// Its copy may have rotted: tell it, so it rechecks.
				n.send(Message{Type: MsgBadBlob, To: id, Digest: s.d}, addr)
			}
			n.table.MarkBad(id, addr, badPeerPause)
			n.log.Warn("peer blamed; not asking it for 10m", slog.String("peer", id.String()),
				slog.String("digest", s.d.String()), slog.Any("why", reason))
		},
	}, nil
}

// pickWeighted chooses at random, each peer weighted by its priority.
func pickWeighted(ps []Peer) int {
	weights := make([]int64, len(ps))
	for i, p := range ps {
		weights[i] = int64(max(p.Priority, 1))
	}
	return pickBy(weights)
}

// elect announces that this node wants d, collects the others' wants for
// the election window, and computes the same winner every node computes.
// It returns a peer to fetch from: one that has it, or a live downloader.
// When this node wins, it heartbeats and returns ErrNoPeer (fetch it
// yourself). Heartbeats that stop for three intervals drop the winner and
// elect again among the rest.
func (s *Source) elect(ctx context.Context) (p Peer, complete bool, err error) {
	n := s.n
	d := s.d
	if !s.electing {
		s.electing = true
		want := Message{Type: MsgWant, Digest: d, Total: s.size}
		me := n.self(want)
		n.updateFor(d, true, func(e *election) { e.wants[n.cfg.ID] = me })
		n.sendAll(want)
		s.deadline = n.now().Add(n.cfg.MaxWait)
		s.windowEnd = time.After(n.electionWindow())
	}
	for {
		snap, changed := n.snapshot(d)
		// Anyone who has it, or is already downloading it, beats an election.
		if p, complete, ok := s.holder(snap); ok {
			return p, complete, nil
		}
		if s.decided {
			last := snap.beatAt[s.winner]
			if last.IsZero() {
				last = s.decidedAt
			}
			// Quiet, or failed us since (a downloader that answers every
			// request "busy"): heartbeats it may still send do not make it
			// worth waiting for.
			quiet := n.now().Sub(last) > n.quietAfter()
			if failed := s.winner != n.cfg.ID && !n.table.Good(s.winner); quiet || failed {
				n.log.Info("elected downloader went quiet or failed; electing again", slog.String("digest", d.String()), slog.String("was", s.winner.String()))
				w := s.winner
				n.update(d, func(e *election) { e.dead[w] = true; delete(e.wants, w) })
				s.decided = false
				continue
			}
		}
		if !s.decided {
			// A live downloader is the winner, whatever the wants say: it
			// may have taken the download without an election (every peer
			// said no), and being busy (its upload slots full) it cannot
			// be followed at once. Waiting for its next heartbeat beats a
			// second download.
			if w, ok := s.liveDownloader(snap); ok {
				s.winner, s.decided, s.decidedAt = w, true, n.now()
				if s.electedAt.IsZero() {
					s.electedAt = s.decidedAt
				}
				n.log.Debug("following the downloader", slog.String("digest", d.String()), slog.String("downloader", w.String()))
			}
		}
		if !s.decided && s.windowEnd != nil && s.everyoneHeard(snap) {
			// Every peer has said it wants the blob, or that it does not:
			// the window has nothing more to collect.
			s.windowEnd = nil
		}
		if !s.decided && s.windowEnd == nil {
			w, ok := computeWinner(snap, s.size, n.cfg.SpaceAware)
			if !ok {
				return Peer{}, false, fmt.Errorf("%w: no wanting peer has room for it", ErrNoPeer)
			}
			s.winner, s.decided, s.decidedAt = w, true, n.now()
			if s.electedAt.IsZero() {
				s.electedAt = s.decidedAt
			}
			if w == n.cfg.ID {
				n.startBeats(d, s.size, s.progress, false)
				return Peer{}, false, fmt.Errorf("%w: this node was elected to download it", ErrNoPeer)
			}
			n.log.Debug("waiting for the elected downloader", slog.String("digest", d.String()), slog.String("winner", w.String()))
		}
		if n.now().After(s.deadline) {
			return Peer{}, false, fmt.Errorf("%w: no peer delivered within %s", ErrNoPeer, n.cfg.MaxWait)
		}
		select {
		case <-ctx.Done():
			return Peer{}, false, ctx.Err()
		case <-s.windowEnd:
			s.windowEnd = nil
		case <-changed:
		case <-time.After(n.cfg.Heartbeat):
		}
	}
}

// everyoneHeard says whether every peer a question waits for has either
// sent its want or answered that it neither has nor wants the blob.
func (s *Source) everyoneHeard(snap election) bool {
	for id := range s.n.askable() {
		if _, ok := snap.wants[id]; !ok && !s.declined[id] {
			return false
		}
	}
	return true
}

// liveDownloader is the node (not this one, not a relay) whose heartbeat
// for d is the freshest and not yet three intervals old.
func (s *Source) liveDownloader(snap election) (NodeID, bool) {
	n := s.n
	var best NodeID
	var bestAt time.Time
	for id, at := range snap.beatAt {
		// A relay is no downloader: its bytes come from one.
		if snap.dead[id] || id == n.cfg.ID || n.now().Sub(at) > n.quietAfter() || !n.table.Good(id) || snap.beats[id].Relay {
			continue
		}
		if at.After(bestAt) {
			best, bestAt = id, at
		}
	}
	return best, !bestAt.IsZero()
}

// holder picks a node that has d and was not tried yet, or else a live
// downloader with a heartbeat newer than its last try, weighted by
// priority, progress and free upload slots. A node that is itself
// downloading or relaying d never takes a relay: its source could be this
// node, and the two would wait on each other.
func (s *Source) holder(snap election) (p Peer, complete, ok bool) {
	n := s.n
	var cands []Peer
	for id := range snap.haves {
		if p, ok := n.table.Get(id); ok && n.table.Good(id) && !p.Passive && !s.triedHave[id] {
			cands = append(cands, p)
		}
	}
	if len(cands) > 0 {
		p := cands[pickWeighted(cands)]
		s.triedHave[p.ID] = true
		return p, true, true
	}
	beating, _ := n.beatingAs(s.d)
	var weights []int64
	for id, at := range snap.beatAt {
		if snap.dead[id] || n.now().Sub(at) > n.quietAfter() || id == n.cfg.ID || !at.After(s.triedBeat[id]) {
			continue
		}
		m := snap.beats[id]
		if beating && m.Relay {
			continue
		}
		p, ok := n.table.Get(id)
		if !ok || !n.table.Good(id) {
			continue
		}
		cands = append(cands, p)
		weights = append(weights, downloaderWeight(p, m))
	}
	if len(cands) == 0 {
		return Peer{}, false, false
	}
	p = cands[pickBy(weights)]
	s.triedBeat[p.ID] = snap.beatAt[p.ID]
	return p, false, true
}

// downloaderWeight ranks a downloader as a source: its priority, times
// one to four by how far it is (it has more to give at once), times four
// when its last heartbeat had a free upload slot (else it may answer
// busy).
func downloaderWeight(p Peer, m Message) int64 {
	w := int64(max(p.Priority, 1)) * 4
	if m.Total > 0 {
		w += int64(max(p.Priority, 1)) * 12 * min(m.Done, m.Total) / m.Total
	}
	if m.FreeSlots > 0 {
		w *= 4
	}
	return w
}

// pickBy chooses an index at random, weighted.
func pickBy(weights []int64) int {
	var total int64
	for _, w := range weights {
		total += max(w, 1)
	}
	r := rand.Int64N(total)
	for i, w := range weights {
		r -= max(w, 1)
		if r < 0 {
			return i
		}
	}
	return len(weights) - 1
}
