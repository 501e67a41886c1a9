package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/warren-cache/warren/hub"
	"github.com/warren-cache/warren/internal/siteca"
)

// The site's links over TLS: what a node trusts a hub with (the site CA
// beside the system's roots), the certificate a hub serves https with,
// and the tokens that would cross the site in clear.

// tlsDir is where this machine's own certificates live: hub.{crt,key} (a
// hub's, warren ca issue --host) and node.{crt,key} (a node's, for peers).
func tlsDir(cfg settings) string { return filepath.Join(cfg.CacheDir, "tls") }

// checkTLS says what is wrong with the TLS settings.
func (cfg config) checkTLS() error {
	switch cfg.PeerTLS {
	case "auto", "on", "off":
	default:
		return fmt.Errorf("peer_tls %q: want auto (when the site CA's certificate is here), on or off", cfg.PeerTLS)
	}
	if cfg.PeerTLS == "on" && cfg.Role == "hub" {
		return errors.New("peer_tls on: a hub takes no part in LAN peering; its https is tls_cert (or the site CA's)")
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return errors.New("tls_cert and tls_key go together: the certificate and its key")
	}
	if (cfg.TLSCert != "" || len(cfg.TLSHosts) > 0) && cfg.Role != "hub" {
		return errors.New("tls_cert, tls_key and tls_hosts are a hub's https certificate: set role hub (a node's certificate for its peers is the site CA's: warren ca issue --node, or enrolment)")
	}
	for _, h := range cfg.TLSHosts {
		if err := siteca.ValidHost(h); err != nil {
			return fmt.Errorf("tls_hosts: %w (nodes reach an https hub by a name its certificate carries)", err)
		}
	}
	return nil
}

// tokensInClear names each token this warren would send over plain http:
// hub_token (or a token in a hub URL) to an http:// hub, a replicate_from
// token to an http:// source. Anyone on the path can read such a token
// and use the hub with it.
func (s settings) tokensInClear() []string {
	var out []string
	for _, h := range s.Hubs {
		u, err := hub.ParseURL(h)
		if err != nil || u.Scheme != "http" {
			continue
		}
		if s.hubToken != "" || u.User != nil {
			out = append(out, fmt.Sprintf("the hub token goes to %s in clear", hub.RedactURLs(u.String())))
		}
	}
	for _, f := range s.replicateFrom {
		if u, err := url.Parse(f.URL); err == nil && u.Scheme == "http" {
			out = append(out, fmt.Sprintf("replicate_from %s's token goes to %s in clear", f.Name, hub.RedactURLs(f.URL)))
		}
	}
	return out
}

// clearTokenRisk is what the warning about tokensInClear says.
const clearTokenRisk = "anyone on the network path can read it and use the hub with it; give the hub a certificate (warren ca issue --host) and use its https:// URL (hub_require_tls: true refuses plain http)"

// siteTrust is what an https hub (hubs, replicate_from) is verified
// with: the system's roots and, when this machine holds it, the site CA.
func siteTrust(cfg settings) (*tls.Config, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	c, _, err := siteca.LoadCert(caDir(cfg))
	switch {
	case err == nil:
		roots.AddCert(c)
	case !errors.Is(err, siteca.ErrNoCA):
		return nil, fmt.Errorf("the site CA's certificate: %w", err)
	}
	return &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}, nil
}

// serverCert is where a hub's https certificate comes from: a pair of
// files, or the site CA (minted in memory, renewed as it ages).
type serverCert struct {
	mu   sync.Mutex // guards cert
	cert *tls.Certificate
	// mint, when set, makes a fresh certificate (the site CA's).
	mint func() (*tls.Certificate, error)
	log  *slog.Logger
	// what says where it comes from, for the log.
	what string
}

// mintedLifetime is a certificate the hub makes itself with the site CA:
// short, since it is made again at every start and as it ages.
const mintedLifetime = 7 * 24 * time.Hour

