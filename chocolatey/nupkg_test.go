package chocolatey

import (
	"archive/zip"
	"bytes"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testPackage builds a package as choco pack does: the OPC parts, a
// nuspec, the install script and a payload.
func testPackage(t testing.TB, id, version, script string, extra ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	files := []struct{ name, body string }{
		{"_rels/.rels", `<?xml version="1.0" encoding="utf-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Type="http://schemas.microsoft.com/packaging/2010/07/manifest" Target="/` + id + `.nuspec" Id="R0" /></Relationships>`},
		{id + ".nuspec", `<?xml version="1.0" encoding="utf-8"?><package xmlns="http://schemas.microsoft.com/packaging/2015/06/nuspec.xsd"><metadata><id>` + id + `</id><version>` + version + `</version><authors>x</authors><description>x</description></metadata></package>`},
		{"tools/chocolateyinstall.ps1", script},
		{"tools/LICENSE.txt", strings.Repeat("license text ", 200)},
		{"[Content_Types].xml", `<?xml version="1.0" encoding="utf-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml" /><Default Extension="nuspec" ContentType="application/octet" /><Default Extension="ps1" ContentType="application/octet" /><Default Extension="txt" ContentType="application/octet" /></Types>`},
	}
	for i := 0; i+1 < len(extra); i += 2 {
		files = append(files, struct{ name, body string }{extra[i], extra[i+1]})
	}
	for _, f := range files {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: f.name, Method: zip.Deflate, Modified: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)})
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

func TestReadPackage(t *testing.T) {
	script, _ := os.ReadFile("testdata/scripts/variables.ps1")
	nupkg := testPackage(t, "example-browser", "121.0.2", string(script))
	pkg, err := ReadPackage(bytes.NewReader(nupkg), int64(len(nupkg)))
	if err != nil {
		t.Fatal(err)
	}
	if pkg.ID != "example-browser" || pkg.Version != "121.0.2" || pkg.ScriptPath != "tools/chocolateyinstall.ps1" {
		t.Fatalf("read %q %q %q", pkg.ID, pkg.Version, pkg.ScriptPath)
	}
	// The version comes from the nuspec: the URLs that put it in are known.
	sc, err := pkg.Installers()
	if err != nil || len(sc.Installers) != 2 || !strings.Contains(sc.Installers[0].URL, "/121.0.2/") {
		t.Fatalf("downloads %+v %v", sc, err)
	}
	for _, bad := range [][]byte{nil, []byte("PK\x03\x04 not a zip"), testPackage(t, "x", "1.0", "")[:100]} {
		if _, err := ReadPackage(bytes.NewReader(bad), int64(len(bad))); err == nil {
			t.Errorf("read a package from %d bytes that are none", len(bad))
		}
	}
}

func TestInternalize(t *testing.T) {
	script, _ := os.ReadFile("testdata/scripts/splatted.ps1")
	nupkg := testPackage(t, "npp", "8.6.2", string(script), ".signature.p7s", "signature bytes")
	hub := func(in Installer) (string, bool) {
		return "http://hub.example:3142/_warren/installers/" + in.Checksum + "/" + in.URL[strings.LastIndex(in.URL, "/")+1:], true
	}
	out, done, err := Internalize(nupkg, hub)
	if err != nil {
		t.Fatal(err)
	}
	if len(done) != 2 {
		t.Fatalf("rewrote %d downloads, want 2", len(done))
	}
	again, _, err := Internalize(nupkg, hub)
	if err != nil || !bytes.Equal(again, out) {
		t.Fatal("the same package rewritten twice differs: its hash would change")
	}
	pkg, err := ReadPackage(bytes.NewReader(out), int64(len(out)))
	if err != nil {
		t.Fatal(err)
	}
	sc, err := pkg.Installers()
	if err != nil || len(sc.Installers) != 2 {
		t.Fatalf("the rewritten script: %+v %v", sc, err)
	}
	orig, _ := ParseInstallScript(bytes.NewReader(script), Env{})
	for i, in := range sc.Installers {
		want, _ := hub(orig.Installers[i])
		if in.URL != want || in.Checksum != orig.Installers[i].Checksum || in.ChecksumType != "sha256" {
			t.Errorf("download %d: %s %s %s, want %s with the same checksum", i, in.URL, in.ChecksumType, in.Checksum, want)
		}
	}
	// Everything else is as it was, but the signature the rewrite broke.
	before, _ := zip.NewReader(bytes.NewReader(nupkg), int64(len(nupkg)))
	after, _ := zip.NewReader(bytes.NewReader(out), int64(len(out)))
	names := map[string][]byte{}
	for _, f := range after.File {
		b, _ := readEntry(f, 1<<20)
		names[f.Name] = b
	}
	for _, f := range before.File {
		b, _ := readEntry(f, 1<<20)
		switch f.Name {
		case ".signature.p7s":
			if _, ok := names[f.Name]; ok {
				t.Error("the package signature was kept, though the package changed")
			}
		case "tools/chocolateyinstall.ps1":
			if bytes.Equal(names[f.Name], b) {
				t.Error("the script was not rewritten")
			}
		default:
			if !bytes.Equal(names[f.Name], b) {
				t.Errorf("%s changed", f.Name)
			}
		}
	}
	// Nothing to rewrite: said so.
	md5, _ := os.ReadFile("testdata/scripts/md5.ps1")
	if _, _, err := Internalize(testPackage(t, "legacy", "1.0", string(md5)), hub); err != ErrNothingToRewrite {
		t.Fatalf("a package with no download warren can rewrite: %v", err)
	}
}

