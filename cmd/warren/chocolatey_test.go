package main

import (
	"net/http"
	"testing"
)

// --chocolatey-upstream-rate reaches the daemon: with a budget of one
// request a minute, the second distinct feed call gets a 503 with
// Retry-After instead of going upstream.
func TestChocolateyBudgetFlag(t *testing.T) {
	feed := newFileServer(t)
	feed.put(t, "/api/v2/", []byte(`<?xml version="1.0" encoding="utf-8"?><service xmlns="http://www.w3.org/2007/app"/>`))
	feed.put(t, "/api/v2/$metadata", []byte(`<?xml version="1.0" encoding="utf-8"?><edmx:Edmx Version="1.0" xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx"/>`))
	u, _, _ := startWarren(t, "--cache-dir", t.TempDir(), "--chocolatey-upstream", feed.URL+"/api/v2/", "--chocolatey-upstream-rate", "1/min")
	c := &http.Client{}
	for range 3 { // the same call: one upstream request, then kept
		if code, _ := getBody(t, c, u+"/chocolatey/api/v2/"); code != 200 {
			t.Fatalf("service document: %d", code)
		}
	}
	resp, err := c.Get(u + "/chocolatey/api/v2/$metadata")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("second call within the budget's minute: %d, Retry-After %q; want 503 with it", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if n := feed.count("/api/v2/") + feed.count("/api/v2/$metadata"); n != 1 {
		t.Fatalf("upstream saw %d requests, want 1", n)
	}
}
