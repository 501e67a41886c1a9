package proxy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/chocolatey"
	"github.com/warren-cache/warren/chocolatey/feedserver"
	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/hub"
	"github.com/warren-cache/warren/hub/replicate"
	"github.com/warren-cache/warren/intercept"
	"github.com/warren-cache/warren/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a settable time source.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

type harness struct {
	t      testing.TB
	up     *upstream
	store  *cachestore.Store
	door   *door.Door
	feeds  *feedserver.Server
	role   *hub.Role         // a hub's
	repl   *replicate.Server // a hub's serving side
	chain  []string          // the hub\'s chain as its feed says, when set
	px     *Server
	front  *httptest.Server
	client *http.Client
	clock  *clock
	dir    string
	// recorded hears each digest a hub's change feed records (a fill
	// records after its last byte is released: a test waits on it).
	recorded chan cachestore.Digest
	// busy counts handlers still running: a client has its whole body
	// before the handler returns and counts the request (see settle).
	busy inflight
}

// inflight counts running handlers so a test can wait until all are done.
type inflight struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0
}

func (f *inflight) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		if f.n == 0 {
			f.idle = make(chan struct{})
		}
		f.n++
		f.mu.Unlock()
		defer func() {
			f.mu.Lock()
			if f.n--; f.n == 0 {
				close(f.idle)
			}
			f.mu.Unlock()
		}()
		next.ServeHTTP(w, r)
	})
}

// settle waits until no handler is running, so figures counted after the
// response (the request's outcome) are in.
func (h *harness) settle() {
	h.t.Helper()
	h.busy.mu.Lock()
	idle, n := h.busy.idle, h.busy.n
	h.busy.mu.Unlock()
	if n == 0 {
		return
	}
	select {
	case <-idle:
	case <-time.After(10 * time.Second):
		h.t.Fatalf("%d requests still being handled after 10s", n)
	}
}

// testConfig is what a test sets of the parts a harness wires as the
// daemon does: the door's settings, the front's, the feeds', a hub's.
type testConfig struct {
	// The front's.
	AllowClients []netip.Prefix
	ConnectPorts []int
	Intercept    intercept.Certs
	Status       func() status.Status
	// The door's.
	AllowUpstream []netip.Prefix
	UpstreamRoots *x509.CertPool
	IndexTTL      time.Duration
	NegativeTTL   time.Duration
	StallTimeout  time.Duration
	ShareMinSize  int64
	Peers         door.Peers
	Hubs          []door.Hub
	HubOnly       bool
	Dial          func(ctx context.Context, network, addr string) (net.Conn, error)
	Keys          door.Keys // verify_signatures
	Lists         *door.ListPolicy
	// The feeds'.
	ChocolateyFeeds    map[string]string
	ChocolateyQueryTTL map[chocolatey.QueryKind]time.Duration
	ChocolateyRate     *feedserver.Rate
	// ChocolateyInternalize is chocolatey.internalize; internalizeSelf
	// stands for the front's own URL.
	ChocolateyInternalize string
	// A hub's, when set.
	Hub    *testHub
	Logger *slog.Logger
	Now    func() time.Time
}

// testHub makes a harness a site's hub.
type testHub struct {
	ID            string
	Mode          hub.Mode
	Tokens        []string
	MaxRequesters int
	Sync          []hub.SyncToken // replication.tokens
	Preload       hub.PreloadList
}

type harnessOpt func(*testConfig, *cachestore.Config)

// internalizeSelf, as ChocolateyInternalize, is the front's own URL.
const internalizeSelf = "self"

func newHarness(t testing.TB, up *upstream, opts ...harnessOpt) *harness {
	t.Helper()
	h := &harness{t: t, up: up, clock: newClock(), dir: t.TempDir()}
	h.start(opts...)
	return h
}

func (h *harness) start(opts ...harnessOpt) {
	t := h.t
	// The test upstreams listen on loopback, which warren refuses by default.
	cfg := testConfig{IndexTTL: 5 * time.Second, NegativeTTL: 30 * time.Second, Now: h.clock.now,
		AllowUpstream: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	scfg := cachestore.Config{Dir: h.dir}
	for _, o := range opts {
		o(&cfg, &scfg)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	store, err := cachestore.Open(scfg)
	if err != nil {
		t.Fatal(err)
	}
	// Wired as the daemon wires them (cmd/warren/daemon.go).
	feeds, budgets, err := feedserver.NewBudgets(cfg.ChocolateyFeeds, cfg.ChocolateyRate, cfg.Logger)
	if err != nil {
		t.Fatal(err)
	}
	var px *Server
	history := func(eco string, served, wan int64) {
		if px != nil {
			px.History(eco, served, wan)
		}
	}
	dcfg := door.Config{AllowUpstream: cfg.AllowUpstream, UpstreamRoots: cfg.UpstreamRoots, IndexTTL: cfg.IndexTTL,
		NegativeTTL: cfg.NegativeTTL, StallTimeout: cfg.StallTimeout, ShareMinSize: cfg.ShareMinSize, Peers: cfg.Peers,
		Hubs: cfg.Hubs, HubOnly: cfg.HubOnly, Dial: cfg.Dial, Transport: budgets.Wrap, Logger: cfg.Logger, Now: cfg.Now, Keys: cfg.Keys,
		WAN: func(eco string, n int64) { history(eco, 0, n) }}
	if cfg.Lists != nil {
		dcfg.Lists = func() *door.ListPolicy { return cfg.Lists }
	}
	pcfg := Config{AllowClients: cfg.AllowClients, ConnectPorts: cfg.ConnectPorts, Intercept: cfg.Intercept, Status: cfg.Status,
		HubOnly: cfg.HubOnly, Hubs: cfg.Hubs, Logger: cfg.Logger, Now: cfg.Now}
	var role *hub.Role
	if hc := cfg.Hub; hc != nil {
		role = hub.NewRole(hub.RoleConfig{ID: hc.ID, Mode: hc.Mode, Tokens: hub.NewTokens(hc.Tokens),
			Queue: hub.NewQueue(max(hc.MaxRequesters, 1), time.Second), Preload: hc.Preload, Logger: cfg.Logger, Now: cfg.Now})
		pcfg.Role = role
		dcfg.KeepGenerations = door.DefaultKeepGenerations
		dcfg.PreloadOnly = !hc.Mode.OnDemand()
		record := replicate.Record(store, cfg.Logger)
		h.recorded = make(chan cachestore.Digest, 1024)
		dcfg.Record = func(key, kind string, d cachestore.Digest, size int64, cached *cachestore.Cached) {
			record(key, kind, d, size, cached)
			select {
			case h.recorded <- d:
			default:
			}
		}
	}
	d, err := door.New(dcfg, store)
	if err != nil {
		t.Fatal(err)
	}
	// The front's address is known before it serves: an internalizing
	// hub's rewritten packages name it.
	front := httptest.NewUnstartedServer(nil)
	var fs *feedserver.Server
	if len(feeds) > 0 {
		fcfg := feedserver.Config{Feeds: feeds, QueryTTL: cfg.ChocolateyQueryTTL, Logger: cfg.Logger, Now: cfg.Now,
			Served: func(eco string, n int64) { history(eco, n, 0) }, WAN: func(eco string, n int64) { history(eco, 0, n) },
			Internalize: cfg.ChocolateyInternalize}
		if fcfg.Internalize == internalizeSelf {
			fcfg.Internalize = "http://" + front.Listener.Addr().String() + "/"
		}
		if role != nil {
			fcfg.PreloadOnly, fcfg.Unheld = !cfg.Hub.Mode.OnDemand(), role.Unheld
		}
		fs = feedserver.New(fcfg, d, store, budgets)
		pcfg.Feeds, pcfg.Budgets = fs, fs.BudgetStats
		pcfg.Collectors = append(pcfg.Collectors, fs.Collectors()...)
	}
	var repl *replicate.Server
	if role != nil {
		id := cfg.Hub.ID
		chain := func() []string {
			if h.chain != nil {
				return h.chain
			}
			return []string{id}
		}
		repl = replicate.NewServer(replicate.ServerConfig{ID: id, Chain: chain, Tokens: hub.NewSyncTokens(cfg.Hub.Sync),
			Authenticate: role.Authenticate, Refuse: role.Refuse, Store: store, Logger: cfg.Logger})
		pcfg.Replication = repl
		pcfg.HubStatus = &status.HubRole{Mode: role.Mode(), Queue: role.Queue(), Refusals: role.Refusals, MissingSuites: role.MissingSuites}
	}
	pcfg.Door = d
	px, err = New(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	front.Config.Handler = h.busy.wrap(px)
	front.Start()
	pu, _ := url.Parse(front.URL)
	h.store, h.px, h.front, h.door, h.feeds, h.role, h.repl = store, px, front, d, fs, role, repl
	h.client = &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu), DisableCompression: true}}
	t.Cleanup(h.stop)
}

