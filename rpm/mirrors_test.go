package rpm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestParseMetalink(t *testing.T) {
	raw, err := os.ReadFile("testdata/metalink.xml")
	if err != nil {
		t.Fatal(err)
	}
	l, err := ParseMirrorList(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if !l.Metalink || len(l.Repomd) != 2 {
		t.Fatalf("metalink %v with %d versions of repomd.xml, want 2 (current and an alternate)", l.Metalink, len(l.Repomd))
	}
	cur, _ := l.Repomd[0].Hash()
	alt, _ := l.Repomd[1].Hash()
	if cur.Algo != "sha256" || !strings.HasPrefix(cur.Hex, "4c1d9e2b") || l.Repomd[0].Size != 7512 || l.Repomd[0].Timestamp != 1796558402 {
		t.Fatalf("current repomd.xml %+v, hash %+v", l.Repomd[0], cur)
	}
	if !strings.HasPrefix(alt.Hex, "0d1e2f3a") || l.Repomd[1].Size != 7498 || len(l.Repomd[1].Hashes) != 3 {
		t.Fatalf("alternate %+v (md5 is left out, sha1/sha256/sha512 kept)", l.Repomd[1])
	}
	want := []string{
		"https://ftp.fau.de/fedora/linux/updates/40/Everything/x86_64/",
		"http://ftp.fau.de/fedora/linux/updates/40/Everything/x86_64/",
		"https://mirror.nl.leaseweb.net/fedora/linux/updates/40/Everything/x86_64/",
		"http://fedora.mirrors.ovh.net/linux/updates/40/Everything/x86_64/",
	}
	if len(l.Mirrors) != len(want) {
		t.Fatalf("mirrors %+v, want %v (rsync left out)", l.Mirrors, want)
	}
	for i, m := range l.Mirrors {
		if m.Base != want[i] {
			t.Fatalf("mirror %d base %q, want %q", i, m.Base, want[i])
		}
	}
	if l.Mirrors[2].Preference != 99 || l.Mirrors[2].Location != "NL" || !l.Mirrors[2].HTTPS() {
		t.Fatalf("mirror 2 %+v", l.Mirrors[2])
	}

	// Reordered: the mirrors as asked, the rest after; everything else
	// byte for byte.
	out, err := l.Rewrite(raw, []int{3, 1})
	if err != nil {
		t.Fatal(err)
	}
	again, err := ParseMirrorList(bytes.NewReader(out))
	if err != nil {
		t.Fatalf("the rewritten metalink does not parse: %v\n%s", err, out)
	}
	order := []int{3, 1, 0, 2}
	for n, i := range order {
		if again.Mirrors[n].Base != l.Mirrors[i].Base || again.Mirrors[n].Preference != 100-n {
			t.Fatalf("rewritten mirror %d: %+v, want %s at preference %d", n, again.Mirrors[n], l.Mirrors[i].Base, 100-n)
		}
	}
	cut := func(b []byte) (string, string) {
		s := string(b)
		return s[:strings.Index(s, "<resources")], s[strings.Index(s, "</resources>"):]
	}
	h1, t1 := cut(raw)
	h2, t2 := cut(out)
	if h1 != h2 || t1 != t2 {
		t.Fatalf("the rewrite changed more than the mirrors:\n%s", out)
	}
	if !strings.Contains(string(out), "rsync://ftp.fau.de/") {
		t.Fatal("the rewrite dropped the rsync mirror")
	}
}

func TestParseMirrorlist(t *testing.T) {
	raw, err := os.ReadFile("testdata/mirrorlist.txt")
	if err != nil {
		t.Fatal(err)
	}
	l, err := ParseMirrorList(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if l.Metalink || len(l.Repomd) != 0 || len(l.Mirrors) != 3 {
		t.Fatalf("%+v: want 3 mirrors, no hashes", l)
	}
	if l.Mirrors[2].Base != "http://mirror.netcologne.de/almalinux/9.5/BaseOS/x86_64/os/" || l.Mirrors[2].Listed != "http://mirror.netcologne.de/almalinux/9.5/BaseOS/x86_64/os" {
		t.Fatalf("a base without its slash: %+v", l.Mirrors[2])
	}
	out, err := l.Rewrite(raw, []int{2})
	if err != nil {
		t.Fatal(err)
	}
	again, err := ParseMirrorList(bytes.NewReader(out))
	if err != nil || again.Mirrors[0].Base != l.Mirrors[2].Base || again.Mirrors[1].Base != l.Mirrors[0].Base {
		t.Fatalf("rewritten: %v %+v\n%s", err, again, out)
	}
}

func TestMirrorListRefused(t *testing.T) {
	meta := func(hashes, urls string) string {
		return `<?xml version="1.0"?><metalink version="3.0" xmlns="http://www.metalinker.org/"><files><file name="repomd.xml"><size>10</size><verification>` +
			hashes + `</verification><resources>` + urls + `</resources></file></files></metalink>`
	}
	good := `<hash type="sha256">` + strings.Repeat("a", 64) + `</hash>`
	url := `<url protocol="http">http://m.example/r/repodata/repomd.xml</url>`
	var huge strings.Builder
	for i := range MaxMirrors + 1 {
		fmt.Fprintf(&huge, "http://m%d.example/r/\n", i)
	}
	for _, tc := range []struct {
		name, list string
		want       error
		says       string
	}{
		{"no usable mirror (metalink)", meta(good, `<url protocol="rsync">rsync://m.example/r/repodata/repomd.xml</url>`), ErrNoMirror, ""},
		{"no usable mirror (list)", "# nothing\nftp://m.example/r/\n", ErrNoMirror, ""},
		{"empty", "", ErrNoMirror, ""},
		{"a sha256 too short", meta(`<hash type="sha256">abcd</hash>`, url), nil, "not 64 hex digits"},
		{"a sha256 not hex", meta(`<hash type="sha256">`+strings.Repeat("z", 64)+`</hash>`, url), nil, "not 64 hex digits"},
		{"only md5", meta(`<hash type="md5">`+strings.Repeat("a", 32)+`</hash>`, url), nil, "no sha256"},
		{"no repomd.xml entry", `<metalink><files><file name="other"/></files></metalink>`, nil, "no entry for repomd.xml"},
		{"a negative size", strings.Replace(meta(good, url), "<size>10", "<size>-1", 1), nil, "not a number"},
		{"too many mirrors", huge.String(), ErrTooManyMirrors, ""},
		{"too many bytes", "# " + strings.Repeat("x", maxListLine-10) + "\n" + strings.Repeat("#\n", MaxMirrorListBytes/2+1), ErrListTooLarge, ""},
		{"an HTML page", "<html><body>captive portal</body></html>", nil, "no <metalink>"},
		{"a line that is no URL", "Service Unavailable\n", nil, "is not a URL"},
		{"a line too long", "http://m.example/" + strings.Repeat("a", maxListLine) + "\n", nil, "too long"},
		{"entities", `<!DOCTYPE m [<!ENTITY x "y">]><metalink>&x;</metalink>`, nil, "entity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseMirrorList(strings.NewReader(tc.list))
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) || tc.says != "" && !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("err %v, want %v %q", err, tc.want, tc.says)
			}
		})
	}
}
