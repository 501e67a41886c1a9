package proxy

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/internal/siteca"
)

// testCA is a CA of the test's own, standing for a public one.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB, name string) testCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return testCA{cert: c, key: key, pool: pool}
}

// serverCert is a certificate for the names, issued by ca.
func (ca testCA) serverCert(t testing.TB, names ...string) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsOrigin serves up's files over TLS with a certificate from ca.
func tlsOrigin(t testing.TB, up *upstream, ca testCA) (*httptest.Server, int) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(up.serve))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.serverCert(t, "localhost")}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	n, _ := strconv.Atoi(port)
	return srv, n
}

// siteInterceptor intercepts what the site CA permits.
type siteInterceptor struct{ *siteca.CA }

func (s siteInterceptor) Intercepts(host string) bool { return s.Permits(host) }

// An https repository through warren: the CONNECT to an intercepted host
// is answered with the site CA's certificate, and what is inside is
// cached as http is (learnt hashes, the store); the upstream is verified
// with warren's roots; any other host stays a tunnel.
func TestInterceptedHTTPS(t *testing.T) {
	up := newUpstream(t, 40000)
	public := newTestCA(t, "a public CA")
	_, port := tlsOrigin(t, up, public)
	rogue := newTestCA(t, "nobody trusts this one")
	wrongUp := newUpstream(t, 100)
	_, wrongPort := tlsOrigin(t, wrongUp, rogue)
	ca, err := siteca.Init(t.TempDir(), []string{"localhost"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, up, func(c *testConfig, _ *cachestore.Config) {
		c.Intercept = siteInterceptor{ca}
		c.UpstreamRoots = public.pool
		c.ConnectPorts = []int{port, wrongPort}
	})
	pu, _ := url.Parse(h.front.URL)
	siteRoots := x509.NewCertPool()
	siteRoots.AddCert(ca.Cert)
	client := func(roots *x509.CertPool) *http.Client {
		return &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: roots}, DisableCompression: true}}
	}
	c := client(siteRoots)
	get := func(c *http.Client, u string) (*http.Response, []byte) {
		t.Helper()
		resp, err := c.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	base := "https://localhost:" + strconv.Itoa(port)
	for _, p := range []string{releasePath, packagesPath} {
		if resp, _ := get(c, base+p); resp.StatusCode != 200 {
			t.Fatalf("%s: %s", p, resp.Status)
		}
	}
	for i := range 2 {
		resp, body := get(c, base+debPath)
		if resp.StatusCode != 200 || !bytes.Equal(body, up.deb) {
			t.Fatalf("the deb over https, try %d: %s, %d bytes", i, resp.Status, len(body))
		}
		if i == 1 && !strings.HasPrefix(resp.Header.Get("X-Cache"), "HIT") {
			t.Fatalf("the second GET: X-Cache %q, want a hit", resp.Header.Get("X-Cache"))
		}
		if leaf := resp.TLS.PeerCertificates[0]; leaf.Issuer.CommonName != ca.Cert.Subject.CommonName {
			t.Fatalf("the client saw a certificate from %q, want the site CA's", leaf.Issuer.CommonName)
		}
	}
	if up.count(debPath) != 1 {
		t.Fatalf("upstream served the deb %d times, want once", up.count(debPath))
	}
	if k, err := h.known(base + debPath); err != nil || k.Digest.Hex != sha256hex(up.deb) {
		t.Fatalf("the https URL's hash was not learnt: %v", err)
	}
	// A client that does not trust the site CA fails its handshake.
	if _, err := client(public.pool).Get(base + debPath); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a client without the site CA: %v", err)
	}
	// An upstream whose certificate warren does not trust: 502, the reason
	// given, nothing served.
	resp, body := get(c, "https://localhost:"+strconv.Itoa(wrongPort)+debPath)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "certificate") {
		t.Fatalf("an untrusted upstream: %s %q", resp.Status, body)
	}
	if wrongUp.count(debPath) != 0 {
		t.Fatal("the untrusted upstream was asked for the file")
	}
	// 127.0.0.1 is not an intercepted host: a tunnel, the origin's own
	// certificate, nothing cached.
	resp, body = get(client(public.pool), "https://127.0.0.1:"+strconv.Itoa(port)+debPath)
	if resp.StatusCode != 200 || !bytes.Equal(body, up.deb) || resp.TLS.PeerCertificates[0].Issuer.CommonName != "a public CA" {
		t.Fatalf("a tunnelled request: %s, issuer %s", resp.Status, resp.TLS.PeerCertificates[0].Issuer.CommonName)
	}
	if up.count(debPath) != 2 {
		t.Fatalf("the tunnelled request did not reach the origin (%d GETs)", up.count(debPath))
	}
}

