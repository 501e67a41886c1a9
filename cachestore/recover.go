package cachestore

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// Recovery at start: what a crash or a damaged index left.

// recover removes what a crash left: temp files of fills, index entries
// whose blob is gone or of the wrong size, URL-cache entries without a blob;
// and indexes blob files that were renamed into place but not yet indexed
// (they were verified before the rename).
func (s *Store) recover(rebuilt bool) error {
	tmp := filepath.Join(s.dir, "tmp")
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return fmt.Errorf("recover: read %s: %w", tmp, err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(tmp, e.Name())); err != nil {
			return fmt.Errorf("recover: remove leftover temp file: %w", err)
		}
	}
	if len(entries) > 0 {
		s.log.Info("removed temp files a previous run left (interrupted fills, spare files)", slog.Int("count", len(entries)))
	}

	indexed := map[string]int64{}
	private := map[Digest]bool{} // of the indexed blobs: which tree holds each
	var drop [][]byte
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100, Prefix: []byte(prefixBlob)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			key := string(it.Item().Key())
			d, err := ParseDigest(strings.TrimPrefix(key, prefixBlob))
			var bi BlobInfo
			if err == nil {
				err = it.Item().Value(func(b []byte) error { return json.Unmarshal(b, &bi) })
			}
			if err != nil {
				drop = append(drop, []byte(key))
				continue
			}
			bi.Digest = d
			st, err := os.Stat(s.pathOf(bi))
			if err != nil || st.Size() != bi.Size {
				drop = append(drop, []byte(key))
				_ = os.Remove(s.pathOf(bi))
				continue
			}
			indexed[d.String()] = bi.Size
			private[d] = bi.Private()
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("recover: scan blob index: %w", err)
	}

	adopted := 0
	for _, tree := range []string{"blobs", privateDir} {
		isPrivate := tree == privateDir
		root := filepath.Join(s.dir, tree)
		err = filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
			if errors.Is(err, fs.ErrNotExist) && p == root {
				return filepath.SkipAll // no private blob was ever stored
			}
			if err != nil || e.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			parts := strings.Split(rel, string(filepath.Separator))
			if len(parts) != 3 {
				return nil
			}
			d := Digest{Algo: parts[0], Hex: parts[2]}
			if d.Validate() != nil || parts[1] != d.Hex[:2] {
				return nil
			}
			if _, ok := indexed[d.String()]; ok {
				if private[d] != isPrivate {
					// The copy a crash left when the blob was made
					// public (or a stray one): the index says where it is.
					_ = os.Remove(p)
				}
				return nil
			}
			if !s.adoptable(d, p, rebuilt) {
				return nil
			}
			if err := s.indexRoom(); err != nil {
				s.log.Warn("not adopting blobs now: the disk is nearly full", slog.Any("err", err))
				return filepath.SkipAll
			}
			info, err := e.Info()
			if err != nil {
				return err
			}
			bi := BlobInfo{Digest: d, Size: info.Size(), Added: info.ModTime(), LastUsed: s.now()}
			if isPrivate {
				// Whose it was went with the index: nobody's until a
				// request with its credential proves it again.
				bi.Scopes = []string{unknownScope}
			}
			if err := s.writeBlob(bi); err != nil {
				return err
			}
			indexed[d.String()] = info.Size()
			private[d] = isPrivate
			adopted++
			return nil
		})
		if err != nil {
			return fmt.Errorf("recover: scan blob files in %s: %w", tree, err)
		}
	}

	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100, Prefix: []byte(prefixCached)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var c Cached
			if err := it.Item().Value(func(b []byte) error { return json.Unmarshal(b, &c) }); err != nil {
				drop = append(drop, it.Item().KeyCopy(nil))
				continue
			}
			if _, ok := indexed[c.Digest.String()]; !ok {
				key := it.Item().KeyCopy(nil)
				drop = append(drop, key, usesKey(c.Digest, strings.TrimPrefix(string(key), prefixCached)))
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("recover: scan url cache: %w", err)
	}
	if len(drop) > 0 && s.readOnly {
		s.log.Warn("stale index entries stay until a start with room to write the index", slog.Int("count", len(drop)))
		drop = nil
	}
	if len(drop) > 0 {
		wb := s.db.NewWriteBatch()
		defer wb.Cancel()
		for _, k := range drop {
			if err := wb.Delete(k); err != nil {
				return fmt.Errorf("recover: drop stale entry: %w", err)
			}
		}
		if err := wb.Flush(); err != nil {
			return fmt.Errorf("recover: drop stale entries: %w", err)
		}
	}
	for _, size := range indexed {
		s.usedBytes.Add(size)
		s.usedBlobs.Add(1)
	}
	if len(drop) > 0 || adopted > 0 {
		s.log.Info("recovered cache index", slog.Int("dropped_entries", len(drop)), slog.Int("adopted_blobs", adopted), slog.Bool("rebuilt", rebuilt))
	}
	return nil
}
