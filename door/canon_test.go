package door

import (
	"net/url"
	"testing"
)

// The request lines apt, dnf and NuGet.exe send, against the names their
// metadata lists literally: every pair must meet at one key.
func TestCanonicalURLMatchesMetadata(t *testing.T) {
	const root = "http://deb.debian.org/debian/"
	tests := []struct {
		name     string
		request  string // as the client sends it
		scope    string // the repository's base
		literal  string // as the metadata lists it
		wantSame bool
	}{
		{"apt plus", "http://deb.debian.org/debian/pool/main/g/gcc-12/libstdc%2b%2b6_12.2.0-14_amd64.deb", root, "pool/main/g/gcc-12/libstdc++6_12.2.0-14_amd64.deb", true},
		{"apt tilde", "http://deb.debian.org/debian/pool/main/s/sudo/sudo_1.9.13p3-1%7edeb12u1_amd64.deb", root, "pool/main/s/sudo/sudo_1.9.13p3-1~deb12u1_amd64.deb", true},
		{"apt epoch colon", "http://deb.debian.org/debian/pool/main/x/xz/liblzma5_1%3a5.4.1-0.2_amd64.deb", root, "pool/main/x/xz/liblzma5_1:5.4.1-0.2_amd64.deb", true},
		{"security update", "http://security.debian.org/debian-security/pool/updates/main/o/openssl/libssl3_3.0.15-1%7edeb12u1%2bdeb12u2_amd64.deb", "http://security.debian.org/debian-security/", "pool/updates/main/o/openssl/libssl3_3.0.15-1~deb12u1+deb12u2_amd64.deb", true},
		{"upper-case escapes", "http://deb.debian.org/debian/pool/main/g/gcc-12/libstdc%2B%2B6_12.2.0-14_amd64.deb", root, "pool/main/g/gcc-12/libstdc++6_12.2.0-14_amd64.deb", true},
		{"unescaped as sent", "http://deb.debian.org/debian/pool/main/g/gcc-12/libstdc++6_12.2.0-14_amd64.deb", root, "pool/main/g/gcc-12/libstdc++6_12.2.0-14_amd64.deb", true},
		{"host case and default port", "http://Deb.Debian.ORG:80/debian/pool/main/h/hello/hello_2.10-3_amd64.deb", root, "pool/main/h/hello/hello_2.10-3_amd64.deb", true},
		{"dot segments", "http://deb.debian.org/debian/pool/main/./h/x/../hello/hello_2.10-3_amd64.deb", root, "pool/main/h/hello/hello_2.10-3_amd64.deb", true},
		{"dnf libstdc++", "http://mirror.example/fedora/39/x86_64/os/Packages/l/libstdc%2B%2B-13.2.1-3.fc39.x86_64.rpm", "http://mirror.example/fedora/39/x86_64/os/", "Packages/l/libstdc++-13.2.1-3.fc39.x86_64.rpm", true},
		{"escaped letter", "http://deb.debian.org/debian/pool/main/h/hello/%68ello_2.10-3_amd64.deb", root, "pool/main/h/hello/hello_2.10-3_amd64.deb", true},
		{"space", "http://mirror.example/repo/Packages/a%20b-1.0.rpm", "http://mirror.example/repo/", "Packages/a b-1.0.rpm", true},
		{"literal percent", "http://mirror.example/repo/Packages/a%25b-1.0.rpm", "http://mirror.example/repo/", "Packages/a%b-1.0.rpm", true},
		// Look-alikes that must not match.
		{"escaped slash is not a slash", "http://deb.debian.org/debian/pool/main/h/hello%2Fhello_2.10-3_amd64.deb", root, "pool/main/h/hello/hello_2.10-3_amd64.deb", false},
		{"plus is not a space", "http://deb.debian.org/debian/pool/main/g/gcc-12/libstdc%20%206_12.2.0-14_amd64.deb", root, "pool/main/g/gcc-12/libstdc++6_12.2.0-14_amd64.deb", false},
		{"other host", "http://evil.example/debian/pool/main/h/hello/hello_2.10-3_amd64.deb", root, "pool/main/h/hello/hello_2.10-3_amd64.deb", false},
		{"other port", "http://deb.debian.org:8080/debian/pool/main/h/hello/hello_2.10-3_amd64.deb", root, "pool/main/h/hello/hello_2.10-3_amd64.deb", false},
		{"case of the path matters", "http://deb.debian.org/debian/pool/main/h/hello/Hello_2.10-3_amd64.deb", root, "pool/main/h/hello/hello_2.10-3_amd64.deb", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := url.Parse(tt.request)
			if err != nil {
				t.Fatal(err)
			}
			su, _ := url.Parse(tt.scope)
			recorded, ok := newScope(su, su.EscapedPath()).join(tt.literal)
			if !ok {
				t.Fatalf("%q is outside %q", tt.literal, tt.scope)
			}
			if got := CanonicalURL(u); (got == recorded) != tt.wantSame {
				t.Fatalf("request key %q, recorded key %q: same = %v, want %v", got, recorded, got == recorded, tt.wantSame)
			}
		})
	}
}

// Metadata names only files inside its own repository: a path that climbs
// out, or an absolute one, teaches nothing.
func TestScopeJoin(t *testing.T) {
	su, _ := url.Parse("http://deb.debian.org/debian/dists/bookworm/")
	sc := newScope(su, su.EscapedPath())
	for _, tt := range []struct {
		literal string
		ok      bool
	}{
		{"main/binary-amd64/Packages.xz", true},
		{"main/binary-amd64/by-hash/SHA256/0123", true},
		{"../../pool/main/h/hello.deb", false},
		{"main/../../sid/Release", false},
		{"/etc/passwd", false},
		{"", false},
		{"%2e%2e/x", true}, // a literal "%2e%2e" is a file name, not a dot segment
	} {
		if _, ok := sc.join(tt.literal); ok != tt.ok {
			t.Errorf("join(%q) inside = %v, want %v", tt.literal, ok, tt.ok)
		}
	}
	for _, tt := range []struct {
		base string
		ok   bool
	}{
		{"http://deb.debian.org/debian/dists/bookworm/main/", true},
		{"http://DEB.debian.org:80/debian/dists/bookworm/", true},
		{"http://evil.example/debian/dists/bookworm/", false},
		{"https://deb.debian.org/debian/dists/bookworm/", false},
		{"http://deb.debian.org/debian/dists/", false},
		{"ftp://deb.debian.org/debian/dists/bookworm/", false},
	} {
		if _, ok := sc.joinURL(tt.base, "x.rpm"); ok != tt.ok {
			t.Errorf("joinURL(%q) inside = %v, want %v", tt.base, ok, tt.ok)
		}
	}
}

func FuzzCanonicalPath(f *testing.F) {
	for _, s := range []string{"/debian/pool/a%2bb.deb", "/a/../b/%2F/c", "/%zz/%", "/x y/é", "//a//b/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c := canonicalPath(s)
		// Idempotent: the canonical form is its own canonical form.
		if again := canonicalPath(c); again != c {
			t.Fatalf("canonicalPath(%q) = %q, but canonicalPath(%q) = %q", s, c, c, again)
		}
		// Literal metadata paths and their escaped form meet.
		if canonicalPath(escapeLiteral(c)) == "" {
			t.Fatal("empty canonical path")
		}
	})
}