func (h *harness) stop() {
	if h.front == nil {
		return
	}
	h.client.CloseIdleConnections()
	h.front.Close()
	h.px.Close()
	if h.feeds != nil {
		h.feeds.Close()
	}
	h.door.Close()
	h.store.Close()
	h.front = nil
}

func (h *harness) get(rawURL string, hdr ...string) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(h.t.Context(), http.MethodGet, rawURL, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	// The client has the last byte once the bytes are verified; storing
	// them follows. Wait for that, so the next request of a test sees the
	// stored blob.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ierr := h.store.Idle(ctx); ierr != nil {
		h.t.Fatalf("fills still running 10s after a response: %v", ierr)
	}
	return resp, body, err
}

func (h *harness) mustGet(rawURL string, wantStatus int, hdr ...string) (*http.Response, []byte) {
	h.t.Helper()
	resp, body, err := h.get(rawURL, hdr...)
	if err != nil {
		h.t.Fatalf("GET %s: %v", rawURL, err)
	}
	if resp.StatusCode != wantStatus {
		h.t.Fatalf("GET %s: status %d, want %d; body %q", rawURL, resp.StatusCode, wantStatus, clipBody(body))
	}
	return resp, body
}

// firstBytes starts a GET of rawURL and reads its first n bytes; the
// caller reads the rest from resp.Body and closes it.
func (h *harness) firstBytes(rawURL string, n int) (*http.Response, []byte) {
	h.t.Helper()
	resp, err := h.client.Get(rawURL)
	if err != nil {
		h.t.Fatal(err)
	}
	first := make([]byte, n)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		resp.Body.Close()
		h.t.Fatal(err)
	}
	return resp, first
}

// known is what warren learnt about rawURL, once the learns in progress
// that teach about it are done (a learn runs after its file's last byte).
func (h *harness) known(rawURL string) (cachestore.Known, error) {
	h.t.Helper()
	key, ok := door.CanonicalString(rawURL)
	if !ok {
		key = rawURL
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h.px.door.Learnt(ctx, key)
	return h.store.Known(key)
}

// learn fetches the metadata as apt does, so the .deb's hash is known.
func (h *harness) learn() {
	h.t.Helper()
	h.mustGet(h.up.URL+releasePath, 200)
	h.mustGet(h.up.URL+packagesPath, 200)
	k, err := h.known(h.up.debURL)
	if err != nil || k.Digest.Hex != sha256hex(h.up.deb) {
		h.t.Fatalf("hash of the deb not learnt from Packages: %+v, %v", k, err)
	}
	if want := cachestore.ListerID(h.up.URL + "/debian/dists/stable/main/binary-amd64/Packages"); k.Lister != want || k.Learnt == 0 {
		h.t.Fatalf("the fact does not name the index that listed it (by its name, not its URL): lister %x learnt %d, want %x", k.Lister, k.Learnt, want)
	}
}

func clipBody(b []byte) []byte {
	if len(b) > 200 {
		return b[:200]
	}
	return b
}

func TestHitAndMiss(t *testing.T) {
	up := newUpstream(t, 1<<20)
	h := newHarness(t, up)
	h.learn()
	resp, body := h.mustGet(up.debURL, 200)
	if !bytes.Equal(body, up.deb) || !strings.HasPrefix(resp.Header.Get("X-Cache"), "MISS") {
		t.Fatalf("first GET: %d bytes, X-Cache %q", len(body), resp.Header.Get("X-Cache"))
	}
	resp, body = h.mustGet(up.debURL, 200)
	if !bytes.Equal(body, up.deb) || !strings.HasPrefix(resp.Header.Get("X-Cache"), "HIT") {
		t.Fatalf("second GET: %d bytes, X-Cache %q", len(body), resp.Header.Get("X-Cache"))
	}
	if resp.ContentLength != int64(len(up.deb)) || resp.Header.Get("Last-Modified") == "" {
		t.Fatalf("hit headers: length %d, Last-Modified %q", resp.ContentLength, resp.Header.Get("Last-Modified"))
	}
	if n := up.count(debPath); n != 1 {
		t.Fatalf("upstream served the deb %d times, want 1", n)
	}
	if _, err := os.Stat(filepath.Join(h.dir, "blobs", "sha256", sha256hex(up.deb)[:2], sha256hex(up.deb))); err != nil {
		t.Fatalf("deb not stored by digest: %v", err)
	}
}

// apt-cacher-ng style: the upstream host is the first path segment.
func TestDirectStyleRequest(t *testing.T) {
	up := newUpstream(t, 4096)
	h := newHarness(t, up)
	host := strings.TrimPrefix(up.URL, "http://")
	resp, err := http.Get(h.front.URL + "/" + host + debPath)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(body, up.deb) {
		t.Fatalf("direct request: %d, %d bytes", resp.StatusCode, len(body))
	}
	resp, err = http.Get(h.front.URL + "/not-a-host/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("path without a host: %d, want 404", resp.StatusCode)
	}
}

func TestRangeAndHead(t *testing.T) {
	up := newUpstream(t, 100000)
	tests := []struct {
		name      string
		warm      bool // already cached
		rng       string
		wantStart int
		wantEnd   int // inclusive
	}{
		{"miss, bounded range", false, "bytes=100-199", 100, 199},
		{"miss, open range", false, "bytes=99000-", 99000, 99999},
		{"hit, bounded range", true, "bytes=100-199", 100, 199},
		{"hit, suffix range", true, "bytes=-10", 99990, 99999},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, up)
			h.learn()
			if tt.warm {
				h.mustGet(up.debURL, 200)
			}
			resp, body := h.mustGet(up.debURL, http.StatusPartialContent, "Range", tt.rng)
			if !bytes.Equal(body, up.deb[tt.wantStart:tt.wantEnd+1]) {
				t.Fatalf("range body: %d bytes, wrong content", len(body))
			}
			want := "bytes " + strconv.Itoa(tt.wantStart) + "-" + strconv.Itoa(tt.wantEnd) + "/100000"
			if got := resp.Header.Get("Content-Range"); got != want {
				t.Fatalf("Content-Range %q, want %q", got, want)
			}
		})
	}
	t.Run("head", func(t *testing.T) {
		h := newHarness(t, up)
		h.learn()
		for _, warm := range []bool{false, true} {
			if warm {
				h.mustGet(up.debURL, 200)
			}
			req, _ := http.NewRequest(http.MethodHead, up.debURL, nil)
			resp, err := h.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.ContentLength != 100000 {
				t.Fatalf("HEAD (cached %v): %d, length %d", warm, resp.StatusCode, resp.ContentLength)
			}
		}
	})
}

