package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/hub"
	"github.com/warren-cache/warren/internal/siteca"
	"github.com/warren-cache/warren/internal/tlstrace"
)

// testServerTLS is a certificate for name from a CA of the test's own, and
// a pool that trusts that CA.
func testServerTLS(t *testing.T, name string) (*tls.Config, *x509.CertPool) {
	t.Helper()
	ca, err := siteca.Init(t.TempDir(), []string{name}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := siteca.NewKey()
	c, err := ca.IssueServer([]string{name}, &key.PublicKey, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{c.Raw, ca.Cert.Raw}, PrivateKey: key, Leaf: c}},
		NextProtos: []string{"http/1.1"}}, siteca.Pool(ca.Cert)
}

// One port serves plain http and https: a plain connection stays the
// guarded listener's own (corking and sendfile still apply), a TLS one is
// served as TLS, and a client that connects and says nothing holds up no
// one else's accept.
func TestPlainAndTLSOnOnePort(t *testing.T) {
	up := newUpstream(t, 10)
	h := newHarness(t, up)
	cfg, roots := testServerTLS(t, "front.test")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ConnContext: ConnContext, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.TLS != nil:
			io.WriteString(w, "tls")
		case connOf(r) != nil:
			io.WriteString(w, "plain, guarded")
		default:
			io.WriteString(w, "plain, unguarded")
		}
	})}
	go srv.Serve(WithTLS(h.px.Listen(ln, ConnLimits{}), cfg))
	t.Cleanup(func() { srv.Close() })
	addr := ln.Addr().String()

	// A silent client first: the others are served meanwhile.
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	get := func(c *http.Client, u string) string {
		t.Helper()
		resp, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := get(&http.Client{}, "http://"+addr+"/"); got != "plain, guarded" {
		t.Fatalf("plain: %q", got)
	}
	tc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "front.test"}}}
	if got := get(tc, "https://"+addr+"/"); got != "tls" {
		t.Fatalf("https: %q", got)
	}
	// A client that does not trust the certificate gets nothing.
	if _, err := (&http.Client{}).Get("https://" + addr + "/"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("an untrusted certificate: %v", err)
	}
	// The silent one was held, never answered, and never blocked anyone.
	silent.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, _ := silent.Read(make([]byte, 1)); n != 0 {
		t.Fatal("the silent client got an answer to nothing")
	}
}

// A TLS client the guarded listener turns away is told so in TLS, not
// sent a plain-http answer it reads as a broken record ("first record
// does not look like a TLS handshake", the reason lost): past its
// connection cap the connection is closed in the handshake, outside
// allow_clients it gets an "access denied" alert; a node's error says
// what happened and what to do.
func TestRefusedTLSClientIsToldInTLS(t *testing.T) {
	for _, tc := range []struct {
		name  string
		allow []netip.Prefix
		held  bool // another connection from the client holds its one place
		cut   bool // closed in the handshake (tlstrace.ErrCutShort)
		want  string
	}{
		{"past the connection cap", nil, true, true, "the hub turned this node away before any request: it holds its max_client_connections"},
		{"outside allow_clients", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, false, false, "remote error: tls: access denied: the hub refuses this node's address: add its network to allow_clients on the hub"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newUpstream(t, 10)
			h := newHarness(t, up, func(c *testConfig, _ *cachestore.Config) {
				if tc.allow != nil {
					c.AllowClients = tc.allow
				}
			})
			cfg, roots := testServerTLS(t, "front.test")
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{ConnContext: ConnContext, Handler: http.NotFoundHandler()}
			go srv.Serve(WithTLS(h.px.Listen(ln, ConnLimits{PerClient: 1}), cfg))
			t.Cleanup(func() { srv.Close() })
			addr := ln.Addr().String()
			if tc.held {
				held, err := net.Dial("tcp", addr) // accepted first: it takes the place
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { held.Close() })
			}
			p, err := hub.NewParent(hub.ParentConfig{URL: "https://front.test:3142", Token: "a-hub-token-of-24-chars!", TLS: &tls.Config{RootCAs: roots},
				Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, network, addr)
				}})
			if err != nil {
				t.Fatal(err)
			}
			_, err = p.Probe(t.Context())
			var rh tls.RecordHeaderError
			switch {
			case err == nil:
				t.Fatal("a refused node's probe succeeded")
			case errors.As(err, &rh) || strings.Contains(err.Error(), "does not look like a TLS handshake"):
				t.Fatalf("the refusal reached the node as a broken TLS record: %v", err)
			case errors.Is(err, tlstrace.ErrCutShort) != tc.cut || !strings.Contains(err.Error(), tc.want):
				t.Fatalf("the node is told %q, want %q (cut short: %v)", err, tc.want, tc.cut)
			}
			// A plain client of the same listener still reads why.
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, "GET /_warren/stats HTTP/1.1\r\nHost: x\r\n\r\n")
			if code := readStatus(t, c); code != http.StatusServiceUnavailable && code != http.StatusForbidden {
				t.Fatalf("a plain client of the refusing listener got %d", code)
			}
		})
	}
}

// The first byte and the TLS handshake share one deadline from the
// accept: a client that opens a handshake and never finishes it is cut
// when that deadline passes, not given the handshake's own timeout on
// top (10 s + 10 s).
func TestTLSHandshakeWithinTheFirstByteDeadline(t *testing.T) {
	cfg, _ := testServerTLS(t, "front.test")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const wait = 300 * time.Millisecond
	srv := &http.Server{Handler: http.NotFoundHandler(), ReadHeaderTimeout: ReadHeaderTimeout}
	go srv.Serve(withTLS(ln, cfg, wait))
	t.Cleanup(func() { srv.Close() })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.Write([]byte{0x16, 3, 1}) // a handshake's first bytes, and no more
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("a stalled handshake was still open %s after its accept (the deadline is %s)", time.Since(start).Round(time.Millisecond), wait)
	}
	t.Logf("a stalled handshake was cut after %s (deadline %s)", time.Since(start).Round(time.Millisecond), wait)
}
