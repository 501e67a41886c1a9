package hub

import (
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Defaults of the queue (max_requesters, retry_delay).
const (
	DefaultMaxRequesters = 5
	DefaultRetryDelay    = 90 * time.Second
)

// Queue bounds how many requesters stream one artifact while the hub is
// still fetching it. The first requester of each LAN streams it: its
// peers cannot give it to it. A later one of the same LAN that takes
// hints (a node that told the hub its LAN) is told which of its peers is
// receiving it, and takes it from that peer (Dragonfly's scheduler picks
// parents the same way, from what each peer already has). Any other
// streams while fewer than max do; the rest are told to come back after
// the retry delay, by when the LAN's first requesters hold it and serve
// their peers. Once stored, an artifact is served to everyone.
type Queue struct {
	max   int
	delay time.Duration

	mu      sync.Mutex // guards byKey, held, refused, hinted and peak
	byKey   map[string]*transfer
	held    map[string]*received
	refused int64
	hinted  int64
	peak    int // the most requesters that streamed one transfer at once
}

// received is who received an artifact whose transfer has ended: by LAN,
// the peers that streamed it from the hub or were told which peers
// receive it, named to the LAN's later requesters until the entry
// expires (Kraken's tracker answers so for what its agents hold).
type received struct {
	until time.Time
	byLAN map[string][]netip.AddrPort
	named map[netip.AddrPort]int
}

// heldFor is how long the hub names the peers that received an artifact
// once its transfer ended; maxHeld bounds the artifacts it remembers so,
// maxHeldPerLAN the peers of one LAN and maxLANsPerArtifact the LANs of
// one artifact, in a transfer and after it (what requesters declare is
// theirs to choose: a token holder naming a new port or LAN with every
// request grew the lists without end, and each answer sorted them under
// the queue's one lock).
const (
	heldFor            = 10 * time.Minute
	maxHeld            = 4096
	maxHeldPerLAN      = 64
	maxLANsPerArtifact = 64
)

// roomFor says whether byLAN may take one more peer of lan.
func roomFor(byLAN map[string][]netip.AddrPort, lan string) bool {
	ps, known := byLAN[lan]
	return len(ps) < maxHeldPerLAN && (known || len(byLAN) < maxLANsPerArtifact)
}

type transfer struct {
	streaming int // requesters streaming it now
	waiting   int // requesters told to wait during this transfer
	hinted    int // requesters told which LAN peer receives it
	began     time.Time
	// byLAN are the requesters streaming it, by LAN.
	byLAN map[string]int
	// relays are, by LAN, the requesters told which peers receive it that
	// serve their LAN too: they receive it from those peers, and are named
	// to the LAN's later requesters in their turn. named counts how often
	// each streaming peer or relay was named first.
	relays map[string][]netip.AddrPort
	named  map[netip.AddrPort]int
	// streamed are, by LAN, the requesters that stream it or streamed it
	// and serve their LAN, where it fetches blobs from them.
	streamed map[string][]netip.AddrPort
}

// Requester is who asks for an artifact in transfer, as its request says
// (see RequesterOf).
type Requester struct {
	// LAN names the requesters that can take blobs from each other.
	LAN string
	// Peer is where its LAN peers fetch blobs from it; invalid when it
	// serves none.
	Peer netip.AddrPort
	// Hints: it takes "take it from this LAN peer" for an answer.
	Hints bool
}

// maxHinted is how many of a LAN's peers receiving an artifact an answer
// names.
const maxHinted = 4

// NewQueue lets max requesters (at least 1) stream each transfer beyond
// each LAN's first, and tells the rest to retry after delay.
func NewQueue(maxRequesters int, delay time.Duration) *Queue {
	return &Queue{max: max(maxRequesters, 1), delay: delay, byKey: map[string]*transfer{}, held: map[string]*received{}}
}

// Delay is the retry delay told to those who wait.
func (q *Queue) Delay() time.Duration { return q.delay }

// Max is max_requesters.
func (q *Queue) Max() int { return q.max }

// Admission is the queue's answer to one requester.
type Admission struct {
	// OK: stream it, and call Leave once done.
	OK    bool
	Leave func()
	// Peers, when not OK, are LAN peers of the requester receiving it:
	// take it from them.
	Peers []netip.AddrPort
	// Position is the requester's place among those told to wait during
	// this transfer (0 when told peers), Streaming how many stream it.
	Position, Streaming int
}

// Enter admits one requester of the transfer key, tells it which of its
// LAN peers receive it, or tells it to wait.
func (q *Queue) Enter(key string, who Requester) Admission {
	q.mu.Lock()
	defer q.mu.Unlock()
	t := q.byKey[key]
	if t == nil {
		t = &transfer{began: time.Now(), byLAN: map[string]int{},
			relays: map[string][]netip.AddrPort{}, named: map[netip.AddrPort]int{}, streamed: map[string][]netip.AddrPort{}}
		q.byKey[key] = t
		delete(q.held, key) // fetched again: who received it before may not hold it
	}
	switch {
	case who.Hints && len(t.streamed[who.LAN])+len(t.relays[who.LAN]) > 0:
		// Peers of its LAN receive it, or have it whole (they streamed
		// it and left while others still stream it).
		t.hinted++
		q.hinted++
		return Admission{Peers: t.hint(who), Streaming: t.streaming}
	case t.byLAN[who.LAN] == 0:
		// The first of its LAN: nobody there can give it the artifact.
	case t.streaming >= q.max:
		t.waiting++
		q.refused++
		return Admission{Position: t.waiting, Streaming: t.streaming}
	}
	t.streaming++
	t.byLAN[who.LAN]++
	if who.Peer.IsValid() {
		t.streamed[who.LAN] = append(t.streamed[who.LAN], who.Peer)
	}
	q.peak = max(q.peak, t.streaming)
	var once sync.Once
	return Admission{OK: true, Streaming: t.streaming, Leave: func() {
		once.Do(func() {
			q.mu.Lock()
			defer q.mu.Unlock()
			t.streaming--
			if t.byLAN[who.LAN]--; t.byLAN[who.LAN] <= 0 {
				delete(t.byLAN, who.LAN)
			}
			if t.streaming == 0 {
				delete(q.byKey, key)
				q.remember(key, t)
			}
		})
	}}
}

// hint names up to maxHinted of who's LAN peers that receive the
// transfer, those named first least often first (the peers streaming it
// from the hub before relays on a tie), and makes who, when it serves its
// LAN, a relay named to later requesters. Each peer serves a few uploads
// at once: naming the streaming peer to the whole LAN would have most of
// it told "busy", while the relays spread it as a tree (Dragonfly's
// scheduler picks parents among the peers that already receive a piece).
func (t *transfer) hint(who Requester) []netip.AddrPort {
	cands := append(slices.Clone(t.streamed[who.LAN]), t.relays[who.LAN]...)
	slices.SortStableFunc(cands, func(a, b netip.AddrPort) int { return t.named[a] - t.named[b] })
	cands = slices.DeleteFunc(cands, func(p netip.AddrPort) bool { return p == who.Peer })
	cands = cands[:min(len(cands), maxHinted)]
	if len(cands) > 0 {
		t.named[cands[0]]++
	}
	if who.Peer.IsValid() && roomFor(t.relays, who.LAN) && !slices.Contains(t.relays[who.LAN], who.Peer) && !slices.Contains(t.streamed[who.LAN], who.Peer) {
		t.relays[who.LAN] = append(t.relays[who.LAN], who.Peer)
	}
	return cands
}

// remember keeps who received the transfer t of key, now ended, for
// Holders; q.mu is held.
func (q *Queue) remember(key string, t *transfer) {
	byLAN := map[string][]netip.AddrPort{}
	if r := q.held[key]; r != nil { // served since, as stored: Holders
		maps.Copy(byLAN, r.byLAN)
	}
	for _, from := range []map[string][]netip.AddrPort{t.streamed, t.relays} {
		for lan, ps := range from {
			for _, p := range ps {
				if roomFor(byLAN, lan) && !slices.Contains(byLAN[lan], p) {
					byLAN[lan] = append(byLAN[lan], p)
				}
			}
		}
	}
	if len(byLAN) == 0 {
		return
	}
	now := time.Now()
	q.makeRoom(now)
	q.held[key] = &received{until: now.Add(heldFor), byLAN: byLAN, named: t.named}
}

// makeRoom forgets the expired entries of held when it is full, and the
// oldest should none be; q.mu is held.
func (q *Queue) makeRoom(now time.Time) {
	if len(q.held) < maxHeld {
		return
	}
	var oldest string
	for k, r := range q.held {
		if now.After(r.until) {
			delete(q.held, k)
		} else if oldest == "" || r.until.Before(q.held[oldest].until) {
			oldest = k
		}
	}
	if len(q.held) >= maxHeld {
		delete(q.held, oldest)
	}
}

// Holders is asked by a requester of the stored artifact of key: it names
// up to maxHinted of who's LAN peers that received it (in a transfer, or
// since it was stored), the least named first, or none (for a requester
// that takes no hints, of a LAN that did not receive it lately). Either
// way who, when it serves its LAN, is named to the LAN's later
// requesters from now on: it takes the artifact from those peers, or
// from the hub.
func (q *Queue) Holders(key string, who Requester) []netip.AddrPort {
	if !who.Hints {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if t := q.byKey[key]; t != nil {
		// Stored while some still stream it: the transfer knows who of
		// the LAN received it.
		peers := t.hint(who)
		if len(peers) > 0 {
			t.hinted++
			q.hinted++
		}
		return peers
	}
	now := time.Now()
	r := q.held[key]
	if r != nil && now.After(r.until) {
		delete(q.held, key)
		r = nil
	}
	var cands []netip.AddrPort
	if r != nil {
		cands = slices.Clone(r.byLAN[who.LAN])
		slices.SortStableFunc(cands, func(a, b netip.AddrPort) int { return r.named[a] - r.named[b] })
		cands = slices.DeleteFunc(cands, func(p netip.AddrPort) bool { return p == who.Peer })
		cands = cands[:min(len(cands), maxHinted)]
		if len(cands) > 0 {
			r.named[cands[0]]++
			q.hinted++
		}
	}
	if !who.Peer.IsValid() {
		return cands
	}
	if r == nil {
		q.makeRoom(now)
		r = &received{byLAN: map[string][]netip.AddrPort{}, named: map[netip.AddrPort]int{}}
		q.held[key] = r
	}
	r.until = now.Add(heldFor)
	if ps := r.byLAN[who.LAN]; roomFor(r.byLAN, who.LAN) && !slices.Contains(ps, who.Peer) {
		r.byLAN[who.LAN] = append(ps, who.Peer)
	}
	return cands
}

// Wait is how long a requester told to wait during the transfer key
// should wait: until the transfer should be done, at the pace it has kept
// so far (done of total bytes since its first requester came), at least a
// second and at most the retry delay. A transfer whose pace is not known
// yet is given a few seconds. Those told to wait are mostly other LANs'
// first requesters, whose peers cannot give it to them: a fixed delay
// would hold them long after the hub stored it.
func (q *Queue) Wait(key string, done, total int64) time.Duration {
	q.mu.Lock()
	t := q.byKey[key]
	q.mu.Unlock()
	var began time.Time
	if t != nil {
		began = t.began
	}
	return estimateWait(began, time.Now(), done, total, q.delay)
}

// unknownPaceWait is the wait told while a transfer's pace is unknown.
const unknownPaceWait = 3 * time.Second

func estimateWait(began, now time.Time, done, total int64, most time.Duration) time.Duration {
	wait := unknownPaceWait
	if elapsed := now.Sub(began); !began.IsZero() && done > 0 && total > 0 && elapsed > 0 {
		wait = time.Duration(float64(elapsed) * float64(max(total-done, 0)) / float64(done))
	}
	return min(max(wait, minWait), most)
}

// minWait is the shortest wait told: asked again sooner, the hub would be
// answering its waiters rather than serving.
const minWait = 200 * time.Millisecond

// QueueStat is one transfer's queue, for the operator.
type QueueStat struct {
	Key       string
	Streaming int
	Waiting   int
	// Hinted are those told which LAN peer receives it; LANs the LANs
	// streaming it.
	Hinted, LANs int
}

// Peak is the most requesters that streamed one transfer at once.
func (q *Queue) Peak() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.peak
}

// Totals are the requesters streaming and told to wait, over the
// transfers in progress.
func (q *Queue) Totals() (streaming, waiting int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, t := range q.byKey {
		streaming += t.streaming
		waiting += t.waiting
	}
	return streaming, waiting
}

// Stats lists the transfers with requesters, and how many were ever told
// to wait.
func (q *Queue) Stats() (transfers []QueueStat, refused int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for k, t := range q.byKey {
		transfers = append(transfers, QueueStat{Key: RedactScope(k), Streaming: t.streaming, Waiting: t.waiting, Hinted: t.hinted, LANs: len(t.byLAN)})
	}
	return transfers, q.refused
}

// Hinted is how many requesters were told which LAN peer receives what
// they asked for.
func (q *Queue) Hinted() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.hinted
}