// An http repository whose server redirects to https on another port (the
// same host): warren follows it itself, verifying the certificate with its
// roots, and caches under the URL the client asked for; the same artifact
// then asked over intercepted https is the same blob, a hit.
func TestHTTPRedirectedToHTTPS(t *testing.T) {
	up := newUpstream(t, 40000)
	public := newTestCA(t, "a public CA")
	_, port := tlsOrigin(t, up, public)
	httpsBase := "https://localhost:" + strconv.Itoa(port)
	var redirects atomic.Int32
	redir := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		redirects.Add(1)
		http.Redirect(w, r, httpsBase+r.URL.Path, http.StatusMovedPermanently)
	}))
	t.Cleanup(redir.Close)
	ca, err := siteca.Init(t.TempDir(), []string{"localhost"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, up, func(c *testConfig, _ *cachestore.Config) {
		c.Intercept = siteInterceptor{ca}
		c.UpstreamRoots = public.pool
		c.ConnectPorts = []int{port}
	})
	for _, p := range []string{releasePath, packagesPath} {
		h.mustGet(redir.URL+p, 200)
	}
	for i := range 2 {
		resp, body := h.mustGet(redir.URL+debPath, 200)
		if !bytes.Equal(body, up.deb) {
			t.Fatalf("the deb through the redirect, try %d: %d bytes, not the file", i, len(body))
		}
		if i == 1 && !strings.HasPrefix(resp.Header.Get("X-Cache"), "HIT") {
			t.Fatalf("the second GET of the http URL: X-Cache %q, want a hit", resp.Header.Get("X-Cache"))
		}
	}
	if redirects.Load() == 0 || up.count(debPath) != 1 {
		t.Fatalf("%d redirects, the https origin served the deb %d times: want the redirect followed once", redirects.Load(), up.count(debPath))
	}
	if k, err := h.known(redir.URL + debPath); err != nil || k.Digest.Hex != sha256hex(up.deb) {
		t.Fatalf("the hash was not learnt under the URL the client asked for: %v", err)
	}

	// The same file over intercepted https: its index comes over https,
	// the deb is the blob the http URL stored.
	pu, _ := url.Parse(h.front.URL)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: roots}, DisableCompression: true}}
	for _, p := range []string{releasePath, packagesPath, debPath} {
		resp, err := c.Get(httpsBase + p)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if p == debPath && (!bytes.Equal(body, up.deb) || !strings.HasPrefix(resp.Header.Get("X-Cache"), "HIT")) {
			t.Fatalf("the deb over https after the http copy: X-Cache %q, %d bytes", resp.Header.Get("X-Cache"), len(body))
		}
	}
	if up.count(debPath) != 1 {
		t.Fatalf("the origin served the deb %d times: the https and http copies are not one blob", up.count(debPath))
	}
}

// An https origin that redirects to plain http is not followed: the bytes
// would cross the network in the clear and be served as https under the
// site CA (apt itself refuses such a redirect). The client gets 502 with
// the reason, and the http mirror is never asked; https to https is
// followed, a few hops at most.
func TestInterceptedRedirectStaysHTTPS(t *testing.T) {
	up := newUpstream(t, 30000)
	public := newTestCA(t, "a public CA")
	plain := httptest.NewServer(http.HandlerFunc(up.serve)) // the same files in the clear
	t.Cleanup(plain.Close)
	tlsUp := newUpstream(t, 30000)
	_, port := tlsOrigin(t, tlsUp, public)
	ca, err := siteca.Init(t.TempDir(), []string{"localhost"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, up, func(c *testConfig, _ *cachestore.Config) {
		c.Intercept = siteInterceptor{ca}
		c.UpstreamRoots = public.pool
		c.ConnectPorts = []int{port}
	})
	// /down redirects to the http mirror; /hop to /hop1 ... /hop6, then the file.
	tlsUp.hook("/down"+debPath, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+debPath, http.StatusFound)
	})
	for i := range 7 {
		from, to := "/hop"+strconv.Itoa(i)+debPath, "/hop"+strconv.Itoa(i+1)+debPath
		if i == 6 {
			to = debPath
		}
		tlsUp.hook(from, func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, to, http.StatusFound) })
	}
	pu, _ := url.Parse(h.front.URL)
	siteRoots := x509.NewCertPool()
	siteRoots.AddCert(ca.Cert)
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: siteRoots}, DisableCompression: true}}
	base := "https://localhost:" + strconv.Itoa(port)
	get := func(path string) (int, string) {
		resp, err := c.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/down" + debPath); code != http.StatusBadGateway || !strings.Contains(body, "downgrade") {
		t.Fatalf("a redirect from https to http: %d %q, want 502 naming the downgrade", code, clipBody([]byte(body)))
	}
	if n := up.count(debPath); n != 0 {
		t.Fatalf("the http mirror was asked %d times", n)
	}
	if code, body := get("/hop0" + debPath); code != http.StatusBadGateway || !strings.Contains(body, "redirects") {
		t.Fatalf("seven redirects: %d %q, want 502", code, clipBody([]byte(body)))
	}
	if code, _ := get("/hop2" + debPath); code != http.StatusOK {
		t.Fatalf("five https redirects: %d, want 200", code)
	}
}

// Inside an intercepted tunnel a request head has the front's limits: a
// 100 KB header is answered 431, as it is in the clear.
func TestInterceptedHeadLimits(t *testing.T) {
	up := newUpstream(t, 1000)
	public := newTestCA(t, "a public CA")
	_, port := tlsOrigin(t, up, public)
	ca, err := siteca.Init(t.TempDir(), []string{"localhost"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, up, func(c *testConfig, _ *cachestore.Config) {
		c.Intercept = siteInterceptor{ca}
		c.UpstreamRoots = public.pool
		c.ConnectPorts = []int{port}
	})
	pu, _ := url.Parse(h.front.URL)
	siteRoots := x509.NewCertPool()
	siteRoots.AddCert(ca.Cert)
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: siteRoots}}}
	req, _ := http.NewRequest(http.MethodGet, "https://localhost:"+strconv.Itoa(port)+debPath, nil)
	req.Header.Set("X-Padding", strings.Repeat("a", 100<<10))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("a 100 KB header inside the tunnel: %d, want 431", resp.StatusCode)
	}
	// The tunnel ends once net/http has closed it after the 431.
	c.CloseIdleConnections()
	h.settle()
}
