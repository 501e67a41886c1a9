package cachestore

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"golang.org/x/time/rate"
)

// Bit rot is found two ways: a background scrub rehashes every blob at a
// bounded rate (ScrubRate), a pass at most once a day, so the whole cache
// is checked well within a week; and a blob a peer reports as wrong (or
// that anything else doubts) is rechecked at once. A blob that does not
// hash to its name is removed, loudly, and fetched again when asked for.

// scrubPassEvery is the least time between the starts of two passes.
const scrubPassEvery = 24 * time.Hour

// scrubBatch is how many blob records a pass reads from the index at once.
const scrubBatch = 256

// scrubRetryAfter is how long a bad blob that was being read waits before
// the next try to remove it.
const scrubRetryAfter = 10 * time.Second

// ScrubStats are the scrub's running totals.
type ScrubStats struct {
	Checked int64 // blobs rehashed
	Bytes   int64 // bytes rehashed
	Bad     int64 // blobs that failed and were removed
}

// Recheck asks for blob d to be rehashed soon (ahead of the scrub); it
// never blocks, and drops the request when the queue is full.
func (s *Store) Recheck(d Digest) {
	select {
	case s.recheck <- d:
	default:
	}
}

// Scrubbed returns the scrub's totals.
func (s *Store) Scrubbed() ScrubStats {
	return ScrubStats{Checked: s.scrubChecked.Load(), Bytes: s.scrubBytes.Load(), Bad: s.scrubBad.Load()}
}

// scrubLoop runs the scrub and the rechecks until ctx ends.
func (s *Store) scrubLoop(ctx context.Context) {
	var lim *rate.Limiter
	if s.scrubRate > 0 {
		lim = rate.NewLimiter(rate.Limit(s.scrubRate), int(min(s.scrubRate, 1<<20)))
	}
	var next time.Time // when the next pass may start
	// A pass walks the index a batch at a time from a cursor: the whole
	// list of a large cache is never held for the hours a pass takes.
	var queue []BlobInfo
	passing, cursor := false, ""
	s.scrubLater = map[Digest]time.Time{}
	for {
		now := s.now()
		for d, at := range s.scrubLater {
			if !now.Before(at) {
				delete(s.scrubLater, d)
				if bi, err := s.Stat(d); err == nil {
					s.scrubOne(ctx, bi, nil, "a recheck")
				}
			}
		}
		if lim != nil && !passing && !s.now().Before(next) {
			passing, cursor, next = true, "", s.now().Add(scrubPassEvery)
		}
		if passing && len(queue) == 0 {
			batch, err := s.blobsAfter(cursor, scrubBatch)
			if err != nil {
				s.log.Warn("scrub: list blobs", slog.Any("err", err))
			}
			if len(batch) == 0 {
				passing = false // the pass is done; the next starts at next
			} else {
				queue, cursor = batch, batch[len(batch)-1].Digest.String()
			}
		}
		var tick <-chan time.Time
		wake := time.Time{}
		if lim != nil {
			wake = next
		}
		for _, at := range s.scrubLater {
			if wake.IsZero() || at.Before(wake) {
				wake = at
			}
		}
		switch {
		case len(queue) > 0:
			tick = closedTime // work to do: go on at once
		case !wake.IsZero():
			tick = time.After(wake.Sub(s.now()))
		}
		select {
		case <-ctx.Done():
			return
		case d := <-s.recheck:
			if bi, err := s.Stat(d); err == nil {
				s.scrubOne(ctx, bi, nil, "a recheck")
			}
		case <-tick:
			if len(queue) > 0 {
				bi := queue[0]
				queue = queue[1:]
				s.scrubOne(ctx, bi, lim, "the background scrub")
			}
		}
	}
}

var closedTime = func() <-chan time.Time {
	c := make(chan time.Time)
	close(c)
	return c
}()

// scrubOne rehashes one blob (paced by lim when set) and removes it if its
// bytes are wrong.
func (s *Store) scrubOne(ctx context.Context, bi BlobInfo, lim *rate.Limiter, why string) {
	f, err := os.Open(s.pathOf(bi))
	if err != nil {
		return // gone meanwhile: nothing to check
	}
	defer f.Close()
	h := bi.Digest.NewHash()
	var src io.Reader = f
	if lim != nil {
		src = &pacedReader{ctx: ctx, r: f, lim: lim}
	}
	n, err := io.Copy(h, src)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("scrub: read blob", slog.String("digest", bi.Digest.String()), slog.Any("err", err))
		}
		return
	}
	s.scrubChecked.Add(1)
	s.scrubBytes.Add(n)
	if n == bi.Size && fmt.Sprintf("%x", h.Sum(nil)) == bi.Digest.Hex {
		return
	}
	if !s.remove(bi, "failed "+why) {
		// Being read now: try again once the readers are done.
		s.log.Warn("blob does not match its digest (bit rot?), but is being read; trying again shortly",
			slog.String("digest", bi.Digest.String()), slog.String("found_by", why))
		s.scrubLater[bi.Digest] = s.now().Add(scrubRetryAfter)
		return
	}
	s.scrubBad.Add(1)
	s.log.Error("blob does not match its digest (bit rot?); removed, it is fetched again when asked for",
		slog.String("digest", bi.Digest.String()), slog.String("found_by", why), slog.Int64("size", n), slog.Int64("index_size", bi.Size))
}

// pacedReader reads through a rate limiter, in chunks of at most its burst.
type pacedReader struct {
	ctx context.Context
	r   io.Reader
	lim *rate.Limiter
}

func (p *pacedReader) Read(b []byte) (int, error) {
	if burst := p.lim.Burst(); len(b) > burst {
		b = b[:burst]
	}
	n, err := p.r.Read(b)
	if n > 0 {
		if werr := p.lim.WaitN(p.ctx, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}
