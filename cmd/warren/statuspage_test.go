package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestStatusPageInChromium loads the real daemon's status page in headless
// Chromium (Debian's package) after a miss and a hit, checks what it shows
// (the day's chart among it), and keeps a screenshot (WARREN_ARTIFACTS,
// else the test's temp dir).
func TestStatusPageInChromium(t *testing.T) {
	requireTools(t, "chromium")
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strings.Repeat("x", 50000)))
	}))
	defer up.Close()
	proxyURL, _, _ := startWarren(t, "--cache-dir", t.TempDir(), "--cache-max", "10MB")
	pu, _ := url.Parse(proxyURL)
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}}
	defer c.CloseIdleConnections()
	for range 2 { // a miss, then a hit
		resp, err := c.Get(up.URL + "/pool/x.deb")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	dir := os.Getenv("WARREN_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	os.MkdirAll(dir, 0o755)
	shot := filepath.Join(dir, "status-page.png")
	chrome := func(args ...string) string {
		base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync",
			"--user-data-dir=" + t.TempDir(), "--window-size=1100,900"}
		out, err := exec.Command("chromium", append(base, args...)...).Output()
		if err != nil {
			t.Fatalf("chromium %v: %v", args, err)
		}
		return string(out)
	}
	dom := chrome("--dump-dom", proxyURL+"/_warren/")
	// The day's chart: an SVG Chromium parsed (its DOM carries it), the
	// hour's bar of bytes served without the WAN, and the day's table.
	for _, want := range []string{`id="hit-ratio">50%`, "50 kB of 10 MB", "1 hits, 1 misses of 2 requests", "Transfers in progress",
		`<svg id="history"`, `class="saved debian"`, `<polyline class="wan"`, "<td>debian</td><td>100 kB</td><td>50 kB</td><td>50%</td>"} {
		if !strings.Contains(dom, want) {
			t.Errorf("status page in Chromium lacks %q:\n%s", want, dom)
		}
	}
	chrome("--screenshot="+shot, proxyURL+"/_warren/")
	if st, err := os.Stat(shot); err != nil || st.Size() < 1000 {
		t.Fatalf("no screenshot at %s: %v", shot, err)
	}
	t.Logf("status page screenshot: %s", shot)
}