// A miss honours the validators as a hit does (http.ServeContent): an
// If-Modified-Since not older than the file is 304, and an If-Range that
// names another version gets the whole file, not the range.
func TestMissAnswersConditionalsLikeAHit(t *testing.T) {
	up := newUpstream(t, 1000)
	lastMod := up.modAt.Format(http.TimeFormat)
	older := up.modAt.Add(-time.Hour).Format(http.TimeFormat)
	for _, tt := range []struct {
		name   string
		hdr    []string
		status int
		n      int // body bytes; -1: the whole file
	}{
		{"If-Modified-Since this version", []string{"If-Modified-Since", lastMod}, http.StatusNotModified, 0},
		{"If-Range another version", []string{"Range", "bytes=0-9", "If-Range", older}, http.StatusOK, -1},
		{"If-Range this version", []string{"Range", "bytes=0-9", "If-Range", lastMod}, http.StatusPartialContent, 10},
	} {
		for _, warm := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, cached %v", tt.name, warm), func(t *testing.T) {
				h := newHarness(t, up) // a fresh cache: cold is a miss
				u := up.URL + packagesPath
				if warm {
					h.mustGet(u, 200)
				}
				resp, body := h.mustGet(u, tt.status, tt.hdr...)
				if want := tt.n; want >= 0 && len(body) != want || want < 0 && len(body) <= 10 {
					t.Fatalf("%d bytes, want %d (-1: the whole file)", len(body), want)
				}
				if wantCache := map[bool]string{false: "MISS", true: "HIT"}[warm]; tt.status != http.StatusNotModified && !strings.HasPrefix(resp.Header.Get("X-Cache"), wantCache) {
					t.Fatalf("X-Cache %q, want %s", resp.Header.Get("X-Cache"), wantCache)
				}
			})
		}
	}
}

func TestRevalidation(t *testing.T) {
	up := newUpstream(t, 1000)
	h := newHarness(t, up)
	h.mustGet(up.URL+releasePath, 200)
	h.mustGet(up.URL+releasePath, 200) // within IndexTTL: no upstream request
	if n := up.count(releasePath); n != 1 {
		t.Fatalf("upstream GETs of Release within the TTL: %d, want 1", n)
	}
	h.clock.advance(6 * time.Second)
	resp, body := h.mustGet(up.URL+releasePath, 200)
	up.mu.Lock()
	conds := up.conds[releasePath]
	up.mu.Unlock()
	if conds != 1 || up.count(releasePath) != 1 {
		t.Fatalf("after the TTL: %d conditional (304) and %d full GETs, want 1 and 1", conds, up.count(releasePath))
	}
	if !bytes.Equal(body, up.files[releasePath]) || resp.Header.Get("X-Cache") == "" {
		t.Fatalf("revalidated body differs")
	}
	// A changed file upstream is fetched anew after the TTL.
	up.modAt = up.modAt.Add(time.Hour)
	up.mu.Lock()
	up.files[releasePath] = append([]byte("Label: changed\n"), up.files[releasePath]...)
	up.mu.Unlock()
	h.clock.advance(6 * time.Second)
	_, body = h.mustGet(up.URL+releasePath, 200)
	if !bytes.HasPrefix(body, []byte("Label: changed")) {
		t.Fatalf("changed Release not fetched: %q", clipBody(body))
	}
}

func TestOfflineServesLastGoodCopy(t *testing.T) {
	up := newUpstream(t, 1000)
	h := newHarness(t, up)
	_, want := h.mustGet(up.URL+releasePath, 200)
	up.Close()
	h.clock.advance(time.Minute)
	resp, body := h.mustGet(up.URL+releasePath, 200)
	if !bytes.Equal(body, want) {
		t.Fatalf("offline body differs")
	}
	if !strings.HasPrefix(resp.Header.Get("X-Cache"), "HIT") {
		t.Fatalf("X-Cache %q", resp.Header.Get("X-Cache"))
	}
	// Nothing cached and upstream down: a clear 502.
	resp, body = h.mustGet(up.debURL, http.StatusBadGateway)
	if !strings.Contains(string(body), "upstream unreachable") {
		t.Fatalf("502 body %q", body)
	}
	_ = resp
}

func TestUpstreamErrors(t *testing.T) {
	up := newUpstream(t, 1000)
	up.hook("/debian/pool/main/b/broken_1.deb", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	})
	h := newHarness(t, up)
	_, body := h.mustGet(up.URL+"/debian/pool/main/b/broken_1.deb", http.StatusBadGateway)
	if !strings.Contains(string(body), "503") {
		t.Fatalf("502 body does not say what upstream answered: %q", body)
	}
	missing := up.URL + "/debian/pool/main/m/missing_1.deb"
	h.mustGet(missing, http.StatusNotFound)
	h.mustGet(missing, http.StatusNotFound)
	// Remembered: only the first 404 reached upstream.
	up.hook("/debian/pool/main/m/missing_1.deb", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	h.mustGet(missing, http.StatusNotFound)
	if n := up.count("/debian/pool/main/m/missing_1.deb"); n != 0 {
		t.Fatalf("negative cache: upstream asked %d more times", n)
	}
	h.clock.advance(time.Minute)
	h.mustGet(missing, http.StatusNotFound)
	if n := up.count("/debian/pool/main/m/missing_1.deb"); n != 1 {
		t.Fatalf("after the negative TTL upstream was asked %d times, want 1", n)
	}
}

