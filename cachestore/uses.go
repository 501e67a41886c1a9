package cachestore

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Use counts: a hit counts one use of its blob (the eviction's LFU score
// and `warren cache ls`). Writing each to the index made every hit take a
// lock and wait for a Badger commit, the largest cost of a small hit after
// the syscalls (pprof of BenchmarkServeHitSmall: touchBlob 10% of CPU,
// Badger's write loop 7.5%). Counts are kept in memory and written in
// batches: every usesFlushEvery from Run, before eviction and listings
// need them exact, and at Close. Stat and listings add what is pending, so
// readers never see a count go back.

// usesFlushEvery is how often pending use counts reach the index. A crash
// loses at most this much of them: counts steer eviction, nothing more.
const usesFlushEvery = 2 * time.Second

// usesMaxPending bounds the memory of pending counts (about 100 bytes
// each): past it the hit that adds one more writes the batch itself.
const usesMaxPending = 1 << 14

// usesBatch bounds one index transaction of a flush.
const usesBatch = 1000

type pendingUse struct {
	hits int64
	last time.Time
}

// uses is the store's pending use counts.
type uses struct {
	mu      sync.Mutex
	pending map[Digest]pendingUse
}

// countUse records one use of d, an indexed blob, now; bi (as read from
// the index, with earlier pending uses) is returned with it added.
func (s *Store) countUse(bi BlobInfo) BlobInfo {
	now := s.now()
	s.uses.mu.Lock()
	if s.uses.pending == nil {
		s.uses.pending = map[Digest]pendingUse{}
	}
	u := s.uses.pending[bi.Digest]
	u.hits++
	u.last = now
	s.uses.pending[bi.Digest] = u
	full := len(s.uses.pending) >= usesMaxPending
	s.uses.mu.Unlock()
	bi.Hits++
	bi.LastUsed = now
	if full {
		if err := s.flushUses(); err != nil {
			s.log.Warn("could not write use counts to the index", slog.Any("err", err))
		}
	}
	return bi
}

// withPending adds d's pending uses to bi, read from the index.
func (s *Store) withPending(bi BlobInfo) BlobInfo {
	s.uses.mu.Lock()
	u, ok := s.uses.pending[bi.Digest]
	s.uses.mu.Unlock()
	if ok {
		bi.Hits += u.hits
		if u.last.After(bi.LastUsed) {
			bi.LastUsed = u.last
		}
	}
	return bi
}

// forgetUses drops d's pending uses (its blob is gone).
func (s *Store) forgetUses(d Digest) {
	s.uses.mu.Lock()
	delete(s.uses.pending, d)
	s.uses.mu.Unlock()
}

// flushUses writes the pending use counts to the index, in batches. On a
// disk too full for index writes they are dropped: a use not counted beats
// a full disk, and serving goes on.
func (s *Store) flushUses() error {
	s.uses.mu.Lock()
	pending := s.uses.pending
	s.uses.pending = nil
	s.uses.mu.Unlock()
	if len(pending) == 0 {
		return nil
	}
	if s.readOnly || s.indexRoom() != nil {
		return nil
	}
	s.blobMu.Lock()
	defer s.blobMu.Unlock()
	batch := make([]Digest, 0, min(len(pending), usesBatch))
	write := func() error {
		err := s.db.Update(func(txn *badger.Txn) error {
			for _, d := range batch {
				key := []byte(prefixBlob + d.String())
				it, err := txn.Get(key)
				if errors.Is(err, badger.ErrKeyNotFound) {
					continue // dropped meanwhile
				}
				if err != nil {
					return err
				}
				var bi BlobInfo
				if err := it.Value(func(v []byte) error { return json.Unmarshal(v, &bi) }); err != nil {
					continue // a damaged entry is the scrub's and recovery's to mend
				}
				u := pending[d]
				bi.Hits += u.hits
				if u.last.After(bi.LastUsed) {
					bi.LastUsed = u.last
				}
				b, err := json.Marshal(bi)
				if err != nil {
					return err
				}
				if err := txn.Set(key, b); err != nil {
					return err
				}
			}
			return nil
		})
		batch = batch[:0]
		return err
	}
	for d := range pending {
		batch = append(batch, d)
		if len(batch) == usesBatch {
			if err := write(); err != nil {
				return fmt.Errorf("write use counts: %w", err)
			}
		}
	}
	if len(batch) > 0 {
		if err := write(); err != nil {
			return fmt.Errorf("write use counts: %w", err)
		}
	}
	return nil
}
