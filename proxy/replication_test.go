package proxy

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/hub"
	"github.com/warren-cache/warren/hub/preload"
	"github.com/warren-cache/warren/hub/replicate"
)

// asSyncHub makes a harness a hub with its own id that serves
// replication to the given tokens.
func asSyncHub(id string, mode hub.Mode, tokens ...hub.SyncToken) harnessOpt {
	return func(c *testConfig, _ *cachestore.Config) {
		c.Hub = &testHub{ID: id, Mode: mode, MaxRequesters: 5, Sync: tokens}
	}
}

// pull runs one replication of h from the hub at from.
func (h *harness) pull(ctx context.Context, from *harness, token string, repos hub.Repos, cursor uint64, deletes bool) hub.ReplicateRun {
	h.t.Helper()
	c := hub.FeedClient{From: hub.ReplicateFrom{Name: "src", URL: from.front.URL, Token: token, Repositories: repos},
		Self: h.role.ID(), HTTP: &http.Client{}}
	return h.puller().Run(ctx, replicate.Options{Client: c, From: hub.SourceState{Cursor: cursor}, Deletes: deletes})
}

// puller is the harness hub's pulling side.
func (h *harness) puller() *replicate.Puller {
	return replicate.NewPuller(h.door, h.store, h.role.ID(), nil, h.clock.now)
}

// preload runs a preload list on the harness hub.
func (h *harness) preload(ctx context.Context, o preload.Options) (hub.PreloadRun, error) {
	var feeds preload.Feeds
	if h.feeds != nil {
		feeds = h.feeds
	}
	return preload.NewRunner(h.door, feeds, nil, h.clock.now).Run(ctx, o)
}

const (
	allToken = "token-that-reads-everything"
	rpmToken = "token-that-reads-the-rpm-repo"
)

