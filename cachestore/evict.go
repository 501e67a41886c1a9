package cachestore

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Eviction: LFU with aging. A blob's score is (hits+1) halved for every
// HalfLife it has gone unused; when the cache is over MaxBytes or the disk
// under MinFreeBytes, the lowest scores go first. Blobs younger than MinAge
// stay, blobs unused for MaxAge go regardless, and a blob with an open
// reader is never removed.

// EvictReport says what one eviction run did.
type EvictReport struct {
	Blobs      int   `json:"blobs"` // blobs in the cache before
	Bytes      int64 `json:"bytes"` // their bytes before
	Evicted    int   `json:"evicted"`
	FreedBytes int64 `json:"freed_bytes"`
}

// Evictions counts the blobs evicted since Open.
func (s *Store) Evictions() int64 { return s.evictions.Load() }

// MaxBytes is the cache_max limit (0: none).
func (s *Store) MaxBytes() int64 { return s.limits.MaxBytes }

// Usage is the bytes and number of blobs the index holds: only warren's
// own files. It is kept as blobs come and go, so it costs nothing.
func (s *Store) Usage() (int64, int, error) {
	return s.usedBytes.Load(), int(s.usedBlobs.Load()), nil
}

// blobs lists every indexed blob.
func (s *Store) blobs() ([]BlobInfo, error) {
	var out []BlobInfo
	err := s.scanBlobs("", func(bi BlobInfo) bool { out = append(out, bi); return true })
	return out, err
}

// blobsAfter lists at most n indexed blobs whose digest (as a string)
// sorts after the given one ("" for the first), in index order.
func (s *Store) blobsAfter(after string, n int) ([]BlobInfo, error) {
	var out []BlobInfo
	err := s.scanBlobs(after, func(bi BlobInfo) bool { out = append(out, bi); return len(out) < n })
	return out, err
}

// scanBlobs calls fn with each indexed blob after the given digest, in
// index order, while fn says go on.
func (s *Store) scanBlobs(after string, fn func(BlobInfo) bool) error {
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100, Prefix: []byte(prefixBlob)})
		defer it.Close()
		for it.Seek([]byte(prefixBlob + after)); it.Valid(); it.Next() {
			key := string(it.Item().Key())
			if key == prefixBlob+after {
				continue
			}
			d, err := ParseDigest(strings.TrimPrefix(key, prefixBlob))
			if err != nil {
				continue
			}
			var bi BlobInfo
			if err := it.Item().Value(func(b []byte) error { return json.Unmarshal(b, &bi) }); err != nil {
				continue
			}
			bi.Digest = d
			if !fn(s.withPending(bi)) {
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list blobs: %w", err)
	}
	return nil
}

// score is the LFU-with-aging value: higher stays longer.
func (s *Store) score(bi BlobInfo, now time.Time) float64 {
	idle := now.Sub(bi.LastUsed)
	if idle < 0 {
		idle = 0
	}
	return float64(bi.Hits+1) * math.Exp2(-float64(idle)/float64(s.limits.HalfLife))
}

// Evict removes blobs until the limits hold: first those unused for MaxAge,
// then the lowest scores while the cache is over MaxBytes or the disk under
// MinFreeBytes.
func (s *Store) Evict() (EvictReport, error) {
	s.evictMu.Lock()
	defer s.evictMu.Unlock()
	if s.readOnly {
		return EvictReport{}, nil // a read-only index cannot forget what it drops
	}
	infos, err := s.blobs()
	if err != nil {
		return EvictReport{}, err
	}
	now := s.now()
	var rep EvictReport
	var total int64
	for _, bi := range infos {
		total += bi.Size
	}
	rep.Blobs, rep.Bytes = len(infos), total
	evictable := func(bi BlobInfo) bool {
		return now.Sub(bi.Added) >= s.limits.MinAge && !s.isOpen(bi.Digest) && !s.Pinned(bi.Digest)
	}
	var keep []BlobInfo
	for _, bi := range infos {
		if s.limits.MaxAge > 0 && now.Sub(bi.LastUsed) > s.limits.MaxAge && evictable(bi) {
			if s.remove(bi, "unused for longer than cache_max_days") {
				rep.Evicted++
				rep.FreedBytes += bi.Size
				total -= bi.Size
			}
			continue
		}
		keep = append(keep, bi)
	}
	need := int64(0)
	if s.limits.MaxBytes > 0 && total > s.limits.MaxBytes {
		need = total - s.limits.MaxBytes
	}
	if short := s.minFreeBytes - s.fsFree(); short > need {
		need = short
	}
	if need > 0 {
		slices.SortFunc(keep, func(a, b BlobInfo) int { return cmpFloat(s.score(a, now), s.score(b, now)) })
		for _, bi := range keep {
			if need <= 0 {
				break
			}
			if !evictable(bi) {
				continue
			}
			if s.remove(bi, "cache over its limits") {
				rep.Evicted++
				rep.FreedBytes += bi.Size
				need -= bi.Size
			}
		}
		if need > 0 {
			s.log.Warn("cache still over its limits: what is left is new (cache_min_days) or in use",
				slog.Int64("bytes_over", need))
		}
	}
	if rep.Evicted > 0 {
		s.log.Info("evicted blobs", slog.Int("count", rep.Evicted), slog.Int64("freed_bytes", rep.FreedBytes))
	}
	return rep, nil
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// remove deletes one blob, unless a reader opened it meanwhile.
func (s *Store) remove(bi BlobInfo, why string) bool {
	s.openMu.Lock()
	defer s.openMu.Unlock()
	if s.open[bi.Digest] > 0 {
		return false
	}
	if err := s.dropBlob(bi.Digest); err != nil {
		s.log.Warn("could not evict a blob", slog.String("digest", bi.Digest.String()), slog.Any("err", err))
		return false
	}
	s.evictions.Add(1)
	s.log.Debug("evicted", slog.String("digest", bi.Digest.String()), slog.Int64("bytes", bi.Size), slog.String("why", why))
	return true
}

func (s *Store) isOpen(d Digest) bool {
	s.openMu.Lock()
	defer s.openMu.Unlock()
	return s.open[d] > 0
}

// evictSoon asks the eviction loop for a run (after a fill), without
// waiting, when the cache is over a limit or the index's disk reserve is
// to be taken again. A run lists every blob: run after every fill, it made
// each miss cost time in proportion to the cache's size (40% of the CPU of
// a run of small misses into a cache of 2,000 blobs). Blobs unused for
// MaxAge go on the loop's timer.
func (s *Store) evictSoon() {
	if !s.overLimits() {
		return
	}
	select {
	case s.evictKick <- struct{}{}:
	default:
	}
}

// overLimits says, for the price of a statfs and a stat, whether an
// eviction run after a fill has anything to do.
func (s *Store) overLimits() bool {
	if s.readOnly {
		return false
	}
	if s.limits.MaxBytes > 0 && s.usedBytes.Load() > s.limits.MaxBytes {
		return true
	}
	free := s.fsFree()
	if free < s.minFreeBytes {
		return true
	}
	if _, err := os.Stat(s.reservePath()); err != nil {
		return free >= indexHeadroom+closeHeadroom // takeReserve can take it
	}
	return false
}

// evictLoop runs eviction every interval and after fills until ctx ends.
func (s *Store) evictLoop(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.evictKick:
		}
		if _, err := s.Evict(); err != nil {
			s.log.Warn("eviction failed", slog.Any("err", err))
		}
		if !s.readOnly {
			s.takeReserve() // again, once there is room
		}
	}
}
