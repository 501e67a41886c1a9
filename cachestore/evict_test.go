package cachestore

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"time"
)

type testClock struct{ t time.Time }

func (c *testClock) now() time.Time { return c.t }

// history stores one 100-byte blob per entry and then rewrites its
// statistics as the entry says, so eviction sees a crafted past.
type history struct {
	name     string
	added    time.Duration // ago
	lastUsed time.Duration // ago
	hits     int64
}

func craft(t *testing.T, s *Store, clk *testClock, hs []history) map[string]Digest {
	t.Helper()
	out := map[string]Digest{}
	for _, h := range hs {
		body := []byte(fmt.Sprintf("%-100s", h.name))
		d := fill(t, s, body)
		bi, err := s.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		bi.Added, bi.LastUsed, bi.Hits = clk.t.Add(-h.added), clk.t.Add(-h.lastUsed), h.hits
		if err := s.writeBlob(bi); err != nil {
			t.Fatal(err)
		}
		out[h.name] = d
	}
	return out
}

func openLimited(t *testing.T, clk *testClock, l Limits) *Store {
	t.Helper()
	s, err := Open(Config{Dir: t.TempDir(), Now: clk.now, Limits: l})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

const day = 24 * time.Hour

func TestEvictPolicy(t *testing.T) {
	tests := []struct {
		name    string
		limits  Limits
		history []history
		gone    []string
	}{
		{"over cache_max: the least used goes",
			Limits{MaxBytes: 250},
			[]history{{"popular", 10 * day, 0, 50}, {"cold", 10 * day, 5 * day, 0}, {"warm", 10 * day, day, 3}},
			[]string{"cold"}},
		{"aging beats raw frequency",
			Limits{MaxBytes: 100},
			[]history{{"once-popular", 90 * day, 60 * day, 100}, {"fresh", 3 * day, 0, 1}},
			[]string{"once-popular"}},
		{"cache_min_days protects new blobs",
			Limits{MaxBytes: 100, MinAge: 2 * day},
			[]history{{"new-cold", day, day, 0}, {"old-hot", 30 * day, 0, 9}},
			[]string{"old-hot"}},
		{"cache_max_days removes unused blobs without pressure",
			Limits{MaxAge: 30 * day},
			[]history{{"stale", 60 * day, 31 * day, 40}, {"used", 60 * day, 29 * day, 0}},
			[]string{"stale"}},
		{"within limits nothing goes",
			Limits{MaxBytes: 1000},
			[]history{{"a", 10 * day, 9 * day, 0}, {"b", 10 * day, 0, 0}},
			nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &testClock{time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)}
			s := openLimited(t, clk, tt.limits)
			ds := craft(t, s, clk, tt.history)
			rep, err := s.Evict()
			if err != nil {
				t.Fatal(err)
			}
			if rep.Evicted != len(tt.gone) {
				t.Fatalf("evicted %d, want %d (%v)", rep.Evicted, len(tt.gone), tt.gone)
			}
			for name, d := range ds {
				_, err := s.Stat(d)
				gone := errors.Is(err, ErrNotFound)
				want := false
				for _, g := range tt.gone {
					want = want || g == name
				}
				if gone != want {
					t.Errorf("%s: evicted %v, want %v", name, gone, want)
				}
			}
		})
	}
}

func TestEvictNeverUnderAnOpenReader(t *testing.T) {
	clk := &testClock{time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)}
	s := openLimited(t, clk, Limits{MaxAge: 30 * day})
	d := craft(t, s, clk, []history{{"stale", 90 * day, 60 * day, 0}})["stale"]
	b, _, err := s.OpenBlob(d)
	if err != nil {
		t.Fatal(err)
	}
	// OpenBlob counted a use: make it stale again while it stays open.
	if err := s.flushUses(); err != nil {
		t.Fatal(err)
	}
	bi, _ := s.Stat(d)
	bi.LastUsed = clk.t.Add(-60 * day)
	s.writeBlob(bi)
	if rep, _ := s.Evict(); rep.Evicted != 0 {
		t.Fatal("evicted a blob with an open reader")
	}
	b.Close()
	if rep, _ := s.Evict(); rep.Evicted != 1 {
		t.Fatalf("after Close: evicted %d, want 1", rep.Evicted)
	}
}

func TestUsageAndFreeWithinCacheMax(t *testing.T) {
	clk := &testClock{time.Now()}
	s := openLimited(t, clk, Limits{MaxBytes: 350})
	craft(t, s, clk, []history{{"a", day, 0, 0}, {"b", day, 0, 0}})
	used, n, err := s.Usage()
	if err != nil || used != 200 || n != 2 {
		t.Fatalf("usage %d bytes in %d blobs, %v", used, n, err)
	}
	if free := s.Free(); free != 150 {
		t.Fatalf("Free() = %d, want the 150 bytes left under cache_max", free)
	}
}

