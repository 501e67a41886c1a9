package cachestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// Blobs lists every blob the index holds.
func (s *Store) Blobs() ([]BlobInfo, error) { return s.blobs() }

// URLs maps each digest to the URLs known to name it (from repository
// metadata and from the URL cache).
func (s *Store) URLs() (map[Digest][]string, error) {
	out := map[Digest][]string{}
	err := s.db.View(func(txn *badger.Txn) error {
		for _, prefix := range []string{prefixKnown, prefixCached} {
			it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100, Prefix: []byte(prefix)})
			for it.Rewind(); it.Valid(); it.Next() {
				var d Digest
				err := it.Item().Value(func(b []byte) error {
					if prefix == prefixKnown {
						var k Known
						err := decodeKnown(b, &k)
						d = k.Digest
						return err
					}
					var c Cached
					err := json.Unmarshal(b, &c)
					d = c.Digest
					return err
				})
				if err != nil {
					continue
				}
				u := strings.TrimPrefix(string(it.Item().Key()), prefix)
				out[d] = append(out[d], u)
			}
			it.Close()
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list urls: %w", err)
	}
	return out, nil
}

// CachedURLs lists the URL-cache entries that name d: a prefix read of
// the reverse keys, no scan of the index.
func (s *Store) CachedURLs(d Digest) ([]string, error) {
	prefix := []byte(prefixUses + d.String() + "/")
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
		return nil, fmt.Errorf("list urls of %s: %w", d, err)
	}
	return out, nil
}

// ErrInUse is a blob that a reader has open.
var ErrInUse = errors.New("blob is being read")

// Remove deletes one blob now (cache rm).
func (s *Store) Remove(d Digest) error {
	bi, err := s.Stat(d)
	if err != nil {
		return err
	}
	if !s.remove(bi, "removed by request") {
		return fmt.Errorf("remove %s: %w; try again when the transfer ends", d, ErrInUse)
	}
	return nil
}

// VerifyReport says what a verify run found.
type VerifyReport struct {
	Checked int      `json:"checked"`
	Bad     []string `json:"bad"` // digests removed because their bytes were wrong
}

// Verify rehashes every blob and removes those whose bytes do not match
// their name; progress is called after each blob. It stops when ctx ends,
// with what it found so far and ctx's error.
func (s *Store) Verify(ctx context.Context, progress func(done, total int)) (VerifyReport, error) {
	infos, err := s.blobs()
	if err != nil {
		return VerifyReport{}, err
	}
	var rep VerifyReport
	for i, bi := range infos {
		if err := ctx.Err(); err != nil {
			return rep, fmt.Errorf("verify stopped after %d of %d blobs: %w", rep.Checked, len(infos), err)
		}
		ok, err := s.verifyOne(bi)
		if err != nil {
			return rep, err
		}
		rep.Checked++
		if !ok && s.remove(bi, "failed verification") {
			rep.Bad = append(rep.Bad, bi.Digest.String())
		}
		if progress != nil {
			progress(i+1, len(infos))
		}
	}
	return rep, nil
}

// verifyOne rehashes a blob's file; bi.Size -1 accepts any size.
func (s *Store) verifyOne(bi BlobInfo) (bool, error) {
	return verifyFile(s.pathOf(bi), bi)
}

// verifyFile rehashes the file at path as bi's.
func verifyFile(path string, bi BlobInfo) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("verify %s: %w", bi.Digest, err)
	}
	defer f.Close()
	h := bi.Digest.NewHash()
	n, err := io.Copy(h, f)
	if err != nil {
		return false, fmt.Errorf("verify %s: %w", bi.Digest, err)
	}
	return (bi.Size < 0 || n == bi.Size) && fmt.Sprintf("%x", h.Sum(nil)) == bi.Digest.Hex, nil
}
