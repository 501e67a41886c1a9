package proxy

import (
	"archive/zip"
	"bytes"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/chocolatey/feedserver"
)

// nugetFeed is a real HTTP server speaking NuGet v2 OData the way the
// Chocolatey community repository does: absolute links on its own base,
// Id in the properties, a download URL that redirects to a CDN path.
type nugetFeed struct {
	*httptest.Server
	mu    sync.Mutex        // guards pkgs, gets, times, refused
	pkgs  map[string][]byte // "id/version" -> nupkg bytes
	gets  map[string]int    // path -> requests
	order []string          // versions of "tool", newest first
	// limit, when set, is the community repository's rule: past limit
	// requests in a minute, 429 (and a ban of an hour).
	limit   int
	times   []time.Time // every request's arrival
	refused int         // 429s sent
}

func newNugetFeed(t *testing.T) *nugetFeed {
	f := &nugetFeed{pkgs: map[string][]byte{}, gets: map[string]int{}}
	f.pkgs["tool/2.0.0"] = randomBytes(80000, 21)
	f.pkgs["tool/1.0.0"] = randomBytes(60000, 22)
	f.order = []string{"2.0.0", "1.0.0"}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *nugetFeed) base() string { return f.URL + "/api/v2/" }

func (f *nugetFeed) count(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gets[path]
}

func (f *nugetFeed) entry(id, version string, root bool) string {
	f.mu.Lock()
	body := f.pkgs[id+"/"+version]
	f.mu.Unlock()
	sum := sha512.Sum512(body)
	ns := ""
	if root {
		ns = fmt.Sprintf(` xml:base="%s" xmlns="http://www.w3.org/2005/Atom" xmlns:d="http://schemas.microsoft.com/ado/2007/08/dataservices" xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata"`, f.base())
	}
	return fmt.Sprintf(`<entry%s>
    <id>%sPackages(Id='%s',Version='%s')</id>
    <title type="text">The Tool</title>
    <link rel="edit-media" title="V2FeedPackage" href="Packages(Id='%s',Version='%s')/$value" />
    <content type="application/zip" src="%spackage/%s/%s" />
    <m:properties>
      <d:Id>%s</d:Id>
      <d:Version>%s</d:Version>
      <d:PackageHash>%s</d:PackageHash>
      <d:PackageHashAlgorithm>SHA512</d:PackageHashAlgorithm>
      <d:PackageSize m:type="Edm.Int64">%d</d:PackageSize>
    </m:properties>
  </entry>`, ns, f.base(), id, version, id, version, f.base(), id, version, id, version,
		base64.StdEncoding.EncodeToString(sum[:]), len(body))
}

func (f *nugetFeed) page(title string, entries []string, next string) string {
	link := ""
	if next != "" {
		link = fmt.Sprintf(`<link rel="next" href="%s%s" />`, f.base(), strings.ReplaceAll(next, "&", "&amp;"))
	}
	return fmt.Sprintf(`<?xml version="1.0" encoding="utf-8"?>
<feed xml:base="%s" xmlns="http://www.w3.org/2005/Atom" xmlns:d="http://schemas.microsoft.com/ado/2007/08/dataservices" xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata">
  <id>%s%s</id>
  <title type="text">%s</title>
  <link rel="self" title="%s" href="%s" />
  %s
  %s
</feed>`, f.base(), f.base(), title, title, title, title, strings.Join(entries, "\n  "), link)
}

var (
	reByID     = regexp.MustCompile(`^/api/v2/Packages\(Id='([^']+)',Version='([^']+)'\)$`)
	rePackage  = regexp.MustCompile(`^/api/v2/package/([^/]+)/([^/]+)$`)
	reCDN      = regexp.MustCompile(`^/cdn/([^/]+?)\.([0-9][0-9.]*)\.nupkg$`)
	atomHeader = "application/atom+xml;type=feed;charset=utf-8"
)