// A body shorter than its Content-Length: the client's response is broken
// off (never a complete short file) and nothing is stored.
func TestTruncatedUpstreamBody(t *testing.T) {
	for _, known := range []bool{true, false} {
		t.Run("hash known "+strconv.FormatBool(known), func(t *testing.T) {
			up := newUpstream(t, 50000)
			h := newHarness(t, up)
			if known {
				h.learn()
			}
			up.hook(debPath, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "50000")
				w.WriteHeader(200)
				w.Write(up.deb[:20000])
				panic(http.ErrAbortHandler)
			})
			// Either the response breaks off or, when the fill failed before
			// the client's turn came, it is an error status: never a 200.
			resp, body, err := h.get(up.debURL)
			if err == nil && resp.StatusCode == http.StatusOK {
				t.Fatalf("client got a complete response of %d bytes from a truncated upstream", len(body))
			}
			up.hook(debPath, nil)
			up.mu.Lock()
			delete(up.hooks, debPath)
			up.mu.Unlock()
			_, body = h.mustGet(up.debURL, 200)
			if !bytes.Equal(body, up.deb) {
				t.Fatal("after the truncated try, the right bytes were not served")
			}
			// The fill resumed each cut body with Range, door.OriginTries times,
			// then gave up; the next request fetched it whole.
			if n := up.count(debPath); n != door.OriginTries+1 {
				t.Fatalf("upstream GETs %d, want %d (the truncated body must not be cached)", n, door.OriginTries+1)
			}
		})
	}
}

// A body that breaks off once is resumed from where it broke, with Range,
// and the client gets the exact bytes in the same response.
func TestTruncatedBodyResumed(t *testing.T) {
	for _, known := range []bool{true, false} {
		t.Run(fmt.Sprintf("hash known %v", known), func(t *testing.T) {
			up := newUpstream(t, 50000)
			h := newHarness(t, up)
			if known {
				h.learn()
			}
			var ranges []string
			var mu sync.Mutex
			up.hook(debPath, func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				ranges = append(ranges, r.Header.Get("Range"))
				mu.Unlock()
				if r.Header.Get("Range") == "" {
					w.Header().Set("Content-Length", "50000")
					w.WriteHeader(200)
					w.Write(up.deb[:20000])
					panic(http.ErrAbortHandler)
				}
				http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(up.deb))
			})
			_, body := h.mustGet(up.debURL, 200)
			if !bytes.Equal(body, up.deb) {
				t.Fatalf("client got %d bytes, not the exact file", len(body))
			}
			mu.Lock()
			defer mu.Unlock()
			if len(ranges) != 2 || ranges[1] != "bytes=20000-" {
				t.Fatalf("upstream requests' Range headers %q, want a resume at 20000", ranges)
			}
		})
	}
}

// Bytes that do not hash to what Packages says: the client's response is
// broken off, nothing is stored, the mismatch is counted.
func TestWrongDigestFromUpstream(t *testing.T) {
	up := newUpstream(t, 50000)
	h := newHarness(t, up)
	h.learn()
	evil := bytes.Clone(up.deb)
	evil[len(evil)-1] ^= 0xff // only the last byte differs: it must still not reach the client
	up.hook(debPath, func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", up.modAt, bytes.NewReader(evil))
	})
	h.rejectsWrongBytes(up.debURL, evil, up.deb)
}

// rejectsWrongBytes gets rawURL, for which upstream now sends wrong instead
// of right (the bytes the metadata describes): the client never gets all of
// them, the mismatch is counted, and nothing is stored under either digest.
func (h *harness) rejectsWrongBytes(rawURL string, wrong, right []byte) {
	h.t.Helper()
	before := h.px.Snapshot()["mismatches"]
	resp, body, err := h.get(rawURL)
	if err == nil && resp.StatusCode == http.StatusOK {
		h.t.Fatalf("client got a complete wrong file (%d bytes)", len(body))
	}
	if len(body) >= len(wrong) {
		h.t.Fatalf("client got all %d bytes of a wrong file", len(body))
	}
	if got := h.px.Snapshot()["mismatches"]; got != before+1 {
		h.t.Fatalf("mismatches = %d, want %d", got, before+1)
	}
	for _, b := range [][]byte{wrong, right} {
		for _, d := range []cachestore.Digest{{Algo: "sha256", Hex: sha256hex(b)}, {Algo: "sha512", Hex: sha512hex(b)}} {
			if _, err := h.store.Stat(d); !errors.Is(err, cachestore.ErrNotFound) {
				h.t.Fatalf("after a wrong file, %s is stored: %v", d, err)
			}
		}
	}
}

// gatedDeb makes upstream send the first half of the deb, then wait for
// the gate; it counts the requests that reached it.
func gatedDeb(up *upstream, gate <-chan struct{}, reached chan<- struct{}) {
	up.hook(debPath, func(w http.ResponseWriter, r *http.Request) {
		reached <- struct{}{}
		w.Header().Set("Content-Length", strconv.Itoa(len(up.deb)))
		w.WriteHeader(200)
		half := len(up.deb) / 2
		w.Write(up.deb[:half])
		w.(http.Flusher).Flush()
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
		w.Write(up.deb[half:])
	})
}

// startGatedFill has one client start a fill of the deb, which upstream
// holds at half way until gate is closed, and read its first bytes;
// hangUp makes that client go away.
func startGatedFill(t *testing.T, h *harness) (gate chan struct{}, reached chan struct{}, hangUp func()) {
	t.Helper()
	h.learn()
	gate, reached = make(chan struct{}), make(chan struct{}, 10)
	gatedDeb(h.up, gate, reached)
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.up.debURL, nil)
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	return gate, reached, func() {
		cancel()
		resp.Body.Close()
	}
}

// 20 clients at once: one upstream fetch, and every client gets bytes while
// it is still running.
func TestConcurrentClientsShareOneFill(t *testing.T) {
	up := newUpstream(t, 2<<20)
	h := newHarness(t, up)
	h.learn()
	gate := make(chan struct{})
	reached := make(chan struct{}, 100)
	gatedDeb(up, gate, reached)

	const n = 20
	streaming := make(chan struct{}, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := h.client.Get(up.debURL)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			first := make([]byte, 1000)
			if _, err := io.ReadFull(resp.Body, first); err != nil {
				errs <- err
				return
			}
			streaming <- struct{}{}
			rest, err := io.ReadAll(resp.Body)
			if err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(append(first, rest...), up.deb) {
				errs <- errors.New("wrong body")
			}
		}()
	}
	deadline := time.After(20 * time.Second)
	for range n {
		select {
		case <-streaming:
		case err := <-errs:
			t.Fatal(err)
		case <-deadline:
			t.Fatal("not every client received bytes while the fill was running")
		}
	}
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := len(reached); got != 1 {
		t.Fatalf("upstream got %d requests for the deb, want 1", got)
	}
}

