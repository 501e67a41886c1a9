package hub

import (
	"sync"
	"time"
)

// Defaults of the queue (max_requesters, retry_delay).
const (
	DefaultMaxRequesters = 5
	DefaultRetryDelay    = 90 * time.Second
)

// Queue bounds how many requesters stream one artifact while the hub is
// still fetching it: the first max stream it as it arrives; the rest are
// told to come back after the retry delay, by when the LAN's first
// requesters hold it and serve their peers. Once stored, an artifact is
// served to everyone.
type Queue struct {
	max   int
	delay time.Duration

	mu      sync.Mutex // guards byKey, refused and peak
	byKey   map[string]*transfer
	refused int64
	peak    int // the most requesters that streamed one transfer at once
}

type transfer struct {
	streaming int // requesters streaming it now
	waiting   int // requesters told to wait during this transfer
	began     time.Time
}

// NewQueue lets max requesters (at least 1) stream each transfer and tells
// the rest to retry after delay.
func NewQueue(maxRequesters int, delay time.Duration) *Queue {
	return &Queue{max: max(maxRequesters, 1), delay: delay, byKey: map[string]*transfer{}}
}

// Delay is the retry delay told to those who wait.
func (q *Queue) Delay() time.Duration { return q.delay }

// Max is max_requesters.
func (q *Queue) Max() int { return q.max }

// Enter admits one requester of the transfer key. When admitted it must
// call leave once done; otherwise position is its place among those told
// to wait during this transfer, and streaming how many are streaming it.
func (q *Queue) Enter(key string) (leave func(), position, streaming int, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	t := q.byKey[key]
	if t == nil {
		t = &transfer{began: time.Now()}
		q.byKey[key] = t
	}
	if t.streaming >= q.max {
		t.waiting++
		q.refused++
		return nil, t.waiting, t.streaming, false
	}
	t.streaming++
	q.peak = max(q.peak, t.streaming)
	var once sync.Once
	return func() {
		once.Do(func() {
			q.mu.Lock()
			defer q.mu.Unlock()
			t.streaming--
			if t.streaming == 0 {
				delete(q.byKey, key)
			}
		})
	}, 0, t.streaming, true
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
		transfers = append(transfers, QueueStat{Key: RedactScope(k), Streaming: t.streaming, Waiting: t.waiting})
	}
	return transfers, q.refused
}
