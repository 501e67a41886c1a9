package feedserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/chocolatey"
	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/hub"
	"github.com/warren-cache/warren/status"
	"golang.org/x/sync/singleflight"
)

// Door is what the feed server needs of the door: its upstream client,
// learning the packages' hashes, keeping answers.
type Door interface {
	Upstream(req *http.Request, who door.Asker) (*http.Response, error)
	LearnFacts(facts map[string]cachestore.Known) error
	Keep(ctx context.Context, key, kind string, body []byte, meta map[string]string) (cachestore.Digest, error)
	// What internalization needs (internalize.go): packages and
	// installers fetched as a request's are, a rewritten package kept,
	// an installer's plan by its digest.
	Plan(ctx context.Context, u *url.URL, cred door.Credential) door.Plan
	Fetch(ctx context.Context, p door.Plan, who door.Asker, opts door.FetchOptions) (cachestore.Digest, error)
	Holds(d cachestore.Digest) bool
	KeepBlob(ctx context.Context, key, kind string, body []byte, d cachestore.Digest) error
	InstallerPlan(ctx context.Context, d cachestore.Digest, hint string) (door.Plan, bool)
}

var _ Door = (*door.Door)(nil)

// Store is what it reads of the cache: kept answers and learnt hashes.
type Store interface {
	Cached(url string) (cachestore.Cached, error)
	ReadBlob(d cachestore.Digest) (*cachestore.Blob, error)
	Known(url string) (cachestore.Known, error)
}

// Config is the feed server's.
type Config struct {
	// Feeds maps a feed name to its upstream NuGet v2 base URL; "" is the
	// default feed at /chocolatey/api/v2/, others are served at
	// /chocolatey/<name>/api/v2/ (checked by NewBudgets).
	Feeds map[string]string
	// QueryTTL is how long an answer is kept, by kind of call; kinds not
	// set keep DefaultQueryTTL.
	QueryTTL map[chocolatey.QueryKind]time.Duration
	// Internalize, on a hub (chocolatey.internalize), is its URL as its
	// clients reach it: the feeds serve packages rewritten to download
	// their installers from it, the originals at OriginalPrefix
	// (internalize.go); "": off.
	Internalize string
	// PreloadOnly: a hub in preload mode answers what it keeps, as it is,
	// and the rest with Unheld (hub.Role.Unheld), never asking upstream.
	PreloadOnly bool
	Unheld      func(w http.ResponseWriter, what, url string) bool
	// Served and WAN count bytes for the day's chart: sent to clients,
	// taken from upstream.
	Served, WAN func(eco string, n int64)
	Logger      *slog.Logger
	Now         func() time.Time
}

// Server is the NuGet v2 pull-through feed: /chocolatey/api/v2/ (the
// default feed) and /chocolatey/<name>/api/v2/. Feed pages are fetched
// from upstream within each feed's request budget, their PackageHash facts
// learnt through the door, kept, and every link rewritten to point here;
// packages are the front's to serve, from the store by digest, shared like
// any blob. Close ends its upstream calls.
type Server struct {
	cfg     Config
	door    Door
	store   Store
	budgets *Budgets
	log     *slog.Logger
	now     func() time.Time
	ctx     context.Context // the feed calls'; no client owns them
	cancel  context.CancelFunc

	// Identical calls share one upstream answer.
	feedFlight singleflight.Group
	// One rewrite of a package at a time.
	internalFlight singleflight.Group
	staleAnswers   *prometheus.CounterVec
}

// New builds the feed server over the door whose upstream transport
// budgets wraps (door.Config.Transport: budgets.Wrap).
func New(cfg Config, d Door, store Store, budgets *Budgets) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Served == nil {
		cfg.Served = func(string, int64) {}
	}
	if cfg.WAN == nil {
		cfg.WAN = func(string, int64) {}
	}
	if cfg.Unheld == nil {
		cfg.Unheld = func(w http.ResponseWriter, what, url string) bool {
			http.Error(w, "warren: "+what+" is not held and this hub serves only what it preloaded ("+url+")", http.StatusNotFound)
			return true
		}
	}
	s := &Server{cfg: cfg, door: d, store: store, budgets: budgets, log: cfg.Logger, now: cfg.Now}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.staleAnswers = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "warren_chocolatey_stale_answers_total", Help: "Feed calls answered with a kept answer because upstream could not be asked (budget spent, 429, down).",
	}, []string{"feed"})
	return s
}