// Usage is kept as blobs come and go; it must always equal a full scan of
// the index, through fills, duplicates, removals, drops and a restart.
func TestUsageMatchesTheIndex(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	check := func(s *Store, when string) {
		t.Helper()
		used, n, _ := s.Usage()
		infos, _ := s.Blobs()
		var want int64
		for _, bi := range infos {
			want += bi.Size
		}
		if used != want || n != len(infos) {
			t.Fatalf("%s: Usage() = %d bytes in %d blobs, the index holds %d in %d", when, used, n, want, len(infos))
		}
	}
	a := fill(t, s, []byte("aaaaaaaaaa"))
	fill(t, s, []byte("bbbbbbbbbbbbbbbbbbbb"))
	c := fill(t, s, []byte("ccccc"))
	check(s, "after fills")
	fill(t, s, []byte("aaaaaaaaaa")) // the same blob again
	check(s, "after a duplicate fill")
	if err := s.Remove(a); err != nil {
		t.Fatal(err)
	}
	check(s, "after rm")
	os.WriteFile(s.blobPath(c), []byte("x"), 0o600) // wrong size: dropped when opened
	if _, _, err := s.OpenBlob(c); !errors.Is(err, ErrNotFound) {
		t.Fatalf("damaged blob opened: %v", err)
	}
	check(s, "after a drop")
	s.Close()
	s2, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	check(s2, "after a restart")
	if used, n, _ := s2.Usage(); used != 20 || n != 1 {
		t.Fatalf("after restart: %d bytes in %d blobs, want 20 in 1", used, n)
	}
}

// A pinned blob (a hub's previous generation of an index file) outlives
// the eviction that takes colder blobs, also after a restart; unpinned,
// it goes like any other.
func TestPinnedBlobsAreNotEvicted(t *testing.T) {
	clk := &testClock{t: time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)}
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir, Now: clk.now, Limits: Limits{MaxBytes: 150}})
	if err != nil {
		t.Fatal(err)
	}
	ds := craft(t, s, clk, []history{{"old-index", 10 * day, 10 * day, 0}, {"hot", day, 0, 50}})
	owner := "http://h/debian/dists/stable/InRelease"
	gen := func(name string) Digest { return Digest{Algo: "sha256", Hex: fmt.Sprintf("%064x", len(name))} }
	if _, err := s.PinGenerations(owner, []PinGen{{Gen: gen("one"), Digests: []Digest{ds["old-index"]}}}, 2); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = Open(Config{Dir: dir, Now: clk.now, Limits: Limits{MaxBytes: 150}}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Evict(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ds["old-index"]); err != nil {
		t.Fatalf("the pinned blob was evicted: %v", err)
	}
	if _, err := s.Stat(ds["hot"]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the hot blob should have gone in the pinned one's place: %v", err)
	}
	// Two newer generations: the first falls out of keep 2.
	for _, g := range []string{"three", "twenty-two"} {
		if _, err := s.PinGenerations(owner, []PinGen{{Gen: gen(g)}}, 2); err != nil {
			t.Fatal(err)
		}
	}
	craft(t, s, clk, []history{{"new", day, 0, 50}})
	if _, err := s.Evict(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ds["old-index"]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unpinned, the cold blob should go first: %v", err)
	}
}

// An eviction run lists every blob; a fill asks for one only when the cache
// is over a limit (or the index's reserve is missing and can be taken), so
// that a miss costs the same in a cache of a million blobs as in an empty
// one.
func TestFillAsksForEvictionOnlyOverALimit(t *testing.T) {
	clk := &testClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := openLimited(t, clk, Limits{MaxBytes: 250})
	kicked := func() bool {
		select {
		case <-s.evictKick:
			return true
		default:
			return false
		}
	}
	for i, want := range []bool{false, false, true} {
		fill(t, s, []byte(fmt.Sprintf("%-100d", i)))
		if got := kicked(); got != want {
			t.Fatalf("after fill %d (%d bytes held, limit 250): eviction asked for = %v, want %v", i+1, (i+1)*100, got, want)
		}
	}
	if err := os.Remove(s.reservePath()); err != nil {
		t.Fatal(err)
	}
	s.limits.MaxBytes = 0
	fill(t, s, []byte("another"))
	if !kicked() {
		t.Fatal("the index's reserve is missing and there is room: a fill should ask the loop to take it again")
	}
}
