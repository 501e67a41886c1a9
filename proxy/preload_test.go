package proxy

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/hub"
	"github.com/warren-cache/warren/hub/preload"
)

// aptPkg is one package of a test archive.
type aptPkg struct {
	name, version, depends string
	body                   []byte
}

// path is where the archive keeps it: as Debian's pool does, without the
// version's epoch.
func (p aptPkg) path() string {
	v := p.version
	if _, rest, ok := strings.Cut(v, ":"); ok {
		v = rest
	}
	return fmt.Sprintf("/debian/pool/main/%c/%s/%s_%s_amd64.deb", p.name[0], p.name, p.name, v)
}

// setArchive makes the upstream's stable/main/binary-amd64 list pkgs.
func (u *upstream) setArchive(pkgs []aptPkg) {
	var b strings.Builder
	for _, p := range pkgs {
		fmt.Fprintf(&b, "Package: %s\nVersion: %s\nArchitecture: amd64\n", p.name, p.version)
		if p.depends != "" {
			fmt.Fprintf(&b, "Depends: %s\n", p.depends)
		}
		fmt.Fprintf(&b, "Filename: %s\nSize: %d\nSHA256: %s\n\n", strings.TrimPrefix(p.path(), "/debian/"), len(p.body), sha256hex(p.body))
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(b.String()))
	zw.Close()
	rel := fmt.Sprintf("Suite: stable\nCodename: stable\nSHA256:\n %s %d main/binary-amd64/Packages.gz\n", sha256hex(gz.Bytes()), gz.Len())
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, p := range pkgs {
		u.files[p.path()] = p.body
	}
	u.files[packagesPath] = gz.Bytes()
	u.files[releasePath] = []byte(rel)
	u.modAt = u.modAt.Add(time.Hour)
}

