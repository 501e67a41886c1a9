package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMirrorGroupsOverNetns is dnf as distributions ship it: repo files
// (the node's machine has them too: the lists it trusts; the hub and the
// spoke name the list server in mirror_lists)
// with a metalink= and a mirrorlist= URL on an https list server
// (lists.test, shaped like MirrorManager: it answers every request with
// the mirrors in another order), listing three mirrors of one fixture
// repository, two http and one https (mirror3.test), each behind a WAN
// link of its own. A site CA names the list host and the https mirror's
// domain; dnf is set up by `warren dnf-setup --https` alone.
//
//   - Through a node: a client on the metalink repository and one on the
//     mirror list install the same packages; the mirrors carry each file
//     once for the site. The mirror the site's list puts first serves a
//     repomd.xml the metalink does not name (refused: the next mirror's
//     is taken), and stalls mid-way through the big rpm (the fill goes on
//     from another mirror, at the offset it reached).
//   - Through a hub: the same, for a node that may use only its hub (the
//     hub orders the list for its nodes); then a spoke replicates the hub.
//   - The list server and every mirror gone: a third machine installs from
//     what the site holds, through the node, through a fresh node of the
//     hub, and through the replicated spoke.
func TestMirrorGroupsOverNetns(t *testing.T) {
	requireRootStep(t, "WARREN_NETNS", "the mirror group namespace test (ip netns)")
	requireTools(t, "ip", "tc", "curl", "/usr/bin/python3", "dnf", "createrepo_c", "rpmbuild", "gpg")
	const listsAddr, nodeAddr, hubAddr, spokeAddr = "10.85.0.100", "10.85.0.50", "10.85.0.51", "10.85.0.52"
	mirrorAddrs := []string{"10.85.0.101", "10.85.0.102", "10.85.0.103"}
	const token, syncToken = "mirror-test-hub-token-0123", "mirror-test-sync-token-0123"
	base := t.TempDir()
	t.Setenv("GNUPGHOME", filepath.Join(base, "gnupg"))
	t.Cleanup(func() { run(t, base, nil, "gpgconf", "--kill", "gpg-agent") })
	// A big rpm (8 MB, for the stall) and a small one.
	repo, sums := buildRPMRepoSized(t, base, 8<<20, 256<<10)
	var big string
	for p := range sums {
		if strings.Contains(p, "hello") {
			big = p
		}
	}
	files := map[string]int64{} // every file of the repository, by path under it: what the WAN should carry once
	filepath.Walk(repo, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			rel, _ := filepath.Rel(repo, p)
			files["/"+rel] = fi.Size()
		}
		return nil
	})
	// An older repomd.xml: what a stale mirror serves.
	ctl := filepath.Join(base, "ctl")
	os.MkdirAll(ctl, 0o755)
	stale := strings.Replace(string(readFile(filepath.Join(repo, "repodata", "repomd.xml"))), "<revision>", "<revision>1", 1)
	os.WriteFile(filepath.Join(ctl, "stale-repomd.xml"), []byte(stale), 0o644)

	public, publicKey := selfSignedCA(t, "a public CA of the test")
	cert, key := issue(t, public, publicKey, "lists.test", "mirror3.test")
	writePEM(t, filepath.Join(base, "tls.crt"), "CERTIFICATE", cert.Raw)
	keyDER, _ := x509.MarshalECPrivateKey(key)
	writePEM(t, filepath.Join(base, "tls.key"), "EC PRIVATE KEY", keyDER)
	system, _ := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	systemCAs := filepath.Join(base, "system-cas.pem")
	os.WriteFile(systemCAs, append(system, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: public.Raw})...), 0o644)

	lan := newLAN(t, "wrg", "10.85.0")
	lan.host("lists", listsAddr)
	for i, a := range mirrorAddrs {
		name := fmt.Sprintf("m%d", i+1)
		lan.host(name, a)
		// Each mirror's WAN: what it sends the site is counted here.
		lan.sh("ip", "netns", "exec", lan.ns(name), "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "100mbit", "burst", "256k", "latency", "100ms")
	}
	for name, addr := range map[string]string{"w": nodeAddr, "hub": hubAddr, "spoke": spokeAddr, "n": "10.85.0.60"} {
		lan.host(name, addr)
	}
	for _, name := range []string{"w", "hub", "spoke", "n", "lists", "m3"} {
		dir := filepath.Join("/etc/netns", lan.ns(name))
		os.MkdirAll(dir, 0o755)
		t.Cleanup(func() { os.RemoveAll(dir) })
		os.WriteFile(filepath.Join(dir, "hosts"), []byte("127.0.0.1 localhost\n"+listsAddr+" lists.test\n"+mirrorAddrs[2]+" mirror3.test\n"), 0o644)
	}

	// The mirrors and the list server.
	mirrorPy, listsPy := filepath.Join(base, "mirror.py"), filepath.Join(base, "lists.py")
	os.WriteFile(mirrorPy, []byte(mirrorServerPy), 0o644)
	os.WriteFile(listsPy, []byte(listServerPy), 0o644)
	bases := []string{"http://" + mirrorAddrs[0] + "/repo/", "http://" + mirrorAddrs[1] + "/pub/fixture/", "https://mirror3.test/fixture/"}
	roots := []string{"repo", "pub/fixture", "fixture"}
	var mirrors []*exec.Cmd
	var mirrorLogs []*syncBuffer
	for i, a := range mirrorAddrs {
		root := filepath.Join(base, fmt.Sprintf("mirror%d", i+1))
		os.MkdirAll(filepath.Dir(filepath.Join(root, roots[i])), 0o755)
		if err := os.Symlink(repo, filepath.Join(root, roots[i])); err != nil {
			t.Fatal(err)
		}
		args := []string{"netns", "exec", lan.ns(fmt.Sprintf("m%d", i+1)), "/usr/bin/python3", mirrorPy, root, a, ctl, filepath.Base(big)}
		if strings.HasPrefix(bases[i], "https") {
			args = append(args, filepath.Join(base, "tls.crt"), filepath.Join(base, "tls.key"))
		}
		cmd := exec.Command("ip", args...)
		l, _ := startLogged(t, cmd, "mirror "+a)
		mirrors, mirrorLogs = append(mirrors, cmd), append(mirrorLogs, l)
	}
	lists := exec.Command("ip", "netns", "exec", lan.ns("lists"), "/usr/bin/python3", listsPy, repo, listsAddr,
		filepath.Join(base, "tls.crt"), filepath.Join(base, "tls.key"), strings.Join(bases, ","))
	listLog, _ := startLogged(t, lists, "list server")
	waitUntil(t, "the list server and the mirrors", 20*time.Second, func() bool {
		for _, u := range append([]string{"https://lists.test/metalink?repo=x"}, bases...) {
			if _, err := lan.curl("w", "--cacert", systemCAs, "-o", "/dev/null", u+"repodata/repomd.xml"); err != nil && !strings.Contains(u, "metalink") {
				return false
			} else if strings.Contains(u, "metalink") {
				if _, err := lan.curl("w", "--cacert", systemCAs, "-o", "/dev/null", u); err != nil {
					return false
				}
			}
		}
		return true
	})
	// What the mirrors sent, by file of the repository.
	var sent = regexp.MustCompile(`(?m)^GET /(?:repo|pub/fixture|fixture)(/\S+) (\d+) (\d+)`)
	wanBytes := func() map[string]int64 {
		out := map[string]int64{}
		for _, l := range mirrorLogs {
			for _, m := range sent.FindAllStringSubmatch(l.String(), -1) {
				n, _ := strconv.ParseInt(m[3], 10, 64)
				out[m[1]] += n
			}
		}
		return out
	}
	// checkOnce says the mirrors carried, since before, each file the
	// clients took at most once (a stalled transfer and its resumption
	// count as the one they make up).
	checkOnce := func(what string, before map[string]int64) {
		t.Helper()
		after := wanBytes()
		var lines []string
		for path, n := range after {
			n -= before[path]
			if n == 0 {
				continue
			}
			if strings.HasSuffix(path, "#stale") {
				lines = append(lines, fmt.Sprintf("%s %d bytes (refused)", path, n))
				continue
			}
			size, ok := files[path]
			if !ok {
				t.Fatalf("%s: the mirrors sent %s, which is no file of the repository", what, path)
			}
			lines = append(lines, fmt.Sprintf("%s %d of %d bytes", path, n, size))
			if n > size {
				t.Fatalf("%s: the mirrors sent %d bytes of %s (%d bytes): the WAN carried it more than once", what, n, path, size)
			}
		}
		t.Logf("%s: WAN bytes per file: %s", what, strings.Join(lines, "; "))
		for p := range sums {
			if after[p]-before[p] != files[p] {
				t.Fatalf("%s: the mirrors sent %d bytes of %s, want %d (once)", what, after[p]-before[p], p, files[p])
			}
		}
	}

	// A warren of the site: its own site CA naming the list host and the
	// https mirror's domain.
	startWarrenIn := func(ns, name, listen string, args ...string) (*exec.Cmd, *syncBuffer, string) {
		cache := filepath.Join(base, name+"-cache")
		hosts := []string{"--config", "/dev/null", "--https-intercept", "lists.test", "--cache-dir", cache}
		if out, err := exec.Command("ip", append([]string{"netns", "exec", lan.ns(ns), warrenBinary(t), "ca", "init", "--host", "lists.test", "--host", "mirror3.test"}, hosts...)...).CombinedOutput(); err != nil {
			t.Fatalf("warren ca init for %s: %v\n%s", name, err, out)
		}
		cmd := exec.Command("ip", append([]string{"netns", "exec", lan.ns(ns), warrenBinary(t), "serve", "--listen", listen, "--discovery", "off",
			"--stall-timeout", "2s", "--log-level", "debug"}, append(hosts, args...)...)...)
		cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+systemCAs)
		logs, ready := startLogged(t, cmd, name)
		waitReady(t, ready, logs, name)
		return cmd, logs, cache
	}
	// A client of a warren, set up by dnf-setup --https, with the repo
	// files as shipped.
	client := func(ns, name, cache, listen, repoKind string) dnfClient {
		c := newDnfClient(base, name, "")
		os.Remove(filepath.Join(c.reposDir, "e2e.repo"))
		os.WriteFile(filepath.Join(c.reposDir, "fixture.repo"), []byte(fixtureRepo(repoKind)), 0o644)
		out, err := exec.Command("ip", "netns", "exec", lan.ns(ns), warrenBinary(t), "dnf-setup", "--https", "--config", "/dev/null", "--listen", listen,
			"--https-intercept", "lists.test", "--cache-dir", cache, "--dnf-conf", c.conf, "--repos-dir", c.reposDir,
			"--bundle", filepath.Join(c.dir, "bundle.crt"), "--system-cas", systemCAs).CombinedOutput()
		if err != nil {
			t.Fatalf("dnf-setup --https for %s: %v\n%s", name, err, out)
		}
		return c
	}
	install := func(c dnfClient, ns, name string) {
		t.Helper()
		start := time.Now()
		c.run(t, ns, "", "download", "--destdir="+filepath.Join(c.dir, "dl"), "warren-e2e-hello", "libwarren++-e2e")
		for p, sum := range sums {
			if got := sha256File(t, filepath.Join(c.dir, "dl", filepath.Base(p))); got != sum {
				t.Fatalf("%s got %s with sha256 %s, want %s", name, p, got, sum)
			}
		}
		t.Logf("%s: dnf download through warren in %v", name, time.Since(start).Round(time.Millisecond))
	}
	// siteFirst is the mirror a warren's answer puts first.
	siteFirst := func(ns, proxy, cache string) int {
		out, err := lan.curl(ns, "--cacert", filepath.Join(cache, "ca", "site-ca.crt"), "-x", proxy, "https://lists.test/metalink?repo=fixture-12&arch=x86_64")
		if err != nil {
			t.Fatalf("the metalink through warren: %v %s", err, out)
		}
		m := regexp.MustCompile(`<url [^>]*>([^<]+)repodata/repomd.xml</url>`).FindStringSubmatch(out)
		for i, b := range bases {
			if m != nil && m[1] == b {
				return i
			}
		}
		t.Fatalf("no mirror of the test first in warren's metalink:\n%s", out)
		return -1
	}

	// Through a node, on the machine of its dnf clients: its repo files
	// (signatures.yum_repos_dir) name the lists it trusts.
	before := wanBytes()
	nodeRepos := filepath.Join(base, "node-yum.repos.d")
	os.MkdirAll(nodeRepos, 0o755)
	os.WriteFile(filepath.Join(nodeRepos, "fixture.repo"), []byte(fixtureRepo("metalink")), 0o644)
	nodeConf := filepath.Join(base, "node.yaml")
	os.WriteFile(nodeConf, []byte("signatures:\n  yum_repos_dir: "+nodeRepos+"\n"), 0o644)
	node, nodeLogs, nodeCache := startWarrenIn("w", "node", "127.0.0.1:3142", "--config", nodeConf)
	first := siteFirst("w", "http://127.0.0.1:3142", nodeCache)
	// The site's mirror is stale (its repomd.xml is none the metalink
	// names) and stalls halfway through the big rpm.
	os.WriteFile(filepath.Join(ctl, "stale-"+mirrorAddrs[first]), nil, 0o644)
	os.WriteFile(filepath.Join(ctl, "stall-"+mirrorAddrs[first]), nil, 0o644)
	install(client("w", "node-metalink", nodeCache, "127.0.0.1:3142", "metalink"), lan.ns("w"), "node, metalink client")
	if !strings.Contains(nodeLogs.String(), "not one its metalink names") {
		t.Fatalf("the node's log shows no refused repomd.xml:\n%s", grepLines(nodeLogs.String(), "repomd"))
	}
	if !strings.Contains(nodeLogs.String(), "the next mirror of its group goes on from here") ||
		!regexp.MustCompile(`GET /\S+`+regexp.QuoteMeta(filepath.Base(big))+` 206 `).MatchString(allLogs(mirrorLogs)) {
		t.Fatalf("the stalled rpm was not resumed on another mirror:\n%s", allLogs(mirrorLogs))
	}
	os.Remove(filepath.Join(ctl, "stale-"+mirrorAddrs[first]))
	install(client("w", "node-mirrorlist", nodeCache, "127.0.0.1:3142", "mirrorlist"), lan.ns("w"), "node, mirror list client")
	checkOnce("node", before)
	os.Remove(filepath.Join(ctl, "stall-"+mirrorAddrs[first]))
	if n := strings.Count(listLog.String(), "GET /"); n < 2 {
		t.Fatalf("the list server was asked %d times: the lists did not go through the node", n)
	}

	// Through a hub, with a spoke that replicates it: neither has the
	// repo files of the machines it serves, and mirror_lists names the
	// list server (a node trusts the lists its hub answers in the site's
	// order).
	hubConf := filepath.Join(base, "hub.yaml")
	os.WriteFile(hubConf, []byte("role: hub\nmirror_lists: [\"https://lists.test/\"]\nhub_tokens: ["+token+"]\nreplication:\n  tokens: [{name: spoke, token: "+syncToken+"}]\n"), 0o644)
	before = wanBytes()
	_, hubLogs, _ := startWarrenIn("hub", "hub", "0.0.0.0:3142", "--config", hubConf)
	hubNode := func(name, listen string) (*syncBuffer, string) {
		_, logs, cache := startWarrenIn("n", name, listen, "--hub", "http://"+hubAddr+":3142", "--hub-token", token, "--hub-only")
		return logs, cache
	}
	_, n1Cache := hubNode("hub-node", "127.0.0.1:3142")
	install(client("n", "hub-metalink", n1Cache, "127.0.0.1:3142", "metalink"), lan.ns("n"), "hub's node, metalink client")
	install(client("n", "hub-mirrorlist", n1Cache, "127.0.0.1:3142", "mirrorlist"), lan.ns("n"), "hub's node, mirror list client")
	checkOnce("hub", before)
	if !strings.Contains(hubLogs.String(), "mirror group: the site's mirror") {
		t.Fatal("the hub did not order the list for its nodes")
	}
	spokeConf := filepath.Join(base, "spoke.yaml")
	os.WriteFile(spokeConf, []byte("role: hub\nmirror_lists: [\"https://lists.test/\"]\nreplicate_schedule: 0s\nreplicate_from:\n  - {name: hub, url: \"http://"+hubAddr+":3142\", token: "+syncToken+"}\n"), 0o644)
	_, _, spokeCache := startWarrenIn("spoke", "spoke", "0.0.0.0:3142", "--config", spokeConf)
	if out, err := runApp(t, "replicate", "run", "--config", spokeConf, "--cache-dir", spokeCache); err != nil || strings.Contains(out, "failed") {
		t.Fatalf("the spoke's replication run: %v\n%s", err, out)
	} else {
		t.Logf("spoke: %s", strings.TrimSpace(out))
	}
	// The replicated metalink is learnt (its group made) after the run
	// stored it, off the run's path: once it is, the spoke serves the
	// group's repomd.xml under any mirror's URL.
	waitUntil(t, "the spoke to learn the replicated metalink's mirror group", 30*time.Second, func() bool {
		out, err := lan.curl("spoke", "http://127.0.0.1:3142/_warren/stats")
		return err == nil && strings.Contains(out, `"mirror_groups"`)
	})

	// The list server and every mirror gone.
	for _, c := range append(mirrors, lists) {
		c.Process.Signal(syscall.SIGKILL)
		c.Wait()
	}
	install(client("w", "third-node", nodeCache, "127.0.0.1:3142", "metalink"), lan.ns("w"), "a third machine through the node, offline")
	if !strings.Contains(nodeLogs.String(), "serving the last good copy (offline mode)") {
		t.Fatal("the node did not serve its lists stale")
	}
	_, n2Cache := hubNode("hub-node2", "127.0.0.1:3143")
	install(client("n", "third-hub", n2Cache, "127.0.0.1:3143", "mirrorlist"), lan.ns("n"), "a third machine through a fresh node of the hub, offline")
	install(client("spoke", "third-spoke", spokeCache, "127.0.0.1:3142", "metalink"), lan.ns("spoke"), "a third machine through the replicated spoke, offline")
	_ = node
}