// inWindow counts the requests that arrived in the minute before t.
func (f *nugetFeed) inWindow(t time.Time) int {
	n := 0
	for _, at := range f.times {
		if t.Sub(at) < time.Minute {
			n++
		}
	}
	return n
}

// maxPerMinute is the most requests that arrived in any minute.
func (f *nugetFeed) maxPerMinute() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	most := 0
	for _, t := range f.times {
		most = max(most, f.inWindow(t.Add(time.Nanosecond)))
	}
	return most
}

func (f *nugetFeed) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.gets[r.URL.Path]++
	now := time.Now()
	if f.limit > 0 && f.inWindow(now) >= f.limit {
		f.refused++
		f.times = append(f.times, now)
		f.mu.Unlock()
		w.Header().Set("Retry-After", "3600")
		http.Error(w, "rate limited", http.StatusTooManyRequests)
		return
	}
	f.times = append(f.times, now)
	f.mu.Unlock()
	q := r.URL.Query()
	switch p := r.URL.Path; {
	case p == "/api/v2/" || p == "/api/v2":
		w.Header().Set("Content-Type", "application/xml;charset=utf-8")
		fmt.Fprintf(w, `<?xml version="1.0" encoding="utf-8"?><service xml:base="%s" xmlns="http://www.w3.org/2007/app" xmlns:atom="http://www.w3.org/2005/Atom"><workspace><atom:title>Default</atom:title><collection href="Packages"><atom:title>Packages</atom:title></collection></workspace></service>`, f.base())
	case p == "/api/v2/$metadata":
		w.Header().Set("Content-Type", "application/xml;charset=utf-8")
		io.WriteString(w, `<?xml version="1.0" encoding="utf-8"?><edmx:Edmx Version="1.0" xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx"><edmx:DataServices/></edmx:Edmx>`)
	case p == "/api/v2/Packages()" && strings.Contains(q.Get("$filter"), "IsLatestVersion"):
		w.Header().Set("Content-Type", atomHeader)
		io.WriteString(w, f.page("Packages", []string{f.entry("tool", f.order[0], false)}, ""))
	case p == "/api/v2/FindPackagesById()":
		w.Header().Set("Content-Type", atomHeader)
		if q.Get("$skiptoken") == "" {
			io.WriteString(w, f.page("FindPackagesById", []string{f.entry("tool", "2.0.0", false)}, "FindPackagesById()?id='tool'&semVerLevel=2.0.0&$skiptoken='tool','2.0.0'"))
		} else {
			io.WriteString(w, f.page("FindPackagesById", []string{f.entry("tool", "1.0.0", false)}, ""))
		}
	case p == "/api/v2/Search()":
		w.Header().Set("Content-Type", atomHeader)
		io.WriteString(w, f.page("Search", []string{f.entry("tool", f.order[0], false)}, ""))
	case reByID.MatchString(p):
		m := reByID.FindStringSubmatch(p)
		if _, ok := f.pkgs[m[1]+"/"+m[2]]; !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/atom+xml;type=entry;charset=utf-8")
		io.WriteString(w, `<?xml version="1.0" encoding="utf-8"?>`+f.entry(m[1], m[2], true))
	case rePackage.MatchString(p):
		m := rePackage.FindStringSubmatch(p)
		http.Redirect(w, r, "/cdn/"+m[1]+"."+m[2]+".nupkg", http.StatusFound)
	case reCDN.MatchString(p):
		m := reCDN.FindStringSubmatch(p)
		f.mu.Lock()
		body, ok := f.pkgs[m[1]+"/"+m[2]]
		f.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/zip")
		w.Write(body)
	default:
		http.NotFound(w, r)
	}
}

// chocoClient makes exactly the requests choco 2.x makes for
// `choco install tool` (from its source: service document, $metadata, the
// latest-version filter, FindPackagesById, the package's entry, its content
// src) and `choco search tool` (Search()).
type chocoClient struct {
	t    *testing.T
	base string // the feed as choco is told: http://warren/chocolatey/api/v2/
	hc   *http.Client
}

