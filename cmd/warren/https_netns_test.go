package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
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

// TestHTTPSRepositoryOverNetns is an https-only apt repository, reached by
// its host name (repo.test, resolved inside the test's namespaces), with
// a certificate from a CA of the test's own standing for a public one; a
// machine running warren with a site CA made by `warren ca init`, and two
// fresh apt clients on it whose sources say https:// unchanged, set up by
// `warren apt-setup` (per-host CaInfo, the https proxy helper).
//
//   - The second client gets every .deb from warren's cache: the
//     repository served each file once.
//   - With warren stopped, both clients update directly (the helper
//     answers DIRECT, the bundle still verifies the real host).
//   - A certificate the site CA's key signs for a host outside its
//     constraints is refused by a TLS client (curl).
func TestHTTPSRepositoryOverNetns(t *testing.T) {
	requireRootStep(t, "WARREN_NETNS", "the https namespace test (ip netns)")
	requireTools(t, "ip", "curl", "/usr/bin/python3", "apt-get", "apt-ftparchive", "dpkg-deb", "gpg", "xz", "gzip")
	const repoAddr, warrenAddr = "10.83.0.100", "10.83.0.50"
	base := t.TempDir()
	repo := buildAptRepo(t, base)
	rel, _ := filepath.Rel(base, repo.root)

	// A "public" CA and the repository's certificate for repo.test.
	public, publicKey := selfSignedCA(t, "a public CA of the test")
	serverCert, serverKey := issue(t, public, publicKey, "repo.test")
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
	// ip netns exec binds /etc/netns/<ns>/hosts over /etc/hosts: repo.test
	// resolves inside the test's namespaces only.
	for _, ns := range []string{lan.ns("w"), lan.ns("repo")} {
		dir := filepath.Join("/etc/netns", ns)
		os.MkdirAll(dir, 0o755)
		t.Cleanup(func() { os.RemoveAll(dir) })
		os.WriteFile(filepath.Join(dir, "hosts"), []byte("127.0.0.1 localhost\n"+repoAddr+" repo.test\n"), 0o644)
	}
	script := filepath.Join(base, "https.py")
	os.WriteFile(script, []byte(httpsMirrorPy), 0o644)
	mirror := exec.Command("ip", "netns", "exec", lan.ns("repo"), "/usr/bin/python3", script, base, repoAddr, filepath.Join(base, "repo.crt"), filepath.Join(base, "repo.key"))
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
	hosts := []string{"--https-intercept", "repo.test", "--cache-dir", cache}
	if out, err := runApp(t, append([]string{"ca", "init"}, hosts...)...); err != nil {
		t.Fatalf("warren ca init: %v\n%s", err, out)
	}
	warren := exec.Command("ip", "netns", "exec", lan.ns("w"), warrenBinary(t), "serve", "--config", "/dev/null", "--listen", "0.0.0.0:3142",
		"--discovery", "off", "--cache-dir", cache, "--https-intercept", "repo.test", "--log-level", "debug")
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
		out, err := runApp(t, append([]string{"apt-setup", "--apt-conf-dir", filepath.Join(c.dir, "apt.conf.d"), "--bundle", filepath.Join(c.dir, "bundle.crt"),
			"--system-cas", systemCAs, "--helper", helper}, hosts...)...)
		if err != nil {
			t.Fatalf("warren apt-setup: %v\n%s", err, out)
		}
		return c
	}
	first, second := client("client1"), client("client2")
	for _, c := range []*aptClient{first, second} {
		if out, err := c.try("update"); err != nil || strings.Contains(out, "W:") {
			t.Fatalf("apt-get update over https through warren: %v\n%s", err, out)
		}
		c.run("download", "warren-e2e-big", "warren-e2e-small")
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
	caPEM, _ := os.ReadFile(filepath.Join(cache, "ca", "site-ca.crt"))
	keyPEM, _ := os.ReadFile(filepath.Join(cache, "ca", "site-ca.key"))
	siteCert, _ := x509.ParseCertificate(mustPEM(t, caPEM))
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

// httpsMirrorPy serves a directory over https on port 443.
const httpsMirrorPy = `import functools, http.server, ssl, sys
root, addr, cert, key = sys.argv[1:5]
srv = http.server.ThreadingHTTPServer((addr, 443), functools.partial(http.server.SimpleHTTPRequestHandler, directory=root))
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
func issue(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, host string) (*x509.Certificate, *ecdsa.PrivateKey) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
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