// fixtureRepo is the test's repo file as distributions ship theirs: a
// metalink= and a mirrorlist= repository of the fixture, the one of
// enabled kind enabled.
func fixtureRepo(enabled string) string {
	return `[fixture-metalink]
name=fixture $releasever - metalink
metalink=https://lists.test/metalink?repo=fixture-$releasever&arch=$basearch
enabled=` + strconv.Itoa(boolInt(enabled == "metalink")) + `
gpgcheck=0

[fixture-mirrorlist]
name=fixture $releasever - mirrorlist
mirrorlist=https://lists.test/mirrorlist/$releasever/fixture
enabled=` + strconv.Itoa(boolInt(enabled == "mirrorlist")) + `
gpgcheck=0
`
}

// grepLines are the lines of s that hold what.
func grepLines(s, what string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, what) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func allLogs(logs []*syncBuffer) string {
	var b strings.Builder
	for _, l := range logs {
		b.WriteString(l.String())
	}
	return b.String()
}

// mirrorServerPy serves a mirror's directory over http on port 80, or
// https on 443 with a certificate, with single byte ranges. A file named
// stale-<addr> in the control directory makes it serve an older
// repomd.xml; stall-<addr> makes it send half of the big rpm and then
// nothing. Each answer logs "GET path status bytes-sent" (the stale
// repomd.xml as path#stale).
const mirrorServerPy = `import http.server, os, ssl, sys, time, urllib.parse
root, addr, ctl, big = sys.argv[1:5]
tls = sys.argv[5:7]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log(self, path, code, n):
        sys.stderr.write("GET %s %d %d\n" % (path, code, n))
        sys.stderr.flush()
    def do_GET(self):
        path = urllib.parse.unquote(self.path.split("?")[0])
        fs = os.path.realpath(os.path.join(root, path.lstrip("/")))
        shown = path
        if path.endswith("/repodata/repomd.xml") and os.path.exists(os.path.join(ctl, "stale-" + addr)):
            fs = os.path.join(ctl, "stale-repomd.xml")
            shown = path + "#stale"
        if ".." in path or not os.path.isfile(fs):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = open(fs, "rb").read()
        start, end, code = 0, len(data), 200
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes=") and "," not in rng:
            a, _, b = rng[6:].partition("-")
            if a:
                start, end, code = int(a), (int(b) + 1 if b else len(data)), 206
        body = data[start:end]
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        if code == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end - 1, len(data)))
        self.send_header("Last-Modified", self.date_time_string(int(os.path.getmtime(fs))))
        self.end_headers()
        if path.endswith(big) and os.path.exists(os.path.join(ctl, "stall-" + addr)):
            half = len(body) // 2
            self.wfile.write(body[:half])
            self.wfile.flush()
            self.log(shown, code, half)
            time.sleep(120)
            return
        self.wfile.write(body)
        self.log(shown, code, len(body))
    def log_message(self, fmt, *args):
        pass
port = 443 if tls else 80
srv = http.server.ThreadingHTTPServer((addr, port), H)
srv.daemon_threads = True
if tls:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls[0], tls[1])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
`

