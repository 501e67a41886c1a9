package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
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
	if out, err := runApp(t, dnfArgs...); err != nil || !strings.Contains(out, "for every https host of every repository") || !strings.Contains(out, "from 1 repo files") {
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

// dnf-setup --https with configuration warren cannot read stops, as the
// README says and apt-setup does: which hosts are intercepted is not
// known, and nothing is written. (Before, it wrote the bundle and
// dnf.conf and said all was well.)
func TestDnfSetupStopsOnUnreadableConfig(t *testing.T) {
	base := t.TempDir()
	cache := filepath.Join(base, "cache")
	if _, err := runApp(t, "ca", "init", "--host", "repo.example", "--cache-dir", cache); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(base, "root")
	os.MkdirAll(filepath.Join(root, "etc", "apt", "auth.conf"), 0o755) // a directory: unreadable even to root
	old := configRoot
	configRoot = root
	t.Cleanup(func() { configRoot = old })
	sys := filepath.Join(base, "system-cas.pem")
	os.WriteFile(sys, []byte("# the system's CAs\n"), 0o644)
	dnfConf, bundle := filepath.Join(base, "dnf.conf"), filepath.Join(base, "bundle.crt")
	os.WriteFile(dnfConf, []byte("[main]\ngpgcheck=1\n"), 0o644)
	_, err := runApp(t, "dnf-setup", "--https", "--cache-dir", cache, "--repos-dir", filepath.Join(base, "repos"), "--dnf-conf", dnfConf, "--bundle", bundle, "--system-cas", sys)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(root, "etc", "apt", "auth.conf")) {
		t.Fatalf("dnf-setup --https with an unreadable auth.conf: %v, want an error naming it", err)
	}
	if conf, _ := os.ReadFile(dnfConf); string(conf) != "[main]\ngpgcheck=1\n" {
		t.Fatalf("dnf.conf was changed:\n%s", conf)
	}
	if _, err := os.Stat(bundle); err == nil {
		t.Fatal("the bundle was written")
	}
}

// A site with a CA for repo.example, an older dnf-setup's repo file and
// the system's CAs, for the dnf-setup and apt-setup tests: their paths.
type caSite struct {
	base, cache, repos, oldRepo, sys, bundle string
	intercept                                []string // the flags that name the CA's host
}

func newCASite(t *testing.T) caSite {
	t.Helper()
	base := t.TempDir()
	s := caSite{base: base, cache: filepath.Join(base, "cache"), repos: filepath.Join(base, "yum.repos.d"),
		sys: filepath.Join(base, "system-cas.pem"), bundle: filepath.Join(base, "bundle.crt")}
	s.intercept = []string{"--https-intercept", "repo.example", "--cache-dir", s.cache}
	if _, err := runApp(t, append([]string{"ca", "init"}, s.intercept...)...); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(s.repos, 0o755)
	s.oldRepo = "[old]\n" + dnfMarker + "\nsslcacert=" + s.bundle + "\nbaseurl=https://repo.example/old/\n"
	os.WriteFile(filepath.Join(s.repos, "old.repo"), []byte(s.oldRepo), 0o644)
	os.WriteFile(s.sys, []byte("# the system's CAs\n"), 0o644)
	return s
}

