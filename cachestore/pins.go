package cachestore

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
)

// Pins keep blobs from eviction for an owner that still needs them: a
// hub's last generations of the index files a Release or repomd.xml
// listed, which a node midway through its update may yet ask for. They
// are kept in the index under p/<owner> and in memory (a refcount per
// digest) for the evictor.

// prefixPin is p/<owner>: the generations of blobs that owner pins.
const prefixPin = "p/"

// PinGen is one generation of an owner's pins: the blobs the metadata of
// digest Gen listed that are held.
type PinGen struct {
	Gen     Digest   `json:"gen"`
	Digests []Digest `json:"digests"`
}

// PinGenerations makes gens (newest first, at most keep of them) what
// owner pins, and returns them; a generation already recorded keeps its
// place unless gens names it again. keep 0 drops the owner's pins.
func (s *Store) PinGenerations(owner string, gens []PinGen, keep int) ([]PinGen, error) {
	if err := s.indexRoom(); err != nil {
		return nil, fmt.Errorf("pin blobs for %s: %w", owner, err)
	}
	s.pinMu.Lock()
	defer s.pinMu.Unlock()
	var old, kept []PinGen
	err := s.db.Update(func(txn *badger.Txn) error {
		if it, err := txn.Get([]byte(prefixPin + owner)); err == nil {
			if err := it.Value(func(v []byte) error { return json.Unmarshal(v, &old) }); err != nil {
				old = nil // unreadable: replaced below
			}
		}
		seen := map[Digest]bool{}
		for _, g := range append(slices.Clone(gens), old...) {
			if len(kept) < keep && !seen[g.Gen] {
				seen[g.Gen] = true
				kept = append(kept, g)
			}
		}
		if len(kept) == 0 {
			return txn.Delete([]byte(prefixPin + owner))
		}
		b, err := json.Marshal(kept)
		if err != nil {
			return err
		}
		return txn.Set([]byte(prefixPin+owner), b)
	})
	if err != nil {
		return nil, fmt.Errorf("pin blobs for %s: %w", owner, err)
	}
	for _, g := range old {
		for _, d := range g.Digests {
			if s.pins[d]--; s.pins[d] <= 0 {
				delete(s.pins, d)
			}
		}
	}
	for _, g := range kept {
		for _, d := range g.Digests {
			s.pins[d]++
		}
	}
	return kept, nil
}

// Pinned says whether some owner pins d.
func (s *Store) Pinned(d Digest) bool {
	s.pinMu.Lock()
	defer s.pinMu.Unlock()
	return s.pins[d] > 0
}

// loadPins reads every owner's pins into memory, at Open.
func (s *Store) loadPins() error {
	s.pinMu.Lock()
	defer s.pinMu.Unlock()
	s.pins = map[Digest]int{}
	return s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(prefixPin)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var gens []PinGen
			err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &gens) })
			if err != nil {
				s.log.Warn("unreadable pins in the index; those blobs may be evicted",
					"owner", strings.TrimPrefix(string(it.Item().Key()), prefixPin), "err", err)
				continue
			}
			for _, g := range gens {
				for _, d := range g.Digests {
					s.pins[d]++
				}
			}
		}
		return nil
	})
}