// listServerPy answers, on https, MirrorManager's metalink 3.0 for the
// repository's repomd.xml (its size and sha256, and md5) and a plain
// mirror list, with the mirrors in another order for every request, as a
// list server that shuffles does.
const listServerPy = `import hashlib, http.server, ssl, sys
repo, addr, cert, key, mirrors = sys.argv[1:6]
mirrors = mirrors.split(",")
count = [0]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        count[0] += 1
        n = count[0] % len(mirrors)
        ms = mirrors[n:] + mirrors[:n]
        repomd = open(repo + "/repodata/repomd.xml", "rb").read()
        if self.path.startswith("/metalink"):
            urls = "".join('<url protocol="%s" type="%s" location="XX" preference="%d">%srepodata/repomd.xml</url>\n' %
                (m.split(":")[0], m.split(":")[0], 100 - i, m) for i, m in enumerate(ms))
            body = ('<?xml version="1.0" encoding="utf-8"?>\n<metalink version="3.0" xmlns="http://www.metalinker.org/" type="dynamic" generator="mirrormanager" xmlns:mm0="http://fedorahosted.org/mirrormanager">\n'
                ' <files>\n  <file name="repomd.xml">\n   <mm0:timestamp>1796558402</mm0:timestamp>\n   <size>%d</size>\n'
                '   <verification>\n    <hash type="md5">%s</hash>\n    <hash type="sha256">%s</hash>\n   </verification>\n'
                '   <resources maxconnections="1">\n%s   </resources>\n  </file>\n </files>\n</metalink>\n') % (
                len(repomd), hashlib.md5(repomd).hexdigest(), hashlib.sha256(repomd).hexdigest(), urls)
        elif self.path.startswith("/mirrorlist/"):
            body = "".join(m + "\n" for m in ms)
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        b = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
        sys.stderr.write("GET %s\n" % self.path)
        sys.stderr.flush()
    def log_message(self, fmt, *args):
        pass
srv = http.server.ThreadingHTTPServer((addr, 443), H)
srv.daemon_threads = True
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
`