// The client that started a fill goes away: the fill goes on for the others
// and is stored.
func TestClientCancelDoesNotCancelFill(t *testing.T) {
	up := newUpstream(t, 1<<20)
	h := newHarness(t, up)
	gate, reached, hangUp := startGatedFill(t, h)
	// A second client joins the same fill.
	second := make(chan []byte, 1)
	go func() {
		resp, err := h.client.Get(up.debURL)
		if err != nil {
			second <- nil
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		second <- b
	}()
	hangUp()
	close(gate)
	select {
	case b := <-second:
		if !bytes.Equal(b, up.deb) {
			t.Fatalf("second client got %d bytes, want the whole deb", len(b))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("second client never finished")
	}
	resp2, body := h.mustGet(up.debURL, 200)
	if !bytes.Equal(body, up.deb) || !strings.HasPrefix(resp2.Header.Get("X-Cache"), "HIT") {
		t.Fatalf("after the fill: X-Cache %q", resp2.Header.Get("X-Cache"))
	}
	if len(reached) != 1 {
		t.Fatalf("upstream requests: %d, want 1", len(reached))
	}
}

// The only client goes away mid-fill: the fill still completes and stores.
func TestLoneClientCancelStillStores(t *testing.T) {
	up := newUpstream(t, 1<<20)
	h := newHarness(t, up)
	gate, reached, hangUp := startGatedFill(t, h)
	hangUp()
	// Join the fill (or find it done) and wait for its result.
	f, leader := h.store.BeginFill(cachestore.FillKey(cachestore.Digest{Algo: "sha256", Hex: sha256hex(up.deb)}))
	if leader {
		f.Abort(errors.New("test: the fill had already ended"))
		t.Fatal("the fill ended when its only client went away")
	}
	close(gate)
	if _, err := f.Result(t.Context()); err != nil {
		t.Fatalf("fill failed after its client left: %v", err)
	}
	_, body := h.mustGet(up.debURL, 200)
	if !bytes.Equal(body, up.deb) || len(reached) != 1 {
		t.Fatalf("after the fill: %d bytes, %d upstream requests", len(body), len(reached))
	}
}

func TestRestartRecovery(t *testing.T) {
	up := newUpstream(t, 30000)
	h := newHarness(t, up)
	h.learn()
	h.mustGet(up.debURL, 200)
	h.stop()
	// A damaged blob (wrong size) and a crash's temp file.
	blob := filepath.Join(h.dir, "blobs", "sha256", sha256hex(up.deb)[:2], sha256hex(up.deb))
	if err := os.WriteFile(blob, up.deb[:100], 0o600); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(h.dir, "tmp", "fill-crash"), []byte("half"), 0o600)
	h.start()
	_, body := h.mustGet(up.debURL, 200)
	if !bytes.Equal(body, up.deb) {
		t.Fatalf("after restart: served %d bytes, want the whole right deb", len(body))
	}
	if n := up.count(debPath); n != 2 {
		t.Fatalf("upstream GETs %d, want 2 (damaged blob refetched)", n)
	}
	if left, _ := os.ReadDir(filepath.Join(h.dir, "tmp")); len(left) != 0 {
		t.Fatalf("temp files left after restart: %v", left)
	}
	// Known facts survive a restart.
	if _, err := h.known(up.debURL); err != nil {
		t.Fatalf("learnt hash lost in restart: %v", err)
	}
}

func TestByHashIndexIsParsed(t *testing.T) {
	up := newUpstream(t, 1000)
	h := newHarness(t, up)
	h.mustGet(up.URL+releasePath, 200)
	byHash := ""
	for p := range up.files {
		if strings.Contains(p, "/by-hash/") {
			byHash = p
		}
	}
	resp, _ := h.mustGet(up.URL+byHash, 200)
	if !strings.HasPrefix(resp.Header.Get("X-Cache"), "MISS") {
		t.Fatalf("X-Cache %q", resp.Header.Get("X-Cache"))
	}
	if _, err := h.known(up.debURL); err != nil {
		t.Fatalf("Packages fetched by hash was not parsed: %v", err)
	}
	// by-hash files are immutable: no revalidation, ever.
	h.clock.advance(time.Hour)
	resp, _ = h.mustGet(up.URL+byHash, 200)
	if !strings.HasPrefix(resp.Header.Get("X-Cache"), "HIT") || up.count(byHash) != 1 {
		t.Fatalf("by-hash refetched: X-Cache %q, %d GETs", resp.Header.Get("X-Cache"), up.count(byHash))
	}
}

// A Packages file that does not match its Release teaches nothing, and
// is not served either: the Release names its hash, so it is verified like
// any artifact (apt would only refuse it with "Hash Sum mismatch").
func TestBadIndexRecordsNothing(t *testing.T) {
	tests := []struct {
		name string
		body func(up *upstream) []byte
	}{
		{"not gzip", func(*upstream) []byte { return []byte("Filename: x\n") }},
		{"does not match Release", func(up *upstream) []byte {
			b := bytes.Clone(up.files[packagesPath])
			b[len(b)-1] ^= 1
			return b
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t, 1000)
			h := newHarness(t, up)
			h.mustGet(up.URL+releasePath, 200)
			up.mu.Lock()
			up.files[packagesPath] = tt.body(up)
			up.mu.Unlock()
			// Refused before the first byte (its size is wrong), or cut
			// before the last (its hash is): never whole.
			resp, body, err := h.get(up.URL + packagesPath)
			if err == nil && (resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "does not match the repository metadata")) {
				t.Fatalf("an index that does not match its Release: %d %q, want a 502 that says why or a cut transfer", resp.StatusCode, clipBody(body))
			}
			if _, err := h.known(up.debURL); !errors.Is(err, cachestore.ErrNotFound) {
				t.Fatalf("hash learnt from a bad index: %v", err)
			}
		})
	}
}

func TestAccessControl(t *testing.T) {
	up := newUpstream(t, 1000)
	h := newHarness(t, up, func(c *testConfig, _ *cachestore.Config) {
		c.AllowClients = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	})
	_, body := h.mustGet(up.debURL, http.StatusForbidden)
	if !strings.Contains(string(body), "allow_clients") {
		t.Fatalf("403 body does not say why: %q", body)
	}
	if up.count(debPath) != 0 {
		t.Fatal("a refused client's request reached upstream")
	}
}

