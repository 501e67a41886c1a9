package replicate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/hub"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func digest(b []byte) cachestore.Digest {
	s := sha256.Sum256(b)
	return cachestore.Digest{Algo: "sha256", Hex: hex.EncodeToString(s[:])}
}

// forged is a source hub of the test's own: it serves the change feed and
// blobs as the test decides, and counts the blob requests.
type forged struct {
	*httptest.Server
	mu    sync.Mutex // guards the fields below
	log   string     // the change log's identity
	items []cachestore.Change
	blobs map[cachestore.Digest][]byte
	// page, when set, answers a page instead of the log (a broken source).
	page      func(after uint64) hub.Page
	blobGets  map[cachestore.Digest]int
	failBlobs map[cachestore.Digest]bool // answered 500
}

func newForged(t *testing.T) *forged {
	f := &forged{log: "log-1", blobs: map[cachestore.Digest][]byte{}, blobGets: map[cachestore.Digest]int{}, failBlobs: map[cachestore.Digest]bool{}}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

// add puts a file in the source's log and blobs.
func (f *forged) add(key string, body []byte, cached *cachestore.Cached) cachestore.Change {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := digest(body)
	c := cachestore.Change{Seq: uint64(len(f.items) + 1), Key: key, Digest: d, Size: int64(len(body)), Cached: cached, At: time.Now()}
	f.items = append(f.items, c)
	f.blobs[d] = body
	return c
}

func (f *forged) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.URL.Path == hub.ChangesPath:
		after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
		var p hub.Page
		if f.page != nil {
			p = f.page(after)
		} else {
			p = hub.Page{Hub: "forged", Chain: []string{"forged"}, Log: f.log, Next: after, Entries: []cachestore.Change{}}
			for _, c := range f.items {
				if c.Seq > after {
					p.Entries = append(p.Entries, c)
					p.Next = c.Seq
				}
			}
			p.Last = uint64(len(f.items))
			p.Next = max(p.Next, after)
		}
		json.NewEncoder(w).Encode(p)
	case strings.HasPrefix(r.URL.Path, hub.BlobsPath):
		d, _ := cachestore.ParseDigest(strings.TrimPrefix(r.URL.Path, hub.BlobsPath))
		f.blobGets[d]++
		if f.failBlobs[d] {
			http.Error(w, "disk trouble", http.StatusInternalServerError)
			return
		}
		b, ok := f.blobs[d]
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
	default:
		http.NotFound(w, r)
	}
}

func (f *forged) gets(d cachestore.Digest) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.blobGets[d]
}

// spoke is the pulling hub: a store and a door, as the daemon has them.
type spoke struct {
	store *cachestore.Store
	door  *door.Door
	now   time.Time
	state hub.SourceState
}

func newSpoke(t *testing.T) *spoke {
	store, err := cachestore.Open(cachestore.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	d, err := door.New(door.Config{KeepGenerations: door.DefaultKeepGenerations}, store)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(); store.Close() })
	return &spoke{store: store, door: d, now: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
}

// pull runs one replication from f, keeping the state between runs as
// the daemon does.
func (s *spoke) pull(t *testing.T, f *forged, repos hub.Repos) hub.ReplicateRun {
	t.Helper()
	c := hub.FeedClient{From: hub.ReplicateFrom{Name: "src", URL: f.URL, Token: "a-sync-token-of-16+", Repositories: repos}, Self: "spoke", HTTP: &http.Client{}}
	p := NewPuller(s.door, s.store, "spoke", nil, func() time.Time { return s.now })
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	return p.Run(ctx, Options{Client: c, From: s.state, Saved: func(st hub.SourceState) { s.state = st }})
}

