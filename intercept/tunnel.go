package intercept

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Certs decides which CONNECT targets warren answers itself, and gives
// their certificates (the daemon builds it from the site CA and the scan).
type Certs interface {
	Intercepts(host string) bool
	Leaf(host string) (*tls.Certificate, error)
}

// Config is what Tunnels needs.
type Config struct {
	Certs Certs
	// Cache serves a GET or HEAD for an https URL inside a tunnel: the
	// front's request story, as for http.
	Cache func(w http.ResponseWriter, r *http.Request, target *url.URL)
	// Transport carries what is not cached (other methods) to the real
	// host, over verified TLS, under the destination rules.
	Transport http.RoundTripper
	// The front's limits on a request head: a tunnel is no way around them.
	ReadHeaderTimeout time.Duration
	MaxHeaderBytes    int
	Logger            *slog.Logger
}

// Tunnels answers the CONNECTs to intercepted hosts. Close ends them.
type Tunnels struct {
	cfg    Config
	log    *slog.Logger
	ctx    context.Context // every tunnel's; Close cancels it
	cancel context.CancelFunc
}

// New builds the tunnels' side.
func New(cfg Config) *Tunnels {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	t := &Tunnels{cfg: cfg, log: cfg.Logger}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	return t
}

// Close ends the tunnels being served.
func (t *Tunnels) Close() { t.cancel() }

// interceptTimeout bounds the TLS handshake with the client.
const interceptTimeout = 15 * time.Second

// Target says whether the CONNECT target host:port is one warren answers
// itself, and the origin to fetch from (the port kept unless 443).
func (s *Tunnels) Target(hostport string) (string, bool) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", false
	}
	host = strings.ToLower(host)
	if !s.cfg.Certs.Intercepts(host) {
		return "", false
	}
	if port != "443" {
		host = net.JoinHostPort(host, port)
	}
	return host, true
}

// Serve answers a CONNECT to origin (from Target) with TLS of our own and
// serves the requests inside it, until the client closes the tunnel or
// Close.
func (s *Tunnels) Serve(w http.ResponseWriter, r *http.Request, origin string) {
	host := stripPort(origin)
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "warren: this connection cannot be taken over for TLS", http.StatusInternalServerError)
		return
	}
	raw, brw, err := hj.Hijack()
	if err != nil {
		s.log.Warn("intercept: could not take over the connection", slog.String("host", host), slog.Any("err", err))
		return
	}
	if _, err := raw.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		raw.Close()
		return
	}
	var conn net.Conn = raw
	if n := brw.Reader.Buffered(); n > 0 {
		// The client's first TLS bytes, read with the CONNECT.
		early, _ := brw.Reader.Peek(n)
		conn = &prefixedConn{Conn: raw, r: io.MultiReader(bytes.NewReader(bytes.Clone(early)), raw)}
	}
	tlsConn := tls.Server(conn, &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if hello.ServerName != "" && !strings.EqualFold(hello.ServerName, host) {
				return nil, errors.New("the TLS server name is not the CONNECT's host")
			}
			return s.cfg.Certs.Leaf(host)
		},
	})
	tlsConn.SetDeadline(time.Now().Add(interceptTimeout))
	if err := tlsConn.HandshakeContext(s.ctx); err != nil {
		s.log.Info("intercept: the client's TLS handshake failed (does it trust the site CA for this host? warren apt-setup)",
			slog.String("host", host), slog.String("client", r.RemoteAddr), slog.Any("err", err))
		tlsConn.Close()
		return
	}
	tlsConn.SetDeadline(time.Time{})
	l := newOneConnListener(tlsConn)
	stop := context.AfterFunc(s.ctx, func() { l.Close() })
	defer stop()
	srv := &http.Server{
		Handler: s.interceptHandler(origin, r.RemoteAddr),
		// The front's limits: a tunnel is no way around them.
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		IdleTimeout:       90 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	srv.Serve(l) // until the client closes the tunnel, or warren stops
}

// interceptHandler serves the requests of one intercepted tunnel to
// origin (host, or host:port).
func (s *Tunnels) interceptHandler(host, client string) http.Handler {
	origin := &url.URL{Scheme: "https", Host: host}
	forward := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(origin)
			pr.Out.Host = host
		},
		Transport: s.cfg.Transport,
		ErrorLog:  slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "" && !strings.EqualFold(stripPort(r.Host), stripPort(host)) {
			http.Error(w, "warren: this tunnel is to "+host+", not "+r.Host, http.StatusMisdirectedRequest)
			return
		}
		r.RemoteAddr = client
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			forward.ServeHTTP(w, r) // not cached: passed to the real host, verified TLS
			return
		}
		target := &url.URL{Scheme: "https", Host: host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
		s.cfg.Cache(w, r, target)
	})
}

func stripPort(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		return host
	}
	return h
}

// prefixedConn reads bytes already taken from the connection first.
type prefixedConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// oneConnListener hands one connection to an http.Server, then waits
// until it is closed.
type oneConnListener struct {
	conn   net.Conn
	taken  chan net.Conn
	closed chan struct{}
	close  sync.Once
}

func newOneConnListener(c net.Conn) *oneConnListener {
	l := &oneConnListener{taken: make(chan net.Conn, 1), closed: make(chan struct{})}
	l.conn = &closeNotifyConn{Conn: c, onClose: func() { l.Close() }}
	l.taken <- l.conn
	return l
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.taken:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *oneConnListener) Close() error {
	l.close.Do(func() {
		close(l.closed)
		l.conn.Close()
	})
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }

type closeNotifyConn struct {
	net.Conn
	once    sync.Once
	onClose func()
}

func (c *closeNotifyConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { go c.onClose() })
	return err
}
