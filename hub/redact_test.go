package hub

import "testing"

func TestRedact(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", ""},
		{"node-token-0123456789a1b2", "…a1b2"},
		{"short", "…"},
		{"sha256:" + "00112233445566778899aabbccddeeff00112233445566778899aabbccdd1234", "sha256:…1234"},
	} {
		if got := RedactToken(tt.in); got != tt.want {
			t.Errorf("RedactToken(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	for _, tt := range []struct{ in, want string }{
		{"http://alice:s3cret@host/", "http://alice:***@host/"},
		{"http://alice:s3cret@host:3142", "http://alice:***@host:3142"},
		{"https://TOKEN0123@feed.example/api/v2/", "https://***@feed.example/api/v2/"},
		{"http://al%40ice:p%2Fw@host/x", "http://al%40ice:***@host/x"},
		{"http://alice:pa:ss@host/", "http://alice:***@host/"},
		{"http://host/path@v1/file", "http://host/path@v1/file"}, // an @ in the path is no userinfo
		{"http://host/", "http://host/"},
		{`hub http://w:t0k@hub:3142 refused (407, token); replicate from main: the change feed at https://a:b@main:3142: EOF`,
			`hub http://w:***@hub:3142 refused (407, token); replicate from main: the change feed at https://a:***@main:3142: EOF`},
		{"mailto-ish alice@example.org", "mailto-ish alice@example.org"},
		{"https://Tk0123456789secret:@packagecloud.example/r/", "https://***@packagecloud.example/r/"},
	} {
		if got := RedactURLs(tt.in); got != tt.want {
			t.Errorf("RedactURLs(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRedactScope(t *testing.T) {
	const scope = "p0123456789abcdef0123456789abcdef"
	for _, tt := range []struct{ in, want string }{
		{"url:http://" + scope + "@deb.example/pool/a.deb", "url:http://private@deb.example/pool/a.deb"},
		{"sha256:00ff#" + scope, "sha256:00ff#private"},
		{"url:http://deb.example/pool/p0123.deb", "url:http://deb.example/pool/p0123.deb"},
		{"url:http://pub.example/x", "url:http://pub.example/x"},
	} {
		if got := RedactScope(tt.in); got != tt.want {
			t.Errorf("RedactScope(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
