package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeArchive writes an (unsigned: warren does not check signatures, apt
// does) apt archive of the named packages with their dependencies into
// dir, and returns each package's pool path.
func writeArchive(t *testing.T, dir string, pkgs map[string]string) map[string]string {
	t.Helper()
	paths := map[string]string{}
	var idx strings.Builder
	i := 0
	for name, depends := range pkgs {
		i++
		body := randomPayload(20000+i*1000, uint64(200+i))
		p := fmt.Sprintf("pool/main/%c/%s/%s_1.0+b1_amd64.deb", name[0], name, name)
		os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(dir, p), body, 0o644)
		sum := sha256.Sum256(body)
		fmt.Fprintf(&idx, "Package: %s\nVersion: 1.0+b1\nArchitecture: amd64\n", name)
		if depends != "" {
			fmt.Fprintf(&idx, "Depends: %s\n", depends)
		}
		fmt.Fprintf(&idx, "Filename: %s\nSize: %d\nSHA256: %s\n\n", p, len(body), hex.EncodeToString(sum[:]))
		paths[name] = "/" + p
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(idx.String()))
	zw.Close()
	bin := filepath.Join(dir, "dists", "stable", "main", "binary-amd64")
	os.MkdirAll(bin, 0o755)
	os.WriteFile(filepath.Join(bin, "Packages.gz"), gz.Bytes(), 0o644)
	sum := sha256.Sum256(gz.Bytes())
	rel := fmt.Sprintf("Suite: stable\nCodename: stable\nSHA256:\n %s %d main/binary-amd64/Packages.gz\n", hex.EncodeToString(sum[:]), gz.Len())
	os.WriteFile(filepath.Join(dir, "dists", "stable", "InRelease"), []byte(rel), 0o644)
	return paths
}