func TestReplication(t *testing.T) {
	up := newUpstream(t, 10)
	pkgs := []aptPkg{
		{"app", "1:2.0~rc1+dfsg-1", "libfoo (>= 1.0)", randomBytes(30000, 41)},
		{"libfoo", "1.0-1", "", randomBytes(20000, 42)},
	}
	up.setArchive(pkgs)
	rpmBody := randomBytes(25000, 43)
	repomdPath, primaryPath, rpmPath := addRPMRepo(up, rpmBody)
	rpmRepo := hub.Repos{RPM: []hub.RPMRepo{{BaseURL: up.URL + "/el9/os/"}}}
	main := newHarness(t, up, asSyncHub("main", hub.FetchAndPreload,
		hub.SyncToken{Name: "all", Token: allToken}, hub.SyncToken{Name: "rpm", Token: rpmToken, Repositories: rpmRepo}))
	run, err := main.preload(t.Context(), preload.Options{List: hub.PreloadList{
		Apt: []hub.AptPreload{{URL: up.URL + "/debian", Suites: []string{"stable"}, Components: []string{"main"},
			Architectures: []string{"amd64"}, Packages: []string{"app"}}},
		RPM: []hub.RPMPreload{{BaseURL: up.URL + "/el9/os/", Packages: []string{"hel*"}}},
	}})
	if err != nil || run.Fetched != 3 {
		t.Fatalf("the main hub's preload: %+v %v", run, err)
	}

	// The second hub pulls everything.
	sec := newHarness(t, up, asSyncHub("secondary", hub.FetchAndPreload, hub.SyncToken{Name: "spokes", Token: allToken}))
	r1 := sec.pull(t.Context(), main, allToken, hub.Repos{}, 0, false)
	if !r1.OK() || r1.Blobs < 6 || r1.Bytes < 75000 || r1.CursorOut == 0 || r1.CursorOut != r1.Last {
		t.Fatalf("first run: %+v", r1)
	}
	// Nothing new: nothing moves.
	r2 := sec.pull(t.Context(), main, allToken, hub.Repos{}, r1.CursorOut, false)
	if !r2.OK() || r2.Bytes != 0 || r2.Blobs != 0 || r2.Entries != 0 {
		t.Fatalf("second run from the cursor: %+v", r2)
	}
	// Even from the start again: every entry is held, no byte moves.
	r3 := sec.pull(t.Context(), main, allToken, hub.Repos{}, 0, false)
	if !r3.OK() || r3.Bytes != 0 || r3.Blobs != 0 || r3.Entries != r1.Entries {
		t.Fatalf("a run from cursor 0 over held blobs: %+v (first: %+v)", r3, r1)
	}

	// A spoke pulls from the secondary; then the WAN is down and a node
	// behind the spoke installs from what was replicated.
	spoke := newHarness(t, up, asSyncHub("spoke", hub.FetchAndPreload, hub.SyncToken{Name: "x", Token: allToken}))
	if r := spoke.pull(t.Context(), sec, allToken, hub.Repos{}, 0, false); !r.OK() || r.Blobs != r1.Blobs || r.Bytes != r1.Bytes {
		t.Fatalf("the spoke's run from the secondary: %+v (the secondary's: %+v)", r, r1)
	}
	gets := up.count(pkgs[0].path())
	up.Close()
	node := newHarness(t, up, usingHubs(t, true, "", spoke.front.URL))
	node.mustGet(up.URL+releasePath, 200)
	node.mustGet(up.URL+packagesPath, 200)
	for _, p := range pkgs[:2] {
		if _, body := node.mustGet(up.URL+p.path(), 200); !bytes.Equal(body, p.body) {
			t.Fatalf("%s through the spoke with the WAN down: wrong bytes", p.name)
		}
	}
	node.mustGet(up.URL+repomdPath, 200)
	node.mustGet(up.URL+primaryPath, 200)
	if _, body := node.mustGet(up.URL+rpmPath, 200); !bytes.Equal(body, rpmBody) {
		t.Fatal("the rpm through the spoke with the WAN down: wrong bytes")
	}
	if up.count(pkgs[0].path()) != gets {
		t.Fatal("the upstream was asked again")
	}

	// A token limited to the rpm repository reads only that.
	narrow := newHarness(t, up, asSyncHub("narrow", hub.FetchAndPreload))
	rn := narrow.pull(t.Context(), main, rpmToken, hub.Repos{}, 0, false)
	if !rn.OK() || rn.Blobs != 3 { // repomd.xml, primary, the rpm
		t.Fatalf("the rpm-only token's run: %+v", rn)
	}
	if narrow.store.Holds(digestOf(pkgs[0].body)) {
		t.Fatal("an rpm-only token read an apt package")
	}
	for tok, want := range map[string]int{rpmToken: http.StatusNotFound, allToken: http.StatusOK, "": http.StatusUnauthorized} {
		if got := blobStatus(t, main.front.URL+hub.BlobsPath+digestOf(pkgs[0].body).String(), tok); got != want {
			t.Errorf("an apt blob asked with token %q: %d, want %d", tok, got, want)
		}
	}
	// A selection narrows what a token may read, the same way.
	sel := newHarness(t, up, asSyncHub("selective", hub.FetchAndPreload))
	if rs := sel.pull(t.Context(), main, allToken, rpmRepo, 0, false); !rs.OK() || rs.Blobs != 3 {
		t.Fatalf("a pull of the rpm repository only: %+v", rs)
	}

	// A wrong token: refused, the run logged as failed.
	rw := narrow.pull(t.Context(), main, "not-a-token-of-this-hub", hub.Repos{}, 0, false)
	if rw.OK() || !strings.Contains(rw.Error, "401") || !strings.Contains(rw.Error, "replication.tokens") {
		t.Fatalf("a run with a wrong token: %+v", rw)
	}
	// A loop: the main hub pulling from the spoke, whose chain names it.
	main.chain = []string{"main"}
	spoke.chain = []string{"spoke", "secondary", "main"}
	if rl := main.pull(t.Context(), spoke, allToken, hub.Repos{}, 0, false); rl.OK() || !strings.Contains(rl.Error, "loop") || rl.Blobs != 0 {
		t.Fatalf("the main hub pulling from its own spoke: %+v", rl)
	}
}