func TestConnectPolicy(t *testing.T) {
	tlsUp := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "secret") }))
	defer tlsUp.Close()
	_, portStr, _ := net.SplitHostPort(tlsUp.Listener.Addr().String())
	port, _ := strconv.Atoi(portStr)
	up := newUpstream(t, 10)
	h := newHarness(t, up, func(c *testConfig, _ *cachestore.Config) { c.ConnectPorts = []int{port} })

	// Allowed port: tunnelled end to end.
	tr := &http.Transport{Proxy: http.ProxyURL(mustURL(h.front.URL)), TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(tlsUp.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "secret" {
		t.Fatalf("tunnelled body %q", b)
	}

	// The request line is what is checked and dialled: a path target
	// with an allowed Host is refused, and so is a target on another port
	// behind an allowed Host.
	for line, want := range map[string]int{
		"CONNECT /x HTTP/1.1\r\nHost: 127.0.0.1:" + portStr:                http.StatusBadRequest,
		"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:" + portStr:      http.StatusForbidden,
		"CONNECT 127.0.0.1:" + portStr + " HTTP/1.1\r\nHost: 127.0.0.1:22": http.StatusOK,
	} {
		c, err := net.Dial("tcp", strings.TrimPrefix(h.front.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, line+"\r\n\r\n")
		r, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil || r.StatusCode != want {
			t.Fatalf("%q: %v %v, want %d", line, r, err, want)
		}
	}

	// Any other port: 403 with the reason.
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.front.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n")
	r, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	if r.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "connect_ports") {
		t.Fatalf("CONNECT to :22 -> %d %q", r.StatusCode, body)
	}
}

// A request that loops back to this warren is refused with 508, not
// multiplied: directly (it carries this warren's Via), and through a hop
// (warren asked to fetch from itself passes the 508 on).
func TestLoopDetected(t *testing.T) {
	up := newUpstream(t, 10)
	h := newHarness(t, up)
	req, _ := http.NewRequest(http.MethodGet, h.front.URL+"/deb.example/debian/pool/x.deb", nil)
	req.Header.Set("Via", "1.1 other-proxy, "+h.px.door.Via())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusLoopDetected {
		t.Fatalf("request carrying this warren's Via: %d, want 508", resp.StatusCode)
	}
	self := strings.TrimPrefix(h.front.URL, "http://")
	resp, err = http.Get(h.front.URL + "/" + self + "/" + self + "/x.deb")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusLoopDetected {
		t.Fatalf("looping request: %d %q, want 508", resp.StatusCode, body)
	}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// No room on the disk: the client is still served, straight from upstream,
// and nothing is stored.
func TestDiskFullPassesThrough(t *testing.T) {
	up := newUpstream(t, 50000)
	h := newHarness(t, up)
	h.learn()
	h.stop()
	h.start(func(_ *testConfig, s *cachestore.Config) { s.MinFreeBytes = 1 << 62 })
	resp, body := h.mustGet(up.debURL, 200)
	if !bytes.Equal(body, up.deb) {
		t.Fatalf("disk full: %d bytes served", len(body))
	}
	if !strings.Contains(resp.Header.Get("X-Cache"), "not stored") {
		t.Fatalf("X-Cache %q", resp.Header.Get("X-Cache"))
	}
	if _, err := h.store.Stat(cachestore.Digest{Algo: "sha256", Hex: sha256hex(up.deb)}); !errors.Is(err, cachestore.ErrNotFound) {
		t.Fatalf("stored despite a full disk: %v", err)
	}
	if left, _ := os.ReadDir(filepath.Join(h.dir, "tmp")); len(left) != 0 {
		t.Fatalf("half-written files left: %v", left)
	}
}

// No room on the disk, and upstream now sends other bytes than the
// metadata says: the pass-through is verified as it streams, so the client
// never gets the last byte (the connection is cut) and the mismatch counts.
// A Range request on the full disk gets its part, verified with the rest.
func TestDiskFullPassThroughVerifies(t *testing.T) {
	up := newUpstream(t, 50000)
	h := newHarness(t, up)
	h.learn()
	h.stop()
	h.start(func(_ *testConfig, s *cachestore.Config) { s.MinFreeBytes = 1 << 62 })
	resp, body := h.mustGet(up.debURL, http.StatusPartialContent, "Range", "bytes=100-199")
	if !bytes.Equal(body, up.deb[100:200]) || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 100-199/%d", len(up.deb)) {
		t.Fatalf("range on a full disk: %d bytes, Content-Range %q", len(body), resp.Header.Get("Content-Range"))
	}
	evil := randomBytes(len(up.deb), 7)
	up.hook(debPath, func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", up.modAt, bytes.NewReader(evil))
	})
	h.rejectsWrongBytes(up.debURL, evil, up.deb)
}

