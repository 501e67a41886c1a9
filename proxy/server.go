package proxy

import (
	"context"
	"errors"
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

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/chocolatey/feedserver"
	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/hub"
	"github.com/warren-cache/warren/intercept"
	"github.com/warren-cache/warren/status"
)

// Role is what a warren's site role adds to the front's request story
// (package hub's Role on a hub; a node's adds nothing): who may come in,
// what a node says it expects, what is refused, the max-requesters queue.
type Role interface {
	// Admit applies the role's door to a request that is not for the
	// front's own pages. false: answered.
	Admit(w http.ResponseWriter, r *http.Request) bool
	// Target says whether r, a node's, asks for an https URL as plain
	// http (it sets target's scheme).
	Target(r *http.Request, target *url.URL) (https bool)
	// Claim is the digest (and size, -1 unknown) a node expects, if it
	// may claim one.
	Claim(r *http.Request) (d cachestore.Digest, size int64, ok bool)
	// Unheld answers for what the role does not fetch (a preload-only
	// hub): true when answered.
	Unheld(w http.ResponseWriter, what, url string) bool
	// Enter admits a requester of the artifact in transfer under key, or
	// tells it to wait: false when answered.
	Enter(w http.ResponseWriter, r *http.Request, f *cachestore.Fill, key string, size int64, shown string) (leave func(), ok bool)
	// Held answers a requester of a stored artifact (under key) with
	// where else it may take it (a hub's LAN peers of it that received
	// it): true when answered.
	Held(w http.ResponseWriter, r *http.Request, key, shown string) bool
	// Refuse counts a refusal the front made (a loop).
	Refuse(reason string)
	// Served is told of each request answered: its outcome and the bytes
	// sent.
	Served(r *http.Request, outcome string, n int64)
}

// nodeRole is a node's: it adds nothing.
type nodeRole struct{}

func (nodeRole) Admit(http.ResponseWriter, *http.Request) bool   { return true }
func (nodeRole) Target(*http.Request, *url.URL) bool             { return false }
func (nodeRole) Unheld(http.ResponseWriter, string, string) bool { return false }
func (nodeRole) Refuse(string)                                   {}
func (nodeRole) Held(http.ResponseWriter, *http.Request, string, string) bool {
	return false
}
func (nodeRole) Served(*http.Request, string, int64) {}
func (nodeRole) Claim(*http.Request) (cachestore.Digest, int64, bool) {
	return cachestore.Digest{}, -1, false
}
func (nodeRole) Enter(http.ResponseWriter, *http.Request, *cachestore.Fill, string, int64, string) (func(), bool) {
	return func() {}, true
}

// Feeds is the Chocolatey feed server (package feedserver).
type Feeds interface {
	// Serve answers a request under /chocolatey/, but for a package
	// download, whose plan it returns.
	Serve(w http.ResponseWriter, r *http.Request) *door.Plan
	// ServeCall answers a proxy request for a feed call by its upstream
	// URL; false when target is none.
	ServeCall(w http.ResponseWriter, r *http.Request, target *url.URL) bool
	// DownloadPlan is the plan of a proxy request for a package download
	// by its upstream URL; nil when target is none.
	DownloadPlan(ctx context.Context, target *url.URL) *door.Plan
	// ServeInstaller answers a request for an installer a rewritten
	// package downloads from this hub, but for its plan, which it returns.
	ServeInstaller(w http.ResponseWriter, r *http.Request) *door.Plan
}

var _ Feeds = (*feedserver.Server)(nil)

// Config holds the front's settings and parts.
type Config struct {
	// Door is the way bytes enter the store: every request's plan, store
	// lookup, flight and sources are its.
	Door *door.Door
	// AllowClients are the networks that may use the proxy. Empty means
	// loopback and the subnets of this machine's interfaces.
	AllowClients []netip.Prefix
	// ConnectPorts are the ports CONNECT may tunnel to (empty:
	// DefaultConnectPort).
	ConnectPorts []int
	// Role is the site role's policy (a hub's); nil: a node.
	Role Role
	// Replication serves other hubs' pulls at hub.ReplicationPrefix (a
	// hub's); nil: none.
	Replication http.Handler
	// Feeds serves /chocolatey/; nil: no feeds.
	Feeds Feeds
	// Intercept, when set, names the https hosts whose CONNECTs warren
	// answers itself with the site CA's certificates (package intercept).
	Intercept intercept.Certs
	// HubOnly: the door never asks the origin directly; errors say so.
	HubOnly bool
	// Hubs are the site's hubs, for the page.
	Hubs []door.Hub
	// Status gives the status page and /_warren/stats the other parts'
	// state (cache, peers, uploads).
	Status func() status.Status
	// Collectors are more Prometheus metrics for /metrics (peers, cache).
	Collectors []prometheus.Collector
	// Budgets are the Chocolatey feeds' request budgets, for the page.
	Budgets func() []status.Budget
	// HubStatus is a hub's own figures for the page, /_warren/stats and
	// /metrics; nil: a node.
	HubStatus *status.HubRole
	// History is the day's bytes by ecosystem for the page's chart (cmd
	// keeps it in the index across restarts); nil: one of the front's own.
	History *status.History
	// Replicated is the bytes replication pulled from other hubs, for the
	// bytes by source; nil: none.
	Replicated func() int64
	Logger     *slog.Logger
	Now        func() time.Time
}