// Close ends the feed calls in progress.
func (s *Server) Close() { s.cancel() }

// Prefix is where the feeds are served.
const Prefix = chocoPrefix

// Serve answers a request under /chocolatey/, except a package download,
// whose plan it returns for the front's request story (the store, peers,
// hubs, the origin, verified against the feed's PackageHash).
func (s *Server) Serve(w http.ResponseWriter, r *http.Request) (download *door.Plan) {
	return s.serveChocolatey(w, r)
}

// ServeCall answers a proxy request whose target is a feed call by its
// upstream URL (a node behind a hub, or a client that uses warren as its
// proxy for the feed itself); false when target is none (a download is
// an artifact: the front's).
func (s *Server) ServeCall(w http.ResponseWriter, r *http.Request, target *url.URL) bool {
	rt, ok := s.feedOf(target)
	if !ok || strings.HasPrefix(strings.ToLower(rt.rest), "package/") {
		return false
	}
	s.serveFeed(w, r, rt)
	return true
}

// DownloadPlan is the plan of a proxy request for a package download by
// its upstream URL (a node behind this hub, a client that uses warren as
// its proxy for the feed itself), as at /chocolatey/: by its feed's hash,
// its install script learnt. nil: target is no configured feed's
// download, or no hash is known for it (the cache's as any URL).
func (s *Server) DownloadPlan(ctx context.Context, target *url.URL) *door.Plan {
	rt, ok := s.feedOf(target)
	if !ok {
		return nil
	}
	parts := strings.Split(rt.rest, "/")
	if len(parts) != 3 || !strings.EqualFold(parts[0], "package") || !chocolatey.ValidID(parts[1]) || !chocolatey.ValidVersion(parts[2]) {
		return nil
	}
	p := s.packagePlan(ctx, rt, parts[1], parts[2])
	if p.Digest.IsZero() {
		return nil
	}
	return p
}

// Call asks the feed at feedURL (one this server serves) for rest (what
// follows api/v2/) as a client's call would be answered (kept, its
// entries learnt), and returns its entries, or its body when it is no
// XML page: a hub's preloading.
func (s *Server) Call(ctx context.Context, feedURL, rest string) ([]chocolatey.Entry, []byte, error) {
	var rt chocoRoute
	found := false
	for name, up := range s.cfg.Feeds {
		if strings.EqualFold(up, feedURL) {
			rt, found = chocoRoute{feed: name, upstream: up}, true
			break
		}
	}
	if !found {
		return nil, nil, fmt.Errorf("feed %s is not one this warren serves: add it as chocolatey.upstream or under chocolatey.feeds", hub.RedactURLs(feedURL))
	}
	path, query, _ := strings.Cut(rest, "?")
	norm, kind, err := chocolatey.NormalizeQuery(path, query)
	if err != nil {
		return nil, nil, err
	}
	a, err := s.fetchFeed(rt, rt.upstream+rest, string(kind), feedQueryKey(rt.upstream, norm), nil)
	if err == nil && a.status != 200 {
		err = fmt.Errorf("the feed answered %d", a.status)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", hub.RedactURLs(rt.upstream+rest), err)
	}
	if !isXML(a.header["Content-Type"]) {
		return nil, a.body, nil
	}
	f, err := chocolatey.ParseFeed(bytes.NewReader(a.body))
	if err != nil {
		return nil, a.body, fmt.Errorf("%s: %w", hub.RedactURLs(rt.upstream+rest), err)
	}
	return f.Entries, a.body, nil
}

// Collectors are the feeds' counters for /metrics (the budgets' figures
// the status board shows from BudgetStats).
func (s *Server) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.budgets.feedUpstream, s.staleAnswers}
}

// BudgetStats are the feeds' request budgets, by feed.
func (s *Server) BudgetStats() []status.Budget { return s.budgets.Stats() }

