package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-cache/warren/internal/tlstrace"
)

// Parent is one hub as a node uses it: an HTTP proxy for upstream URLs
// that answers like the origin, or refuses with a reason (RefusedError,
// BusyError). A hub that cannot be reached is left alone for a while
// (downFor), so a dead hub costs one connection attempt, not one per
// request.
type Parent struct {
	url    *url.URL
	token  string
	self   Self
	client *http.Client
	direct *http.Client // requests to the hub itself (its info, enrolment)
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	tls    *tls.Config // the hub's verification, for a client with a certificate
	log    *slog.Logger
	now    func() time.Time

	bytes    atomic.Int64
	requests atomic.Int64
	failures atomic.Int64
	waits    atomic.Int64

	mu        sync.Mutex // guards the fields below
	lastOK    time.Time
	lastFail  time.Time
	lastErr   string
	downUntil time.Time
	id        string // the hub's id, from its info answer
}

// ParentConfig configures a Parent.
type ParentConfig struct {
	URL   string // http(s)://host:port of the hub
	Token string // hub_token: sent as a Bearer token
	// TLS verifies an https hub: RootCAs the site CA with the system's
	// roots (nil: the system's alone). The hub must be named in the URL as
	// its certificate names it.
	TLS *tls.Config
	// HeaderTimeout bounds the wait for the hub's answer to begin; the
	// fill engine's stall rule bounds the body.
	HeaderTimeout time.Duration
	// Self is what the node tells the hub of itself.
	Self Self
	// Dial, when set, makes the connections to the hub (the simulator's
	// network); nil dials TCP.
	Dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	Logger *slog.Logger
	Now    func() time.Time
}

// Self is what a node tells its hubs of itself (HeaderNode, HeaderLAN,
// HeaderPeer): zero fields are not sent.
type Self struct {
	Node string
	LAN  netip.Prefix
	Peer netip.AddrPort
}

// downFor is how long an unreachable hub is skipped.
const downFor = 10 * time.Second

// ParseURL checks a hub URL as the settings give it: http or https (one
// port serves both), a host name or an address ([fd00::2] for IPv6).
func ParseURL(s string) (*url.URL, error) {
	if err := CheckURLHost(s); err != nil {
		return nil, fmt.Errorf("hub %q: %w", RedactURLs(s), err)
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, fmt.Errorf("hub %q: want http://host:port or https://host:port of a warren started with --role hub", RedactURLs(s))
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), "3142")
	}
	u.Path = ""
	return u, nil
}

// CheckURLHost says what is wrong with the host of URL s in a way that
// url.Parse's "invalid port" does not: an IPv6 address without its
// brackets, or a zone not written %25.
func CheckURLHost(s string) error {
	_, rest, ok := strings.Cut(s, "://")
	if !ok {
		return nil // url.Parse's check says what it wants
	}
	host, _, _ := strings.Cut(rest, "/")
	host, _, _ = strings.Cut(host, "?")
	if i := strings.LastIndexByte(host, '@'); i >= 0 {
		host = host[i+1:]
	}
	switch {
	case strings.Count(host, ":") >= 2 && !strings.HasPrefix(host, "["):
		return fmt.Errorf("%s: an IPv6 address in a URL goes in brackets, the port after them, e.g. http://[fd00::2]:3142", host)
	case strings.HasPrefix(host, "[") && strings.Contains(host, "%") && !strings.Contains(host, "%25"):
		return fmt.Errorf("a zone in a URL is written %%25: %s", strings.Replace(host, "%", "%25", 1))
	}
	return nil
}

// TLS says whether the hub is reached over https.
func (p *Parent) TLS() bool { return p.url.Scheme == "https" }