// The disk fills up in the middle of a fill (a real, small tmpfs): the
// client still gets every byte, from upstream, and no temp file remains.
func TestDiskFillsUpMidTransfer(t *testing.T) {
	// `make test` runs this as root: there a missing tmpfs fails the test
	// instead of skipping it unseen.
	e2e := os.Getenv("WARREN_E2E") == "1"
	if os.Geteuid() != 0 {
		if e2e {
			t.Fatal("mounting a small tmpfs needs root: run `make test` as root")
		}
		t.Skip("needs root to mount a small tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=48m", "warren-test", dir).CombinedOutput(); err != nil {
		if e2e {
			t.Fatalf("cannot mount tmpfs: %v %s", err, out)
		}
		t.Skipf("cannot mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	// 24 MB into 48 MB, of which the index keeps 32 MiB free: the fill
	// runs out of room half-way.
	up := newUpstream(t, 24<<20)
	// Chunked, no length, hash unknown: the free-space check before the
	// fill cannot see it coming; the checks while writing (or the write
	// itself) do. Upstream
	// holds after 64 KiB until the client has bytes, so the disk fills up
	// mid-transfer, not before the client's first byte.
	clientHasBytes := make(chan struct{})
	up.hook(debPath, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") != "" {
			http.ServeContent(w, r, "", up.modAt, bytes.NewReader(up.deb))
			return
		}
		for off := 0; off < len(up.deb); off += 64 << 10 {
			w.Write(up.deb[off:min(off+64<<10, len(up.deb))])
			w.(http.Flusher).Flush()
			if off == 0 {
				select {
				case <-clientHasBytes:
				case <-r.Context().Done():
					return
				}
			}
		}
	})
	h := &harness{t: t, up: up, clock: newClock(), dir: dir}
	h.start()
	resp, first := h.firstBytes(up.debURL, 1000)
	defer resp.Body.Close()
	close(clientHasBytes)
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if body := append(first, rest...); !bytes.Equal(body, up.deb) {
		t.Fatalf("served %d bytes, want all %d", len(body), len(up.deb))
	}
	if resp.Header.Get("X-Cache") != "MISS from warren" {
		t.Fatalf("X-Cache %q: the request did not start as a fill", resp.Header.Get("X-Cache"))
	}
	if n := up.count(debPath); n != 2 {
		t.Fatalf("upstream requests %d, want 2 (the fill, then the resumed rest)", n)
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Fatalf("half-written files left: %v", left)
	}
}

// The disk fills up in the middle of the fill of a hash-known artifact: the
// client's rest comes from upstream, verified together with the bytes it
// already had (read back from the failed fill). Right bytes reach the
// client whole; wrong ones never get their last byte.
func TestDiskFillsUpMidTransferVerified(t *testing.T) {
	e2e := os.Getenv("WARREN_E2E") == "1"
	if os.Geteuid() != 0 {
		if e2e {
			t.Fatal("mounting a small tmpfs needs root: run `make test` as root")
		}
		t.Skip("needs root to mount a small tmpfs")
	}
	for _, tt := range []struct {
		name  string
		wrong bool
	}{{"right rest", false}, {"wrong rest", true}} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m", "warren-test", dir).CombinedOutput(); err != nil {
				t.Fatalf("cannot mount tmpfs: %v %s", err, out)
			}
			t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
			up := newUpstream(t, 12<<20)
			h := &harness{t: t, up: up, clock: newClock(), dir: filepath.Join(dir, "cache")}
			h.start()
			h.learn()
			rest := up.deb
			if tt.wrong {
				rest = randomBytes(len(up.deb), 9)
			}
			// Upstream holds after 64 KiB until the client has bytes and the
			// file system is full; the rest, asked for with Range, is rest.
			full := make(chan struct{})
			up.hook(debPath, func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Range") != "" {
					http.ServeContent(w, r, "", up.modAt, bytes.NewReader(rest))
					return
				}
				w.Header().Set("Content-Length", strconv.Itoa(len(up.deb)))
				for off := 0; off < len(up.deb); off += 64 << 10 {
					if _, err := w.Write(up.deb[off:min(off+64<<10, len(up.deb))]); err != nil {
						return
					}
					w.(http.Flusher).Flush()
					if off == 0 {
						select {
						case <-full:
						case <-r.Context().Done():
							return
						}
					}
				}
			})
			resp, first := h.firstBytes(up.debURL, 1000)
			defer resp.Body.Close()
			fillUp(t, dir, 256<<10)
			close(full)
			more, err := io.ReadAll(resp.Body)
			body := append(first, more...)
			if tt.wrong {
				if err == nil || len(body) >= len(up.deb) {
					t.Fatalf("wrong rest: the client got %d of %d bytes and err %v; want a cut before the last byte", len(body), len(up.deb), err)
				}
				return
			}
			if err != nil || !bytes.Equal(body, up.deb) {
				t.Fatalf("right rest: served %d bytes (exact %v), err %v", len(body), bytes.Equal(body, up.deb), err)
			}
			if n := up.count(debPath); n != 2 {
				t.Fatalf("upstream requests %d, want 2 (the fill, then the resumed rest)", n)
			}
		})
	}
}