func TestPreload(t *testing.T) {
	up := newUpstream(t, 10)
	pkgs := []aptPkg{
		{"app", "1:2.0~rc1+dfsg-1", "libfoo (>= 1.0), libbar | libbaz, libc6:any", randomBytes(30000, 31)},
		{"libfoo", "1.0-1", "", randomBytes(20000, 32)},
		{"libbar", "3.1-2", "", randomBytes(10000, 33)},
		{"libbaz", "1.0", "", randomBytes(10000, 34)},
		{"other", "1.0", "", randomBytes(40000, 35)},
	}
	up.setArchive(pkgs)
	rpmBody := randomBytes(25000, 36)
	_, _, rpmPath := addRPMRepo(up, rpmBody)
	feed := newNugetFeed(t)
	hb := newHarness(t, up, asHub(hub.Preload, 5), func(c *testConfig, _ *cachestore.Config) {
		c.ChocolateyFeeds = map[string]string{"": feed.base()}
	})
	list := hub.PreloadList{
		Apt: []hub.AptPreload{{URL: up.URL + "/debian", Suites: []string{"stable"}, Components: []string{"main"},
			Architectures: []string{"amd64"}, Packages: []string{"ap*"}}},
		RPM:        []hub.RPMPreload{{BaseURL: up.URL + "/el9/os/", Packages: []string{"hel*"}}},
		Chocolatey: []hub.ChocolateyPreload{{Feed: feed.base(), IDs: []string{"tool"}, Versions: "latest"}},
	}
	held := map[string]bool{}
	opts := preload.Options{List: list, Updates: true, Held: held}
	wantBytes := int64(30000 + 20000 + 10000 + 25000 + len(feed.pkgs["tool/2.0.0"]))

	// Before: a node may use only this preload-mode hub, which holds none.
	n := newHarness(t, up, usingHubs(t, true, "", hb.front.URL))
	n.mustGet(up.URL+pkgs[0].path(), 404)

	dry := opts
	dry.DryRun = true
	run, err := hb.preload(t.Context(), dry)
	if err != nil || len(run.Failures) > 0 {
		t.Fatalf("dry run: %v %v", err, run.Failures)
	}
	if run.Missing != 5 || run.Bytes != wantBytes || run.Fetched != 0 {
		t.Fatalf("dry run: %d missing, %d bytes, %d fetched; want 5 (app, libfoo, libbar, the rpm, tool 2.0.0), %d bytes, 0", run.Missing, run.Bytes, run.Fetched, wantBytes)
	}
	if up.count(pkgs[0].path()) != 0 {
		t.Fatal("a dry run fetched an artifact")
	}

	run, err = hb.preload(t.Context(), opts)
	if err != nil || len(run.Failures) > 0 || run.Fetched != 5 || run.FetchedB != wantBytes {
		t.Fatalf("run: %+v %v", run, err)
	}
	for _, p := range pkgs[:3] {
		if c := up.count(p.path()); c != 1 {
			t.Errorf("%s fetched %d times, want once", p.name, c)
		}
	}
	for _, p := range pkgs[3:] {
		if c := up.count(p.path()); c != 0 {
			t.Errorf("%s (not named, not needed) fetched %d times", p.name, c)
		}
	}
	if up.count(rpmPath) != 1 || feed.count("/cdn/tool.2.0.0.nupkg") != 1 || feed.count("/cdn/tool.1.0.0.nupkg") != 0 {
		t.Errorf("rpm %d, tool 2.0.0 %d, tool 1.0.0 %d fetches: want 1, 1, 0", up.count(rpmPath), feed.count("/cdn/tool.2.0.0.nupkg"), feed.count("/cdn/tool.1.0.0.nupkg"))
	}
	// A node gets the preloaded packages from the preload-only hub.
	n.mustGet(up.URL+releasePath, 200)
	n.mustGet(up.URL+packagesPath, 200)
	if k, err := n.known(up.URL + pkgs[0].path()); err != nil {
		t.Fatalf("the node did not learn the app's hash from the preloaded index: %v", err)
	} else if k.Digest.Hex != sha256hex(pkgs[0].body) {
		t.Fatalf("the node learnt %s", k.Digest)
	}
	if _, body := n.mustGet(up.URL+pkgs[0].path(), 200); !bytes.Equal(body, pkgs[0].body) {
		t.Fatal("a preloaded package, through the hub: wrong bytes")
	}

	// A second run moves nothing.
	run, err = hb.preload(t.Context(), opts)
	if err != nil || run.Fetched != 0 || run.Missing != 0 || run.Wanted != 5 {
		t.Fatalf("second run: %+v %v", run, err)
	}

	// Upstream lists a newer libbar: preload_updates fetches it.
	pkgs[2] = aptPkg{"libbar", "3.2-1", "", randomBytes(11000, 37)}
	up.setArchive(pkgs)
	hb.clock.advance(time.Hour)
	run, err = hb.preload(t.Context(), opts)
	if err != nil || run.Fetched != 1 || up.count(pkgs[2].path()) != 1 {
		t.Fatalf("after libbar 3.2: %+v %v (upstream GETs %d)", run, err, up.count(pkgs[2].path()))
	}
	if !held["apt:libbar"] || !held["rpm:hello"] || !held["chocolatey:tool"] {
		t.Fatalf("packages seen held not recorded: %v", held)
	}
}