// NewParent builds the node's side of one hub.
func NewParent(cfg ParentConfig) (*Parent, error) {
	u, err := ParseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	if cfg.HeaderTimeout <= 0 {
		cfg.HeaderTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	dial := cfg.Dial
	if dial == nil {
		dial = (&net.Dialer{Timeout: 5 * time.Second}).DialContext
	}
	tlsCfg := cfg.TLS.Clone()
	if tlsCfg == nil {
		tlsCfg = &tls.Config{}
	}
	// HTTP/1.1: proxy requests in absolute form, as to a plain hub.
	tlsCfg.NextProtos = []string{"http/1.1"}
	tr := &http.Transport{
		// Every request goes to the hub, as a proxy request: the hub is
		// chosen by the operator, so no destination rule applies to it.
		// To an https hub the request travels inside TLS (an https
		// proxy): its token, and what an https origin sent, never cross
		// the site in clear.
		Proxy:                 http.ProxyURL(u),
		DialContext:           dial,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: cfg.HeaderTimeout,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   16,
		DisableCompression:    true, // the bytes exactly as upstream sent them
	}
	// Requests to the hub itself: not through the proxy transport's Proxy.
	direct := &http.Client{Transport: directTransport(dial, tlsCfg)}
	return &Parent{url: u, token: cfg.Token, self: cfg.Self, client: &http.Client{Transport: tr}, direct: direct, dial: dial, tls: tlsCfg, log: cfg.Logger, now: cfg.Now}, nil
}

// directTransport makes requests to the hub itself (its info, enrolment).
func directTransport(dial func(ctx context.Context, network, addr string) (net.Conn, error), tlsCfg *tls.Config) *http.Transport {
	return &http.Transport{DialContext: dial, TLSClientConfig: tlsCfg, TLSHandshakeTimeout: 10 * time.Second,
		ResponseHeaderTimeout: 10 * time.Second, DisableKeepAlives: true}
}

// withClientCert is a client for requests to the hub itself that presents
// cert when the hub asks for a certificate (mutual TLS).
func (p *Parent) withClientCert(cert *tls.Certificate) *http.Client {
	c := p.tls.Clone()
	c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	return &http.Client{Transport: directTransport(p.dial, c)}
}

// do sends req with c, and says what an https hub's failure means.
func do(c *http.Client, req *http.Request) (*http.Response, error) {
	ctx, w := tlstrace.With(req.Context())
	resp, err := c.Do(req.WithContext(ctx))
	if err != nil {
		return nil, explainTLS(w.Explain(err))
	}
	return resp, nil
}

// explainTLS adds what to do to an https hub's failure in TLS: a
// certificate that does not verify, or a hub that turned this node away
// or does not speak TLS.
func explainTLS(err error) error {
	var host x509.HostnameError
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	var record tls.RecordHeaderError
	switch {
	case errors.Is(err, tlstrace.ErrCutShort):
		return fmt.Errorf("%w: the hub turned this node away before any request: it holds its max_client_connections (per address, an IPv6 node's /64) or max_connections open (the hub's log says \"refused connection\"), or it is stopping", err)
	case strings.Contains(err.Error(), "tls: access denied"):
		return fmt.Errorf("%w: the hub refuses this node's address: add its network to allow_clients on the hub", err)
	case errors.Is(err, http.ErrSchemeMismatch) || errors.As(err, &record):
		// A plain-http answer to the handshake: net/http says so for a
		// request to the hub, and leaves the record error for a proxy
		// request through it.
		return fmt.Errorf("%w: the hub serves no https on that port: give it a certificate (tls_cert and tls_key, or warren ca issue --host on the machine holding the site CA), or use its http:// URL", err)
	case errors.As(err, &host):
		return fmt.Errorf("%w: the URL must name the hub as its certificate does (%s)", err, certNames(host.Certificate))
	case errors.As(err, &unknown):
		return fmt.Errorf("%w: the hub's certificate is not from the site CA (warren ca install, ca export --cert on the hub) nor from a CA this machine trusts", err)
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return fmt.Errorf("%w: give the hub a new certificate (warren ca issue --host on the machine holding the site CA)", err)
	case errors.As(err, &verify):
		return fmt.Errorf("%w: check the hub's certificate", err)
	}
	return err
}

// isCertError says whether err is a certificate that did not verify: it
// will not mend by itself, so the hub is left alone for a while.
func isCertError(err error) bool {
	var verify *tls.CertificateVerificationError
	return errors.As(err, &verify)
}

func certNames(c *x509.Certificate) string {
	names := append([]string{}, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		return "no name"
	}
	return strings.Join(names, ", ")
}

// Name is the hub's URL, for logs and the status page: without the
// password a hubs entry may carry (http://warren:TOKEN@hub:3142).
func (p *Parent) Name() string { return RedactURLs(p.url.String()) }

// UnreachableError is a hub that did not answer.
type UnreachableError struct {
	Hub string
	Err error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("hub %s unreachable: %v", e.Hub, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// errSkipped is why a hub marked down is not asked.
var errSkipped = errors.New("it failed moments ago; not asked again yet")

// RefusedError is a hub's refusal of its own: a token it does not take,
// an artifact it does not hold in preload mode, a loop.
type RefusedError struct {
	Hub     string
	Status  int
	Reason  string
	Message string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("hub %s refused (%d, %s): %s", e.Hub, e.Status, e.Reason, e.Message)
}

// BusyError is a hub's "wait": it is fetching the artifact for as many
// requesters as it serves at once. Ask the LAN after RetryAfter; when
// Peers are given, those LAN peers receive it from the hub: take it from
// them at once.
type BusyError struct {
	Hub        string
	RetryAfter time.Duration
	Position   int
	Done       int64
	Total      int64
	Peers      []netip.AddrPort
}

func (e *BusyError) Error() string {
	if len(e.Peers) > 0 {
		return fmt.Sprintf("hub %s streams this artifact to LAN peers %v already (%d of %d bytes fetched): take it from them",
			e.Hub, e.Peers, e.Done, e.Total)
	}
	return fmt.Sprintf("hub %s is busy with this artifact (number %d to wait; %d of %d bytes fetched): retry after %s",
		e.Hub, e.Position, e.Done, e.Total, e.RetryAfter)
}

// Do sends req, a GET or HEAD for an upstream URL, through the hub. The
// response is upstream's answer as the hub gives it (including upstream's
// own errors); the hub's refusals are errors.
func (p *Parent) Do(req *http.Request) (*http.Response, error) {
	if p.isDown() {
		return nil, &UnreachableError{Hub: p.Name(), Err: errSkipped}
	}
	r := req.Clone(req.Context())
	if r.URL.Scheme == "https" {
		r.URL.Scheme = "http"
		r.Header.Set(HeaderScheme, "https")
	}
	if p.token != "" {
		r.Header.Set("Proxy-Authorization", "Bearer "+p.token)
	}
	if p.self.Node != "" {
		r.Header.Set(HeaderNode, p.self.Node)
	}
	if p.self.LAN.IsValid() {
		r.Header.Set(HeaderLAN, p.self.LAN.String())
		if p.self.Peer.IsValid() {
			r.Header.Set(HeaderPeer, p.self.Peer.String())
		}
	}
	p.requests.Add(1)
	resp, err := do(p.client, r)
	if err != nil {
		if req.Context().Err() == nil {
			p.failed(err)
		}
		return nil, &UnreachableError{Hub: p.Name(), Err: err}
	}
	p.ok()
	reason := resp.Header.Get(HeaderRefused)
	if reason == "" {
		return resp, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if reason == ReasonMaxRequesters && resp.StatusCode == http.StatusServiceUnavailable {
		p.waits.Add(1)
		return nil, parseBusy(p.Name(), resp.Header)
	}
	msg := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(body)), "warren hub:"))
	switch reason {
	case ReasonToken:
		p.failed(fmt.Errorf("token refused (%s): %s", resp.Status, msg))
	case ReasonAuthLimit:
		p.failed(fmt.Errorf("refused (%s) after too many wrong tokens from this node's address: %s", resp.Status, msg))
	}
	return nil, &RefusedError{Hub: p.Name(), Status: resp.StatusCode, Reason: reason, Message: msg}
}

// maxRetryAfterSecs bounds what a hub may tell a node to wait.
const maxRetryAfterSecs = 600

func parseBusy(hub string, h http.Header) *BusyError {
	b := &BusyError{Hub: hub, RetryAfter: DefaultRetryDelay, Total: -1}
	if n, err := strconv.Atoi(h.Get("Retry-After")); err == nil && n >= 0 {
		// A hostile or broken hub must not park a node for a day (and
		// the bound comes before the multiplication, which overflows).
		b.RetryAfter = time.Duration(min(n, maxRetryAfterSecs)) * time.Second
	}
	// A warren hub says it to the millisecond; never longer than its
	// Retry-After, nor than the bound.
	if ms, err := strconv.ParseInt(h.Get(HeaderRetryAfterMs), 10, 64); err == nil && ms > 0 && ms <= maxRetryAfterSecs*1000 {
		if d := time.Duration(ms) * time.Millisecond; d < b.RetryAfter {
			b.RetryAfter = d
		}
	}
	b.Position, _ = strconv.Atoi(h.Get(HeaderQueuePosition))
	for _, f := range strings.Split(h.Get(HeaderPeers), ",") {
		if p, err := netip.ParseAddrPort(strings.TrimSpace(f)); err == nil && p.Port() != 0 && len(b.Peers) < maxHinted {
			b.Peers = append(b.Peers, p)
		}
	}
	if done, total, ok := strings.Cut(h.Get(HeaderProgress), "/"); ok {
		b.Done, _ = strconv.ParseInt(done, 10, 64)
		b.Total, _ = strconv.ParseInt(total, 10, 64)
	}
	return b
}

// Received counts bytes the fill took from this hub.
func (p *Parent) Received(n int64) { p.bytes.Add(n) }

func (p *Parent) isDown() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.now().Before(p.downUntil)
}

