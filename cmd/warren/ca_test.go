package main

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// ca export never prints the CA's private key on a terminal: a pty
// stands for one.
func TestCAExportRefusesATerminal(t *testing.T) {
	cache := t.TempDir()
	if _, err := runApp(t, "ca", "init", "--https-intercept", "repo.example", "--cache-dir", cache); err != nil {
		t.Fatal(err)
	}
	pty, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("a pty for the test: %v", err)
	}
	defer pty.Close()
	for _, tt := range []struct {
		name string
		out  *os.File
		ok   bool
	}{{"terminal", pty, false}, {"/dev/null", devNull(t), true}} {
		app := newApp()
		app.Writer, app.ErrWriter = tt.out, io.Discard
		err := app.Run([]string{"warren", "ca", "export", "--cache-dir", cache})
		if tt.ok != (err == nil) || !tt.ok && !strings.Contains(err.Error(), "--out FILE") {
			t.Errorf("ca export to a %s: %v", tt.name, err)
		}
	}
}

func devNull(t *testing.T) *os.File {
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// The site CA from the CLI, and what apt and dnf are told: ca init (the
// key 0600, refused a second time without --force), show, export and
// install on another machine; apt-setup (per-host CaInfo, a bundle of the
// system's CAs and the site CA, the https helper) and its undo; dnf-setup
// --https (sslcacert only in repos on an intercepted host) and its undo;
// apt's helper answers the local warren for an intercepted https host
// while it runs, DIRECT otherwise.
func TestSiteCAFromTheCLI(t *testing.T) {
	base := t.TempDir()
	cache := filepath.Join(base, "cache")
	host := []string{"--https-intercept", "repo.example", "--cache-dir", cache}
	out, err := runApp(t, append([]string{"ca", "init"}, host...)...)
	fp := regexp.MustCompile(`fingerprint \(SHA-256\): ([0-9A-F:]{95})`).FindStringSubmatch(out)
	if err != nil || fp == nil || !strings.Contains(out, "may sign for: repo.example (and no IP address)") {
		t.Fatalf("ca init: %v\n%s", err, out)
	}
	if fi, err := os.Stat(filepath.Join(cache, "ca", "site-ca.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the key: %v %v", err, fi)
	}
	if _, err := runApp(t, append([]string{"ca", "init"}, host...)...); err == nil || !strings.Contains(err.Error(), "--force replaces it") {
		t.Fatalf("a second ca init: %v", err)
	}
	if out, err := runApp(t, append([]string{"ca", "show"}, host...)...); err != nil || !strings.Contains(out, fp[1]) || !strings.Contains(out, "intercepted now (https_intercept repo.example): repo.example") {
		t.Fatalf("ca show: %v\n%s", err, out)
	}
	exported, err := runApp(t, append([]string{"ca", "export"}, host...)...)
	if err != nil || !strings.Contains(exported, "PRIVATE KEY") {
		t.Fatalf("ca export to a pipe: %v", err)
	}
	file := filepath.Join(base, "site-ca.pem")
	if out, err := runApp(t, append([]string{"ca", "export", "--out", file}, host...)...); err != nil || strings.Contains(out, "PRIVATE KEY") {
		t.Fatalf("ca export --out: %v\n%s", err, out)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != exported {
		t.Fatalf("ca export --out wrote %d bytes (%v), not the export", len(b), err)
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Fatalf("ca export --out: mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := runApp(t, append([]string{"ca", "export", "--out", file}, host...)...); err == nil || !strings.Contains(err.Error(), "must not exist") {
		t.Fatalf("ca export --out over an existing file: %v", err)
	}
	if out, err := runApp(t, "ca", "install", "--cache-dir", filepath.Join(base, "node"), file); err != nil || !strings.Contains(out, fp[1]) {
		t.Fatalf("ca install: %v\n%s", err, out)
	}
	// A node certificate by hand ties the node's id to its key for the
	// hub's enrolment; issued again (a node that lost its key), the new key
	// replaces the old, and says so.
	const nodeID = "00112233445566778899aabbccddeeff"
	issue := append([]string{"ca", "issue", "--node", "--id", nodeID, "--out", filepath.Join(base, "n1node")}, host...)
	if out, err := runApp(t, issue...); err != nil || strings.Contains(out, "replaces") {
		t.Fatalf("ca issue --node: %v\n%s", err, out)
	}
	if out, err := runApp(t, issue...); err != nil || !strings.Contains(out, "node "+nodeID+" was enrolled with another key: this certificate's key replaces it") {
		t.Fatalf("ca issue --node again: %v\n%s", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(cache, "ca", "enrolled.json")); err != nil || !strings.Contains(string(b), nodeID) {
		t.Fatalf("the hub's record of enrolled nodes: %v\n%s", err, b)
	}

	// apt.
	sys := filepath.Join(base, "system-cas.pem")
	os.WriteFile(sys, []byte("-----BEGIN CERTIFICATE-----\nMIIBsystem\n-----END CERTIFICATE-----\n"), 0o644)
	aptDir, bundle := filepath.Join(base, "apt.conf.d"), filepath.Join(base, "etc-warren", "ca-bundle.crt")
	files := append([]string{"--apt-conf-dir", aptDir, "--bundle", bundle, "--system-cas", sys, "--helper", "/usr/lib/warren/apt-proxy-detect"}, host...)
	if out, err := runApp(t, append([]string{"apt-setup"}, files...)...); err != nil || !strings.Contains(out, "apt trusts the site CA for repo.example") {
		t.Fatalf("apt-setup: %v\n%s", err, out)
	}
	snippet, _ := os.ReadFile(filepath.Join(aptDir, "31warren-https"))
	for _, want := range []string{`Acquire::https::repo.example::CaInfo "` + bundle + `";`, `Acquire::https::Proxy-Auto-Detect "/usr/lib/warren/apt-proxy-detect";`} {
		if !strings.Contains(string(snippet), want) {
			t.Fatalf("apt's snippet lacks %s:\n%s", want, snippet)
		}
	}
	if b, _ := os.ReadFile(bundle); !strings.Contains(string(b), "MIIBsystem") || strings.Count(string(b), "BEGIN CERTIFICATE") != 2 {
		t.Fatalf("the bundle is not the system's CAs and the site CA:\n%s", b)
	}
	if out, err := runApp(t, append([]string{"apt-setup", "--undo"}, files...)...); err != nil || !strings.Contains(out, "removed") {
		t.Fatalf("apt-setup --undo: %v\n%s", err, out)
	}
	for _, p := range []string{filepath.Join(aptDir, "31warren-https"), bundle} {
		if _, err := os.Stat(p); err == nil {
			t.Fatalf("%s is still there after --undo", p)
		}
	}

	// dnf.
	repos := filepath.Join(base, "yum.repos.d")
	os.MkdirAll(repos, 0o755)
	os.WriteFile(filepath.Join(repos, "vendor.repo"), []byte("[vendor]\nname=Vendor\nbaseurl=https://repo.example/el9/\n\n[other]\nbaseurl=https://other.example/el9/\n"), 0o644)
	os.WriteFile(filepath.Join(repos, "own.repo"), []byte("[own]\nbaseurl=https://repo.example/own/\nsslcacert=/etc/pki/own.pem\n"), 0o644)
	// A repo file an older dnf-setup --https had edited.
	os.WriteFile(filepath.Join(repos, "old.repo"), []byte("[old]\n"+dnfMarker+"\nsslcacert="+bundle+"\nbaseurl=https://repo.example/old/\n"), 0o644)
	shipped := map[string]string{}
	for _, name := range []string{"vendor.repo", "own.repo"} {
		b, _ := os.ReadFile(filepath.Join(repos, name))
		shipped[name] = string(b)
	}
	dnfConf := filepath.Join(base, "dnf.conf")
	os.WriteFile(dnfConf, []byte("[main]\ngpgcheck=1\n"), 0o644)
	dnfArgs := append([]string{"dnf-setup", "--https", "--repos-dir", repos, "--dnf-conf", dnfConf, "--bundle", bundle, "--system-cas", sys}, host...)
	if out, err := runApp(t, dnfArgs...); err != nil || !strings.Contains(out, "in every repository") || !strings.Contains(out, "from 1 repo files") {
		t.Fatalf("dnf-setup --https: %v\n%s", err, out)
	}
	// The repo files as shipped: the bundle is dnf.conf's, in [main].
	for name, want := range shipped {
		if got, _ := os.ReadFile(filepath.Join(repos, name)); string(got) != want {
			t.Fatalf("dnf-setup --https changed %s:\n%s", name, got)
		}
	}
	if old, _ := os.ReadFile(filepath.Join(repos, "old.repo")); strings.Contains(string(old), "sslcacert") {
		t.Fatalf("the older dnf-setup's line is still in old.repo:\n%s", old)
	}
	if conf, _ := os.ReadFile(dnfConf); !strings.Contains(string(conf), "[main]\n"+dnfMarker+"\nproxy=http://127.0.0.1:3142\n"+dnfMarker+"\nsslcacert="+bundle+"\n") {
		t.Fatalf("dnf.conf after dnf-setup --https:\n%s", conf)
	}
	if out, err := runApp(t, "dnf-setup", "--undo", "--repos-dir", repos, "--dnf-conf", dnfConf, "--cache-dir", cache); err != nil {
		t.Fatalf("dnf-setup --undo: %v\n%s", err, out)
	}
	if conf, _ := os.ReadFile(dnfConf); string(conf) != "[main]\ngpgcheck=1\n" {
		t.Fatalf("dnf-setup --undo left:\n%s", conf)
	}

	// apt's helper, with the daemon up and down.
	addr := freeLoopbackPort(t)
	_, daemon, _ := startWarrenAt(t, addr, host...)
	detect := func(uri string) string {
		out, err := runApp(t, "apt-proxy-detect", "--config", "/dev/null", "--discovery", "off", "--listen", addr, uri)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	local := "http://127.0.0.1:" + strings.Split(addr, ":")[1]
	for uri, want := range map[string]string{"https://repo.example/debian/dists/stable/InRelease": local, "https://other.example/x": "DIRECT", "http://deb.example/x": local} {
		if got := detect(uri); got != want {
			t.Fatalf("apt-proxy-detect %s with warren up: %s, want %s", uri, got, want)
		}
	}
	daemon.Process.Kill()
	daemon.Wait()
	if got := detect("https://repo.example/x"); got != "DIRECT" {
		t.Fatalf("apt-proxy-detect with warren down: %s, want DIRECT", got)
	}
}
