package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDnfSetup(t *testing.T) {
	tests := []struct {
		name, before, want, wantErr string
		cacert                      string
	}{
		{"no file", "", "[main]\n" + dnfMarker + "\nproxy=http://127.0.0.1:3142\n", "", ""},
		// --https: the bundle in [main], which every repo inherits (the
		// repo files stay as shipped, metalink= ones too).
		{"https", "[main]\ngpgcheck=1\n[local]\nsslcacert=/etc/pki/local.pem\n", "[main]\n" + dnfMarker + "\nproxy=http://127.0.0.1:3142\n" + dnfMarker +
			"\nsslcacert=/etc/warren/ca-bundle.crt\ngpgcheck=1\n[local]\nsslcacert=/etc/pki/local.pem\n", "", "/etc/warren/ca-bundle.crt"},
		{"https, a CA of the operator's", "[main]\nsslcacert=/etc/pki/mine.pem\n", "", "already sets sslcacert", "/etc/warren/ca-bundle.crt"},
		{"under [main]", "[main]\ngpgcheck=1\n", "[main]\n" + dnfMarker + "\nproxy=http://127.0.0.1:3142\ngpgcheck=1\n", "", ""},
		// An earlier version's line, which dnf could not read, is replaced.
		{"legacy line", "[main]\nproxy=http://127.0.0.1:3142 # added by warren dnf-setup\n", "[main]\n" + dnfMarker + "\nproxy=http://127.0.0.1:3142\n", "", ""},
		{"foreign proxy kept", "[main]\nproxy=http://squid:3128\n", "", "already sets a proxy", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "dnf.conf")
			if tt.before != "" {
				os.WriteFile(path, []byte(tt.before), 0o644)
			}
			_, err := dnfSetup(path, "http://127.0.0.1:3142", tt.cacert, false)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := dnfSetup(path, "http://127.0.0.1:3142", tt.cacert, false); err != nil { // twice: no change
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(path); string(got) != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
			if _, err := dnfSetup(path, "", "", true); err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(path)
			if strings.Contains(string(got), "proxy=") || strings.Contains(string(got), "warren/ca-bundle") || !strings.Contains(string(got), "[main]") {
				t.Fatalf("after undo: %q", got)
			}
		})
	}
}

func TestAptProxyDetect(t *testing.T) {
	daemon := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/_warren/stats" {
			w.Write([]byte("{}"))
		}
	}))
	port := daemon.URL[strings.LastIndex(daemon.URL, ":")+1:]
	raw := defaults()
	raw.Listen = "127.0.0.1:" + port
	raw.Discovery = "off" // no mDNS from the root namespace
	cfg, err := raw.parse()
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if got := aptProxy(ctx, cfg, "http://deb.debian.org/debian/dists/bookworm/InRelease", time.Second); got != "http://127.0.0.1:"+port {
		t.Fatalf("with the daemon up: %q", got)
	}
	if got := aptProxy(ctx, cfg, "https://example.org/x", time.Second); got != "DIRECT" {
		t.Fatalf("https: %q", got)
	}
	daemon.Close()
	if got := aptProxy(ctx, cfg, "http://deb.debian.org/debian/pool/x.deb", 200*time.Millisecond); got != "DIRECT" {
		t.Fatalf("with the daemon down: %q", got)
	}
	// Through the CLI, as apt runs it.
	out, err := runApp(t, "apt-proxy-detect", "--discovery", "off", "--listen", cfg.Listen, "http://x/y")
	if err != nil || strings.TrimSpace(out) != "DIRECT" {
		t.Fatalf("cli: %q %v", out, err)
	}
}