func (p *Parent) failed(err error) {
	p.failures.Add(1)
	p.mu.Lock()
	defer p.mu.Unlock()
	first := !p.lastFail.After(p.lastOK)
	p.lastFail, p.lastErr = p.now(), err.Error()
	// Skipped for a while only when asking costs time (a dial or an
	// answer that timed out): a refused connection costs nothing to try
	// again, and a hub back from a restart is used at once.
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) || isCertError(err) {
		p.downUntil = p.lastFail.Add(downFor)
	}
	if first {
		p.log.Warn("hub unreachable; using the next source until it answers again", slog.String("hub", p.Name()), slog.Any("err", err))
	}
}

func (p *Parent) ok() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lastFail.After(p.lastOK) {
		p.log.Info("hub answers again", slog.String("hub", p.Name()))
	}
	p.lastOK = p.now()
	p.downUntil = time.Time{}
}

// Info is what a hub says of itself at InfoPath.
type Info struct {
	ID   string `json:"id"`
	Mode Mode   `json:"mode"`
}

// InfoPath is where a hub answers Info (with the token, when it takes tokens).
const InfoPath = "/_warren/hub"

// Probe asks the hub who it is: it keeps "reachable" true to the hub's
// state when no request has gone there lately, and tells a node whose
// token is refused before a client's request does.
func (p *Parent) Probe(ctx context.Context) (Info, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url.String()+InfoPath, nil)
	if err != nil {
		return Info{}, err
	}
	if p.token != "" {
		req.Header.Set("Authorization", "Bearer "+p.token)
	}
	resp, err := do(p.direct, req)
	if err != nil {
		if ctx.Err() == nil {
			p.failed(err)
		}
		return Info{}, &UnreachableError{Hub: p.Name(), Err: err}
	}
	defer resp.Body.Close()
	var info Info
	switch {
	case resp.StatusCode == http.StatusOK:
		if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<10)).Decode(&info); err != nil {
			err = fmt.Errorf("hub %s: its info answer is not JSON (%w): is it a warren hub?", p.Name(), err)
			p.failed(err)
			return Info{}, err
		}
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusProxyAuthRequired:
		err := fmt.Errorf("hub %s refused our token (%s): check hub_token against the hub's hub_tokens", p.Name(), resp.Status)
		p.failed(err)
		return Info{}, err
	case resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get(HeaderRefused) == ReasonAuthLimit:
		err := fmt.Errorf("hub %s refuses this node's address for %ss after too many wrong tokens from it: check hub_token against the hub's hub_tokens", p.Name(), resp.Header.Get("Retry-After"))
		p.failed(err)
		return Info{}, err
	default:
		err := fmt.Errorf("hub %s answered %s to %s: is it a warren started with --role hub?", p.Name(), resp.Status, InfoPath)
		p.failed(err)
		return Info{}, err
	}
	p.ok()
	p.mu.Lock()
	p.id = info.ID
	p.mu.Unlock()
	return info, nil
}

