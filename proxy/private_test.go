package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/hub"
)

// privateOrigin serves up's repository only to alice with her password,
// as a password-protected apt repository does; every other request gets
// the origin's own 401.
func privateOrigin(t testing.TB, up *upstream) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if !ok || user != "alice" || pass != "s3cretpw" {
			w.Header().Set("WWW-Authenticate", `Basic realm="private"`)
			http.Error(w, "origin: who are you?", http.StatusUnauthorized)
			return
		}
		up.serve(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// logBuffer is a log the test can search.
type logBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func loggingTo(l *logBuffer) harnessOpt {
	return func(c *testConfig, _ *cachestore.Config) {
		c.Logger = slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
}

// A password-protected repository stays its users': what a client with
// the credential fetched (index files by URL, the .deb by its digest) is
// served again to that credential alone, whichever way the client sends
// it (user:password in the URL, as apt with a sources.list URL; an
// Authorization header, as apt with auth.conf); an anonymous client and
// one with another credential get the origin's answer; the password is in
// no log line; and the blob is never offered to peers or pulling hubs.
func TestPrivateRepositoryStaysPrivate(t *testing.T) {
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cretpw"))
	tests := []struct {
		name string
		cred func(raw string) (string, []string) // the URL and headers a credentialed client sends
	}{
		{"userinfo in the URL", func(raw string) (string, []string) {
			return strings.Replace(raw, "http://", "http://alice:s3cretpw@", 1), nil
		}},
		{"Authorization header", func(raw string) (string, []string) {
			return raw, []string{"Authorization", basic}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t, 50000)
			origin := privateOrigin(t, up)
			var logs logBuffer
			h := newHarness(t, up, loggingTo(&logs))
			get := func(path string, want int) []byte {
				t.Helper()
				u, hdr := tt.cred(origin.URL + path)
				_, body := h.mustGet(u, want, hdr...)
				return body
			}
			for _, p := range []string{releasePath, packagesPath} {
				get(p, 200)
			}
			if body := get(debPath, 200); !bytes.Equal(body, up.deb) {
				t.Fatal("the credentialed client got wrong bytes")
			}
			before := up.count(releasePath) + up.count(packagesPath) + up.count(debPath)
			// Its second run: every file a hit (the index files within
			// index_ttl), not one more request to the origin.
			for _, p := range []string{releasePath, packagesPath, debPath} {
				get(p, 200)
			}
			if after := up.count(releasePath) + up.count(packagesPath) + up.count(debPath); after != before {
				t.Fatalf("the credentialed client's second run went to the origin: %d GETs, want %d", after, before)
			}
			d := cachestore.Digest{Algo: "sha256", Hex: sha256hex(up.deb)}
			if bi, err := h.store.Stat(d); err != nil || !bi.Private() {
				t.Fatalf("the .deb is not stored as a private blob: %+v, %v", bi, err)
			}

			// Anonymous, and with another credential: the origin's 401,
			// never the kept bytes.
			for _, hdr := range [][]string{nil, {"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte("bob:guess"))}} {
				for _, p := range []string{releasePath, packagesPath, debPath} {
					resp, body, err := h.get(origin.URL+p, hdr...)
					if err != nil {
						t.Fatal(err)
					}
					if resp.StatusCode != http.StatusUnauthorized || bytes.Contains(body, up.deb[:64]) {
						t.Fatalf("%s without alice's credential (%v): %d, want the origin's 401", p, hdr, resp.StatusCode)
					}
					if got := resp.Header.Get("WWW-Authenticate"); got != `Basic realm="private"` {
						t.Fatalf("%s: the origin's challenge was not passed on: %q", p, got)
					}
				}
			}
			// Nor by digest, as a peer or a pulling hub asks.
			if h.store.Holds(d) {
				t.Fatal("a private blob is offered to peers (Holds)")
			}
			if _, _, err := h.store.OpenShared(d); err == nil {
				t.Fatal("a private blob opens for sharing")
			}
			h.settle()
			if strings.Contains(logs.String(), "s3cretpw") || strings.Contains(logs.String(), strings.TrimPrefix(basic, "Basic ")) {
				t.Fatalf("the password is in the log:\n%s", logs.String())
			}
			if !strings.Contains(logs.String(), "scope=p") {
				t.Fatal("the log does not say which requests were private")
			}
		})
	}
}

// The same bytes in a public repository are public: a client without
// credentials gets them once its own origin delivered them (so knowing a
// private blob's digest is not enough), and from then on anyone does.
func TestPrivateBlobMadePublicByAPublicFetch(t *testing.T) {
	up := newUpstream(t, 30000)
	origin := privateOrigin(t, up)
	h := newHarness(t, up)
	priv := strings.Replace(origin.URL, "http://", "http://alice:s3cretpw@", 1)
	h.mustGet(priv+releasePath, 200)
	h.mustGet(priv+packagesPath, 200)
	h.mustGet(priv+debPath, 200)
	d := cachestore.Digest{Algo: "sha256", Hex: sha256hex(up.deb)}
	if bi, err := h.store.Stat(d); err != nil || !bi.Private() {
		t.Fatalf("not private after the private fetch: %+v %v", bi, err)
	}
	// The public mirror of the same repository (up itself).
	h.learn()
	debGets := up.count(debPath)
	_, body := h.mustGet(up.debURL, 200)
	if !bytes.Equal(body, up.deb) || up.count(debPath) != debGets+1 {
		t.Fatalf("the public request was served the private copy without its origin delivering it (%d GETs before, %d after)", debGets, up.count(debPath))
	}
	bi, err := h.store.Stat(d)
	if err != nil || bi.Private() || !h.store.Holds(d) {
		t.Fatalf("proven public by its public origin, still private: %+v %v", bi, err)
	}
	// One blob, in the shared tree only: the private copy is gone.
	n := 0
	for _, b := range mustBlobs(t, h.store) {
		if b.Digest == d {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d index entries for one blob", n)
	}
	// Alice still reads it (a public blob is everyone's).
	if _, body := h.mustGet(priv+debPath, 200); !bytes.Equal(body, up.deb) {
		t.Fatal("alice lost her file")
	}
}

func mustBlobs(t *testing.T, s *cachestore.Store) []cachestore.BlobInfo {
	t.Helper()
	b, err := s.Blobs()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A hub serves a blob a node names by X-Warren-Digest only where the
// node's scope may read it, and never by sha1: knowing a digest is not
// enough to read a private blob or to pick a blob by a weak hash.
func TestHubDigestClaimIsScoped(t *testing.T) {
	const token = "a-hub-token-of-24-chars!"
	up := newUpstream(t, 20000)
	origin := privateOrigin(t, up)
	hb := newHarness(t, up, asHub(hub.Fetch, 5, token))
	priv := strings.Replace(origin.URL, "http://", "http://alice:s3cretpw@", 1)
	hb.mustGet(priv+debPath, 200, "Proxy-Authorization", "Bearer "+token) // the hub holds it, privately
	if bi, err := hb.store.Stat(cachestore.Digest{Algo: "sha256", Hex: sha256hex(up.deb)}); err != nil || !bi.Private() {
		t.Fatalf("the hub does not hold the private blob: %+v %v", bi, err)
	}
	// A public URL that serves other bytes, claimed to be the private blob.
	const other = "/debian/pool/main/o/other/other_1.0_amd64.deb"
	up.mu.Lock()
	up.files[other] = []byte("not the private file")
	up.mu.Unlock()
	// And a public blob kept under sha1 (an old rpm repository's
	// checksum type): a weak hash picks no blob either.
	weak := []byte("a public file an old repository names by sha1")
	s1 := sha1.Sum(weak)
	d1 := cachestore.Digest{Algo: "sha1", Hex: hex.EncodeToString(s1[:])}
	f, _ := hb.store.BeginFill(cachestore.FillKey(d1))
	if err := f.Start(cachestore.FillInfo{Algo: "sha1", Size: int64(len(weak))}); err != nil {
		t.Fatal(err)
	}
	f.Write(weak)
	if _, err := f.Commit(d1, int64(len(weak))); err != nil {
		t.Fatal(err)
	}
	for _, claim := range []string{"sha256:" + sha256hex(up.deb), d1.String()} {
		// A wrong claim fails the request (the other bytes do not match
		// it): the transfer breaks off. What matters is what came.
		_, body, _ := hb.get(up.URL+other, "Proxy-Authorization", "Bearer "+token, hub.HeaderDigest, claim)
		if bytes.Equal(body, up.deb) || bytes.Equal(body, weak) {
			t.Fatalf("claim %s: the hub served a blob by the claim alone, under another URL", claim)
		}
	}
}

// A private fill's key names its scope (http://p<scope>@host/path); the
// status page once showed it. An anonymous client that names it
// apt-cacher-ng style (/p<scope>@host/path) is refused, not joined to
// the private flight.
func TestAnonymousCannotNameAPrivateKey(t *testing.T) {
	up := newUpstream(t, 1000)
	secret := randomBytes(200000, 7)
	release := make(chan struct{})
	up.hook("/private/secret.tar", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "200000")
		w.WriteHeader(http.StatusOK)
		w.Write(secret[:100000])
		w.(http.Flusher).Flush()
		<-release
		w.Write(secret[100000:])
	})
	origin := privateOrigin(t, up)
	h := newHarness(t, up)
	// The private client's answer begins once its fill has started.
	asked, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		resp, err := h.client.Get(strings.Replace(origin.URL, "http://", "http://alice:s3cretpw@", 1) + "/private/secret.tar")
		close(asked)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	released := false
	defer func() {
		if !released {
			close(release)
		}
		<-done
	}()
	<-asked
	var key string
	for _, f := range h.store.Fills() {
		key = f.Key
	}
	scope, host, ok := strings.Cut(strings.TrimPrefix(key, "url:http://"), "@")
	if !ok || !strings.HasPrefix(scope, "p") {
		t.Fatalf("the private fill's key %q names no scope", key)
	}
	host, _, _ = strings.Cut(host, "/")
	anon := make(chan *http.Response, 1)
	go func() {
		resp, err := http.Get(h.front.URL + "/" + scope + "@" + host + "/private/secret.tar")
		if err != nil {
			t.Error(err)
		}
		anon <- resp
	}()
	var resp *http.Response
	select {
	case resp = <-anon:
	case <-time.After(10 * time.Second): // it joined the flight and waits for it
		close(release)
		released = true
		resp = <-anon
	}
	if resp == nil {
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if bytes.Equal(body, secret) || resp.StatusCode/100 != 4 {
		t.Fatalf("anonymous /%s@%s/...: %d with %d bytes (%.200q), want a 4xx and nothing of the file", scope, host, resp.StatusCode, len(body), body)
	}
}

// A token given as the URL's user name (packagecloud's and Gemfury's
// https://TOKEN:@host/ or https://TOKEN@host/) is the secret itself: no
// log line, no error shows it. The request line carries it as a client
// that does not turn userinfo into a header sends it.
func TestTokenAsUserNameIsNotLogged(t *testing.T) {
	const tok = "Tk0123456789secretXYZ"
	up := newUpstream(t, 1000)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if user, _, _ := r.BasicAuth(); user != tok {
			http.Error(w, "who are you?", http.StatusUnauthorized)
			return
		}
		up.serve(w, r)
	}))
	t.Cleanup(origin.Close)
	var logs logBuffer
	h := newHarness(t, up, loggingTo(&logs))
	get := func(target string) (int, []byte) {
		t.Helper()
		c, err := net.Dial("tcp", strings.TrimPrefix(h.front.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target, strings.TrimPrefix(origin.URL, "http://"))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}
	for _, userinfo := range []string{tok + ":@", tok + "@"} {
		base := strings.Replace(origin.URL, "http://", "http://"+userinfo, 1)
		for _, p := range []string{releasePath, debPath} {
			if code, _ := get(base + p); code != http.StatusOK {
				t.Fatalf("%s with the token: %d", p, code)
			}
		}
		if _, body := get(base + "/debian/pool/main/n/nosuch/nosuch_1_all.deb"); strings.Contains(string(body), tok) {
			t.Errorf("the answer to a missing file shows the token: %s", body)
		}
	}
	h.settle()
	if !strings.Contains(logs.String(), "scope=p") {
		t.Fatal("the requests were not private")
	}
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, tok) {
			t.Errorf("log line with the token: %s", l)
		}
	}
}

