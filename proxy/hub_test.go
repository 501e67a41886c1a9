package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/hub"
)

// asHub makes a harness a site hub.
func asHub(mode hub.Mode, maxRequesters int, tokens ...string) harnessOpt {
	return func(c *testConfig, _ *cachestore.Config) {
		c.Hub = &testHub{ID: "hub-under-test", Mode: mode, Tokens: tokens, MaxRequesters: maxRequesters}
	}
}

// usingHubs makes a harness a node of the hubs at the given URLs.
func usingHubs(t testing.TB, only bool, token string, urls ...string) harnessOpt {
	return func(c *testConfig, _ *cachestore.Config) {
		for _, u := range urls {
			p, err := hub.NewParent(hub.ParentConfig{URL: u, Token: token})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.CloseIdleConnections)
			c.Hubs = append(c.Hubs, p)
		}
		c.HubOnly = only
	}
}

func figure(t testing.TB, h *harness, name string) int64 {
	t.Helper()
	h.settle()
	resp, err := http.Get(h.front.URL + "/_warren/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	f, _ := v[name].(float64)
	return int64(f)
}

// Two nodes behind one hub: index files and the artifact cross the WAN
// once, and both nodes learn the artifact's hash from what the hub passed
// on, and verify it.
func TestHubIsTheSitesParent(t *testing.T) {
	up := newUpstream(t, 1<<20)
	hb := newHarness(t, up, asHub(hub.Fetch, 5))
	for i := range 2 {
		n := newHarness(t, up, usingHubs(t, false, "", hb.front.URL))
		n.learn()
		_, body := n.mustGet(up.debURL, 200)
		if !bytes.Equal(body, up.deb) {
			t.Fatalf("node %d got wrong bytes", i)
		}
		if got := figure(t, n, "bytes_upstream"); got != 0 {
			t.Errorf("node %d fetched %d bytes from the origin itself, want all through the hub", i, got)
		}
		if got := figure(t, n, "bytes_hubs"); got < int64(len(up.deb)) {
			t.Errorf("node %d: %d bytes from the hub, want at least the deb's %d", i, got, len(up.deb))
		}
	}
	for _, p := range []string{releasePath, packagesPath, debPath} {
		if n := up.count(p); n != 1 {
			t.Errorf("the origin served %s %d times, want once for the site", p, n)
		}
	}
	if got := figure(t, hb, "bytes_served"); got < 2*int64(len(up.deb)) {
		t.Errorf("hub served %d bytes, want at least two debs", got)
	}
	metrics := func(h *harness) string {
		resp, err := http.Get(h.front.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	for _, want := range []string{`warren_hub_refusals_total{reason="max-requesters"} 0`, "warren_hub_queue_streaming 0",
		"warren_hub_queue_waiting 0", `warren_bytes_total{source="served"}`} {
		if m := metrics(hb); !strings.Contains(m, want) {
			t.Errorf("the hub's /metrics lack %s", want)
		}
	}
	n := newHarness(t, up, usingHubs(t, false, "", hb.front.URL))
	n.mustGet(up.URL+releasePath, 200)
	for _, want := range []string{`warren_hub_reachable{hub="` + strings.TrimSuffix(hb.front.URL, "/") + `"} 1`, `warren_hub_received_bytes_total{hub=`, `warren_bytes_total{source="hub"}`} {
		if m := metrics(n); !strings.Contains(m, want) {
			t.Errorf("a node's /metrics lack %s", want)
		}
	}
}

func TestHubTokens(t *testing.T) {
	up := newUpstream(t, 1000)
	hb := newHarness(t, up, asHub(hub.Fetch, 5, "right-token"))
	for _, tt := range []struct {
		name     string
		token    string
		only     bool
		status   int
		origin   int // GETs of the Release at the origin after the request
		refusals int64
	}{
		{"no token, hub_only: a clear error", "", true, http.StatusBadGateway, 0, 1},
		{"wrong token, hub_only: a clear error", "wrong", true, http.StatusBadGateway, 0, 2},
		{"wrong token: the origin instead", "wrong", false, http.StatusOK, 1, 3},
		{"the right token", "right-token", true, http.StatusOK, 2, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := newHarness(t, up, usingHubs(t, tt.only, tt.token, hb.front.URL))
			_, body := n.mustGet(up.URL+releasePath, tt.status)
			if tt.status != http.StatusOK && !strings.Contains(string(body), "token") {
				t.Errorf("the client's error does not say what was wrong: %q", body)
			}
			if got := up.count(releasePath); got != tt.origin {
				t.Errorf("origin GETs of the Release: %d, want %d", got, tt.origin)
			}
			if got := hb.role.Refusals()[hub.ReasonToken]; got != tt.refusals {
				t.Errorf("hub refused %d requests for their token, want %d", got, tt.refusals)
			}
		})
	}
	// apt's proxy credentials (http://user:TOKEN@hub/) are Basic.
	req, _ := http.NewRequest(http.MethodGet, hb.front.URL+"/"+strings.TrimPrefix(up.URL, "http://")+releasePath, nil)
	req.SetBasicAuth("warren", "right-token")
	req.Header.Set("Proxy-Authorization", req.Header.Get("Authorization"))
	req.Header.Del("Authorization")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("Basic proxy credentials with the token: %d, want 200", resp.StatusCode)
	}
	resp, err = http.Get(hb.front.URL + hub.InfoPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("the hub's info without a token: %d, want 401 with WWW-Authenticate", resp.StatusCode)
	}
}

// A hub in preload mode serves what it holds, as it is, and refuses the
// rest with a reason and no byte over the WAN; a node that may use only
// the hub passes the refusal on.
func TestHubPreloadMode(t *testing.T) {
	up := newUpstream(t, 4000)
	hb := newHarness(t, up, asHub(hub.Fetch, 5))
	n := newHarness(t, up, usingHubs(t, true, "", hb.front.URL))
	n.learn()
	n.mustGet(up.debURL, 200)
	hb.stop()
	hb.start(asHub(hub.Preload, 5))
	before := up.count(releasePath) + up.count(packagesPath) + up.count(debPath)
	hb.clock.advance(time.Hour) // the index files are long stale: served as held all the same
	n2 := newHarness(t, up, usingHubs(t, true, "", hb.front.URL))
	n2.learn()
	_, body := n2.mustGet(up.debURL, 200)
	if !bytes.Equal(body, up.deb) {
		t.Fatal("wrong bytes from a preloaded hub")
	}
	// Upstream moves on: a new hash is a new artifact, not held.
	newDeb := randomBytes(4000, 7)
	req, _ := http.NewRequest(http.MethodGet, up.debURL, nil)
	req.Header.Set(hub.HeaderDigest, "sha256:"+sha256hex(newDeb))
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(mustURL(hb.front.URL))}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || resp.Header.Get(hub.HeaderRefused) != hub.ReasonNotPreloaded {
		t.Fatalf("a new hash in preload mode: %d %s %q, want 404 not-preloaded", resp.StatusCode, resp.Header.Get(hub.HeaderRefused), msg)
	}
	// And through a node that may use only the hub.
	_, body = n2.mustGet(up.URL+"/debian/pool/main/o/other/other_1.0_amd64.deb", http.StatusNotFound)
	if !strings.Contains(string(body), "preload") {
		t.Errorf("the node's client is not told why: %q", body)
	}
	if after := up.count(releasePath) + up.count(packagesPath) + up.count(debPath); after != before {
		t.Fatalf("a hub in preload mode went to the origin: %d GETs, want %d", after, before)
	}
}

