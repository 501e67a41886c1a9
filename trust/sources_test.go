package trust

import (
	"slices"
	"strings"
	"testing"
)

func TestParseSourcesList(t *testing.T) {
	got, err := ParseSourcesList(strings.NewReader(`# comment
deb http://deb.debian.org/debian bookworm main
deb-src [signed-by=/a.gpg,/b.gpg arch=amd64] http://deb.example.org/x ./
deb [ arch=amd64 signed-by=/c.gpg ] http://spaced.example.org/y stable main # trailing
deb [trusted=yes] http://unsigned.example.org/z ./
deb [signed-by=/d.gpg]
rpm http://not.apt/ x
`), "sources.list")
	if err != nil {
		t.Fatal(err)
	}
	want := []AptSource{
		{URI: "http://deb.debian.org/debian", Where: "sources.list:2"},
		{URI: "http://deb.example.org/x", SignedBy: []string{"/a.gpg", "/b.gpg"}, Where: "sources.list:3"},
		{URI: "http://spaced.example.org/y", SignedBy: []string{"/c.gpg"}, Where: "sources.list:4"},
		{URI: "http://unsigned.example.org/z", Trusted: true, Where: "sources.list:5"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i].URI != want[i].URI || !slices.Equal(got[i].SignedBy, want[i].SignedBy) || got[i].Trusted != want[i].Trusted || got[i].Where != want[i].Where {
			t.Errorf("source %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestParseDeb822Sources(t *testing.T) {
	got, err := ParseDeb822Sources(strings.NewReader(`Types: deb deb-src
URIs: http://deb.debian.org/debian http://mirror.example.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

# off
Types: deb
URIs: http://off.example.org/
Enabled: no

Types: deb-src
URIs: http://src.example.org/
Suites: x
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mDMEZ
 -----END PGP PUBLIC KEY BLOCK-----
Trusted: no
`), "debian.sources")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].URI != "http://deb.debian.org/debian" || got[1].URI != "http://mirror.example.org/debian" ||
		!slices.Equal(got[0].SignedBy, []string{"/usr/share/keyrings/debian-archive-keyring.gpg"}) || got[0].Where != "debian.sources:1" {
		t.Fatalf("got %+v", got)
	}
	if k := got[2].SignedBy; len(k) != 1 || !strings.Contains(k[0], "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZ\n") {
		t.Fatalf("inline key read as %q", k)
	}
}

func TestParseRepoFile(t *testing.T) {
	got, err := ParseRepoFile(strings.NewReader(`[fedora]
name=Fedora $releasever - $basearch
metalink=https://mirrors.fedoraproject.org/metalink?repo=fedora-$releasever&arch=$basearch
gpgcheck=1
gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-fedora-$releasever-$basearch

[example]
baseurl=http://rpm.example.org/a/
        http://rpm2.example.org/a/
repo_gpgcheck = 1
gpgkey=file:///k1.asc,file:///k2.asc
`), "x.repo")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].RepoGPGCheck || !got[1].RepoGPGCheck ||
		!slices.Equal(got[1].BaseURLs, []string{"http://rpm.example.org/a/", "http://rpm2.example.org/a/"}) ||
		!slices.Equal(got[1].GPGKeys, []string{"file:///k1.asc", "file:///k2.asc"}) || got[1].Where != "x.repo:7" {
		t.Fatalf("got %+v", got)
	}
}

func TestParseLimits(t *testing.T) {
	big := strings.Repeat("deb http://x.example.org/ a b\n", maxConfigBytes/20)
	if _, err := ParseSourcesList(strings.NewReader(big), "big"); err == nil {
		t.Fatal("a file past the bound was read")
	}
	if _, err := ParseDeb822Sources(strings.NewReader("URIs: "+strings.Repeat("x", maxConfigLine+1)), "long"); err == nil {
		t.Fatal("a line past the bound was read")
	}
}