// What a source may not give: an entry outside the repositories this hub
// pulls (another host's, another archive's), a key that names a private
// scope or is no repository URL. Each is refused, counted and not stored.
func TestPullRefusesEntriesOutsideItsRepositories(t *testing.T) {
	f := newForged(t)
	archive := f.URL + "/debian/"
	in := f.add(archive+"pool/main/a/app/app_1.0_all.deb", []byte("an app in the archive"), nil)
	other := f.add("http://other.example/debian/pool/main/x/x_1_all.deb", []byte("another host's file"), nil)
	elsewhere := f.add(f.URL+"/other/pool/y.deb", []byte("another archive on the host"), nil)
	private := f.add(strings.Replace(archive, "http://", "http://p0123abcd@", 1)+"pool/z.deb", []byte("a private scope's key"), nil)
	s := newSpoke(t)
	run := s.pull(t, f, hub.Repos{Apt: []hub.AptRepo{{URL: archive}}})
	if run.Refused != 3 || run.Blobs != 1 {
		t.Fatalf("a pull with entries outside its repositories: %+v; want 1 blob and 3 refused", run)
	}
	if run.End.IsZero() || run.End.Before(run.Start) {
		t.Fatalf("the run's end %s, its start %s", run.End, run.Start)
	}
	if !s.door.Holds(in.Digest) {
		t.Fatal("the archive's file was not pulled")
	}
	for _, c := range []cachestore.Change{other, elsewhere, private} {
		if s.door.Holds(c.Digest) || f.gets(c.Digest) != 0 {
			t.Fatalf("%s was stored (or even asked for)", c.Key)
		}
	}
}

// A source's clock is never taken past now: an index kept by URL and
// dated 2099 does not replace a copy of this hub's own fetched since the
// source's real one, and what is taken is dated now at most.
func TestPullTimesNeverPastNow(t *testing.T) {
	f := newForged(t)
	key := f.URL + "/debian/dists/stable/InRelease"
	future := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	f.add(key, []byte("Origin: forged\nSuite: stable\n"), &cachestore.Cached{Fetched: future, ETag: `"x"`})
	s := newSpoke(t)
	// The spoke's own copy, fetched from the origin an hour ago.
	own := []byte("Origin: the real one\nSuite: stable\n")
	if _, err := s.door.Keep(t.Context(), key, "release", own, nil); err != nil {
		t.Fatal(err)
	}
	c, _ := s.store.Cached(key)
	c.Fetched = s.now.Add(-time.Hour)
	if err := s.store.PutCached(key, c); err != nil {
		t.Fatal(err)
	}
	s.pull(t, f, hub.Repos{})
	if got, _ := s.store.Cached(key); got.Digest == digest([]byte("Origin: forged\nSuite: stable\n")) {
		t.Fatal("an entry dated 2099 replaced this hub's newer copy")
	}
	// Without a copy of its own, the source's is taken, dated now.
	s2 := newSpoke(t)
	s2.pull(t, f, hub.Repos{})
	got, err := s2.store.Cached(key)
	if err != nil || got.Fetched.After(s2.now) {
		t.Fatalf("the source's copy: %+v %v; want it dated no later than now (%s)", got, err, s2.now)
	}
}

// A page that does not advance (next == after, more to come) ends the run
// with an error at once, instead of asking for the same page for ever.
func TestPullStopsOnAPageThatDoesNotAdvance(t *testing.T) {
	f := newForged(t)
	pages := 0
	f.page = func(after uint64) hub.Page {
		pages++
		return hub.Page{Hub: "forged", Log: "log-1", Next: after, Last: after + 10, More: true, Entries: []cachestore.Change{}}
	}
	s := newSpoke(t)
	run := s.pull(t, f, hub.Repos{})
	if !strings.Contains(run.Error, "does not advance") || pages != 1 {
		t.Fatalf("a page that does not advance: %+v after %d pages", run, pages)
	}
}

