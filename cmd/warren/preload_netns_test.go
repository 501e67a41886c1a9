package main

import (
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPreloadSiteOverNetns is a site whose hub only serves what it
// preloaded: a mirror behind a 50 Mbit/s WAN with a signed apt repository
// and an rpm repository, a hub in preload mode with a preload list (an apt
// glob, an rpm glob), and a node that may use only the hub.
//
//   - Before any run, the node's request is refused, with no WAN traffic.
//   - `warren preload run --dry-run` prints the counts and bytes, and
//     fetches none of the artifacts; `warren preload run` fetches exactly
//     those, each once; a second run moves nothing.
//   - With the mirror stopped, real apt-get (update, install
//     --download-only) and dnf (download) on the node get the preloaded
//     packages, every one checked against its hash.
func TestPreloadSiteOverNetns(t *testing.T) {
	requireRootStep(t, "WARREN_NETNS", "the preload namespace test (ip netns)")
	requireTools(t, "ip", "tc", "curl", "/usr/bin/python3", "apt-get", "apt-ftparchive", "dpkg-deb", "gpg", "xz", "gzip", "dnf", "createrepo_c", "rpmbuild")
	const mirror, hubAddr = "10.79.0.100", "10.79.0.50"
	base := t.TempDir()
	repo := buildAptRepo(t, base)
	_, rpmSums := buildRPMRepo(t, base) // in base/rpmrepo
	arch := strings.TrimSpace(run(t, base, nil, "dpkg", "--print-architecture"))
	feedURL := "http://" + mirror + "/feed/api/v2/"
	nupkg := writeStaticFeed(t, filepath.Join(base, "feed", "api", "v2"), feedURL, "tool", "1.0.0")

	lan := newLAN(t, "wrp", "10.79.0")
	lan.host("up", mirror)
	lan.sh("ip", "netns", "exec", lan.ns("up"), "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "50mbit", "burst", "256k", "latency", "100ms")
	lan.host("hub", hubAddr)
	lan.host("h1", "10.79.0.1")
	script := filepath.Join(base, "mirror.py")
	os.WriteFile(script, []byte(staticMirrorPy), 0o644)
	mirrorCmd := exec.Command("ip", "netns", "exec", lan.ns("up"), "/usr/bin/python3", script, base, mirror)
	upLog, _ := startLogged(t, mirrorCmd, "mirror")
	gets := func() map[string]int {
		out := map[string]int{}
		for _, m := range regexp.MustCompile(`"GET (\S+) HTTP/1\.1" 200`).FindAllStringSubmatch(upLog.String(), -1) {
			out[m[1]]++
		}
		return out
	}
	waitUntil(t, "the mirror", 20*time.Second, func() bool {
		_, err := lan.curl("h1", "-o", "/dev/null", "http://"+mirror+"/repo/dists/stable/InRelease")
		return err == nil
	})

	aptURL, rpmURL := "http://"+mirror+"/repo", "http://"+mirror+"/rpmrepo/"
	conf := filepath.Join(base, "hub.yaml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`role: hub
hub_mode: preload
preload_schedule: ""
chocolatey: {upstream: %q}
preload:
  apt: [{url: %q, suites: [stable], components: [main], architectures: [%s], packages: ["warren-e2e-*"]}]
  rpm: [{baseurl: %q, packages: ["warren-e2e-hel*", "libwarren*"]}]
  chocolatey: [{feed: %q, ids: [tool]}]
`, feedURL, aptURL, arch, rpmURL, feedURL)), 0o644)
	hubCache := filepath.Join(base, "hubcache")
	hub := exec.Command("ip", "netns", "exec", lan.ns("hub"), warrenBinary(t), "serve", "--config", conf, "--listen", "0.0.0.0:3142",
		"--cache-dir", hubCache, "--log-level", "debug")
	hubLogs, ready := startLogged(t, hub, "hub")
	waitReady(t, ready, hubLogs, "hub")
	node := exec.Command("ip", "netns", "exec", lan.ns("h1"), warrenBinary(t), "serve", "--config", "/dev/null", "--listen", "127.0.0.1:3142",
		"--discovery", "off", "--cache-dir", filepath.Join(base, "nodecache"), "--hub", "http://"+hubAddr+":3142", "--hub-only",
		"--chocolatey-upstream", feedURL, "--log-level", "debug")
	nodeLogs, ready := startLogged(t, node, "node h1")
	waitReady(t, ready, nodeLogs, "node h1")

	smallPath := "/repo/pool/main/warren-e2e-small_1.0_all.deb"
	code, _ := exec.Command("ip", "netns", "exec", lan.ns("h1"), "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
		"-x", "http://127.0.0.1:3142", "http://"+mirror+smallPath).Output()
	if string(code) != "404" || gets()[smallPath] != 0 {
		t.Fatalf("before any preload run: %s, mirror GETs %d; want 404 and none", code, gets()[smallPath])
	}

	// The artifacts the list names: both debs (the glob), both rpms, the
	// Chocolatey package.
	artifacts := []string{"/repo/pool/main/warren-e2e-big_1.0_all.deb", smallPath, "/feed/api/v2/package/tool/1.0.0"}
	for p := range rpmSums {
		artifacts = append(artifacts, "/rpmrepo"+p)
	}
	fetched := func() (n int) {
		g := gets()
		for _, a := range artifacts {
			n += g[a]
		}
		return n
	}
	out, err := runApp(t, "preload", "run", "--dry-run", "--config", conf, "--cache-dir", hubCache)
	if err != nil || !strings.Contains(out, "the list names 5 artifacts; 5 are not held") || fetched() != 0 {
		t.Fatalf("preload run --dry-run: %v, %d artifacts fetched\n%s", err, fetched(), out)
	}
	t.Logf("dry run: %s", strings.TrimSpace(out))
	out, err = runApp(t, "preload", "run", "--config", conf, "--cache-dir", hubCache)
	if err != nil || !strings.Contains(out, "fetched 5") {
		t.Fatalf("preload run: %v\n%s", err, out)
	}
	t.Logf("run: %s", strings.TrimSpace(out))
	g := gets()
	for _, a := range artifacts {
		if g[a] != 1 {
			t.Fatalf("%s fetched %d times by the run, want once", a, g[a])
		}
	}
	if out, err = runApp(t, "preload", "run", "--config", conf, "--cache-dir", hubCache); err != nil || !strings.Contains(out, "fetched 0") {
		t.Fatalf("a second run: %v\n%s", err, out)
	}

	// The WAN is down: the mirror stops.
	mirrorCmd.Process.Signal(syscall.SIGKILL)
	mirrorCmd.Wait()

	sources := fmt.Sprintf("deb [signed-by=%s] %s/ stable main", repo.keyring, aptURL)
	apt := newAptClient(t, base, "apt-h1", sources, "http://127.0.0.1:3142")
	apt.in = lan.ns("h1")
	if out, err := apt.try("update"); err != nil || strings.Contains(out, "W:") {
		t.Fatalf("apt-get update with the mirror down: %v\n%s", err, out)
	}
	if out, err := apt.try("install", "-y", "--download-only", "warren-e2e-big", "warren-e2e-small"); err != nil {
		t.Fatalf("apt-get install --download-only with the mirror down: %v\n%s", err, out)
	}
	for pool, sum := range repo.debs {
		if got := sha256File(t, filepath.Join(apt.dir, "cache", "archives", filepath.Base(pool))); got != sum {
			t.Fatalf("apt got %s with sha256 %s, want %s", pool, got, sum)
		}
	}
	// Chocolatey's calls, as choco makes them, to the node's feed.
	feed := "http://127.0.0.1:3142/chocolatey/api/v2/"
	var entry string
	for _, call := range []string{"", "$metadata", "Packages()?$filter=(tolower(Id)%20eq%20'tool')%20and%20IsLatestVersion&semVerLevel=2.0.0",
		"FindPackagesById()?id='tool'&semVerLevel=2.0.0", "Packages(Id='tool',Version='1.0.0')"} {
		out, err := lan.curl("h1", feed+call)
		if err != nil {
			t.Fatalf("choco's call %q with the mirror down: %v %s", call, err, out)
		}
		entry = out
	}
	src := regexp.MustCompile(`<content type="application/zip" src="([^"]+)"`).FindStringSubmatch(entry)
	if src == nil || !strings.HasPrefix(src[1], feed) {
		t.Fatalf("the package entry's download is not the node's: %q", entry)
	}
	pkgFile := filepath.Join(base, "tool.nupkg")
	if out, err := lan.curl("h1", "-o", pkgFile, src[1]); err != nil || sha256File(t, pkgFile) != sha256Hex(nupkg) {
		t.Fatalf("the Chocolatey package with the mirror down: %v %s", err, out)
	}
	dl := filepath.Join(base, "dnf-h1", "dl")
	dnfIn(t, lan.ns("h1"), base, "dnf-h1", rpmURL, "http://127.0.0.1:3142", "download", "--destdir="+dl, "warren-e2e-hello", "libwarren++-e2e")
	for p, sum := range rpmSums {
		if got := sha256File(t, filepath.Join(dl, filepath.Base(p))); got != sum {
			t.Fatalf("dnf got %s with sha256 %s, want %s", p, got, sum)
		}
	}
}

// staticMirrorPy is python's http.server over a directory, with feed
// answers (extensionless files under feed/) typed as Atom, as NuGet's are;
// the query string is ignored, so one file answers a call however asked.
const staticMirrorPy = `import functools, http.server, sys
root, addr = sys.argv[1], sys.argv[2]
class Handler(http.server.SimpleHTTPRequestHandler):
    def guess_type(self, path):
        if "/feed/" in path and "/package/" not in path:
            return "application/atom+xml;type=feed;charset=utf-8"
        return super().guess_type(path)
http.server.ThreadingHTTPServer((addr, 80), functools.partial(Handler, directory=root)).serve_forever()
`

// writeStaticFeed writes the answers of a NuGet v2 feed holding one
// package into dir (index.html is the service document) and returns the
// package's bytes.
func writeStaticFeed(t *testing.T, dir, base, id, version string) []byte {
	t.Helper()
	pkg := randomPayload(50000, 77)
	sum := sha512.Sum512(pkg)
	entry := fmt.Sprintf(`<entry><id>%[1]sPackages(Id='%[2]s',Version='%[3]s')</id><title type="text">%[2]s</title>
<content type="application/zip" src="%[1]spackage/%[2]s/%[3]s" /><m:properties><d:Id>%[2]s</d:Id><d:Version>%[3]s</d:Version>
<d:PackageHash>%[4]s</d:PackageHash><d:PackageHashAlgorithm>SHA512</d:PackageHashAlgorithm><d:PackageSize m:type="Edm.Int64">%[5]d</d:PackageSize></m:properties></entry>`,
		base, id, version, base64.StdEncoding.EncodeToString(sum[:]), len(pkg))
	feed := func(body string) string {
		return fmt.Sprintf(`<?xml version="1.0" encoding="utf-8"?><feed xml:base="%s" xmlns="http://www.w3.org/2005/Atom" xmlns:d="http://schemas.microsoft.com/ado/2007/08/dataservices" xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata"><title type="text">Packages</title>%s</feed>`, base, body)
	}
	files := map[string]string{
		"index.html":         `<?xml version="1.0" encoding="utf-8"?><service xmlns="http://www.w3.org/2007/app"/>`,
		"$metadata":          `<?xml version="1.0" encoding="utf-8"?><edmx:Edmx Version="1.0" xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx"/>`,
		"Packages()":         feed(entry),
		"FindPackagesById()": feed(entry),
		"Search()":           feed(entry),
		fmt.Sprintf("Packages(Id='%s',Version='%s')", id, version): `<?xml version="1.0" encoding="utf-8"?>` +
			strings.Replace(entry, "<entry>", fmt.Sprintf(`<entry xml:base="%s" xmlns="http://www.w3.org/2005/Atom" xmlns:d="http://schemas.microsoft.com/ado/2007/08/dataservices" xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata">`, base), 1),
	}
	os.MkdirAll(filepath.Join(dir, "package", id), 0o755)
	for name, body := range files {
		os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644)
	}
	os.WriteFile(filepath.Join(dir, "package", id, version), pkg, 0o644)
	return pkg
}
