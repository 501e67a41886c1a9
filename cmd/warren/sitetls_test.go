package main

import (
	"context"
	"crypto/x509"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warren-cache/warren/internal/siteca"
)

// A hub's https certificate: what it is refused for, each with a reason
// that says what to do.
func TestHubServerCert(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	dir := t.TempDir()
	cfg := settings{config: defaults()}
	cfg.Role, cfg.CacheDir = "hub", dir
	if c, err := hubServerCert(cfg, log); c != nil || err != nil {
		t.Fatalf("no certificate and no CA: %v %v, want plain http", c, err)
	}
	ca, err := siteca.Init(caDir(cfg), []string{"hub.site.test"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// Holding the CA: made at start for tls_hosts.
	cfg.TLSHosts = []string{"hub.site.test"}
	c, err := hubServerCert(cfg, log)
	if err != nil || strings.Join(c.names(), ",") != "hub.site.test" {
		t.Fatalf("made with the CA: %v", err)
	}
	cfg.TLSHosts = []string{"hub.elsewhere.test"}
	if _, err := hubServerCert(cfg, log); err == nil || !strings.Contains(err.Error(), "--hub-host hub.elsewhere.test") {
		t.Fatalf("a name the CA may not sign: %v", err)
	}
	// An operator's files: expired, or with another certificate's key.
	key, _ := siteca.NewKey()
	ca.SetClock(func() time.Time { return time.Now().Add(-48 * time.Hour) })
	old, _ := ca.IssueServer([]string{"hub.site.test"}, &key.PublicKey, time.Hour)
	ca.SetClock(time.Now)
	prefix := filepath.Join(dir, "own")
	siteca.WriteKeyPair(prefix, []*x509.Certificate{old, ca.Cert}, key)
	cfg.TLSCert, cfg.TLSKey = prefix+".crt", prefix+".key"
	if _, err := hubServerCert(cfg, log); err == nil || !strings.Contains(err.Error(), "expired on") {
		t.Fatalf("an expired certificate: %v", err)
	}
	other, _ := siteca.NewKey()
	b, _ := siteca.KeyPEM(other)
	os.WriteFile(prefix+".key", b, 0o600)
	if _, err := hubServerCert(cfg, log); err == nil || !strings.Contains(err.Error(), "private key does not match public key") {
		t.Fatalf("a key of another certificate: %v", err)
	}
}

// A node's certificate for its peers: one issued for another node is
// refused, an expired one renewed with the CA on this machine.
func TestNodeCertificate(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	cfg := settings{config: defaults()}
	cfg.CacheDir = t.TempDir()
	ca, err := siteca.Init(caDir(cfg), []string{"hub.site.test"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	const self, other = "00112233445566778899aabbccddeeff", "ffeeddccbbaa99887766554433221100"
	key, _ := siteca.NewKey()
	wrong, _ := ca.IssueNode(other, &key.PublicKey, time.Hour)
	prefix := filepath.Join(tlsDir(cfg), "node")
	if err := siteca.WriteKeyPair(prefix, []*x509.Certificate{wrong, ca.Cert}, key); err != nil {
		t.Fatal(err)
	}
	n := &nodeTLS{id: self, prefix: prefix, roots: siteca.Pool(ca.Cert), log: log}
	if _, err := n.load(); err == nil || !strings.Contains(err.Error(), "names node "+other+", and this node is "+self) {
		t.Fatalf("another node's certificate: %v", err)
	}
	// Without the CA's key or a hub: no certificate, and why.
	n.refresh(context.Background())
	if n.current() != nil || !strings.Contains(n.missing(), "names node "+other) || !strings.Contains(n.missing(), "no hub_token") {
		t.Fatalf("a node that cannot get one: %q", n.missing())
	}
	// With the CA here: a new one, written where the next start finds it.
	n.ca = ca
	n.refresh(context.Background())
	if c := n.current(); c == nil || n.missing() != "" {
		t.Fatalf("renewed with the CA here: %q", n.missing())
	}
	if c, err := n.load(); err != nil || time.Until(c.Leaf.NotAfter) < siteca.NodeLifetime-time.Hour {
		t.Fatalf("the file after: %v", err)
	}
}
