package main

import (
	"archive/zip"
	"bytes"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/warren-cache/warren/door"
)

// --chocolatey-upstream-rate reaches the daemon: with a budget of one
// request a minute, the second distinct feed call gets a 503 with
// Retry-After instead of going upstream.
func TestChocolateyBudgetFlag(t *testing.T) {
	feed := newFileServer(t)
	feed.put(t, "/api/v2/", []byte(`<?xml version="1.0" encoding="utf-8"?><service xmlns="http://www.w3.org/2007/app"/>`))
	feed.put(t, "/api/v2/$metadata", []byte(`<?xml version="1.0" encoding="utf-8"?><edmx:Edmx Version="1.0" xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx"/>`))
	u, _, _ := startWarren(t, "--cache-dir", t.TempDir(), "--chocolatey-upstream", feed.URL+"/api/v2/", "--chocolatey-upstream-rate", "1/min")
	c := &http.Client{}
	for range 3 { // the same call: one upstream request, then kept
		if code, _ := getBody(t, c, u+"/chocolatey/api/v2/"); code != 200 {
			t.Fatalf("service document: %d", code)
		}
	}
	resp, err := c.Get(u + "/chocolatey/api/v2/$metadata")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("second call within the budget's minute: %d, Retry-After %q; want 503 with it", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if n := feed.count("/api/v2/") + feed.count("/api/v2/$metadata"); n != 1 {
		t.Fatalf("upstream saw %d requests, want 1", n)
	}
}

// chocoPackage builds a package whose install script downloads url with
// its checksum, as choco pack does (the OPC parts NuGet.exe needs).
func chocoPackage(t *testing.T, id, version, url, sha256hex string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range []struct{ name, body string }{
		{"[Content_Types].xml", `<?xml version="1.0" encoding="utf-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml" /><Default Extension="nuspec" ContentType="application/octet" /><Default Extension="ps1" ContentType="application/octet" /></Types>`},
		{"_rels/.rels", `<?xml version="1.0" encoding="utf-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Type="http://schemas.microsoft.com/packaging/2010/07/manifest" Target="/` + id + `.nuspec" Id="R0" /></Relationships>`},
		{id + ".nuspec", `<?xml version="1.0" encoding="utf-8"?><package xmlns="http://schemas.microsoft.com/packaging/2010/07/nuspec.xsd"><metadata><id>` + id + `</id><version>` + version + `</version><authors>warren</authors><description>x</description></metadata></package>`},
		{"tools/chocolateyInstall.ps1", "$packageArgs = @{\n  packageName = $env:ChocolateyPackageName\n  fileType = 'exe'\n  url = '" + url + "'\n  checksum = '" + sha256hex + "'\n  checksumType = 'sha256'\n  silentArgs = '/S'\n}\nInstall-ChocolateyPackage @packageArgs\n"},
	} {
		w, _ := zw.Create(f.name)
		io.WriteString(w, f.body)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// chocolatey.internalize reaches the daemon from its config file: a hub's
// feed serves the package rewritten to download its installer from the
// hub, with the rewritten package's hash, and serves that installer.
func TestInternalizeConfig(t *testing.T) {
	feed := newFileServer(t)
	installer := randomPayload(200000, 5)
	feed.put(t, "/vendor/setup.exe", installer)
	nupkg := chocoPackage(t, "tool", "1.0.0", feed.URL+"/vendor/setup.exe", hexSum256(installer))
	feed.put(t, "/cdn/tool.1.0.0.nupkg", nupkg)
	sum := sha512.Sum512(nupkg)
	feed.put(t, "/api/v2/Packages(Id='tool',Version='1.0.0')", []byte(fmt.Sprintf(`<?xml version="1.0" encoding="utf-8"?>
<entry xml:base="%[1]s/api/v2/" xmlns="http://www.w3.org/2005/Atom" xmlns:d="http://schemas.microsoft.com/ado/2007/08/dataservices" xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata">
  <id>%[1]s/api/v2/Packages(Id='tool',Version='1.0.0')</id>
  <content type="application/zip" src="%[1]s/cdn/tool.1.0.0.nupkg" />
  <m:properties><d:Id>tool</d:Id><d:Version>1.0.0</d:Version><d:PackageHash>%[2]s</d:PackageHash><d:PackageHashAlgorithm>SHA512</d:PackageHashAlgorithm><d:PackageSize m:type="Edm.Int64">%[3]d</d:PackageSize></m:properties>
</entry>`, feed.URL, base64.StdEncoding.EncodeToString(sum[:]), len(nupkg))))
	addr := freeLoopbackPort(t)
	conf := filepath.Join(t.TempDir(), "warren.yaml")
	os.WriteFile(conf, []byte(fmt.Sprintf("role: hub\ncache_dir: %s\nchocolatey:\n  upstream: %s/api/v2/\n  internalize: http://%s/\n", t.TempDir(), feed.URL, addr)), 0o644)
	u, _, _ := startWarrenAt(t, addr, "--config", conf)
	c := &http.Client{}
	code, entry := getBody(t, c, u+"/chocolatey/api/v2/Packages(Id='tool',Version='1.0.0')")
	if code != 200 {
		t.Fatalf("the entry: %d %s", code, entry)
	}
	m := regexp.MustCompile(`src="([^"]+)"`).FindSubmatch(entry)
	h := regexp.MustCompile(`<d:PackageHash>([^<]+)<`).FindSubmatch(entry)
	if m == nil || h == nil {
		t.Fatalf("the entry: %s", entry)
	}
	code, got := getBody(t, c, string(m[1]))
	gotSum := sha512.Sum512(got)
	if code != 200 || bytes.Equal(got, nupkg) || string(h[1]) != base64.StdEncoding.EncodeToString(gotSum[:]) {
		t.Fatalf("the package: %d, %d bytes (the original is %d), its hash against the answer's: %v", code, len(got), len(nupkg), string(h[1]) == base64.StdEncoding.EncodeToString(gotSum[:]))
	}
	zr, err := zip.NewReader(bytes.NewReader(got), int64(len(got)))
	if err != nil {
		t.Fatal(err)
	}
	var script []byte
	for _, f := range zr.File {
		if f.Name == "tools/chocolateyInstall.ps1" {
			rc, _ := f.Open()
			script, _ = io.ReadAll(rc)
			rc.Close()
		}
	}
	hubInstaller := u + "/_warren/installers/" + hexSum256(installer) + "/" + door.InstallerHint(feed.URL+"/vendor/setup.exe") + "/setup.exe"
	if !strings.Contains(string(script), "'"+hubInstaller+"'") {
		t.Fatalf("the rewritten script:\n%s\nwant it to download %s", script, hubInstaller)
	}
	if code, b := getBody(t, c, hubInstaller); code != 200 || !bytes.Equal(b, installer) {
		t.Fatalf("the installer from the hub: %d, %d bytes", code, len(b))
	}
}
