package cachestore

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Facts: URL -> digest, as repository metadata listed them (see known.go
// for their stored form, sweep.go for their expiry).

// Known is a fact learnt from repository metadata: the URL must hash to Digest.
type Known struct {
	Digest Digest `json:"digest"`
	Size   int64  `json:"size"` // -1 when the metadata did not say
	// Name is the metadata's own name for the file (for example
	// "main/binary-amd64/Packages.xz"), kept for index files so that a
	// by-hash URL can be parsed as what it is.
	Name string `json:"name,omitempty"`
	// Source is where upstream serves the bytes, when that is not the URL
	// the fact is recorded under (a NuGet package's content src).
	Source string `json:"source,omitempty"`
	// Lister names the metadata file that listed the fact (its key's
	// ListerID) and Learnt when (Unix seconds): a fact older than its
	// lister's latest learn is no longer listed (SweepKnown). 0: unknown.
	Lister uint64 `json:"-"`
	Learnt int64  `json:"-"`
	// Depth is the length of the repository scope whose metadata listed
	// the fact. Where repositories nest on one host (one rooted at an
	// ancestor path of another), the most specific one's fact stands:
	// PutKnown never replaces a fact with one of a shallower scope.
	// 0: unknown (replaced by any).
	Depth int `json:"-"`
}

// knownMaxIdle is how long a metadata file may go unlearnt before the
// hashes it listed are dropped (its repository or suite is gone).
const knownMaxIdle = 30 * 24 * time.Hour

// Known returns what metadata said the URL hashes to.
func (s *Store) Known(url string) (Known, error) {
	if k, found, ok := s.known.get(url); ok {
		if !found {
			return Known{}, ErrNotFound
		}
		return k, nil
	}
	gen := s.known.gen.Load()
	var k Known
	err := s.getWith(prefixKnown+url, func(b []byte) error { return decodeKnown(b, &k) })
	switch {
	case err == nil:
		s.known.put(url, gen, k, true)
	case errors.Is(err, ErrNotFound):
		s.known.put(url, gen, Known{}, false)
	}
	return k, err
}

// PutKnown records URL -> digest facts in one batch.
func (s *Store) PutKnown(facts map[string]Known) error {
	if err := s.indexRoom(); err != nil {
		return fmt.Errorf("record %d hashes: %w", len(facts), err)
	}
	newScopes, nested, err := s.scopes(facts)
	if err != nil {
		return fmt.Errorf("record %d hashes: %w", len(facts), err)
	}
	var deeper map[string]bool
	if len(nested) > 0 {
		if deeper, err = s.deeperFacts(facts, nested); err != nil {
			return fmt.Errorf("record %d hashes: %w", len(facts), err)
		}
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	defer s.known.changed() // after the batch landed (or failed half way)
	for _, scope := range newScopes {
		if err := wb.Set([]byte(prefixScope+scope), nil); err != nil {
			return fmt.Errorf("record repository scope %s: %w", scope, err)
		}
	}
	for url, k := range facts {
		if deeper[url] {
			continue // a more specific repository lists it
		}
		if err := k.Digest.Validate(); err != nil {
			return fmt.Errorf("record hash of %s: %w", url, err)
		}
		b, err := encodeKnown(k)
		if err != nil {
			return fmt.Errorf("record hash of %s: %w", url, err)
		}
		if err := wb.Set([]byte(prefixKnown+url), b); err != nil {
			return fmt.Errorf("record hash of %s: %w", url, err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("record %d hashes: %w", len(facts), err)
	}
	if len(newScopes) > 0 {
		s.scopesMu.Lock()
		for _, scope := range newScopes {
			s.knownScopes[scope] = struct{}{}
		}
		s.scopesMu.Unlock()
	}
	return nil
}

// deeperFacts says which of facts a fact already recorded, from a more
// specific repository scope, must not be replaced by.
func (s *Store) deeperFacts(facts map[string]Known, nested map[string][]string) (map[string]bool, error) {
	var deeper map[string]bool
	err := s.db.View(func(txn *badger.Txn) error {
		for url, k := range facts {
			if k.Depth <= 0 || k.Depth > len(url) || !slices.ContainsFunc(nested[url[:k.Depth]], func(inner string) bool { return strings.HasPrefix(url, inner) }) {
				continue // under no repository inside this one: nothing can be deeper
			}
			it, err := txn.Get([]byte(prefixKnown + url))
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			var old Known
			if err := it.Value(func(b []byte) error { return decodeKnown(b, &old) }); err != nil {
				continue // a damaged record is replaced
			}
			if old.Depth > k.Depth {
				if deeper == nil {
					deeper = map[string]bool{}
				}
				deeper[url] = true
			}
		}
		return nil
	})
	return deeper, err
}

// KnownKeys calls fn with the key of every learnt fact (keys only: cheap).
func (s *Store) KnownKeys(fn func(key string)) error {
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixKnown)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			fn(string(it.Item().Key()[len(prefixKnown):]))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list learnt hashes: %w", err)
	}
	return nil
}

// KnownPrefix calls fn with every learnt fact whose key begins with
// prefix (a mirror group's members: few, found by a seek).
func (s *Store) KnownPrefix(prefix string, fn func(key string, k Known)) error {
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100, Prefix: []byte(prefixKnown + prefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var k Known
			if it.Item().Value(func(b []byte) error { return decodeKnown(b, &k) }) != nil {
				continue // a damaged record teaches nothing
			}
			fn(string(it.Item().Key()[len(prefixKnown):]), k)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list learnt hashes under %s: %w", prefix, err)
	}
	return nil
}

// scopesOf is the set of repository scopes the facts came from: each
// fact's key begins with its scope, Depth bytes long.
func scopesOf(facts map[string]Known) map[string]struct{} {
	scopes := map[string]struct{}{}
	for url, k := range facts {
		if k.Depth > 0 && k.Depth <= len(url) {
			scopes[url[:k.Depth]] = struct{}{}
		}
	}
	return scopes
}

// scopes returns, of the repository scopes facts came from, those not
// recorded yet (to record with them) and, for those with scopes inside
// them, these deeper scopes (a fact under one must be checked against the
// deeper repository's). A Release's suite lies inside its archive's
// root, but the pool files a Packages file lists lie under no suite: they
// cost no lookup. The scopes are few
// (one per repository or suite): they are read once and kept in memory.
func (s *Store) scopes(facts map[string]Known) (fresh []string, nested map[string][]string, err error) {
	s.scopesMu.Lock()
	defer s.scopesMu.Unlock()
	if s.knownScopes == nil {
		known := map[string]struct{}{}
		err := s.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixScope)})
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				known[string(it.Item().Key()[len(prefixScope):])] = struct{}{}
			}
			return nil
		})
		if err != nil {
			return nil, nil, fmt.Errorf("read repository scopes: %w", err)
		}
		s.knownScopes = known
	}
	for scope := range scopesOf(facts) {
		if _, ok := s.knownScopes[scope]; !ok {
			fresh = append(fresh, scope)
		}
		for other := range s.knownScopes {
			if len(other) > len(scope) && strings.HasPrefix(other, scope) {
				if nested == nil {
					nested = map[string][]string{}
				}
				nested[scope] = append(nested[scope], other)
			}
		}
	}
	return fresh, nested, nil
}
