package cachestore

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Blobs: files named by their digest under blobs/<algo>/<aa>/<hex>, and
// their index entries (size, uses, when added and last used).

// BlobInfo is what the index says of a stored blob.
type BlobInfo struct {
	Digest   Digest    `json:"-"`
	Size     int64     `json:"size"`
	Added    time.Time `json:"added"`
	LastUsed time.Time `json:"last_used"`
	Hits     int64     `json:"hits"`
	// Scopes are the credential scopes that may read a private blob
	// (private.go); empty for a blob anyone may be served.
	Scopes []string `json:"scopes,omitempty"`
}

func (s *Store) blobPath(d Digest) string {
	return filepath.Join(s.dir, "blobs", d.Algo, d.Hex[:2], d.Hex)
}

// Stat returns the index's record of a blob, with its uses not yet
// written, or ErrNotFound.
func (s *Store) Stat(d Digest) (BlobInfo, error) {
	bi, err := s.statIndex(d)
	if err != nil {
		return bi, err
	}
	return s.withPending(bi), nil
}

// statIndex is the index's record alone: what a read-modify-write of it
// starts from.
func (s *Store) statIndex(d Digest) (BlobInfo, error) {
	var bi BlobInfo
	if err := d.Validate(); err != nil {
		return bi, err
	}
	err := s.get(prefixBlob+d.String(), &bi)
	bi.Digest = d
	return bi, err
}

// OpenBlob opens a stored blob for reading and counts the use; until Close
// the blob is not evicted. A blob whose file is missing or whose size
// differs from the index is dropped and reported as ErrNotFound: it is
// never served.
func (s *Store) OpenBlob(d Digest) (*Blob, BlobInfo, error) {
	return s.openBlob(d, true)
}

// ReadBlob opens a stored blob for warren's own reading (learning the
// metadata it holds): kept from eviction until Close, not counted as a use.
func (s *Store) ReadBlob(d Digest) (*Blob, error) {
	b, _, err := s.openBlob(d, false)
	return b, err
}

func (s *Store) openBlob(d Digest, use bool) (*Blob, BlobInfo, error) {
	if err := d.Validate(); err != nil {
		return nil, BlobInfo{Digest: d}, err
	}
	// Counted as open before the index is read: remove checks the count
	// under openMu, so it either ran before (the entry is gone) or leaves
	// the blob alone.
	s.openMu.Lock()
	s.open[d]++
	s.openMu.Unlock()
	release := func() { s.releaseOpen(d) }
	bi, err := s.Stat(d)
	if err != nil {
		release()
		return nil, bi, err
	}
	f, err := os.Open(s.pathOf(bi))
	if errors.Is(err, fs.ErrNotExist) {
		// A private blob that a public fill made public was moved to
		// blobs/ between the index read and the open: its new place.
		if again, serr := s.Stat(d); serr == nil && again.Private() != bi.Private() {
			bi = again
			f, err = os.Open(s.pathOf(bi))
		}
	}
	if errors.Is(err, fs.ErrNotExist) {
		release()
		s.log.Warn("blob file missing; dropping it from the index", slog.String("digest", d.String()))
		_ = s.dropBlob(d)
		return nil, bi, ErrNotFound
	}
	if err != nil {
		release()
		return nil, bi, fmt.Errorf("open blob %s: %w", d, err)
	}
	st, err := f.Stat()
	if err != nil {
		release()
		f.Close()
		return nil, bi, fmt.Errorf("stat blob %s: %w", d, err)
	}
	if st.Size() != bi.Size {
		release()
		f.Close()
		s.log.Warn("blob size differs from the index; removing it",
			slog.String("digest", d.String()), slog.Int64("index_size", bi.Size), slog.Int64("file_size", st.Size()))
		_ = s.dropBlob(d)
		return nil, bi, ErrNotFound
	}
	if use {
		bi = s.countUse(bi)
	}
	return &Blob{File: f, release: release}, bi, nil
}