// dnf-setup with dnf's config not there, unreadable or one warren must
// not change fails with an error that names the file and what to do, and
// writes nothing: no config of its own, no bundle, no repo file changed.
// (Before, a missing config was written anew with warren's lines alone,
// --undo on one said there was nothing to undo, and --https wrote the
// bundle and edited the repo files before it read dnf.conf.)
func TestDnfSetupStopsOnABadDnfConf(t *testing.T) {
	tests := []struct {
		name  string
		conf  string // dnf.conf's text; "missing": none, "dir": a directory, "unreadable": mode 0
		given bool   // --dnf-conf names it, else dnfConfFiles are tried
		mode  []string
		wants []string // in the error; "CONF" stands for dnf.conf's path
	}{
		{"missing", "missing", true, nil, []string{"CONF", "is not there", "--dnf-conf"}},
		{"missing, --https", "missing", true, []string{"--https"}, []string{"CONF", "is not there", "--dnf-conf"}},
		{"missing, --undo", "missing", true, []string{"--undo"}, []string{"CONF", "is not there", "--dnf-conf"}},
		{"missing, --refresh", "missing", true, []string{"--refresh"}, []string{"CONF", "is not there", "--dnf-conf"}},
		{"none of the defaults, --https", "missing", false, []string{"--https"}, []string{"CONF", "yum.conf", "is dnf installed", "--dnf-conf"}},
		{"a directory, --https", "dir", true, []string{"--https"}, []string{"read dnf's config CONF", "--dnf-conf"}},
		{"a directory, --refresh", "dir", true, []string{"--refresh"}, []string{"read dnf's config CONF", "--dnf-conf"}},
		{"unreadable, --https", "unreadable", true, []string{"--https"}, []string{"read dnf's config CONF", "permission denied", "as root"}},
		{"a proxy of the operator's, --https", "[main]\nproxy=http://squid:3128\n", true, []string{"--https"}, []string{"CONF", "already sets a proxy"}},
		{"an sslcacert of the operator's, --https", "[main]\nsslcacert=/etc/pki/mine.pem\n", true, []string{"--https"}, []string{"CONF", "already sets sslcacert"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.conf == "unreadable" && os.Geteuid() == 0 {
				t.Skip("root reads a file of mode 0")
			}
			s := newCASite(t)
			conf := filepath.Join(s.base, "dnf.conf")
			switch tt.conf {
			case "missing":
			case "dir":
				os.MkdirAll(conf, 0o755)
			case "unreadable":
				os.WriteFile(conf, []byte("[main]\n"), 0)
			default:
				os.WriteFile(conf, []byte(tt.conf), 0o644)
			}
			args := append([]string{"dnf-setup"}, tt.mode...)
			args = append(args, "--repos-dir", s.repos, "--bundle", s.bundle, "--system-cas", s.sys)
			if tt.given {
				args = append(args, "--dnf-conf", conf)
			} else {
				old := dnfConfFiles
				dnfConfFiles = []string{conf, filepath.Join(s.base, "yum.conf")}
				t.Cleanup(func() { dnfConfFiles = old })
			}
			out, err := runApp(t, append(args, s.intercept...)...)
			if err == nil {
				t.Fatalf("dnf-setup %v succeeded:\n%s", tt.mode, out)
			}
			for _, want := range tt.wants {
				if want = strings.ReplaceAll(want, "CONF", conf); !strings.Contains(err.Error(), want) {
					t.Errorf("the error lacks %q: %v", want, err)
				}
			}
			switch got, rerr := os.ReadFile(conf); {
			case tt.conf == "missing" && !errors.Is(rerr, fs.ErrNotExist):
				t.Errorf("a dnf.conf was written:\n%s", got)
			case tt.conf != "missing" && tt.conf != "dir" && tt.conf != "unreadable" && string(got) != tt.conf:
				t.Errorf("dnf.conf was changed:\n%s", got)
			}
			if _, err := os.Stat(s.bundle); err == nil {
				t.Error("the bundle was written")
			}
			if got, _ := os.ReadFile(filepath.Join(s.repos, "old.repo")); string(got) != s.oldRepo {
				t.Errorf("old.repo was changed:\n%s", got)
			}
		})
	}
}

// The system's CAs copied into the bundle are --system-cas, else the
// first there is of Debian's, Fedora's and RHEL's (two) and openSUSE's
// files, for apt-setup and dnf-setup --https alike; with none, an error
// names them and --system-cas, and nothing is written. (Before, only
// Debian's was looked for.)
func TestSystemCAsDefault(t *testing.T) {
	tests := []struct {
		name  string
		there []int // which of the four files there are
		given bool  // --system-cas names another
		want  int   // the file the bundle starts with: -1 the given one, -2 an error
	}{
		{"Debian's", []int{0, 1, 2, 3}, false, 0},
		{"Fedora's and RHEL's", []int{1, 2}, false, 1},
		{"RHEL's extracted bundle", []int{2}, false, 2},
		{"openSUSE's", []int{3}, false, 3},
		{"none", nil, false, -2},
		{"--system-cas", []int{0, 1, 2, 3}, true, -1},
	}
	for _, tt := range tests {
		for _, command := range []string{"apt-setup", "dnf-setup"} {
			t.Run(tt.name+", "+command, func(t *testing.T) {
				s := newCASite(t)
				dir := filepath.Join(s.base, "system")
				os.MkdirAll(dir, 0o755)
				files := make([]string, 4)
				for i := range files {
					files[i] = filepath.Join(dir, fmt.Sprintf("cas-%d.pem", i))
				}
				for _, i := range tt.there {
					os.WriteFile(files[i], []byte(fmt.Sprintf("# system CAs %d\n", i)), 0o644)
				}
				old := systemCAFiles
				systemCAFiles = files
				t.Cleanup(func() { systemCAFiles = old })
				conf, aptDir := filepath.Join(s.base, "dnf.conf"), filepath.Join(s.base, "apt.conf.d")
				os.WriteFile(conf, []byte("[main]\n"), 0o644)
				args := []string{command, "--bundle", s.bundle}
				if command == "apt-setup" {
					args = append(args, "--apt-conf-dir", aptDir)
				} else {
					args = append(args, "--https", "--dnf-conf", conf, "--repos-dir", s.repos)
				}
				if tt.given {
					args = append(args, "--system-cas", s.sys)
				}
				out, err := runApp(t, append(args, s.intercept...)...)
				if tt.want == -2 {
					if err == nil {
						t.Fatalf("%s with no system CAs succeeded:\n%s", command, out)
					}
					for _, want := range append(files, "--system-cas") {
						if !strings.Contains(err.Error(), want) {
							t.Errorf("the error lacks %s: %v", want, err)
						}
					}
					if _, err := os.Stat(s.bundle); err == nil {
						t.Error("the bundle was written")
					}
					if got, _ := os.ReadFile(conf); string(got) != "[main]\n" {
						t.Errorf("dnf.conf was changed:\n%s", got)
					}
					if _, err := os.Stat(filepath.Join(aptDir, aptSnippet)); err == nil {
						t.Error("apt's snippet was written")
					}
					return
				}
				if err != nil {
					t.Fatalf("%s: %v\n%s", command, err, out)
				}
				want := "# the system's CAs\n"
				if tt.want >= 0 {
					want = fmt.Sprintf("# system CAs %d\n", tt.want)
				}
				if b, _ := os.ReadFile(s.bundle); !strings.HasPrefix(string(b), want) || !strings.Contains(string(b), "BEGIN CERTIFICATE") {
					t.Fatalf("the bundle, want %q and the site CA:\n%.200s", want, b)
				}
			})
		}
	}
}

