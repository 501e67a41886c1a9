package proxy

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elazarl/goproxy"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/chocolatey"
	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/hub"
	"github.com/warren-cache/warren/intercept"
	"github.com/warren-cache/warren/status"
)

// Store is what the proxy needs of the cache.
type Store interface {
	Known(url string) (cachestore.Known, error)
	PutKnown(facts map[string]cachestore.Known) error
	Cached(url string) (cachestore.Cached, error)
	PutCached(url string, c cachestore.Cached) error
	Stat(d cachestore.Digest) (cachestore.BlobInfo, error)
	OpenBlob(d cachestore.Digest) (*cachestore.Blob, cachestore.BlobInfo, error)
	// OpenHit is OpenBlob for serving a hit: read through Content.
	OpenHit(d cachestore.Digest) (*cachestore.Blob, cachestore.BlobInfo, error)
	ReadBlob(d cachestore.Digest) (*cachestore.Blob, error)
	KnownKeys(fn func(key string)) error
	Learnt(lister uint64, at int64, d cachestore.Digest) error
	LearntFrom(lister uint64) (cachestore.Digest, error)
	BeginFill(key string) (*cachestore.Fill, bool)
	PinGenerations(owner string, gens []cachestore.PinGen, keep int) ([]cachestore.PinGen, error)
	// The change log (replication.go, replicate.go).
	RecordChange(c cachestore.Change) (uint64, error)
	Changes(after uint64, n int) ([]cachestore.Change, uint64, error)
	ChangeKeys(d cachestore.Digest) ([]string, error)
	Tombstoned(d cachestore.Digest) bool
	Holds(d cachestore.Digest) bool
	Remove(d cachestore.Digest) error
	// ScopeSecret keys private scopes (private.go).
	ScopeSecret() ([]byte, error)
}

var _ Store = (*cachestore.Store)(nil)

// Peers and Hub are what the door needs of the LAN and of a hub.
type (
	Peers = door.Peers
	Hub   = door.Hub
)

// Config holds the proxy's settings.
type Config struct {
	// AllowClients are the networks that may use the proxy. Empty means
	// loopback and the subnets of this machine's interfaces.
	AllowClients []netip.Prefix
	// AllowUpstream are networks upstream may be in although they are
	// loopback, link-local, unspecified or this machine's own addresses,
	// which are refused otherwise.
	AllowUpstream []netip.Prefix
	// ConnectPorts are the ports CONNECT may tunnel to (empty:
	// DefaultConnectPort).
	ConnectPorts []int
	// IndexTTL is how long a URL-cached file (Release, Packages, ...) is
	// served without asking upstream again (0: always asked;
	// DefaultIndexTTL is the daemon's default).
	IndexTTL time.Duration
	// NegativeTTL is how long a 404 from upstream is remembered (0: not at all).
	NegativeTTL time.Duration
	// StallTimeout moves a fill on to its next source when the current one
	// makes too little progress for this long (0: fill.DefaultStallTimeout).
	StallTimeout time.Duration
	// ShareMinSize: artifacts smaller than this go upstream at once, the
	// peers' answers only a fallback (0: peers first for every size;
	// DefaultShareMinSize is the daemon's default).
	ShareMinSize int64
	// ChocolateyFeeds maps a feed name to its upstream NuGet v2 base URL;
	// "" is the default feed at /chocolatey/api/v2/, others are served at
	// /chocolatey/<name>/api/v2/.
	ChocolateyFeeds map[string]string
	// ChocolateyQueryTTL is how long a feed answer is kept, by kind of
	// call; kinds not set keep DefaultQueryTTL.
	ChocolateyQueryTTL map[chocolatey.QueryKind]time.Duration
	// ChocolateyRate is each feed's upstream request budget; nil: 15 a
	// minute for feeds on the community repository, no limit elsewhere.
	ChocolateyRate *Rate
	// Peers finds blobs of known digests on the LAN before upstream; nil:
	// no peering.
	Peers Peers
	// Hubs are the site's hubs, in failover order: asked after the LAN's
	// peers and before the origin, for index files and feed answers too.
	Hubs []Hub
	// HubOnly: never the origin directly (sites whose WAN policy forbids
	// it); with no hub answering, a client gets a clear error.
	HubOnly bool
	// Hub, when set, makes this warren a site's hub.
	Hub *HubRole
	// Intercept, when set, names the https hosts whose CONNECTs warren
	// answers itself with the site CA's certificates (package intercept).
	Intercept intercept.Certs
	// UpstreamRoots are the CAs warren trusts for https upstreams; nil:
	// the system's (SSL_CERT_FILE and SSL_CERT_DIR are honoured).
	UpstreamRoots *x509.CertPool
	// Status gives the status page and /_warren/stats the other parts'
	// state (cache, peers, uploads).
	Status func() status.Status
	// Collectors are more Prometheus metrics for /metrics (peers, cache).
	Collectors []prometheus.Collector
	// Dial, when set, makes upstream connections instead of TCP (the
	// simulator's network): the destination rules, which check the
	// addresses real sockets connect to, do not apply to it.
	Dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	Logger *slog.Logger
	Now    func() time.Time
}

