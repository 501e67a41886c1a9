package debian

import (
	"errors"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		path string
		want Kind
	}{
		{"/debian/dists/bookworm/InRelease", KindRelease},
		{"/debian/dists/bookworm/Release", KindRelease},
		{"/debian/dists/bookworm/Release.gpg", KindReleaseSignature},
		{"/debian/dists/bookworm/main/binary-amd64/Packages.xz", KindIndex},
		{"/debian/dists/bookworm/main/source/Sources.gz", KindIndex},
		{"/debian/dists/bookworm/main/i18n/Translation-en.bz2", KindIndex},
		{"/debian/dists/bookworm/main/binary-amd64/by-hash/SHA256/9a2c7e2b3f0d4c5e6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b", KindByHash},
		{"/debian/dists/bookworm/main/binary-amd64/by-hash/SHA256/short", KindIndex},
		{"/debian/dists/bookworm/main/binary-amd64/by-hash/MD5Sum/0ed6d4c8891eb86358b94bb35d9e4da4", KindIndex},
		{"/debian/pool/main/h/hello/hello_2.10-3_amd64.deb", KindPackage},
		{"/debian/pool/main/d/debian-installer/foo_1_amd64.udeb", KindPackage},
		{"/debian-debug/pool/main/h/hello/hello-dbgsym_2.10_amd64.ddeb", KindPackage},
		{"/debian/pool/main/h/hello/hello_2.10-3.dsc", KindSource},
		{"/debian/pool/main/h/hello/hello_2.10.orig.tar.gz", KindSource},
		{"/debian/pool/main/h/hello/hello_2.10.orig.tar.gz.asc", KindSource},
		{"/debian/pool/main/h/hello/hello_2.10-3.debian.tar.xz", KindSource},
		{"/debian/pool/main/f/foo/foo_1.0-1.diff.gz", KindSource},
		{"/downloads/release.tar.gz", KindOther}, // not named <source>_<version>
		{"/flat/Sources.xz", KindIndex},
		{"/flat/Release", KindRelease},
		{"/flat/Packages.gz", KindIndex},
		{"/flat/README", KindOther},
		{"/", KindOther},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			if got := Classify(tt.path); got != tt.want {
				t.Errorf("Classify(%q) = %v, want %v", tt.path, got, tt.want)
			}
		})
	}
}