// dnf-setup --refresh writes again the bundle dnf.conf names where
// dnf-setup --https put it (warren's marker), from the system's CAs now
// (the package's ca-certificates hook runs it on Debian, the operator
// after update-ca-trust on RPM systems); an sslcacert that is not
// warren's, and a config without one, are left alone. (Before, there was
// no --refresh: the bundle kept the CAs of the day dnf-setup ran.)
func TestDnfSetupRefresh(t *testing.T) {
	tests := []struct {
		name  string
		setup []string // dnf-setup's flags run first; nil: none
		conf  string   // dnf.conf before; "OWN" stands for the operator's bundle
		want  string   // in the output
	}{
		{"after dnf-setup --https", []string{"--https"}, "[main]\ngpgcheck=1\n", "refreshed BUNDLE (named in CONF) from SYS"},
		{"after dnf-setup without --https", []string{}, "[main]\ngpgcheck=1\n", "nothing to refresh"},
		{"no dnf-setup", nil, "[main]\ngpgcheck=1\n", "nothing to refresh"},
		{"an sslcacert of the operator's", nil, "[main]\nsslcacert=OWN\n", "nothing to refresh"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newCASite(t)
			conf, own := filepath.Join(s.base, "dnf.conf"), filepath.Join(s.base, "own.pem")
			os.WriteFile(own, []byte("# the operator's CAs\n"), 0o644)
			os.WriteFile(conf, []byte(strings.ReplaceAll(tt.conf, "OWN", own)), 0o644)
			args := append([]string{"--repos-dir", s.repos, "--dnf-conf", conf, "--bundle", s.bundle, "--system-cas", s.sys}, s.intercept...)
			if tt.setup != nil {
				if out, err := runApp(t, append(append([]string{"dnf-setup"}, tt.setup...), args...)...); err != nil {
					t.Fatalf("dnf-setup %v: %v\n%s", tt.setup, err, out)
				}
			}
			before, _ := os.ReadFile(s.bundle)
			os.WriteFile(s.sys, []byte("# the system's CAs, changed\n"), 0o644)
			out, err := runApp(t, append([]string{"dnf-setup", "--refresh"}, args...)...)
			want := strings.NewReplacer("BUNDLE", s.bundle, "CONF", conf, "SYS", s.sys).Replace(tt.want)
			if err != nil || !strings.Contains(out, want) {
				t.Fatalf("dnf-setup --refresh: %v\n%s\nwant %q", err, out, want)
			}
			after, _ := os.ReadFile(s.bundle)
			if tt.want == "nothing to refresh" {
				if string(after) != string(before) {
					t.Errorf("the bundle was written:\n%s", after)
				}
			} else if !strings.HasPrefix(string(after), "# the system's CAs, changed\n") || !strings.Contains(string(after), "BEGIN CERTIFICATE") {
				t.Errorf("the bundle after the refresh:\n%s", after)
			}
			if b, _ := os.ReadFile(own); string(b) != "# the operator's CAs\n" {
				t.Errorf("the operator's bundle was written:\n%s", b)
			}
		})
	}
}

// The package's ca-certificates hook refreshes the bundles of apt-setup
// and of dnf-setup --https, and never fails the update.
func TestCACertificatesHook(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "packaging", "ca-certificates-hook"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"/usr/bin/warren apt-setup --refresh --config /etc/warren/warren.yaml >/dev/null 2>&1 || true\n",
		"/usr/bin/warren dnf-setup --refresh --config /etc/warren/warren.yaml >/dev/null 2>&1 || true\n",
		"exit 0\n",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the hook lacks %q:\n%s", want, b)
		}
	}
}
