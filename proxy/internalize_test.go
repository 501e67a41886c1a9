package proxy

import (
	"bytes"
	"context"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/chocolatey"
	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/hub"
	"github.com/warren-cache/warren/hub/preload"
	"github.com/warren-cache/warren/hub/replicate"
)

// internalizingHub is a hub whose feeds serve packages rewritten to
// download their installers from it; the vendor is an https server
// (warren trusts its CA), which a client reaches through nothing.
func internalizingHub(t *testing.T, feed *nugetFeed, vendorCA *x509.Certificate) *harness {
	return newHarness(t, newUpstream(t, 10), asHub(hub.FetchAndPreload, 5), func(c *testConfig, _ *cachestore.Config) {
		c.ChocolateyFeeds = map[string]string{"": feed.base()}
		c.ChocolateyInternalize = internalizeSelf
		c.UpstreamRoots = x509.NewCertPool()
		c.UpstreamRoots.AddCert(vendorCA)
	})
}

// httpsVendor is an installer's vendor on https.
func httpsVendor(t *testing.T, files map[string][]byte) (*httptest.Server, *vendor) {
	v := &vendor{files: files, gets: map[string]int{}}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv, v
}

var (
	reEntryHash = regexp.MustCompile(`<d:PackageHash>([^<]+)</d:PackageHash>`)
	reEntrySize = regexp.MustCompile(`<d:PackageSize m:type="Edm.Int64">(\d+)</d:PackageSize>`)
)

// checkEntries downloads each entry's package as its answer links it and
// checks it against the answer's PackageHash and PackageSize: what a
// client gets is what the answer says, whichever form it is.
func checkEntries(t *testing.T, c *chocoClient, answer []byte) (downloads map[string][]byte) {
	t.Helper()
	feed, err := chocolatey.ParseFeed(bytes.NewReader(answer))
	if err != nil {
		t.Fatal(err)
	}
	downloads = map[string][]byte{}
	for _, e := range feed.Entries {
		resp, body := c.get(e.ContentSrc)
		if resp.StatusCode != 200 {
			t.Fatalf("%s %s: download %s: %d", e.ID, e.Version, e.ContentSrc, resp.StatusCode)
		}
		sum := sha512.Sum512(body)
		if e.HashAlgo != "sha512" || e.HashHex != hexOf(sum[:]) {
			t.Fatalf("%s %s: the answer says %s:%s, the download from %s is sha512:%s", e.ID, e.Version, e.HashAlgo, e.HashHex, e.ContentSrc, hexOf(sum[:]))
		}
		if e.Size >= 0 && e.Size != int64(len(body)) {
			t.Fatalf("%s %s: the answer says %d bytes, the download is %d", e.ID, e.Version, e.Size, len(body))
		}
		downloads[e.ContentSrc] = body
	}
	return downloads
}

func hexOf(b []byte) string { return hex.EncodeToString(b) }