// An entry that failed (the source's disk, a killed source) is tried
// again by the next run, although the cursor went past it; a run that
// finds a rebuilt source (another change log) reads it from its start and
// takes only what it lacks.
func TestPullRetriesAndFollowsARebuiltSource(t *testing.T) {
	f := newForged(t)
	base := f.URL + "/debian/pool/main/"
	var cs []cachestore.Change
	for i := range 5 {
		cs = append(cs, f.add(fmt.Sprintf("%sp/p%d_1.0_all.deb", base, i), []byte(fmt.Sprintf("package %d", i)), nil))
	}
	f.mu.Lock()
	f.failBlobs[cs[1].Digest], f.failBlobs[cs[3].Digest] = true, true
	f.mu.Unlock()
	s := newSpoke(t)
	first := s.pull(t, f, hub.Repos{})
	if first.Blobs != 3 || first.ToRetry != 2 || s.state.Cursor != 5 || len(s.state.Retry) != 2 {
		t.Fatalf("a run with two failing blobs: %+v, state %+v", first, s.state)
	}
	f.mu.Lock()
	f.failBlobs = map[cachestore.Digest]bool{}
	f.mu.Unlock()
	second := s.pull(t, f, hub.Repos{})
	if !second.OK() || second.Blobs != 2 || len(s.state.Retry) != 0 {
		t.Fatalf("the next run: %+v; want the 2 failed blobs fetched", second)
	}
	for _, c := range cs {
		if !s.door.Holds(c.Digest) {
			t.Fatalf("%s missing after the retry", c.Key)
		}
	}
	// The source is rebuilt: a new log, numbered from 1 again, with one
	// file more. The spoke's cursor (5) would skip its first entries.
	f.mu.Lock()
	f.log, f.items = "log-2", nil
	f.mu.Unlock()
	for _, c := range cs {
		f.add(c.Key, f.blobs[c.Digest], nil)
	}
	extra := f.add(base+"q/q_1.0_all.deb", []byte("the rebuilt source's new file"), nil)
	third := s.pull(t, f, hub.Repos{})
	if !third.OK() || !third.Restarted || third.Blobs != 1 || !s.door.Holds(extra.Digest) || s.state.Log != "log-2" {
		t.Fatalf("a pull from a rebuilt source: %+v, state %+v", third, s.state)
	}
}

// A blob the source sends wrong is not asked of it again in the same run:
// a second entry naming the same digest fails at once.
func TestPullAsksNotAgainForAWrongBlob(t *testing.T) {
	f := newForged(t)
	body := []byte("the right bytes")
	c := f.add(f.URL+"/debian/pool/a.deb", body, nil)
	f.add(f.URL+"/debian/pool/b.deb", body, nil) // the same bytes under another name
	f.mu.Lock()
	f.blobs[c.Digest] = []byte("the wrong bytes") // same length, other bytes
	f.mu.Unlock()
	s := newSpoke(t)
	run := s.pull(t, f, hub.Repos{})
	if run.OK() || len(run.Failures) != 2 || s.door.Holds(c.Digest) {
		t.Fatalf("a source that sends wrong bytes: %+v", run)
	}
	if n := f.gets(c.Digest); n != 1 {
		t.Fatalf("the wrong blob was asked for %d times, want 1", n)
	}
}

