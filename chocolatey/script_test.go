package chocolatey

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// The fixtures under testdata/scripts are shaped like the community
// repository's packages: AU's splatted $packageArgs, named parameters with
// backtick continuations, positional calls of old packages, variables and
// $env:ChocolateyPackageVersion in URLs, Get-ChocolateyWebFile with the
// table filled in afterwards, zip and vsix packages, MD5 and SHA1
// checksums, URLs found at install time.
func TestParseInstallScriptFixtures(t *testing.T) {
	sha := func(c string, n int) string { return strings.Repeat(c, n) }
	tests := []struct {
		file    string
		env     Env
		want    []Installer
		skipped int
	}{
		{file: "splatted.ps1", want: []Installer{
			{Call: "Install-ChocolateyPackage", Arch: "32", URL: "https://github.com/example/notepad-plus/releases/download/v8.6.2/npp.8.6.2.Installer.exe", ChecksumType: "sha256", Checksum: "d5f2d3de1c3f0c4e5e2b0f9c2a7e6b8d1f0a3c4b5e6d7c8b9a0f1e2d3c4b5a69", FileType: "exe"},
			{Call: "Install-ChocolateyPackage", Arch: "64", URL: "https://github.com/example/notepad-plus/releases/download/v8.6.2/npp.8.6.2.Installer.x64.exe", ChecksumType: "sha256", Checksum: sha("1", 64), FileType: "exe"},
		}},
		{file: "zip.ps1", want: []Installer{
			{Call: "Install-ChocolateyZipPackage", Arch: "32", URL: "https://downloads.example.org/cli/2.4.1/example-cli_2.4.1_windows_386.zip", ChecksumType: "sha256", Checksum: sha("2", 64), FileType: "zip"},
			{Call: "Install-ChocolateyZipPackage", Arch: "64", URL: "https://downloads.example.org/cli/2.4.1/example-cli_2.4.1_windows_amd64.zip", ChecksumType: "sha256", Checksum: sha("3", 64), FileType: "zip"},
		}},
		{file: "variables.ps1", env: Env{PackageName: "example-browser", PackageVersion: "121.0.2"}, want: []Installer{
			{Call: "Install-ChocolateyPackage", Arch: "32", URL: "https://dl.example.com/browser/121.0.2/ExampleBrowser-121.0.2-x86.msi", ChecksumType: "sha512", Checksum: sha("4", 127) + "a", FileType: "msi"},
			{Call: "Install-ChocolateyPackage", Arch: "64", URL: "https://dl.example.com/browser/121.0.2/ExampleBrowser-121.0.2-x64.msi", ChecksumType: "sha512", Checksum: sha("5", 127) + "b", FileType: "msi"},
		}},
		// Without the version choco sets, the URLs are not known.
		{file: "variables.ps1", skipped: 2},
		// One URL for both: two downloads, from two literals ("$url",
		// "$url64"), each of which a rewrite must change.
		{file: "positional.ps1", want: []Installer{
			{Call: "Install-ChocolateyPackage", Arch: "32", URL: "http://www.example.net/files/oldtool-setup-1.0.exe", ChecksumType: "sha256", Checksum: sha("6", 64), FileType: "exe"},
			{Call: "Install-ChocolateyPackage", Arch: "64", URL: "http://www.example.net/files/oldtool-setup-1.0.exe", ChecksumType: "sha256", Checksum: sha("6", 64), FileType: "exe"},
		}},
		{file: "webfile.ps1", want: []Installer{
			{Call: "Get-ChocolateyWebFile", Arch: "32", URL: "https://cdn.example.io/fonttool/fonttool-3.2.exe", ChecksumType: "sha256", Checksum: sha("7", 64)},
			{Call: "Get-ChocolateyWebFile", Arch: "64", URL: "https://cdn.example.io/fonttool/fonttool-3.2-x64.exe", ChecksumType: "sha256", Checksum: sha("8", 64)},
		}},
		{file: "md5.ps1", skipped: 2},
		{file: "unreadable.ps1", skipped: 2},
		{file: "vsix.ps1", want: []Installer{
			{Call: "Install-ChocolateyVsixPackage", Arch: "32", URL: "https://marketplace.example.com/_apis/public/gallery/publishers/ex/vsextensions/ext/1.0/vspackage", ChecksumType: "sha256", Checksum: sha("a", 64), FileType: "vsix"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file+"/"+tt.env.PackageVersion, func(t *testing.T) {
			src, err := os.ReadFile(filepath.Join("testdata", "scripts", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseInstallScript(strings.NewReader(string(src)), tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Installers) != len(tt.want) {
				t.Fatalf("found %d downloads, want %d:\n%+v\nskipped: %q", len(got.Installers), len(tt.want), got.Installers, got.Skipped)
			}
			for i, w := range tt.want {
				g := got.Installers[i]
				span := g.URLSpan
				g.URLSpan = Span{}
				if g != w {
					t.Errorf("download %d:\n got %+v\nwant %+v", i, g, w)
				}
				// The span names a literal whose value is the URL (a
				// literal URL, or one that puts variables in): a
				// rewrite of it changes that URL and nothing else.
				if span.IsZero() {
					t.Errorf("download %d: no span", i)
				} else if lit := string(src[span.Start:span.End]); !strings.Contains(lit, "$") && strings.Trim(lit, `'"`) != w.URL {
					t.Errorf("download %d: its span is %q, not the URL's literal", i, lit)
				}
			}
			if len(got.Skipped) != tt.skipped {
				t.Errorf("skipped %d (%q), want %d", len(got.Skipped), got.Skipped, tt.skipped)
			}
		})
	}
}

// The forms, one at a time.
func TestParseInstallScriptForms(t *testing.T) {
	const sum = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		name, script string
		urls         []string // the URLs learnt, in order
	}{
		{"named", `Install-ChocolateyPackage -PackageName x -FileType exe -Url https://a.example/x.exe -Checksum ` + sum + ` -ChecksumType sha256`, []string{"https://a.example/x.exe"}},
		{"colon form", `Install-ChocolateyPackage -PackageName:'x' -Url:'https://a.example/x.exe' -Checksum:'` + sum + `' -ChecksumType:'SHA256'`, []string{"https://a.example/x.exe"}},
		{"case and prefix of names", "install-chocolateyPACKAGE -url 'https://a.example/x.exe' -CHECKSUM '" + strings.ToUpper(sum) + "' -checksumtype sha256", []string{"https://a.example/x.exe"}},
		{"positional zip", `Install-ChocolateyZipPackage 'x' 'https://a.example/x.zip' "$env:TEMP" -Checksum '` + sum + `' -ChecksumType sha256`, []string{"https://a.example/x.zip"}},
		{"positional web file", `Get-ChocolateyWebFile 'x' 'C:\x.exe' 'https://a.example/x.exe' -Checksum '` + sum + `' -ChecksumType sha256`, []string{"https://a.example/x.exe"}},
		{"concatenation", "$base = 'https://a.example/'\n$url = $base + 'v1/' + \"x.exe\"\nInstall-ChocolateyPackage -Url $url -Checksum '" + sum + "' -ChecksumType sha256", []string{"https://a.example/v1/x.exe"}},
		{"parenthesized argument", "$v='1.0'\nInstall-ChocolateyPackage -Url ('https://a.example/' + $v + '/x.exe') -Checksum '" + sum + "' -ChecksumType sha256", []string{"https://a.example/1.0/x.exe"}},
		{"url64 only", "Install-ChocolateyPackage -Url64bit 'https://a.example/x64.exe' -Checksum64 '" + sum + "' -ChecksumType64 sha256", []string{"https://a.example/x64.exe"}},
		{"64-bit type from the 32-bit one", "Install-ChocolateyPackage -Url 'https://a.example/x.exe' -Url64 'https://a.example/x64.exe' -Checksum '" + sum + "' -Checksum64 '" + sum + "' -ChecksumType sha256", []string{"https://a.example/x.exe", "https://a.example/x64.exe"}},
		{"table read through members", "$a = @{ url = 'https://a.example/x.exe'; sum = '" + sum + "' }\nInstall-ChocolateyPackage -Url $a.url -Checksum $a['sum'] -ChecksumType sha256", []string{"https://a.example/x.exe"}},
		{"quoted keys and nested tables", "$p = @{ 'url' = 'https://a.example/x.exe'; \"checksum\" = '" + sum + "'; checksumType = 'sha256'; extra = @{ a = @{ b = 1 } }; list = @(1,2) }\nInstall-ChocolateyPackage @p", []string{"https://a.example/x.exe"}},
		{"inside a block", "try {\n  if ($true) { Install-ChocolateyPackage -Url 'https://a.example/x.exe' -Checksum '" + sum + "' -ChecksumType sha256 }\n} catch { throw }", []string{"https://a.example/x.exe"}},
		{"later assignment wins", "$url = 'https://a.example/old.exe'\n$url = 'https://a.example/new.exe'\nInstall-ChocolateyPackage -Url $url -Checksum '" + sum + "' -ChecksumType sha256", []string{"https://a.example/new.exe"}},
		{"comments", "<# Install-ChocolateyPackage -Url 'https://a.example/commented.exe' -Checksum '" + sum + "' -ChecksumType sha256 #>\n# Install-ChocolateyPackage -Url 'https://a.example/also.exe'\nInstall-ChocolateyPackage -Url 'https://a.example/x.exe' -Checksum '" + sum + "' -ChecksumType sha256 # trailing", []string{"https://a.example/x.exe"}},
		{"escapes in double quotes", "$v = '2'\nInstall-ChocolateyPackage -Url \"https://a.example/`$x/$v/x.exe\" -Checksum '" + sum + "' -ChecksumType sha256", []string{"https://a.example/$x/2/x.exe"}},
		{"single quotes do not put in", "Install-ChocolateyPackage -Url 'https://a.example/$v/x.exe' -Checksum '" + sum + "' -ChecksumType sha256", []string{"https://a.example/$v/x.exe"}},
		{"here-string", "$url = @'\nhttps://a.example/x.exe\n'@\nInstall-ChocolateyPackage -Url $url -Checksum '" + sum + "' -ChecksumType sha256", []string{"https://a.example/x.exe"}},
		{"scoped variable", "$script:url = 'https://a.example/x.exe'\nInstall-ChocolateyPackage -Url $url -Checksum '" + sum + "' -ChecksumType sha256", []string{"https://a.example/x.exe"}},
		{"switches between arguments", "Install-ChocolateyZipPackage -PackageName x -UseOriginalLocation 'https://a.example/x.zip' -Checksum '" + sum + "' -ChecksumType sha256", []string{"https://a.example/x.zip"}},
		{"CRLF and a BOM", "\xef\xbb\xbf$url = 'https://a.example/x.exe'\r\nInstall-ChocolateyPackage -Url $url `\r\n  -Checksum '" + sum + "' -ChecksumType sha256\r\n", []string{"https://a.example/x.exe"}},
		{"a method on the URL", "Install-ChocolateyPackage -Url ('https://a.example/X.exe'.ToLower()) -Checksum '" + sum + "' -ChecksumType sha256", nil},
		{"a format operator", "$u = 'https://a.example/{0}.exe' -f 'x'\nInstall-ChocolateyPackage -Url $u -Checksum '" + sum + "' -ChecksumType sha256", nil},
		{"an unknown variable", "Install-ChocolateyPackage -Url \"https://a.example/$nope/x.exe\" -Checksum '" + sum + "' -ChecksumType sha256", nil},
		{"a subexpression", "Install-ChocolateyPackage -Url \"https://a.example/$(Get-Date)/x.exe\" -Checksum '" + sum + "' -ChecksumType sha256", nil},
		{"an unknown splat", "Install-ChocolateyPackage @nothing -Checksum '" + sum + "' -ChecksumType sha256", nil},
		{"not http", "Install-ChocolateyPackage -Url 'ftp://a.example/x.exe' -Checksum '" + sum + "' -ChecksumType sha256", nil},
		{"a short checksum", "Install-ChocolateyPackage -Url 'https://a.example/x.exe' -Checksum 'abc' -ChecksumType sha256", nil},
		{"no checksum", "Install-ChocolateyPackage -Url 'https://a.example/x.exe'", nil},
		{"an unknown checksum type", "$t = Get-Type\nInstall-ChocolateyPackage -Url 'https://a.example/x.exe' -Checksum '" + sum + "' -ChecksumType $t", nil},
		{"unterminated", "Install-ChocolateyPackage -Url 'https://a.example/x.exe", nil},
		{"the local file helper downloads nothing", "Install-ChocolateyInstallPackage -PackageName x -FileType exe -File 'C:\\x.exe' -Checksum '" + sum + "' -ChecksumType sha256", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseInstallScript(strings.NewReader(tt.script), Env{})
			if err != nil {
				t.Fatal(err)
			}
			var urls []string
			for _, in := range got.Installers {
				urls = append(urls, in.URL)
				if in.Checksum != sum {
					t.Errorf("%s: checksum %q", in.URL, in.Checksum)
				}
			}
			if !slices.Equal(urls, tt.urls) {
				t.Fatalf("learnt %q, want %q (skipped %q)", urls, tt.urls, got.Skipped)
			}
		})
	}
}

func TestParseInstallScriptLimits(t *testing.T) {
	if _, err := ParseInstallScript(strings.NewReader(strings.Repeat("#", maxScriptBytes+1)), Env{}); err == nil {
		t.Fatal("a script over the limit was read")
	}
	if _, err := ParseInstallScript(strings.NewReader("$x = '\xff\xfe'"), Env{}); err == nil {
		t.Fatal("a script that is not UTF-8 was read")
	}
	// Deep nesting and many downloads cost bounded work and memory.
	deep := "$a = " + strings.Repeat("@{ b = (", 5000) + "1" + strings.Repeat(")}", 5000)
	if _, err := ParseInstallScript(strings.NewReader(deep), Env{}); err != nil {
		t.Fatal(err)
	}
	var many strings.Builder
	for i := range 100 {
		many.WriteString("Install-ChocolateyPackage -Url 'https://a.example/" + string(rune('a'+i%26)) + strings.Repeat("x", i) + ".exe' -Checksum '" + strings.Repeat("0", 64) + "' -ChecksumType sha256\n")
	}
	got, err := ParseInstallScript(strings.NewReader(many.String()), Env{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Installers) != maxInstallers {
		t.Fatalf("%d downloads kept, want the limit %d", len(got.Installers), maxInstallers)
	}
}

// A value that doubles with each line is bounded: a few hundred bytes of
// script must not make the parser allocate without end, and what comes
// after the bomb is still read. Each form is a way of putting strings
// together: '+', a double-quoted string, a table's entry, an argument
// written in pieces.
func TestParseInstallScriptValueBounds(t *testing.T) {
	const sum = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	after := "Install-ChocolateyPackage -Url 'https://a.example/x.exe' -Checksum '" + sum + "' -ChecksumType sha256\n"
	tests := []struct{ name, double, use string }{
		{"plus", "$a = $a + $a\n", "Install-ChocolateyPackage -Url ('https://v.example/' + $a) -Checksum '" + sum + "' -ChecksumType sha256\n"},
		{"double-quoted", "$a = \"$a$a\"\n", "Install-ChocolateyPackage -Url \"https://v.example/$a\" -Checksum '" + sum + "' -ChecksumType sha256\n"},
		{"table entry", "$t = @{ u = $a + $a }\n$a = $t.u\n", "Install-ChocolateyPackage @{ url = 'https://v.example/' + $a }\n"},
		{"argument in pieces", "$a = $a + $a\n", "Install-ChocolateyPackage -Url https://v.example/$a$a -Checksum '" + sum + "' -ChecksumType sha256\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			b.WriteString("$a = '" + strings.Repeat("x", 64) + "'\n")
			for range 22 { // 64 B * 2^22: 256 MiB, were it not bounded
				b.WriteString(tt.double)
			}
			b.WriteString(tt.use + after)
			var before, done runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			got, err := ParseInstallScript(strings.NewReader(b.String()), Env{})
			runtime.ReadMemStats(&done)
			if err != nil {
				t.Fatal(err)
			}
			if alloc := done.TotalAlloc - before.TotalAlloc; alloc > 2*maxBuiltBytes {
				t.Errorf("a %d-byte script allocated %d MiB", b.Len(), alloc>>20)
			}
			if len(got.Installers) != 1 || got.Installers[0].URL != "https://a.example/x.exe" {
				var urls []string
				for _, in := range got.Installers {
					urls = append(urls, clip(in.URL))
				}
				t.Errorf("learnt %q, want the download after the bomb alone", urls)
			}
			if !slices.ContainsFunc(got.Skipped, func(s string) bool { return strings.Contains(s, "longer than") }) {
				t.Errorf("no reason says a value was too long: %q", got.Skipped)
			}
		})
	}
}

// A parse's work is bounded: one big table splatted on every argument of
// a call (85,000 times a table of 4,000 entries) took 14 s of CPU. Out of
// steps, the parse stops, and the call it was reading teaches nothing
// (its later arguments were not read); what came before is learnt.
func TestParseInstallScriptWorkBound(t *testing.T) {
	const sum = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	before := "Install-ChocolateyPackage -Url 'https://a.example/x.exe' -Checksum '" + sum + "' -ChecksumType sha256\n"
	tests := []struct{ name, script string }{
		{"a table splatted on every argument", func() string {
			var b strings.Builder
			b.WriteString(before + "$t = @{")
			for i := range 4000 {
				fmt.Fprintf(&b, "k%d=1;", i)
			}
			b.WriteString("url='https://a.example/late.exe';checksum='" + sum + "';checksumtype='sha256'}\nInstall-ChocolateyPackage")
			for b.Len() < maxScriptBytes-4 {
				b.WriteString(" @t")
			}
			return b.String() + "\n"
		}()},
		{"many calls that splat a big table", func() string {
			var b strings.Builder
			b.WriteString(before + "$t = @{")
			for i := range 4000 {
				fmt.Fprintf(&b, "k%d=1;", i)
			}
			b.WriteString("}\n")
			for b.Len() < maxScriptBytes-100 {
				b.WriteString("Get-ChocolateyWebFile @t\n")
			}
			return b.String()
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			type result struct {
				sc  *Script
				err error
			}
			done := make(chan result, 1)
			go func() {
				sc, err := ParseInstallScript(strings.NewReader(tt.script), Env{})
				done <- result{sc, err}
			}()
			var got *Script
			select {
			case r := <-done:
				if r.err != nil {
					t.Fatal(r.err)
				}
				got = r.sc
			case <-time.After(20 * time.Second):
				t.Fatalf("a %d KiB script was still being read after 20 s", len(tt.script)>>10)
			}
			var urls []string
			for _, in := range got.Installers {
				urls = append(urls, in.URL)
			}
			if !slices.Equal(urls, []string{"https://a.example/x.exe"}) {
				t.Errorf("learnt %q, want the download before the costly part alone", urls)
			}
			if !slices.ContainsFunc(got.Skipped, func(s string) bool { return strings.Contains(s, "steps") }) {
				t.Errorf("no reason says the script was too costly to read: %q", got.Skipped)
			}
		})
	}
}