// A node's claim (X-Warren-Digest) of a blob the hub holds, under the URL
// of an index file the hub never learnt, teaches the hub nothing: it
// serves the claimed blob but learns no facts from it as that URL.
func TestHubClaimTeachesNothing(t *testing.T) {
	up := newUpstream(t, 1000)
	fakePkgs := []byte("the attacker's Packages.gz")
	evil := []byte("Origin: x\nSuite: other\nSHA256:\n " + sha256hex(fakePkgs) + " 26 main/binary-amd64/Packages.gz\n")
	up.mu.Lock()
	up.files["/evil/dists/other/InRelease"] = evil
	up.mu.Unlock()
	hb := newHarness(t, up, asHub(hub.Fetch, 5))
	hb.mustGet(up.URL+"/evil/dists/other/InRelease", 200) // the hub holds it
	hb.mustGet(up.URL+"/debian/dists/other/InRelease", 200, hub.HeaderDigest, "sha256:"+sha256hex(evil))
	hb.settle()
	if k, err := hb.door.Learnt(t.Context(), up.URL+"/debian/dists/other/main/binary-amd64/Packages.gz"); err == nil && k.Digest.Hex == sha256hex(fakePkgs) {
		t.Fatalf("the hub learnt from a claimed blob: debian's Packages.gz is now %s", k.Digest)
	}
}