// ParentStatus is one hub as a node sees it.
type ParentStatus struct {
	URL string `json:"url"`
	// TLS: reached over https, verified. TokenInClear: a token goes to
	// it over plain http, readable by anyone on the path.
	TLS          bool      `json:"tls"`
	TokenInClear bool      `json:"token_in_clear,omitempty"`
	ID           string    `json:"id,omitempty"`
	Reachable    bool      `json:"reachable"`
	LastOK       time.Time `json:"last_ok"`
	LastFailure  time.Time `json:"last_failure"`
	LastError    string    `json:"last_error,omitempty"`
	Bytes        int64     `json:"bytes"`
	Requests     int64     `json:"requests"`
	Failures     int64     `json:"failures"`
	Waits        int64     `json:"waits"` // times it said "busy, retry later"
}

// Status reports the hub's state and what came from it.
func (p *Parent) Status() ParentStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return ParentStatus{URL: p.Name(), TLS: p.TLS(), TokenInClear: !p.TLS() && p.SendsToken(), ID: p.id, Reachable: !p.lastOK.IsZero() && !p.lastFail.After(p.lastOK),
		LastOK: p.lastOK, LastFailure: p.lastFail, LastError: p.lastErr,
		Bytes: p.bytes.Load(), Requests: p.requests.Load(), Failures: p.failures.Load(), Waits: p.waits.Load()}
}

// SendsToken says whether a token goes to the hub: hub_token, or one in
// the URL's userinfo.
func (p *Parent) SendsToken() bool { return p.token != "" || p.url.User != nil }

// CloseIdleConnections closes the kept-alive connections to the hub.
func (p *Parent) CloseIdleConnections() { p.client.CloseIdleConnections() }
