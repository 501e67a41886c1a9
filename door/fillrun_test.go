package door

import (
	"net/url"
	"testing"

	"github.com/warren-cache/warren/cachestore"
)

// newTestDoor is a door over a fresh store, with no sources configured
// beyond the origin.
func newTestDoor(t *testing.T) (*Door, *cachestore.Store) {
	t.Helper()
	store, err := cachestore.Open(cachestore.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(Config{}, store)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(); store.Close() })
	return d, store
}

// A second Commit of a fill registers no second learn: one left running
// would make every request in its repository wait learnWaitMax.
func TestCommitRegistersOneLearn(t *testing.T) {
	d, store := newTestDoor(t)
	u, _ := url.Parse("http://deb.example/debian/dists/stable/main/binary-amd64/Packages.gz")
	p := d.Plan(t.Context(), u, Credential{})
	if p.Meta == "" {
		t.Fatalf("the plan of %s has no metadata to learn", u)
	}
	f, _ := store.BeginFill("url:" + p.Key)
	if err := f.Start(cachestore.FillInfo{Algo: "sha256", Size: 3}); err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("abc"))
	cf := &committingFill{Fill: f, s: d, p: p}
	cf.Commit(cachestore.Digest{Algo: "sha256"}, 3)
	cf.Commit(cachestore.Digest{Algo: "sha256"}, 3)
	d.learning.mu.Lock()
	n := len(d.learning.running)
	d.learning.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d learns registered by two Commits, want 1", n)
	}
	d.learning.end(cf.learn)
}