// Server is the proxy. Close stops its fills.
type Server struct {
	cfg  Config
	door *door.Door
	role Role
	log  *slog.Logger
	now  func() time.Time
	gp   *goproxy.ProxyHttpServer
	// tunnels answers the CONNECTs to intercepted hosts; nil without.
	tunnels *intercept.Tunnels

	ctx    context.Context // the tunnels' parent; no client owns it
	cancel context.CancelFunc

	bufs sync.Pool // copy buffers
	// fillBufs are the buffers a fill's bytes go to its clients through
	// while it grows (respond.go's copyFill): small, as a slow client
	// holds one while it takes the bytes.
	fillBufs sync.Pool
	// corkBufs hold corked answers' heads (cork.go).
	corkBufs sync.Pool

	stats Stats
	hist  *status.History // the last day's bytes by ecosystem, for the page
	board *status.Board   // the status page, /_warren/stats and /metrics
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

// New builds the front.
func New(cfg Config) (*Server, error) {
	if cfg.Door == nil {
		return nil, errors.New("proxy: no door given")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if len(cfg.ConnectPorts) == 0 {
		cfg.ConnectPorts = []int{DefaultConnectPort}
	}
	if len(cfg.AllowClients) == 0 {
		nets, err := LocalNetworks()
		if err != nil {
			return nil, err
		}
		cfg.AllowClients = nets
	}
	s := &Server{
		cfg:      cfg,
		door:     cfg.Door,
		role:     cfg.Role,
		log:      cfg.Logger,
		now:      cfg.Now,
		bufs:     sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }},
		fillBufs: sync.Pool{New: func() any { b := make([]byte, fillChunk); return &b }},
		corkBufs: sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }},
	}
	if s.role == nil {
		s.role = nodeRole{}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.gp = s.newGoproxy()
	if cfg.Intercept != nil {
		s.tunnels = intercept.New(intercept.Config{
			Certs: cfg.Intercept, Transport: s.door.Client().Transport, Logger: cfg.Logger,
			ReadHeaderTimeout: ReadHeaderTimeout, MaxHeaderBytes: MaxHeaderBytes,
			Cache: func(w http.ResponseWriter, r *http.Request, target *url.URL) {
				s.stats.Requests.Add(1)
				s.serveCache(w, r, target, s.door.CredentialOf(r.Header, target))
			},
		})
	}
	s.hist = cfg.History
	if s.hist == nil {
		s.hist = new(status.History)
	}
	s.board = s.newBoard()
	return s, nil
}

// History counts bytes for the day's chart by ecosystem: served to
// clients, and taken from upstream (the door's and the feeds' WAN).
func (s *Server) History(eco string, served, wan int64) { s.hist.Add(s.now(), eco, served, wan) }

// Figures are the running totals the status page and /_warren/stats
// show, by name (`warren status` prints them).
func (s *Server) Figures() map[string]any { return s.board.Figures() }

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

