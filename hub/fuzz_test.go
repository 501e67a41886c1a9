package hub

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// FuzzWire feeds a hub's answer headers and a node's credentials to their
// decoders: never a panic, never a wait beyond the bound, never a token
// accepted that is not one.
func FuzzWire(f *testing.F) {
	f.Add("90", "3", "10/100", "Bearer alpha")
	f.Add("-1", "x", "/", "Basic d2FycmVuOmFscGhh")
	f.Add("99999999999999999999", "", "5", "Basic ")
	f.Fuzz(func(t *testing.T, retry, pos, progress, auth string) {
		h := http.Header{}
		h.Set("Retry-After", retry)
		h.Set(HeaderQueuePosition, pos)
		h.Set(HeaderProgress, progress)
		h.Set(HeaderRetryAfterMs, pos)
		b := parseBusy("hub", h)
		if b.RetryAfter < 0 || b.RetryAfter > 10*time.Minute {
			t.Fatalf("retry after %s from %q", b.RetryAfter, retry)
		}
		r, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
		r.Header.Set("Proxy-Authorization", auth)
		if err := NewTokens([]string{"alpha"}).Check(r); err == nil {
			if tok, _ := tokenOf(r); tok != "alpha" {
				t.Fatalf("accepted %q", auth)
			}
		}
	})
}

// FuzzReplication feeds change feed pages to their decoder and keys to the
// repository scopes: never a panic, never a page accepted that goes back
// or whose entries are out of order.
func FuzzReplication(f *testing.F) {
	f.Add(`{"hub":"a","chain":["a"],"entries":[{"seq":3,"key":"http://h/debian/pool/main/a.deb","digest":{"Algo":"sha256","Hex":"`+strings.Repeat("ab", 32)+`"},"size":3}],"next":3,"last":9}`, uint64(1), "http://h/debian/dists/stable/main/binary-amd64/Packages.xz")
	f.Add(`{"entries":[{"seq":2},{"seq":1}],"next":2,"last":2}`, uint64(0), "chocolatey-query:http://h/api/v2/FindPackagesById()?id='git'")
	f.Add(`{"next":1,"last":0}`, uint64(5), "http://h/el9/os/repodata/repomd.xml")
	scope := Repos{
		Apt:        []AptRepo{{URL: "http://h/debian", Suites: []string{"stable"}, Components: []string{"main"}, Architectures: []string{"amd64"}}},
		RPM:        []RPMRepo{{BaseURL: "http://h/el9/os/"}},
		Chocolatey: []ChocolateyRepo{{Feed: "http://h/api/v2/", IDs: []string{"git"}}},
	}
	f.Fuzz(func(t *testing.T, page string, after uint64, key string) {
		if p, err := DecodePage(strings.NewReader(page), "", after); err == nil {
			prev := after
			for _, e := range p.Entries {
				if e.Seq <= prev || e.Seq > p.Next {
					t.Fatalf("accepted entry %d after %d (next %d)", e.Seq, prev, p.Next)
				}
				prev = e.Seq
			}
			if p.Next < after || p.Last < p.Next {
				t.Fatalf("accepted a page that goes back: next %d after %d, last %d", p.Next, after, p.Last)
			}
		}
		if scope.Admits(key) && !strings.Contains(strings.ToLower(key), "//h/") {
			t.Fatalf("a scope of host h admits %q", key)
		}
	})
}