// The schedule window: a run stops between artifacts once it has closed,
// and the next run fetches only the rest.
func TestPreloadStopsAtTheWindowsEnd(t *testing.T) {
	up := newUpstream(t, 10)
	var pkgs []aptPkg
	for i := range 4 {
		pkgs = append(pkgs, aptPkg{fmt.Sprintf("pkg%d", i), "1.0", "", randomBytes(5000, uint64(40+i))})
	}
	up.setArchive(pkgs)
	hb := newHarness(t, up, asHub(hub.FetchAndPreload, 5))
	w, err := hub.ParseWindow("02:00-04:00")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 3, 3, 58, 0, 0, time.Local)
	_, end := w.Open(now)
	opts := preload.Options{List: hub.PreloadList{Apt: []hub.AptPreload{{URL: up.URL + "/debian", Suites: []string{"stable"},
		Components: []string{"main"}, Architectures: []string{"amd64"}, Packages: []string{"pkg*"}}}}}
	// Each artifact takes a minute on the test's clock.
	opts.Stop = func() string {
		defer func() { now = now.Add(time.Minute) }()
		if !now.Before(end) {
			return "the preload_schedule window closed"
		}
		return ""
	}
	run, err := hb.preload(context.Background(), opts)
	if err != nil || run.Fetched != 2 || run.Stopped == "" {
		t.Fatalf("a run at 03:58 in 02:00-04:00: %+v %v, want 2 fetched, then stopped", run, err)
	}
	opts.Stop = nil
	run, err = hb.preload(context.Background(), opts)
	if err != nil || run.Fetched != 2 || run.Missing != 2 {
		t.Fatalf("the next run: %+v %v, want the 2 left", run, err)
	}
	for _, p := range pkgs {
		if c := up.count(p.path()); c != 1 {
			t.Fatalf("%s fetched %d times, want once", p.name, c)
		}
	}
}

// Chocolatey through a preload-only hub with the feed down: the calls
// choco makes were kept by the preload run, the package is held, and the
// node's client installs it.
func TestChocolateyPreloadedFeedDown(t *testing.T) {
	feed := newNugetFeed(t)
	withFeed := func(c *testConfig, _ *cachestore.Config) { c.ChocolateyFeeds = map[string]string{"": feed.base()} }
	hb := newHarness(t, newUpstream(t, 10), asHub(hub.Preload, 5), withFeed)
	n := newHarness(t, newUpstream(t, 10), usingHubs(t, true, "", hb.front.URL), withFeed)
	c := &chocoClient{t: t, base: n.front.URL + "/chocolatey/api/v2/", hc: &http.Client{}}
	if _, err := c.tryInstall(feed.URL); err == nil {
		t.Fatal("a preload-only hub that holds nothing answered choco's calls")
	}
	run, err := hb.preload(t.Context(), preload.Options{List: hub.PreloadList{
		Chocolatey: []hub.ChocolateyPreload{{Feed: feed.base(), IDs: []string{"tool"}}}}})
	if err != nil || len(run.Failures) > 0 || run.Fetched != 1 {
		t.Fatalf("preload: %+v %v", run, err)
	}
	feed.Close() // the WAN is down
	n2 := newHarness(t, newUpstream(t, 10), usingHubs(t, true, "", hb.front.URL), withFeed)
	c2 := &chocoClient{t: t, base: n2.front.URL + "/chocolatey/api/v2/", hc: &http.Client{}}
	got, err := c2.tryInstall(feed.URL)
	if err != nil {
		t.Fatalf("choco's sequence through the preload-only hub, feed down: %v", err)
	}
	if !bytes.Equal(got, feed.pkgs["tool/2.0.0"]) {
		t.Fatalf("downloaded %d bytes, not the package", len(got))
	}
}