// A dead hub sends nodes to the origin; with hub_only, the client is told.
// A hub that dies mid-transfer: the origin goes on from where it stopped.
func TestHubDown(t *testing.T) {
	up := newUpstream(t, 2<<20)
	hb := newHarness(t, up, asHub(hub.Fetch, 5))
	dead := hb.front.URL
	n := newHarness(t, up, usingHubs(t, false, "", dead))
	n.learn()
	gate, reached := make(chan struct{}), make(chan struct{}, 10)
	gatedDeb(up, gate, reached)
	done := make(chan []byte, 1)
	go func() {
		_, body, err := n.get(up.debURL)
		if err != nil {
			t.Error(err)
		}
		done <- body
	}()
	<-reached // the hub is fetching: half is on its way to the node
	up.hook(debPath, nil)
	up.mu.Lock()
	delete(up.hooks, debPath)
	up.mu.Unlock()
	hb.front.CloseClientConnections()
	hb.stop()
	close(gate)
	select {
	case body := <-done:
		if !bytes.Equal(body, up.deb) {
			t.Fatalf("after the hub died mid-transfer the node's client got %d wrong bytes", len(body))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no answer 30s after the hub died")
	}
	// Only-hub nodes with the hub down: a clear error.
	only := newHarness(t, up, usingHubs(t, true, "", dead))
	_, body := only.mustGet(up.URL+releasePath, http.StatusBadGateway)
	if !strings.Contains(string(body), "unreachable") || !strings.Contains(string(body), "hub_only") {
		t.Errorf("a hub_only node's client is not told the hub is unreachable and why the origin was not asked: %q", body)
	}
}

// max_requesters: while the hub fetches an artifact, one more requester
// is told to wait, with its position and the transfer's progress; it
// comes back after the delay and gets the stored artifact.
func TestHubMaxRequesters(t *testing.T) {
	up := newUpstream(t, 1<<20)
	hb := newHarness(t, up, asHub(hub.Fetch, 1))
	n1 := newHarness(t, up, usingHubs(t, true, "", hb.front.URL))
	n2 := newHarness(t, up, usingHubs(t, true, "", hb.front.URL))
	n1.learn()
	n2.learn()
	gate, reached := make(chan struct{}), make(chan struct{}, 10)
	gatedDeb(up, gate, reached)
	first := make(chan []byte, 1)
	go func() { _, b, _ := n1.get(up.debURL); first <- b }()
	<-reached
	// Half is on its way: wait until the hub's fill has some of it.
	f, ok := hb.store.Filling(cachestore.FillKey(cachestore.Digest{Algo: "sha256", Hex: sha256hex(up.deb)}))
	if !ok {
		t.Fatal("the hub is not filling the deb")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := f.WaitData(ctx); err != nil {
		t.Fatalf("the hub's fill received nothing of the half upstream sent: %v", err)
	}
	// A third party sees the queue's answer as a node does.
	req, _ := http.NewRequest(http.MethodGet, up.debURL, nil)
	req.Header.Set(hub.HeaderDigest, "sha256:"+sha256hex(up.deb))
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(mustURL(hb.front.URL))}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var busy hub.Busy
	json.NewDecoder(resp.Body).Decode(&busy)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" ||
		busy.Position != 1 || busy.Total != int64(len(up.deb)) || busy.Done <= 0 || resp.Header.Get(hub.HeaderProgress) == "" {
		t.Fatalf("a requester beyond max_requesters: %d Retry-After %q %+v, want 503, position 1 and the progress",
			resp.StatusCode, resp.Header.Get("Retry-After"), busy)
	}
	second := make(chan []byte, 1)
	go func() { _, b, _ := n2.get(up.debURL); second <- b }()
	deadline := time.After(20 * time.Second)
	for n2.px.door.Stats().HubWaits.Load() == 0 {
		select {
		case <-deadline:
			t.Fatal("the second node was never told to wait")
		case <-time.After(20 * time.Millisecond):
		}
	}
	close(gate)
	for i, ch := range []chan []byte{first, second} {
		select {
		case b := <-ch:
			if !bytes.Equal(b, up.deb) {
				t.Fatalf("node %d got %d wrong bytes: %q", i+1, len(b), clipBody(b))
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("node %d has no answer", i+1)
		}
	}
	if n := up.count(debPath); n != 1 {
		t.Fatalf("the origin served the deb %d times, want once", n)
	}
	if got := hb.role.Refusals()[hub.ReasonMaxRequesters]; got < 2 {
		t.Fatalf("the hub told %d requesters to wait, want at least 2", got)
	}
}

// lateHub is a hub known only once its harness runs: a chain of two hubs
// that name each other.
type lateHub struct{ p **hub.Parent }

func (l lateHub) Name() string                               { return (*l.p).Name() }
func (l lateHub) Do(r *http.Request) (*http.Response, error) { return (*l.p).Do(r) }
func (l lateHub) Received(n int64)                           { (*l.p).Received(n) }

// Two hubs that use each other: the request that comes back to the first
// is refused as a loop (508), and the content still comes, from the
// origin.
func TestHubChainLoopRefused(t *testing.T) {
	up := newUpstream(t, 1000)
	var pa, pb *hub.Parent
	withLate := func(p **hub.Parent) harnessOpt {
		return func(c *testConfig, _ *cachestore.Config) { c.Hubs = []door.Hub{lateHub{p}} }
	}
	a := newHarness(t, up, asHub(hub.Fetch, 5), withLate(&pb))
	b := newHarness(t, up, asHub(hub.Fetch, 5), withLate(&pa))
	var err error
	if pa, err = hub.NewParent(hub.ParentConfig{URL: a.front.URL}); err != nil {
		t.Fatal(err)
	}
	if pb, err = hub.NewParent(hub.ParentConfig{URL: b.front.URL}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pa.CloseIdleConnections)
	t.Cleanup(pb.CloseIdleConnections)
	a.mustGet(up.URL+releasePath, 200)
	if got := a.role.Refusals()[hub.ReasonLoop]; got != 1 {
		t.Fatalf("loops refused by the first hub: %d, want 1", got)
	}
	if n := up.count(releasePath); n != 1 {
		t.Fatalf("origin GETs: %d, want 1", n)
	}
}

// Consistent metadata: a node midway through its update on the previous
// generation still gets the index files its Release lists; a new Release
// goes out once the hub holds the index files the site uses; a Release
// whose index files upstream cannot give yet (a mirror mid-sync) is held
// back, and nodes get the previous generation whole.
func TestHubConsistentGenerations(t *testing.T) {
	up := newUpstream(t, 2000)
	hb := newHarness(t, up, asHub(hub.Fetch, 5))
	node := func() *harness { return newHarness(t, up, usingHubs(t, true, "", hb.front.URL)) }
	gen := func() (release, packages []byte) {
		up.mu.Lock()
		defer up.mu.Unlock()
		return up.files[releasePath], up.files[packagesPath]
	}
	first := node()
	first.learn() // the site uses Packages.gz: the hub holds it
	rel1, pkgs1 := gen()

	midway := node()
	midway.mustGet(up.URL+releasePath, 200) // apt has the old InRelease...

	// Upstream moves on, and keeps no old by-hash files.
	up.setRepo(randomBytes(2100, 2))
	rel2, pkgs2 := gen()
	up.mu.Lock()
	delete(up.files, "/debian/dists/stable/main/binary-amd64/by-hash/SHA256/"+sha256hex(pkgs1))
	up.modAt = up.modAt.Add(time.Hour)
	up.mu.Unlock()
	hb.clock.advance(time.Minute)
	next := node()
	if _, body := next.mustGet(up.URL+releasePath, 200); !bytes.Equal(body, rel2) {
		t.Fatal("the new Release was not handed out although upstream has all it lists")
	}
	if _, body := next.mustGet(up.URL+packagesPath, 200); !bytes.Equal(body, pkgs2) {
		t.Fatal("the new Release's Packages does not match it")
	}

	// The previous generation's index files are pinned against eviction.
	if !hb.store.Pinned(cachestore.Digest{Algo: "sha256", Hex: sha256hex(pkgs1)}) || !hb.store.Pinned(cachestore.Digest{Algo: "sha256", Hex: sha256hex(pkgs2)}) {
		t.Fatal("the hub does not pin the index files of its last two generations")
	}

	// ...and asks for its Packages now: the generation its Release lists.
	if _, body := midway.mustGet(up.URL+packagesPath, 200); !bytes.Equal(body, pkgs1) {
		t.Fatal("a node midway through its update got another generation's Packages: apt would say Hash Sum mismatch")
	}

	// A mirror mid-sync: the third Release is there, its Packages not yet.
	up.setRepo(randomBytes(2200, 3))
	rel3, pkgs3 := gen()
	up.mu.Lock()
	delete(up.files, packagesPath)
	delete(up.files, "/debian/dists/stable/main/binary-amd64/by-hash/SHA256/"+sha256hex(pkgs3))
	up.modAt = up.modAt.Add(time.Hour)
	up.mu.Unlock()
	hb.clock.advance(time.Minute)
	late := node()
	_, body := late.mustGet(up.URL+releasePath, 200)
	if bytes.Equal(body, rel3) || !bytes.Equal(body, rel2) {
		t.Fatal("a Release whose Packages the hub cannot get was handed out (or not the previous one instead)")
	}
	if _, body := late.mustGet(up.URL+packagesPath, 200); !bytes.Equal(body, pkgs2) {
		t.Fatal("the previous generation's Packages is not served with its Release")
	}
	_ = rel1
}

// Chocolatey's request sequence through two nodes that may use only the
// hub: every feed call and the package come through it, and cross to the
// feed once for the site.
func TestChocolateyThroughHub(t *testing.T) {
	feed := newNugetFeed(t)
	hb := newHarness(t, newUpstream(t, 10), asHub(hub.Fetch, 5, "t0ken"))
	total := func() int {
		feed.mu.Lock()
		defer feed.mu.Unlock()
		n := 0
		for _, c := range feed.gets {
			n += c
		}
		return n
	}
	after := 0
	for i := range 2 {
		n := newHarness(t, newUpstream(t, 10), usingHubs(t, true, "t0ken", hb.front.URL), func(c *testConfig, _ *cachestore.Config) {
			c.ChocolateyFeeds = map[string]string{"": feed.base()}
		})
		c := &chocoClient{t: t, base: n.front.URL + "/chocolatey/api/v2/", hc: &http.Client{}}
		if got := c.install(feed.URL); !bytes.Equal(got, feed.pkgs["tool/2.0.0"]) {
			t.Fatalf("node %d: downloaded %d bytes, not the package", i, len(got))
		}
		if got := figure(t, n, "bytes_upstream"); got != 0 {
			t.Fatalf("node %d went to the feed itself (%d bytes) although hub_only", i, got)
		}
		if i == 0 {
			after = total()
		}
	}
	if n := feed.count("/cdn/tool.2.0.0.nupkg"); n != 1 {
		t.Fatalf("feed downloads of the nupkg: %d, want 1 for the site", n)
	}
	if n := total(); n != after {
		t.Fatalf("the second node's calls reached the feed (%d requests after the first node's %d): the hub should have answered them", n, after)
	}
}

// The same for dnf: a new repomd.xml reaches nodes once the hub holds the
// primary.xml it names; while upstream lacks it (mid-sync), nodes get the
// previous repomd.xml, whose primary the hub holds.
func TestHubConsistentRepomd(t *testing.T) {
	up := newUpstream(t, 10)
	repomd, primary1, _ := addRPMRepo(up, randomBytes(3000, 5))
	hb := newHarness(t, up, asHub(hub.Fetch, 5))
	n1 := newHarness(t, up, usingHubs(t, true, "", hb.front.URL))
	_, md1 := n1.mustGet(up.URL+repomd, 200)
	n1.mustGet(up.URL+primary1, 200)

	// Upstream: a new primary, listed by a new repomd.xml; mid-sync, the
	// primary is not there yet.
	_, primary2, _ := addRPMRepo(up, randomBytes(3000, 6))
	up.mu.Lock()
	delete(up.files, primary2)
	up.modAt = up.modAt.Add(time.Hour)
	up.mu.Unlock()
	hb.clock.advance(time.Minute)
	n2 := newHarness(t, up, usingHubs(t, true, "", hb.front.URL))
	if _, md := n2.mustGet(up.URL+repomd, 200); !bytes.Equal(md, md1) {
		t.Fatal("a repomd.xml whose primary the hub cannot get was handed out")
	}
	n2.mustGet(up.URL+primary1, 200)

	// Synced: the new one goes out, its primary already held.
	_, primary2, _ = addRPMRepo(up, randomBytes(3000, 6))
	hb.clock.advance(time.Minute)
	n3 := newHarness(t, up, usingHubs(t, true, "", hb.front.URL))
	if _, md := n3.mustGet(up.URL+repomd, 200); bytes.Equal(md, md1) {
		t.Fatal("the new repomd.xml was not handed out once upstream had its primary")
	}
	if !hb.px.door.Holds(cachestore.Digest{Algo: "sha256", Hex: strings.TrimSuffix(strings.TrimPrefix(primary2, "/el9/os/repodata/"), "-primary.xml.gz")}) {
		t.Fatal("the hub handed out the new repomd.xml without holding its primary")
	}
	n3.mustGet(up.URL+primary2, 200)
}

// A regional hub behind a main one: a node's request crosses both, each
// keeps a copy, and the origin serves it once.
func TestHubChain(t *testing.T) {
	up := newUpstream(t, 100000)
	main := newHarness(t, up, asHub(hub.Fetch, 5, "main-token"))
	regional := newHarness(t, up, asHub(hub.Fetch, 5), usingHubs(t, true, "main-token", main.front.URL))
	for range 2 {
		n := newHarness(t, up, usingHubs(t, true, "", regional.front.URL))
		n.learn()
		if _, body := n.mustGet(up.debURL, 200); !bytes.Equal(body, up.deb) {
			t.Fatal("wrong bytes through two hubs")
		}
	}
	if got := up.count(debPath); got != 1 {
		t.Fatalf("the origin served the deb %d times, want once", got)
	}
	if got := figure(t, main, "bytes_served"); got < int64(len(up.deb)) || got >= 2*int64(len(up.deb)) {
		t.Fatalf("the main hub served %d bytes: want the deb once (the regional hub keeps its copy)", got)
	}
}

// A client with an older Release asks for that generation's Packages (a
// store hit): what the newer one taught stays.
func TestOldIndexHitDoesNotRelearn(t *testing.T) {
	up := newUpstream(t, 1000)
	h := newHarness(t, up)
	h.learn()
	up.mu.Lock()
	byHash1 := up.URL + "/debian/dists/stable/main/binary-amd64/by-hash/SHA256/" + sha256hex(up.files[packagesPath])
	up.mu.Unlock()
	deb2 := randomBytes(1000, 3)
	up.setRepo(deb2)
	up.mu.Lock()
	up.modAt = up.modAt.Add(time.Hour)
	up.mu.Unlock()
	h.clock.advance(time.Minute)
	h.mustGet(up.URL+releasePath, 200)
	h.mustGet(up.URL+packagesPath, 200)
	if k, err := h.known(up.debURL); err != nil || k.Digest.Hex != sha256hex(deb2) {
		t.Fatalf("the second generation was not learnt: %+v %v", k, err)
	}
	h.mustGet(byHash1, 200) // the first generation's Packages, from the store
	if k, err := h.known(up.debURL); err != nil || k.Digest.Hex != sha256hex(deb2) {
		t.Fatalf("an old generation's Packages served from the store took the facts back: %+v %v", k, err)
	}
}

// fromAddr is a client of h that connects from a loopback address of its
// own (127.0.0.0/8 is all this machine's), so that a test has several
// client addresses; proxy sends its requests as proxy requests.
func fromAddr(t *testing.T, h *harness, ip string, proxy bool) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	tr := &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}
	if proxy {
		pu, _ := url.Parse(h.front.URL)
		tr.Proxy = http.ProxyURL(pu)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// The hub's door: a proxy request without a good token gets 407 and a
// Basic challenge naming the setting, a direct one (apt-cacher-ng style,
// the hub's info, replication) 401 and a Bearer challenge. Past 5
// failures a minute an address gets 429 with Retry-After, its token not
// even checked, while another address is served; each address's failures
// are logged once a window, its URL cut at 256 characters.
func TestHubDoor(t *testing.T) {
	up := newUpstream(t, 1000)
	const token, syncToken = "right-token-0123456789", "sync-token-0123456789"
	var logs lockedBuffer
	hb := newHarness(t, up, asHub(hub.Fetch, 5, token), func(c *testConfig, _ *cachestore.Config) {
		c.Hub.Sync = []hub.SyncToken{{Name: "s", Token: syncToken}}
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	release := up.URL + releasePath
	direct := hb.front.URL + "/" + strings.TrimPrefix(up.URL, "http://") + releasePath
	long := release + "?" + strings.Repeat("x", 1000)
	changes := hb.front.URL + hub.ChangesPath
	type try struct {
		name    string
		from    string
		proxy   bool
		url     string
		bearer  string
		status  int
		headers map[string]string
		body    string
	}
	do := func(t *testing.T, tt try) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, tt.url, nil)
		if tt.bearer != "" {
			h := "Authorization"
			if tt.proxy {
				h = "Proxy-Authorization"
			}
			req.Header.Set(h, "Bearer "+tt.bearer)
		}
		resp, err := fromAddr(t, hb, tt.from, tt.proxy).Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status {
			t.Fatalf("%s: %d, want %d: %s", tt.name, resp.StatusCode, tt.status, body)
		}
		for k, v := range tt.headers {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("%s: %s: %q, want %q", tt.name, k, got, v)
			}
		}
		if !strings.Contains(string(body), tt.body) {
			t.Errorf("%s: the body does not say %q: %s", tt.name, tt.body, body)
		}
	}
	const bad, good = "127.0.0.2", "127.0.0.3"
	basic := map[string]string{"Proxy-Authenticate": `Basic realm="warren hub"`, hub.HeaderRefused: hub.ReasonToken}
	bearer := map[string]string{"WWW-Authenticate": `Bearer realm="warren hub"`, hub.HeaderRefused: hub.ReasonToken}
	limited := map[string]string{"Retry-After": "60", hub.HeaderRefused: hub.ReasonAuthLimit}
	for _, tt := range []try{
		{"a proxy request with a wrong token and a long URL", bad, true, long, "wrong-token-0123456789", http.StatusProxyAuthRequired, basic, "hub_token"},
		{"a proxy request without a token", bad, true, release, "", http.StatusProxyAuthRequired, basic, `Acquire::http::Proxy "http://warren:TOKEN@hub:port/"`},
		{"a direct request without a token", bad, false, direct, "", http.StatusUnauthorized, bearer, "hub_token"},
		{"the hub's info without a token", bad, false, hb.front.URL + hub.InfoPath, "", http.StatusUnauthorized, bearer, "hub_token"},
		{"the change feed with a wrong sync token", bad, false, changes, token, http.StatusUnauthorized, bearer, "replication.tokens"},
		{"the sixth failure in the minute", bad, true, release, "", http.StatusTooManyRequests, limited, "try again in 60 s"},
		{"the right token from that address: not even checked", bad, true, release, token, http.StatusTooManyRequests, limited, "try again"},
		{"the right sync token from that address", bad, false, changes, syncToken, http.StatusTooManyRequests, limited, "try again"},
		{"another address with the right token", good, true, release, token, http.StatusOK, nil, ""},
		{"another address, direct, with the right token", good, false, direct, token, http.StatusOK, nil, ""},
		{"another address with the right sync token", good, false, changes, syncToken, http.StatusOK, nil, `"entries"`},
	} {
		do(t, tt)
	}
	hb.settle()
	l := logs.String()
	if n := strings.Count(l, "client="+bad); n != 1 {
		t.Errorf("the failures of %s were logged %d times in their window, want once:\n%s", bad, n, l)
	}
	if strings.Contains(l, strings.Repeat("x", 300)) || !strings.Contains(l, "…(cut, ") {
		t.Errorf("a long URL was logged whole, or its cut not marked:\n%s", l)
	}
	if got := hb.role.Refusals(); got[hub.ReasonToken] != 5 || got[hub.ReasonAuthLimit] != 3 {
		t.Errorf("refusals counted: %v, want 5 for the token, 3 for the limit", got)
	}
	// A minute on: the address may try again; its next failure is
	// logged with the last window's count.
	hb.clock.advance(time.Minute)
	do(t, try{"the right token a minute later", bad, true, release, token, http.StatusOK, nil, ""})
	do(t, try{"a wrong one again", bad, true, release, "", http.StatusProxyAuthRequired, basic, "hub_token"})
	hb.settle()
	if l := logs.String(); !strings.Contains(l, "failures_window_before=8") {
		t.Errorf("the new window's line does not count the last window's 8 failures:\n%s", l)
	}
}

// A node tells its operator what its hub said of its token: 407 to its
// proxy requests, 401 to its probe, 429 once its address failed too often.
func TestNodeSeesTokenRefusals(t *testing.T) {
	up := newUpstream(t, 1000)
	hb := newHarness(t, up, asHub(hub.Fetch, 5, "right-token-0123456789"))
	p, err := hub.NewParent(hub.ParentConfig{URL: hb.front.URL, Token: "wrong-token-0123456789"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.CloseIdleConnections)
	get := func() error {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, up.URL+releasePath, nil)
		resp, err := p.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	var re *hub.RefusedError
	if err := get(); !errors.As(err, &re) || re.Status != http.StatusProxyAuthRequired || !strings.Contains(err.Error(), "hub_token") {
		t.Fatalf("a proxy request with a wrong token: %v", err)
	}
	if _, err := p.Probe(t.Context()); err == nil || !strings.Contains(err.Error(), "refused our token (401") {
		t.Fatalf("the probe with a wrong token: %v", err)
	}
	for range 3 {
		get()
	}
	err = get()
	if !errors.As(err, &re) || re.Status != http.StatusTooManyRequests || re.Reason != hub.ReasonAuthLimit || !strings.Contains(err.Error(), "try again in") {
		t.Fatalf("past the limit: %v", err)
	}
	if _, err := p.Probe(t.Context()); err == nil || !strings.Contains(err.Error(), "too many wrong tokens") {
		t.Fatalf("the probe past the limit: %v", err)
	}
	if st := p.Status(); st.Reachable || !strings.Contains(st.LastError, "too many wrong tokens") {
		t.Fatalf("the node's status of its hub: %+v", st)
	}
}

// A preload-only hub asked for an index of a suite its list lacks (the
// clients use bookworm-updates, the list names bookworm) says so: which
// suite, of which archive, and what to change; it counts each, for the
// page and `warren preload run --dry-run`.
func TestPreloadHubNamesTheSuitesItLacks(t *testing.T) {
	up := newUpstream(t, 10)
	hb := newHarness(t, up, func(c *testConfig, _ *cachestore.Config) {
		c.Hub = &testHub{ID: "hub", Mode: hub.Preload, MaxRequesters: 5, Preload: hub.PreloadList{Apt: []hub.AptPreload{{
			URL: up.URL + "/debian", Suites: []string{"stable"}, Components: []string{"main"}, Architectures: []string{"amd64"}, Packages: []string{"hello"}}}}}
	})
	for range 2 {
		_, body := hb.mustGet(up.URL+"/debian/dists/stable-updates/InRelease", http.StatusNotFound)
		if !strings.Contains(string(body), "suite stable-updates of "+up.URL+"/debian/") || !strings.Contains(string(body), "preload.apt") {
			t.Fatalf("the refusal does not name the suite and the setting: %q", body)
		}
	}
	// A listed suite's file that is not held is refused as before.
	if _, body := hb.mustGet(up.URL+"/debian/dists/stable/InRelease", http.StatusNotFound); strings.Contains(string(body), "suite stable ") {
		t.Fatalf("a listed suite called missing: %q", body)
	}
	if m := hb.role.MissingSuites(); m[up.URL+"/debian/ stable-updates"] != 2 || len(m) != 1 {
		t.Fatalf("missing suites counted: %v", m)
	}
	if got := figureAny(t, hb, "hub_missing_suites"); got == nil {
		t.Fatal("/_warren/stats does not list the missing suites")
	}
}

func figureAny(t testing.TB, h *harness, name string) any {
	t.Helper()
	h.settle()
	resp, err := http.Get(h.front.URL + "/_warren/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v[name]
}
