package proxy

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// upstream is a real HTTP server holding a small apt repository. It counts
// requests per path and lets a test replace the handler of one path.
type upstream struct {
	*httptest.Server
	mu     sync.Mutex // guards files, hooks, gets
	files  map[string][]byte
	hooks  map[string]http.HandlerFunc
	gets   map[string]int // GETs answered 200 or 206, per path
	conds  map[string]int // 304s, per path
	modAt  time.Time
	debURL string
	deb    []byte
}

const (
	debPath      = "/debian/pool/main/h/hello/hello_1.0_amd64.deb"
	packagesPath = "/debian/dists/stable/main/binary-amd64/Packages.gz"
	releasePath  = "/debian/dists/stable/InRelease"
)

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func sha512hex(b []byte) string {
	s := sha512.Sum512(b)
	return hex.EncodeToString(s[:])
}

// randomBytes is incompressible and the same for a given seed.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.UintN(256))
	}
	return b
}

func newUpstream(t testing.TB, debSize int) *upstream {
	t.Helper()
	u := &upstream{
		files: map[string][]byte{}, hooks: map[string]http.HandlerFunc{},
		gets: map[string]int{}, conds: map[string]int{},
		modAt: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC),
	}
	u.deb = randomBytes(debSize, 1)
	u.setRepo(u.deb)
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.Close)
	u.debURL = u.URL + debPath
	return u
}

// setRepo writes Packages (listing deb) and a Release listing Packages.
func (u *upstream) setRepo(deb []byte) {
	pkgs := fmt.Sprintf("Package: hello\nVersion: 1.0\nArchitecture: amd64\nDescription: test\n a test package\nFilename: %s\nSize: %d\nSHA256: %s\n\n",
		strings.TrimPrefix(debPath, "/debian/"), len(deb), sha256hex(deb))
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(pkgs))
	zw.Close()
	rel := fmt.Sprintf("Origin: test\nSuite: stable\nCodename: stable\nAcquire-By-Hash: yes\nSHA256:\n %s %d main/binary-amd64/Packages.gz\n",
		sha256hex(gz.Bytes()), gz.Len())
	u.mu.Lock()
	defer u.mu.Unlock()
	u.files[debPath] = deb
	u.files[packagesPath] = gz.Bytes()
	u.files["/debian/dists/stable/main/binary-amd64/by-hash/SHA256/"+sha256hex(gz.Bytes())] = gz.Bytes()
	u.files[releasePath] = []byte(rel)
}

func (u *upstream) hook(path string, h http.HandlerFunc) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.hooks[path] = h
}

func (u *upstream) count(path string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.gets[path]
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	h, hooked := u.hooks[r.URL.Path]
	body, ok := u.files[r.URL.Path]
	u.mu.Unlock()
	if hooked {
		u.mu.Lock()
		u.gets[r.URL.Path]++
		u.mu.Unlock()
		h(w, r)
		return
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	// Counted when the status is written, before any byte of the body: a
	// count taken after ServeContent returned raced a client that had
	// the whole body already (a 30 kB body goes out in one write).
	rec := &statusRecorder{ResponseWriter: w, onStatus: func(code int) {
		u.mu.Lock()
		defer u.mu.Unlock()
		switch {
		case r.Method != http.MethodGet:
		case code == http.StatusNotModified:
			u.conds[r.URL.Path]++
		case code == http.StatusOK || code == http.StatusPartialContent:
			u.gets[r.URL.Path]++
		}
	}}
	http.ServeContent(rec, r, "", u.modAt, bytes.NewReader(body))
}

type statusRecorder struct {
	http.ResponseWriter
	code     int
	onStatus func(code int)
}

func (s *statusRecorder) WriteHeader(c int) {
	if s.code == 0 {
		s.code = c
		if s.onStatus != nil {
			s.onStatus(c)
		}
	}
	s.ResponseWriter.WriteHeader(c)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.WriteHeader(http.StatusOK)
	}
	return s.ResponseWriter.Write(b)
}

// addRootRepo serves a second repository on the same host, rooted at "/"
// (an ancestor of the first one's /debian/): its Packages names the first
// one's deb, relative to "/", with other bytes' hash.
func (u *upstream) addRootRepo(other []byte) (release, packages string) {
	pkgs := fmt.Sprintf("Package: hello\nVersion: 6.6\nArchitecture: amd64\nDescription: x\n x\nFilename: %s\nSize: %d\nSHA256: %s\n\n",
		strings.TrimPrefix(debPath, "/"), len(other), sha256hex(other))
	rel := fmt.Sprintf("Origin: root\nSuite: root\nCodename: root\nSHA256:\n %s %d main/binary-amd64/Packages\n", sha256hex([]byte(pkgs)), len(pkgs))
	release, packages = "/dists/root/InRelease", "/dists/root/main/binary-amd64/Packages"
	u.mu.Lock()
	defer u.mu.Unlock()
	u.files[release] = []byte(rel)
	u.files[packages] = []byte(pkgs)
	return release, packages
}
