package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warren-cache/warren/cachestore"
)

// The CLI against the real daemon (over its admin socket), then with the
// daemon stopped (the cache opened in process): true figures both ways.
func TestCLIStatusAndCache(t *testing.T) {
	body := strings.Repeat("warren-cli ", 20000)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) }))
	defer up.Close()
	dir := t.TempDir()
	proxyURL, cmd, logs := startWarren(t, "--cache-dir", dir, "--log-level", "debug")
	pu, _ := url.Parse(proxyURL)
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}}
	defer c.CloseIdleConnections()
	artifact := up.URL + "/pool/main/t/tool_1_all.deb"
	for i := range 2 { // a miss, then a hit
		resp, err := c.Get(artifact)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if i == 0 {
			// The client has its last byte once the bytes verify; the
			// blob is stored just after.
			logs.waitFor(t, "msg=stored url="+artifact, 10*time.Second)
		}
	}

	out, err := runApp(t, "status", "--cache-dir", dir, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	json.Unmarshal([]byte(out), &st)
	if st["running"] != true || st["hits"] != 1.0 || st["misses"] != 1.0 || st["blobs"] != 1.0 || st["bytes_cache"] != float64(len(body)) {
		t.Fatalf("status: %s", out)
	}
	ls := func() []blobRow {
		out, err := runApp(t, "cache", "ls", "--cache-dir", dir, "--json")
		if err != nil {
			t.Fatal(err)
		}
		var rows []blobRow
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return rows
	}
	rows := ls()
	if len(rows) != 1 || rows[0].Size != int64(len(body)) || rows[0].Hits < 1 || len(rows[0].URLs) != 1 || rows[0].URLs[0] != artifact {
		t.Fatalf("cache ls (daemon running): %+v", rows)
	}
	// show: one blob by its URL (as apt would spell it) or its digest.
	for _, q := range []string{artifact, rows[0].Digest} {
		out, err := runApp(t, "cache", "show", "--cache-dir", dir, "--json", q)
		var row blobRow
		if err != nil || json.Unmarshal([]byte(out), &row) != nil || row.Digest != rows[0].Digest || row.Size != int64(len(body)) {
			t.Fatalf("cache show %s: %v %s", q, err, out)
		}
	}
	human, err := runApp(t, "cache", "ls", "--cache-dir", dir)
	if err != nil || !strings.Contains(human, "DIGEST") || !strings.Contains(human, artifact) {
		t.Fatalf("cache ls table: %v\n%s", err, human)
	}

	// Running, but its socket does not answer (gone): a clear message.
	os.Remove(filepath.Join(dir, adminSocket))
	if _, err := runApp(t, "cache", "stat", "--cache-dir", dir); err == nil || !strings.Contains(err.Error(), "another warren") {
		t.Fatalf("with the daemon holding the cache: %v", err)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	rows = ls()
	if len(rows) != 1 || rows[0].Digest == "" {
		t.Fatalf("cache ls (daemon stopped): %+v", rows)
	}
	out, err = runApp(t, "status", "--cache-dir", dir, "--json")
	if err != nil || !strings.Contains(out, `"running":false`) {
		t.Fatalf("status with the daemon stopped: %v %s", err, out)
	}

	// A clean cache verifies with success.
	if out, err := runApp(t, "cache", "verify", "--cache-dir", dir); err != nil || !strings.Contains(out, "all good") {
		t.Fatalf("verify of a good cache: %v %s", err, out)
	}
	// Damage the blob (same size): verify finds it, removes it, and fails
	// (a script or a timer unit must hear about it).
	hexDigest := strings.TrimPrefix(rows[0].Digest, "sha256:")
	blob := filepath.Join(dir, "blobs", "sha256", hexDigest[:2], hexDigest)
	os.WriteFile(blob, []byte(strings.Repeat("x", len(body))), 0o600)
	out, err = runApp(t, "cache", "verify", "--cache-dir", dir, "--json")
	if err == nil || !strings.Contains(out, rows[0].Digest) {
		t.Fatalf("verify of a damaged blob: err %v (want a failure), out %s", err, out)
	}
	if rows := ls(); len(rows) != 0 {
		t.Fatalf("bad blob still listed: %+v", rows)
	}
	if _, err := runApp(t, "cache", "rm", "--cache-dir", dir, artifact); err == nil {
		t.Fatal("rm of a removed blob succeeded")
	}
	if _, err := runApp(t, "cache", "show", artifact, "--cache-dir", dir); err == nil || !strings.Contains(err.Error(), "after the flags") {
		t.Fatalf("flags after the argument: %v", err)
	}
	out, err = runApp(t, "cache", "gc", "--cache-dir", dir, "--json")
	if err != nil || !strings.Contains(out, `"evicted":0`) {
		t.Fatalf("gc: %v %s", err, out)
	}
}

// Root running the CLI on a stopped daemon's cache leaves every file owned
// by the cache's owner, so the daemon (user warren) can open it again.
func TestCLIAsRootKeepsCacheOwner(t *testing.T) {
	requireRoot(t, "giving files to another user")
	dir := filepath.Join(t.TempDir(), "cache")
	os.MkdirAll(dir, 0o750)
	const nobody = 65534
	if err := os.Chown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if _, err := runApp(t, "cache", "stat", "--cache-dir", dir, "--discovery", "off"); err != nil {
		t.Fatal(err)
	}
	filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		info, _ := e.Info()
		if st := info.Sys().(*syscall.Stat_t); st.Uid != nobody {
			t.Errorf("%s is owned by uid %d, not the cache's owner", p, st.Uid)
		}
		return nil
	})
}

// A badly damaged cache, verified with the daemon stopped: the report
// names every bad blob on one line longer than 64 KiB, and the CLI reads
// it whole (a line scanner ended it as "ended early").
func TestVerifyReportsManyBadBlobs(t *testing.T) {
	dir := t.TempDir()
	s, err := cachestore.Open(cachestore.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	const n = 1200
	for i := range n {
		body := []byte(fmt.Sprintf("blob %d", i))
		sum := sha256.Sum256(body)
		d := cachestore.Digest{Algo: "sha256", Hex: hex.EncodeToString(sum[:])}
		f, _ := s.BeginFill(cachestore.FillKey(d))
		if err := f.Start(cachestore.FillInfo{Algo: "sha256", Size: int64(len(body))}); err != nil {
			t.Fatal(err)
		}
		f.Write(body)
		if _, err := f.Commit(d, int64(len(body))); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	damaged := 0
	filepath.WalkDir(filepath.Join(dir, "blobs"), func(p string, e os.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			b[0] ^= 0xff
			os.WriteFile(p, b, 0o640)
			damaged++
		}
		return nil
	})
	if damaged != n {
		t.Fatalf("damaged %d blob files, want %d", damaged, n)
	}
	out, err := runApp(t, "cache", "verify", "--cache-dir", dir, "--json")
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%d bad blobs", n)) {
		t.Fatalf("verify of %d damaged blobs: err %v; want it to report them all", n, err)
	}
	if len(out) < 64<<10 {
		t.Fatalf("the JSON report is %d bytes: the test does not pass the 64 KiB line it is about", len(out))
	}
}

// The admin socket serves Go's profiles: the operator's way to see where
// the daemon's CPU goes.
func TestAdminServesProfiles(t *testing.T) {
	rec := httptest.NewRecorder()
	(&adminAPI{}).handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/debug/pprof/", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "goroutine") {
		t.Fatalf("GET /debug/pprof/ on the admin socket: %d %.200s", rec.Code, rec.Body.String())
	}
}
