package main

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A node's `warren status`, `warren peers` and page show its hubs,
// reachable or not, and the bytes from each; the hub's page shows its own
// side (mode, queue, refusals, served against fetched).
func TestHubSeenByTheOperator(t *testing.T) {
	body := strings.Repeat("warren-hub ", 30000)
	up := serveDir(t, t.TempDir())
	up.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })
	base := t.TempDir()
	hubURL, hubCmd, _ := startWarren(t, "--role", "hub", "--cache-dir", filepath.Join(base, "hub"), "--hub-tokens", "tok-0123456789abcdef")
	dir := filepath.Join(base, "node")
	node, _, logs := startWarren(t, "--cache-dir", dir, "--hub", hubURL, "--hub-token", "tok-0123456789abcdef", "--hub", "http://127.0.0.1:1", "--log-level", "debug")
	c := proxyClient(t, node)
	resp, err := c.Get(up.URL + "/file.bin")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(got) != body {
		t.Fatalf("through the hub: %d bytes, want %d", len(got), len(body))
	}
	logs.waitFor(t, "msg=stored", 10*time.Second)

	status, err := runApp(t, "status", "--cache-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(status, hubURL+" reachable, 330 kB from it") || !strings.Contains(status, "http://127.0.0.1:1 unreachable") {
		t.Fatalf("warren status does not show the hubs as they are:\n%s", status)
	}
	peers, err := runApp(t, "peers", "--cache-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(peers, hubURL) || !strings.Contains(peers, "hub") {
		t.Fatalf("warren peers does not list the hub:\n%s", peers)
	}
	page := func(u string) string {
		resp, err := http.Get(u + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if p := page(node); !strings.Contains(p, `id="hubs"`) || !strings.Contains(p, hubURL) {
		t.Fatalf("the node's page has no hubs table")
	}
	if p := page(hubURL); !strings.Contains(p, `id="hub"`) || !strings.Contains(p, "fetch-and-preload") || !strings.Contains(p, "served to nodes") {
		t.Fatalf("the hub's page has no hub section")
	}
	// The hub gone: the node says so.
	hubCmd.Process.Kill()
	hubCmd.Wait()
	resp, err = c.Get(up.URL + "/other.bin")
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	status, _ = runApp(t, "status", "--cache-dir", dir)
	if !strings.Contains(status, hubURL+" unreachable") {
		t.Fatalf("with the hub down, warren status still says reachable:\n%s", status)
	}
}
