package door

import (
	"fmt"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/warren-cache/warren/cachestore"
)

// countingStore counts the URL-cache lookups the door makes.
type countingStore struct {
	*cachestore.Store
	cached atomic.Int64
}

func (c *countingStore) Cached(u string) (cachestore.Cached, error) {
	c.cached.Add(1)
	return c.Store.Cached(u)
}

// listsDoor is a door that trusts the lists under http://lists.example/.
func listsDoor(t *testing.T) (*Door, *countingStore) {
	t.Helper()
	store, err := cachestore.Open(cachestore.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	policy, err := NewListPolicy(nil, nil, []string{"http://lists.example/"})
	if err != nil {
		t.Fatal(err)
	}
	cs := &countingStore{Store: store}
	d, err := New(Config{Lists: func() *ListPolicy { return policy }}, cs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(); store.Close() })
	return d, cs
}

// metalinkOf is a metalink naming the mirrors, pad bytes of comment before
// its resources.
func metalinkOf(pad int, mirrors ...string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `<?xml version="1.0"?><metalink version="3.0" xmlns="http://www.metalinker.org/"><!--%s--><files><file name="repomd.xml"><verification><hash type="sha256">%s</hash></verification><resources>`,
		strings.Repeat("x", pad), strings.Repeat("a", 64))
	for _, m := range mirrors {
		fmt.Fprintf(&b, `<url protocol="https">%srepodata/repomd.xml</url>`, m)
	}
	b.WriteString("</resources></file></files></metalink>")
	return []byte(b.String())
}

// keepList stores a list under key as a fetch would, and learns it.
func keepList(t *testing.T, d *Door, key string, body []byte) {
	t.Helper()
	dg, err := d.Keep(t.Context(), key, "rpm-mirrorlist", body, nil)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(key)
	p := d.Plan(t.Context(), u, Credential{})
	if p.Meta != MetaMirrors {
		t.Fatalf("%s is not planned as a list", key)
	}
	d.learnIfNew(p, dg)
	d.learning.wait(t.Context(), p.Key, nil)
}

// The groups read are bounded by the bytes they hold, not only by their
// number: a list's parsed form, never its bytes, the least recently used
// forgotten first. (Before, each group kept what it was read from: 256
// lists of 4 MB were a gigabyte.)
func TestGroupsBoundedByBytes(t *testing.T) {
	d, _ := listsDoor(t)
	const n, pad = 24, 3 << 20
	for i := range n {
		keepList(t, d, fmt.Sprintf("http://lists.example/%d/metalink", i), metalinkOf(pad, fmt.Sprintf("https://m%d.example/r/", i)))
	}
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	for i := range n {
		if d.groupNamed(fmt.Sprintf("http://lists.example/%d/metalink", i)) == nil {
			t.Fatalf("list %d makes no group", i)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	grew := (int64(m1.HeapInuse) - int64(m0.HeapInuse)) >> 20
	t.Logf("%d groups of %d MB lists: the heap grew by %d MB", n, pad>>20, grew)
	if grew > 48 {
		t.Fatalf("%d lists of %d MB kept %d MB in memory, want at most %d MB and some", n, pad>>20, grew, maxGroupBytes>>20)
	}
	d.mirrors.mu.Lock()
	defer d.mirrors.mu.Unlock()
	if d.mirrors.bytes > maxGroupBytes {
		t.Fatalf("the groups hold %d bytes, more than %d", d.mirrors.bytes, maxGroupBytes)
	}
}

// A list is read once for all who ask at the same time, and learning one
// list leaves the others' groups as they were read. (Before, every list
// learnt dropped every group, each read again by whoever asked next, as
// many times as were asking.)
func TestGroupReadOnceAndKept(t *testing.T) {
	d, _ := listsDoor(t)
	for _, l := range []string{"a", "b"} {
		keepList(t, d, "http://lists.example/"+l+"/metalink", metalinkOf(0, "https://"+l+".example/r/"))
		d.groupNamed("http://lists.example/" + l + "/metalink")
	}
	keepList(t, d, "http://lists.example/c/metalink", metalinkOf(0, "https://c.example/r/"))
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, l := range []string{"a", "b", "c"} {
				if d.groupNamed("http://lists.example/"+l+"/metalink") == nil {
					t.Errorf("list %s makes no group", l)
				}
			}
		}()
	}
	wg.Wait()
	if n := d.mirrors.readCount.Load(); n != 3 {
		t.Fatalf("three lists were read %d times, want once each", n)
	}
}

// MirrorHosts is built once and again only when a list is learnt: the
// daemon asks on every CONNECT. (Before, every call looked each list up
// and sorted every mirror's host.)
func TestMirrorHostsBuiltOnce(t *testing.T) {
	d, cs := listsDoor(t)
	keepList(t, d, "http://lists.example/a/metalink", metalinkOf(0, "https://a1.example/r/", "http://a2.example/r/"))
	hosts, v1 := d.MirrorHosts()
	if strings.Join(hosts, " ") != "a1.example" {
		t.Fatalf("hosts %v", hosts)
	}
	before := cs.cached.Load()
	for range 100 {
		if _, v := d.MirrorHosts(); v != v1 {
			t.Fatal("the version changed with nothing learnt")
		}
	}
	if n := cs.cached.Load() - before; n != 0 {
		t.Fatalf("100 calls looked %d lists up", n)
	}
	keepList(t, d, "http://lists.example/b/metalink", metalinkOf(0, "https://b1.example/r/"))
	if hosts, v := d.MirrorHosts(); v == v1 || strings.Join(hosts, " ") != "a1.example b1.example" {
		t.Fatalf("after another list: %v (version %d, was %d)", hosts, v, v1)
	}
}