func (c *chocoClient) get(u string) (*http.Response, []byte) {
	c.t.Helper()
	resp, b, err := c.tryGet(u)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp, b
}

func (c *chocoClient) tryGet(u string) (*http.Response, []byte, error) {
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("User-Agent", "Chocolatey Command Line/2.2.2")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("GET %s: %w", u, err)
	}
	return resp, b, nil
}

var reSrc = regexp.MustCompile(`<content type="application/zip" src="([^"]+)"`)
var reNext = regexp.MustCompile(`<link rel="next" href="([^"]+)"`)

// install runs choco's calls and returns the downloaded package.
func (c *chocoClient) install(upstream string) []byte {
	c.t.Helper()
	b, err := c.tryInstall(upstream)
	if err != nil {
		c.t.Fatal(err)
	}
	return b
}

// tryInstall is install for any goroutine: it reports what went wrong.
func (c *chocoClient) tryInstall(upstream string) ([]byte, error) {
	pages := []string{
		"",
		"$metadata",
		"Packages()?$filter=(tolower(Id)%20eq%20'tool')%20and%20IsLatestVersion&semVerLevel=2.0.0",
		"FindPackagesById()?id='tool'&semVerLevel=2.0.0",
		"Search()?$filter=IsLatestVersion&searchTerm='tool'&targetFramework=''&includePrerelease=false&$skip=0&$top=30&semVerLevel=2.0.0",
	}
	var findPage []byte
	for _, p := range pages {
		resp, body, err := c.tryGet(c.base + p)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != 200 {
			return nil, fmt.Errorf("%s: status %d: %s", p, resp.StatusCode, body)
		}
		if strings.Contains(string(body), upstream) {
			return nil, fmt.Errorf("%s: answer still names the upstream %s:\n%s", p, upstream, body)
		}
		if strings.HasPrefix(p, "FindPackagesById") {
			findPage = body
		}
	}
	// Paging: the next link points here and leads to the older version.
	next := reNext.FindSubmatch(findPage)
	if next == nil || !strings.HasPrefix(string(next[1]), c.base) {
		return nil, fmt.Errorf("next link not rewritten to the feed: %q", next)
	}
	_, page2, err := c.tryGet(strings.ReplaceAll(string(next[1]), "&amp;", "&"))
	if err != nil {
		return nil, err
	}
	if !strings.Contains(string(page2), "1.0.0") {
		return nil, fmt.Errorf("second page lacks 1.0.0:\n%s", page2)
	}
	_, entry, err := c.tryGet(c.base + "Packages(Id='tool',Version='2.0.0')")
	if err != nil {
		return nil, err
	}
	src := reSrc.FindSubmatch(entry)
	if src == nil || !strings.HasPrefix(string(src[1]), c.base) {
		return nil, fmt.Errorf("content src not rewritten to the feed: %q\n%s", src, entry)
	}
	resp, nupkg, err := c.tryGet(string(src[1]))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("download: status %d: %s", resp.StatusCode, nupkg)
	}
	return nupkg, nil
}

func newChocoHarness(t *testing.T, feed *nugetFeed) *harness {
	return newHarness(t, newUpstream(t, 10), func(c *testConfig, _ *cachestore.Config) {
		c.ChocolateyFeeds = map[string]string{"": feed.base(), "internal": feed.base()}
	})
}

func TestChocolateyFeed(t *testing.T) {
	feed := newNugetFeed(t)
	h := newChocoHarness(t, feed)
	for _, base := range []string{h.front.URL + "/chocolatey/api/v2/", h.front.URL + "/chocolatey/internal/api/v2/"} {
		c := &chocoClient{t: t, base: base, hc: &http.Client{}}
		for i := range 2 {
			got := c.install(feed.URL)
			if !bytes.Equal(got, feed.pkgs["tool/2.0.0"]) {
				t.Fatalf("%s run %d: downloaded %d bytes, not the package", base, i, len(got))
			}
		}
	}
	// Both feeds name the same bytes: one blob, one upstream download.
	if n := feed.count("/cdn/tool.2.0.0.nupkg"); n != 1 {
		t.Fatalf("upstream downloads of the nupkg: %d, want 1", n)
	}
}