// Server is the proxy. Close stops its fills.
type Server struct {
	cfg   Config
	store Store
	door  *door.Door
	log   *slog.Logger
	now   func() time.Time
	gp    *goproxy.ProxyHttpServer
	// tunnels answers the CONNECTs to intercepted hosts; nil without.
	tunnels *intercept.Tunnels

	ctx    context.Context // the tunnels' and feeds' parent; no client owns it
	cancel context.CancelFunc

	bufs sync.Pool // copy buffers
	// corkBufs hold corked answers' heads (cork.go).
	corkBufs sync.Pool

	// The Chocolatey feeds: identical calls share one upstream answer,
	// and each feed's host has a request budget.
	feedFlight   singleflight.Group
	budgets      map[string]*budget // by upstream host
	staleAnswers *prometheus.CounterVec
	feedUpstream *prometheus.CounterVec

	hubm       hubMetrics
	replServed atomic.Int64 // blob bytes served to hubs pulling from this one
	stats      Stats
	hist       status.History // the last day's bytes by ecosystem, for the page
	board      *status.Board  // the status page, /_warren/stats and /metrics
}

// Stats are running totals, read with Snapshot.
type Stats struct {
	Requests    atomic.Int64
	Hits        atomic.Int64
	Misses      atomic.Int64
	Errors      atomic.Int64
	BytesCache  atomic.Int64
	BytesServed atomic.Int64 // sent to clients (on a hub: to its nodes)
}

// Defaults the daemon starts from (cmd/warren's defaults() takes them from
// here, so each is written once).
const (
	DefaultConnectPort   = 443
	DefaultIndexTTL      = 5 * time.Second
	DefaultNegativeTTL   = 30 * time.Second
	DefaultShareMinSize  = 256 << 10
	DefaultMaxConns      = 1024
	DefaultMaxClientConn = 64
	// A client's request head is small: a slow or huge one costs little
	// and is answered (431 beyond the cap) or cut. The daemon's server
	// and every intercepted tunnel's apply them.
	ReadHeaderTimeout = 10 * time.Second
	MaxHeaderBytes    = 64 << 10
)

