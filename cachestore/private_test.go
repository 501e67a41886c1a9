package cachestore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fillIn stores b through a fill whose bytes came in scope ("" public).
func fillIn(t *testing.T, s *Store, b []byte, scope string) Digest {
	t.Helper()
	f, leader := s.BeginFill("test:" + sha(b).String() + "#" + scope)
	if !leader {
		t.Fatal("not leader of a fresh fill")
	}
	if err := f.Start(FillInfo{Algo: "sha256", Size: int64(len(b)), Scope: scope}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	d, err := f.Commit(sha(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// A blob a credential scope fetched is that scope's: kept apart under
// private/, readable by its scopes alone, never shared; a second scope
// that fetches it too is added; a fill without credentials makes it
// public (moved to blobs/, one file); scopes are bounded.
func TestPrivateBlobLifecycle(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	b := []byte(strings.Repeat("private bytes ", 500))
	d := fillIn(t, s, b, "pA")
	pub, priv := filepath.Join(dir, "blobs", "sha256", d.Hex[:2], d.Hex), filepath.Join(dir, "private", "sha256", d.Hex[:2], d.Hex)
	bi, err := s.Stat(d)
	if err != nil || !bi.Readable("pA") || bi.Readable("") || bi.Readable("pB") {
		t.Fatalf("after a fill in scope pA: %+v %v", bi, err)
	}
	if _, err := os.Stat(priv); err != nil {
		t.Fatalf("a private blob is not under private/: %v", err)
	}
	if _, err := os.Stat(pub); !os.IsNotExist(err) {
		t.Fatalf("a private blob is in the shared tree: %v", err)
	}
	if s.Holds(d) {
		t.Fatal("a private blob is offered (Holds)")
	}
	if _, _, err := s.OpenShared(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("OpenShared of a private blob: %v, want ErrNotFound", err)
	}
	// Still read by its owner, from its own tree.
	f, _, err := s.OpenBlob(d)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(got, b) {
		t.Fatal("the private blob reads wrong")
	}

	fillIn(t, s, b, "pB")
	if bi, _ := s.Stat(d); !bi.Readable("pA") || !bi.Readable("pB") || bi.Readable("") {
		t.Fatalf("a second scope's fill: %+v", bi)
	}
	// Bounded: the oldest scopes go.
	for i := range maxBlobScopes + 3 {
		fillIn(t, s, b, fmt.Sprintf("pX%d", i))
	}
	if bi, _ := s.Stat(d); len(bi.Scopes) != maxBlobScopes || bi.Readable("pA") {
		t.Fatalf("scopes not bounded to %d, oldest first: %v", maxBlobScopes, bi.Scopes)
	}
	used, n, _ := s.Usage()

	fillIn(t, s, b, "")
	bi, err = s.Stat(d)
	if err != nil || bi.Private() || !bi.Readable("") || !s.Holds(d) {
		t.Fatalf("after a public fill: %+v %v", bi, err)
	}
	if _, err := os.Stat(pub); err != nil {
		t.Fatalf("a public blob is not in blobs/: %v", err)
	}
	if _, err := os.Stat(priv); !os.IsNotExist(err) {
		t.Fatalf("the private copy stayed: %v", err)
	}
	if used2, n2, _ := s.Usage(); used2 != used || n2 != n {
		t.Fatalf("usage drifted when the blob went public: %d/%d -> %d/%d", used, n, used2, n2)
	}
	// Public stays public: a later private fill does not take it back.
	fillIn(t, s, b, "pA")
	if bi, _ := s.Stat(d); bi.Private() {
		t.Fatal("a private fill made a public blob private")
	}
}

// An index rebuilt from the files still knows a private blob for
// private, and whose it was is lost with the index: no scope reads it
// until a fill with a credential proves it again.
func TestPrivateBlobSurvivesARebuiltIndexAsNobodys(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	b := []byte(strings.Repeat("alice's file ", 700))
	pub := []byte(strings.Repeat("debian's file ", 700))
	d, dp := fillIn(t, s, b, "pA"), fillIn(t, s, pub, "")
	facts := map[string]Known{}
	for i := range 5000 { // a table to damage
		facts[fmt.Sprintf("http://deb.example/debian/pool/p%d.deb", i)] = Known{Digest: dp, Size: int64(len(pub))}
	}
	if err := s.PutKnown(facts); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	damageIndex(t, dir, "lost MANIFEST")
	s = openStore(t, dir)
	bi, err := s.Stat(d)
	if err != nil || !bi.Private() || bi.Readable("pA") || bi.Readable("") || s.Holds(d) {
		t.Fatalf("the private blob after a rebuild: %+v %v; want private to no scope", bi, err)
	}
	if bi, err := s.Stat(dp); err != nil || bi.Private() {
		t.Fatalf("the public blob after a rebuild: %+v %v", bi, err)
	}
	fillIn(t, s, b, "pA")
	if bi, _ := s.Stat(d); !bi.Readable("pA") || bi.Readable("") {
		t.Fatalf("proven again by its scope: %+v", bi)
	}
}

// The secret scopes are keyed with is made once and kept.
func TestScopeSecretKept(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.ScopeSecret()
	if err != nil || len(a) != 32 {
		t.Fatalf("secret %x, %v", a, err)
	}
	if again, _ := s.ScopeSecret(); !bytes.Equal(a, again) {
		t.Fatal("a second call made another secret")
	}
	s.Close()
	s = openStore(t, dir)
	if b, err := s.ScopeSecret(); err != nil || !bytes.Equal(a, b) {
		t.Fatalf("after a restart: %x %v, want %x", b, err, a)
	}
	if bytes.Equal(a, make([]byte, 32)) {
		t.Fatal("an all-zero secret")
	}
}

// The change log's identity is made once and kept; a rebuilt index has
// another one (its numbers start again).
func TestChangeLogIDKeptAndNewWhenRebuilt(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.ChangeLogID()
	if err != nil || a == "" {
		t.Fatalf("id %q, %v", a, err)
	}
	s.Close()
	s, err = Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := s.ChangeLogID(); b != a {
		t.Fatalf("after a restart: %q, want %q", b, a)
	}
	s.Close()
	damageIndex(t, dir, "lost MANIFEST")
	s = openStore(t, dir)
	if b, _ := s.ChangeLogID(); b == a || b == "" {
		t.Fatalf("a rebuilt index's log id %q, want a new one (was %q)", b, a)
	}
}

// Deletions older than their time leave the log with their tombstones;
// newer ones and stored entries stay.
func TestCompactChanges(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	s, err := Open(Config{Dir: t.TempDir(), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	old, fresh, kept := sha([]byte("old")), sha([]byte("fresh")), sha([]byte("kept"))
	for _, c := range []Change{
		{Key: "http://x/a", Digest: old, Delete: true, At: now.Add(-40 * 24 * time.Hour)},
		{Key: "http://x/b", Digest: fresh, Delete: true, At: now.Add(-time.Hour)},
		{Key: "http://x/c", Digest: kept, Size: 1, At: now.Add(-40 * 24 * time.Hour)},
		// The same blob under two URLs: the older deletion goes, the
		// tombstone stays with the newer one.
		{Key: "http://x/d1", Digest: sha([]byte("twice")), Delete: true, At: now.Add(-40 * 24 * time.Hour)},
		{Key: "http://x/d2", Digest: sha([]byte("twice")), Delete: true, At: now.Add(-time.Hour)},
	} {
		if _, err := s.RecordChange(c); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.CompactChanges(now.Add(-TombstoneTTL))
	if err != nil || n != 2 {
		t.Fatalf("compacted %d, %v; want 2", n, err)
	}
	if s.Tombstoned(old) || !s.Tombstoned(fresh) || !s.Tombstoned(sha([]byte("twice"))) {
		t.Fatal("the wrong tombstones went")
	}
	cs, _, _ := s.Changes(0, 10)
	if len(cs) != 3 || cs[0].Key != "http://x/b" || cs[1].Key != "http://x/c" || cs[2].Key != "http://x/d2" {
		t.Fatalf("the log after compacting: %+v", cs)
	}
}

// A hit on a private blob from outside its scope is refused and is no
// use of it (an anonymous request for a public URL that names the same
// digest does not keep it from eviction); from inside it, a use.
func TestOpenHitOutsideTheScopeIsNoUse(t *testing.T) {
	s := openStore(t, t.TempDir())
	for _, size := range []int{5000, hotMaxSize + 1} { // shared descriptor, and not
		d := fillIn(t, s, bytes.Repeat([]byte{byte(size)}, size), "palice")
		for range 2 { // cold, then hot
			if _, _, err := s.OpenHit(d, ""); !errors.Is(err, ErrOtherScope) {
				t.Fatalf("%d B: an anonymous hit on a private blob: %v, want ErrOtherScope", size, err)
			}
			if _, _, err := s.OpenHit(d, "pbob"); !errors.Is(err, ErrOtherScope) {
				t.Fatalf("%d B: another scope's hit: %v", size, err)
			}
			b, _, err := s.OpenHit(d, "palice")
			if err != nil {
				t.Fatal(err)
			}
			b.Close()
		}
		s.flushUses()
		if bi, err := s.Stat(d); err != nil || bi.Hits != 2 {
			t.Fatalf("%d B: %d hits, %v; want the 2 of its own scope", size, bi.Hits, err)
		}
	}
}
