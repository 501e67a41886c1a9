package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warren-cache/warren/hub"
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

// A node renews its certificate with its hub, which ties each node id to
// the key it enrolled with: while its certificate is valid, with a new
// key, presenting the certificate over mutual TLS; once it ran out, with
// the key it has; a node that lost that key is refused, and says why.
func TestNodeRenewsWithItsHub(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	hubCfg := settings{config: defaults()}
	hubCfg.Role, hubCfg.CacheDir, hubCfg.TLSHosts = "hub", t.TempDir(), []string{"hub.site.test"}
	ca, err := siteca.Init(caDir(hubCfg), []string{"hub.site.test"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := hubServerCert(hubCfg, log)
	if err != nil {
		t.Fatal(err)
	}
	const token, self = "a-hub-token-of-24-chars!", "00112233445566778899aabbccddeeff"
	role := hub.NewRole(hub.RoleConfig{ID: "hub", Tokens: hub.NewTokens([]string{token}), SignNode: signNode(hubCfg)})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if role.Admit(w, r) {
			http.NotFound(w, r)
		}
	}))
	srv.TLS = sc.config() // as the hub serves: a client certificate asked for
	srv.StartTLS()
	defer srv.Close()
	p, err := hub.NewParent(hub.ParentConfig{URL: "https://hub.site.test:3143", Token: token, TLS: &tls.Config{RootCAs: siteca.Pool(ca.Cert)},
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, srv.Listener.Addr().String())
		}})
	if err != nil {
		t.Fatal(err)
	}
	prefix := filepath.Join(t.TempDir(), "node")
	n := &nodeTLS{id: self, prefix: prefix, roots: siteca.Pool(ca.Cert), hubs: []*hub.Parent{p}, token: true, log: log, warned: newWarnedHosts()}
	// onDisk writes a certificate for this node with key, issued at, for
	// lifetime, as the node's files.
	onDisk := func(key *ecdsa.PrivateKey, at time.Time, lifetime time.Duration) {
		t.Helper()
		ca.SetClock(func() time.Time { return at })
		c, err := ca.IssueNode(self, &key.PublicKey, lifetime)
		ca.SetClock(time.Now)
		if err != nil {
			t.Fatal(err)
		}
		if err := siteca.WriteKeyPair(prefix, []*x509.Certificate{c, ca.Cert}, key); err != nil {
			t.Fatal(err)
		}
	}
	first, _ := siteca.NewKey()
	if _, err := siteca.OpenEnrolled(caDir(hubCfg)).Bind(self, &first.PublicKey, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	keyNow := func() *ecdsa.PublicKey {
		t.Helper()
		c := n.current()
		if c == nil {
			t.Fatalf("no certificate: %s", n.missing())
		}
		return c.Leaf.PublicKey.(*ecdsa.PublicKey)
	}

	// Due for renewal (a day left): a new key, over mutual TLS.
	onDisk(first, time.Now(), 24*time.Hour)
	n.refresh(t.Context())
	renewed := keyNow()
	if renewed.Equal(&first.PublicKey) {
		t.Fatal("renewed with the same key: the new one was not taken over mutual TLS")
	}
	// Run out while the node was off: again with the key it has.
	key, err := siteca.LoadKey(prefix + ".key")
	if err != nil || !key.PublicKey.Equal(renewed) {
		t.Fatalf("the key on disk after the renewal: %v", err)
	}
	onDisk(key, time.Now().Add(-siteca.NodeLifetime-time.Hour), time.Hour)
	n.set(nil, "")
	n.refresh(t.Context())
	if !keyNow().Equal(renewed) {
		t.Fatal("a node whose certificate ran out did not enrol again with its key")
	}
	// Its key lost: refused, and the node says why.
	os.Remove(prefix + ".crt")
	lost, _ := siteca.NewKey()
	b, _ := siteca.KeyPEM(lost)
	os.WriteFile(prefix+".key", b, 0o600)
	n.set(nil, "")
	n.refresh(t.Context())
	if n.current() != nil || !strings.Contains(n.missing(), "enrolled with another key") {
		t.Fatalf("a node that lost its key: %q", n.missing())
	}
	if got := role.Refusals()[hub.ReasonEnrolKey]; got != 1 {
		t.Fatalf("the hub counted %d refusals for another key, want 1", got)
	}
}

// Enrolment at start waits on the daemon's context: a stop while a hub
// takes its time (here one that accepts and never answers) cuts it short,
// and the daemon starts without a certificate (its renewal loop tries
// again), rather than holding the start for each hub's timeouts.
func TestStartEnrolmentStopsWithTheDaemon(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	raw := defaults()
	raw.Listen, raw.CacheDir, raw.Discovery = "127.0.0.1:0", t.TempDir(), "static"
	raw.Peers = []string{"127.0.0.1:9"}
	raw.Hubs = []string{"https://" + silent.Addr().String()}
	raw.HubToken = "a-hub-token-of-24-chars!"
	// The site CA's certificate alone, as ca install leaves it on a node.
	ca, err := siteca.Init(t.TempDir(), []string{"hub.site.test"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := raw.parse()
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(caDir(cfg), 0o700)
	if err := os.WriteFile(filepath.Join(caDir(cfg), siteca.CertFile), siteca.CertPEM(ca.Cert), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(t.Context())
	stop() // stopped as it starts
	start := time.Now()
	made := make(chan error, 1)
	go func() {
		d, err := newDaemon(ctx, cfg, slog.New(slog.DiscardHandler))
		if err == nil {
			if d.peerTLS == nil || d.peerTLS.current() != nil {
				err = errors.New("peer TLS off, or a certificate from a hub that never answered")
			}
			d.close()
		}
		made <- err
	}()
	select {
	case err := <-made:
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("a start stopped during enrolment returned after %s", time.Since(start).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("a stopped daemon's start still waits on a hub that never answers, 5s on")
	}
}
