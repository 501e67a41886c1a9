package proxy

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

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
