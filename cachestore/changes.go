package cachestore

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// The change log: what a hub stored and deleted, in order, for the hubs
// that replicate from it (package hub serves it as its change feed). Each
// key keeps only its latest entry, so the log is as long as what is held
// plus the deletions, however often index files change.

// Change is one entry of the change log.
type Change struct {
	Seq uint64 `json:"seq"`
	// Delete: the blob was deleted here (a tombstone), not stored.
	Delete bool `json:"delete,omitempty"`
	// Key is what names the bytes in the index: a canonical URL, or a feed
	// call's normal form.
	Key    string `json:"key"`
	Digest Digest `json:"digest"`
	Size   int64  `json:"size"`
	// Kind is what the ecosystem calls the file (release, index, package...).
	Kind string `json:"kind,omitempty"`
	// Cached is set for a file kept by URL (no metadata names its hash):
	// its validators and headers, as the URL cache holds them.
	Cached *Cached   `json:"cached,omitempty"`
	At     time.Time `json:"at"`
}

const (
	prefixChange    = "x/"  // x/<seq, 8 bytes big-endian> -> Change
	prefixChangeKey = "xk/" // xk/<key> -> seq of its latest entry
	prefixChangeDig = "xd/" // xd/<digest>/<key>: key's latest entry stores digest
	prefixTomb      = "xt/" // xt/<digest>: deleted here; replication does not bring it back
	keyChangeSeq    = "xs"  // the last seq given
	keyChangeLog    = "xi"  // the log's identity (ChangeLogID)
)

// TombstoneTTL is how long the change log keeps a deletion (and the
// tombstone that keeps a pull from bringing the blob back): a hub that
// pulls less often than this misses it. Compacting drops older ones.
const TombstoneTTL = 30 * 24 * time.Hour

// ChangeLogID names this change log, made with its first read and kept in
// the index: a hub that pulls from this one keeps it with its cursor, and
// a rebuilt log (a new index: its numbers start again) has another one,
// so the puller starts over instead of skipping the new log's first
// entries.
func (s *Store) ChangeLogID() (string, error) {
	var id string
	err := s.getWith(keyChangeLog, func(b []byte) error { id = string(b); return nil })
	if err == nil && id != "" {
		return id, nil
	}
	if err != nil && !errors.Is(err, ErrNotFound) {
		return "", err
	}
	if s.readOnly {
		return "", fmt.Errorf("make the change log's identity: %w", s.indexRoom())
	}
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("make the change log's identity: %w", err)
	}
	fresh := hex.EncodeToString(b[:])
	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	err = s.db.Update(func(txn *badger.Txn) error {
		if it, err := txn.Get([]byte(keyChangeLog)); err == nil && it.ValueSize() > 0 {
			return it.Value(func(v []byte) error { id = string(v); return nil })
		}
		id = fresh
		return txn.Set([]byte(keyChangeLog), []byte(fresh))
	})
	if err != nil {
		return "", fmt.Errorf("record the change log's identity: %w", err)
	}
	return id, nil
}

// CompactChanges drops the deletions recorded before cutoff from the log,
// with their tombstones (TombstoneTTL); it returns how many.
func (s *Store) CompactChanges(cutoff time.Time) (int, error) {
	if s.readOnly {
		return 0, nil
	}
	type old struct {
		seq uint64
		c   Change
	}
	var drop []old
	// A digest's tombstone stays while a deletion that names it stays
	// (another URL of the same blob, deleted later).
	keep := map[Digest]bool{}
	// Held throughout: a deletion recorded between the look and the
	// drop would lose its tombstone.
	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100, Prefix: []byte(prefixChange)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var c Change
			if it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &c) }) != nil {
				continue
			}
			switch {
			case c.Delete && c.At.Before(cutoff):
				drop = append(drop, old{c.Seq, c})
			case c.Delete:
				keep[c.Digest] = true
			}
		}
		return nil
	})
	if err != nil || len(drop) == 0 {
		return 0, err
	}
	n := 0
	for _, o := range drop {
		err := s.db.Update(func(txn *badger.Txn) error {
			if err := txn.Delete(changeKey(o.seq)); err != nil {
				return err
			}
			// The key's latest entry may be newer (stored again since).
			if it, err := txn.Get([]byte(prefixChangeKey + o.c.Key)); err == nil {
				var seq uint64
				it.Value(func(v []byte) error {
					if len(v) == 8 {
						seq = binary.BigEndian.Uint64(v)
					}
					return nil
				})
				if seq == o.seq {
					if err := txn.Delete([]byte(prefixChangeKey + o.c.Key)); err != nil {
						return err
					}
				}
			}
			if keep[o.c.Digest] {
				return nil
			}
			return txn.Delete([]byte(prefixTomb + o.c.Digest.String()))
		})
		if err != nil {
			return n, fmt.Errorf("compact the change log: %w", err)
		}
		n++
	}
	return n, nil
}

func changeKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(prefixChange), seq)
}

// RecordChange appends c to the change log (its Seq and, when zero, At
// are set here) and drops the key's earlier entry. A stored blob lifts
// the tombstone of its digest; a deletion sets it.
func (s *Store) RecordChange(c Change) (uint64, error) {
	if err := s.indexRoom(); err != nil {
		return 0, fmt.Errorf("record change of %s: %w", c.Key, err)
	}
	if c.At.IsZero() {
		c.At = s.now()
	}
	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	err := s.db.Update(func(txn *badger.Txn) error {
		var last uint64
		if it, err := txn.Get([]byte(keyChangeSeq)); err == nil {
			if err := it.Value(func(v []byte) error {
				if len(v) != 8 {
					return errors.New("damaged change sequence")
				}
				last = binary.BigEndian.Uint64(v)
				return nil
			}); err != nil {
				return err
			}
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		c.Seq = last + 1
		if it, err := txn.Get([]byte(prefixChangeKey + c.Key)); err == nil {
			var old uint64
			it.Value(func(v []byte) error {
				if len(v) == 8 {
					old = binary.BigEndian.Uint64(v)
				}
				return nil
			})
			if old > 0 {
				if oi, err := txn.Get(changeKey(old)); err == nil {
					var oc Change
					if oi.Value(func(v []byte) error { return json.Unmarshal(v, &oc) }) == nil && !oc.Delete {
						if err := txn.Delete([]byte(prefixChangeDig + oc.Digest.String() + "/" + oc.Key)); err != nil {
							return err
						}
					}
				}
				if err := txn.Delete(changeKey(old)); err != nil {
					return err
				}
			}
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		b, err := json.Marshal(c)
		if err != nil {
			return err
		}
		seq := binary.BigEndian.AppendUint64(nil, c.Seq)
		for k, v := range map[string][]byte{keyChangeSeq: seq, prefixChangeKey + c.Key: seq, string(changeKey(c.Seq)): b} {
			if err := txn.Set([]byte(k), v); err != nil {
				return err
			}
		}
		if c.Delete {
			return txn.Set([]byte(prefixTomb+c.Digest.String()), nil)
		}
		if err := txn.Set([]byte(prefixChangeDig+c.Digest.String()+"/"+c.Key), nil); err != nil {
			return err
		}
		return txn.Delete([]byte(prefixTomb + c.Digest.String()))
	})
	if err != nil {
		return 0, fmt.Errorf("record change of %s: %w", c.Key, err)
	}
	return c.Seq, nil
}

// Changes returns up to n entries after seq, in order, and the log's last
// seq.
func (s *Store) Changes(after uint64, n int) ([]Change, uint64, error) {
	var out []Change
	var last uint64
	err := s.db.View(func(txn *badger.Txn) error {
		if it, err := txn.Get([]byte(keyChangeSeq)); err == nil {
			it.Value(func(v []byte) error {
				if len(v) == 8 {
					last = binary.BigEndian.Uint64(v)
				}
				return nil
			})
		}
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: min(n, 100), Prefix: []byte(prefixChange)})
		defer it.Close()
		if after == math.MaxUint64 {
			return nil // nothing comes after the last number (and after+1 would wrap to the start)
		}
		for it.Seek(changeKey(after + 1)); it.Valid() && len(out) < n; it.Next() {
			var c Change
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &c) }); err != nil {
				return fmt.Errorf("damaged change entry %x: %w", it.Item().Key(), err)
			}
			out = append(out, c)
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("read changes after %d: %w", after, err)
	}
	return out, last, nil
}

// ChangeKeys lists the keys whose latest change log entry stored d.
func (s *Store) ChangeKeys(d Digest) ([]string, error) {
	prefix := []byte(prefixChangeDig + d.String() + "/")
	var out []string
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			out = append(out, string(it.Item().Key()[len(prefix):]))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list keys of %s: %w", d, err)
	}
	return out, nil
}

// Tombstoned says whether d was deleted here since it was last stored.
func (s *Store) Tombstoned(d Digest) bool {
	err := s.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get([]byte(prefixTomb + d.String()))
		return err
	})
	return err == nil
}

// RecordDeletion records that d was deleted here by the operator (cache
// rm), under each key whose latest entry stored it: hubs pulling with
// replicate_deletes delete it too, and no pull brings it back here. A
// blob the log never named (not a hub's) records nothing.
func (s *Store) RecordDeletion(d Digest) error {
	keys, err := s.ChangeKeys(d)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if _, err := s.RecordChange(Change{Delete: true, Key: k, Digest: d}); err != nil {
			return err
		}
	}
	return nil
}
