package proxy

import (
	"bytes"
	"crypto/sha512"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/chocolatey/feedserver"
)

// A site of 30 machines runs `choco install tool` at once through one
// warren, in front of a feed that, like the community repository, answers
// 429 past 20 requests a minute. Identical calls share one upstream answer
// and the feed's budget (15 a minute) holds the rest back: every client
// gets right answers and the package with its SHA512, upstream sees at
// most 20 requests in any minute and sends no 429. With upstream then gone
// and every kept answer past its TTL, a fresh client's install still works
// from the kept answers and the cached package.
func TestChocolateyFleet(t *testing.T) {
	feed := newNugetFeed(t)
	feed.limit = 20
	h := newHarness(t, newUpstream(t, 10), func(c *testConfig, _ *cachestore.Config) {
		c.ChocolateyFeeds = map[string]string{"": feed.base()}
		c.ChocolateyRate = &feedserver.Rate{N: 15, Per: time.Minute}
	})
	want := sha512.Sum512(feed.pkgs["tool/2.0.0"])
	const clients = 30
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &chocoClient{t: t, base: h.front.URL + "/chocolatey/api/v2/", hc: &http.Client{Timeout: time.Minute}}
			got, err := c.tryInstall(feed.URL)
			if err == nil && sha512.Sum512(got) != want {
				err = fmt.Errorf("client %d: the package's SHA512 does not match the feed's", i)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	feed.mu.Lock()
	total, refused := len(feed.times), feed.refused
	feed.mu.Unlock()
	t.Logf("%d clients: %d upstream requests, at most %d in a minute, %d refused with 429", clients, total, feed.maxPerMinute(), refused)
	if most := feed.maxPerMinute(); most > 20 || refused > 0 {
		t.Fatalf("upstream saw %d requests in a minute and answered %d with 429; want at most 20 and none", most, refused)
	}

	// Upstream goes away; a day and more later every kept answer is past
	// its TTL. A fresh client still installs what was seen before.
	feed.Close()
	h.clock.advance(48 * time.Hour)
	c := &chocoClient{t: t, base: h.front.URL + "/chocolatey/api/v2/", hc: &http.Client{}}
	got, err := c.tryInstall(feed.URL)
	if err != nil || sha512.Sum512(got) != want {
		t.Fatalf("offline install: %v (right package: %v)", err, err == nil && sha512.Sum512(got) == want)
	}
	if n := testutil.ToFloat64(h.feeds.StaleAnswers("default")); n == 0 {
		t.Fatal("no answer was counted stale while upstream was down")
	}
}

// A 429 from upstream is obeyed: the kept answer is served (marked stale),
// a call with nothing kept gets a 503 with Retry-After, and upstream is
// not asked again until its Retry-After has passed.
func TestChocolatey429Obeyed(t *testing.T) {
	feed := newNugetFeed(t)
	h := newHarness(t, newUpstream(t, 10), func(c *testConfig, _ *cachestore.Config) {
		c.ChocolateyFeeds = map[string]string{"": feed.base()}
	})
	base := h.front.URL + "/chocolatey/api/v2/"
	get := func(u string, want int) (*http.Response, []byte) {
		t.Helper()
		resp, b := directGet(t, u)
		if resp.StatusCode != want {
			t.Fatalf("GET %s: %d %q, want %d", u, resp.StatusCode, b, want)
		}
		return resp, b
	}
	get(base+"$metadata", 200) // kept
	feed.mu.Lock()
	feed.limit = 1 // every request from now on is refused
	feed.times = append(feed.times, time.Now())
	feed.mu.Unlock()
	h.clock.advance(48 * time.Hour)
	resp, body := get(base+"$metadata", 200)
	if !strings.Contains(resp.Header.Get("Warning"), "Stale") || !bytes.Contains(body, []byte("edmx")) {
		t.Fatalf("kept answer during a 429: Warning %q, body %q", resp.Header.Get("Warning"), body)
	}
	feed.mu.Lock()
	asked := len(feed.times)
	feed.mu.Unlock()
	resp, body = get(base+"Search()?searchTerm='x'", 503)
	if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra < 3000 || !strings.Contains(string(body), "429") && !strings.Contains(string(body), "budget") {
		t.Fatalf("nothing kept during a 429: Retry-After %q, body %q", resp.Header.Get("Retry-After"), body)
	}
	feed.mu.Lock()
	after := len(feed.times)
	feed.mu.Unlock()
	if after != asked {
		t.Fatalf("upstream was asked %d more times during its Retry-After", after-asked)
	}
	st := h.feeds.BudgetStats()
	if len(st) != 1 || st[0].TooMany != 1 || !st[0].BlockedUntil.After(time.Now().Add(30*time.Minute)) {
		t.Fatalf("budget figures after a 429: %+v", st)
	}
	// Shown on /metrics and on the page.
	_, metrics := get(h.front.URL+"/metrics", 200)
	for _, want := range []string{`warren_chocolatey_upstream_429_total{feed="default"} 1`, `warren_chocolatey_stale_answers_total{feed="default"} 1`,
		`warren_chocolatey_upstream_requests_total{feed="default",kind="metadata"} 2`} {
		if !bytes.Contains(metrics, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	_, page := get(h.front.URL+"/_warren/", 200)
	if !bytes.Contains(page, []byte("upstream refuses for")) {
		t.Errorf("the status page does not show the 429")
	}
}

// When the budget is spent, a call whose answer is kept gets it (stale);
// one with nothing kept gets a 503 with Retry-After. Upstream sees only
// what the budget allows.
func TestChocolateyBudgetSpent(t *testing.T) {
	feed := newNugetFeed(t)
	h := newHarness(t, newUpstream(t, 10), func(c *testConfig, _ *cachestore.Config) {
		c.ChocolateyFeeds = map[string]string{"": feed.base()}
		c.ChocolateyRate = &feedserver.Rate{N: 1, Per: time.Hour}
	})
	base := h.front.URL + "/chocolatey/api/v2/"
	get := func(u string) (*http.Response, []byte) { t.Helper(); return directGet(t, u) }
	if resp, _ := get(base + "$metadata"); resp.StatusCode != 200 {
		t.Fatalf("first call: %d", resp.StatusCode)
	}
	h.clock.advance(48 * time.Hour) // past its TTL: it would be asked again
	resp, body := get(base + "$metadata")
	if resp.StatusCode != 200 || resp.Header.Get("X-Cache") != "STALE from warren" || !bytes.Contains(body, []byte("edmx")) {
		t.Fatalf("kept call with the budget spent: %d %q %q", resp.StatusCode, resp.Header.Get("X-Cache"), body)
	}
	resp, body = get(base + "Search()?searchTerm='tool'")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !bytes.Contains(body, []byte("budget")) {
		t.Fatalf("new call with the budget spent: %d Retry-After %q %q", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	feed.mu.Lock()
	n := len(feed.times)
	feed.mu.Unlock()
	if n != 1 {
		t.Fatalf("upstream saw %d requests, want the budget's 1", n)
	}
}

// One kept answer serves clients that reach warren under different host
// names: each gets links to the host it used.
func TestChocolateyKeptAnswerPerHostName(t *testing.T) {
	feed := newNugetFeed(t)
	h := newHarness(t, newUpstream(t, 10), func(c *testConfig, _ *cachestore.Config) {
		c.ChocolateyFeeds = map[string]string{"": feed.base()}
	})
	port := h.front.URL[strings.LastIndex(h.front.URL, ":")+1:]
	for _, host := range []string{"127.0.0.1", "localhost"} {
		resp, body := directGet(t, "http://"+host+":"+port+"/chocolatey/api/v2/FindPackagesById()?id='tool'")
		want := `src="http://` + host + ":" + port + "/chocolatey/api/v2/package/tool/2.0.0"
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Fatalf("as %s: %d, links not to %s:\n%s", host, resp.StatusCode, want, body)
		}
	}
	if n := feed.count("/api/v2/FindPackagesById()"); n != 1 {
		t.Fatalf("upstream asked %d times, want once", n)
	}
}

// directGet asks warren itself (not through it as a proxy) for u.
func directGet(t *testing.T, u string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	return resp, b
}
