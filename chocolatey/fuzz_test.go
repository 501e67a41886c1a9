package chocolatey

import (
	"bytes"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
)

func FuzzParseFeed(f *testing.F) {
	for _, name := range []string{"testdata/feed-chocolatey.xml", "testdata/feed-nugetgallery.xml", "testdata/entry.xml"} {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		feed, err := ParseFeed(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, e := range feed.Entries {
			if !ValidID(e.ID) || !ValidVersion(e.Version) || e.ContentSrc == "" {
				t.Fatalf("accepted a bad entry %+v", e)
			}
		}
	})
}

// FuzzParseInstallScript: whatever the script, what is learnt is an
// http(s) URL with a SHA256 or SHA512 checksum, within the limits; and a
// rewrite of the URLs' literals reads back as the new URLs with the same
// checksums (what a hub's internalization relies on).
func FuzzParseInstallScript(f *testing.F) {
	for _, name := range []string{"splatted", "zip", "variables", "positional", "webfile", "md5", "unreadable", "vsix"} {
		if b, err := os.ReadFile("testdata/scripts/" + name + ".ps1"); err == nil {
			f.Add(b)
		}
	}
	env := Env{PackageName: "x", PackageVersion: "1.2.3"}
	f.Fuzz(func(t *testing.T, data []byte) {
		sc, err := ParseInstallScript(bytes.NewReader(data), env)
		if err != nil {
			return
		}
		if len(sc.Installers) > maxInstallers || len(sc.Skipped) > maxInstallers {
			t.Fatalf("%d downloads, %d skipped: past the limit", len(sc.Installers), len(sc.Skipped))
		}
		repl := map[Span]string{}
		want := map[string]string{} // new URL -> checksum
		sums := map[Span]string{}   // a literal both downloads of a call use, with two checksums, is not rewritten (Internalize)
		for _, in := range sc.Installers {
			if s, ok := sums[in.URLSpan]; ok && s != in.Checksum {
				sums[in.URLSpan] = ""
			} else if !ok {
				sums[in.URLSpan] = in.Checksum
			}
		}
		for i, in := range sc.Installers {
			u, err := url.Parse(in.URL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				t.Fatalf("learnt a URL that is none: %q", in.URL)
			}
			if n := map[string]int{"sha256": 64, "sha512": 128}[in.ChecksumType]; n == 0 || len(in.Checksum) != n || !isHex(in.Checksum) || strings.ToLower(in.Checksum) != in.Checksum {
				t.Fatalf("learnt checksum %s %q", in.ChecksumType, in.Checksum)
			}
			sp := in.URLSpan
			if sp.IsZero() {
				continue
			}
			if sp.Start < 0 || sp.End > len(data) || sp.Start >= sp.End {
				t.Fatalf("span %d-%d outside the %d-byte script", sp.Start, sp.End, len(data))
			}
			if _, dup := repl[sp]; dup || sums[sp] == "" {
				continue
			}
			nu := fmt.Sprintf("http://hub.test/_warren/installers/%d/x'y.exe", i)
			repl[sp] = nu
			want[nu] = in.Checksum
		}
		if len(repl) == 0 {
			return
		}
		out, err := RewriteScript(data, repl)
		if err != nil {
			return // spans that overlap are refused, not rewritten
		}
		again, err := ParseInstallScript(bytes.NewReader(out), env)
		if err != nil {
			t.Fatalf("the rewritten script does not read: %v", err)
		}
		got := map[string]string{}
		for _, in := range again.Installers {
			got[in.URL] = in.Checksum
		}
		for u, sum := range want {
			if s, ok := got[u]; !ok && len(again.Installers) < maxInstallers {
				t.Fatalf("rewrote to %s, which the rewritten script does not name:\n%s", u, out)
			} else if ok && s != sum {
				t.Fatalf("%s: checksum %s after the rewrite, %s before", u, s, sum)
			}
		}
	})
}

// FuzzReadPackage: a package that reads names a valid id and version.
func FuzzReadPackage(f *testing.F) {
	script, _ := os.ReadFile("testdata/scripts/splatted.ps1")
	f.Add(testPackage(f, "npp", "8.6.2", string(script)))
	f.Add(testPackage(f, "x", "1.0", ""))
	f.Fuzz(func(t *testing.T, data []byte) {
		pkg, err := ReadPackage(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		if !ValidID(pkg.ID) || !ValidVersion(pkg.Version) || len(pkg.Script) > maxScriptBytes {
			t.Fatalf("read %q %q, a %d-byte script", pkg.ID, pkg.Version, len(pkg.Script))
		}
		_, _ = pkg.Installers()
	})
}

// FuzzEditEntries: an edited page still parses, with the same entries
// (ids and versions) in the same order.
func FuzzEditEntries(f *testing.F) {
	for _, name := range []string{"testdata/feed-chocolatey.xml", "testdata/feed-nugetgallery.xml", "testdata/entry.xml"} {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		before, err := ParseFeed(bytes.NewReader(data))
		if err != nil {
			return
		}
		out, err := EditEntries(data, func(Entry) (EntryEdit, bool) {
			return EntryEdit{HashB64: strings.Repeat("B", 86) + "==", Size: 7, ContentSrc: "http://hub.test/p?a=1&b='2'"}, true
		})
		if err != nil {
			return // what ParseFeed skips past, EditEntries may refuse: nothing is edited
		}
		after, err := ParseFeed(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("the edited page does not parse: %v\n%s", err, out)
		}
		if len(after.Entries) != len(before.Entries) {
			t.Fatalf("%d entries after the edit, %d before", len(after.Entries), len(before.Entries))
		}
		for i := range after.Entries {
			if after.Entries[i].ID != before.Entries[i].ID || after.Entries[i].Version != before.Entries[i].Version {
				t.Fatalf("entry %d is another after the edit", i)
			}
		}
	})
}
