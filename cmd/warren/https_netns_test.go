package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
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

// TestHTTPSRepositoryOverNetns is an https-only apt and rpm repository,
// reached by its host name (repo.test, resolved inside the test's
// namespaces), with a certificate from a CA of the test's own standing
// for a public one, and the same server as private.test, which asks for
// credentials. The machine running warren lists both hosts in apt's
// sources, with private.test's credentials in auth.conf.d; warren runs
// with https_intercept auto and a site CA made there by `warren ca init`.
// Fresh apt clients whose sources say https:// unchanged are set up by
// `warren apt-setup` (per-host CaInfo, the https proxy helper), fresh dnf
// clients by `warren dnf-setup --https` (proxy, sslcacert).
//
//   - The site CA permits repo.test only: the auto scan left out the host
//     with credentials.
//   - The second apt and the second dnf client get every package from
//     warren's cache: the repository served each file once.
//   - A client sending private.test through warren gets a tunnel: the
//     repository sees its credentials, warren's log never sees a URL or
//     the secret.
//   - With warren stopped, both apt clients update directly (the helper
//     answers DIRECT, the bundle still verifies the real host).
//   - A certificate the site CA's key signs for a host outside its
//     constraints is refused by a TLS client (curl).
func TestHTTPSRepositoryOverNetns(t *testing.T) {
	requireRootStep(t, "WARREN_NETNS", "the https namespace test (ip netns)")
	requireTools(t, "ip", "curl", "/usr/bin/python3", "apt-get", "apt-ftparchive", "dpkg-deb", "gpg", "xz", "gzip", "dnf", "createrepo_c", "rpmbuild")
	const repoAddr, warrenAddr = "10.83.0.100", "10.83.0.50"
	base := t.TempDir()
	repo := buildAptRepo(t, base)
	rel, _ := filepath.Rel(base, repo.root)
	rpmRepo, rpmSums := buildRPMRepo(t, base)
	rpmRel, _ := filepath.Rel(base, rpmRepo)

	// A "public" CA and the repository's certificate for repo.test.
	public, publicKey := selfSignedCA(t, "a public CA of the test")
	serverCert, serverKey := issue(t, public, publicKey, "repo.test", "private.test")
	writePEM(t, filepath.Join(base, "repo.crt"), "CERTIFICATE", serverCert.Raw)
	keyDER, _ := x509.MarshalECPrivateKey(serverKey)
	writePEM(t, filepath.Join(base, "repo.key"), "EC PRIVATE KEY", keyDER)
	// The system's CAs plus the test's public one: what warren and, as
	// "the system's CAs", apt-setup's bundle trust.
	system, _ := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	systemCAs := filepath.Join(base, "system-cas.pem")
	os.WriteFile(systemCAs, append(system, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: public.Raw})...), 0o644)

	lan := newLAN(t, "wrs", "10.83.0")
	lan.host("repo", repoAddr)
	lan.host("w", warrenAddr)
	// The repository behind a WAN-like link, so the second client's time
	// against the first's means something.
	lan.sh("ip", "netns", "exec", lan.ns("repo"), "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "50mbit", "burst", "256k", "latency", "100ms")
	// ip netns exec binds each entry of /etc/netns/<ns> over /etc's: the
	// names resolve inside the test's namespaces only, and the machine
	// running warren has apt sources and credentials of its own.
	const user, secret = "site", "s3cret-for-the-tunnel-only"
	for _, ns := range []string{lan.ns("w"), lan.ns("repo")} {
		dir := filepath.Join("/etc/netns", ns)
		os.MkdirAll(dir, 0o755)
		t.Cleanup(func() { os.RemoveAll(dir) })
		os.WriteFile(filepath.Join(dir, "hosts"), []byte("127.0.0.1 localhost\n"+repoAddr+" repo.test private.test\n"), 0o644)
	}
	etcApt := filepath.Join("/etc/netns", lan.ns("w"), "apt")
	os.MkdirAll(filepath.Join(etcApt, "auth.conf.d"), 0o755)
	os.WriteFile(filepath.Join(etcApt, "sources.list"), []byte(fmt.Sprintf("deb https://repo.test/%s/ stable main\ndeb https://private.test/%s/ stable main\n", rel, rel)), 0o644)
	os.WriteFile(filepath.Join(etcApt, "auth.conf.d", "private.conf"), []byte("machine private.test login "+user+" password "+secret+"\n"), 0o600)

	script := filepath.Join(base, "https.py")
	os.WriteFile(script, []byte(httpsMirrorPy), 0o644)
	mirror := exec.Command("ip", "netns", "exec", lan.ns("repo"), "/usr/bin/python3", script, base, repoAddr, filepath.Join(base, "repo.crt"), filepath.Join(base, "repo.key"), "private.test", user+":"+secret)
	mirrorLog, _ := startLogged(t, mirror, "https repository")
	waitUntil(t, "the https repository", 20*time.Second, func() bool {
		_, err := lan.curl("w", "--cacert", systemCAs, "-o", "/dev/null", "https://repo.test/"+rel+"/dists/stable/InRelease")
		return err == nil
	})
	gets := func(path string) int {
		return len(regexp.MustCompile(`"GET `+regexp.QuoteMeta(path)+` HTTP/1\.1" 200`).FindAllString(mirrorLog.String(), -1))
	}
	asked := func(path string) int { // answered or not modified
		return len(regexp.MustCompile(`"GET `+regexp.QuoteMeta(path)+` HTTP/1\.1" (200|304)`).FindAllString(mirrorLog.String(), -1))
	}

	cache := filepath.Join(base, "wcache")
	// warren's commands as on the machine: its apt sources, auto.
	hosts := []string{"--config", "/dev/null", "--https-intercept", "auto", "--cache-dir", cache}
	onMachine := func(args ...string) string {
		out, err := exec.Command("ip", append([]string{"netns", "exec", lan.ns("w"), warrenBinary(t)}, append(args, hosts...)...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("warren %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	onMachine("ca", "init")
	caPEM, _ := os.ReadFile(filepath.Join(cache, "ca", "site-ca.crt"))
	siteCert, _ := x509.ParseCertificate(mustPEM(t, caPEM))
	if got := siteCert.PermittedDNSDomains; len(got) != 1 || got[0] != "repo.test" {
		t.Fatalf("the site CA permits %v, want [repo.test] (private.test has credentials in auth.conf.d)", got)
	}
	warren := exec.Command("ip", "netns", "exec", lan.ns("w"), warrenBinary(t), "serve", "--config", "/dev/null", "--listen", "0.0.0.0:3142",
		"--discovery", "off", "--cache-dir", cache, "--https-intercept", "auto", "--log-level", "debug")
	warren.Env = append(os.Environ(), "SSL_CERT_FILE="+systemCAs)
	logs, ready := startLogged(t, warren, "warren")
	waitReady(t, ready, logs, "warren")
	if !strings.Contains(logs.String(), "https repositories intercepted with the site CA") {
		t.Fatal("warren did not log its site CA and hosts")
	}
	helper := filepath.Join(base, "apt-proxy-detect")
	os.WriteFile(helper, []byte("#!/bin/sh\nexec "+warrenBinary(t)+" apt-proxy-detect --config /dev/null --discovery off --listen 127.0.0.1:3142 \"$@\"\n"), 0o755)
	sources := fmt.Sprintf("deb [signed-by=%s] https://repo.test/%s/ stable main", repo.keyring, rel)
	client := func(name string) *aptClient {
		c := newAptClient(t, base, name, sources, "")
		c.in = lan.ns("w")
		onMachine("apt-setup", "--apt-conf-dir", filepath.Join(c.dir, "apt.conf.d"), "--bundle", filepath.Join(c.dir, "bundle.crt"),
			"--system-cas", systemCAs, "--helper", helper)
		return c
	}
	first, second := client("client1"), client("client2")
	for _, c := range []*aptClient{first, second} {
		start := time.Now()
		if out, err := c.try("update"); err != nil || strings.Contains(out, "W:") {
			t.Fatalf("apt-get update over https through warren: %v\n%s", err, out)
		}
		c.run("download", "warren-e2e-big", "warren-e2e-small")
		t.Logf("%s: apt-get update and download over https through warren in %v", filepath.Base(c.dir), time.Since(start).Round(time.Millisecond))
		for pool, sum := range repo.debs {
			if got := sha256File(t, filepath.Join(c.dir, "dl", filepath.Base(pool))); got != sum {
				t.Fatalf("%s got %s with sha256 %s, want %s", c.dir, pool, got, sum)
			}
		}
	}
	for pool := range repo.debs {
		if n := gets("/" + rel + "/" + pool); n != 1 {
			t.Fatalf("the repository served %s %d times, want once (the second client from warren's cache)", pool, n)
		}
	}
	if !regexp.MustCompile(`url=https://repo.test/\S+warren-e2e-big\S+ .*outcome=hit`).MatchString(logs.String()) {
		t.Fatal("no cache hit for the second client in warren's log")
	}

	// dnf: two fresh clients, set up by warren dnf-setup --https.
	for _, name := range []string{"dnf1", "dnf2"} {
		c := newDnfClient(base, name, "https://repo.test/"+rpmRel)
		onMachine("dnf-setup", "--https", "--dnf-conf", c.conf, "--repos-dir", c.reposDir, "--bundle", filepath.Join(c.dir, "bundle.crt"), "--system-cas", systemCAs)
		if conf := string(readFile(c.conf)); !strings.Contains(conf, "sslcacert=") {
			t.Fatalf("dnf-setup --https set no sslcacert in dnf.conf:\n%s", conf)
		}
		start := time.Now()
		c.run(t, lan.ns("w"), "", "download", "--destdir="+filepath.Join(c.dir, "dl"), "warren-e2e-hello", "libwarren++-e2e")
		t.Logf("%s: dnf download over https through warren in %v", name, time.Since(start).Round(time.Millisecond))
		for path, sum := range rpmSums {
			if got := sha256File(t, filepath.Join(c.dir, "dl", filepath.Base(path))); got != sum {
				t.Fatalf("%s got %s with sha256 %s, want %s", name, path, got, sum)
			}
		}
	}
	for path := range rpmSums {
		// librepo escapes the '+' of libwarren++ its own way: count either.
		escaped := strings.ReplaceAll(regexp.QuoteMeta("/"+rpmRel+path), `\+`, `(\+|%2[bB])`)
		if n := len(regexp.MustCompile(`"GET `+escaped+` HTTP/1\.1" 200`).FindAllString(mirrorLog.String(), -1)); n != 1 {
			t.Fatalf("the repository served %s %d times, want once (the second dnf client from warren's cache)", path, n)
		}
	}

	// private.test has credentials: a client sending it through warren
	// anyway (Acquire::https::Proxy) gets a tunnel; the repository sees
	// the credentials, warren sees a host name.
	private := newAptClient(t, base, "private", fmt.Sprintf("deb [signed-by=%s] https://private.test/%s/ stable main", repo.keyring, rel), "")
	private.in = lan.ns("w")
	private.opts = append(private.opts, "-o", "Acquire::https::Proxy=http://127.0.0.1:3142", "-o", "Acquire::https::CaInfo="+systemCAs)
	if out, err := private.try("update"); err != nil || strings.Contains(out, "W:") {
		t.Fatalf("apt-get update of the host with credentials, through warren: %v\n%s", err, out)
	}
	private.run("download", "warren-e2e-small")
	if !strings.Contains(mirrorLog.String(), `host=private.test auth=yes "GET /`+rel+`/dists/stable/InRelease`) {
		t.Fatalf("the repository never saw private.test's credentials:\n%s", mirrorLog.String())
	}
	if !regexp.MustCompile(`tunnel \(not intercepted\).*host=private.test:443`).MatchString(logs.String()) {
		t.Fatal("warren's log shows no tunnel to private.test")
	}
	basic := base64.StdEncoding.EncodeToString([]byte(user + ":" + secret))
	for _, leak := range []string{"https://private.test", secret, basic} {
		if strings.Contains(logs.String(), leak) {
			t.Fatalf("warren's log holds %q: it saw inside the tunnel", leak)
		}
	}

	// warren stopped: the helper answers DIRECT, the bundle verifies the
	// real host.
	warren.Process.Signal(syscall.SIGKILL)
	warren.Wait()
	before := asked("/" + rel + "/dists/stable/InRelease")
	for _, c := range []*aptClient{first, second} {
		if out, err := c.try("update"); err != nil || strings.Contains(out, "W:") || strings.Contains(out, "E:") {
			t.Fatalf("apt-get update with warren stopped: %v\n%s", err, out)
		}
	}
	if asked("/"+rel+"/dists/stable/InRelease") != before+2 {
		t.Fatalf("with warren stopped the clients did not reach the repository directly (%d InRelease GETs, %d before)", asked("/"+rel+"/dists/stable/InRelease"), before)
	}

	// The constraint is real: the site CA's key signs for evil.test, and
	// curl refuses that certificate.
	keyPEM, _ := os.ReadFile(filepath.Join(cache, "ca", "site-ca.key"))
	siteKey, err := x509.ParseECPrivateKey(mustPEM(t, keyPEM))
	if err != nil {
		t.Fatal(err)
	}
	evil, evilKey := issue(t, siteCert, siteKey, "evil.test")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("forged")) }),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{evil.Raw}, PrivateKey: evilKey}}}}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	out, err := exec.Command("curl", "-sS", "--cacert", filepath.Join(cache, "ca", "site-ca.crt"), "--resolve", "evil.test:"+port+":127.0.0.1", "https://evil.test:"+port+"/").CombinedOutput()
	if err == nil || strings.Contains(string(out), "forged") {
		t.Fatalf("curl accepted a certificate for evil.test from the site CA: %s", out)
	}
	t.Logf("curl, a site-CA certificate for a host outside its constraints: %s", strings.TrimSpace(string(out)))
}

