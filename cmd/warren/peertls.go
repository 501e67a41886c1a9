package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/warren-cache/warren/hub"
	"github.com/warren-cache/warren/internal/siteca"
	"github.com/warren-cache/warren/peering"
)

// Peers over mutual TLS (peer_tls): this node's certificate from the site
// CA, where it comes from (a file, the CA on this machine, or enrolment
// with an https hub), and its renewal.

// nodeTLS is this node's side of peer TLS.
type nodeTLS struct {
	id     string
	prefix string // <cache_dir>/tls/node: .crt and .key
	roots  *x509.CertPool
	ca     *siteca.CA // the site CA with its key, when this machine holds it
	hubs   []*hub.Parent
	token  bool // hub_token is set: enrolment may be tried
	log    *slog.Logger

	mu   sync.Mutex // guards cert and why
	cert *tls.Certificate
	why  string // why there is none, when there is none

	refused atomic.Int64 // peers turned away in the handshake
	// warned is when each refused host was last warned of: one a minute
	// each, the least recently warned forgotten first (a host cycling
	// through IPv6 addresses costs a log line each, never memory).
	warned *lru.Cache[string, time.Time]
}

// newWarnedHosts is an empty nodeTLS.warned, bounded as the front's
// listener bounds its own.
func newWarnedHosts() *lru.Cache[string, time.Time] {
	c, _ := lru.New[string, time.Time](4096)
	return c
}

// newNodeTLS says whether peer TLS is on (peer_tls on, or auto with the
// site CA's certificate here) and readies it: the node's certificate is
// loaded, made, or asked of a hub now; without one, peer TLS stays on
// (this node takes and serves nothing over it) and the reason is kept for
// the page.
func newNodeTLS(ctx context.Context, cfg settings, id string, hubs []*hub.Parent, log *slog.Logger) (*nodeTLS, error) {
	if cfg.PeerTLS == "off" {
		return nil, nil
	}
	caCert, _, err := siteca.LoadCert(caDir(cfg))
	switch {
	case errors.Is(err, siteca.ErrNoCA) && cfg.PeerTLS == "auto":
		return nil, nil
	case errors.Is(err, siteca.ErrNoCA):
		return nil, fmt.Errorf("peer_tls on: no site CA in %s: warren ca install the site CA's certificate (warren ca export --cert on the hub that made it)", caDir(cfg))
	case err != nil:
		return nil, fmt.Errorf("peer_tls: the site CA: %w", err)
	}
	n := &nodeTLS{id: id, prefix: filepath.Join(tlsDir(cfg), "node"), roots: siteca.Pool(caCert), hubs: hubs, token: cfg.hubToken != "",
		log: log.With(slog.String("component", "peer-tls")), warned: newWarnedHosts()}
	if ca, err := siteca.Load(caDir(cfg)); err == nil {
		n.ca = ca
	}
	n.refresh(ctx)
	return n, nil
}

// renewBefore is how long before its end a node certificate is renewed.
const renewBefore = siteca.NodeLifetime / 3

// refresh makes sure the node has a fresh certificate: the file's, or a
// new one from the CA here or from a hub, written to the file.
func (n *nodeTLS) refresh(ctx context.Context) {
	cert, err := n.load()
	if err == nil && time.Until(cert.Leaf.NotAfter) > renewBefore {
		if n.current() == nil {
			n.log.Info("this node's certificate for its peers", slog.String("from", n.prefix+".crt"), slog.Time("not_after", cert.Leaf.NotAfter))
		}
		n.set(cert, "")
		return
	}
	why := "no node certificate (" + n.prefix + ".crt)"
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		why = err.Error()
	}
	fresh, how, ierr := n.issue(ctx, cert)
	if ierr != nil {
		if cert != nil && time.Now().Before(cert.Leaf.NotAfter) {
			n.log.Warn("renew this node's certificate; the current one serves until it ends", slog.Time("not_after", cert.Leaf.NotAfter), slog.Any("err", ierr))
			n.set(cert, "")
			return
		}
		why = fmt.Sprintf("%s, and %v", why, ierr)
		n.log.Error("peer_tls: this node has no certificate from the site CA, so its peers give it nothing and it serves them nothing: "+
			"warren ca issue --node --id "+n.id+" on the machine holding the site CA (then copy node.crt and node.key to "+filepath.Dir(n.prefix)+"), or give it an https hub and hub_token to enrol with",
			slog.String("why", why))
		n.set(nil, why)
		return
	}
	n.log.Info("this node's certificate for its peers", slog.String("from", how), slog.Time("not_after", fresh.Leaf.NotAfter))
	n.set(fresh, "")
}