// A hub with chocolatey.internalize: choco's calls get the rewritten
// package, its hash and size in every answer that links it, its script
// downloading the installer from the hub (an https vendor, no
// interception) with the same checksum; the hub takes the installer from
// the vendor once. The original stays available at /chocolatey-original/.
func TestInternalizedPackage(t *testing.T) {
	installer := randomBytes(3<<20, 81)
	vsrv, v := httpsVendor(t, map[string][]byte{"/releases/tool-2.0.0-setup.exe": installer})
	feed := newNugetFeed(t)
	script := splattedScript(vsrv.URL+"/releases/tool-2.0.0-setup.exe", sha256hex(installer), vsrv.URL+"/releases/tool-2.0.0-setup.exe", sha256hex(installer))
	original := makeNupkg(t, "tool", "2.0.0", randomBytes(2000, 82), "tools/chocolateyInstall.ps1", script)
	feed.mu.Lock()
	feed.pkgs["tool/2.0.0"] = original
	feed.mu.Unlock()
	h := internalizingHub(t, feed, vsrv.Certificate())
	c := &chocoClient{t: t, base: h.front.URL + "/chocolatey/api/v2/", hc: &http.Client{}}

	// choco's calls: the latest version's answer, then its entry.
	_, latest := c.get(c.base + "Packages()?$filter=(tolower(Id)%20eq%20'tool')%20and%20IsLatestVersion&semVerLevel=2.0.0")
	_, entry := c.get(c.base + "Packages(Id='tool',Version='2.0.0')")
	got := checkEntries(t, c, entry)
	checkEntries(t, c, latest)
	pkg := got[c.base+"package/tool/2.0.0"]
	if pkg == nil || bytes.Equal(pkg, original) {
		t.Fatalf("the hub's feed served the original package (%d bytes), not a rewritten one", len(pkg))
	}
	ins := scriptOf(t, pkg)
	if len(ins) == 0 {
		t.Fatal("the rewritten package names no download")
	}
	for _, in := range ins {
		if !strings.HasPrefix(in.URL, h.front.URL+"/_warren/installers/"+sha256hex(installer)+"/") || in.Checksum != sha256hex(installer) || in.ChecksumType != "sha256" {
			t.Fatalf("the rewritten script downloads %s (%s %s), want the hub's copy with the same checksum", in.URL, in.ChecksumType, in.Checksum)
		}
	}
	// The installer from the hub, as the script downloads it (no proxy).
	for range 3 {
		resp, body := c.get(ins[0].URL)
		if resp.StatusCode != 200 || !bytes.Equal(body, installer) {
			t.Fatalf("the installer from the hub: %d, %d bytes", resp.StatusCode, len(body))
		}
	}
	if n := v.count("/releases/tool-2.0.0-setup.exe"); n != 1 {
		t.Fatalf("the vendor served the installer %d times, want once", n)
	}
	// Every version's answer is right for every entry: the rewritten
	// one's hash, or the original's link and hash.
	_, versions := c.get(c.base + "FindPackagesById()?id='tool'&semVerLevel=2.0.0")
	for src := range checkEntries(t, c, versions) {
		if !strings.HasPrefix(src, c.base) && !strings.HasPrefix(src, h.front.URL+"/chocolatey-original/api/v2/") {
			t.Fatalf("an entry links %s", src)
		}
	}
	// The originals, for the machines that must not get rewritten ones.
	orig := &chocoClient{t: t, base: h.front.URL + "/chocolatey-original/api/v2/", hc: &http.Client{}}
	_, oentry := orig.get(orig.base + "Packages(Id='tool',Version='2.0.0')")
	if body := checkEntries(t, orig, oentry)[orig.base+"package/tool/2.0.0"]; !bytes.Equal(body, original) {
		t.Fatal("/chocolatey-original/ did not serve the original package")
	}
	// Not a checksum a package named: refused.
	if resp, _ := c.get(h.front.URL + "/_warren/installers/" + strings.Repeat("ab", 32) + "/x.exe"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("an installer no package names: %d", resp.StatusCode)
	}
}

// Debian's real NuGet.exe installs the internalized package from the hub:
// the package it unpacks downloads its installer from the hub, and the
// .nupkg it keeps hashes to what the hub's feed answered.
func TestNuGetExeInternalized(t *testing.T) {
	if _, err := exec.LookPath("nuget"); err != nil {
		if os.Getenv("WARREN_E2E") == "1" {
			t.Fatal("nuget not found; `make test` installs Debian's nuget package")
		}
		t.Skip("nuget (Debian's NuGet.exe on mono) not installed")
	}
	installer := randomBytes(1<<20, 91)
	vsrv, _ := httpsVendor(t, map[string][]byte{"/dl/tool-setup.exe": installer})
	feed := newNugetFeed(t)
	feed.mu.Lock()
	feed.pkgs["tool/2.0.0"] = makeNupkg(t, "tool", "2.0.0", randomBytes(5000, 92), "tools/chocolateyInstall.ps1",
		splattedScript(vsrv.URL+"/dl/tool-setup.exe", sha256hex(installer), vsrv.URL+"/dl/tool-setup.exe", sha256hex(installer)))
	feed.mu.Unlock()
	h := internalizingHub(t, feed, vsrv.Certificate())
	out := filepath.Join(t.TempDir(), "packages")
	home := t.TempDir()
	cmd := exec.CommandContext(t.Context(), "nuget", "install", "tool", "-Version", "2.0.0",
		"-Source", h.front.URL+"/chocolatey/api/v2/", "-OutputDirectory", out, "-NonInteractive", "-NoCache")
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nuget install: %v\n%s", err, b)
	}
	script, err := os.ReadFile(filepath.Join(out, "tool.2.0.0", "tools", "chocolateyInstall.ps1"))
	if err != nil {
		t.Fatal(err)
	}
	want := h.front.URL + "/_warren/installers/" + sha256hex(installer) + "/" + door.InstallerHint(vsrv.URL+"/dl/tool-setup.exe") + "/tool-setup.exe"
	if !strings.Contains(string(script), "'"+want+"'") || !strings.Contains(strings.ToLower(string(script)), sha256hex(installer)) {
		t.Fatalf("the installed script does not download from the hub (%s) with the same checksum:\n%s", want, script)
	}
	nupkg, err := os.ReadFile(filepath.Join(out, "tool.2.0.0", "tool.2.0.0.nupkg"))
	if err != nil {
		t.Fatalf("NuGet.exe kept no .nupkg: %v", err)
	}
	c := &chocoClient{t: t, base: h.front.URL + "/chocolatey/api/v2/", hc: &http.Client{}}
	_, entry := c.get(c.base + "Packages(Id='tool',Version='2.0.0')")
	m := reEntryHash.FindSubmatch(entry)
	sum := sha512.Sum512(nupkg)
	if m == nil || string(m[1]) != base64.StdEncoding.EncodeToString(sum[:]) {
		t.Fatalf("the installed package's SHA512 is %s, the feed answered %q", base64.StdEncoding.EncodeToString(sum[:]), m)
	}
	if s := reEntrySize.FindSubmatch(entry); s == nil || string(s[1]) != strconv.Itoa(len(nupkg)) {
		t.Fatalf("the feed answered size %q, the package is %d bytes", s, len(nupkg))
	}
	// And the installer the script names is served by the hub.
	if resp, body := c.get(want); resp.StatusCode != 200 || !bytes.Equal(body, installer) {
		t.Fatalf("the installer from the hub: %d, %d bytes", resp.StatusCode, len(body))
	}
}