// Deletions: applied only with replicate_deletes, and a tombstone keeps
// the blob from coming back from a hub that still has it.
func TestReplicationDeletes(t *testing.T) {
	up := newUpstream(t, 10)
	pkgs := []aptPkg{{"app", "1.0", "", randomBytes(30000, 51)}}
	up.setArchive(pkgs)
	tok := hub.SyncToken{Name: "all", Token: allToken}
	main := newHarness(t, up, asSyncHub("main", hub.FetchAndPreload, tok))
	other := newHarness(t, up, asSyncHub("other", hub.FetchAndPreload, tok))
	for _, h := range []*harness{main, other} {
		h.mustGet(up.URL+releasePath, 200)
		h.mustGet(up.URL+packagesPath, 200)
		h.mustGet(up.URL+pkgs[0].path(), 200)
	}
	spoke := newHarness(t, up, asSyncHub("spoke", hub.FetchAndPreload))
	keep := newHarness(t, up, asSyncHub("keeps", hub.FetchAndPreload))
	r := spoke.pull(t.Context(), main, allToken, hub.Repos{}, 0, true)
	rk := keep.pull(t.Context(), main, allToken, hub.Repos{}, 0, false)
	d := digestOf(pkgs[0].body)
	if !r.OK() || !rk.OK() || !spoke.store.Holds(d) || !keep.store.Holds(d) {
		t.Fatalf("first runs: %+v %+v", r, rk)
	}
	main.settle()
	if err := main.store.Idle(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := main.store.Remove(d); err != nil {
		t.Fatal(err)
	}
	if err := main.store.RecordDeletion(d); err != nil {
		t.Fatal(err)
	}
	r = spoke.pull(t.Context(), main, allToken, hub.Repos{}, r.CursorOut, true)
	if !r.OK() || r.Deleted != 1 || spoke.store.Holds(d) {
		t.Fatalf("a run with replicate_deletes after the deletion: %+v (held: %v)", r, spoke.store.Holds(d))
	}
	rk = keep.pull(t.Context(), main, allToken, hub.Repos{}, rk.CursorOut, false)
	if !rk.OK() || rk.Deleted != 0 || !keep.store.Holds(d) {
		t.Fatalf("a run without replicate_deletes: %+v", rk)
	}
	// The other hub still has it: the spoke's tombstone keeps it out.
	ro := spoke.pull(t.Context(), other, allToken, hub.Repos{}, 0, true)
	if !ro.OK() || spoke.store.Holds(d) || ro.Skipped == 0 {
		t.Fatalf("a pull from a hub that still has the deleted blob: %+v (held: %v)", ro, spoke.store.Holds(d))
	}
}

// A run cut short goes on from where it stopped, and fetches no blob
// twice.
func TestReplicationResumes(t *testing.T) {
	up := newUpstream(t, 10)
	var pkgs []aptPkg
	for i := range 6 {
		pkgs = append(pkgs, aptPkg{string(rune('a'+i)) + "pkg", "1.0", "", randomBytes(20000, uint64(60+i))})
	}
	up.setArchive(pkgs)
	main := newHarness(t, up, asSyncHub("main", hub.FetchAndPreload, hub.SyncToken{Name: "all", Token: allToken}))
	main.mustGet(up.URL+releasePath, 200)
	main.mustGet(up.URL+packagesPath, 200)
	for _, p := range pkgs {
		main.mustGet(up.URL+p.path(), 200)
	}
	main.settle()
	if err := main.store.Idle(t.Context()); err != nil {
		t.Fatal(err)
	}
	spoke := newHarness(t, up, asSyncHub("spoke", hub.FetchAndPreload))
	ctx, cancel := context.WithCancel(t.Context())
	c := hub.FeedClient{From: hub.ReplicateFrom{Name: "main", URL: main.front.URL, Token: allToken}, Self: "spoke", HTTP: &http.Client{}}
	var saved uint64
	first := spoke.puller().Run(ctx, replicate.Options{Client: c, Saved: func(st hub.SourceState) { saved = st.Cursor },
		Progress: func(done, _ int, _ int64) {
			if done == 3 {
				cancel()
			}
		}})
	if first.OK() || !strings.Contains(first.Error, "stopped") || first.Blobs == 0 || saved != 0 {
		t.Fatalf("a run stopped midway: %+v (cursor saved %d)", first, saved)
	}
	// A fill the stop left running is the door's: it finishes.
	if err := spoke.store.Idle(t.Context()); err != nil {
		t.Fatal(err)
	}
	second := spoke.puller().Run(t.Context(), replicate.Options{Client: c, From: hub.SourceState{Cursor: saved}})
	// Every blob came over once: none fetched twice, none lost.
	want := int64(len(up.files[releasePath]) + len(up.files[packagesPath]))
	for _, p := range pkgs {
		want += int64(len(p.body))
		if !spoke.store.Holds(digestOf(p.body)) {
			t.Fatalf("%s is not held after the second run: %+v", p.name, second)
		}
	}
	if !second.OK() || main.repl.Served() != want {
		t.Fatalf("the run after it: %+v (first %+v); the main hub served %d bytes, want %d (each blob once)", second, first, main.repl.Served(), want)
	}
}

func digestOf(b []byte) cachestore.Digest {
	return cachestore.Digest{Algo: "sha256", Hex: sha256hex(b)}
}

// blobStatus is the status of a direct GET of a replication URL.
func blobStatus(t *testing.T, u, token string) int {
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// A hub's own newer copy of an index file is not replaced by an older one
// from the hub it pulls from.
func TestReplicationKeepsNewerCopy(t *testing.T) {
	up := newUpstream(t, 10)
	up.setArchive([]aptPkg{{"app", "1.0", "", randomBytes(3000, 71)}})
	main := newHarness(t, up, asSyncHub("main", hub.FetchAndPreload, hub.SyncToken{Name: "all", Token: allToken}))
	main.mustGet(up.URL+releasePath, 200)
	main.mustGet(up.URL+packagesPath, 200)
	up.setArchive([]aptPkg{{"app", "1.1", "", randomBytes(3000, 72)}})
	spoke := newHarness(t, up, asSyncHub("spoke", hub.FetchAndPreload))
	spoke.clock.advance(time.Hour)
	_, newer := spoke.mustGet(up.URL+releasePath, 200)
	r := spoke.pull(t.Context(), main, allToken, hub.Repos{}, 0, false)
	if r.Error != "" || r.Skipped == 0 {
		t.Fatalf("the pull: %+v", r)
	}
	c, err := spoke.store.Cached(canonicalKey(t, up.URL+releasePath))
	if err != nil || c.Digest != digestOf(newer) {
		t.Fatalf("the spoke's Release after the pull: %v %v; want its own newer one kept", c.Digest, err)
	}
}

func canonicalKey(t *testing.T, raw string) string {
	key, ok := door.CanonicalString(raw)
	if !ok {
		t.Fatalf("no canonical form of %s", raw)
	}
	return key
}

// A Release is applied only with the files of it the source offered: when
// its Packages cannot be had, the spoke keeps no Release rather than one
// whose files it lacks.
func TestReplicationReleaseOnlyWithItsFiles(t *testing.T) {
	up := newUpstream(t, 10)
	up.setArchive([]aptPkg{{"app", "1.0", "", randomBytes(3000, 81)}})
	main := newHarness(t, up, asSyncHub("main", hub.FetchAndPreload, hub.SyncToken{Name: "all", Token: allToken}))
	main.mustGet(up.URL+releasePath, 200)
	_, pkgs := main.mustGet(up.URL+packagesPath, 200)
	// The source, as the spoke sees it: the Packages blob fails.
	broken := digestOf(pkgs).String()
	target, _ := url.Parse(main.front.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, broken) {
			http.Error(w, "disk trouble", http.StatusInternalServerError)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(src.Close)
	spoke := newHarness(t, up, asSyncHub("spoke", hub.Preload))
	c := hub.FeedClient{From: hub.ReplicateFrom{Name: "main", URL: src.URL, Token: allToken}, Self: "spoke", HTTP: &http.Client{}}
	r := spoke.puller().Run(t.Context(), replicate.Options{Client: c})
	if r.OK() || len(r.Failures) != 2 || !strings.Contains(strings.Join(r.Failures, "\n"), "kept the previous one") {
		t.Fatalf("a run whose Packages fails: %+v", r)
	}
	if _, err := spoke.store.Cached(canonicalKey(t, up.URL+releasePath)); err == nil {
		t.Fatal("the spoke serves a Release whose Packages it lacks")
	}
	// Once the Packages come through, the Release follows.
	c.From.URL = main.front.URL
	if r := spoke.puller().Run(t.Context(), replicate.Options{Client: c}); !r.OK() {
		t.Fatalf("the run after: %+v", r)
	}
	if _, err := spoke.store.Cached(canonicalKey(t, up.URL+releasePath)); err != nil {
		t.Fatalf("the Release after its Packages came: %v", err)
	}
}

// A spoke learns what it pulls, as if it had fetched it from the origin:
// with the WAN gone, a plain apt client of the spoke (no X-Warren-Digest,
// as apt sends none) updates by hash and gets every .deb it never asked
// for before.
func TestReplicatedSpokeServesPlainClientsOffline(t *testing.T) {
	up := newUpstream(t, 40000)
	main := newHarness(t, up, asSyncHub("main", hub.FetchAndPreload, hub.SyncToken{Name: "all", Token: allToken}))
	byHash := "/debian/dists/stable/main/binary-amd64/by-hash/SHA256/" + sha256hex(up.files[packagesPath])
	for _, p := range []string{releasePath, byHash, debPath} {
		main.mustGet(up.URL+p, 200) // one machine of the main site, as apt asks
	}
	main.settle()
	if err := main.store.Idle(t.Context()); err != nil {
		t.Fatal(err)
	}
	spoke := newHarness(t, up, asSyncHub("spoke", hub.FetchAndPreload))
	if r := spoke.pull(t.Context(), main, allToken, hub.Repos{}, 0, false); !r.OK() || r.Blobs != 3 {
		t.Fatalf("the pull: %+v", r)
	}
	up.Close() // the WAN is down
	spoke.clock.advance(time.Hour)
	gets := up.count(debPath)
	if _, body := spoke.mustGet(up.URL+releasePath, 200); !bytes.Equal(body, up.files[releasePath]) {
		t.Fatal("the spoke's InRelease, offline")
	}
	if _, body := spoke.mustGet(up.URL+byHash, 200); !bytes.Equal(body, up.files[packagesPath]) {
		t.Fatal("the spoke's Packages by hash, offline")
	}
	resp, body := spoke.mustGet(up.URL+debPath, 200)
	if !bytes.Equal(body, up.deb) || !strings.HasPrefix(resp.Header.Get("X-Cache"), "HIT") || up.count(debPath) != gets {
		t.Fatalf("a plain client's .deb from the spoke, offline: %d bytes, X-Cache %q", len(body), resp.Header.Get("X-Cache"))
	}
	if k, err := spoke.known(up.debURL); err != nil || k.Digest.Hex != sha256hex(up.deb) {
		t.Fatalf("the spoke did not learn the .deb's hash from what it pulled: %+v %v", k, err)
	}
}
