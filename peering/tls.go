package peering

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/fill"
	"github.com/warren-cache/warren/internal/siteca"
	"github.com/warren-cache/warren/internal/tlstrace"
)

// Blob transfers over mutual TLS (peer_tls): each node holds a
// certificate from the site CA naming its node id, serves blobs only to a
// peer that presents one (the server's TLS config, cmd's, refuses the
// rest in the handshake; BlobConfig.RequireTLS refuses plain requests),
// and takes blobs only from a peer whose certificate names the node it
// asked. The datagrams stay as they are (HMAC with the group secret).

// PeerTLS is how the last blob transfer with a peer went, as its TLS goes.
type PeerTLS struct {
	// OK: mutual TLS, the peer's certificate from the site CA and naming
	// it. Err says otherwise why not.
	OK  bool
	Err string
	At  time.Time
}

// String is the state as `warren peers` and the page show it.
func (s PeerTLS) String() string {
	if s.OK {
		return "mutual TLS"
	}
	return "refused: " + s.Err
}

// tlsStates are the peers' TLS states, by node.
type tlsStates struct {
	mu sync.Mutex // guards m
	m  map[NodeID]PeerTLS
}

func (t *tlsStates) note(id NodeID, err error, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[NodeID]PeerTLS{}
	}
	if len(t.m) > 4*maxVoters && t.m[id].At.IsZero() {
		clear(t.m) // ids are few; a flood of them costs the page its column, not memory
	}
	s := PeerTLS{OK: err == nil, At: now}
	if err != nil {
		s.Err = tlsReason(err)
	}
	t.m[id] = s
}

// PeerTLS is how blob transfers with peer id went over TLS, when this
// node speaks TLS to its peers and has asked id for one.
func (n *Node) PeerTLS(id NodeID) (PeerTLS, bool) {
	n.tls.mu.Lock()
	defer n.tls.mu.Unlock()
	s, ok := n.tls.m[id]
	return s, ok
}

// TLS says whether blobs go between peers over mutual TLS.
func (n *Node) TLS() bool { return n.cfg.TLS != nil }

// getBlob is fill.GetAt for a peer's blob: over TLS, the peer's
// certificate must name the node asked (the handshake has checked it
// comes from the site CA), and the outcome is noted for the page.
func (n *Node) getBlob(req *http.Request, id NodeID, off int64) (*http.Response, int64, error) {
	if n.cfg.TLS == nil {
		return fill.GetAt(n.hc, req, off)
	}
	ctx, w := tlstrace.With(req.Context())
	resp, size, err := fill.GetAt(n.hc, req.WithContext(ctx), off)
	err = w.Explain(err)
	if err == nil {
		err = certNames(resp, id)
		if err != nil {
			resp.Body.Close()
			resp = nil
		}
	}
	if err == nil || isTLSError(err) {
		n.tls.note(id, err, n.now())
	}
	return resp, size, err
}

// certNames says whether resp came over TLS from a certificate naming id.
func certNames(resp *http.Response, id NodeID) error {
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 {
		return errors.New("tls: the peer's answer came without its certificate")
	}
	got, ok := siteca.NodeOf(resp.TLS.PeerCertificates[0])
	if !ok || got != id.String() {
		return fmt.Errorf("tls: the peer at %s presented node %s's certificate, not node %s's", resp.Request.URL.Host, got, id)
	}
	return nil
}

// isTLSError says whether a transfer failed on TLS (the handshake, a
// certificate, a peer that answers in plain http or closes in the
// handshake) rather than on what came after.
func isTLSError(err error) bool {
	var verify *tls.CertificateVerificationError
	var alert tls.AlertError
	var rh tls.RecordHeaderError
	return errors.As(err, &verify) || errors.As(err, &alert) || errors.As(err, &rh) ||
		errors.Is(err, http.ErrSchemeMismatch) || errors.Is(err, tlstrace.ErrCutShort) ||
		strings.Contains(err.Error(), "tls: ") || strings.Contains(err.Error(), "remote error")
}

