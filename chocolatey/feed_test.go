package chocolatey

import (
	"bytes"
	"errors"
	"os"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/warren-cache/warren/internal/xmlbound"
)

const (
	hashGit243 = "6478d304964b63aca557004f3d945e9ee4a411242bd15704645c80ddcca787fda256916023510233ef1d43fbd0ceabf58e0a090a7bbcf129a1ca7c451c9985d9"
	hashGit242 = "27ba0fb433fcb8e2e6abf5d7be4243e0c149d234c1bbb45fb6cf11f107e832aec51065e5f579b893fc087e2fea3ca15cdc0b0cb6f799c06e3c9f25db8f5a135b"
)

func TestParseFeedGolden(t *testing.T) {
	tests := []struct {
		file string
		base string
		want []Entry
	}{
		{"testdata/feed-chocolatey.xml", "https://community.chocolatey.org/api/v2/", []Entry{
			{ID: "git", Version: "2.43.0", ContentSrc: "https://community.chocolatey.org/api/v2/package/git/2.43.0", HashAlgo: "sha512", HashHex: hashGit243, Size: 6104},
			{ID: "git", Version: "2.42.0", ContentSrc: "https://community.chocolatey.org/api/v2/package/git/2.42.0", HashAlgo: "sha512", HashHex: hashGit242, Size: 6100},
		}},
		{"testdata/feed-nugetgallery.xml", "https://www.nuget.org/api/v2", []Entry{
			{ID: "Newtonsoft.Json", Version: "13.0.3", ContentSrc: "https://www.nuget.org/api/v2/package/Newtonsoft.Json/13.0.3", HashAlgo: "sha512", HashHex: hashGit243, Size: 2434},
		}},
		{"testdata/entry.xml", "https://community.chocolatey.org/api/v2/", []Entry{
			{ID: "7zip.install", Version: "23.1.0", ContentSrc: "https://community.chocolatey.org/api/v2/package/7zip.install/23.1.0", HashAlgo: "sha512", HashHex: hashGit242, Size: -1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := os.ReadFile(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			feed, err := ParseFeed(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			if feed.Base != tt.base || len(feed.Skipped) != 0 {
				t.Errorf("base %q, skipped %v", feed.Base, feed.Skipped)
			}
			if !reflect.DeepEqual(feed.Entries, tt.want) {
				t.Errorf("got  %+v\nwant %+v", feed.Entries, tt.want)
			}
		})
	}
}

func TestParseFeedSkipsBadEntries(t *testing.T) {
	entry := func(id, version, hash, algo string) string {
		return `<entry><id>x</id><content type="application/zip" src="https://u/p" /><m:properties><d:Id>` + id +
			`</d:Id><d:Version>` + version + `</d:Version><d:PackageHash>` + hash + `</d:PackageHash><d:PackageHashAlgorithm>` + algo +
			`</d:PackageHashAlgorithm></m:properties></entry>`
	}
	good := "ZHjTBJZLY6ylVwBPPZRenuSkESQr0VcEZFyA3cynh/2iVpFgI1ECM+8dQ/vQzqv1jgoJCnu88SmhynxFHJmF2Q=="
	feed := `<feed xmlns="http://www.w3.org/2005/Atom" xmlns:d="http://schemas.microsoft.com/ado/2007/08/dataservices" xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata">` +
		entry("ok", "1.0.0", good, "SHA512") +
		entry("../../etc", "1.0", good, "SHA512") +
		entry("odd id", "1.0", good, "SHA512") +
		entry("ok", "1.0/../..", good, "SHA512") +
		entry("ok", "2.0", good, "MD5") +
		entry("ok", "3.0", "not base64!", "SHA512") +
		entry("ok", "4.0", "AAAA", "SHA512") +
		`</feed>`
	f, err := ParseFeed(strings.NewReader(feed))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Entries) != 1 || f.Entries[0].Version != "1.0.0" {
		t.Fatalf("entries %+v", f.Entries)
	}
	wants := []string{"not a package id", "not a package id", "not a package version", "not supported", "not base64", "is 3 bytes"}
	if len(f.Skipped) != len(wants) {
		t.Fatalf("skipped %q", f.Skipped)
	}
	for i, w := range wants {
		if !strings.Contains(f.Skipped[i], w) {
			t.Errorf("skip %d = %q, want it to say %q", i, f.Skipped[i], w)
		}
	}
}

func TestParseFeedHostile(t *testing.T) {
	tests := map[string]string{
		"entity":   `<!DOCTYPE feed [<!ENTITY a "aaaaaaaaaa">]><feed xmlns="http://www.w3.org/2005/Atom"><title>&a;</title></feed>`,
		"unclosed": `<feed xmlns="http://www.w3.org/2005/Atom"><entry>`,
		"utf16":    `<?xml version="1.0" encoding="UTF-16"?><feed/>`,
	}
	for name, in := range tests {
		if _, err := ParseFeed(strings.NewReader(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// Deep nesting inside an entry is skipped iteratively: no stack blow-up,
	// and the entry (lacking everything) is skipped, not trusted.
	deep := `<feed xmlns="http://www.w3.org/2005/Atom"><entry>` + strings.Repeat("<x>", 100000) + strings.Repeat("</x>", 100000) + `</entry></feed>`
	f, err := ParseFeed(strings.NewReader(deep))
	if err == nil && len(f.Entries) != 0 {
		t.Errorf("deep: entries %+v", f.Entries)
	}
}

func TestValidIDAndVersion(t *testing.T) {
	for _, id := range []string{"git", "7zip.install", "Newtonsoft.Json", "a_b-c"} {
		if !ValidID(id) {
			t.Errorf("ValidID(%q) = false", id)
		}
	}
	for _, id := range []string{"", "..", "a/b", "a b", "-x", ".hidden", "a..b", "%2e%2e"} {
		if ValidID(id) {
			t.Errorf("ValidID(%q) = true", id)
		}
	}
	for _, v := range []string{"1.0", "2.43.0", "1.0.0-beta.1+build.5", "23.1.0"} {
		if !ValidVersion(v) {
			t.Errorf("ValidVersion(%q) = false", v)
		}
	}
	for _, v := range []string{"", "1.0/..", "..", "1 0", "v1.0;rm"} {
		if ValidVersion(v) {
			t.Errorf("ValidVersion(%q) = true", v)
		}
	}
}

// A feed page of nested elements or of one huge text is refused early with
// a clear error, whatever its size (the proxy reads up to 16 MiB of one).
func TestFeedBombsAreRefused(t *testing.T) {
	for _, tt := range []struct {
		name string
		doc  string
		want error
	}{
		{"nesting", `<feed xmlns="http://www.w3.org/2005/Atom">` + strings.Repeat("<entry>", 1<<20), xmlbound.ErrTooDeep},
		{"text", `<feed xmlns="http://www.w3.org/2005/Atom"><title>` + strings.Repeat(" ", 15<<20), xmlbound.ErrTokenTooLarge},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := ParseFeed(strings.NewReader(tt.doc))
			runtime.ReadMemStats(&after)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
			if n := after.TotalAlloc - before.TotalAlloc; n > 64<<20 {
				t.Fatalf("the parse allocated %d MiB before refusing the bomb", n>>20)
			}
		})
	}
}

func TestEditEntries(t *testing.T) {
	body, err := os.ReadFile("testdata/feed-chocolatey.xml")
	if err != nil {
		t.Fatal(err)
	}
	before, err := ParseFeed(bytes.NewReader(body))
	if err != nil || len(before.Entries) < 2 {
		t.Fatalf("fixture: %v", err)
	}
	first, second := before.Entries[0], before.Entries[1]
	newHash := strings.Repeat("A", 86) + "=="
	out, err := EditEntries(body, func(e Entry) (EntryEdit, bool) {
		switch e.ID + "/" + e.Version {
		case first.ID + "/" + first.Version:
			return EntryEdit{HashB64: newHash, Size: 4242}, true
		case second.ID + "/" + second.Version:
			return EntryEdit{ContentSrc: "http://hub.example:3142/chocolatey-original/api/v2/package/x/1.0?a=1&b=2"}, true
		}
		return EntryEdit{}, false
	})
	if err != nil {
		t.Fatal(err)
	}
	after, err := ParseFeed(bytes.NewReader(out))
	if err != nil || len(after.Entries) != len(before.Entries) {
		t.Fatalf("the edited page: %v, %d entries", err, len(after.Entries))
	}
	algo, hexHash, _ := PackageHash(newHash, "SHA512")
	if e := after.Entries[0]; e.HashHex != hexHash || e.HashAlgo != algo || e.ContentSrc != first.ContentSrc {
		t.Fatalf("first entry: %+v", e)
	}
	if first.Size >= 0 && after.Entries[0].Size != 4242 {
		t.Fatalf("first entry's size: %d", after.Entries[0].Size)
	}
	if e := after.Entries[1]; e.ContentSrc != "http://hub.example:3142/chocolatey-original/api/v2/package/x/1.0?a=1&b=2" || e.HashHex != second.HashHex {
		t.Fatalf("second entry: %+v", e)
	}
	for i := 2; i < len(after.Entries); i++ {
		if after.Entries[i] != before.Entries[i] {
			t.Fatalf("entry %d changed", i)
		}
	}
	// Nothing to change: the same bytes.
	same, err := EditEntries(body, func(Entry) (EntryEdit, bool) { return EntryEdit{}, false })
	if err != nil || !bytes.Equal(same, body) {
		t.Fatal("a page with nothing to edit changed")
	}
}