func TestChocolateyDownloadWithoutMetadataFirst(t *testing.T) {
	feed := newNugetFeed(t)
	h := newChocoHarness(t, feed)
	c := &chocoClient{t: t, base: h.front.URL + "/chocolatey/api/v2/", hc: &http.Client{}}
	for range 2 {
		resp, body := c.get(c.base + "package/tool/1.0.0")
		if resp.StatusCode != 200 || !bytes.Equal(body, feed.pkgs["tool/1.0.0"]) {
			t.Fatalf("status %d, %d bytes", resp.StatusCode, len(body))
		}
	}
	if n := feed.count("/cdn/tool.1.0.0.nupkg"); n != 1 {
		t.Fatalf("upstream downloads %d, want 1", n)
	}
	if k, err := h.known(feedserver.PackageKey("", "tool", "1.0.0")); err != nil || k.Digest.Algo != "sha512" {
		t.Fatalf("hash not learnt: %+v %v", k, err)
	}
}

func TestChocolateyWrongHash(t *testing.T) {
	feed := newNugetFeed(t)
	h := newChocoHarness(t, feed)
	c := &chocoClient{t: t, base: h.front.URL + "/chocolatey/api/v2/", hc: &http.Client{}}
	c.get(c.base + "Packages(Id='tool',Version='2.0.0')") // learn the hash
	feed.mu.Lock()
	good := feed.pkgs["tool/2.0.0"]
	bad := bytes.Clone(good)
	bad[100] ^= 1
	feed.pkgs["tool/2.0.0"] = bad
	feed.mu.Unlock()
	req, _ := http.NewRequest(http.MethodGet, c.base+"package/tool/2.0.0", nil)
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		body, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if rerr == nil && resp.StatusCode == 200 {
			t.Fatalf("a package that fails its PackageHash was served whole (%d bytes)", len(body))
		}
	}
	sum := sha512.Sum512(bad)
	if _, err := h.store.Stat(cachestore.Digest{Algo: "sha512", Hex: fmt.Sprintf("%x", sum)}); err == nil {
		t.Fatal("bad package stored")
	}
}

func TestChocolateyBadRequests(t *testing.T) {
	feed := newNugetFeed(t)
	h := newChocoHarness(t, feed)
	tests := []struct {
		path string
		want int
	}{
		{"/chocolatey/api/v2/package/..%2f..%2fetc/1.0", http.StatusBadRequest},
		{"/chocolatey/api/v2/package/tool/1.0;rm", http.StatusBadRequest},
		{"/chocolatey/nosuchfeed/api/v2/", http.StatusNotFound},
		{"/chocolatey/api/v3/index.json", http.StatusNotFound},
		{"/chocolatey/api/v2/package/nosuch/1.0.0", http.StatusNotFound},
	}
	for _, tt := range tests {
		resp, err := http.Get(h.front.URL + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s: %d %q, want %d", tt.path, resp.StatusCode, body, tt.want)
		}
	}
	req, _ := http.NewRequest(http.MethodPut, h.front.URL+"/chocolatey/api/v2/package", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("PUT: %d", resp.StatusCode)
	}
}

