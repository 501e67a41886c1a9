package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/warren-cache/warren/hub"
)

// runApp runs warren with args and returns what it printed and its error.
func runApp(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	app := newApp()
	app.Writer, app.ErrWriter = &out, &out
	err := app.Run(append([]string{"warren"}, args...))
	return out.String(), err
}

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o644)
		return p
	}
	file := filepath.Join(dir, "warren.yaml")
	os.WriteFile(file, []byte("listen: 127.0.0.1:4000\ncache_dir: /from/file\nindex_ttl: 9s\nallow_clients: [10.0.0.0/8]\n"), 0o644)
	tests := []struct {
		name  string
		env   map[string]string
		args  []string
		wants []string
	}{
		{"defaults", nil, []string{"--config", filepath.Join(dir, "empty.yaml")}, []string{"listen: :3142", "cache_dir: /var/cache/warren", "index_ttl: 5s"}},
		{"file", nil, []string{"--config", file}, []string{"listen: 127.0.0.1:4000", "cache_dir: /from/file", "index_ttl: 9s", "- 10.0.0.0/8"}},
		{"env over file", map[string]string{"WARREN_CACHE_DIR": "/from/env"}, []string{"--config", file}, []string{"cache_dir: /from/env", "listen: 127.0.0.1:4000"}},
		{"flag over env", map[string]string{"WARREN_CACHE_DIR": "/from/env"}, []string{"--config", file, "--cache-dir", "/from/flag", "--index-ttl", "1m"}, []string{"cache_dir: /from/flag", "index_ttl: 1m0s"}},
		{"config file from env", map[string]string{"WARREN_CONFIG": file}, nil, []string{"listen: 127.0.0.1:4000"}},
		{"a node of two hubs", nil, []string{"--config", write("node.yaml", "hubs: [http://hub1:3142, http://hub2]\nhub_token: t0k-0123456789abcdef\nhub_only: true\n")},
			[]string{"- http://hub1:3142", "- http://hub2", "hub_only: true"}},
		{"a hub", nil, []string{"--role", "hub", "--hub-mode", "preload", "--hub-tokens", "a-0123456789abcdef", "--max-requesters", "3", "--retry-delay", "30s"},
			[]string{"role: hub", "hub_mode: preload", "max_requesters: 3", "retry_delay: 30s", "keep_index_generations: 2"}},
		{"a hub token given as its sum", nil, []string{"--role", "hub", "--hub-tokens", "sha256:" + strings.Repeat("ab", 32)}, []string{"role: hub"}},
		// https_intercept as the shipped warren.yaml shows it: a scalar.
		{"https_intercept auto", nil, []string{"--config", write("hi1.yaml", "https_intercept: auto\n")}, []string{"https_intercept:\n    - auto\n"}},
		{"https_intercept off", nil, []string{"--config", write("hi2.yaml", "https_intercept: off\n")}, []string{"https_intercept:\n    - \"off\"\n"}},
		{"https_intercept one host", nil, []string{"--config", write("hi3.yaml", "https_intercept: deb.example.org\n")}, []string{"https_intercept:\n    - deb.example.org\n"}},
		{"https_intercept a list", nil, []string{"--config", write("hi4.yaml", "https_intercept: [a.example.org, b.example.org]\n")}, []string{"    - a.example.org\n    - b.example.org\n"}},
		{"https_intercept flag", nil, []string{"--https-intercept", "off"}, []string{"https_intercept:\n    - \"off\"\n"}},
		{"mirror_lists a prefix beside auto", nil, []string{"--config", write("ml1.yaml", "mirror_lists: [auto, \"https://mirrors.fedoraproject.org/metalink\"]\n")}, []string{"mirror_lists:\n    - auto\n    - https://mirrors.fedoraproject.org/metalink\n"}},
		{"mirror_lists flag", nil, []string{"--mirror-lists", "off"}, []string{"mirror_lists:\n    - \"off\"\n"}},
		{"IPv6 peers, hubs and networks", nil, []string{"--discovery", "static", "--peer", "[fd00:77::12]:3142", "--peer", "[fe80::12%eth0]:3142", "--hub", "https://[fd00:77::2]:3142",
			"--allow-client", "fd00:77::/64", "--allow-upstream", "fd00:99::/48"}, []string{"- '[fd00:77::12]:3142'", "- https://[fd00:77::2]:3142", "- fd00:77::/64", "- fd00:99::/48"}},
		{"memory_limit default", nil, []string{"--config", filepath.Join(dir, "empty.yaml")}, []string{"memory_limit: 16MiB\n"}},
		{"memory_limit from the file", nil, []string{"--config", write("mem.yaml", "memory_limit: 64MiB\n")}, []string{"memory_limit: 64MiB\n"}},
		{"memory_limit env over file", map[string]string{"WARREN_MEMORY_LIMIT": "off"}, []string{"--config", write("mem2.yaml", "memory_limit: 64MiB\n")}, []string{"memory_limit: \"off\"\n"}},
		{"memory_limit flag", nil, []string{"--memory-limit", "48MiB"}, []string{"memory_limit: 48MiB\n"}},
		{"chocolatey feeds", nil, []string{"--config", write("choco.yaml", "chocolatey:\n  upstream: http://proget:8624/nuget/choco/\n  feeds:\n    internal: http://proget:8624/nuget/internal/\n")},
			[]string{"upstream: http://proget:8624/nuget/choco/", "internal: http://proget:8624/nuget/internal/"}},
	}
	os.WriteFile(filepath.Join(dir, "empty.yaml"), nil, 0o644)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			out, err := runApp(t, append([]string{"config", "check"}, tt.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.wants {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// Every mistake is a usage error (exit 2) that says what was wrong.
func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o644)
		return p
	}
	writeMode := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), mode)
		os.Chmod(p, mode)
		return p
	}
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"unknown flag", []string{"serve", "--no-such-flag"}, "flag provided but not defined"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"missing config file", []string{"config", "check", "--config", filepath.Join(dir, "nope.yaml")}, "no such file"},
		{"misspelt key", []string{"config", "check", "--config", write("typo.yaml", "cache_dri: /x\n")}, "field cache_dri not found"},
		{"not yaml", []string{"config", "check", "--config", write("bad.yaml", "listen: [\n")}, "config file"},
		{"bad duration in file", []string{"config", "check", "--config", write("dur.yaml", "index_ttl: soon\n")}, "not a duration"},
		{"bad duration flag", []string{"config", "check", "--index-ttl", "soon"}, "want a duration"},
		{"bad cidr", []string{"config", "check", "--allow-client", "10.0.0.0/33"}, "allow_clients"},
		{"bad allow_upstream", []string{"config", "check", "--allow-upstream", "localhost"}, "allow_upstream"},
		{"zero max_connections", []string{"config", "check", "--max-connections", "0"}, "max_connections"},
		{"memory_limit too small", []string{"config", "check", "--memory-limit", "4MiB"}, `memory_limit "4MiB" is below 16 MiB`},
		{"memory_limit not a size", []string{"config", "check", "--config", write("mem.yaml", "memory_limit: plenty\n")}, `memory_limit "plenty": want a size such as 48MiB`},
		{"bad chocolatey rate", []string{"config", "check", "--chocolatey-upstream-rate", "lots"}, "chocolatey.upstream_rate"},
		{"bad query_ttl kind", []string{"config", "check", "--config", write("ttl.yaml", "chocolatey:\n  query_ttl:\n    everything: 1h\n")}, "chocolatey.query_ttl"},
		{"bad port", []string{"config", "check", "--connect-port", "70000"}, "not a TCP port"},
		{"bad log level", []string{"config", "check", "--log-level", "loud"}, "log_level"},
		{"bad size", []string{"config", "check", "--disk-min-free", "lots"}, "disk_min_free"},
		{"bad cache_max", []string{"config", "check", "--cache-max", "half"}, "cache_max"},
		{"max days below min days", []string{"config", "check", "--config", write("days.yaml", "cache_min_days: 5\ncache_max_days: 2\n")}, "cache_max_days"},
		{"serve with an argument", []string{"serve", "extra"}, "no arguments"},
		{"bad chocolatey upstream", []string{"config", "check", "--chocolatey-upstream", "ftp://x/"}, "chocolatey.upstream"},
		{"bad feed name", []string{"config", "check", "--config", write("feed.yaml", "chocolatey:\n  feeds:\n    ../x: http://proget/nuget/\n")}, "feed name"},
		{"bad share_min_size", []string{"config", "check", "--share-min-size", "big"}, "share_min_size"},
		{"bad scrub_rate", []string{"config", "check", "--scrub-rate", "fast"}, "scrub_rate"},
		{"zero stall_timeout", []string{"config", "check", "--stall-timeout", "0s"}, "stall_timeout"},
		{"bad role", []string{"config", "check", "--role", "boss"}, "want peer, passive or hub"},
		{"bad hub_mode", []string{"config", "check", "--role", "hub", "--hub-mode", "lazy"}, "hub_mode"},
		{"hub URL not http", []string{"config", "check", "--hub", "ftp://hub:3142/"}, "want http://host:port or https://host:port"},
		{"hub URL with an IPv6 literal without brackets", []string{"config", "check", "--hub", "http://fd00:77::2:3142"}, "an IPv6 address in a URL goes in brackets, the port after them, e.g. http://[fd00::2]:3142"},
		{"replicate_from with an IPv6 literal without brackets", []string{"config", "check", "--role", "hub", "--config", write("r6v6.yaml", "replicate_from: [{name: main, url: \"https://fd00:77::2:3142\", token: 0123456789abcdef}]\n")}, "goes in brackets"},
		{"a token to an http hub under hub_require_tls", []string{"config", "check", "--hub-require-tls", "--hub", "https://hub.example", "--hub", "http://hub2.example:3142", "--hub-token", "t0k-0123456789abcdef"},
			"hub_require_tls: the hub token goes to http://hub2.example:3142 in clear; use the hub's https:// URL"},
		{"a token in an http hub URL under hub_require_tls", []string{"config", "check", "--hub-require-tls", "--hub", "http://warren:t0k-0123456789abcdef@hub.example"}, "the hub token goes to http://warren:***@hub.example:3142 in clear"},
		{"a replicate_from token over http under hub_require_tls", []string{"config", "check", "--role", "hub", "--hub-require-tls", "--config", write("rtls.yaml", "replicate_from: [{name: main, url: http://main:3142, token: 0123456789abcdef}]\n")}, "replicate_from main's token goes to http://main:3142 in clear"},
		{"a peer's IPv6 literal without brackets", []string{"config", "check", "--discovery", "static", "--peer", "fd00:77::12:3142"}, `"fd00:77::12:3142": an IPv6 address and its port are written [address]:port, e.g. [fd00::5]:3142`},
		{"a link-local peer without its zone", []string{"config", "check", "--discovery", "static", "--peer", "[fe80::5]:3142"}, `"[fe80::5]:3142": fe80::5 is link-local: name its interface, e.g. [fe80::5%eth0]:3142`},
		{"a peer without a port", []string{"config", "check", "--discovery", "static", "--peer", "10.0.0.5"}, "want host:port"},
		{"bad peer_tls", []string{"config", "check", "--peer-tls", "maybe"}, "peer_tls \"maybe\": want auto"},
		{"peer_tls on a hub", []string{"config", "check", "--role", "hub", "--peer-tls", "on"}, "a hub takes no part in LAN peering"},
		{"tls_cert without tls_key", []string{"config", "check", "--role", "hub", "--tls-cert", "/etc/warren/hub.crt"}, "tls_cert and tls_key go together"},
		{"tls_cert on a node", []string{"config", "check", "--tls-cert", "/x.crt", "--tls-key", "/x.key"}, "set role hub"},
		{"tls_hosts an address", []string{"config", "check", "--role", "hub", "--tls-host", "10.0.0.2"}, "tls_hosts: 10.0.0.2 is an IP address"},
		{"hub URL with a path", []string{"config", "check", "--hub", "http://hub:3142/x"}, "want http://host:port"},
		{"hub_only without a hub", []string{"config", "check", "--hub-only"}, "hub_only needs"},
		{"hub_tokens on a node", []string{"config", "check", "--hub-tokens", "t"}, "role hub"},
		{"a hub that names itself", []string{"config", "check", "--role", "hub", "--listen", ":3142", "--hub", "http://127.0.0.1:3142"}, "must not include itself"},
		{"zero max_requesters", []string{"config", "check", "--role", "hub", "--max-requesters", "0"}, "max_requesters"},
		{"bad retry_delay", []string{"config", "check", "--retry-delay", "later"}, "want a duration"},
		{"preload on a node", []string{"config", "check", "--config", write("pl1.yaml", "preload:\n  rpm: [{baseurl: http://m/os/, packages: [kernel*]}]\n")}, "set role hub"},
		{"preload in fetch mode", []string{"config", "check", "--role", "hub", "--hub-mode", "fetch", "--config", write("pl2.yaml", "preload:\n  rpm: [{baseurl: http://m/os/, packages: [kernel*]}]\n")}, "set role hub"},
		{"preload entry without suites", []string{"config", "check", "--role", "hub", "--config", write("pl3.yaml", "preload:\n  apt: [{url: http://m/debian, packages: [x]}]\n")}, "preload.apt[0]: suites"},
		{"preload bad glob", []string{"config", "check", "--role", "hub", "--config", write("pl4.yaml", "preload:\n  rpm: [{baseurl: http://m/os/, packages: [\"[\"]}]\n")}, "not a name glob"},
		{"preload bad versions", []string{"config", "check", "--role", "hub", "--config", write("pl5.yaml", "preload:\n  chocolatey: [{feed: http://f/api/v2/, ids: [git], versions: newest}]\n")}, "want latest or all"},
		{"preload of a private repository", []string{"config", "check", "--role", "hub", "--config", write("pl6.yaml", "preload:\n  apt: [{url: \"http://alice:s3cretpw@m/debian\", suites: [stable], components: [main], architectures: [amd64], packages: [x]}]\n")}, "preload.apt[0]: http://alice:***@m/debian: a repository with credentials is private"},
		{"bad preload_schedule", []string{"config", "check", "--preload-schedule", "nightly"}, "preload_schedule"},
		{"bad preload_rate", []string{"config", "check", "--preload-rate", "fast"}, "preload_rate"},
		{"replication on a node", []string{"config", "check", "--config", write("r1.yaml", "replication:\n  tokens: [{name: a, token: 0123456789abcdef}]\n")}, "need role hub"},
		{"short sync token", []string{"config", "check", "--role", "hub", "--config", write("r2.yaml", "replication:\n  tokens: [{name: a, token: short}]\n")}, "at least 16"},
		{"unnamed sync token", []string{"config", "check", "--role", "hub", "--config", write("r3.yaml", "replication:\n  tokens: [{token: 0123456789abcdef}]\n")}, "no name"},
		{"bad token scope", []string{"config", "check", "--role", "hub", "--config", write("r4.yaml", "replication:\n  tokens: [{name: a, token: 0123456789abcdef, repositories: {rpm: [{baseurl: ftp://m/}]}}]\n")}, "replication.tokens[0].repositories.rpm[0]"},
		{"replicate_from without a token", []string{"config", "check", "--role", "hub", "--config", write("r5.yaml", "replicate_from: [{name: main, url: http://main:3142}]\n")}, "no token"},
		{"replicate_from not http", []string{"config", "check", "--role", "hub", "--config", write("r6.yaml", "replicate_from: [{name: main, url: main:3142, token: t}]\n")}, "want the hub's http(s) URL"},
		{"replicate_from twice", []string{"config", "check", "--role", "hub", "--config", write("r7.yaml", "replicate_from: [{name: m, url: http://a:3142, token: t}, {name: m, url: http://b:3142, token: t}]\n")}, "used twice"},
		{"replicate_from itself", []string{"config", "check", "--role", "hub", "--listen", ":3142", "--config", write("r8.yaml", "replicate_from: [{name: me, url: http://127.0.0.1:3142, token: t}]\n")}, "cannot pull from itself"},
		{"https_intercept empty", []string{"config", "check", "--config", write("hi5.yaml", "https_intercept:\n")}, "https_intercept: want auto, off"},
		{"mirror_lists empty", []string{"config", "check", "--config", write("ml2.yaml", "mirror_lists:\n")}, "mirror_lists: want auto, off"},
		{"mirror_lists off and more", []string{"config", "check", "--mirror-lists", "off", "--mirror-lists", "auto"}, "off stands alone"},
		{"mirror_lists not a URL", []string{"config", "check", "--mirror-lists", "mirrors.fedoraproject.org"}, "is not an http(s) URL"},
		{"https_intercept a map", []string{"config", "check", "--config", write("hi6.yaml", "https_intercept: {a: b}\n")}, "config file"},
		{"short hub_token", []string{"config", "check", "--hub-token", "t0k"}, "hub_token: the token is 3 characters; give at least 16 (make one with: openssl rand -hex 24)"},
		{"short hub_tokens", []string{"config", "check", "--role", "hub", "--hub-tokens", "0123456789abcdef", "--hub-tokens", "short"}, "hub_tokens[1]: the token is 5 characters; give at least 16"},
		{"hub_tokens sum not hex", []string{"config", "check", "--role", "hub", "--hub-tokens", "sha256:" + strings.Repeat("x", 64)}, "hub_tokens[0]: sha256: must be followed by the token's SHA-256 in hex"},
		{"hub_tokens sum too short", []string{"config", "check", "--role", "hub", "--hub-tokens", "sha256:abcd"}, "64 characters"},
		{"hub_token as a sum", []string{"config", "check", "--hub-token", "sha256:" + strings.Repeat("ab", 32)}, "hub_token: give the token itself"},
		{"short replicate_from token", []string{"config", "check", "--role", "hub", "--config", write("r9.yaml", "replicate_from: [{name: main, url: http://main:3142, token: short}]\n")}, "replicate_from[0] (main): the token is 5 characters"},
		{"sync token as a short sum", []string{"config", "check", "--role", "hub", "--config", write("r10.yaml", "replication:\n  tokens: [{name: a, token: \"sha256:0123\"}]\n")}, "replication.tokens[0] (a): sha256: must be followed"},
		{"hub_token_file missing", []string{"config", "check", "--hub-token-file", filepath.Join(dir, "nope")}, "hub_token_file: open " + filepath.Join(dir, "nope") + ": no such file"},
		{"hub_token_file empty", []string{"config", "check", "--hub-token-file", writeMode("empty-token", "\n", 0o600)}, "hub_token_file: " + filepath.Join(dir, "empty-token") + " is empty"},
		{"hub_token_file readable by all", []string{"config", "check", "--hub-token-file", writeMode("open-token", "0123456789abcdef\n", 0o644)}, "(mode 0644): chmod o-rwx"},
		{"hub_token_file a directory", []string{"config", "check", "--hub-token-file", dir}, "is not a regular file"},
		{"hub_token_file two lines", []string{"config", "check", "--hub-token-file", writeMode("two-tokens", "0123456789abcdef\n0123456789abcdef\n", 0o600)}, "more than one line"},
		{"hub_token_file short", []string{"config", "check", "--hub-token-file", writeMode("short-token", "short\n", 0o640)}, "hub_token: the token is 5 characters"},
		{"hub_token and its file", []string{"config", "check", "--hub-token", "0123456789abcdef", "--hub-token-file", writeMode("token", "0123456789abcdef", 0o600)}, "both set"},
		{"replicate_from token_file empty", []string{"config", "check", "--role", "hub", "--config", write("r11.yaml", "replicate_from: [{name: main, url: http://main:3142, token_file: "+writeMode("empty-sync", "", 0o600)+"}]\n")}, "replicate_from[0] (main).token_file: " + filepath.Join(dir, "empty-sync") + " is empty"},
		{"replicate_from token and token_file", []string{"config", "check", "--role", "hub", "--config", write("r12.yaml", "replicate_from: [{name: main, url: http://main:3142, token: 0123456789abcdef, token_file: /x}]\n")}, "token and token_file both set"},
		{"bad replicate_schedule", []string{"config", "check", "--replicate-schedule", "hourly"}, "want a duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := runApp(t, tt.args...)
			var ue usageError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %v (%T), want a usage error", err, err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %q, want it to mention %q", err, tt.wantErr)
			}
		})
	}
}

