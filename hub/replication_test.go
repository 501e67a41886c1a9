package hub

import (
	"net/http"
	"testing"
)

func TestReposAdmits(t *testing.T) {
	scope := Repos{
		Apt:        []AptRepo{{URL: "http://Deb.Example:80/debian/", Suites: []string{"bookworm"}, Components: []string{"main"}, Architectures: []string{"amd64"}}},
		RPM:        []RPMRepo{{BaseURL: "https://mirror/el9/os"}},
		Chocolatey: []ChocolateyRepo{{Feed: "https://community.chocolatey.org/api/v2/", IDs: []string{"Git"}}},
	}
	for _, c := range []struct {
		key  string
		want bool
	}{
		{"http://deb.example/debian/dists/bookworm/InRelease", true},
		{"http://deb.example/debian/dists/bookworm/main/binary-amd64/Packages.xz", true},
		{"http://deb.example/debian/dists/bookworm/main/binary-all/Packages.xz", true},
		{"http://deb.example/debian/dists/bookworm/main/i18n/Translation-en.xz", true},
		{"http://deb.example/debian/dists/bookworm/main/binary-arm64/Packages.xz", false},
		{"http://deb.example/debian/dists/bookworm/contrib/binary-amd64/Packages.xz", false},
		{"http://deb.example/debian/dists/trixie/InRelease", false},
		{"http://deb.example/debian/pool/main/h/hello/hello_2.10-3_amd64.deb", true},
		{"http://deb.example/debian-security/pool/main/x.deb", false},
		{"http://deb.example/debianx/pool/main/x.deb", false},
		{"http://other/debian/pool/main/x.deb", false},
		{"https://mirror/el9/os/repodata/repomd.xml", true},
		{"https://mirror/el9/os/Packages/k/kernel-5.14.rpm", true},
		{"http://mirror/el9/os/repodata/repomd.xml", false},
		{"https://mirror/el9/osx/repodata/repomd.xml", false},
		{"chocolatey-query:https://community.chocolatey.org/api/v2/FindPackagesById()?id='git'", true},
		{"chocolatey-query:https://community.chocolatey.org/api/v2/$metadata", true},
		{"chocolatey-query:https://community.chocolatey.org/api/v2/FindPackagesById()?id='7zip'", false},
		{"https://community.chocolatey.org/api/v2/package/git/2.43.0", true},
		{"https://community.chocolatey.org/api/v2/package/7zip/23.1", false},
	} {
		if got := scope.Admits(c.key); got != c.want {
			t.Errorf("Admits(%s) = %v, want %v", c.key, got, c.want)
		}
	}
	if !(Repos{}).Admits("http://anything/at/all") {
		t.Error("an empty scope admits everything")
	}
}

func TestSyncTokens(t *testing.T) {
	toks := NewSyncTokens([]SyncToken{{Name: "a", Token: "alpha-alpha-alpha"}, {Name: "b", Token: "beta-beta-beta-beta"}})
	for _, c := range []struct {
		auth, want string
		err        error
	}{
		{"Bearer beta-beta-beta-beta", "b", nil},
		{"bearer alpha-alpha-alpha", "a", nil},
		{"Bearer alpha", "", ErrBadSyncToken},
		{"Basic YTphbHBoYS1hbHBoYS1hbHBoYQ==", "", ErrNoSyncToken},
		{"", "", ErrNoSyncToken},
	} {
		r, _ := http.NewRequest(http.MethodGet, "http://hub/", nil)
		r.Header.Set("Authorization", c.auth)
		tok, err := toks.Check(r)
		if err != c.err || tok.Name != c.want {
			t.Errorf("Check(%q) = %q, %v; want %q, %v", c.auth, tok.Name, err, c.want, c.err)
		}
	}
	if (SyncTokens{}).Enabled() {
		t.Error("no tokens: replication is off")
	}
}
