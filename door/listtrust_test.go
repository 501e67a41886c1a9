package door

import (
	"strings"
	"testing"
)

func TestListPolicy(t *testing.T) {
	p, err := NewListPolicy(
		[]string{
			"https://mirrors.fedoraproject.org/metalink?repo=fedora-$releasever&arch=${basearch}",
			"https://mirrors.almalinux.org/mirrorlist/$releasever/baseos",
		},
		[]string{"http://mirror.example/pub/fedora/$releasever/Everything", "https://Plain.Example:443/el9/"},
		[]string{"https://lists.example.org", "http://site.example/metalink"},
	)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key   string
		trust bool
	}{
		{"https://mirrors.fedoraproject.org/metalink?repo=fedora-40&arch=x86_64", true},
		{"https://mirrors.fedoraproject.org/metalink?repo=fedora-40&arch=x86_64&countme=1", true}, // dnf's countme
		{"https://mirrors.fedoraproject.org/metalink?repo=fedora-40&arch=", false},                // a variable is never empty
		{"https://mirrors.fedoraproject.org/metalink?repo=epel-9&arch=x86_64", false},
		{"https://mirrors.fedoraproject.org/metalink?repo=fedora-40&arch=x86_64/../x", false},
		{"http://mirrors.fedoraproject.org/metalink?repo=fedora-40&arch=x86_64", false}, // another scheme
		{"https://mirrors.fedoraproject.org.evil.example/metalink?repo=fedora-40&arch=x86_64", false},
		{"https://mirrors.almalinux.org/mirrorlist/9/baseos", true},
		{"https://mirrors.almalinux.org/mirrorlist/9/baseos?countme=1", true},
		{"https://mirrors.almalinux.org/mirrorlist/9/x/baseos", false}, // a variable is one segment
		{"https://mirrors.almalinux.org/mirrorlist/9/appstream", false},
		{"https://lists.example.org/anything/metalink", true},
		{"https://lists.example.org.evil.example/metalink", false},
		{"http://site.example/metalink?repo=x", true},
		{"http://site.example/metalinks", true}, // a prefix is a prefix
		{"http://evil.example/metalink", false},
	} {
		if got := p.Trusts(tc.key); got != tc.trust {
			t.Errorf("Trusts(%s) = %v, want %v", tc.key, got, tc.trust)
		}
	}
	for _, tc := range []struct {
		base  string
		plain bool
	}{
		{"http://mirror.example/pub/fedora/40/Everything/", true},
		{"http://mirror.example/pub/fedora/40/Everything/x/", false},
		{"https://plain.example/el9/", true},
		{"https://plain.example/el8/", false},
	} {
		if got := p.Plain(tc.base); got != tc.plain {
			t.Errorf("Plain(%s) = %v, want %v", tc.base, got, tc.plain)
		}
	}
	var none *ListPolicy
	if none.Trusts("https://mirrors.almalinux.org/mirrorlist/9/baseos") || none.Plain("http://x/") || !none.Empty() {
		t.Error("no policy trusts something")
	}
	_, err = NewListPolicy([]string{"ftp://x/metalink", "https://$host/metalink"}, nil, []string{"not a url", "https://x/$releasever"})
	for _, want := range []string{"ftp://x/metalink", "https://$host/metalink", "not a url", "https://x/$releasever"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
}