func TestTargetURLHosts(t *testing.T) {
	tests := []struct {
		target string // the request-target
		want   string // "" for refused
	}{
		{"/deb.debian.org/debian/dists/bookworm/InRelease", "http://deb.debian.org/debian/dists/bookworm/InRelease"},
		{"/Mirror.Example:8080/x", "http://mirror.example:8080/x"},
		{"/[::1]:3142/x", "http://[::1]:3142/x"},
		{"/10.0.0.1/x", "http://10.0.0.1/x"},
		{"/localhost/x", "http://localhost/x"},
		{"/p0123456789abcdef0123456789abcdef@deb.example/x", ""},
		{"/alice:pw@deb.example/x", ""},
		{"/deb.example:80a/x", ""},
		{"/[nonsense]/x", ""},
		{"/deb example.org/x", ""},
		{"http://deb.debian.org/debian/x", "http://deb.debian.org/debian/x"},
		{"http://[fe80::1%25eth0]:80/x", "http://[fe80::1%25eth0]:80/x"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodGet, "http://front.invalid/", nil)
		u, err := url.ParseRequestURI(tt.target)
		if err != nil {
			r.URL = &url.URL{Path: tt.target} // as the server reads what ParseRequestURI would refuse
		} else {
			r.URL = u
		}
		got, err := targetURL(r)
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("%s: taken as %s, want refused", tt.target, got)
		case tt.want != "" && err != nil:
			t.Errorf("%s: %v, want %s", tt.target, err, tt.want)
		case tt.want != "" && got.String() != tt.want:
			t.Errorf("%s: %s, want %s", tt.target, got, tt.want)
		}
	}
}

// A password in an apt-cacher-ng style path is refused with 400, neither
// echoed in the answer nor logged; the refusal is logged.
func TestCredentialInPathRefused(t *testing.T) {
	var logs logBuffer
	h := newHarness(t, newUpstream(t, 10), loggingTo(&logs))
	resp, err := http.Get(h.front.URL + "/alice:s3cretpw@deb.example/debian/pool/a.deb")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	h.settle()
	if resp.StatusCode != http.StatusBadRequest || strings.Contains(string(body), "s3cretpw") {
		t.Fatalf("%d %q; want 400 without the password", resp.StatusCode, body)
	}
	if l := logs.String(); !strings.Contains(l, "request refused") || strings.Contains(l, "s3cretpw") {
		t.Fatalf("the log: %s", l)
	}
}