// Close ends the tunnels (its door is its owner's to close).
func (s *Server) Close() error {
	s.cancel()
	if s.tunnels != nil {
		s.tunnels.Close()
	}
	return nil
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
		"hub_told_peers": s.door.Stats().HubHints.Load(),   // a hub named the LAN peers receiving it
		"hub_fetches":    s.door.Stats().HubFetches.Load(), // requests fills made to the hubs
		"origin_fetches": s.door.Stats().UpstreamFetches.Load(),
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
			slog.String("client", r.RemoteAddr), slog.String("url", hub.ShownRequestURL(r)), slog.Any("via", r.Header.Values("Via")))
		s.role.Refuse(hub.ReasonLoop)
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
		if s.cfg.Replication == nil {
			http.Error(w, "warren: this warren serves no replication: set role hub and replication.tokens", http.StatusNotFound)
			return
		}
		s.cfg.Replication.ServeHTTP(w, r)
		return
	}
	if !s.role.Admit(w, r) {
		return
	}
	s.stats.Requests.Add(1) // what clients ask of the proxy, not of its own pages
	if !r.URL.IsAbs() && (strings.HasPrefix(r.URL.Path, feedserver.Prefix) || strings.HasPrefix(r.URL.Path, feedserver.OriginalPrefix)) {
		if s.cfg.Feeds == nil {
			http.Error(w, "warren: no chocolatey feed is configured (chocolatey.upstream)", http.StatusNotFound)
			return
		}
		if p := s.cfg.Feeds.Serve(w, r); p != nil {
			s.servePlan(w, r, *p)
		}
		return
	}
	if !r.URL.IsAbs() && strings.HasPrefix(r.URL.Path, feedserver.InstallersPrefix) {
		// An installer a hub's rewritten package downloads: through the
		// door as any artifact (verified against its checksum).
		if s.cfg.Feeds == nil {
			http.Error(w, "warren: no chocolatey feed is configured (chocolatey.upstream)", http.StatusNotFound)
			return
		}
		if p := s.cfg.Feeds.ServeInstaller(w, r); p != nil {
			s.servePlan(w, r, *p)
		}
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
		code := http.StatusNotFound
		if errors.Is(err, errNotAHost) {
			code = http.StatusBadRequest
		}
		s.log.Info("request refused", slog.String("method", r.Method), slog.Int("status", code),
			slog.String("client", r.RemoteAddr), slog.Any("err", err))
		http.Error(w, "warren: "+err.Error(), code)
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
	// A node's request for an https URL (see hub.HeaderScheme).
	nodeHTTPS := s.role.Target(r, target)
	if target.Scheme != "http" && !nodeHTTPS {
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
	if s.cfg.Feeds != nil && s.cfg.Feeds.ServeCall(w, r, target) {
		// A feed call by its upstream URL: one answer per normal form,
		// kept and learnt from, as at /chocolatey/ (downloads are
		// artifacts: the cache's).
		return
	}
	if s.cfg.Feeds != nil && !cred.Private() {
		if p := s.cfg.Feeds.DownloadPlan(r.Context(), target); p != nil {
			// A package by its feed's hash, its script learnt; a node's
			// other claim is served as claimed, and teaches nothing.
			if d, size, ok := s.role.Claim(r); ok && d != p.Digest {
				p.Digest, p.Size, p.Meta, p.MetaName = d, size, "", ""
			}
			s.servePlan(w, r, *p)
			return
		}
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
		if !validHost(u.Host) {
			return nil, fmt.Errorf("%w: the request's host", errNotAHost)
		}
		return &u, nil
	}
	p := strings.TrimPrefix(r.URL.Path, "/")
	host, rest, _ := strings.Cut(p, "/")
	if host == "" || !(strings.ContainsAny(host, ".:") || host == "localhost") {
		return nil, fmt.Errorf("%q is neither a proxy request nor /<upstream host>/<path> (apt-cacher-ng style)", r.URL.Path)
	}
	host = strings.ToLower(host)
	if !validHost(host) {
		// A user name here (/user@host/...) would name a private scope's
		// key without its credential. Not echoed: it may be a password.
		return nil, fmt.Errorf("%w: the first part of the path (/<host>/<path>, apt-cacher-ng style); credentials go in sources.list or auth.conf, not in the path", errNotAHost)
	}
	u := &url.URL{Scheme: "http", Host: host, Path: "/" + rest, RawQuery: r.URL.RawQuery}
	return u, nil
}

// errNotAHost is a request whose host is none.
var errNotAHost = errors.New("not a host name or address (with an optional port)")

// validHost says whether h is a lower-case host name, IPv4 address or
// [IPv6] address with an optional port: nothing a key could read as
// userinfo, a path or a query.
func validHost(h string) bool {
	name, port := h, ""
	if strings.HasPrefix(h, "[") {
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return false
		}
		if _, err := netip.ParseAddr(strings.SplitN(h[1:end], "%", 2)[0]); err != nil {
			return false
		}
		name, port = "", h[end+1:]
		if port != "" && port[0] != ':' {
			return false
		}
		port = strings.TrimPrefix(port, ":")
	} else if i := strings.LastIndexByte(h, ':'); i >= 0 {
		name, port = h[:i], h[i+1:]
	}
	for _, c := range port {
		if c < '0' || c > '9' {
			return false
		}
	}
	if !strings.HasPrefix(h, "[") && name == "" {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
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
