package cachestore

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// The URL cache: files no metadata names a hash for, by URL, with their
// validators.

// Cached is a URL cached by URL: its bytes are the blob Digest (sha256
// computed on arrival), revalidated upstream with the validators.
type Cached struct {
	Digest       Digest    `json:"digest"`
	Size         int64     `json:"size"`
	ETag         string    `json:"etag,omitempty"`
	LastModified string    `json:"last_modified,omitempty"`
	ContentType  string    `json:"content_type,omitempty"`
	Fetched      time.Time `json:"fetched"`
	// Meta are more response headers to give back with it (a feed
	// answer's DataServiceVersion).
	Meta map[string]string `json:"meta,omitempty"`
}

// Cached returns the URL cache's entry for url.
func (s *Store) Cached(url string) (Cached, error) {
	var c Cached
	err := s.get(prefixCached+url, &c)
	return c, err
}

// PutCached records that url is cached as c.Digest; a fill records it just
// before its blob is committed. Removing the blob removes the entry.
func (s *Store) PutCached(url string, c Cached) error {
	if err := s.indexRoom(); err != nil {
		return fmt.Errorf("record cached %s: %w", url, err)
	}
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("record cached %s: %w", url, err)
	}
	s.blobMu.Lock()
	defer s.blobMu.Unlock()
	err = s.db.Update(func(txn *badger.Txn) error {
		var old Cached
		if it, err := txn.Get([]byte(prefixCached + url)); err == nil {
			if it.Value(func(v []byte) error { return json.Unmarshal(v, &old) }) == nil && old.Digest != c.Digest {
				if err := txn.Delete(usesKey(old.Digest, url)); err != nil {
					return err
				}
			}
		}
		if err := txn.Set(usesKey(c.Digest, url), nil); err != nil {
			return err
		}
		return txn.Set([]byte(prefixCached+url), b)
	})
	if err != nil {
		return fmt.Errorf("record cached %s: %w", url, err)
	}
	return nil
}

func usesKey(d Digest, url string) []byte { return []byte(prefixUses + d.String() + "/" + url) }
