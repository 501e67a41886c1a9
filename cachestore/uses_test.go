package cachestore

import (
	"fmt"
	"sync"
	"testing"
)

// Use counts are written in batches, off the hit path: readers see them
// at once, they survive a clean restart, a dropped blob's pending uses do
// not come back, and many hits at once are all counted.
func TestUseCountsBatched(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	a := fill(t, s, []byte("artifact a"))
	b := fill(t, s, []byte("artifact b"))
	const clients, each = 8, 50
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				f, _, err := s.OpenBlob(a)
				if err != nil {
					t.Error(err)
					return
				}
				f.Close()
			}
		}()
	}
	wg.Wait()
	f, bi, err := s.OpenBlob(b)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if bi.Hits != 1 {
		t.Fatalf("OpenBlob's own answer counts %d hits of b, want 1", bi.Hits)
	}
	idx, _ := s.statIndex(a)
	if idx.Hits != 0 {
		t.Fatalf("the index holds %d hits of a before a flush: the hit path wrote it", idx.Hits)
	}
	check := func(when string, d Digest, want int64) {
		t.Helper()
		bi, err := s.Stat(d)
		if err != nil || bi.Hits != want {
			t.Fatalf("%s: Stat(%s) = %d hits, %v; want %d", when, d, bi.Hits, err, want)
		}
		found := false
		s.scanBlobs("", func(bi BlobInfo) bool {
			if bi.Digest == d {
				found = bi.Hits == want
			}
			return true
		})
		if !found {
			t.Fatalf("%s: the listing does not show %d hits of %s", when, want, d)
		}
	}
	check("pending", a, clients*each)
	if err := s.flushUses(); err != nil {
		t.Fatal(err)
	}
	check("flushed", a, clients*each)
	// Pending uses of a blob that is then removed vanish with it.
	f, _, _ = s.OpenBlob(b)
	f.Close()
	if err := s.Remove(b); err != nil {
		t.Fatal(err)
	}
	f, _, _ = s.OpenBlob(a)
	f.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	check("after a restart", a, clients*each+1)
	if _, err := s.Stat(b); err == nil {
		t.Fatal("a removed blob is back in the index")
	}
	s.uses.mu.Lock()
	n := len(s.uses.pending)
	s.uses.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d pending uses after a restart", n)
	}
}

// Memory stays bounded: past usesMaxPending distinct blobs, the hit that
// adds one more writes the batch.
func TestUseCountsBounded(t *testing.T) {
	s := openStore(t, t.TempDir())
	var last Digest
	for i := range usesMaxPending + 10 {
		last = sha(fmt.Appendf(nil, "blob %d", i))
		s.countUse(BlobInfo{Digest: last})
	}
	s.uses.mu.Lock()
	n := len(s.uses.pending)
	s.uses.mu.Unlock()
	if n >= usesMaxPending {
		t.Fatalf("%d pending use counts, want fewer than %d", n, usesMaxPending)
	}
}