func TestSizeOrPercent(t *testing.T) {
	tests := []struct {
		in      string
		bytes   int64
		percent float64
		bad     bool
	}{
		{"5GB", 5_000_000_000, 0, false},
		{"500MiB", 500 << 20, 0, false},
		{"10%", 0, 10, false},
		{"101%", 0, 0, true},
		{"many", 0, 0, true},
	}
	for _, tt := range tests {
		v, err := parseSizeOrPercent(tt.in)
		if (err != nil) != tt.bad || !tt.bad && (v.bytes_ != tt.bytes || v.percent != tt.percent) {
			t.Errorf("parseSizeOrPercent(%q) = %+v, %v", tt.in, v, err)
		}
	}
	v, _ := parseSizeOrPercent("50%")
	n, err := v.bytes(t.TempDir())
	if err != nil || n <= 0 {
		t.Errorf("50%% of the temp dir's file system = %d, %v", n, err)
	}
}

// A token may come from a file (hub_token_file, a replicate_from entry's
// token_file): what is sent is the file's one line.
func TestTokenFiles(t *testing.T) {
	dir := t.TempDir()
	hubTok, syncTok := filepath.Join(dir, "hub-token"), filepath.Join(dir, "sync-token")
	os.WriteFile(hubTok, []byte("  node-token-0123456789\n"), 0o640)
	os.WriteFile(syncTok, []byte("sync-token-0123456789"), 0o600)
	cfg := defaults()
	cfg.Role, cfg.HubTokenFile = "hub", hubTok
	cfg.ReplicateFrom = []hub.ReplicateFrom{{Name: "main", URL: "http://main:3142", TokenFile: syncTok}, {Name: "b", URL: "http://b:3142", Token: "in-the-config-0123"}}
	s, err := cfg.parse()
	if err != nil {
		t.Fatal(err)
	}
	if s.hubToken != "node-token-0123456789" {
		t.Errorf("hub token %q, want the file's line", s.hubToken)
	}
	if len(s.replicateFrom) != 2 || s.replicateFrom[0].Token != "sync-token-0123456789" || s.replicateFrom[1].Token != "in-the-config-0123" {
		t.Errorf("replicate_from tokens: %+v", s.replicateFrom)
	}
	if cfg.ReplicateFrom[0].Token != "" {
		t.Error("parse changed the config it was given")
	}
}

