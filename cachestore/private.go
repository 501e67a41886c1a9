package cachestore

import (
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/dgraph-io/badger/v4"
)

// Private blobs (RFC 9111 §3.5): bytes that a request with credentials for
// its origin fetched are readable only by requests with the same
// credential, named by a scope (a keyed hash of the credential, never the
// credential). They live under private/<algo>/<aa>/<hex>, apart from the
// shared blobs/, so that an index rebuilt from the files still knows them
// for private: one adopted from private/ is readable by no scope until a
// fill with a credential proves it again (unknownScope). A blob that a
// fill without credentials delivers is public from then on, moved into
// blobs/: the origin gave those bytes to anyone.

// maxBlobScopes bounds the scopes one private blob keeps; the oldest goes
// first (its requests fetch the blob again to prove it).
const maxBlobScopes = 16

// unknownScope marks a private blob whose scopes were lost with the index.
const unknownScope = "?"

// privateDir is the tree of private blobs.
const privateDir = "private"

// Private says whether only some credential scopes may read the blob.
func (bi BlobInfo) Private() bool { return len(bi.Scopes) > 0 }

// Readable says whether a request in scope ("" for one without
// credentials) may be served the blob.
func (bi BlobInfo) Readable(scope string) bool {
	return !bi.Private() || scope != "" && slices.Contains(bi.Scopes, scope)
}

func (s *Store) privatePath(d Digest) string {
	return filepath.Join(s.dir, privateDir, d.Algo, d.Hex[:2], d.Hex)
}

// pathOf is where bi's file is.
func (s *Store) pathOf(bi BlobInfo) string {
	if bi.Private() {
		return s.privatePath(bi.Digest)
	}
	return s.blobPath(bi.Digest)
}

// withScope is bi as a verified fill in scope leaves it.
func withScope(bi BlobInfo, known bool, scope string) BlobInfo {
	switch {
	case scope == "":
		bi.Scopes = nil
	case !known:
		bi.Scopes = []string{scope}
	case bi.Private() && !slices.Contains(bi.Scopes, scope):
		bi.Scopes = append(slices.Clone(bi.Scopes), scope)
		if len(bi.Scopes) > maxBlobScopes {
			bi.Scopes = bi.Scopes[len(bi.Scopes)-maxBlobScopes:]
		}
	}
	return bi
}

// OpenShared opens a blob for a peer or a pulling hub: a private blob is
// ErrNotFound to them, as if it were not here.
func (s *Store) OpenShared(d Digest) (*Blob, BlobInfo, error) {
	// Looked at before it is opened: a probe for a private blob must not
	// count as a use of it (that would keep it from eviction).
	if bi, err := s.Stat(d); err == nil && bi.Private() {
		return nil, BlobInfo{Digest: d}, ErrNotFound
	}
	b, bi, err := s.OpenBlob(d)
	if err != nil {
		return nil, bi, err
	}
	if bi.Private() { // made private between the two looks
		b.Close()
		return nil, BlobInfo{Digest: d}, ErrNotFound
	}
	return b, bi, nil
}

// scopeSecretKey is the index key of the secret scopes are keyed with.
const scopeSecretKey = "z/scope-secret"

// ScopeSecret is this cache's secret for keying credential scopes, made
// once and kept in the index: a scope names a credential without
// revealing it, and stays the same across restarts (the private URL-cache
// entries and facts keyed by it stay usable). A rebuilt index makes a new
// one; what was keyed with the old one is unreachable, as private data
// should be.
func (s *Store) ScopeSecret() ([]byte, error) {
	var secret []byte
	err := s.getWith(scopeSecretKey, func(b []byte) error { secret = append([]byte(nil), b...); return nil })
	if err == nil && len(secret) == 32 {
		return secret, nil
	}
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	if s.readOnly {
		return nil, fmt.Errorf("make the credential scope secret: %w", s.indexRoom())
	}
	secret = make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("make the credential scope secret: %w", err)
	}
	s.blobMu.Lock() // one maker: two callers at once must not each make their own
	defer s.blobMu.Unlock()
	err = s.db.Update(func(txn *badger.Txn) error {
		if it, err := txn.Get([]byte(scopeSecretKey)); err == nil && it.ValueSize() == 32 {
			return it.Value(func(b []byte) error { secret = append(secret[:0], b...); return nil })
		}
		return txn.Set([]byte(scopeSecretKey), secret)
	})
	if err != nil {
		return nil, fmt.Errorf("record the credential scope secret: %w", err)
	}
	return secret, nil
}
