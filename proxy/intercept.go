package proxy

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

// HTTPS repositories: a CONNECT to an intercepted host is answered by
// warren itself, with a certificate from the site CA (which may sign for
// those hosts only), and the requests inside the tunnel take the same
// path as http ones (serve.go): learnt hashes, verified fills, the store,
// peers and hubs. warren fetches from the real host over TLS verified
// with the system's roots. Any other CONNECT is a tunnel, as before.

// Interceptor decides which CONNECT targets warren answers itself, and
// gives their certificates (the daemon builds it from package siteca).
type Interceptor interface {
	Intercepts(host string) bool
	Leaf(host string) (*tls.Certificate, error)
}

// interceptTimeout bounds the TLS handshake with the client.
const interceptTimeout = 15 * time.Second

// intercepted says whether the CONNECT target host:port is one warren
// answers itself, and the origin to fetch from (the port kept unless 443).
func (s *Server) intercepted(hostport string) (string, bool) {
	if s.cfg.Intercept == nil {
		return "", false
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", false
	}
	host = strings.ToLower(host)
	if !s.cfg.Intercept.Intercepts(host) {
		return "", false
	}
	if port != "443" {
		host = net.JoinHostPort(host, port)
	}
	return host, true
}

// serveIntercepted answers a CONNECT to host with TLS of our own and
// serves the requests inside it.
func (s *Server) serveIntercepted(w http.ResponseWriter, r *http.Request, origin string) {
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
			return s.cfg.Intercept.Leaf(host)
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
		ReadHeaderTimeout: ReadHeaderTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		IdleTimeout:       90 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	srv.Serve(l) // until the client closes the tunnel, or warren stops
}

// interceptHandler serves the requests of one intercepted tunnel to
// origin (host, or host:port).
func (s *Server) interceptHandler(host, client string) http.Handler {
	origin := &url.URL{Scheme: "https", Host: host}
	forward := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(origin)
			pr.Out.Host = host
		},
		Transport: s.door.Client().Transport,
		ErrorLog:  slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "" && !strings.EqualFold(stripPort(r.Host), stripPort(host)) {
			http.Error(w, "warren: this tunnel is to "+host+", not "+r.Host, http.StatusMisdirectedRequest)
			return
		}
		r.RemoteAddr = client
		s.stats.Requests.Add(1)
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			forward.ServeHTTP(w, r) // not cached: passed to the real host, verified TLS
			return
		}
		target := &url.URL{Scheme: "https", Host: host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
		s.serveCache(w, r, target, s.door.CredentialOf(r.Header, target))
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