// fillUp fills the file system of dir to its last keep bytes.
func fillUp(t *testing.T, dir string, keep int64) {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * st.Bsize
	f, err := os.Create(filepath.Join(dir, "ballast"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, free-keep); err != nil {
		t.Fatalf("fill the file system: %v", err)
	}
}

// /metrics and the status page show the true figures of what was served.
func TestMetricsAndStatusPage(t *testing.T) {
	up := newUpstream(t, 100000)
	h := newHarness(t, up, func(c *testConfig, _ *cachestore.Config) {
		c.Status = func() status.Status {
			return status.Status{NodeID: "n1", CacheBytes: 100000, CacheMax: 400000, Blobs: 1, UploadSlots: 2, UploadsPeak: 2, BytesUploaded: 777,
				Peers:     []status.Peer{{ID: "peer-a", Addr: "10.0.0.2:3142", Role: "peer", Priority: 100}},
				Transfers: []status.Transfer{{What: "digest:sha256:ab", Written: 50, Size: 100}}}
		}
	})
	h.learn()
	h.mustGet(up.debURL, 200) // miss
	h.mustGet(up.debURL, 200) // hit
	h.settle()
	get := func(path string) string {
		resp, err := http.Get(h.front.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	metrics := get("/metrics")
	for _, want := range []string{
		`warren_requests_total{outcome="hit"} 1`,
		`warren_requests_total{outcome="miss"} 3`, // Release, Packages, the deb
		`warren_bytes_total{source="cache"} 100000`,
		`warren_digest_mismatches_total 0`,
		`warren_upstream_fetches_total 3`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	stats := get("/_warren/stats")
	for _, want := range []string{`"hits":1`, `"peers":1`, `"uploads_peak":2`, `"bytes_uploaded":777`, `"cache_bytes":100000`, `"bytes_cache":100000`} {
		if !strings.Contains(stats, want) {
			t.Errorf("/_warren/stats lacks %s: %s", want, stats)
		}
	}
	page := get("/_warren/")
	for _, want := range []string{
		`id="hit-ratio">25%`, "1 hits, 3 misses of 4 requests",
		`100 kB of 400 kB`, "peer-a", "10.0.0.2:3142", "digest:sha256:ab", `width:50%`, `http-equiv="refresh"`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
}

// Eviction (or cache rm) of a URL-cached file takes its URL entry with it:
// after the TTL, warren fetches it again in full, never revalidates into a
// copy that is gone (upstream would answer 304 and the client get a 500).
func TestEvictedURLCacheRefetched(t *testing.T) {
	up := newUpstream(t, 1000)
	h := newHarness(t, up)
	_, want := h.mustGet(up.URL+releasePath, 200)
	h.known(up.URL + releasePath) // its learn reads the blob; wait for it
	c, err := h.store.Cached(up.URL + releasePath)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.store.Remove(c.Digest); err != nil {
		t.Fatal(err)
	}
	h.clock.advance(time.Minute)
	_, body := h.mustGet(up.URL+releasePath, 200)
	if !bytes.Equal(body, want) {
		t.Fatalf("refetched Release differs")
	}
	up.mu.Lock()
	conds := up.conds[releasePath]
	up.mu.Unlock()
	if conds != 0 || up.count(releasePath) != 2 {
		t.Fatalf("after eviction: %d conditional and %d full GETs, want 0 and 2", conds, up.count(releasePath))
	}
}

// A browser on the status page asks for /favicon.ico: answered here, never
// taken for an apt-cacher-ng style request to a host named favicon.ico,
// and not counted as a proxy request.
func TestFaviconStaysLocal(t *testing.T) {
	up := newUpstream(t, 10)
	h := newHarness(t, up)
	resp, err := http.Get(h.front.URL + "/favicon.ico")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// Taken for a host, it would be a failed lookup of "favicon.ico": 502.
	if resp.StatusCode != http.StatusNotFound || h.px.Snapshot()["requests"] != 0 {
		t.Fatalf("favicon: %d, %d proxy requests; want 404, 0", resp.StatusCode, h.px.Snapshot()["requests"])
	}
	// A browser at the root gets the status page, not a one-line error.
	resp, err = http.Get(h.front.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(page), "Acquire::http::Proxy") {
		t.Fatalf("root: %d %q, want the status page with how to point apt at warren", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// A package dropped from the archive is forgotten at the next sweep, as
// apt really fetches: the index by hash, under a new URL each update.
func TestSweepForgetsAPackageTheArchiveDropped(t *testing.T) {
	up := newUpstream(t, 1000)
	h := newHarness(t, up)
	const gonePath = "/debian/pool/main/g/gone/gone_1.0_amd64.deb"
	publish := func(paths ...string) string { // Release and a by-hash Packages.gz listing paths
		var pkgs strings.Builder
		for i, p := range paths {
			fmt.Fprintf(&pkgs, "Package: p%d\nFilename: %s\nSize: 1000\nSHA256: %s\n\n", i, strings.TrimPrefix(p, "/debian/"), sha256hex([]byte(p)))
		}
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		zw.Write([]byte(pkgs.String()))
		zw.Close()
		byHash := "/debian/dists/stable/main/binary-amd64/by-hash/SHA256/" + sha256hex(gz.Bytes())
		up.mu.Lock()
		up.files[byHash] = gz.Bytes()
		up.files[releasePath] = []byte(fmt.Sprintf("Suite: stable\nAcquire-By-Hash: yes\nSHA256:\n %s %d main/binary-amd64/Packages.gz\n", sha256hex(gz.Bytes()), gz.Len()))
		up.mu.Unlock()
		up.modAt = up.modAt.Add(time.Hour)
		return byHash
	}
	byHash := publish(debPath, gonePath)
	h.mustGet(up.URL+releasePath, 200)
	h.mustGet(up.URL+byHash, 200)
	if _, err := h.known(up.URL + gonePath); err != nil {
		t.Fatalf("first index not learnt: %v", err)
	}
	h.clock.advance(time.Minute)
	byHash = publish(debPath) // the archive dropped gone
	h.mustGet(up.URL+releasePath, 200)
	h.mustGet(up.URL+byHash, 200)
	if _, err := h.known(up.URL + debPath); err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.SweepKnown(t.Context(), h.clock.now().Unix(), 30*24*time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := h.known(up.URL + gonePath); !errors.Is(err, cachestore.ErrNotFound) {
		t.Fatalf("the dropped package is still known after the sweep: %v", err)
	}
	if _, err := h.known(up.URL + debPath); err != nil {
		t.Fatalf("a listed package was swept: %v", err)
	}
}

// Close cancels the fills in progress and waits for them; a request that
// comes after it starts none (it would run on a store about to close) and
// gets 503 saying why.
func TestCloseEndsFillsAndRefusesNew(t *testing.T) {
	up := newUpstream(t, 100000)
	h := newHarness(t, up)
	_, reached, hangUp := startGatedFill(t, h)
	defer hangUp()
	<-reached
	h.px.Close()
	h.door.Close() // returns: the gated fill was cancelled and waited for
	resp, body, err := h.get(up.URL + "/debian/pool/main/h/hello/other_1.0_amd64.deb")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "shutting down") {
		t.Fatalf("a request after Close: %d %q, want 503 shutting down", resp.StatusCode, clipBody(body))
	}
}

// Two repositories on one host, one rooted at an ancestor path of the
// other: the most specific repository's hash stands for its files,
// whichever was learnt first, so the outer one cannot make the inner one's
// URL serve other bytes.
func TestNestedRepositoryCannotOverride(t *testing.T) {
	for _, outerFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("outer learnt first %v", outerFirst), func(t *testing.T) {
			up := newUpstream(t, 5000)
			other := randomBytes(5000, 3)
			rel, pkgs := up.addRootRepo(other)
			h := newHarness(t, up)
			learnOuter := func() {
				h.mustGet(up.URL+rel, 200)
				h.mustGet(up.URL+pkgs, 200)
				h.known(up.URL + pkgs) // wait for its learn
			}
			if outerFirst {
				learnOuter()
				h.learn()
			} else {
				h.learn()
				learnOuter()
			}
			k, err := h.known(up.debURL)
			if err != nil || k.Digest.Hex != sha256hex(up.deb) {
				t.Fatalf("the inner repository's deb is known as %+v (%v), want its own hash", k, err)
			}
			_, body := h.mustGet(up.debURL, 200)
			if !bytes.Equal(body, up.deb) {
				t.Fatal("the deb is not its repository's bytes")
			}
		})
	}
}

// A Packages file with one malformed entry (a Filename climbing out with
// ../) keeps the hashes listed before it, as the log says: only the rest
// is lost, not the whole batch.
func TestMalformedEntryKeepsWhatCameBefore(t *testing.T) {
	up := newUpstream(t, 1000)
	pkgs := fmt.Sprintf("Package: hello\nVersion: 1.0\nArchitecture: amd64\nFilename: %s\nSize: %d\nSHA256: %s\n\n"+
		"Package: evil\nVersion: 1\nArchitecture: amd64\nFilename: ../../etc/evil.deb\nSize: 1\nSHA256: %s\n\n",
		strings.TrimPrefix(debPath, "/debian/"), len(up.deb), sha256hex(up.deb), sha256hex([]byte("x")))
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(pkgs))
	zw.Close()
	up.mu.Lock()
	up.files[packagesPath] = gz.Bytes()
	up.files[releasePath] = []byte(fmt.Sprintf("Suite: stable\nSHA256:\n %s %d main/binary-amd64/Packages.gz\n", sha256hex(gz.Bytes()), gz.Len()))
	up.mu.Unlock()
	h := newHarness(t, up)
	h.mustGet(up.URL+releasePath, 200)
	h.mustGet(up.URL+packagesPath, 200)
	if k, err := h.known(up.debURL); err != nil || k.Digest.Hex != sha256hex(up.deb) {
		t.Fatalf("the entry before the malformed one: %+v %v, want its hash learnt", k, err)
	}
}

// Zero means zero: an index TTL of 0 revalidates on every request (it used
// to be taken for "unset" and became 5s).
func TestZeroIndexTTLAlwaysRevalidates(t *testing.T) {
	up := newUpstream(t, 10)
	h := newHarness(t, up, func(c *testConfig, _ *cachestore.Config) { c.IndexTTL = 0 })
	u := up.URL + packagesPath
	h.mustGet(u, 200)
	h.mustGet(u, 200)
	up.mu.Lock()
	conds := up.conds[packagesPath]
	up.mu.Unlock()
	if conds != 1 {
		t.Fatalf("upstream answered %d revalidations of the index, want 1 (index_ttl 0 asks every time)", conds)
	}
}