// load reads the node's certificate files and checks them: from the site
// CA, naming this node.
func (n *nodeTLS) load() (*tls.Certificate, error) {
	if _, err := os.Stat(n.prefix + ".crt"); err != nil {
		return nil, err
	}
	cert, err := siteca.LoadKeyPair(n.prefix+".crt", n.prefix+".key", time.Now())
	if err != nil {
		return nil, err
	}
	var chain []*x509.Certificate
	for _, der := range cert.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%s.crt: %w", n.prefix, err)
		}
		chain = append(chain, c)
	}
	id, err := siteca.VerifyNode(chain, n.roots, x509.ExtKeyUsageClientAuth, time.Now())
	if err != nil {
		return nil, fmt.Errorf("%s.crt: %w", n.prefix, err)
	}
	if id != n.id {
		return nil, fmt.Errorf("%s.crt names node %s, and this node is %s: issue one for this node (warren ca issue --node --id %s)", n.prefix, id, n.id, n.id)
	}
	return cert, nil
}

// issue gets a new certificate: from the site CA on this machine, else by
// enrolment with the first https hub that signs it. A hub takes a new key
// for this node only with its current certificate (a valid one, presented
// over mutual TLS); without one, this node enrols again with the key it
// has (a certificate that ran out while the node was off), and with a new
// key only when it has none.
func (n *nodeTLS) issue(ctx context.Context, current *tls.Certificate) (*tls.Certificate, string, error) {
	key, err := siteca.NewKey()
	if err != nil {
		return nil, "", err
	}
	if current == nil && n.ca == nil {
		if old, err := siteca.LoadKey(n.prefix + ".key"); err == nil {
			key = old
		}
	}
	var chain []*x509.Certificate
	how := ""
	switch {
	case n.ca != nil:
		c, err := n.ca.IssueNode(n.id, &key.PublicKey, siteca.NodeLifetime)
		if err != nil {
			return nil, "", err
		}
		chain, how = []*x509.Certificate{c, n.ca.Cert}, "the site CA on this machine"
	case n.token:
		csr, err := siteca.NodeRequest(n.id, key)
		if err != nil {
			return nil, "", err
		}
		var errs []error
		for _, h := range n.hubs {
			if !h.TLS() {
				continue
			}
			ectx, cancel := context.WithTimeout(ctx, 15*time.Second)
			got, err := h.Enrol(ectx, n.id, csr, current)
			cancel()
			if err == nil {
				id, verr := siteca.VerifyNode(got, n.roots, x509.ExtKeyUsageClientAuth, time.Now())
				switch {
				case verr != nil:
					err = fmt.Errorf("hub %s signed a certificate that does not verify: %w", h.Name(), verr)
				case id != n.id || !key.PublicKey.Equal(got[0].PublicKey):
					err = fmt.Errorf("hub %s signed a certificate for another node or key", h.Name())
				}
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			chain, how = got, "enrolment with hub "+h.Name()
			break
		}
		if chain == nil {
			if len(errs) == 0 {
				return nil, "", errors.New("no https hub to enrol with")
			}
			return nil, "", errors.Join(errs...)
		}
	default:
		return nil, "", errors.New("the site CA's key is not on this machine and there is no hub_token to enrol with")
	}
	if err := siteca.WriteKeyPair(n.prefix, chain, key); err != nil {
		return nil, "", err
	}
	cert, err := n.load()
	return cert, how, err
}

func (n *nodeTLS) set(c *tls.Certificate, why string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cert, n.why = c, why
}

// current is the node's certificate, nil while it has none.
func (n *nodeTLS) current() *tls.Certificate {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cert
}

// missing says why the node has no certificate ("" when it has one).
func (n *nodeTLS) missing() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.why
}

// config is what peering's two sides verify with.
func (n *nodeTLS) config() peering.TLSConfig {
	return peering.TLSConfig{Cert: n.current, Roots: n.roots, Refused: n.refuse}
}

// refuse counts a peer turned away in the handshake and says so, once a
// minute per address.
func (n *nodeTLS) refuse(remote string, err error) {
	n.refused.Add(1)
	host := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		host = h
	}
	now := time.Now()
	if last, ok := n.warned.Get(host); ok && now.Sub(last) < time.Minute {
		return
	}
	n.warned.Add(host, now)
	n.log.Warn("refused a peer without a node certificate from the site CA (logged once a minute per address)", slog.String("peer", remote), slog.Any("err", err))
}

// loop renews the certificate as it ages, and tries again every minute or
// so while the node has none.
func (n *nodeTLS) loop(ctx context.Context) {
	for {
		wait := 12 * time.Hour
		if n.current() == nil {
			wait = time.Minute
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait + time.Duration(rand.Int64N(int64(wait/10)))):
		}
		n.refresh(ctx)
	}
}