// httpsMirrorPy serves a directory over https on port 443; requests for
// the private host need its Basic credentials. Each log line names the
// host and whether credentials came.
const httpsMirrorPy = `import base64, functools, http.server, ssl, sys
root, addr, cert, key, private, creds = sys.argv[1:7]
want = "Basic " + base64.b64encode(creds.encode()).decode()
class Handler(http.server.SimpleHTTPRequestHandler):
    def host(self):
        return (self.headers.get("Host") or "").split(":")[0]
    def authorized(self):
        return self.host() != private or self.headers.get("Authorization") == want
    def do_GET(self):
        if not self.authorized():
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="private"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()
    def do_HEAD(self):
        if not self.authorized():
            self.send_response(401)
            self.end_headers()
            return
        super().do_HEAD()
    def log_message(self, fmt, *args):
        auth = "yes" if self.headers and self.headers.get("Authorization") == want else "no"
        sys.stderr.write("host=%s auth=%s %s\n" % (self.host() if self.headers else "-", auth, fmt % args))
srv = http.server.ThreadingHTTPServer((addr, 443), functools.partial(Handler, directory=root))
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
`

func selfSignedCA(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

// issue is a server certificate for host from the CA.
func issue(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, hosts ...string) (*x509.Certificate, *ecdsa.PrivateKey) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: hosts[0]}, DNSNames: hosts,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func mustPEM(t *testing.T, b []byte) []byte {
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("not PEM")
	}
	return blk.Bytes
}
