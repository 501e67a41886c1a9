package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The Grafana dashboard the packages ship: every query names metrics that
// warren exports (scraped from a running hub with a preload list and a
// replicate_from entry, and a node with peers and a hub), and the packages
// install it.
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile("../../packaging/grafana/warren.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	nfpm, _ := os.ReadFile("../../packaging/nfpm.yaml")
	if !strings.Contains(string(nfpm), "src: packaging/grafana/warren.json\n    dst: /usr/share/warren/grafana/warren.json") {
		t.Fatal("the packages do not install the dashboard in /usr/share/warren/grafana/")
	}

	up := serveDir(t, t.TempDir())
	base := t.TempDir()
	conf := filepath.Join(base, "hub.yaml")
	os.WriteFile(conf, []byte(fmt.Sprintf("role: hub\npreload_schedule: \"\"\npreload:\n  rpm: [{baseurl: %s/os/, packages: [x]}]\n"+
		"replicate_schedule: 0s\nreplicate_from: [{name: main, url: \"http://127.0.0.1:9\", token: t-0123456789abcdef}]\n", up.URL)), 0o644)
	hubURL, _, _ := startWarren(t, "--config", conf, "--cache-dir", filepath.Join(base, "hub"))
	node, _, _ := startWarren(t, "--cache-dir", filepath.Join(base, "node"), "--hub", hubURL, "--discovery", "static", "--peer", "127.0.0.1:9")
	c := proxyClient(t, node)
	if resp, err := c.Get(up.URL + "/x"); err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	exported := map[string]bool{}
	help := regexp.MustCompile(`(?m)^# HELP (\S+) `)
	for _, u := range []string{hubURL, node} {
		resp, err := http.Get(u + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		m, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, name := range help.FindAllStringSubmatch(string(m), -1) {
			exported[name[1]] = true
		}
	}
	metric := regexp.MustCompile(`\bwarren_[a-z0-9_]+`)
	queries := 0
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			queries++
			names := metric.FindAllString(tg.Expr, -1)
			if len(names) == 0 {
				t.Errorf("panel %q: query %q names no warren metric", p.Title, tg.Expr)
			}
			for _, n := range names {
				if !exported[n] {
					t.Errorf("panel %q: query %q names %s, which warren does not export", p.Title, tg.Expr, n)
				}
			}
		}
	}
	if queries < 10 {
		t.Fatalf("only %d queries: the walk over the dashboard is broken", queries)
	}
}
