package rpm

import (
	"errors"
	"io"
	"os"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/warren-cache/warren/internal/xmlbound"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		host, path string
		want       Kind
	}{
		{"mirror", "/fedora/39/x86_64/os/repodata/repomd.xml", KindRepomd},
		{"mirror", "/fedora/39/x86_64/os/repodata/repomd.xml.asc", KindRepomdSignature},
		{"mirror", "/fedora/39/x86_64/os/repodata/d6e6-primary.xml.gz", KindMetadata},
		{"mirror", "/fedora/39/x86_64/os/repodata/abc-comps.xml.xz", KindMetadata},
		{"mirror", "/fedora/39/x86_64/os/Packages/h/hello-2.12-1.fc39.x86_64.rpm", KindPackage},
		{"mirror", "/updates/drpms/hello-2.12-1_2.12-2.x86_64.drpm", KindPackage},
		{"mirrors.fedoraproject.org", "/metalink", KindMirrorList},
		{"mirrorlist.centos.org", "/", KindMirrorList},
		{"mirrors.almalinux.org", "/mirrorlist/9/baseos", KindMirrorList},
		{"mirrors.rockylinux.org", "/mirrorlist", KindMirrorList},
		{"cdn.amazonlinux.com", "/al2023/core/mirrors/2023.6/x86_64/mirror.list", KindMirrorList},
		{"mirror.example", "/almalinux/9/BaseOS/x86_64/os/repodata/repomd.xml", KindRepomd},
		{"mirror", "/fedora/39/x86_64/os/README", KindOther},
	}
	for _, tt := range tests {
		if got := Classify(tt.host, tt.path); got != tt.want {
			t.Errorf("Classify(%q, %q) = %v, want %v", tt.host, tt.path, got, tt.want)
		}
	}
}

