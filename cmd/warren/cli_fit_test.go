package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warren-cache/warren/cachestore"
)

// What `warren cache ls` prints, `warren cache show` takes: the short
// digest as printed, its bare hex, any unique prefix (as git takes an
// abbreviated commit); a hash-known artifact is shown with the learnt URL
// that names it (there is no URL-cache entry for it); an ambiguous prefix
// is refused, naming the candidates. With the daemon running and stopped.
// (Before, show rejected the printed digests and printed "urls <nil>".)
func TestCacheShowTakesWhatLsPrints(t *testing.T) {
	deb := []byte(strings.Repeat("a hash-known package ", 5000))
	sum := sha256.Sum256(deb)
	const debPath = "/debian/pool/main/f/fit/fit_1_all.deb"
	pkgs := fmt.Sprintf("Package: fit\nVersion: 1\nArchitecture: all\nFilename: %s\nSize: %d\nSHA256: %x\n\n", strings.TrimPrefix(debPath, "/debian/"), len(deb), sum)
	psum := sha256.Sum256([]byte(pkgs))
	rel := fmt.Sprintf("Suite: stable\nSHA256:\n %x %d main/binary-amd64/Packages\n", psum, len(pkgs))
	files := map[string]string{"/debian/dists/stable/Release": rel, "/debian/dists/stable/main/binary-amd64/Packages": pkgs, debPath: string(deb)}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b, ok := files[r.URL.Path]; ok {
			io.WriteString(w, b)
			return
		}
		http.NotFound(w, r)
	}))
	defer up.Close()
	dir := t.TempDir()
	u, cmd, logs := startWarren(t, "--cache-dir", dir, "--log-level", "debug")
	c := proxyClient(t, u)
	for _, p := range []string{"/debian/dists/stable/Release", "/debian/dists/stable/main/binary-amd64/Packages", debPath} {
		resp, err := c.Get(up.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	logs.waitFor(t, "fit_1_all.deb digest=", 10*time.Second)
	want := "sha256:" + hex.EncodeToString(sum[:])
	check := func(when string) {
		t.Helper()
		ls, err := runApp(t, "cache", "ls", "--cache-dir", dir)
		if err != nil {
			t.Fatal(err)
		}
		short := regexp.MustCompile(`sha256:[0-9a-f]{12}`).FindAllString(ls, -1)
		if !strings.Contains(strings.Join(short, " "), want[:19]) {
			t.Fatalf("%s: cache ls does not print the package's digest %s…:\n%s", when, want[:19], ls)
		}
		for _, q := range []string{want[:19], want[len("sha256:") : len("sha256:")+8], want, strings.ToUpper(want[7:])} {
			out, err := runApp(t, "cache", "show", "--cache-dir", dir, "--json", q)
			if err != nil {
				t.Fatalf("%s: cache show %s: %v %s", when, q, err, out)
			}
			var row blobRow
			json.Unmarshal([]byte(out), &row)
			if row.Digest != want || len(row.URLs) == 0 || !strings.HasSuffix(row.URLs[0], debPath) {
				t.Fatalf("%s: cache show %s: %s, want the package and the learnt URL that names it", when, q, out)
			}
		}
		if out, err := runApp(t, "cache", "show", "--cache-dir", dir, want[:19]); err != nil || strings.Contains(out, "<nil>") {
			t.Fatalf("%s: cache show prints %v %q", when, err, out)
		}
		// Every blob shares the first digit of some other when there are
		// enough; here a one-digit prefix is too short to be taken.
		if _, err := runApp(t, "cache", "show", "--cache-dir", dir, want[7:8]); err == nil {
			t.Fatalf("%s: a one-digit prefix was taken", when)
		}
	}
	check("daemon running")
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	check("daemon stopped")

	// Two blobs that share a prefix: the prefix is ambiguous, and says so.
	s, err := cachestore.Open(cachestore.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Two bodies whose digests share their first four hex digits (a
	// birthday search: a few hundred tries).
	var shared string
	var bodies [][]byte
	seen := map[string][]byte{}
	for i := 0; shared == ""; i++ {
		b := []byte(fmt.Sprint("blob ", i))
		h := sha256.Sum256(b)
		k := hex.EncodeToString(h[:2])
		if prev, ok := seen[k]; ok {
			shared, bodies = k, [][]byte{prev, b}
		}
		seen[k] = b
	}
	for _, b := range bodies {
		h := sha256.Sum256(b)
		d := cachestore.Digest{Algo: "sha256", Hex: hex.EncodeToString(h[:])}
		f, _ := s.BeginFill(cachestore.FillKey(d))
		f.Start(cachestore.FillInfo{Algo: "sha256", Size: int64(len(b))})
		f.Write(b)
		if _, err := f.Commit(d, int64(len(b))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Resolve(shared); err == nil || !strings.Contains(err.Error(), "give more digits") {
		t.Fatalf("an ambiguous prefix %s: %v, want it refused naming the candidates", shared, err)
	}
}

// Each command lists the flags it uses: the daemon's settings on serve
// (and config check, which prints them), --config, --cache-dir and --json
// where they apply elsewhere; a daemon flag given to another command by
// habit is still read. (Before, every command listed some 45 daemon flags:
// warren ca init --help offered --upload-slots.)
func TestCommandsListTheirFlags(t *testing.T) {
	help := func(args ...string) string {
		out, err := runApp(t, append(args, "--help")...)
		if err != nil {
			t.Fatalf("%v --help: %v", args, err)
		}
		return out
	}
	for _, tc := range []struct {
		cmd          []string
		want, absent []string
	}{
		{[]string{"serve"}, []string{"--upload-slots", "--listen", "--cache-dir", "--hub-tokens"}, nil},
		{[]string{"config", "check"}, []string{"--upload-slots", "--config"}, nil},
		{[]string{"ca", "init"}, []string{"--config", "--cache-dir", "--https-intercept", "--force"}, []string{"--upload-slots", "--listen", "--json"}},
		{[]string{"ca", "show"}, []string{"--config", "--cache-dir"}, []string{"--upload-slots", "--https-intercept"}},
		{[]string{"cache", "show"}, []string{"--config", "--cache-dir", "--json"}, []string{"--upload-slots", "--listen", "--hub"}},
		{[]string{"cache", "ls"}, []string{"--cache-dir", "--json", "--sort"}, []string{"--upload-slots"}},
		{[]string{"status"}, []string{"--cache-dir", "--json"}, []string{"--discovery", "--max-requesters"}},
		{[]string{"replicate", "run"}, []string{"--cache-dir", "--from"}, []string{"--upload-slots"}},
		{[]string{"apt-proxy-detect"}, []string{"--listen", "--discovery", "--timeout"}, []string{"--upload-slots", "--hub-tokens"}},
	} {
		out := help(tc.cmd...)
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("warren %s --help lacks %s:\n%s", strings.Join(tc.cmd, " "), w, out)
			}
		}
		for _, a := range tc.absent {
			if strings.Contains(out, a+" ") || strings.Contains(out, a+"\t") || strings.Contains(out, a+"\n") {
				t.Errorf("warren %s --help lists %s, which it does not use", strings.Join(tc.cmd, " "), a)
			}
		}
	}
	// A daemon flag by habit is still read (discovery: accepted).
	dir := t.TempDir()
	if out, err := runApp(t, "cache", "stat", "--cache-dir", dir, "--discovery", "off"); err != nil {
		t.Fatalf("cache stat with a daemon flag: %v %s", err, out)
	}
	os.RemoveAll(filepath.Join(dir, "admin.sock"))
}
