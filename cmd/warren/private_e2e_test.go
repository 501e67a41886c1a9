package main

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// authServer serves dir to one user and password, as a password-protected
// apt repository does (the origin's own 401 to everyone else), and counts
// the GETs it answered with a file.
type authServer struct {
	*httptest.Server
	mu      sync.Mutex // guards gets, refused
	gets    map[string]int
	refused int
}

func serveDirWithAuth(t testing.TB, dir, user, pass string) *authServer {
	as := &authServer{gets: map[string]int{}}
	fs := http.FileServer(http.Dir(dir))
	as.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != user || p != pass {
			as.mu.Lock()
			as.refused++
			as.mu.Unlock()
			w.Header().Set("WWW-Authenticate", `Basic realm="private repository"`)
			http.Error(w, "401 authorization required", http.StatusUnauthorized)
			return
		}
		as.mu.Lock()
		as.gets[r.URL.Path]++
		as.mu.Unlock()
		fs.ServeHTTP(w, r)
	}))
	t.Cleanup(as.Close)
	return as
}

func (as *authServer) total() int {
	as.mu.Lock()
	defer as.mu.Unlock()
	n := 0
	for _, c := range as.gets {
		n += c
	}
	return n
}

// A password-protected repository used through warren by real apt, with
// the password in sources.list (apt puts it in the proxy request line) and
// with an auth.conf entry (apt sends Authorization): the credentialed
// clients' second runs are all hits; an anonymous client through the same
// warren and through its peer gets the origin's 401, never the bytes; the
// peer fetches alice's files from the origin itself, never from the node
// that holds them; and neither the password nor its base64 is in any log,
// the status page, the stats or the metrics.
func TestAptPrivateRepository(t *testing.T) {
	requireTools(t, "apt-get", "apt-ftparchive", "dpkg-deb", "gpg", "xz", "gzip")
	const user, pass = "alice", "s3cretpw"
	base := t.TempDir()
	repo := buildAptRepo(t, base)
	origin := serveDirWithAuth(t, repo.root, user, pass)
	nodes := startNodes(t, 2, nil)
	a, b := nodes[0], nodes[1]
	host := strings.TrimPrefix(origin.URL, "http://")
	withPass := fmt.Sprintf("deb [signed-by=%s] http://%s:%s@%s/ stable main", repo.keyring, user, pass, host)
	plain := fmt.Sprintf("deb [signed-by=%s] http://%s/ stable main", repo.keyring, host)

	first := newAptClient(t, base, "alice-url", withPass, a.url)
	first.run("update")
	first.run("download", "warren-e2e-big", "warren-e2e-small")
	fetched := origin.total()
	for pool, sum := range repo.debs {
		if got := sha256File(t, filepath.Join(first.dir, "dl", filepath.Base(pool))); got != sum {
			t.Fatalf("%s: sha256 %s, want %s", pool, got, sum)
		}
	}
	// Her second run, and another of her machines with the password in
	// auth.conf instead: all hits.
	first.run("update")
	first.run("download", "warren-e2e-big", "warren-e2e-small")
	viaAuthConf := newAptClient(t, base, "alice-authconf", plain, a.url)
	authConf := filepath.Join(viaAuthConf.dir, "auth.conf")
	os.WriteFile(authConf, []byte(fmt.Sprintf("# apt sends http credentials only to machines marked http://\nmachine http://%s\nlogin %s\npassword %s\n", host, user, pass)), 0o600)
	viaAuthConf.opts = append(viaAuthConf.opts, "-o", "Dir::Etc::netrc="+authConf, "-o", "Dir::Etc::netrcparts=-")
	viaAuthConf.run("update")
	viaAuthConf.run("download", "warren-e2e-big", "warren-e2e-small")
	if got := origin.total(); got != fetched {
		t.Fatalf("alice's second run and her auth.conf machine made %d more requests to the origin; want 0 (all hits)", got-fetched)
	}

	// Anonymous, through the node that holds her files and through its peer.
	refusedBefore := origin.refused
	for _, n := range []*node{a, b} {
		for pool := range repo.debs {
			resp, err := n.client.Get(origin.URL + "/" + pool)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || len(body) > 4096 {
				t.Fatalf("anonymous GET of %s through %s: %d, %d bytes; want the origin's 401", pool, n.addr, resp.StatusCode, len(body))
			}
		}
	}
	if origin.refused == refusedBefore {
		t.Fatal("the origin was not asked for the anonymous requests")
	}
	// Alice on a machine that uses the peer: the peer asks the origin,
	// with her credential, and not the node that holds the files.
	onPeer := newAptClient(t, base, "alice-peer", withPass, b.url)
	onPeer.run("update")
	onPeer.run("download", "warren-e2e-small")
	if strings.Contains(b.logs.String(), "from=peer") || strings.Contains(a.logs.String(), "uploaded") {
		t.Fatal("a private file went between peers")
	}

	secrets := []string{pass, base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))}
	for _, n := range nodes {
		texts := map[string]string{"log": n.logs.String()}
		for _, page := range []string{"/_warren/", "/_warren/stats", "/metrics"} {
			resp, err := http.Get(n.url + page)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			texts[page] = string(body)
		}
		for what, text := range texts {
			for _, s := range secrets {
				if strings.Contains(text, s) {
					t.Fatalf("%s of %s holds the password (%q)", what, n.addr, s)
				}
			}
		}
	}
}
