package siteca

import (
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const testNode = "00112233445566778899aabbccddeeff"

func TestIssueServer(t *testing.T) {
	ca, err := Init(t.TempDir(), []string{"repo.example", "hub.site.example"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := NewKey()
	c, err := ca.IssueServer([]string{"Hub.Site.Example"}, &key.PublicKey, ServerLifetime)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Verify(x509.VerifyOptions{DNSName: "hub.site.example", Roots: Pool(ca.Cert)}); err != nil {
		t.Fatalf("a hub certificate does not verify for its name: %v", err)
	}
	if _, err := c.Verify(x509.VerifyOptions{DNSName: "other.site.example", Roots: Pool(ca.Cert)}); err == nil {
		t.Fatal("a hub certificate verifies for another name")
	}
	var np *NotPermittedError
	if _, err := ca.IssueServer([]string{"hub.elsewhere.example"}, &key.PublicKey, ServerLifetime); !errors.As(err, &np) || !strings.Contains(err.Error(), "--hub-host hub.elsewhere.example") {
		t.Fatalf("a name outside the constraints: %v", err)
	}
	if _, err := ca.IssueServer([]string{"10.0.0.2"}, &key.PublicKey, ServerLifetime); err == nil || !strings.Contains(err.Error(), "IP address") {
		t.Fatalf("an IP address: %v", err)
	}
	if c.NotAfter.After(ca.Cert.NotAfter) {
		t.Fatal("a certificate outlives its CA")
	}
}

func TestNodeCertificates(t *testing.T) {
	ca, err := Init(t.TempDir(), []string{"repo.example"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	other, err := Init(t.TempDir(), []string{"repo.example"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := NewKey()
	now := time.Now()

	// Enrolment: the node's own request is signed; the certificate names
	// the node and nothing else, and verifies as a server and as a client.
	req, err := NodeRequest(testNode, key)
	if err != nil {
		t.Fatal(err)
	}
	rec := OpenEnrolled(t.TempDir())
	c, _, err := ca.EnrolNode(req, testNode, nil, rec)
	if err != nil {
		t.Fatal(err)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		id, err := VerifyNode([]*x509.Certificate{c}, Pool(ca.Cert), usage, now)
		if err != nil || id != testNode {
			t.Fatalf("usage %v: node %q, %v", usage, id, err)
		}
	}
	if c.NotAfter.Sub(now) > NodeLifetime+time.Minute {
		t.Fatalf("a node certificate for %s", c.NotAfter.Sub(now))
	}

	// Refused, each with a reason that says what it is.
	u := func(s string) *url.URL { x, _ := url.Parse(s); return x }
	for _, tc := range []struct {
		name string
		req  x509.CertificateRequest
		want string
	}{
		{"another node", x509.CertificateRequest{URIs: []*url.URL{u(NodeName("ffeeddccbbaa99887766554433221100"))}}, "not node " + testNode},
		{"a repository's host", x509.CertificateRequest{DNSNames: []string{"repo.example"}}, "names repo.example"},
		{"the node and a host", x509.CertificateRequest{DNSNames: []string{"repo.example"}, URIs: []*url.URL{u(NodeName(testNode))}}, "names repo.example, " + NodeName(testNode)},
		{"an address", x509.CertificateRequest{IPAddresses: []net.IP{net.ParseIP("10.0.0.9")}}, "names 10.0.0.9"},
		{"nothing", x509.CertificateRequest{}, "names nothing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			der, err := x509.CreateCertificateRequest(nil, &tc.req, key)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := ca.EnrolNode(der, testNode, nil, rec); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("signed, or the wrong reason: %v (want %q)", err, tc.want)
			}
		})
	}
	if _, _, err := ca.EnrolNode([]byte("not a request"), testNode, nil, rec); err == nil {
		t.Fatal("signed garbage")
	}
	tampered := append([]byte{}, req...)
	tampered[len(tampered)-5] ^= 0xff // inside the signature
	if _, _, err := ca.EnrolNode(tampered, testNode, nil, rec); err == nil {
		t.Fatal("signed a request whose signature is wrong")
	}

	// What a peer is refused for.
	fromOther, _ := other.IssueNode(testNode, &key.PublicKey, NodeLifetime)
	server, _ := Init(t.TempDir(), []string{"hub.example"}, now)
	hubCert, _ := server.IssueServer([]string{"hub.example"}, &key.PublicKey, ServerLifetime)
	ca.now = func() time.Time { return now.Add(-NodeLifetime - 48*time.Hour) }
	expired, _ := ca.IssueNode(testNode, &key.PublicKey, NodeLifetime)
	ca.now = time.Now
	for _, tc := range []struct {
		name  string
		certs []*x509.Certificate
		roots *x509.CertPool
		want  string
	}{
		{"none", nil, Pool(ca.Cert), "no certificate"},
		{"another CA's", []*x509.Certificate{fromOther}, Pool(ca.Cert), "not from this site's CA"},
		{"expired", []*x509.Certificate{expired}, Pool(ca.Cert), "expired on"},
		{"a hub's", []*x509.Certificate{hubCert}, Pool(server.Cert), "not a node's"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if id, err := VerifyNode(tc.certs, tc.roots, x509.ExtKeyUsageServerAuth, now); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("node %q accepted, or the wrong reason: %v (want %q)", id, err, tc.want)
			}
		})
	}
}

func TestKeyPairFiles(t *testing.T) {
	dir := t.TempDir()
	ca, err := Init(filepath.Join(dir, "ca"), []string{"hub.example"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := NewKey()
	c, _ := ca.IssueServer([]string{"hub.example"}, &key.PublicKey, time.Hour)
	prefix := filepath.Join(dir, "tls", "hub")
	if err := WriteKeyPair(prefix, []*x509.Certificate{c, ca.Cert}, key); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(prefix + ".key"); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %o", fi.Mode().Perm())
	}
	got, err := LoadKeyPair(prefix+".crt", prefix+".key", time.Now())
	if err != nil || len(got.Certificate) != 2 {
		t.Fatalf("%v (chain of %d)", err, len(got.Certificate))
	}
	if _, err := LoadKeyPair(prefix+".crt", prefix+".key", time.Now().Add(2*time.Hour)); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("an expired certificate: %v", err)
	}
	os.Chmod(prefix+".key", 0o644)
	if _, err := LoadKeyPair(prefix+".crt", prefix+".key", time.Now()); err == nil || !strings.Contains(err.Error(), "readable by every user") {
		t.Fatalf("a key anyone can read: %v", err)
	}
	os.Chmod(prefix+".key", 0o600)
	other, _ := NewKey()
	b, _ := KeyPEM(other)
	os.WriteFile(prefix+".key", b, 0o600)
	if _, err := LoadKeyPair(prefix+".crt", prefix+".key", time.Now()); err == nil {
		t.Fatal("a key of another certificate")
	}
}

// A node may hold the site CA's certificate alone: it trusts the site's
// hubs and peers and can sign nothing.
func TestInstallCertificateAlone(t *testing.T) {
	hub := t.TempDir()
	ca, err := Init(hub, []string{"repo.example"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "site-ca.crt")
	os.WriteFile(file, CertPEM(ca.Cert), 0o644)
	node := t.TempDir()
	// A key of an older CA is there: it goes.
	if _, err := Init(node, []string{"old.example"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	got, err := Install(node, file)
	if err != nil {
		t.Fatal(err)
	}
	if got.HasKey() || !got.Cert.Equal(ca.Cert) {
		t.Fatal("installed a key, or another certificate")
	}
	if _, err := got.Leaf("repo.example"); !errors.Is(err, ErrNoKey) {
		t.Fatalf("a leaf without the key: %v", err)
	}
	if _, err := Load(node); !errors.Is(err, ErrNoKey) {
		t.Fatalf("Load: %v, want ErrNoKey", err)
	}
	if c, _, err := LoadCert(node); err != nil || !c.Equal(ca.Cert) {
		t.Fatalf("LoadCert: %v", err)
	}
	// The same CA's key stays when its certificate alone is installed again.
	if _, err := Install(hub, file); err != nil {
		t.Fatal(err)
	}
	if again, err := Load(hub); err != nil || !again.HasKey() {
		t.Fatalf("the hub lost its key: %v", err)
	}
}

// The record of which key each node id enrolled with: kept in the CA's
// directory across opens, a known id's other key refused unless replaced,
// a damaged record said as such.
func TestEnrolled(t *testing.T) {
	dir := t.TempDir()
	keyA, _ := NewKey()
	keyB, _ := NewKey()
	now := time.Now()
	for _, step := range []struct {
		name     string
		key      *ecdsa.PrivateKey
		replace  bool
		replaced bool
		err      error
	}{
		{"first", keyA, false, false, nil},
		{"the same key", keyA, false, false, nil},
		{"another key", keyB, false, false, ErrOtherKey},
		{"another key, replacing", keyB, true, true, nil},
		{"the first key again", keyA, false, false, ErrOtherKey},
	} {
		t.Run(step.name, func(t *testing.T) {
			// Opened afresh each time: what counts is the file.
			replaced, err := OpenEnrolled(dir).Bind(testNode, &step.key.PublicKey, step.replace, now)
			if !errors.Is(err, step.err) || (err == nil) != (step.err == nil) || replaced != step.replaced {
				t.Fatalf("replaced %v, %v; want %v, %v", replaced, err, step.replaced, step.err)
			}
		})
	}
	if err := os.WriteFile(filepath.Join(dir, EnrolledFile), []byte("{"), 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenEnrolled(dir).Bind(testNode, &keyB.PublicKey, false, now); err == nil || !strings.Contains(err.Error(), "is damaged") {
		t.Fatalf("a damaged record: %v", err)
	}
}