// New builds the proxy.
func New(cfg Config, store Store) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Hub != nil && cfg.Hub.Failures == nil {
		// Never a hub whose tokens can be tried at line speed.
		role := *cfg.Hub
		role.Failures = hub.NewFailLimit(hub.FailLimitConfig{Now: cfg.Now})
		cfg.Hub = &role
	}
	// Only settings for which zero means nothing take a default; a zero
	// TTL or share size means zero.
	if len(cfg.ConnectPorts) == 0 {
		cfg.ConnectPorts = []int{DefaultConnectPort}
	}
	feeds := map[string]string{}
	for name, u := range cfg.ChocolateyFeeds {
		pu, err := url.Parse(u)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return nil, fmt.Errorf("chocolatey feed %q: upstream %q is not an http(s) URL", name, u)
		}
		if name != "" && !chocolatey.ValidID(name) {
			return nil, fmt.Errorf("chocolatey feed name %q: use letters, digits, '.', '-', '_'", name)
		}
		feeds[name] = strings.TrimSuffix(u, "/") + "/"
	}
	cfg.ChocolateyFeeds = feeds
	if len(cfg.AllowClients) == 0 {
		nets, err := LocalNetworks()
		if err != nil {
			return nil, err
		}
		cfg.AllowClients = nets
	}
	budgets := map[string]*budget{}
	for name, u := range feeds {
		pu, _ := url.Parse(u)
		host := strings.ToLower(pu.Host)
		if budgets[host] != nil {
			continue // feeds on one host share its budget: the limit is the host's
		}
		rate := Rate{}
		switch {
		case cfg.ChocolateyRate != nil:
			rate = *cfg.ChocolateyRate
		case isCommunityHost(host):
			rate = communityRate
		}
		budgets[host] = &budget{feed: name, rate: rate, maxWait: budgetMaxWait, log: cfg.Logger}
	}
	s := &Server{
		cfg:      cfg,
		store:    store,
		log:      cfg.Logger,
		now:      cfg.Now,
		budgets:  budgets,
		bufs:     sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }},
		corkBufs: sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }},
	}
	s.feedUpstream = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "warren_chocolatey_upstream_requests_total", Help: "Requests sent to a Chocolatey feed's upstream, by feed and kind of call.",
	}, []string{"feed", "kind"})
	dcfg := door.Config{
		AllowUpstream: cfg.AllowUpstream, UpstreamRoots: cfg.UpstreamRoots,
		IndexTTL: cfg.IndexTTL, NegativeTTL: cfg.NegativeTTL, StallTimeout: cfg.StallTimeout, ShareMinSize: cfg.ShareMinSize,
		Peers: cfg.Peers, Hubs: cfg.Hubs, HubOnly: cfg.HubOnly, Dial: cfg.Dial, Logger: cfg.Logger, Now: cfg.Now,
		WAN: func(eco string, n int64) { s.hist.Add(s.now(), eco, 0, n) },
		Transport: func(base http.RoundTripper) http.RoundTripper {
			return &budgetTransport{base: base, budgets: budgets, count: func(feed, kind string) {
				s.feedUpstream.WithLabelValues(feedLabel(feed), kind).Inc()
			}}
		},
	}
	if cfg.Hub != nil {
		dcfg.KeepGenerations = cfg.Hub.KeepGenerations
		dcfg.PreloadOnly = !cfg.Hub.Mode.OnDemand()
		dcfg.Record = s.recordStored
	}
	d, err := door.New(dcfg, store)
	if err != nil {
		return nil, err
	}
	s.door = d
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.gp = s.newGoproxy()
	if cfg.Intercept != nil {
		s.tunnels = intercept.New(intercept.Config{
			Certs: cfg.Intercept, Transport: d.Client().Transport, Logger: cfg.Logger,
			ReadHeaderTimeout: ReadHeaderTimeout, MaxHeaderBytes: MaxHeaderBytes,
			Cache: func(w http.ResponseWriter, r *http.Request, target *url.URL) {
				s.stats.Requests.Add(1)
				s.serveCache(w, r, target, s.door.CredentialOf(r.Header, target))
			},
		})
	}
	s.hubm = newHubMetrics()
	s.board = s.newBoard()
	return s, nil
}

// newGoproxy builds the pass-through half: CONNECT tunnels and requests the
// cache does not take (other methods).
func (s *Server) newGoproxy() *goproxy.ProxyHttpServer {
	gp := goproxy.NewProxyHttpServer()
	gp.Logger = slogPrintf{s.log}
	gp.Tr = s.door.Transport()
	d := s.door.Dialer()
	gp.ConnectDial = func(network, addr string) (net.Conn, error) { return d.Dial(network, addr) }
	gp.OnRequest().DoFunc(func(r *http.Request, ctx *goproxy.ProxyCtx) (*http.Request, *http.Response) {
		r.Header.Add("Via", s.door.Via())
		return r, nil
	})
	return gp
}

// Close stops every fill and waits for them.
func (s *Server) Close() error {
	s.cancel()
	if s.tunnels != nil {
		s.tunnels.Close()
	}
	return s.door.Close()
}

// Door is the way bytes enter the store, for warren's own callers.
func (s *Server) Door() *door.Door { return s.door }

// Snapshot returns the running totals.
func (s *Server) Snapshot() map[string]int64 {
	return map[string]int64{
		"requests":       s.stats.Requests.Load(),
		"hits":           s.stats.Hits.Load(),
		"misses":         s.stats.Misses.Load(),
		"errors":         s.stats.Errors.Load(),
		"bytes_cache":    s.stats.BytesCache.Load(),          // served from the cache
		"bytes_upstream": s.door.Stats().BytesFetched.Load(), // fetched from upstream
		"bytes_peers":    s.door.Stats().BytesPeers.Load(),   // fetched from peers
		"bytes_hubs":     s.door.Stats().BytesHub.Load(),     // fetched from the site's hubs
		"bytes_served":   s.stats.BytesServed.Load(),         // sent to clients
		"hub_waits":      s.door.Stats().HubWaits.Load(),
		"mismatches":     s.door.Stats().Mismatches.Load(),
	}
}

