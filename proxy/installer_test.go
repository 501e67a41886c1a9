package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/chocolatey"
	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/hub"
)

// vendor is an installer's origin: the vendor's own server, which no
// repository metadata describes. It counts the GETs of each path.
type vendor struct {
	*httptest.Server
	mu    sync.Mutex // guards files, gets
	files map[string][]byte
	gets  map[string]int
}

func newVendor(t testing.TB) *vendor {
	v := &vendor{files: map[string][]byte{}, gets: map[string]int{}}
	v.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v.mu.Lock()
		body, ok := v.files[r.URL.Path]
		if ok {
			v.gets[r.URL.Path]++
		}
		v.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}))
	t.Cleanup(v.Close)
	return v
}

func (v *vendor) put(path string, body []byte) {
	v.mu.Lock()
	v.files[path] = body
	v.mu.Unlock()
}

func (v *vendor) count(path string) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.gets[path]
}

// splattedScript is an install script as AU writes them.
func splattedScript(url32, sum32, url64, sum64 string) string {
	return fmt.Sprintf(`$ErrorActionPreference = 'Stop'
$toolsDir   = "$(Split-Path -parent $MyInvocation.MyCommand.Definition)"

$packageArgs = @{
  packageName    = $env:ChocolateyPackageName
  unzipLocation  = $toolsDir
  fileType       = 'exe'
  url            = '%s'
  url64bit       = '%s'
  softwareName   = 'Tool*'
  checksum       = '%s'
  checksumType   = 'sha256'
  checksum64     = '%s'
  checksumType64 = 'sha256'
  silentArgs     = '/S'
  validExitCodes = @(0)
}

Install-ChocolateyPackage @packageArgs
`, url32, url64, strings.ToUpper(sum32), sum64)
}

// scriptOf reads a downloaded package's install script as choco runs it,
// and returns its downloads.
func scriptOf(t testing.TB, nupkg []byte) []chocolatey.Installer {
	t.Helper()
	pkg, err := chocolatey.ReadPackage(bytes.NewReader(nupkg), int64(len(nupkg)))
	if err != nil {
		t.Fatal(err)
	}
	sc, err := pkg.Installers()
	if err != nil {
		t.Fatal(err)
	}
	return sc.Installers
}

