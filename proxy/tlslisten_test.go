package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/warren-cache/warren/internal/siteca"
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