// A literal that feeds downloads which must differ (checksums that differ,
// or one the hub refuses) is not rewritten, however many downloads use it
// and in whatever order: a rewrite would send each of them to one hub URL,
// whose bytes cannot match all their checksums. What else the script
// downloads is rewritten as usual, and done names only what was.
func TestInternalizeSharedLiteral(t *testing.T) {
	sum := func(c string) string { return strings.Repeat(c, 64) }
	call := func(u, c string) string {
		return "Get-ChocolateyWebFile -PackageName x -FileFullPath f -Url " + u + " -Checksum " + sum(c) + " -ChecksumType sha256\n"
	}
	other := call("'https://v.example/other.exe'", "f")
	hub := func(in Installer) (string, bool) {
		return "http://hub/_warren/installers/" + in.Checksum + "/x.exe", in.Checksum != sum("e")
	}
	tests := []struct {
		name, script string
	}{
		{"three downloads, the first two differ", "$u = 'https://v.example/a.exe'\n" + call("$u", "a") + call("$u", "b") + call("$u", "c") + other},
		{"three downloads, the last differs", "$u = 'https://v.example/a.exe'\n" + call("$u", "a") + call("$u", "a") + call("$u", "c") + other},
		{"one the hub refuses, then one it takes", "$u = 'https://v.example/a.exe'\n" + call("$u", "e") + call("$u", "a") + other},
		{"one the hub takes, then one it refuses", "$u = 'https://v.example/a.exe'\n" + call("$u", "a") + call("$u", "e") + other},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, done, err := Internalize(testPackage(t, "x", "1.0", tt.script), hub)
			if err != nil {
				t.Fatal(err)
			}
			if len(done) != 1 || !strings.HasSuffix(done[0].URL, "/other.exe") {
				t.Errorf("done names %+v, want other.exe alone", done)
			}
			pkg, err := ReadPackage(bytes.NewReader(out), int64(len(out)))
			if err != nil {
				t.Fatal(err)
			}
			sc, err := pkg.Installers()
			if err != nil {
				t.Fatal(err)
			}
			for _, in := range sc.Installers {
				switch {
				case strings.HasPrefix(in.URL, "http://hub/") && !strings.Contains(in.URL, in.Checksum):
					t.Errorf("a download checked against %s… now fetches %s: it cannot match", in.Checksum[:8], in.URL)
				case in.Checksum == sum("f") && !strings.HasPrefix(in.URL, "http://hub/"):
					t.Errorf("the other download was not rewritten: %s", in.URL)
				}
			}
		})
	}
}

// archive/zip builds every entry of a zip's directory before the number
// of files can be counted: a package of many empty entries cost memory
// several times its size (a 50 MiB one of 512 Ki entries, 121 MiB). Its
// directory is read within a bound, and the package refused.
func TestReadPackageManyEntries(t *testing.T) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for i := range 1 << 19 {
		if _, err := zw.CreateHeader(&zip.FileHeader{Name: strconv.FormatInt(int64(i), 16), Method: zip.Store}); err != nil {
			t.Fatal(err)
		}
	}
	zw.Close()
	b := buf.Bytes()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := ReadPackage(bytes.NewReader(b), int64(len(b)))
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Fatal("a package of 512 Ki files was read")
	}
	t.Logf("%v; allocated %d MiB", err, (after.TotalAlloc-before.TotalAlloc)>>20)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8*maxDirectoryBytes {
		t.Errorf("opening a package of %d MiB allocated %d MiB", len(b)>>20, alloc>>20)
	}
	// A package of a few thousand files reads as before.
	var files []string
	for i := range 3000 {
		files = append(files, "content/"+strings.Repeat("d", 40)+"/"+strconv.Itoa(i)+".txt", "x")
	}
	ok := testPackage(t, "many", "1.0", "", files...)
	if _, err := ReadPackage(bytes.NewReader(ok), int64(len(ok))); err != nil {
		t.Fatalf("a package of 3000 files: %v", err)
	}
}
