package main

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestPeerTLSOverNetns is a LAN whose peers take blobs from each other
// over mutual TLS with node certificates from the site CA. A hub holds
// the CA and serves https. Four nodes, found by mDNS:
//
//   - n1 holds the CA's certificate and the hub token: it enrols with the
//     hub at start (its request, signed over https);
//   - n2 holds a certificate issued by hand on the hub (warren ca issue
//     --node --id, copied to its <cache_dir>/tls/);
//   - n3 holds the CA's certificate and no certificate of its own;
//   - n4 has a CA of its own, and a certificate from it.
//
// n1 fetches an artifact through the hub; n2 takes it from n1 over mutual
// TLS (the mirror is not asked again). n3 and n4 get nothing from their
// peers (each peer refuses them in the handshake, counts it and logs the
// address; n4 refuses their certificates in turn) and fetch it from the
// mirror themselves. `warren peers` and
// the page say how each link went.
func TestPeerTLSOverNetns(t *testing.T) {
	requireRootStep(t, "WARREN_NETNS", "the peer TLS namespace test (ip netns)")
	requireTools(t, "ip", "curl", "/usr/bin/python3")
	const mirror, hubAddr, token = "10.88.0.100", "10.88.0.50", "peer-tls-site-token-0123"
	const path, size = "/pool/main/big_1_all.deb", 8 << 20
	ids := map[string]string{"n1": strings.Repeat("1a", 16), "n2": strings.Repeat("2b", 16), "n3": strings.Repeat("3c", 16), "n4": strings.Repeat("4d", 16)}
	base := t.TempDir()
	deb := singleArtifactRepo(t, filepath.Join(base, "repo"), path, size)
	sum := sha256.Sum256(deb)
	lan := newLAN(t, "wrp", "10.88.0")
	lan.host("up", mirror)
	for name, addr := range map[string]string{"hub": hubAddr, "n1": "10.88.0.1", "n2": "10.88.0.2", "n3": "10.88.0.3", "n4": "10.88.0.4"} {
		lan.host(name, addr)
		dir := filepath.Join("/etc/netns", lan.ns(name))
		os.MkdirAll(dir, 0o755)
		t.Cleanup(func() { os.RemoveAll(dir) })
		os.WriteFile(filepath.Join(dir, "hosts"), []byte("127.0.0.1 localhost\n"+hubAddr+" hub.site.test\n"), 0o644)
	}
	script := filepath.Join(base, "mirror.py")
	os.WriteFile(script, []byte(staticMirrorPy), 0o644)
	upLog, _ := startLogged(t, exec.Command("ip", "netns", "exec", lan.ns("up"), "/usr/bin/python3", script, filepath.Join(base, "repo"), mirror), "mirror")
	waitUntil(t, "the mirror", 20*time.Second, func() bool {
		_, err := lan.curl("n1", "-o", "/dev/null", "http://"+mirror+"/dists/stable/Release")
		return err == nil
	})
	gets := func() int { return strings.Count(upLog.String(), `"GET `+path+` HTTP/1.1" 200`) }

	cacheOf := func(name string) string { return filepath.Join(base, name+"cache") }
	app := func(args ...string) string {
		t.Helper()
		out, err := runApp(t, args...)
		if err != nil {
			t.Fatalf("warren %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	app("ca", "init", "--config", "/dev/null", "--cache-dir", cacheOf("hub"), "--https-intercept", "off", "--hub-host", "hub.site.test")
	siteCA := filepath.Join(base, "site-ca.crt")
	app("ca", "export", "--cert", "--out", siteCA, "--config", "/dev/null", "--cache-dir", cacheOf("hub"))
	for name, id := range ids {
		os.MkdirAll(cacheOf(name), 0o750)
		os.WriteFile(filepath.Join(cacheOf(name), "node-id"), []byte(id+"\n"), 0o640)
		if name != "n4" {
			app("ca", "install", "--config", "/dev/null", "--cache-dir", cacheOf(name), siteCA)
		}
	}
	// n2's certificate, issued by hand on the hub and copied over.
	out := app("ca", "issue", "--node", "--id", ids["n2"], "--out", filepath.Join(base, "n2node"), "--config", "/dev/null", "--cache-dir", cacheOf("hub"))
	if !strings.Contains(out, "node "+ids["n2"]) {
		t.Fatalf("ca issue --node:\n%s", out)
	}
	os.MkdirAll(filepath.Join(cacheOf("n2"), "tls"), 0o750)
	for _, ext := range []string{".crt", ".key"} {
		b, _ := os.ReadFile(filepath.Join(base, "n2node"+ext))
		os.WriteFile(filepath.Join(cacheOf("n2"), "tls", "node"+ext), b, 0o600)
	}
	// n4: a CA of its own, which makes n4 a certificate at start.
	app("ca", "init", "--config", "/dev/null", "--cache-dir", cacheOf("n4"), "--https-intercept", "off", "--hub-host", "elsewhere.test")

	start := func(name string, args ...string) *syncBuffer {
		cmd := exec.Command("ip", append([]string{"netns", "exec", lan.ns(name), warrenBinary(t), "serve", "--config", "/dev/null", "--https-intercept", "off",
			"--listen", "0.0.0.0:3142", "--cache-dir", cacheOf(name), "--log-level", "debug"}, args...)...)
		logs, ready := startLogged(t, cmd, name)
		waitReady(t, ready, logs, name)
		return logs
	}
	hubConf := filepath.Join(base, "hub.yaml")
	os.WriteFile(hubConf, []byte("role: hub\nhub_mode: fetch\nhub_tokens: ["+token+"]\ntls_hosts: [hub.site.test]\n"), 0o644)
	start("hub", "--config", hubConf)
	logs := map[string]*syncBuffer{
		"n1": start("n1", "--hub", "https://hub.site.test:3142", "--hub-token", token),
		"n2": start("n2"), "n3": start("n3"), "n4": start("n4"),
	}
	for name, from := range map[string]string{"n1": "from=\"enrolment with hub https://hub.site.test:3142\"", "n2": "from=" + filepath.Join(cacheOf("n2"), "tls", "node.crt"),
		"n4": "from=\"the site CA on this machine\""} {
		if !strings.Contains(logs[name].String(), from) {
			t.Fatalf("%s did not get its certificate %s:\n%s", name, from, tail(logs[name].String(), 30))
		}
	}
	if !strings.Contains(logs["n3"].String(), "this node has no certificate from the site CA") {
		t.Fatalf("n3 does not say it has no certificate:\n%s", tail(logs["n3"].String(), 30))
	}
	stats := func(name string) map[string]any {
		out, _ := lan.curl(name, "http://127.0.0.1:3142/_warren/stats")
		var m map[string]any
		json.Unmarshal([]byte(out), &m)
		return m
	}
	waitUntil(t, "every node to see its 3 peers", 90*time.Second, func() bool {
		for name := range ids {
			if n, _ := stats(name)["peers"].(float64); n != 3 {
				return false
			}
		}
		return true
	})
	fetch := func(name string) {
		t.Helper()
		if out, err := lan.curl(name, "-o", "/dev/null", "-x", "http://127.0.0.1:3142", "http://"+mirror+"/dists/stable/main/binary-amd64/Packages"); err != nil {
			t.Fatalf("%s: the index: %v %s", name, err, out)
		}
		dst := filepath.Join(base, "out-"+name)
		if out, err := lan.curl(name, "-o", dst, "-x", "http://127.0.0.1:3142", "http://"+mirror+path); err != nil {
			t.Fatalf("%s: %v %s", name, err, out)
		}
		if b, _ := os.ReadFile(dst); sha256.Sum256(b) != sum {
			t.Fatalf("%s got %d bytes that do not match the artifact's SHA256", name, len(b))
		}
	}
	fetch("n1")
	fetch("n2")
	if n := gets(); n != 1 {
		t.Fatalf("the mirror served the artifact %d times for n1 (through the hub) and n2, want 1: n2 did not take it from n1 over TLS", n)
	}
	if got, _ := stats("n2")["bytes_peers"].(float64); got != size {
		t.Fatalf("n2 took %v bytes from peers, want %d", got, size)
	}
	out = app("peers", "--cache-dir", cacheOf("n2"))
	if !regexp.MustCompile(`(?m)^` + ids["n1"] + `.*mutual TLS$`).MatchString(out) {
		t.Fatalf("warren peers on n2 does not show its link to n1 as mutual TLS:\n%s", out)
	}
	uploaded := func() float64 {
		a, _ := stats("n1")["bytes_uploaded"].(float64)
		b, _ := stats("n2")["bytes_uploaded"].(float64)
		return a + b
	}
	before := uploaded()
	fetch("n3")
	fetch("n4")
	if n := gets(); n != 3 {
		t.Fatalf("the mirror served the artifact %d times, want 3: n3 and n4, lacking a site CA certificate, should have got nothing from their peers", n)
	}
	if after := uploaded(); after != before {
		t.Fatalf("n1 and n2 uploaded %v bytes to peers without a site CA certificate", after-before)
	}
	for _, name := range []string{"n3", "n4"} {
		if got, _ := stats(name)["bytes_peers"].(float64); got != 0 {
			t.Fatalf("%s took %v bytes from peers", name, got)
		}
	}
	for _, name := range []string{"n1", "n2"} {
		if got, _ := stats(name)["peer_tls_refused"].(float64); got < 1 {
			t.Errorf("%s counts %v refused peers", name, got)
		}
	}
	// n3 presented none: refused by n1 and n2, which say so. n4 refused
	// their certificates first (TLS 1.3: the client checks the server's
	// before it shows its own), and says so.
	for _, name := range []string{"n1", "n2"} {
		waitUntil(t, name+" to log the refused peer", 10*time.Second, func() bool {
			l := logs[name].String()
			return strings.Contains(l, "refused a peer without a node certificate from the site CA") && strings.Contains(l, "peer=10.88.0.3:")
		})
	}
	page, _ := lan.curl("n3", "http://127.0.0.1:3142/_warren/")
	if !strings.Contains(page, "refused: the peer refused this node&#39;s certificate") || !strings.Contains(page, "peer_tls: this node has no certificate from the site CA") {
		t.Fatalf("n3's page does not say why its peers give it nothing:\n%s", page)
	}
	page, _ = lan.curl("n4", "http://127.0.0.1:3142/_warren/")
	if !strings.Contains(page, "is not from this site&#39;s CA") {
		t.Fatalf("n4's page does not say its peers' certificates are not from its CA:\n%s", page)
	}
	fmt.Println("peer TLS netns test: n2 took the artifact from n1 over mutual TLS; n3 (no certificate) and n4 (another CA's) got nothing from their peers")
}