const (
	chocoPrefix  = "/chocolatey/"
	maxFeedBytes = 16 << 20 // one OData page is tens of KiB; more is not a feed
)

type chocoRoute struct {
	feed     string // "" for the default feed
	upstream string // upstream base URL, ending in /
	ourBase  string // this feed's base URL as the client reaches it, ending in /
	rest     string // what follows api/v2/
	// internal: the feed serves internalized packages; originalBase is
	// the same feed's base at OriginalPrefix (internalize.go).
	internal     bool
	originalBase string
}

// errBadFeedPath is a path that could leave the feed's base upstream.
var errBadFeedPath = errors.New("feed paths may not contain . or .. segments")

func (s *Server) chocoRoute(r *http.Request) (chocoRoute, error) {
	for _, seg := range strings.Split(r.URL.Path, "/") {
		if seg == "." || seg == ".." {
			return chocoRoute{}, errBadFeedPath
		}
	}
	prefix := chocoPrefix
	if strings.HasPrefix(r.URL.Path, OriginalPrefix) {
		prefix = OriginalPrefix
	}
	// The escaped form, so that what the client encoded stays encoded upstream.
	p := strings.TrimPrefix(r.URL.EscapedPath(), prefix)
	var feed string
	if !strings.HasPrefix(p, "api/v2") {
		feed, p, _ = strings.Cut(p, "/")
	}
	rest, ok := strings.CutPrefix(p, "api/v2")
	if !ok || rest != "" && rest[0] != '/' {
		return chocoRoute{}, fmt.Errorf("%q is not a feed path: use %sapi/v2/ or %s<feed>/api/v2/", r.URL.Path, chocoPrefix, chocoPrefix)
	}
	up, ok := s.cfg.Feeds[feed]
	if !ok {
		return chocoRoute{}, fmt.Errorf("no chocolatey feed named %q is configured (chocolatey.feeds in the config)", feed)
	}
	sub := "api/v2/"
	if feed != "" {
		sub = feed + "/" + sub
	}
	rt := chocoRoute{feed: feed, upstream: up, ourBase: "http://" + r.Host + prefix + sub, rest: strings.TrimPrefix(rest, "/")}
	if s.cfg.Internalize != "" && prefix == chocoPrefix {
		rt.internal, rt.originalBase = true, "http://"+r.Host+OriginalPrefix+sub
	}
	return rt, nil
}

func (s *Server) serveChocolatey(w http.ResponseWriter, r *http.Request) *door.Plan {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "warren: the chocolatey feed is read-only (GET and HEAD)", http.StatusMethodNotAllowed)
		return nil
	}
	rt, err := s.chocoRoute(r)
	if errors.Is(err, errBadFeedPath) {
		http.Error(w, "warren: "+err.Error(), http.StatusBadRequest)
		return nil
	}
	if err != nil {
		http.Error(w, "warren: "+err.Error(), http.StatusNotFound)
		return nil
	}
	if parts := strings.Split(rt.rest, "/"); len(parts) == 3 && strings.EqualFold(parts[0], "package") {
		return s.nupkgPlan(w, r, rt, parts[1], parts[2])
	}
	s.serveFeed(w, r, rt)
	return nil
}

// feedOf says which configured feed a proxy request's target lies
// under: a node behind a hub (or a client that uses warren as its proxy
// for the feed itself) asks for feed calls by their upstream URL. The
// route answers with upstream's links unchanged (ourBase ""): the client
// rewrites them, if at all, itself.
func (s *Server) feedOf(target *url.URL) (chocoRoute, bool) {
	u := *target
	u.RawQuery = ""
	full := u.String()
	for name, up := range s.cfg.Feeds {
		if rest, ok := strings.CutPrefix(full, up); ok && !strings.Contains("/"+rest+"/", "/../") {
			return chocoRoute{feed: name, upstream: up, rest: rest}, true
		}
	}
	return chocoRoute{}, false
}

// feedAnswer is one upstream answer to a feed call, as kept: its links
// still name upstream (each client gets them rewritten to the host name it
// used).
type feedAnswer struct {
	status  int
	header  map[string]string
	body    []byte
	fetched time.Time
}

