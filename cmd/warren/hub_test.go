package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
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

// A cold node with a hub answers apt's next index file while it, and the
// hub, still learn the one before: only the Release names an index file's
// hash, so nothing it waits for is in that parse. They held it for the
// whole parse of Debian's main, the node and then the hub (issue 30: 1.5 s
// of a cold node's update, against 60 ms straight to the hub).
func TestColdNodeAnswersTheNextIndexWhileLearning(t *testing.T) {
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	zw.Write(debianShapedPackages(30000)) // most of a second to learn; the next file, milliseconds to serve
	zw.Close()
	mainPkgs := gz.Bytes()
	nonFree := []byte("Package: warren-gap\nVersion: 1.0\nArchitecture: all\nFilename: pool/non-free/w/warren-gap_1.0_all.deb\nSize: 3\nSHA256: " + strings.Repeat("ab", 32) + "\n\n")
	release := fmt.Sprintf("Origin: test\nSuite: stable\nCodename: stable\nSHA256:\n %x %d main/binary-amd64/Packages.gz\n %x %d non-free/binary-amd64/Packages\n",
		sha256.Sum256(mainPkgs), len(mainPkgs), sha256.Sum256(nonFree), len(nonFree))
	files := map[string][]byte{
		"/debian/dists/stable/InRelease":                      []byte(release),
		"/debian/dists/stable/main/binary-amd64/Packages.gz":  mainPkgs,
		"/debian/dists/stable/non-free/binary-amd64/Packages": nonFree,
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	t.Cleanup(up.Close)
	base := t.TempDir()
	hubURL, _, hubLogs := startWarren(t, "--role", "hub", "--cache-dir", filepath.Join(base, "hub"), "--log-level", "debug")
	node, _, nodeLogs := startWarren(t, "--cache-dir", filepath.Join(base, "node"), "--hub", hubURL, "--log-level", "debug")
	c := proxyClient(t, node)
	get := func(p string) {
		t.Helper()
		resp, err := c.Get(up.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Equal(b, files[p]) {
			t.Fatalf("%s: %s, %d bytes, want %d", p, resp.Status, len(b), len(files[p]))
		}
	}
	learnt := func(p string) string { return `msg="recorded repository hashes" url=` + up.URL + p + " " }
	get("/debian/dists/stable/InRelease")
	nodeLogs.waitFor(t, learnt("/debian/dists/stable/InRelease"), 10*time.Second)
	hubLogs.waitFor(t, learnt("/debian/dists/stable/InRelease"), 10*time.Second)
	get("/debian/dists/stable/main/binary-amd64/Packages.gz")
	get("/debian/dists/stable/non-free/binary-amd64/Packages")

	mainLearnt := learnt("/debian/dists/stable/main/binary-amd64/Packages.gz")
	answered := "msg=request method=GET url=" + up.URL + "/debian/dists/stable/non-free/binary-amd64/Packages kind=index hash_known=true"
	for _, d := range []struct {
		name string
		logs *syncBuffer
	}{{"node", nodeLogs}, {"hub", hubLogs}} {
		// Each line is written once its work is over: the client may
		// have the file before the access log has it.
		d.logs.waitFor(t, answered, 30*time.Second)
		d.logs.waitFor(t, mainLearnt, 60*time.Second)
		log := d.logs.String()
		if strings.Index(log, answered) > strings.Index(log, mainLearnt) {
			t.Errorf("the %s answered non-free's Packages only once it had learnt main's: it waited for a parse that cannot name its hash", d.name)
		}
	}
}