func TestRepoRoot(t *testing.T) {
	tests := map[string]string{
		"/debian/dists/bookworm/main/binary-amd64/Packages.xz": "/debian/",
		"/dists/stable/Release":                                "/",
		"/flat/repo/Packages.gz":                               "/flat/repo/",
	}
	for in, want := range tests {
		if got := RepoRoot(in); got != want {
			t.Errorf("RepoRoot(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseReleaseGolden(t *testing.T) {
	f, err := os.Open("testdata/InRelease")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rel, err := ParseRelease(f)
	if err != nil {
		t.Fatal(err)
	}
	if rel.Suite != "stable" || rel.Codename != "bookworm" || !rel.AcquireByHash {
		t.Errorf("header fields = %+v", rel)
	}
	if len(rel.Files) != 5 {
		t.Fatalf("got %d SHA256 entries, want 5 (MD5Sum section must be ignored): %+v", len(rel.Files), rel.Files)
	}
	want := FileEntry{Path: "main/binary-amd64/Packages.xz", Size: 1576820, SHA256: "9a2c7e2b3f0d4c5e6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b"}
	if rel.Files[4] != want {
		t.Errorf("last entry = %+v, want %+v", rel.Files[4], want)
	}
}

func TestParseReleaseErrors(t *testing.T) {
	good := strings.Repeat("a", 64)
	tests := []struct {
		name, in, wantErr string
	}{
		{"bad hex", "SHA256:\n zz 1 main/Packages\n", "not a SHA256"},
		{"bad size", "SHA256:\n " + good + " -1 main/Packages\n", "non-negative"},
		{"too few fields", "SHA256:\n " + good + " 1\n", "want"},
		{"escaping path", "SHA256:\n " + good + " 1 ../../etc/passwd\n", "clean relative path"},
		{"absolute path", "SHA256:\n " + good + " 1 /etc/passwd\n", "clean relative path"},
		{"not a field", "Origin Debian\n", "neither a field"},
		{"long line", "Origin: " + strings.Repeat("x", maxLine+1) + "\n", "too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseRelease(strings.NewReader(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseReleaseUnsignedAndEscaped(t *testing.T) {
	good := strings.Repeat("b", 64)
	in := "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nSuite: x\n- -dash: escaped\nSHA256:\n " + good + " 7 main/Packages\n-----BEGIN PGP SIGNATURE-----\n\nxx\n-----END PGP SIGNATURE-----\n"
	rel, err := ParseRelease(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(rel.Files) != 1 || rel.Files[0].Size != 7 || rel.Suite != "x" {
		t.Fatalf("got %+v", rel)
	}
}

func TestParsePackagesFlatRepo(t *testing.T) {
	in := "Filename: ./hello_1.0_all.deb\nSize: 3\nSHA256: " + strings.Repeat("e", 64) + "\n"
	var got []Package
	if err := ParsePackages(strings.NewReader(in), func(p Package) error { got = append(got, p); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Filename != "hello_1.0_all.deb" {
		t.Fatalf("got %+v", got)
	}
}

func TestParsePackagesCallbackError(t *testing.T) {
	stop := errors.New("stop")
	in := "Filename: a.deb\nSize: 1\nSHA256: " + strings.Repeat("d", 64) + "\n"
	if err := ParsePackages(strings.NewReader(in), func(Package) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("err = %v, want the callback's", err)
	}
}

// indexParser is ParsePackages or ParseSources.
type indexParser func(io.Reader, func(Package) error) error

func TestParseIndexGolden(t *testing.T) {
	tests := []struct {
		file  string
		parse indexParser
		want  []Package
	}{
		{"testdata/Packages", ParsePackages, []Package{
			{Filename: "pool/main/h/hello/hello_2.10-3_amd64.deb", Size: 53604, SHA256: "3c3d5b5aa6b0c6d2b6f4c05fe9b6e5cbd2f1bbdd0d1ffb9fe7a51a36a3b0e8c1",
				Name: "hello", Version: "2.10-3", Depends: "libc6 (>= 2.34)"},
			// A real paragraph: zsh recommends libpcre3, which apt installs
			// with it by default.
			{Filename: "pool/main/z/zsh/zsh_5.9-4+b15_amd64.deb", Size: 907512, SHA256: "8362cc8bbb530d393950522dc8a9df5a860a61227d62ff669a7524056e6289a8",
				Name: "zsh", Version: "5.9-4+b15",
				Depends:    "zsh-common (= 5.9-4), libc6 (>= 2.34), libcap2 (>= 1:2.10), libtinfo6 (>= 6), debianutils (>= 5.3-1~)",
				Recommends: "libc6 (>= 2.35), libgdbm6 (>= 1.16), libncursesw6 (>= 6), libpcre3"},
			{Filename: "pool/main/h/hello-traditional/hello-traditional_2.10-6_amd64.deb", Size: 61048, SHA256: "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90",
				Name: "hello-traditional", Version: "2.10-6"},
		}},
		// Every Checksums-Sha256 file, joined to Directory; a paragraph with
		// only MD5 Files (ancient) gives nothing.
		{"testdata/Sources", ParseSources, []Package{
			{Filename: "pool/main/h/hello/hello_2.10-3.dsc", Size: 1847, SHA256: "a2d6ad4e8b4e4e2a9d7f0d9c1e1b3a4f5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f"},
			{Filename: "pool/main/h/hello/hello_2.10.orig.tar.gz", Size: 725946, SHA256: "31e066137a962676e89f69d1b65382de95a7ef7d914b8cb956f41ea72e0f516b"},
			{Filename: "pool/main/h/hello/hello_2.10.orig.tar.gz.asc", Size: 819, SHA256: "4ea69de913428a4034d30dcdcb34ab84f5c4a76acf9040f3091f0d3fac411b60"},
			{Filename: "pool/main/h/hello/hello_2.10-3.debian.tar.xz", Size: 12688, SHA256: "1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f901"},
			{Filename: "pool/main/hello-warren_1.0.dsc", Size: 489, SHA256: "1a1de85e1d8ffb5dea88a1bc5c90598d7c8cd75f313f78f0c5218f1a3793ac7c"},
			{Filename: "pool/main/hello-warren_1.0.tar.xz", Size: 528, SHA256: "9c7ce5c6338b587b76d269d165b6e9ab52af794b5b050f3b49c591afb00e4bb9"},
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
			if err := tt.parse(f, func(p Package) error { got = append(got, p); return nil }); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseIndexErrors(t *testing.T) {
	sha := strings.Repeat("c", 64)
	sums := "Checksums-Sha256:\n " + sha + " 10 a_1.dsc\n"
	tests := []struct {
		name    string
		parse   indexParser
		in      string
		wantErr string
	}{
		{"packages bad sha", ParsePackages, "Filename: a.deb\nSize: 1\nSHA256: nothex\n", "64-digit hex"},
		{"packages no size", ParsePackages, "Filename: a.deb\nSHA256: " + sha + "\n", "no Size"},
		{"packages no filename", ParsePackages, "Size: 1\nSHA256: " + sha + "\n", "no Filename"},
		{"packages bad size", ParsePackages, "Filename: a.deb\nSize: big\nSHA256: " + sha + "\n", "non-negative"},
		{"packages dotdot", ParsePackages, "Filename: ../x.deb\nSize: 1\nSHA256: " + sha + "\n", "clean relative path"},
		{"packages garbage line", ParsePackages, "Package: a\nthis is not a field\n", "packages line 2: \"this is not a field\" is neither a field"},
		{"sources no directory", ParseSources, "Package: a\n" + sums, "no Directory"},
		{"sources dotdot directory", ParseSources, "Directory: ../etc\n" + sums, "clean relative path"},
		{"sources path as name", ParseSources, "Directory: pool/a\nChecksums-Sha256:\n " + sha + " 10 ../../x.dsc\n", "not a plain name"},
		{"sources bad sha", ParseSources, "Directory: pool/a\nChecksums-Sha256:\n nothex 10 a_1.dsc\n", "64-digit hex"},
		{"sources bad size", ParseSources, "Directory: pool/a\nChecksums-Sha256:\n " + sha + " -1 a_1.dsc\n", "non-negative"},
		{"sources short line", ParseSources, "Directory: pool/a\nChecksums-Sha256:\n " + sha + " a_1.dsc\n", "<sha256> <size> <name>"},
		{"sources value on field line", ParseSources, "Directory: pool/a\nChecksums-Sha256: " + sha + "\n", "lines below"},
		{"sources garbage line", ParseSources, "Package: a\nthis is not a field\n", "sources line 2: \"this is not a field\" is neither a field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.parse(strings.NewReader(tt.in), func(Package) error { return nil })
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParsePackagesRelations(t *testing.T) {
	in := "Package: a\nVersion: 1:2.0-1\nPre-Depends: dpkg (>= 1.15)\nDepends: b | c, d:any\nRecommends: e (>= 1) | f, g\n" +
		"Suggests: h\nEnhances: i\nFilename: a.deb\nSize: 1\nSHA256: " + strings.Repeat("f", 64) + "\n"
	var got []Package
	if err := ParsePackages(strings.NewReader(in), func(p Package) error { got = append(got, p); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("got %+v", got)
	}
	if p := got[0]; p.Depends != "dpkg (>= 1.15), b | c, d:any" || p.Recommends != "e (>= 1) | f, g" {
		t.Errorf("Depends %q, Recommends %q", p.Depends, p.Recommends)
	}
}

func TestDependNames(t *testing.T) {
	tests := []struct {
		field string
		want  []string
	}{
		{"libc6 (>= 2.34), libgcc-s1 | libgcc1, python3:any, foo [amd64],  , debconf (>= 0.5) | debconf-2.0",
			[]string{"libc6", "libgcc-s1", "python3", "foo", "debconf"}},
		// zsh's Recommends in bookworm.
		{"libc6 (>= 2.35), libgdbm6 (>= 1.16), libncursesw6 (>= 6), libpcre3",
			[]string{"libc6", "libgdbm6", "libncursesw6", "libpcre3"}},
		{"foo:any", []string{"foo"}},
		{"foo:amd64 (>= 1.0)", []string{"foo"}},
		{"foo (>= 1.0) | bar", []string{"foo"}},
		{"foo (>= 1:2.0~rc1-1) | bar:any (<< 3)", []string{"foo"}},
		// Build-Depends-style restrictions: architectures and build profiles.
		{"debhelper-compat (= 13), libfoo-dev [amd64 i386] <!nocheck>, python3:native <!cross> <!nodoc>",
			[]string{"debhelper-compat", "libfoo-dev", "python3"}},
		{"a (>= 1) [!hurd-any] <stage1 !nocheck> | b", []string{"a"}},
		// The same, unspaced, and folded or tabbed.
		{"foo<!nocheck>, bar[linux-any], baz(>=1)", []string{"foo", "bar", "baz"}},
		{"foo\t(>= 1),\n bar", []string{"foo", "bar"}},
		{"", nil},
		{", , |", nil},
		{"| bar", nil},
		{"(>= 1), [amd64], <!nocheck>, :any", nil},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			if got := DependNames(tt.field); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("DependNames(%q) = %q, want %q", tt.field, got, tt.want)
			}
		})
	}
}

func TestParseReleaseDates(t *testing.T) {
	rel, err := ParseRelease(strings.NewReader("Suite: stable\nDate: Sun, 06 Dec 2026 02:14:57 UTC\nValid-Until: Sun, 13 Dec 2026 02:14:57 +0000\n"))
	if err != nil {
		t.Fatal(err)
	}
	date, err1 := ParseDate(rel.Date)
	until, err2 := ParseDate(rel.ValidUntil)
	if err1 != nil || err2 != nil || until.Sub(date) != 7*24*time.Hour {
		t.Fatalf("Date %v %v, Valid-Until %v %v", date, err1, until, err2)
	}
	for _, bad := range []string{"", "tomorrow", "2026-12-13"} {
		if _, err := ParseDate(bad); err == nil {
			t.Errorf("%q read as a date", bad)
		}
	}
}
