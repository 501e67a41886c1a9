package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHubTLSOverNetns is a site whose links to its hub are TLS: a mirror,
// a hub holding the site CA (it makes its own https certificate for
// hub.site.test at start), two nodes using https://hub.site.test:3142
// with a hub token, a spoke hub replicating from it over https with a
// sync token, and tcpdump on the bridge the whole time.
//
//   - Real apt-get through each node: every package, each checked against
//     its SHA256; the mirror serves the big one once.
//   - A plain apt-get using the hub directly as its http proxy (with a
//     token as apt sends it) still works: the hub keeps plain http.
//   - A node naming the hub by its address (a URL its certificate does
//     not match) gets nothing from it and says why.
//   - A node using the hub over plain http with a token warns on its
//     page, and is the capture's control: its token is in the capture.
//   - The spoke's run pulls over https; with the mirror gone, apt-get
//     through the spoke installs.
//   - The capture holds neither the nodes' hub token nor the sync token,
//     in any spelling.
func TestHubTLSOverNetns(t *testing.T) {
	requireRootStep(t, "WARREN_NETNS", "the hub TLS namespace test (ip netns)")
	requireTools(t, "ip", "curl", "tcpdump", "/usr/bin/python3", "apt-get", "apt-ftparchive", "dpkg-deb", "gpg", "xz", "gzip")
	const mirror, hubAddr, spokeAddr = "10.85.0.100", "10.85.0.50", "10.85.0.52"
	const nodeToken, clearToken, syncToken = "node-token-never-in-clear-7f3a", "control-token-sent-in-clear-9c1e", "sync-token-never-in-clear-42d8"
	base := t.TempDir()
	repo := buildAptRepo(t, base)
	lan := newLAN(t, "wrt", "10.85.0")
	lan.host("up", mirror)
	for name, addr := range map[string]string{"hub": hubAddr, "spoke": spokeAddr, "h1": "10.85.0.1", "h2": "10.85.0.2", "h3": "10.85.0.3", "h4": "10.85.0.4", "apt": "10.85.0.9"} {
		lan.host(name, addr)
		// The hub's name, inside the test's namespaces only.
		dir := filepath.Join("/etc/netns", lan.ns(name))
		os.MkdirAll(dir, 0o755)
		t.Cleanup(func() { os.RemoveAll(dir) })
		os.WriteFile(filepath.Join(dir, "hosts"), []byte("127.0.0.1 localhost\n"+hubAddr+" hub.site.test\n"), 0o644)
	}

	// The capture: everything that crosses the bridge, from before the
	// first warren starts.
	pcap := filepath.Join(base, "bridge.pcap")
	dump := exec.Command("ip", "netns", "exec", lan.ns("br"), "tcpdump", "-i", "br0", "-U", "-s", "0", "-w", pcap)
	var dumpErr syncBuffer
	dump.Stderr = &dumpErr
	if err := dump.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dump.Process.Kill(); dump.Wait() })
	waitUntil(t, "tcpdump to listen", 20*time.Second, func() bool { return strings.Contains(dumpErr.String(), "listening on br0") })

	script := filepath.Join(base, "mirror.py")
	os.WriteFile(script, []byte(staticMirrorPy), 0o644)
	mirrorCmd := exec.Command("ip", "netns", "exec", lan.ns("up"), "/usr/bin/python3", script, base, mirror)
	mirrorLog, _ := startLogged(t, mirrorCmd, "mirror")
	waitUntil(t, "the mirror", 20*time.Second, func() bool {
		_, err := lan.curl("h1", "-o", "/dev/null", "http://"+mirror+"/repo/dists/stable/InRelease")
		return err == nil
	})
	const bigPath = "/repo/pool/main/warren-e2e-big_1.0_all.deb"
	bigGETs := func() int { return strings.Count(mirrorLog.String(), `"GET `+bigPath+` HTTP/1.1" 200`) }

	// The site CA on the hub, permitting the hub's name; every other
	// machine holds its certificate alone.
	hubCache := filepath.Join(base, "hubcache")
	if out, err := runApp(t, "ca", "init", "--config", "/dev/null", "--cache-dir", hubCache, "--https-intercept", "off", "--hub-host", "hub.site.test"); err != nil {
		t.Fatalf("ca init: %v\n%s", err, out)
	}
	siteCA := filepath.Join(base, "site-ca.crt")
	if out, err := runApp(t, "ca", "export", "--cert", "--out", siteCA, "--config", "/dev/null", "--cache-dir", hubCache); err != nil {
		t.Fatalf("ca export --cert: %v\n%s", err, out)
	}
	cacheOf := func(name string) string { return filepath.Join(base, name+"cache") }
	for _, name := range []string{"h1", "h2", "h3", "h4", "spoke"} {
		if out, err := runApp(t, "ca", "install", "--config", "/dev/null", "--cache-dir", cacheOf(name), siteCA); err != nil || !strings.Contains(out, "site CA") {
			t.Fatalf("ca install on %s: %v\n%s", name, err, out)
		}
	}

	start := func(name string, args ...string) *syncBuffer {
		cmd := exec.Command("ip", append([]string{"netns", "exec", lan.ns(name), warrenBinary(t), "serve", "--https-intercept", "off", "--discovery", "off",
			"--cache-dir", cacheOf(name), "--log-level", "debug"}, args...)...)
		logs, ready := startLogged(t, cmd, name)
		waitReady(t, ready, logs, name)
		return logs
	}
	hubConf := filepath.Join(base, "hub.yaml")
	os.WriteFile(hubConf, []byte(fmt.Sprintf(`role: hub
hub_mode: fetch
hub_tokens: [%s, %s]
tls_hosts: [hub.site.test]
replication:
  tokens: [{name: spoke, token: %s}]
`, nodeToken, clearToken, syncToken)), 0o644)
	hubLogs := start("hub", "--config", hubConf, "--listen", "0.0.0.0:3142")
	if !strings.Contains(hubLogs.String(), `https_names=[hub.site.test]`) {
		t.Fatalf("the hub did not make its https certificate with the site CA:\n%s", tail(hubLogs.String(), 20))
	}
	node := func(name, hubURL, token string) *syncBuffer {
		return start(name, "--config", "/dev/null", "--listen", "127.0.0.1:3142", "--hub", hubURL, "--hub-token", token, "--hub-only")
	}
	node("h1", "https://hub.site.test:3142", nodeToken)
	node("h2", "https://hub.site.test:3142", nodeToken)
	h3Logs := node("h3", "https://"+hubAddr+":3142", nodeToken)
	h4Logs := node("h4", "http://hub.site.test:3142", clearToken)

	// Real apt-get through each node, then through the hub itself over
	// plain http.
	sources := fmt.Sprintf("deb [signed-by=%s] http://%s/repo/ stable main", repo.keyring, mirror)
	install := func(host, name, proxy string) {
		t.Helper()
		c := newAptClient(t, base, name, sources, proxy)
		c.in = lan.ns(host)
		if out, err := c.try("update"); err != nil || strings.Contains(out, "W:") {
			t.Fatalf("apt-get update on %s through %s: %v\n%s", host, proxy, err, out)
		}
		if out, err := c.try("install", "-y", "--download-only", "warren-e2e-big", "warren-e2e-small"); err != nil {
			t.Fatalf("apt-get install on %s through %s: %v\n%s", host, proxy, err, out)
		}
		for pool, sum := range repo.debs {
			if got := sha256File(t, filepath.Join(c.dir, "cache", "archives", filepath.Base(pool))); got != sum {
				t.Fatalf("apt on %s got %s with sha256 %s, want %s", host, pool, got, sum)
			}
		}
	}
	install("h1", "apt-h1", "http://127.0.0.1:3142")
	install("h2", "apt-h2", "http://127.0.0.1:3142")
	if n := bigGETs(); n != 1 {
		t.Fatalf("the mirror served the big package %d times for two nodes behind the hub, want 1", n)
	}
	install("apt", "apt-plain", "http://warren:"+clearToken+"@"+hubAddr+":3142")

	// h1's page: its hub over https, no warning. h4's: the warning.
	page := func(host string) string {
		out, err := lan.curl(host, "http://127.0.0.1:3142/_warren/")
		if err != nil {
			t.Fatalf("%s's page: %v %s", host, err, out)
		}
		return out
	}
	if p := page("h1"); !strings.Contains(p, "<td>https</td>") || strings.Contains(p, `id="warning"`) {
		t.Fatalf("h1's page does not show its hub over https, or warns:\n%s", p)
	}
	if p := page("h4"); !strings.Contains(p, "the hub token goes to http://hub.site.test:3142 in clear") || !strings.Contains(p, "http: token in clear") {
		t.Fatalf("h4's page does not warn of its token in clear:\n%s", p)
	}
	if !strings.Contains(h4Logs.String(), "in clear") {
		t.Fatal("h4 did not warn at start of its token in clear")
	}
	// h3 names the hub by its address: the certificate does not match, and
	// the node says so (hub_only: nothing from elsewhere either).
	out, err := lan.curl("h3", "-x", "http://127.0.0.1:3142", "http://"+mirror+"/repo/dists/stable/InRelease")
	if err == nil {
		t.Fatalf("h3, with a hub URL its certificate does not match, got an answer: %s", out)
	}
	waitUntil(t, "h3 to say why its hub fails", 30*time.Second, func() bool {
		return strings.Contains(h3Logs.String(), "must name the hub as its certificate does (hub.site.test)")
	})

	// The spoke pulls from the hub over https.
	spokeConf := filepath.Join(base, "spoke.yaml")
	os.WriteFile(spokeConf, []byte(fmt.Sprintf("role: hub\nhub_mode: fetch\nreplicate_schedule: 0s\nreplicate_from: [{name: hub, url: \"https://hub.site.test:3142\", token: %s}]\n", syncToken)), 0o644)
	start("spoke", "--config", spokeConf, "--listen", "0.0.0.0:3142")
	out, err = runApp(t, "replicate", "run", "--config", spokeConf, "--cache-dir", cacheOf("spoke"))
	if err != nil || !regexp.MustCompile(`fetched [1-9]\d* blobs`).MatchString(out) || strings.Contains(out, "failed") {
		t.Fatalf("the spoke's run over https: %v\n%s", err, out)
	}
	t.Logf("spoke, over https: %s", strings.TrimSpace(out))
	mirrorCmd.Process.Signal(syscall.SIGKILL)
	mirrorCmd.Wait()
	install("spoke", "apt-spoke", "http://127.0.0.1:3142")

	// The capture. The control proves it sees a token sent in clear.
	dump.Process.Signal(syscall.SIGINT)
	dump.Wait()
	captured, err := os.ReadFile(pcap)
	if err != nil || len(captured) < 1<<20 {
		t.Fatalf("the capture: %d bytes, %v (%s)", len(captured), err, dumpErr.String())
	}
	if !bytes.Contains(captured, []byte(clearToken)) {
		t.Fatal("the capture does not hold the control token that h4 sent over plain http: it proves nothing")
	}
	for _, secret := range []string{nodeToken, syncToken} {
		for _, spelling := range []string{secret, base64.StdEncoding.EncodeToString([]byte("warren:" + secret)), base64.StdEncoding.EncodeToString([]byte(secret))} {
			if bytes.Contains(captured, []byte(spelling)) {
				t.Fatalf("the capture on the bridge holds %q in clear", spelling)
			}
		}
	}
	fmt.Printf("hub TLS netns test: %d bytes captured on the bridge; the control token in clear, the node and sync tokens not\n", len(captured))
}
