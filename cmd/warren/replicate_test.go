package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Replication from the CLI and on its schedule, with real daemons on
// loopback: a main hub preloads, a region hub in preload mode pulls from it
// at start (replicate_schedule) and on demand; status, log, the page and
// /metrics show the runs; a node behind the region hub gets the packages
// with no byte from upstream. The source's URL carries a password (which
// the main hub ignores: the sync token is what counts), and no output, log
// or state file shows it or the token.
func TestReplicateFromTheCLI(t *testing.T) {
	repo := t.TempDir()
	paths := writeArchive(t, repo, map[string]string{"office-core": "libfoo", "libfoo": "", "games": ""})
	up := serveDir(t, repo)
	base := t.TempDir()
	mainConf := filepath.Join(base, "main.yaml")
	os.WriteFile(mainConf, []byte(fmt.Sprintf(`role: hub
preload_schedule: ""
replicate_schedule: 0s
preload:
  apt: [{url: %s, suites: [stable], components: [main], architectures: [amd64], packages: ["office-*"]}]
replication:
  tokens: [{name: region, token: region-token-0123456789}]
`, up.URL)), 0o644)
	mainDir := filepath.Join(base, "main")
	mainURL, _, _ := startWarren(t, "--config", mainConf, "--cache-dir", mainDir)
	if out, err := runApp(t, "preload", "run", "--config", mainConf, "--cache-dir", mainDir); err != nil || !strings.Contains(out, "fetched 2") {
		t.Fatalf("the main hub's preload: %v\n%s", err, out)
	}
	regionConf := filepath.Join(base, "region.yaml")
	os.WriteFile(regionConf, []byte(fmt.Sprintf(`role: hub
hub_mode: preload
preload_schedule: ""
replicate_schedule: 1h
replicate_from: [{name: main, url: %q, token: region-token-0123456789}]
`, strings.Replace(mainURL, "http://", "http://region:s3cret-pass@", 1))), 0o644)
	regionDir := filepath.Join(base, "region")
	regionURL, _, regionLogs := startWarren(t, "--config", regionConf, "--cache-dir", regionDir)
	// The schedule's first run is at start.
	waitUntil(t, "the scheduled run at start", 30*time.Second, func() bool { return strings.Contains(regionLogs.String(), `msg="replication run"`) })
	// The run logs its end before it lets go of the lock the next run
	// takes (its state is saved after): asked too soon, a run on demand
	// is told one is going.
	var out string
	var err error
	waitUntil(t, "the scheduled run to let go", 30*time.Second, func() bool {
		out, err = runApp(t, "replicate", "run", "--config", regionConf, "--cache-dir", regionDir)
		return err == nil || !strings.Contains(out, "already going")
	})
	if err != nil || !strings.Contains(out, "fetched 0 blobs (0 B)") {
		t.Fatalf("a run on demand after the scheduled one: %v\n%s", err, out)
	}
	out, err = runApp(t, "replicate", "log", "--config", regionConf, "--cache-dir", regionDir)
	if err != nil || !regexp.MustCompile(`main\s+schedule\s+0->\d+\s+\d+\s+4\s`).MatchString(out) || !strings.Contains(out, "demand") {
		t.Fatalf("replicate log: want the scheduled run with its 4 blobs (InRelease, Packages, 2 packages), then the one on demand: %v\n%s", err, out)
	}
	out, err = runApp(t, "replicate", "status", "--config", regionConf, "--cache-dir", regionDir)
	if err != nil || !strings.Contains(out, "every 1h0m0s") || !regexp.MustCompile(`main\s+http://region:\*\*\*@\S+\s+\d+\s+0 entries\s.*\sok`).MatchString(out) {
		t.Fatalf("replicate status: %v\n%s", err, out)
	}
	secrets := []string{"s3cret-pass", "region-token-0123456789"}
	noSecret := func(what, s string) {
		t.Helper()
		for _, secret := range secrets {
			if strings.Contains(s, secret) {
				t.Fatalf("%s shows %s:\n%s", what, secret, s)
			}
		}
	}
	noSecret("replicate status", out)
	out, _ = runApp(t, "replicate", "status", "--json", "--config", regionConf, "--cache-dir", regionDir)
	noSecret("replicate status --json", out)
	out, _ = runApp(t, "config", "check", "--config", regionConf, "--cache-dir", regionDir)
	if !strings.Contains(out, "token: …6789") {
		t.Fatalf("config check does not show the token's end:\n%s", out)
	}
	noSecret("config check", out)
	if _, err := runApp(t, "replicate", "run", "--from", "nope", "--config", regionConf, "--cache-dir", regionDir); err == nil || !strings.Contains(err.Error(), `no replicate_from entry is named "nope"`) {
		t.Fatalf("a run from an unknown source: %v", err)
	}

	// A node behind the region hub: the replicated packages, no upstream.
	gets := up.count(paths["office-core"])
	node, _, _ := startWarren(t, "--cache-dir", filepath.Join(base, "node"), "--hub", regionURL, "--hub-only")
	c := proxyClient(t, node)
	for _, p := range []string{"/dists/stable/InRelease", "/dists/stable/main/binary-amd64/Packages.gz", paths["office-core"]} {
		resp, err := c.Get(up.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want, _ := os.ReadFile(filepath.Join(repo, p))
		if resp.StatusCode != 200 || !bytes.Equal(body, want) {
			t.Fatalf("%s through the region hub: %d, %d bytes", p, resp.StatusCode, len(body))
		}
	}
	if up.count(paths["office-core"]) != gets {
		t.Fatal("the package was fetched from upstream again")
	}
	page := func(u string) string {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if p := page(regionURL + "/"); !strings.Contains(p, `id="replication"`) || !strings.Contains(p, "pulls every 1h0m0s") {
		t.Fatal("the region hub's page has no replication section")
	}
	m := page(regionURL + "/metrics")
	for _, want := range []string{"warren_replication_blobs_total 4", "warren_replication_runs_total 2", `warren_replication_last_run_ok{from="main"} 1`, `warren_replication_lag_entries{from="main"} 0`} {
		if !strings.Contains(m, want) {
			t.Fatalf("the region hub's /metrics lack %q", want)
		}
	}
	if p := page(mainURL + "/"); !strings.Contains(p, "serves its change feed to other hubs") {
		t.Fatal("the main hub's page does not say it serves replication")
	}
	noSecret("the region hub's page", page(regionURL+"/"))
	noSecret("the region hub's log", regionLogs.String())
	state, _ := os.ReadFile(filepath.Join(regionDir, "replication.json"))
	noSecret("replication.json", string(state))
	// A run that fails quotes the source's URL: without the password.
	down := filepath.Join(base, "down.yaml")
	os.WriteFile(down, []byte(`role: hub
replicate_schedule: 0s
replicate_from: [{name: gone, url: "http://region:s3cret-pass@127.0.0.1:1", token: region-token-0123456789}]
`), 0o644)
	downURL, _, downLogs := startWarren(t, "--config", down, "--cache-dir", filepath.Join(base, "down"))
	out, err = runApp(t, "replicate", "run", "--config", down, "--cache-dir", filepath.Join(base, "down"))
	if err == nil || !strings.Contains(out, "http://region:***@127.0.0.1:1") {
		t.Fatalf("a run from a hub that is down: %v\n%s", err, out)
	}
	noSecret("a failed run", out)
	out, _ = runApp(t, "replicate", "log", "--config", down, "--cache-dir", filepath.Join(base, "down"))
	noSecret("replicate log", out)
	noSecret("the log of a failed run", downLogs.String())
	noSecret("the page of a failed run", page(downURL+"/"))
}