// Ten machines run `choco install tool` through one warren, choco's proxy
// set to it (`choco config set proxy`): the feed calls, the package, then
// the 20 MB installer its script names, from the vendor. The vendor serves
// it once; every machine gets it whole and verified; it is stored by its
// digest and counted under Chocolatey.
func TestChocolateyInstallerThroughOneNode(t *testing.T) {
	v := newVendor(t)
	installer := randomBytes(20<<20, 41)
	installer64 := randomBytes(1<<20, 42)
	v.put("/dl/tool-2.0.0-setup.exe", installer)
	v.put("/dl/tool-2.0.0-setup-x64.exe", installer64)
	feed := newNugetFeed(t)
	feed.mu.Lock()
	feed.pkgs["tool/2.0.0"] = makeNupkg(t, "tool", "2.0.0", randomBytes(3000, 43), "tools/chocolateyInstall.ps1",
		splattedScript(v.URL+"/dl/tool-2.0.0-setup.exe", sha256hex(installer), v.URL+"/dl/tool-2.0.0-setup-x64.exe", sha256hex(installer64)))
	feed.mu.Unlock()
	h := newChocoHarness(t, feed)

	machine := func() error {
		c := &chocoClient{t: t, base: h.front.URL + "/chocolatey/api/v2/", hc: &http.Client{}}
		nupkg, err := c.tryInstall(feed.URL)
		if err != nil {
			return err
		}
		for _, in := range scriptOf(t, nupkg) {
			if in.Arch != "32" {
				continue
			}
			resp, body, err := (&chocoClient{t: t, hc: h.client}).tryGet(in.URL)
			if err != nil {
				return err
			}
			if resp.StatusCode != 200 || !bytes.Equal(body, installer) {
				return fmt.Errorf("installer: status %d, %d bytes (want the %d the vendor serves)", resp.StatusCode, len(body), len(installer))
			}
		}
		return nil
	}
	// Five at once, then five more an hour later (a copy kept by URL
	// would have been asked of the vendor again by then).
	for round := range 2 {
		var wg sync.WaitGroup
		errs := make([]error, 5)
		for i := range errs {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = machine() }()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d, machine %d: %v", round, i, err)
			}
		}
		h.clock.advance(time.Hour)
	}
	h.settle()
	if n := v.count("/dl/tool-2.0.0-setup.exe"); n != 1 {
		t.Fatalf("the vendor served the installer %d times for ten machines, want once", n)
	}
	d := cachestore.Digest{Algo: "sha256", Hex: sha256hex(installer)}
	if _, err := h.store.Stat(d); err != nil {
		t.Fatalf("the installer is not stored by its digest: %v", err)
	}
	// The installer is Chocolatey's on the page: its bytes and its fact.
	if known := h.door.KnownArtifacts()[door.EcoChocolatey]; known < 3 { // the package's hash, two installers
		t.Fatalf("learnt Chocolatey facts: %d, want the package's and its two installers'", known)
	}
	_, metrics, err := (&chocoClient{t: t, hc: &http.Client{}}).tryGet(h.front.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`warren_ecosystem_served_bytes_total\{ecosystem="chocolatey"\} (\S+)`).FindSubmatch(metrics)
	served, _ := strconv.ParseFloat(string(m[1]), 64)
	if m == nil || served < float64(10*len(installer)) {
		t.Fatalf("served %.0f bytes under Chocolatey, want at least the ten installers' %d", served, 10*len(installer))
	}
	// Once confirmed by its origin, it is a hash-known artifact: a fresh
	// client's request is a hit by digest, the vendor not asked.
	resp, body := h.mustGet(v.URL+"/dl/tool-2.0.0-setup.exe", 200)
	if !bytes.Equal(body, installer) || !strings.HasPrefix(resp.Header.Get("X-Cache"), "HIT") {
		t.Fatalf("a later request: %q, %d bytes", resp.Header.Get("X-Cache"), len(body))
	}
	if n := v.count("/dl/tool-2.0.0-setup.exe"); n != 1 {
		t.Fatalf("the vendor served it %d times", n)
	}
}

// An installer whose bytes do not match its script's checksum is refused
// as any mismatch: no client gets it whole, nothing is stored, and the
// next request is refused again (not served from a copy kept by URL).
func TestChocolateyInstallerWrongChecksumRefused(t *testing.T) {
	v := newVendor(t)
	installer := randomBytes(2<<20, 51)
	tampered := bytes.Clone(installer)
	tampered[len(tampered)/2] ^= 1
	v.put("/dl/setup.exe", tampered)
	feed := newNugetFeed(t)
	feed.mu.Lock()
	feed.pkgs["tool/2.0.0"] = makeNupkg(t, "tool", "2.0.0", randomBytes(3000, 52), "tools/chocolateyInstall.ps1",
		splattedScript(v.URL+"/dl/setup.exe", sha256hex(installer), v.URL+"/dl/setup.exe", sha256hex(installer)))
	feed.mu.Unlock()
	h := newChocoHarness(t, feed)
	c := &chocoClient{t: t, base: h.front.URL + "/chocolatey/api/v2/", hc: &http.Client{}}
	c.install(feed.URL)
	for range 2 {
		resp, err := h.client.Get(v.URL + "/dl/setup.exe")
		if err == nil {
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil && resp.StatusCode == 200 && len(body) == len(tampered) {
				t.Fatal("an installer that fails its checksum was served whole")
			}
		}
		h.settle()
	}
	if n := h.door.Stats().Mismatches.Load(); n < 1 {
		t.Fatal("no mismatch counted")
	}
	if _, err := h.store.Stat(cachestore.Digest{Algo: "sha256", Hex: sha256hex(tampered)}); err == nil {
		t.Fatal("the tampered installer was stored")
	}
	key, _ := door.CanonicalString(v.URL + "/dl/setup.exe")
	if _, err := h.store.Cached(key); err == nil {
		t.Fatal("the tampered installer is kept by its URL")
	}
}