// hubServerCert finds a hub's https certificate: tls_cert/tls_key, else
// <cache_dir>/tls/hub.{crt,key}, else one the site CA makes for tls_hosts
// (this machine's name by default). nil when there is none: the hub then
// serves plain http only, and says so.
func hubServerCert(cfg settings, log *slog.Logger) (*serverCert, error) {
	certFile, keyFile := cfg.TLSCert, cfg.TLSKey
	if certFile == "" {
		certFile, keyFile = filepath.Join(tlsDir(cfg), "hub.crt"), filepath.Join(tlsDir(cfg), "hub.key")
		if _, err := os.Stat(certFile); err != nil {
			certFile = ""
		}
	}
	if certFile != "" {
		c, err := siteca.LoadKeyPair(certFile, keyFile, time.Now())
		if err != nil {
			return nil, fmt.Errorf("the hub's https certificate: %w", err)
		}
		return &serverCert{cert: c, log: log, what: certFile}, nil
	}
	ca, err := siteca.Load(caDir(cfg))
	if errors.Is(err, siteca.ErrNoCA) || errors.Is(err, siteca.ErrNoKey) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	names := cfg.TLSHosts
	if len(names) == 0 {
		host, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("this machine's name, for the hub's certificate: %w (set tls_hosts)", err)
		}
		names = []string{host}
	}
	key, err := siteca.NewKey()
	if err != nil {
		return nil, err
	}
	mint := func() (*tls.Certificate, error) {
		c, err := ca.IssueServer(names, &key.PublicKey, mintedLifetime)
		if err != nil {
			return nil, err
		}
		return &tls.Certificate{Certificate: [][]byte{c.Raw, ca.Cert.Raw}, PrivateKey: key, Leaf: c}, nil
	}
	c, err := mint()
	var np *siteca.NotPermittedError
	if errors.As(err, &np) && len(cfg.TLSHosts) == 0 {
		// The CA was made for interception only, and this machine's name
		// is not among its names: plain http, as before, said once.
		log.Warn("the hub serves plain http only: the site CA may not sign for this machine's name; set tls_hosts to a name it may sign for, or give the hub a certificate (tls_cert, tls_key)", slog.Any("err", err))
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("the hub's https certificate for %s: %w", strings.Join(names, ", "), err)
	}
	return &serverCert{cert: c, mint: mint, log: log, what: "made with the site CA for " + strings.Join(names, ", ")}, nil
}

// get is tls.Config's GetCertificate: a minted certificate is made again
// once two thirds of its life are gone.
func (s *serverCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mint != nil && time.Until(s.cert.Leaf.NotAfter) < mintedLifetime/3 {
		c, err := s.mint()
		if err != nil {
			// The old one still serves until it ends.
			s.log.Warn("renew the hub's https certificate", slog.Any("err", err))
		} else {
			s.cert = c
		}
	}
	return s.cert, nil
}

// config is the hub's TLS server configuration: HTTP/1.1 (proxy requests
// in absolute form). Tokens prove nodes; a client certificate is asked for
// but never required nor checked in the handshake: a node renewing its
// certificate with a new key presents its current one, which enrolment
// checks (hub/enrol.go).
func (s *serverCert) config() *tls.Config {
	return &tls.Config{GetCertificate: s.get, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12, ClientAuth: tls.RequestClientCert}
}

// names are what the certificate is for, for the log and the page.
func (s *serverCert) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.cert.Leaf.DNSNames)
}

// signNode is the hub's enrolment signer, when it holds the site CA's key.
func signNode(cfg settings) hub.SignNode {
	ca, err := siteca.Load(caDir(cfg))
	if err != nil {
		return nil
	}
	rec := siteca.OpenEnrolled(caDir(cfg))
	return func(csr []byte, id string, current []*x509.Certificate) ([]*x509.Certificate, bool, error) {
		c, newKey, err := ca.EnrolNode(csr, id, current, rec)
		if err != nil {
			return nil, false, err
		}
		return []*x509.Certificate{c, ca.Cert}, newKey, nil
	}
}