// ServeHTTP routes: access control, loops, CONNECT, then the cache for
// GET/HEAD (proxy style or apt-cacher-ng style), goproxy for the rest.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.Admit(w, r) {
		return
	}
	if slices.ContainsFunc(r.Header.Values("Via"), func(v string) bool { return strings.Contains(v, s.door.Via()) }) {
		s.log.Warn("refused a request that already passed through this warren (a hub chain that loops back?)",
			slog.String("client", r.RemoteAddr), slog.String("url", shownURL(r)), slog.Any("via", r.Header.Values("Via")))
		s.hubm.refuse(hub.ReasonLoop)
		hub.Refuse(w, http.StatusLoopDetected, hub.ReasonLoop,
			"request loop: this request already passed through this warren ("+s.door.Via()+"); check the hubs settings along the chain")
		return
	}
	if !r.URL.IsAbs() {
		switch r.URL.Path {
		case "/_warren/stats":
			s.board.ServeStats(w, r)
			return
		case "/_warren/", "/_warren", "/":
			// "/" is a person with a browser (apt-cacher-ng answers it
			// with its usage page): the status page, with how to use it.
			s.board.ServePage(w, r)
			return
		case "/metrics":
			s.board.ServeMetrics(w, r)
			return
		case "/favicon.ico":
			// Browsers ask for it beside the status page: it is no
			// apt-cacher-ng style request for a host named favicon.ico.
			http.NotFound(w, r)
			return
		}
	}
	if !r.URL.IsAbs() && strings.HasPrefix(r.URL.Path, hub.ReplicationPrefix) {
		// Other hubs, with a sync token (not a hub token): read-only.
		s.serveReplication(w, r)
		return
	}
	if s.cfg.Hub != nil && !s.hubAdmit(w, r) {
		return
	}
	s.stats.Requests.Add(1) // what clients ask of the proxy, not of its own pages
	if !r.URL.IsAbs() && strings.HasPrefix(r.URL.Path, chocoPrefix) {
		s.serveChocolatey(w, r)
		return
	}
	if r.Method == http.MethodConnect {
		// Dial exactly what is checked: the request line's host:port. A
		// CONNECT whose target is a path ("CONNECT /x") names nothing to
		// check, whatever its Host header says.
		if r.URL.Host == "" {
			http.Error(w, "warren: CONNECT needs host:port as its target", http.StatusBadRequest)
			return
		}
		if err := s.connectAllowed(r.URL.Host); err != nil {
			http.Error(w, "warren: "+err.Error(), http.StatusForbidden)
			return
		}
		if err := s.door.CheckHost(r.Context(), r.URL.Host); err != nil {
			s.refuseDestination(w, r, err)
			return
		}
		if s.tunnels != nil {
			if origin, ok := s.tunnels.Target(r.URL.Host); ok {
				s.tunnels.Serve(w, r, origin)
				return
			}
		}
		// A tunnel: warren sees the host, never what is inside (a host with
		// credentials stays here, so its secrets never reach warren).
		s.log.Debug("tunnel (not intercepted)", slog.String("host", r.URL.Host), slog.String("client", r.RemoteAddr))
		r.Host = r.URL.Host
		s.gp.ServeHTTP(w, r)
		return
	}
	target, err := targetURL(r)
	if err != nil {
		http.Error(w, "warren: "+err.Error(), http.StatusNotFound)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if !r.URL.IsAbs() {
			http.Error(w, "warren: only GET and HEAD are served for apt-cacher-ng style requests", http.StatusMethodNotAllowed)
			return
		}
		if err := s.door.CheckHost(r.Context(), target.Host); err != nil {
			s.refuseDestination(w, r, err)
			return
		}
		s.gp.ServeHTTP(w, r)
		return
	}
	if s.cfg.Hub != nil && r.URL.IsAbs() && target.Scheme == "http" && r.Header.Get(hub.HeaderScheme) == "https" {
		// A node's request for an https URL (see hub.HeaderScheme).
		target.Scheme = "https"
	}
	if target.Scheme != "http" && !(target.Scheme == "https" && s.cfg.Hub != nil && r.Header.Get(hub.HeaderScheme) == "https") {
		http.Error(w, "warren: only http:// URLs are proxied in the clear; use CONNECT for https", http.StatusBadRequest)
		return
	}
	// From here on target has no userinfo: what warren logs and keys
	// by never holds a password (private.go).
	cred := s.door.CredentialOf(r.Header, target)
	if a, err := netip.ParseAddr(strings.Trim(target.Hostname(), "[]")); err == nil {
		// A literal address is refused before any lookup or fill; names
		// are checked on the address the dialer resolves.
		if err := s.door.CheckAddr(target.Host, a); err != nil {
			s.refuseDestination(w, r, err)
			return
		}
	}
	if rt, ok := s.feedOf(target); ok && !strings.HasPrefix(strings.ToLower(rt.rest), "package/") {
		// A feed call by its upstream URL: one answer per normal form,
		// kept and learnt from, as at /chocolatey/ (downloads are
		// artifacts: the cache's).
		s.serveFeed(w, r, rt)
		return
	}
	s.serveCache(w, r, target, cred)
}

