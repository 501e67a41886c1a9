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

// KnownURLs lists the URLs whose learnt facts name d, at most max, reading
// at most scan facts: the index keeps facts by URL only (no digest to URL
// key), so finding them is a scan, and on a real archive's index (hundreds
// of thousands of facts) it is bounded. complete says every fact was read.
// For cache show, by hand; not on any request's path.
func (s *Store) KnownURLs(d Digest, max, scan int) (urls []string, complete bool, err error) {
	complete = true
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100, Prefix: []byte(prefixKnown)})
		defer it.Close()
		read := 0
		for it.Rewind(); it.Valid() && len(urls) < max; it.Next() {
			if read >= scan {
				complete = false
				break
			}
			read++
			var k Known
			if err := it.Item().Value(func(b []byte) error { return decodeKnown(b, &k) }); err != nil || k.Digest != d {
				continue
			}
			urls = append(urls, string(it.Item().Key()[len(prefixKnown):]))
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("list the learnt urls of %s: %w", d, err)
	}
	return urls, complete, nil
}

// ErrAmbiguous is a digest prefix that more than one stored blob begins with.
var ErrAmbiguous = errors.New("digest prefix names more than one blob")

// Resolve finds the stored blob whose digest begins with prefix: a whole
// digest ("sha256:<hex>"), or its start as `cache ls` prints it, with or
// without the algorithm ("sha256:1a2b3c4d5e6f", "1a2b3c4d"), as git takes
// an abbreviated commit. At least 4 hex digits.
func (s *Store) Resolve(prefix string) (Digest, error) {
	algo, hx, hasAlgo := strings.Cut(strings.ToLower(strings.TrimSpace(prefix)), ":")
	if !hasAlgo {
		algo, hx = "", algo
	}
	if len(hx) < 4 || strings.Trim(hx, "0123456789abcdef") != "" {
		return Digest{}, fmt.Errorf("%q: want a digest or its first hex digits (at least 4), as warren cache ls prints them", prefix)
	}
	if d := (Digest{Algo: algo, Hex: hx}); hasAlgo && d.Validate() == nil {
		return d, nil // whole
	}
	var found []Digest
	err := s.scanBlobs("", func(bi BlobInfo) bool {
		if (algo == "" || bi.Digest.Algo == algo) && strings.HasPrefix(bi.Digest.Hex, hx) {
			found = append(found, bi.Digest)
		}
		return len(found) < 8
	})
	if err != nil {
		return Digest{}, err
	}
	switch len(found) {
	case 0:
		return Digest{}, fmt.Errorf("%w: no stored blob's digest begins with %q", ErrNotFound, prefix)
	case 1:
		return found[0], nil
	}
	var names []string
	for _, d := range found {
		names = append(names, d.String()[:min(len(d.String()), len(d.Algo)+1+len(hx)+4)])
	}
	return Digest{}, fmt.Errorf("%w: %q could be %s…: give more digits", ErrAmbiguous, prefix, strings.Join(names, "…, "))
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
