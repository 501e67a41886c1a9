package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dustin/go-humanize"
)

// A site of a hub and two nodes after three clients' runs (an update and
// one package each): the site's WAN bytes appear once, at the hub (the
// nodes count what came from the hub as from the hub, never as saved nor
// as upstream); the hub's page, `warren status` and /metrics say the
// site's saving (served against the WAN), list the nodes and how to pass
// the token; and the hub's chart of the day survives a restart. A
// screenshot of the hub's page is kept (WARREN_ARTIFACTS, else the test's
// temp dir) when chromium is there.
func TestSiteFiguresOnce(t *testing.T) {
	// The origin: a small apt repository, counting every byte it sends.
	r := rand.New(rand.NewPCG(3, 3))
	deb := make([]byte, 600<<10)
	for i := range deb {
		deb[i] = byte(r.UintN(256))
	}
	sum := sha256.Sum256(deb)
	const debPath = "/debian/pool/main/s/site/site_1_all.deb"
	pkgs := fmt.Sprintf("Package: site\nVersion: 1\nArchitecture: all\nFilename: %s\nSize: %d\nSHA256: %s\n\n", strings.TrimPrefix(debPath, "/debian/"), len(deb), hex.EncodeToString(sum[:]))
	psum := sha256.Sum256([]byte(pkgs))
	rel := fmt.Sprintf("Suite: stable\nCodename: stable\nSHA256:\n %s %d main/binary-amd64/Packages\n", hex.EncodeToString(psum[:]), len(pkgs))
	files := map[string][]byte{"/debian/dists/stable/Release": []byte(rel), "/debian/dists/stable/main/binary-amd64/Packages": []byte(pkgs), debPath: deb}
	var wan atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		n, _ := w.Write(b)
		wan.Add(int64(n))
	}))
	defer up.Close()

	const token = "site-token-0123456789abcdef"
	base := t.TempDir()
	hubAddr := freeLoopbackPort(t)
	hubDir := filepath.Join(base, "hub")
	hubURL, hubCmd, _ := startWarrenAt(t, hubAddr, "--role", "hub", "--hub-mode", "fetch", "--cache-dir", hubDir, "--hub-tokens", token)
	a1, a2 := freeLoopbackPort(t), freeLoopbackPort(t)
	nodeArgs := func(dir, peer string) []string {
		return []string{"--cache-dir", dir, "--hub", hubURL, "--hub-token", token, "--hub-only", "--discovery", "static", "--peer", peer, "--log-level", "debug"}
	}
	n1Dir, n2Dir := filepath.Join(base, "n1"), filepath.Join(base, "n2")
	n1, _, n1Logs := startWarrenAt(t, a1, nodeArgs(n1Dir, a2)...)
	n2, _, n2Logs := startWarrenAt(t, a2, nodeArgs(n2Dir, a1)...)
	for _, n := range []string{n1, n2} {
		waitUntil(t, "the nodes to know each other", 20*time.Second, func() bool { return figure(t, n, "peers") == 1 })
	}
	// Three clients: an update and the package each, the first two on
	// one node each, the third on the second node again (a hit).
	get := func(node, path string) {
		t.Helper()
		resp, err := proxyClient(t, node).Get(up.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || string(b) != string(files[path]) {
			t.Fatalf("%s via %s: %s, %d bytes", path, node, resp.Status, len(b))
		}
	}
	for i, node := range []string{n1, n2, n2} {
		for _, p := range []string{"/debian/dists/stable/Release", "/debian/dists/stable/main/binary-amd64/Packages", debPath} {
			get(node, p)
		}
		if i == 0 {
			n1Logs.waitFor(t, "site_1_all.deb digest=", 10*time.Second) // stored: the second node finds it on the LAN
		}
	}
	n2Logs.waitFor(t, "site_1_all.deb digest=", 10*time.Second)

	// The site's WAN bytes, once: the hub's origin bytes are what the
	// origin sent; the nodes took nothing from the origin.
	hubWAN, originSent := int64(figure(t, hubURL, "bytes_upstream")), wan.Load()
	if hubWAN != originSent || int64(figure(t, hubURL, "site_bytes_wan")) != originSent {
		t.Fatalf("the hub counts %d bytes over the WAN (site_bytes_wan %v), the origin sent %d", hubWAN, figure(t, hubURL, "site_bytes_wan"), originSent)
	}
	for _, n := range []string{n1, n2} {
		if up, saved, fromHub := figure(t, n, "bytes_upstream"), figure(t, n, "bytes_saved"), figure(t, n, "bytes_hubs"); up != 0 || saved >= fromHub+figure(t, n, "bytes_cache")+figure(t, n, "bytes_peers")+1 || saved != figure(t, n, "bytes_cache")+figure(t, n, "bytes_peers") {
			t.Fatalf("node %s: %v bytes from the origin, %v saved, %v from the hub: want none from the origin, saved = store + peers", n, up, saved, fromHub)
		}
		m := metrics(t, n)
		if !strings.Contains(m, "warren_upstream_fetches_total 0\n") || regexp.MustCompile(`warren_hub_fetches_total [1-9]`).FindString(m) == "" {
			t.Fatalf("node %s: fetches from the hub counted as upstream:\n%s", n, grepLines(m, "fetches_total"))
		}
	}
	// Summed over the site, /metrics says the WAN bytes once.
	var site float64
	for _, u := range []string{hubURL, n1, n2} {
		site += metricValue(t, metrics(t, u), `warren_bytes_total{source="upstream"}`)
	}
	if int64(site) != originSent {
		t.Fatalf(`warren_bytes_total{source="upstream"} summed over the site is %.0f, the origin sent %d`, site, originSent)
	}
	// The hub's page: the site's saving, its nodes, how to pass the token;
	// no LAN peers or uploads (a hub takes no part in peering).
	page := fetchPage(t, hubURL)
	served := int64(figure(t, hubURL, "bytes_served"))
	for _, want := range []string{`id="site-saving"`, humanize.Bytes(uint64(served)) + " served to nodes and clients against " + humanize.Bytes(uint64(originSent)) + " over the WAN",
		`<table id="hub-clients">`, nodeIDOf(t, n1Dir), nodeIDOf(t, n2Dir), "http://warren:TOKEN@" + strings.TrimPrefix(hubURL, "http://"), "proxy_password=TOKEN"} {
		if !strings.Contains(page, want) {
			t.Errorf("the hub's page lacks %q", want)
		}
	}
	for _, absent := range []string{"uploads to peers", "<h2>Peers</h2>", token} {
		if strings.Contains(page, absent) {
			t.Errorf("the hub's page shows %q", absent)
		}
	}
	// `warren status` on the hub: its mode, refusals and the site's saving.
	status, err := runApp(t, "status", "--cache-dir", hubDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"hub_mode", "fetch", "hub_refused_token", "site_bytes_served", "site_bytes_wan", "site_saved_percent"} {
		if !strings.Contains(status, want) {
			t.Errorf("warren status on the hub lacks %q:\n%s", want, status)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// The day's chart survives the hub's restart.
	shot := screenshotter(t)
	shot(hubURL, "hub-page.png")
	day := dayTable(t, page)
	hubCmd.Process.Signal(os.Interrupt)
	hubCmd.Wait()
	hubURL2, _, _ := startWarrenAt(t, hubAddr, "--role", "hub", "--hub-mode", "fetch", "--cache-dir", hubDir, "--hub-tokens", token)
	page = fetchPage(t, hubURL2)
	if got := dayTable(t, page); got != day || !strings.Contains(got, "<td>debian</td>") {
		t.Fatalf("the day's table after a restart:\n%s\nbefore:\n%s", got, day)
	}
	if figure(t, hubURL2, "bytes_served") != 0 {
		t.Fatal("the counters since start were restored: they begin again")
	}
	shot(hubURL2, "hub-page-restarted.png")
}

// screenshotter returns what keeps a screenshot of a warren's page under
// name (WARREN_ARTIFACTS, else the test's temp dir), with headless
// Chromium when it is there.
func screenshotter(t *testing.T) func(u, name string) {
	if _, err := exec.LookPath("chromium"); err != nil {
		return func(string, string) {}
	}
	dir := os.Getenv("WARREN_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	os.MkdirAll(dir, 0o755)
	return func(u, name string) {
		t.Helper()
		shot := filepath.Join(dir, name)
		out, err := exec.Command("chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
			"--disable-component-update", "--disable-sync", "--user-data-dir="+t.TempDir(), "--window-size=1100,1900", "--screenshot="+shot, u+"/_warren/").CombinedOutput()
		if st, serr := os.Stat(shot); err != nil || serr != nil || st.Size() < 1000 {
			t.Fatalf("no screenshot of %s at %s: %v %s", u, shot, err, out)
		}
		t.Logf("screenshot of %s: %s", u, shot)
	}
}

// figure is one number of a warren's /_warren/stats.
func figure(t *testing.T, u, name string) float64 {
	t.Helper()
	resp, err := http.Get(u + "/_warren/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	v, _ := m[name].(float64)
	return v
}

func metrics(t *testing.T, u string) string { return fetch(t, u+"/metrics") }

func fetchPage(t *testing.T, u string) string { return fetch(t, u+"/_warren/") }

func fetch(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// metricValue is the value of the line that begins with series.
func metricValue(t *testing.T, m, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(m, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics", series)
	return 0
}

// dayTable is the page's table of the day's bytes by ecosystem.
func dayTable(t *testing.T, page string) string {
	t.Helper()
	m := regexp.MustCompile(`(?s)<table id="saving">.*?</table>`).FindString(page)
	if m == "" {
		t.Fatalf("no day's table on the page:\n%s", page)
	}
	return m
}

// nodeIDOf is the id a node keeps in its cache directory.
func nodeIDOf(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "node-id"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