// addBlobLocked records a stored blob (new, or stored again), its record
// as statIndex read it (known: it was in the index), and counts it once;
// uses are hits it already served; scope is the fill's (withScope). The
// caller holds blobMu and has put the file where the result says
// (pathOf).
func (s *Store) addBlobLocked(bi BlobInfo, known bool, size int64, uses int64, scope string) error {
	s.hot.forget(bi.Digest) // its file was just replaced
	now := s.now()
	if !known {
		bi = BlobInfo{Digest: bi.Digest, Added: now}
	}
	old := bi.Size
	bi = withScope(bi, known, scope)
	bi.Size, bi.LastUsed = size, now
	bi.Hits += uses
	if err := s.writeBlob(bi); err != nil {
		return err
	}
	if !known {
		s.usedBlobs.Add(1)
		s.usedBytes.Add(size)
	} else {
		s.usedBytes.Add(size - old)
	}
	return nil
}

func (s *Store) writeBlob(bi BlobInfo) error {
	b, err := json.Marshal(bi)
	if err != nil {
		return err
	}
	return s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(prefixBlob+bi.Digest.String()), b) })
}

// dropBlob removes a blob's file and its index entries (and the URL-cache
// entries that name it), counting it out if it was counted in.
func (s *Store) dropBlob(d Digest) error {
	if s.readOnly {
		return fmt.Errorf("remove blob %s: %w", d, s.indexRoom())
	}
	s.blobMu.Lock()
	defer s.blobMu.Unlock()
	s.hot.forget(d)
	for _, p := range []string{s.blobPath(d), s.privatePath(d)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove blob %s: %w", d, err)
		}
	}
	var size int64 = -1
	err := s.db.Update(func(txn *badger.Txn) error {
		if it, err := txn.Get([]byte(prefixBlob + d.String())); err == nil {
			var bi BlobInfo
			if it.Value(func(v []byte) error { return json.Unmarshal(v, &bi) }) == nil {
				size = bi.Size
			} else {
				size = 0
			}
		}
		if err := txn.Delete([]byte(prefixBlob + d.String())); err != nil {
			return err
		}
		return s.dropUsesTxn(txn, d)
	})
	if err != nil {
		return fmt.Errorf("drop blob %s from the index: %w", d, err)
	}
	s.forgetUses(d)
	if size >= 0 {
		s.usedBlobs.Add(-1)
		s.usedBytes.Add(-size)
	}
	return nil
}

// dropUsesTxn deletes the URL-cache entries that name d: the file is gone,
// so those URLs are fetched again rather than revalidated into nothing.
func (s *Store) dropUsesTxn(txn *badger.Txn, d Digest) error {
	prefix := []byte(prefixUses + d.String() + "/")
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	var keys [][]byte
	for it.Rewind(); it.Valid(); it.Next() {
		keys = append(keys, it.Item().KeyCopy(nil))
	}
	it.Close()
	for _, k := range keys {
		url := string(k[len(prefix):])
		var c Cached
		if it, err := txn.Get([]byte(prefixCached + url)); err == nil &&
			it.Value(func(v []byte) error { return json.Unmarshal(v, &c) }) == nil && c.Digest == d {
			if err := txn.Delete([]byte(prefixCached + url)); err != nil {
				return err
			}
		}
		if err := txn.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// Blob is an open stored blob. Close it: while it is open the blob is not
// evicted. Pass File itself to http.ServeContent so sendfile applies.
type Blob struct {
	*os.File // nil for a shared descriptor (OpenHit): read Content
	release  func()
	shared   *hotFile
	section  *io.SectionReader
}

// Close closes the file and lets the blob be evicted again.
func (b *Blob) Close() error {
	b.release()
	if b.shared != nil {
		return nil // released above; closed with its last reader once forgotten
	}
	return b.File.Close()
}

// releaseOpen ends one reader of d: once none is left it may be evicted.
func (s *Store) releaseOpen(d Digest) {
	s.openMu.Lock()
	if s.open[d]--; s.open[d] <= 0 {
		delete(s.open, d)
	}
	s.openMu.Unlock()
}