func TestRepoBase(t *testing.T) {
	for in, want := range map[string]string{
		"/fedora/39/os/repodata/repomd.xml": "/fedora/39/os/",
		"/repodata/repomd.xml":              "/",
	} {
		if got := RepoBase(in); got != want {
			t.Errorf("RepoBase(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseRepomdGolden(t *testing.T) {
	f, err := os.Open("testdata/repomd.xml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data, err := ParseRepomd(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != 6 {
		t.Fatalf("got %d data entries, want 6", len(data))
	}
	p := data[0]
	if p.Type != "primary" || p.Size != 566 || p.Checksum.Algo != "sha256" || !IsPrimary(p.Href) ||
		p.Checksum.Hex != "d6e6581824bbe92250c57ba69b5c19328023241ccbbab20b9c3bc7c0a559a34c" {
		t.Errorf("primary entry = %+v", p)
	}
}

func TestParsePrimaryGolden(t *testing.T) {
	tests := []struct {
		file string
		want []Package
	}{
		{"testdata/primary.xml", []Package{{
			Href: "Packages/warren-e2e-hello-1.0-1.noarch.rpm", Size: 6131, Name: "warren-e2e-hello", Provides: []string{"warren-e2e-hello"},
			Arch: "noarch", Epoch: "0", Ver: "1.0", Rel: "1",
			Checksum: Checksum{"sha256", "0e8ff6596f9f4fa78300ebad1db7798e1750a2e9fd4aa17c686b556f7ece86a0"},
		}}},
		{"testdata/primary-mixed.xml", []Package{
			{Href: "Packages/b/big-2.0-1.x86_64.rpm", Size: 1024, Name: "big", Arch: "x86_64",
				Provides: []string{"big", "libbig.so.2()(64bit)"}, Requires: []string{"libfoo.so.1()(64bit)", "/bin/sh"}, Checksum: Checksum{"sha512", "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"}},
			{Href: "Packages/old-1-1.noarch.rpm", Base: "http://mirror.example/el7/", Size: 10, Name: "old", Checksum: Checksum{"sha1", "da39a3ee5e6b4b0d3255bfef95601890afd80709"}},
			{Href: "Packages/e/escaped-1-1.noarch.rpm", Size: 0, Name: "escaped & named", Checksum: Checksum{"sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			f, err := os.Open(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var got []Package
			if err := ParsePrimary(f, func(p Package) error { got = append(got, p); return nil }); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseHostileOrBroken(t *testing.T) {
	pkg := func(inner string) string {
		return `<metadata xmlns="http://linux.duke.edu/metadata/common"><package>` + inner + `</package></metadata>`
	}
	good := `<checksum type="sha256">` + strings.Repeat("a", 64) + `</checksum><size package="1"/>`
	tests := []struct {
		name, in, wantErr string
	}{
		{"md5", pkg(`<checksum type="md5">` + strings.Repeat("a", 32) + `</checksum><size package="1"/><location href="a.rpm"/>`), "not supported"},
		{"short hex", pkg(`<checksum type="sha256">abc</checksum><size package="1"/><location href="a.rpm"/>`), "hex digits"},
		{"dotdot", pkg(good + `<location href="../../etc/passwd"/>`), "clean relative path"},
		{"absolute", pkg(good + `<location href="/etc/passwd"/>`), "clean relative path"},
		{"bad base", pkg(good + `<location xml:base="file:///etc/" href="a.rpm"/>`), "not an http(s) URL"},
		{"no size", pkg(`<checksum type="sha256">` + strings.Repeat("a", 64) + `</checksum><location href="a.rpm"/>`), "size"},
		{"entity", `<!DOCTYPE m [<!ENTITY x "xxxxxxxx">]><metadata>` + "<package><name>&x;</name></package></metadata>", "entity"},
		{"unclosed", `<metadata><package>`, "unexpected EOF"},
		{"not xml", `Filename: x`, "no <metadata>"},
		{"latin1", `<?xml version="1.0" encoding="ISO-8859-1"?><metadata/>`, "not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ParsePrimary(strings.NewReader(tt.in), func(Package) error { return nil })
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	if err := ParsePrimary(strings.NewReader(pkg(`<checksum type="sha384">`+strings.Repeat("a", 96)+`</checksum><size package="1"/><location href="a.rpm"/>`)), func(Package) error { return nil }); !errors.Is(err, ErrUnsupportedChecksum) {
		t.Fatalf("sha384: err = %v, want ErrUnsupportedChecksum", err)
	}
	// Deep nesting is bounded by encoding/xml, not by our stack.
	deep := `<metadata><package>` + strings.Repeat("<x>", 20000) + strings.Repeat("</x>", 20000) + `</package></metadata>`
	if err := ParsePrimary(strings.NewReader(deep), func(Package) error { return nil }); err == nil {
		t.Fatal("deeply nested package accepted")
	}
	if _, err := ParseRepomd(strings.NewReader(`<repomd><data type="primary"><checksum type="sha256">` + strings.Repeat("a", 64) + `</checksum><location href="../x"/></data></repomd>`)); err == nil {
		t.Fatal("repomd with an escaping href accepted")
	}
}

// repeat is n bytes: head, then unit over and over, streamed, never built.
func repeat(head, unit string, n int64) io.Reader {
	return io.LimitReader(io.MultiReader(strings.NewReader(head), &cycle{unit: unit}), n)
}

type cycle struct {
	unit string
	off  int
}

func (c *cycle) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = c.unit[c.off]
		c.off = (c.off + 1) % len(c.unit)
	}
	return len(p), nil
}

// allocated is how many bytes fn allocated on the heap.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// The bombs a probe of the daemon found: 10 M nested elements in a
// repomd.xml (773 MiB held before the bound), and a primary.xml of nested
// elements or of 1 GiB of spaces (RSS past 1.5 GiB). Each is refused early
// with a clear error, having allocated a few MiB.
func TestBombsAreRefused(t *testing.T) {
	primary := func(r io.Reader) error { return ParsePrimary(r, func(Package) error { return nil }) }
	repomd := func(r io.Reader) error { _, err := ParseRepomd(r); return err }
	for _, tt := range []struct {
		name  string
		parse func(io.Reader) error
		doc   io.Reader
		want  error
	}{
		{"repomd nesting", repomd, repeat("<repomd>", "<data>", 30<<20), xmlbound.ErrTooDeep},
		{"primary nesting", primary, repeat("<metadata>", "<package>", 30<<20), xmlbound.ErrTooDeep},
		{"primary of spaces", primary, repeat("<metadata>", " ", 1<<30), xmlbound.ErrTokenTooLarge},
		{"description of a GiB", primary, repeat(`<metadata><package type="rpm"><description>`, "x", 1<<30), xmlbound.ErrTokenTooLarge},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			bytes := allocated(func() { err = tt.parse(tt.doc) })
			if !errors.Is(err, tt.want) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
			if bytes > 64<<20 {
				t.Fatalf("the parse allocated %d MiB before refusing the bomb", bytes>>20)
			}
			t.Logf("refused after %d KiB allocated: %v", bytes>>10, err)
		})
	}
}

func TestCompareEVR(t *testing.T) {
	v := func(e, ver, rel string) Package { return Package{Epoch: e, Ver: ver, Rel: rel} }
	for _, tt := range []struct {
		a, b Package
		want int
	}{
		{v("", "1.0", "1"), v("0", "1.0", "1"), 0},
		{v("0", "1.10", "1"), v("0", "1.9", "1"), 1},
		{v("1", "1.0", "1"), v("0", "9.9", "9"), 1},
		{v("0", "5.14.0", "362.el9"), v("0", "5.14.0", "70.el9"), 1},
		{v("0", "1.0~rc1", "1"), v("0", "1.0", "1"), -1},
		{v("0", "1.0a", "1"), v("0", "1.0", "1"), 1},
		{v("0", "1.0", "1"), v("0", "1.0.1", "1"), -1},
		{v("0", "2.0", "1.el9"), v("0", "2.0", "1.el9"), 0},
	} {
		if got := CompareEVR(tt.a, tt.b); got != tt.want {
			t.Errorf("CompareEVR(%+v, %+v) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := CompareEVR(tt.b, tt.a); got != -tt.want {
			t.Errorf("CompareEVR(%+v, %+v) = %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
}