// An Acquire-By-Hash Release is applied only once this hub holds what the
// source offered of what it lists, by hash: its Packages failing, it is
// kept back (and tried again by the next run).
func TestPullReleaseOnlyWithItsByHashFiles(t *testing.T) {
	f := newForged(t)
	pkgs := []byte("Package: app\nVersion: 1.0\nFilename: pool/main/a/app_1.0_all.deb\nSize: 3\nSHA256: " + digest([]byte("app")).Hex + "\n\n")
	dir := f.URL + "/debian/dists/stable/"
	byHash := f.add(dir+"main/binary-amd64/by-hash/SHA256/"+digest(pkgs).Hex, pkgs, nil)
	rel := []byte(fmt.Sprintf("Origin: t\nSuite: stable\nAcquire-By-Hash: yes\nSHA256:\n %s %d main/binary-amd64/Packages\n", digest(pkgs).Hex, len(pkgs)))
	f.add(dir+"InRelease", rel, &cachestore.Cached{Fetched: time.Now()})
	f.mu.Lock()
	f.failBlobs[byHash.Digest] = true
	f.mu.Unlock()
	s := newSpoke(t)
	run := s.pull(t, f, hub.Repos{})
	if _, err := s.store.Cached(dir + "InRelease"); err == nil {
		t.Fatalf("a Release applied although its by-hash Packages failed: %+v", run)
	}
	f.mu.Lock()
	f.failBlobs = map[cachestore.Digest]bool{}
	f.mu.Unlock()
	if run := s.pull(t, f, hub.Repos{}); !run.OK() {
		t.Fatalf("the next run: %+v", run)
	}
	if _, err := s.store.Cached(dir + "InRelease"); err != nil {
		t.Fatalf("the Release once its Packages came: %v", err)
	}
	// And learnt, as one fetched from the origin: the .deb's hash is known.
	k, err := s.door.Learnt(t.Context(), f.URL+"/debian/pool/main/a/app_1.0_all.deb")
	if err != nil || k.Digest != digest([]byte("app")) {
		t.Fatalf("what the replicated Packages lists was not learnt: %+v %v", k, err)
	}
}

// A Release early in the source's log (a client asked for it first, as
// apt does) and its Packages pages later: the Release is applied at the
// run's end, once this hub holds what it lists, and not while that
// failed; the next run, with the Packages arriving, applies it.
func TestPullAppliesReleaseAfterLaterPages(t *testing.T) {
	f := newForged(t)
	pkgs := []byte("Package: app\nVersion: 1.0\nFilename: pool/main/a/app_1.0_all.deb\nSize: 3\nSHA256: " + digest([]byte("app")).Hex + "\n\n")
	dir := f.URL + "/debian/dists/stable/"
	rel := []byte(fmt.Sprintf("Origin: t\nSuite: stable\nAcquire-By-Hash: yes\nSHA256:\n %s %d main/binary-amd64/Packages\n", digest(pkgs).Hex, len(pkgs)))
	f.add(dir+"InRelease", rel, &cachestore.Cached{Fetched: time.Now()})
	byHash := f.add(dir+"main/binary-amd64/by-hash/SHA256/"+digest(pkgs).Hex, pkgs, nil)
	f.mu.Lock()
	f.failBlobs[byHash.Digest] = true
	items := f.items
	f.page = func(after uint64) hub.Page { // one entry a page
		p := hub.Page{Hub: "forged", Chain: []string{"forged"}, Log: f.log, Next: after, Last: uint64(len(items)), Entries: []cachestore.Change{}}
		for _, c := range items {
			if c.Seq > after {
				p.Entries, p.Next = append(p.Entries, c), c.Seq
				break
			}
		}
		p.More = p.Next < p.Last
		return p
	}
	f.mu.Unlock()
	s := newSpoke(t)
	run := s.pull(t, f, hub.Repos{})
	if _, err := s.store.Cached(dir + "InRelease"); err == nil {
		t.Fatalf("the Release was applied though the Packages it lists (a later page) failed: %+v", run)
	}
	if s.state.Cursor != 2 || len(s.state.Retry) != 2 {
		t.Fatalf("after the failed run: %+v; want the cursor at the end and both entries to try again", s.state)
	}
	f.mu.Lock()
	f.failBlobs[byHash.Digest] = false
	f.mu.Unlock()
	run = s.pull(t, f, hub.Repos{})
	if c, err := s.store.Cached(dir + "InRelease"); err != nil || c.Digest != digest(rel) || !run.OK() || len(s.state.Retry) != 0 {
		t.Fatalf("the next run: %+v, state %+v, InRelease %v; want it applied", run, s.state, err)
	}
}