// makeNupkg builds a real package: an OPC zip with a nuspec, as NuGet.exe
// (System.IO.Packaging) requires; more files are name, text pairs.
func makeNupkg(t testing.TB, id, version string, payload []byte, more ...string) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	files := []struct{ name, body string }{
		{"[Content_Types].xml", `<?xml version="1.0" encoding="utf-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml" /><Default Extension="nuspec" ContentType="application/octet" /><Default Extension="bin" ContentType="application/octet" /><Default Extension="ps1" ContentType="application/octet" /></Types>`},
		{"_rels/.rels", `<?xml version="1.0" encoding="utf-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Type="http://schemas.microsoft.com/packaging/2010/07/manifest" Target="/` + id + `.nuspec" Id="R0" /></Relationships>`},
		{id + ".nuspec", `<?xml version="1.0" encoding="utf-8"?><package xmlns="http://schemas.microsoft.com/packaging/2010/07/nuspec.xsd"><metadata><id>` + id + `</id><version>` + version + `</version><authors>warren</authors><description>warren test package</description></metadata></package>`},
		{"tools/payload.bin", string(payload)},
	}
	for i := 0; i+1 < len(more); i += 2 {
		files = append(files, struct{ name, body string }{more[i], more[i+1]})
	}
	for _, f := range files {
		w, err := zw.Create(f.name)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, f.body)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestNuGetExeThroughFeed drives Debian's real NuGet.exe 2.8.7 (on mono)
// against warren's feed: it resolves, downloads and unpacks the package,
// and a second install with a fresh output directory is a cache hit.
func TestNuGetExeThroughFeed(t *testing.T) {
	if _, err := exec.LookPath("nuget"); err != nil {
		if os.Getenv("WARREN_E2E") == "1" {
			t.Fatal("nuget not found; `make test` installs Debian's nuget package")
		}
		t.Skip("nuget (Debian's NuGet.exe on mono) not installed")
	}
	feed := newNugetFeed(t)
	payload := randomBytes(200000, 33)
	feed.mu.Lock()
	feed.pkgs["tool/2.0.0"] = makeNupkg(t, "tool", "2.0.0", payload)
	feed.mu.Unlock()
	h := newChocoHarness(t, feed)
	home := t.TempDir()
	for i := range 2 {
		out := filepath.Join(t.TempDir(), "packages")
		cmd := exec.CommandContext(t.Context(), "nuget", "install", "tool", "-Version", "2.0.0",
			"-Source", h.front.URL+"/chocolatey/api/v2/", "-OutputDirectory", out, "-NonInteractive", "-NoCache")
		cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"))
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("nuget install (run %d): %v\n%s", i+1, err, b)
		}
		got, err := os.ReadFile(filepath.Join(out, "tool.2.0.0", "tools", "payload.bin"))
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("run %d: unpacked payload: %d bytes, %v\nnuget said:\n%s", i+1, len(got), err, b)
		}
	}
	if n := feed.count("/cdn/tool.2.0.0.nupkg"); n != 1 {
		t.Fatalf("upstream downloads of the nupkg: %d, want 1", n)
	}
}

// lockedBuffer collects a logger's lines from every goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A feed whose URL carries credentials is logged without the password,
// whether upstream answers or not.
func TestChocolateyFeedCredentialsNotLogged(t *testing.T) {
	feed := newNugetFeed(t)
	var logs lockedBuffer
	withCreds := strings.Replace(feed.base(), "http://", "http://alice:s3cret-pass@", 1)
	h := newHarness(t, newUpstream(t, 10), func(c *testConfig, _ *cachestore.Config) {
		c.ChocolateyFeeds = map[string]string{"": withCreds, "gone": "http://alice:s3cret-pass@127.0.0.1:1/api/v2/"}
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	c := &chocoClient{t: t, base: h.front.URL + "/chocolatey/api/v2/", hc: &http.Client{}}
	if resp, _ := c.get(c.base + "Packages()?$filter=IsLatestVersion"); resp.StatusCode != 200 {
		t.Fatalf("feed call: %d", resp.StatusCode)
	}
	gone := &chocoClient{t: t, base: h.front.URL + "/chocolatey/gone/api/v2/", hc: &http.Client{}}
	resp, body := gone.get(gone.base + "Packages()")
	if resp.StatusCode != http.StatusBadGateway || strings.Contains(string(body), "s3cret") {
		t.Fatalf("a feed that is down: %d %s", resp.StatusCode, body)
	}
	h.settle()
	if l := logs.String(); strings.Contains(l, "s3cret-pass") || !strings.Contains(l, "alice:***@") {
		t.Fatalf("the log shows the feed's password, or not the feed:\n%s", l)
	}
}