// A package cannot make warren serve, for a vendor's URL, bytes that URL
// never served: a hostile package names another vendor's URL with the
// digest of bytes the site already holds (its own file). Until the URL's
// own origin delivers those bytes, warren asks the origin, which sends its
// real file: refused against the lie, and the held bytes never served.
func TestChocolateyInstallerNeedsItsOriginFirst(t *testing.T) {
	v := newVendor(t)
	real := randomBytes(1<<20, 61)
	evil := randomBytes(1<<20, 62)
	v.put("/dl/real-setup.exe", real)
	v.put("/evil/payload.exe", evil)
	feed := newNugetFeed(t)
	feed.mu.Lock()
	// The hostile package: its own file, then the vendor's URL at its
	// own file's digest.
	feed.pkgs["tool/2.0.0"] = makeNupkg(t, "tool", "2.0.0", randomBytes(3000, 63), "tools/chocolateyInstall.ps1",
		splattedScript(v.URL+"/evil/payload.exe", sha256hex(evil), v.URL+"/dl/real-setup.exe", sha256hex(evil)))
	feed.mu.Unlock()
	h := newChocoHarness(t, feed)
	c := &chocoClient{t: t, base: h.front.URL + "/chocolatey/api/v2/", hc: &http.Client{}}
	c.install(feed.URL)
	h.mustGet(v.URL+"/evil/payload.exe", 200) // the site now holds the hostile bytes
	resp, err := h.client.Get(v.URL + "/dl/real-setup.exe")
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if bytes.Equal(body, evil) {
			t.Fatal("the vendor's URL was answered with another URL's bytes a package named it with")
		}
	}
	if n := v.count("/dl/real-setup.exe"); n != 1 {
		t.Fatalf("the vendor's origin was asked %d times, want once: its first answer decides", n)
	}
}

// Two nodes behind one hub, an hour apart: the hub learns the package its
// nodes fetch through it by its own feed's hash, so the installer is a
// hash-known artifact at the hub too: the vendor serves it once for the
// site, and the hub holds it by its digest.
func TestChocolateyInstallerThroughAHub(t *testing.T) {
	v := newVendor(t)
	installer := randomBytes(2<<20, 44)
	v.put("/dl/setup.exe", installer)
	feed := newNugetFeed(t)
	feed.mu.Lock()
	feed.pkgs["tool/2.0.0"] = makeNupkg(t, "tool", "2.0.0", randomBytes(3000, 45), "tools/chocolateyInstall.ps1",
		splattedScript(v.URL+"/dl/setup.exe", sha256hex(installer), v.URL+"/dl/setup.exe", sha256hex(installer)))
	feed.mu.Unlock()
	withFeed := func(c *testConfig, _ *cachestore.Config) { c.ChocolateyFeeds = map[string]string{"": feed.base()} }
	hb := newHarness(t, newUpstream(t, 10), asHub(hub.Fetch, 5), withFeed)
	for i := range 2 {
		n := newHarness(t, newUpstream(t, 10), usingHubs(t, false, "", hb.front.URL), withFeed)
		c := &chocoClient{t: t, base: n.front.URL + "/chocolatey/api/v2/", hc: &http.Client{}}
		nupkg := c.install(feed.URL)
		for _, in := range scriptOf(t, nupkg) {
			if _, body := n.mustGet(in.URL, 200); !bytes.Equal(body, installer) {
				t.Fatalf("node %d: wrong installer", i)
			}
		}
		hb.clock.advance(time.Hour) // a copy kept by URL would be asked of the vendor again
	}
	if n := v.count("/dl/setup.exe"); n != 1 {
		t.Fatalf("the vendor served the installer %d times for the site, want once", n)
	}
	if _, err := hb.store.Stat(cachestore.Digest{Algo: "sha256", Hex: sha256hex(installer)}); err != nil {
		t.Fatalf("the hub does not hold the installer by its digest: %v", err)
	}
}