// An internalizing hub's preload run readies the packages it preloads
// (their rewritten form, their installers from the vendor) in its window,
// and a hub that pulls them by replication does the same: a client then
// takes everything from the hub, the vendor not asked again.
func TestInternalizePreloadAndReplication(t *testing.T) {
	installer := randomBytes(1<<20, 95)
	vsrv, v := httpsVendor(t, map[string][]byte{"/dl/tool-setup.exe": installer})
	feed := newNugetFeed(t)
	feed.mu.Lock()
	feed.pkgs["tool/2.0.0"] = makeNupkg(t, "tool", "2.0.0", randomBytes(5000, 96), "tools/chocolateyInstall.ps1",
		splattedScript(vsrv.URL+"/dl/tool-setup.exe", sha256hex(installer), vsrv.URL+"/dl/tool-setup.exe", sha256hex(installer)))
	feed.mu.Unlock()
	main := newHarness(t, newUpstream(t, 10), asSyncHub("main", hub.FetchAndPreload, hub.SyncToken{Name: "all", Token: allToken}),
		func(c *testConfig, _ *cachestore.Config) {
			c.ChocolateyFeeds = map[string]string{"": feed.base()}
			c.ChocolateyInternalize = internalizeSelf
			c.UpstreamRoots = x509.NewCertPool()
			c.UpstreamRoots.AddCert(vsrv.Certificate())
		})
	run, err := main.preload(t.Context(), preload.Options{List: hub.PreloadList{Chocolatey: []hub.ChocolateyPreload{{Feed: feed.base(), IDs: []string{"tool"}}}}})
	if err != nil || run.Fetched != 1 || len(run.Failures) > 0 {
		t.Fatalf("preload: %+v %v", run, err)
	}
	if n := v.count("/dl/tool-setup.exe"); n != 1 {
		t.Fatalf("the preload run took the installer from the vendor %d times, want once", n)
	}
	// A long answer (no rewrite as it is served) already links the
	// rewritten package: the run made it.
	c := &chocoClient{t: t, base: main.front.URL + "/chocolatey/api/v2/", hc: &http.Client{}}
	_, versions := c.get(c.base + "FindPackagesById()?id='tool'&semVerLevel=2.0.0")
	pkg := checkEntries(t, c, versions)[c.base+"package/tool/2.0.0"]
	if pkg == nil || bytes.Equal(pkg, feed.pkgs["tool/2.0.0"]) {
		t.Fatal("the preloaded package is not served rewritten")
	}
	ins := scriptOf(t, pkg)
	if resp, body := c.get(ins[0].URL); resp.StatusCode != 200 || !bytes.Equal(body, installer) {
		t.Fatalf("the installer from the hub: %d", resp.StatusCode)
	}

	// A second hub pulls the package by replication: it readies it too.
	sec := newHarness(t, newUpstream(t, 10), asSyncHub("secondary", hub.FetchAndPreload), func(c *testConfig, _ *cachestore.Config) {
		c.ChocolateyFeeds = map[string]string{"": feed.base()}
		c.ChocolateyInternalize = internalizeSelf
		c.UpstreamRoots = x509.NewCertPool()
		c.UpstreamRoots.AddCert(vsrv.Certificate())
	})
	client := hub.FeedClient{From: hub.ReplicateFrom{Name: "main", URL: main.front.URL, Token: allToken}, Self: sec.role.ID(), HTTP: &http.Client{}}
	r := sec.puller().Run(t.Context(), replicate.Options{Client: client, Package: func(ctx context.Context, d cachestore.Digest) error {
		return sec.feeds.PrepareHeld(ctx, d, door.Asker{UA: "warren-replicate"})
	}})
	if !r.OK() {
		t.Fatalf("replication: %+v", r)
	}
	if !sec.door.Holds(cachestore.Digest{Algo: "sha256", Hex: sha256hex(installer)}) {
		t.Fatal("the pulling hub does not hold the installer of the package it pulled")
	}
	if n := v.count("/dl/tool-setup.exe"); n != 1 {
		t.Fatalf("the vendor served %d times, want once: the pulling hub takes the installer (and its origin's word) from the source hub", n)
	}
	sc := &chocoClient{t: t, base: sec.front.URL + "/chocolatey/api/v2/", hc: &http.Client{}}
	_, entry := sc.get(sc.base + "Packages(Id='tool',Version='2.0.0')")
	spkg := checkEntries(t, sc, entry)[sc.base+"package/tool/2.0.0"]
	if resp, body := sc.get(scriptOf(t, spkg)[0].URL); resp.StatusCode != 200 || !bytes.Equal(body, installer) {
		t.Fatalf("the installer from the pulling hub: %d", resp.StatusCode)
	}
	if n := v.count("/dl/tool-setup.exe"); n != 1 {
		t.Fatalf("the vendor served %d times", n)
	}
}