// feedHeaders are the answer headers kept and passed on.
var feedHeaders = []string{"Content-Type", "DataServiceVersion", "Last-Modified", "ETag"}

// serveFeed answers an OData call. Calls that ask the same thing (one
// normal form) share one upstream answer: concurrent ones wait for the
// same fetch, later ones get the kept answer while it is younger than its
// kind's query_ttl. Upstream is asked within the feed's request budget;
// when the budget is spent, upstream refuses (429) or is down, the last
// good answer is served, marked stale, else a 503 or 502 says why.
func (s *Server) serveFeed(w http.ResponseWriter, r *http.Request, rt chocoRoute) {
	start := s.now()
	norm, kind, err := chocolatey.NormalizeQuery(rt.rest, r.URL.RawQuery)
	if err != nil {
		http.Error(w, "warren: "+err.Error(), http.StatusBadRequest)
		return
	}
	target := rt.upstream + rt.rest
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	// The answer depends on the upstream, not on the name a feed has here.
	key := feedQueryKey(rt.upstream, norm)
	kept, haveKept := s.keptAnswer(key)
	var a feedAnswer
	outcome := "hit"
	switch {
	case haveKept && (s.cfg.PreloadOnly || s.now().Sub(kept.fetched) < s.queryTTL(kind)):
		// A preload-only hub answers what it keeps, as it is.
		a = kept
	case s.cfg.PreloadOnly:
		s.cfg.Unheld(w, "this URL", hub.RedactURLs(target))
		s.logFeed(r, target, kind, "refused", http.StatusNotFound, 0, start)
		return
	default:
		hdr := r.Header.Clone()
		v, err, shared := s.feedFlight.Do(key, func() (any, error) {
			return s.fetchFeed(rt, target, string(kind), key, hdr)
		})
		var be *BudgetError
		var got feedAnswer
		if err == nil {
			got = v.(feedAnswer)
		}
		switch {
		case err == nil && got.status < 500 && got.status != http.StatusTooManyRequests:
			a, outcome = got, "miss"
			if shared {
				outcome = "coalesced"
			}
		case haveKept:
			// Offline: the last good answer, marked stale.
			a, outcome = kept, "stale"
			s.staleAnswers.WithLabelValues(feedLabel(rt.feed)).Inc()
			w.Header().Set("Warning", `110 warren "Response is Stale"`)
			if err == nil {
				err = fmt.Errorf("upstream answered %d", got.status)
			}
			s.log.Debug("chocolatey feed answered from the cache while upstream cannot be asked", slog.String("url", hub.RedactURLs(target)), slog.Any("why", err))
		case errors.As(err, &be):
			w.Header().Set("Retry-After", strconv.Itoa(int(max(be.RetryAfter.Round(time.Second)/time.Second, 1))))
			http.Error(w, "warren: "+be.Error()+"; no earlier answer to this call is kept", http.StatusServiceUnavailable)
			s.logFeed(r, target, kind, "budget", http.StatusServiceUnavailable, 0, start)
			return
		case err != nil:
			s.log.Warn("chocolatey feed upstream unreachable", slog.String("url", hub.RedactURLs(target)), slog.Any("err", err))
			http.Error(w, "warren: "+err.Error(), http.StatusBadGateway)
			s.logFeed(r, target, kind, "error", http.StatusBadGateway, 0, start)
			return
		case got.status == http.StatusTooManyRequests:
			w.Header().Set("Retry-After", strconv.Itoa(s.blockedFor(rt)))
			http.Error(w, "warren: the chocolatey upstream refuses requests for now (429) and no earlier answer to this call is kept; retry later", http.StatusServiceUnavailable)
			s.logFeed(r, target, kind, "budget", http.StatusServiceUnavailable, 0, start)
			return
		default: // a 5xx, nothing kept: passed on
			a, outcome = got, "pass"
		}
	}
	body := a.body
	if a.status == http.StatusOK && isXML(a.header["Content-Type"]) && rt.ourBase != "" {
		body = s.rewriteFeed(rt, target, body)
		if rt.internal {
			body = s.internalizeAnswer(r.Context(), rt, body)
		}
	}
	for k, v := range a.header {
		w.Header().Set(k, v)
	}
	if outcome == "hit" || outcome == "stale" {
		w.Header().Set("X-Cache", strings.ToUpper(outcome)+" from warren")
		w.Header().Set("Age", strconv.Itoa(int(max(s.now().Sub(a.fetched), 0)/time.Second)))
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(a.status)
	if r.Method == http.MethodGet {
		w.Write(body)
		s.cfg.Served(door.EcoChocolatey, int64(len(body)))
	}
	s.logFeed(r, target, kind, outcome, a.status, len(body), start)
}

// blockedFor is how many seconds rt's upstream refuses requests for (at
// least one): the Retry-After its 429 named.
func (s *Server) blockedFor(rt chocoRoute) int {
	secs := 1
	if u, err := url.Parse(rt.upstream); err == nil {
		if b := s.budgets.byHost[strings.ToLower(u.Host)]; b != nil {
			secs = max(secs, int(time.Until(b.stats().BlockedUntil)/time.Second))
		}
	}
	return secs
}

func (s *Server) logFeed(r *http.Request, target string, kind chocolatey.QueryKind, outcome string, status, n int, start time.Time) {
	s.log.Info("request", slog.String("method", r.Method), slog.String("url", hub.RedactURLs(target)), slog.String("kind", "nuget-"+string(kind)),
		slog.String("outcome", outcome), slog.Int("status", status), slog.Int("bytes", n),
		slog.Duration("took", s.now().Sub(start)), slog.String("client", r.RemoteAddr))
}

// queryTTL is how long an answer of kind is served without asking again.
func (s *Server) queryTTL(kind chocolatey.QueryKind) time.Duration {
	if d, ok := s.cfg.QueryTTL[kind]; ok {
		return d
	}
	return DefaultQueryTTL[kind]
}

// DefaultQueryTTL keeps what does not change (the service document, the
// schema, one version's entry) for a day and what does (the latest
// version, searches, updates) for minutes.
var DefaultQueryTTL = map[chocolatey.QueryKind]time.Duration{
	chocolatey.KindService:  24 * time.Hour,
	chocolatey.KindMetadata: 24 * time.Hour,
	chocolatey.KindPackage:  24 * time.Hour,
	chocolatey.KindFilter:   5 * time.Minute,
	chocolatey.KindFind:     5 * time.Minute,
	chocolatey.KindSearch:   5 * time.Minute,
	chocolatey.KindUpdates:  5 * time.Minute,
	chocolatey.KindOther:    5 * time.Minute,
}

// fetchFeed asks upstream once for a feed call (on the server's context:
// the callers sharing it may come and go), learns the package hashes of a
// good answer and keeps it.
func (s *Server) fetchFeed(rt chocoRoute, target, kind, key string, hdr http.Header) (feedAnswer, error) {
	ctx, cancel := context.WithTimeout(withFeedCall(s.ctx, rt.feed, kind), feedFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return feedAnswer{}, fmt.Errorf("bad feed request: %w", err)
	}
	for _, k := range []string{"Accept", "Accept-Language", "DataServiceVersion", "MaxDataServiceVersion"} {
		if v := hdr.Get(k); v != "" {
			req.Header.Set(k, v)
		}
	}
	resp, err := s.door.Upstream(req, door.Asker{UA: hdr.Get("User-Agent"), Via: hdr.Values("Via")})
	if err != nil {
		var be *BudgetError
		if errors.As(err, &be) {
			return feedAnswer{}, be
		}
		return feedAnswer{}, &door.UpstreamFetchError{URL: hub.RedactURLs(target), Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxFeedBytes+1))
	s.cfg.WAN(door.EcoChocolatey, int64(len(body)))
	if err != nil {
		return feedAnswer{}, &door.UpstreamFetchError{URL: hub.RedactURLs(target), Err: err}
	}
	if len(body) > maxFeedBytes {
		return feedAnswer{}, fmt.Errorf("feed answer from %s is larger than %d bytes", hub.RedactURLs(target), maxFeedBytes)
	}
	a := feedAnswer{status: resp.StatusCode, header: map[string]string{}, body: body, fetched: s.now()}
	for _, k := range feedHeaders {
		if v := resp.Header.Get(k); v != "" {
			a.header[k] = v
		}
	}
	if a.status == http.StatusOK && isXML(a.header["Content-Type"]) {
		feed, err := chocolatey.ParseFeed(bytes.NewReader(body))
		if err != nil {
			s.log.Warn("malformed feed answer; passed on unchanged, nothing learnt, not kept", slog.String("url", hub.RedactURLs(target)), slog.Any("err", err))
			return a, nil
		}
		if len(feed.Skipped) > 0 {
			s.log.Warn("feed entries left out (they download from upstream directly)", slog.String("url", hub.RedactURLs(target)),
				slog.Int("count", len(feed.Skipped)), slog.String("first", feed.Skipped[0]))
		}
		s.recordEntries(rt, feed.Entries)
	}
	if a.status == http.StatusOK {
		s.keepAnswer(key, a)
	}
	return a, nil
}

// feedFetchTimeout bounds one upstream feed call, budget wait included.
const feedFetchTimeout = time.Minute

// keepAnswer stores a good answer through the door, under its normal
// form (recorded for replication when it is a new one).
func (s *Server) keepAnswer(key string, a feedAnswer) {
	ctx, cancel := context.WithTimeout(s.ctx, feedFetchTimeout)
	defer cancel()
	if _, err := s.door.Keep(ctx, key, "feed", a.body, a.header); err != nil {
		s.log.Warn("could not keep a feed answer (served, not kept)", slog.String("key", key), slog.Any("err", err))
	}
}

// keptAnswer reads the answer kept under key.
func (s *Server) keptAnswer(key string) (feedAnswer, bool) {
	c, err := s.store.Cached(key)
	if err != nil || c.Size > maxFeedBytes {
		return feedAnswer{}, false
	}
	b, err := s.store.ReadBlob(c.Digest)
	if err != nil {
		return feedAnswer{}, false // evicted: asked again
	}
	defer b.Close()
	body, err := io.ReadAll(io.LimitReader(b.File, maxFeedBytes+1))
	if err != nil || int64(len(body)) != c.Size {
		return feedAnswer{}, false
	}
	h := map[string]string{}
	for k, v := range c.Meta {
		h[k] = v
	}
	if len(h) == 0 && c.ContentType != "" {
		h["Content-Type"] = c.ContentType
	}
	return feedAnswer{status: http.StatusOK, header: h, body: body, fetched: c.Fetched}, true
}

func isXML(ct string) bool {
	return strings.Contains(ct, "xml") // application/atom+xml, application/xml, text/xml
}

// rewriteFeed points an answer's links (content src, next, xml:base, ids)
// at this feed as the client reached it. A page that does not parse is
// passed on unchanged.
func (s *Server) rewriteFeed(rt chocoRoute, target string, body []byte) []byte {
	feed, err := chocolatey.ParseFeed(bytes.NewReader(body))
	if err != nil {
		return body
	}
	// strings.Replacer tries its pairs in order at each position: the
	// package URLs first, then the bases they start with.
	var pairs []string
	for _, e := range feed.Entries {
		ours := rt.ourBase + "package/" + e.ID + "/" + e.Version
		pairs = append(pairs, xmlAttr(e.ContentSrc), xmlAttr(ours))
	}
	for _, base := range []string{feed.Base, rt.upstream} {
		if base = strings.TrimSuffix(base, "/"); base != "" {
			pairs = append(pairs, xmlAttr(base)+"/", rt.ourBase, xmlAttr(base), strings.TrimSuffix(rt.ourBase, "/"))
		}
	}
	return []byte(strings.NewReplacer(pairs...).Replace(string(body)))
}

func xmlAttr(s string) string { return strings.ReplaceAll(s, "&", "&amp;") }

// feedQueryKey is the index key of a feed answer: the call's normal form
// on the feed's URL, without the feed's credentials (a key is on disk, in
// logs and in the change feed; a replication scope names the feed without
// them).
func feedQueryKey(upstream, norm string) string {
	return hub.FeedQueryPrefix + withoutUserinfo(upstream) + norm
}

func withoutUserinfo(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	u.User = nil
	return u.String()
}

// PackageKey is the index key of a package's learnt hash: by feed, id and
// version (what a download names), not by URL.
func PackageKey(feed, id, version string) string { return chocoKey(feed, id, version) }

func chocoKey(feed, id, version string) string {
	return "chocolatey:" + feed + ":" + strings.ToLower(id) + "/" + strings.ToLower(version)
}

func (s *Server) recordEntries(rt chocoRoute, entries []chocolatey.Entry) {
	facts := map[string]cachestore.Known{}
	for _, e := range entries {
		if e.HashHex == "" {
			continue // no hash: the package is cached by URL only
		}
		facts[chocoKey(rt.feed, e.ID, e.Version)] = cachestore.Known{
			Digest: cachestore.Digest{Algo: e.HashAlgo, Hex: e.HashHex}, Size: e.Size, Source: e.ContentSrc,
		}
	}
	if len(facts) == 0 {
		return
	}
	if err := s.door.LearnFacts(facts); err != nil {
		s.log.Error("could not record package hashes", slog.String("feed", rt.feed), slog.Any("err", err))
	}
}

// learnPackage asks upstream for one package's entry, for a download whose
// metadata did not pass through us first.
func (s *Server) learnPackage(ctx context.Context, rt chocoRoute, id, version string) {
	target := rt.upstream + "Packages(Id='" + id + "',Version='" + version + "')"
	req, err := http.NewRequestWithContext(withFeedCall(ctx, rt.feed, string(chocolatey.KindPackage)), http.MethodGet, target, nil)
	if err != nil {
		return
	}
	resp, err := s.door.Upstream(req, door.Asker{})
	if err != nil {
		s.log.Warn("could not look up a package's hash", slog.String("url", hub.RedactURLs(target)), slog.Any("err", err))
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return
	}
	feed, err := chocolatey.ParseFeed(io.LimitReader(resp.Body, maxFeedBytes))
	if err != nil {
		s.log.Warn("malformed package entry", slog.String("url", hub.RedactURLs(target)), slog.Any("err", err))
		return
	}
	s.recordEntries(rt, feed.Entries)
}

// nupkgPlan is how a package download is served: by the digest its feed
// entry gave, fetched from its upstream content src on a miss and
// verified against PackageHash. nil: answered (a bad id or version).
func (s *Server) nupkgPlan(w http.ResponseWriter, r *http.Request, rt chocoRoute, id, version string) *door.Plan {
	if !chocolatey.ValidID(id) || !chocolatey.ValidVersion(version) {
		http.Error(w, fmt.Sprintf("warren: %q %q is not a package id and version", id, version), http.StatusBadRequest)
		return nil
	}
	if rt.internal {
		if p, ok := s.internalPlan(r.Context(), rt, id, version); ok {
			return &p
		}
	}
	return s.packagePlan(r.Context(), rt, id, version)
}

// packagePlan is how a package is fetched: by the digest its feed entry
// gave, from its content src.
func (s *Server) packagePlan(ctx context.Context, rt chocoRoute, id, version string) *door.Plan {
	key := chocoKey(rt.feed, id, version)
	k, err := s.store.Known(key)
	if errors.Is(err, cachestore.ErrNotFound) {
		s.learnPackage(ctx, rt, id, version)
		k, err = s.store.Known(key)
	}
	// PackageSize is informational in feeds; the hash is what is checked.
	p := door.Plan{Kind: "nupkg", Eco: door.EcoChocolatey, Size: -1, URL: rt.upstream + "package/" + id + "/" + version}
	if err == nil {
		p.URL, p.Digest = k.Source, k.Digest
		// Verified against the feed's hash, its install script
		// teaches what its installers must hash to.
		p.Meta, p.MetaName = door.MetaNupkg, id+"."+version+".nupkg"
	}
	p.Key = p.URL
	if key, ok := door.CanonicalString(p.URL); ok {
		p.Key = key
	}
	return &p
}

// StaleAnswers counts feed's calls answered with a kept answer because
// upstream could not be asked.
func (s *Server) StaleAnswers(feed string) prometheus.Counter {
	return s.staleAnswers.WithLabelValues(feedLabel(feed))
}
