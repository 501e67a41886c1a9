package hub

import (
	"net/http"
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