// tlsReason is a TLS failure as an operator reads it.
func tlsReason(err error) string {
	var rh tls.RecordHeaderError
	msg := err.Error()
	switch {
	case errors.Is(err, http.ErrSchemeMismatch) || errors.As(err, &rh):
		// net/http turns a plain-http answer to the handshake into
		// ErrSchemeMismatch; another protocol's is the record error.
		return "the peer does not speak TLS (peer_tls off there?)"
	case errors.Is(err, tlstrace.ErrCutShort):
		return "the peer closed the connection in the TLS handshake: it holds its max_client_connections (per address, an IPv6 node's /64) or max_connections open (its log says \"refused connection\"), or it is stopping"
	case strings.Contains(msg, "remote error: tls: access denied"):
		return "the peer refuses this node's address: its allow_clients leaves it out"
	case strings.Contains(msg, "remote error: tls: internal error"):
		return "the peer has no certificate of its own to serve with"
	case strings.Contains(msg, "remote error: tls: bad certificate"):
		return "the peer refused this node's certificate (none, or not from its site CA: warren ca issue --node, or enrolment with an https hub and hub_token)"
	}
	if i := strings.LastIndex(msg, "tls: "); i >= 0 {
		return msg[i:]
	}
	return msg
}

// blobURL is where the peer at ap serves d: https with peer TLS; an IPv6
// address in brackets, its zone (a link-local peer's interface) escaped
// as %25.
func (n *Node) blobURL(ap netip.AddrPort, d cachestore.Digest) string {
	scheme := "http"
	if n.cfg.TLS != nil {
		scheme = "https"
	}
	return blobURL(scheme, ap, d)
}

// TLSConfig is what both sides of a blob transfer verify with: this
// node's certificate (Cert, which may have none yet: then nothing is
// served and nothing taken) and the site CA as the only root. Refused, if
// set, hears of each peer the server side turned away.
type TLSConfig struct {
	Cert    func() *tls.Certificate
	Roots   *x509.CertPool
	Refused func(remote string, err error)
	Now     func() time.Time
}

// ServerConfig is the TLS server side of blob transfers: a peer must
// present a node certificate from the site CA, or the handshake fails;
// Refused hears of each one turned away, with its address.
func (c TLSConfig) ServerConfig() *tls.Config {
	now := c.now()
	base := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{"http/1.1"},
		// Asked for, and checked below: a refusal is then heard, with the
		// peer's address, whatever its reason (none presented included).
		ClientAuth: tls.RequestClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if cert := c.Cert(); cert != nil {
				return cert, nil
			}
			return nil, errors.New("this node has no node certificate yet")
		},
	}
	base.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		cfg := base.Clone()
		cfg.GetConfigForClient = nil
		remote := hello.Conn.RemoteAddr().String()
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			_, err := siteca.VerifyNode(cs.PeerCertificates, c.Roots, x509.ExtKeyUsageClientAuth, now())
			if err != nil && c.Refused != nil {
				c.Refused(remote, err)
			}
			return err
		}
		return cfg, nil
	}
	return base
}

// ClientConfig is the TLS client side: this node's certificate, and the
// peer's checked against the site CA (its name, a node id, is checked
// against the node asked once the answer comes: certNames).
func (c TLSConfig) ClientConfig() *tls.Config {
	now := c.now()
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{"http/1.1"},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if cert := c.Cert(); cert != nil {
				return cert, nil
			}
			return &tls.Certificate{}, nil // none: the peer says "certificate required"
		},
		// A peer is reached by address, and its certificate names a node,
		// not a host: the chain is checked here, the name in certNames.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := siteca.VerifyNode(cs.PeerCertificates, c.Roots, x509.ExtKeyUsageServerAuth, now())
			if err != nil {
				return fmt.Errorf("tls: the peer's certificate: %w", err)
			}
			return nil
		},
	}
}

func (c TLSConfig) now() func() time.Time {
	if c.Now != nil {
		return c.Now
	}
	return time.Now
}
