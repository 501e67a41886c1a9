package cachestore

import (
	"encoding/json"
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
			st, err := os.Stat(s.blobPath(d))
			if err != nil || st.Size() != bi.Size {
				drop = append(drop, []byte(key))
				_ = os.Remove(s.blobPath(d))
				continue
			}
			indexed[d.String()] = bi.Size
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("recover: scan blob index: %w", err)
	}

	adopted := 0
	blobs := filepath.Join(s.dir, "blobs")
	err = filepath.WalkDir(blobs, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(blobs, p)
		parts := strings.Split(rel, string(filepath.Separator))
		if len(parts) != 3 {
			return nil
		}
		d := Digest{Algo: parts[0], Hex: parts[2]}
		if d.Validate() != nil || parts[1] != d.Hex[:2] {
			return nil
		}
		if _, ok := indexed[d.String()]; ok {
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
		now := s.now()
		if err := s.writeBlob(BlobInfo{Digest: d, Size: info.Size(), Added: info.ModTime(), LastUsed: now}); err != nil {
			return err
		}
		indexed[d.String()] = info.Size()
		adopted++
		return nil
	})
	if err != nil {
		return fmt.Errorf("recover: scan blob files: %w", err)
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