// refuseDestination answers 403 for an upstream address the guard refuses.
func (s *Server) refuseDestination(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Warn("refused upstream destination", slog.String("client", r.RemoteAddr), slog.Any("err", err))
	http.Error(w, "warren: "+err.Error(), http.StatusForbidden)
}

// targetURL is the upstream URL a request names: the absolute request URI
// of a proxy request, or http://<first path segment>/<rest> for
// apt-cacher-ng style requests (GET /deb.debian.org/debian/...).
func targetURL(r *http.Request) (*url.URL, error) {
	if r.URL.IsAbs() {
		u := *r.URL
		u.Host = strings.ToLower(u.Host)
		u.Fragment = ""
		return &u, nil
	}
	p := strings.TrimPrefix(r.URL.Path, "/")
	host, rest, _ := strings.Cut(p, "/")
	if host == "" || !(strings.ContainsAny(host, ".:") || host == "localhost") {
		return nil, fmt.Errorf("%q is neither a proxy request nor /<upstream host>/<path> (apt-cacher-ng style)", r.URL.Path)
	}
	u := &url.URL{Scheme: "http", Host: strings.ToLower(host), Path: "/" + rest, RawQuery: r.URL.RawQuery}
	return u, nil
}

// WithBlobs serves the peers' blob requests (a path under prefix, not a
// proxy request) with blobs, for the clients allow_clients admits (peers
// are clients too), and everything else with the proxy: one port for both.
func (s *Server) WithBlobs(prefix string, blobs http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !r.URL.IsAbs() && strings.HasPrefix(r.URL.Path, prefix) {
			if s.Admit(w, r) {
				blobs.ServeHTTP(w, r)
			}
			return
		}
		s.ServeHTTP(w, r)
	})
}

// Admit answers 403 to clients outside allow_clients and reports whether
// the request may go on; the peer blob endpoint uses it too.
func (s *Server) Admit(w http.ResponseWriter, r *http.Request) bool {
	if err := s.allowed(r); err != nil {
		s.log.Warn("refused client", slog.String("remote", r.RemoteAddr), slog.Any("err", err))
		http.Error(w, "warren: "+err.Error(), http.StatusForbidden)
		return false
	}
	return true
}

func (s *Server) allowed(r *http.Request) error {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return fmt.Errorf("cannot tell the client's address from %q", r.RemoteAddr)
	}
	return s.clientAllowed(ap.Addr().Unmap())
}

func (s *Server) connectAllowed(hostport string) error {
	_, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("CONNECT target %q is not host:port", hostport)
	}
	n, err := strconv.Atoi(port)
	if err != nil || !slices.Contains(s.cfg.ConnectPorts, n) {
		return fmt.Errorf("CONNECT to port %s is not allowed (connect_ports: %v)", port, s.cfg.ConnectPorts)
	}
	return nil
}

// LocalNetworks returns loopback and the subnets of this machine's interfaces:
// the default allow_clients.
func LocalNetworks() ([]netip.Prefix, error) {
	nets := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list interface addresses for allow_clients: %w", err)
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		p, err := netip.ParsePrefix(ipn.String())
		if err != nil {
			continue
		}
		nets = append(nets, p.Masked())
	}
	return nets, nil
}

// slogPrintf adapts goproxy's Printf logger.
type slogPrintf struct{ log *slog.Logger }

func (l slogPrintf) Printf(format string, v ...any) {
	l.log.Debug(strings.TrimSpace(fmt.Sprintf(format, v...)), slog.String("component", "goproxy"))
}