// A hub's /_warren/installers/<digest>/… path is the digest's: another
// package (of any feed the hub serves) that names the same checksum with a
// URL of its own, learnt before or after the real one, does not make the
// hub fetch the rewritten package's installer from that URL, nor stop it
// serving the installer it holds.
func TestInstallerDigestPathStaysTheDigests(t *testing.T) {
	for _, tt := range []struct {
		name       string
		otherFirst bool // the other package is learnt before the real one
		held       bool // the hub holds the installer before the other package is learnt
	}{
		{"held, then another package names it", false, true},
		{"another package learnt first", true, false},
		{"another package learnt after", false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			installer := randomBytes(1<<20, 81)
			vsrv, _ := httpsVendor(t, map[string][]byte{"/releases/tool-2.0.0-setup.exe": installer})
			other := newVendor(t) // serves nothing at its URL
			feed := newNugetFeed(t)
			u := vsrv.URL + "/releases/tool-2.0.0-setup.exe"
			feed.mu.Lock()
			feed.pkgs["tool/2.0.0"] = makeNupkg(t, "tool", "2.0.0", randomBytes(2000, 82), "tools/chocolateyInstall.ps1",
				splattedScript(u, sha256hex(installer), u, sha256hex(installer)))
			// The same file name, on another host: only the URL differs.
			feed.pkgs["other/1.0.0"] = makeNupkg(t, "other", "1.0.0", randomBytes(2000, 83), "tools/chocolateyInstall.ps1",
				splattedScript(other.URL+"/releases/tool-2.0.0-setup.exe", sha256hex(installer), other.URL+"/releases/tool-2.0.0-setup.exe", sha256hex(installer)))
			feed.mu.Unlock()
			h := internalizingHub(t, feed, vsrv.Certificate())
			c := &chocoClient{t: t, base: h.front.URL + "/chocolatey/api/v2/", hc: &http.Client{}}
			learnOther := func() {
				_, entry := c.get(c.base + "Packages(Id='other',Version='1.0.0')")
				checkEntries(t, c, entry) // its package downloaded, as choco does: learnt
			}
			if tt.otherFirst {
				learnOther()
			}
			_, entry := c.get(c.base + "Packages(Id='tool',Version='2.0.0')")
			ins := scriptOf(t, checkEntries(t, c, entry)[c.base+"package/tool/2.0.0"])
			if len(ins) == 0 || !strings.Contains(ins[0].URL, "/_warren/installers/") {
				t.Fatalf("not rewritten: %+v", ins)
			}
			if tt.held {
				if resp, body := c.get(ins[0].URL); resp.StatusCode != 200 || !bytes.Equal(body, installer) {
					t.Fatalf("the installer from the hub: %d", resp.StatusCode)
				}
			}
			if !tt.otherFirst {
				learnOther()
			}
			resp, body := c.get(ins[0].URL)
			if resp.StatusCode != 200 || !bytes.Equal(body, installer) {
				t.Errorf("the rewritten package's installer from the hub: %d %q", resp.StatusCode, clipBody(body))
			}
			if n := other.count("/releases/tool-2.0.0-setup.exe"); n != 0 {
				t.Errorf("the other package's URL was asked %d times for the real package's installer", n)
			}
			// As an older hub wrote it (no hint): the digest's blob.
			hint := door.InstallerHint(u)
			if resp, body := c.get(strings.Replace(ins[0].URL, "/"+hint+"/", "/", 1)); resp.StatusCode != 200 || !bytes.Equal(body, installer) {
				t.Errorf("the installer by its digest alone: %d", resp.StatusCode)
			}
			if resp, _ := c.get(strings.Replace(ins[0].URL, "/"+hint+"/", "/not-a-hint/", 1)); resp.StatusCode != http.StatusBadRequest {
				t.Errorf("a hint that is none: %d, want 400", resp.StatusCode)
			}
		})
	}
}