// The hub's preloading from the CLI: a dry run counts what would be
// fetched and fetches none of it; a run fetches exactly that, once; a
// second moves nothing; status, the page and /metrics show the runs; and a
// node behind the preload-only hub gets what was preloaded, and is refused
// the rest.
func TestPreloadFromTheCLI(t *testing.T) {
	repo := t.TempDir()
	paths := writeArchive(t, repo, map[string]string{"office-core": "libfoo (>= 1), libbar | libbaz", "libfoo": "", "libbar": "", "libbaz": "", "games": ""})
	up := serveDir(t, repo)
	base := t.TempDir()
	conf := filepath.Join(base, "hub.yaml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`role: hub
hub_mode: preload
preload_schedule: ""
preload:
  apt: [{url: %s, suites: [stable], components: [main], architectures: [amd64], packages: ["office-*"]}]
`, up.URL)), 0o644)
	hubDir := filepath.Join(base, "hub")
	hubURL, _, _ := startWarren(t, "--config", conf, "--cache-dir", hubDir)
	node, _, _ := startWarren(t, "--cache-dir", filepath.Join(base, "node"), "--hub", hubURL, "--hub-only")
	c := proxyClient(t, node)
	get := func(path string) (int, []byte) {
		resp, err := c.Get(up.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, _ := get(paths["office-core"]); code != http.StatusNotFound {
		t.Fatalf("before any preload, a node's request: %d, want 404 (not preloaded)", code)
	}
	debGETs := func() int {
		n := 0
		for _, p := range paths {
			n += up.count(p)
		}
		return n
	}
	if debGETs() != 0 {
		t.Fatal("the preload-only hub went to upstream for a node")
	}

	out, err := runApp(t, "preload", "run", "--dry-run", "--config", conf, "--cache-dir", hubDir)
	if err != nil || !strings.Contains(out, "the list names 3 artifacts; 3 are not held") {
		t.Fatalf("preload run --dry-run: %v\n%s", err, out)
	}
	if debGETs() != 0 {
		t.Fatal("a dry run fetched artifacts")
	}
	out, err = runApp(t, "preload", "run", "--config", conf, "--cache-dir", hubDir)
	if err != nil || !strings.Contains(out, "fetched 3") {
		t.Fatalf("preload run: %v\n%s", err, out)
	}
	for _, name := range []string{"office-core", "libfoo", "libbar"} {
		if n := up.count(paths[name]); n != 1 {
			t.Fatalf("%s fetched %d times, want once", name, n)
		}
	}
	for _, name := range []string{"libbaz", "games"} {
		if n := up.count(paths[name]); n != 0 {
			t.Fatalf("%s (not named, not needed) fetched %d times", name, n)
		}
	}
	out, err = runApp(t, "preload", "run", "--config", conf, "--cache-dir", hubDir)
	if err != nil || !strings.Contains(out, "0 were not held; fetched 0") {
		t.Fatalf("second preload run: %v\n%s", err, out)
	}
	out, err = runApp(t, "preload", "status", "--config", conf, "--cache-dir", hubDir)
	if err != nil || strings.Count(out, "demand") != 4 || !strings.Contains(out, "on demand only") || !strings.Contains(out, "(dry run)") {
		t.Fatalf("preload status: %v\n%s", err, out)
	}

	// The node, through the preload-only hub: what was preloaded, whole.
	for _, p := range []string{"/dists/stable/InRelease", "/dists/stable/main/binary-amd64/Packages.gz"} {
		if code, b := get(p); code != 200 {
			t.Fatalf("%s through the preload-only hub: %d %s", p, code, b)
		}
	}
	code, body := get(paths["office-core"])
	want, _ := os.ReadFile(filepath.Join(repo, paths["office-core"]))
	if code != 200 || !bytes.Equal(body, want) {
		t.Fatalf("a preloaded package through the hub: %d, %d bytes", code, len(body))
	}
	if code, _ := get(paths["games"]); code != http.StatusNotFound {
		t.Fatalf("a package not preloaded: %d, want 404", code)
	}
	page := func(u string) string {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if p := page(hubURL + "/"); !strings.Contains(p, `id="preload"`) || !strings.Contains(p, "on demand only") {
		t.Fatal("the hub's page has no preload section")
	}
	if m := page(hubURL + "/metrics"); !strings.Contains(m, "warren_preload_fetched_artifacts_total 3") || !strings.Contains(m, "warren_preload_runs_total 2") {
		t.Fatal("the hub's /metrics do not count the preload runs")
	}
}

// A preload run whose daemon is killed midway: the next run fetches only
// what was not stored yet. preload_rate makes each artifact take most of a
// second, so the kill lands while the second is on its way.
func TestPreloadKilledMidwayResumes(t *testing.T) {
	repo := t.TempDir()
	paths := writeArchive(t, repo, map[string]string{"app-a": "", "app-b": "", "app-c": ""})
	up := serveDir(t, repo)
	base := t.TempDir()
	conf := filepath.Join(base, "hub.yaml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`role: hub
preload_schedule: ""
preload_rate: 30KB
preload:
  apt: [{url: %s, suites: [stable], components: [main], architectures: [amd64], packages: ["app-*"]}]
`, up.URL)), 0o644)
	hubDir := filepath.Join(base, "hub")
	addr := freeLoopbackPort(t)
	_, hub, _ := startWarrenAt(t, addr, "--config", conf, "--cache-dir", hubDir)
	go runApp(t, "preload", "run", "--config", conf, "--cache-dir", hubDir)
	started := func() (n int) {
		for _, p := range paths {
			if up.count(p) > 0 {
				n++
			}
		}
		return n
	}
	waitUntil(t, "the run to be on its second artifact", 30*time.Second, func() bool { return started() >= 2 })
	hub.Process.Kill()
	hub.Wait()
	if started() != 2 {
		t.Fatalf("%d artifacts begun when the daemon was killed: want 2 (the test's timing is off)", started())
	}
	startWarrenAt(t, addr, "--config", conf, "--cache-dir", hubDir)
	out, err := runApp(t, "preload", "run", "--config", conf, "--cache-dir", hubDir)
	if err != nil || !strings.Contains(out, "2 were not held; fetched 2") {
		t.Fatalf("the run after the kill: %v\n%s", err, out)
	}
	fetches := map[int]int{}
	for _, p := range paths {
		fetches[up.count(p)]++
	}
	// The one stored before the kill once, the one cut off twice, the last once.
	if fetches[1] != 2 || fetches[2] != 1 {
		t.Fatalf("fetches per artifact %v: want one of them fetched again (it was cut off), the others once", fetches)
	}
}