// config check prints the settings with every secret redacted: tokens by
// their last 4 characters, URLs without their password.
func TestConfigCheckRedacts(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "hub.yaml")
	os.WriteFile(file, []byte(`role: hub
hubs: ["http://warren:hub-pass-0123456789@upper-hub:3142"]
hub_token: node-token-0123456789aaaa
hub_tokens: [site-token-0123456789bbbb, "sha256:`+strings.Repeat("0", 60)+`cccc"]
group_secret: group-secret-0123456789dddd
replication:
  tokens: [{name: region, token: sync-token-0123456789eeee}]
replicate_from: [{name: main, url: "http://puller:pull-pass@main:3142", token: pull-token-0123456789ffff}]
chocolatey:
  upstream: https://feeduser:feed-pass@proget.example/nuget/choco/
  feeds:
    internal: https://TOKEN-IN-USER@proget.example/nuget/internal/
`), 0o640)
	out, err := runApp(t, "config", "check", "--config", file)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"hub-pass", "node-token", "site-token", strings.Repeat("0", 60), "group-secret", "sync-token", "pull-pass", "pull-token", "feed-pass", "TOKEN-IN-USER"} {
		if strings.Contains(out, secret) {
			t.Errorf("config check shows %s", secret)
		}
	}
	for _, want := range []string{"- http://warren:***@upper-hub:3142", "hub_token: …aaaa", "- …bbbb", "- sha256:…cccc", "group_secret: …dddd",
		"token: …eeee", "url: http://puller:***@main:3142", "token: …ffff", "upstream: https://feeduser:***@proget.example/nuget/choco/",
		"internal: https://***@proget.example/nuget/internal/"} {
		if !strings.Contains(out, want) {
			t.Errorf("config check lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(out)
	}
	// An error that quotes a URL does not show its password.
	_, err = runApp(t, "config", "check", "--hub", "http://warren:hub-pass-0123456789@hub:3142/path")
	if err == nil || strings.Contains(err.Error(), "hub-pass") || !strings.Contains(err.Error(), "warren:***@hub") {
		t.Errorf("a bad hubs entry: %v", err)
	}
	// Nor does yaml's complaint about a token given where a list is wanted.
	os.WriteFile(file, []byte("hub_tokens: s3cretpw-0123456789abcdef\n"), 0o640)
	_, err = runApp(t, "config", "check", "--config", file)
	if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("a token where a list is wanted: %v", err)
	}
}
