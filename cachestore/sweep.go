package cachestore

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Learnt facts outlive nothing that listed them: each records its lister
// (the metadata file) and when it was learnt; each whole learn records its
// time per lister; SweepKnown drops a fact older than its lister's latest
// learn (the file no longer lists it), and every fact of a lister not
// learnt for maxIdle (the repository or suite is gone).

// Learnt records that the metadata file lister was learnt whole at (Unix
// seconds) from blob d: facts it listed before then and not since are
// stale, and a hit on d needs no learn again (LearntFrom).
func (s *Store) Learnt(lister uint64, at int64, d Digest) error {
	if err := s.indexRoom(); err != nil {
		return err
	}
	// The time first, as a uvarint (what the sweep reads), then the digest.
	v := binary.AppendUvarint(nil, uint64(max(at, 0)))
	v = append(v, d.String()...)
	err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(learnKey(lister), v) })
	if err != nil {
		return fmt.Errorf("record a learn: %w", err)
	}
	return nil
}

// LearntFrom is the blob lister's latest whole learn read (zero if none,
// or one recorded before the digest was).
func (s *Store) LearntFrom(lister uint64) (Digest, error) {
	var d Digest
	err := s.getWith(string(learnKey(lister)), func(v []byte) error {
		if _, n := binary.Uvarint(v); n > 0 && n < len(v) {
			d, _ = ParseDigest(string(v[n:]))
		}
		return nil
	})
	return d, err
}

// LearntAt is the time (Unix seconds) and the blob of lister's latest
// whole learn: a fact it listed is current when it was learnt at or after
// that time (SweepKnown drops the others).
func (s *Store) LearntAt(lister uint64) (int64, Digest, error) {
	var (
		at int64
		d  Digest
	)
	err := s.getWith(string(learnKey(lister)), func(v []byte) error {
		t, n := binary.Uvarint(v)
		if n > 0 {
			at = int64(t)
			if n < len(v) {
				d, _ = ParseDigest(string(v[n:]))
			}
		}
		return nil
	})
	return at, d, err
}

func learnKey(lister uint64) []byte {
	return []byte(prefixLearn + strconv.FormatUint(lister, 16))
}

// sweepBatch bounds the deletes in one index write.
const sweepBatch = 1024

// SweepKnown drops the facts no current metadata lists; it returns how
// many. now is Unix seconds; maxIdle how long a lister may go unlearnt.
func (s *Store) SweepKnown(ctx context.Context, now int64, maxIdle time.Duration) (int, error) {
	if s.indexRoom() != nil {
		return 0, nil // nothing is written on a nearly full disk
	}
	learnt := map[uint64]int64{}
	var goneListers [][]byte
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100, Prefix: []byte(prefixLearn)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			id, err := strconv.ParseUint(string(it.Item().Key()[len(prefixLearn):]), 16, 64)
			if err != nil {
				continue
			}
			_ = it.Item().Value(func(v []byte) error {
				at, n := binary.Uvarint(v)
				if n > 0 {
					learnt[id] = int64(at)
					if now-int64(at) > int64(maxIdle/time.Second) {
						goneListers = append(goneListers, it.Item().KeyCopy(nil))
					}
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sweep learnt hashes: %w", err)
	}
	idle := now - int64(maxIdle/time.Second)
	var stale [][]byte
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100, Prefix: []byte(prefixKnown)})
		defer it.Close()
		for it.Rewind(); it.Valid() && ctx.Err() == nil; it.Next() {
			var k Known
			if it.Item().Value(func(v []byte) error { return decodeKnown(v, &k) }) != nil || k.Lister == 0 {
				continue
			}
			last, ok := learnt[k.Lister]
			if ok && (k.Learnt < last || last < idle) {
				stale = append(stale, it.Item().KeyCopy(nil))
			}
		}
		return ctx.Err()
	})
	if err != nil {
		return 0, fmt.Errorf("sweep learnt hashes: %w", err)
	}
	defer s.known.changed()
	for keys := range slices.Chunk(append(stale, goneListers...), sweepBatch) {
		wb := s.db.NewWriteBatch()
		for _, k := range keys {
			if err := wb.Delete(k); err != nil {
				wb.Cancel()
				return 0, fmt.Errorf("sweep learnt hashes: %w", err)
			}
		}
		if err := wb.Flush(); err != nil {
			return 0, fmt.Errorf("sweep learnt hashes: %w", err)
		}
	}
	if len(stale) > 0 {
		s.log.Info("dropped learnt hashes that no current metadata lists", slog.Int("count", len(stale)), slog.Int("listers_gone", len(goneListers)))
	}
	return len(stale), nil
}