// rpm: the newest version of each package the globs name, and what it
// requires, by the capabilities primary.xml says each package provides.
func TestPreloadRPMDependencies(t *testing.T) {
	up := newUpstream(t, 10)
	type rp struct{ name, ver, provides, requires string }
	list := []rp{
		{"app", "1.9", "", "libfoo.so.1()(64bit)"},
		{"app", "1.10", "", "libfoo.so.1()(64bit) rpmlib(PayloadIsXz)"},
		{"libfoo", "1.0", "libfoo.so.1()(64bit)", ""},
		{"other", "1.0", "", ""},
	}
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n" + `<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="4">`)
	bodies := map[string][]byte{}
	for i, p := range list {
		body := randomBytes(3000+i, uint64(60+i))
		path := fmt.Sprintf("Packages/%s-%s-1.x86_64.rpm", p.name, p.ver)
		bodies[path] = body
		fmt.Fprintf(&b, `<package type="rpm"><name>%s</name><arch>x86_64</arch><version epoch="0" ver="%s" rel="1"/><checksum type="sha256" pkgid="YES">%s</checksum><size package="%d"/><location href="%s"/><format>`,
			p.name, p.ver, sha256hex(body), len(body), path)
		for _, c := range strings.Fields(p.provides) {
			fmt.Fprintf(&b, `<rpm:provides><rpm:entry name="%s"/></rpm:provides>`, c)
		}
		for _, c := range strings.Fields(p.requires) {
			fmt.Fprintf(&b, `<rpm:requires><rpm:entry name="%s"/></rpm:requires>`, c)
		}
		b.WriteString(`</format></package>`)
	}
	b.WriteString(`</metadata>`)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(b.String()))
	zw.Close()
	psum := sha256hex(gz.Bytes())
	repomd := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?><repomd xmlns="http://linux.duke.edu/metadata/repo"><data type="primary"><checksum type="sha256">%s</checksum><location href="repodata/%s-primary.xml.gz"/><size>%d</size></data></repomd>`, psum, psum, gz.Len())
	up.mu.Lock()
	up.files["/el9/repodata/repomd.xml"] = []byte(repomd)
	up.files["/el9/repodata/"+psum+"-primary.xml.gz"] = gz.Bytes()
	for path, body := range bodies {
		up.files["/el9/"+path] = body
	}
	up.mu.Unlock()
	hb := newHarness(t, up, asHub(hub.Preload, 5))
	run, err := hb.preload(t.Context(), preload.Options{List: hub.PreloadList{RPM: []hub.RPMPreload{{BaseURL: up.URL + "/el9/", Packages: []string{"app"}}}}})
	if err != nil || len(run.Failures) > 0 || run.Fetched != 2 {
		t.Fatalf("preload: %+v %v; want app 1.10 and libfoo", run, err)
	}
	for path, want := range map[string]int{"Packages/app-1.10-1.x86_64.rpm": 1, "Packages/libfoo-1.0-1.x86_64.rpm": 1, "Packages/app-1.9-1.x86_64.rpm": 0, "Packages/other-1.0-1.x86_64.rpm": 0} {
		if got := up.count("/el9/" + path); got != want {
			t.Errorf("%s fetched %d times, want %d", path, got, want)
		}
	}
}

// Preload resolves as apt does: the newest version in dpkg's order
// (1.10-1 after 1.9-1, an epoch above both), whichever suite lists it, and
// what a package recommends (apt installs it by default) unless
// preload_recommends is off.
func TestPreloadResolvesAsApt(t *testing.T) {
	up := newUpstream(t, 10)
	type pkg struct{ suite, name, version, extra string }
	list := []pkg{
		{"stable", "zsh", "5.9-4", "Recommends: libpcre3, zsh-common"},
		{"stable", "libpcre3", "8.39-15", ""},
		{"stable", "zsh-common", "5.9-4", ""},
		{"stable", "tool", "1.9-1", ""},
		{"stable-updates", "tool", "1.10-1", ""},
		{"stable", "lib", "2.0-1", ""},
		{"stable-updates", "lib", "1:1.0-1", ""},
	}
	bodies := map[pkg][]byte{}
	bySuite := map[string]*strings.Builder{}
	for i, p := range list {
		body := randomBytes(5000+i, uint64(200+i))
		bodies[p] = body
		b := bySuite[p.suite]
		if b == nil {
			b = &strings.Builder{}
			bySuite[p.suite] = b
		}
		fmt.Fprintf(b, "Package: %s\nVersion: %s\nArchitecture: amd64\n", p.name, p.version)
		if p.extra != "" {
			b.WriteString(p.extra + "\n")
		}
		fmt.Fprintf(b, "Filename: pool/main/%s_%s_amd64.deb\nSize: %d\nSHA256: %s\n\n", p.name, noEpoch(p.version), len(body), sha256hex(body))
	}
	up.mu.Lock()
	for p, body := range bodies {
		up.files["/debian/pool/main/"+p.name+"_"+noEpoch(p.version)+"_amd64.deb"] = body
	}
	for suite, b := range bySuite {
		pk := []byte(b.String())
		up.files["/debian/dists/"+suite+"/main/binary-amd64/Packages"] = pk
		up.files["/debian/dists/"+suite+"/InRelease"] = []byte(fmt.Sprintf("Suite: %s\nSHA256:\n %s %d main/binary-amd64/Packages\n", suite, sha256hex(pk), len(pk)))
	}
	up.mu.Unlock()
	entry := hub.AptPreload{URL: up.URL + "/debian", Suites: []string{"stable", "stable-updates"}, Components: []string{"main"},
		Architectures: []string{"amd64"}, Packages: []string{"zsh", "tool", "lib"}}
	for _, recommends := range []bool{true, false} {
		hb := newHarness(t, up, asHub(hub.Preload, 5))
		run, err := hb.preload(t.Context(), preload.Options{List: hub.PreloadList{Apt: []hub.AptPreload{entry}}, Recommends: recommends})
		if err != nil || len(run.Failures) > 0 {
			t.Fatalf("preload: %+v %v", run, err)
		}
		want := map[string]bool{"zsh 5.9-4": true, "tool 1.10-1": true, "lib 1:1.0-1": true, "libpcre3 8.39-15": recommends, "zsh-common 5.9-4": recommends}
		for p, body := range bodies {
			key := p.name + " " + p.version
			if got := hb.door.Holds(digestOf(body)); got != want[key] {
				t.Errorf("recommends %v: %s held %v, want %v", recommends, key, got, want[key])
			}
		}
	}
}

// noEpoch is a version as the pool names files: without its epoch.
func noEpoch(v string) string {
	if _, rest, ok := strings.Cut(v, ":"); ok {
		return rest
	}
	return v
}

// A client that joined a fill a preload run started is not cut off when
// the run stops (its window closed, it was canceled): the fill is the
// door's; only the run's wait ends.
func TestPreloadStopLeavesJoinedClient(t *testing.T) {
	up := newUpstream(t, 10)
	pkg := aptPkg{"big", "1.0", "", randomBytes(300000, 81)}
	up.setArchive([]aptPkg{pkg})
	asked, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	up.hook(pkg.path(), func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(asked) })
		w.Header().Set("Content-Length", strconv.Itoa(len(pkg.body)))
		w.WriteHeader(http.StatusOK)
		w.Write(pkg.body[:100000])
		w.(http.Flusher).Flush()
		<-release
		w.Write(pkg.body[100000:])
	})
	hb := newHarness(t, up, asHub(hub.FetchAndPreload, 5))
	hb.mustGet(up.URL+releasePath, 200)
	hb.mustGet(up.URL+packagesPath, 200)
	ctx, cancel := context.WithCancel(t.Context())
	runDone := make(chan struct{})
	go func() {
		defer close(runDone)
		hb.preload(ctx, preload.Options{List: hub.PreloadList{Apt: []hub.AptPreload{{URL: up.URL + "/debian", Suites: []string{"stable"},
			Components: []string{"main"}, Architectures: []string{"amd64"}, Packages: []string{"big"}}}}})
	}()
	// The run's fill has begun once upstream is asked; the client's
	// answer begins once it streams from that fill.
	select {
	case <-asked:
	case <-runDone:
		t.Fatal("the preload run ended before its fill began")
	}
	resp, err := hb.client.Get(up.URL + pkg.path())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	cancel()
	<-runDone
	close(release)
	body, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(body, pkg.body) {
		t.Fatalf("the client that joined the preload's fill: %d of %d bytes, %v", len(body), len(pkg.body), err)
	}
	if c := up.count(pkg.path()); c != 1 {
		t.Fatalf("the package was fetched %d times, want once", c)
	}
}
