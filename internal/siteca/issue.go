package siteca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/warren-cache/warren/internal/statefile"
)

// Beside interception's leaves, the site CA issues the certificates that
// make the site's own links TLS: a hub's, for the names nodes reach it by
// (DNS names the CA's constraints permit: warren ca init --hub-host), and
// a node's, for mutual TLS between peers. A node's certificate names the
// node by its id in a URI (NodeName), never by a host name: holding one
// lets a node prove it is a member of the site, and nothing else; it can
// stand for no repository and no hub.

// Lifetimes of what Issue* make when asked for none.
const (
	// ServerLifetime is a hub certificate's, written by warren ca issue.
	ServerLifetime = 365 * 24 * time.Hour
	// NodeLifetime is a node certificate's; a node renews it (enrolment)
	// when a third of it is left.
	NodeLifetime = 90 * 24 * time.Hour
)

// nodeScheme prefixes a node certificate's URI: warren://node/<id>. (A
// URI with a host: Go's verifier refuses a URI without one, or with an
// address, under a CA with name constraints; the CA has no URI
// constraints, so this host is unconstrained.)
const nodeScheme = "warren://node/"

// NodeName is the URI a node certificate carries for node id.
func NodeName(id string) string { return nodeScheme + id }

// validNodeID says whether id is a node id: 32 lowercase hex digits.
func validNodeID(id string) error {
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		return fmt.Errorf("node id %q: want 32 lowercase hex digits (warren status shows a node's id)", id)
	}
	return nil
}

// NodeOf is the node id a certificate names, when it is a node
// certificate: one URI, warren://node/<id>, and no host name, address or
// mail address.
func NodeOf(c *x509.Certificate) (string, bool) {
	if len(c.URIs) != 1 || len(c.DNSNames)+len(c.IPAddresses)+len(c.EmailAddresses) > 0 {
		return "", false
	}
	id, ok := strings.CutPrefix(c.URIs[0].String(), nodeScheme)
	if !ok || validNodeID(id) != nil {
		return "", false
	}
	return id, true
}

// NewKey makes a key for a certificate of the site's: ECDSA P-256, as the
// CA's own.
func NewKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("make a key: %w", err)
	}
	return k, nil
}

// IssueServer signs a certificate for a server (a hub) known by names,
// each of which the CA must permit.
func (ca *CA) IssueServer(names []string, pub crypto.PublicKey, lifetime time.Duration) (*x509.Certificate, error) {
	if len(names) == 0 {
		return nil, errors.New("a server certificate needs at least one host name")
	}
	dns := make([]string, 0, len(names))
	for _, n := range names {
		n = strings.ToLower(n)
		if err := ValidHost(n); err != nil {
			return nil, err
		}
		if !ca.Permits(n) {
			return nil, &NotPermittedError{Name: n, Permitted: ca.Hosts()}
		}
		dns = append(dns, n)
	}
	return ca.sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: dns[0], Organization: []string{"warren"}},
		DNSNames:    dns,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, pub, lifetime)
}

// NotPermittedError is a name the site CA may not sign for.
type NotPermittedError struct {
	Name      string
	Permitted []string
}

func (e *NotPermittedError) Error() string {
	return fmt.Sprintf("the site CA may not sign for %s (it may sign for: %s): make a new CA that names it (warren ca init --force --hub-host %s, then warren ca install on the nodes), or give the hub a certificate of your own (tls_cert, tls_key)",
		e.Name, strings.Join(e.Permitted, ", "), e.Name)
}

// IssueNode signs a node certificate for node id: usable as a TLS server
// and as a TLS client, between peers.
func (ca *CA) IssueNode(id string, pub crypto.PublicKey, lifetime time.Duration) (*x509.Certificate, error) {
	if err := validNodeID(id); err != nil {
		return nil, err
	}
	u, err := url.Parse(NodeName(id))
	if err != nil {
		return nil, err
	}
	return ca.sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "warren node " + id, Organization: []string{"warren"}},
		URIs:        []*url.URL{u},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, pub, lifetime)
}

// maxRequest bounds a certificate request a hub reads.
const maxRequest = 16 << 10

// checkNodeRequest reads a node's certificate request (DER) for node id,
// the node the request says it is: it must name exactly that node and
// nothing else, so a request for a host name (a repository's, the hub's
// own) or for another node is refused, whatever token came with it. Only
// its public key is used: the certificate is made from the CA's own
// template (EnrolNode).
func (ca *CA) checkNodeRequest(der []byte, id string) (*x509.CertificateRequest, error) {
	if err := validNodeID(id); err != nil {
		return nil, err
	}
	if len(der) > maxRequest {
		return nil, fmt.Errorf("the certificate request is %d bytes: a node's is under %d", len(der), maxRequest)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("read the certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("the certificate request's signature: %w", err)
	}
	var names []string
	names = append(names, csr.DNSNames...)
	for _, ip := range csr.IPAddresses {
		names = append(names, ip.String())
	}
	names = append(names, csr.EmailAddresses...)
	for _, u := range csr.URIs {
		names = append(names, u.String())
	}
	if len(names) != 1 || names[0] != NodeName(id) {
		return nil, fmt.Errorf("the certificate request names %s, not node %s alone (%s): a hub signs only a node's own name",
			orNothing(names), id, NodeName(id))
	}
	return csr, nil
}

func orNothing(names []string) string {
	if len(names) == 0 {
		return "nothing"
	}
	return strings.Join(names, ", ")
}

// NodeRequest is a certificate request (DER) for node id with key: what a
// node sends its hub to enrol.
func NodeRequest(id string, key crypto.Signer) ([]byte, error) {
	if err := validNodeID(id); err != nil {
		return nil, err
	}
	u, err := url.Parse(NodeName(id))
	if err != nil {
		return nil, err
	}
	return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "warren node " + id}, URIs: []*url.URL{u},
	}, key)
}

// sign completes tmpl (serial, lifetime within the CA's own) and signs it.
func (ca *CA) sign(tmpl *x509.Certificate, pub crypto.PublicKey, lifetime time.Duration) (*x509.Certificate, error) {
	if ca.key == nil {
		return nil, ErrNoKey
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	now := ca.clock()
	tmpl.SerialNumber = serial
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(lifetime)
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign a certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// CertPEM is certificates as PEM, leaf first (the CA's last: a chain).
func CertPEM(chain ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range chain {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// KeyPEM is an EC key as PEM.
func KeyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// LoadKey reads an EC key KeyPEM wrote (a node's, to enrol again with the
// key it enrolled with when its certificate has run out).
func LoadKey(file string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "EC PRIVATE KEY" {
		return nil, fmt.Errorf("%s: not an EC private key in PEM", file)
	}
	k, err := x509.ParseECPrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return k, nil
}

// WriteKeyPair writes prefix.crt (the chain, 0644) and prefix.key (0600),
// each like a blob (statefile), the key first: a certificate is never on
// disk without its key.
func WriteKeyPair(prefix string, chain []*x509.Certificate, key *ecdsa.PrivateKey) error {
	k, err := KeyPEM(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(prefix), 0o750); err != nil {
		return fmt.Errorf("write %s.crt: %w", prefix, err)
	}
	if err := statefile.Write(prefix+".key", k, 0o600); err != nil {
		return err
	}
	return statefile.Write(prefix+".crt", CertPEM(chain...), 0o644)
}

// LoadKeyPair reads a certificate (with its chain) and its key, and says
// plainly what is wrong with them: missing, a key readable by others, a
// key of another certificate, or a certificate out of its dates.
func LoadKeyPair(certFile, keyFile string, now time.Time) (*tls.Certificate, error) {
	if fi, err := os.Stat(keyFile); err == nil && fi.Mode().Perm()&0o007 != 0 {
		return nil, fmt.Errorf("the key %s is readable by every user (mode %04o): chmod o-rwx %s", keyFile, fi.Mode().Perm(), keyFile)
	}
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load the certificate %s and key %s: %w", certFile, keyFile, err)
	}
	if err := CheckDates(c.Leaf, now); err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	return &c, nil
}

// CheckDates says when c is not valid at now.
func CheckDates(c *x509.Certificate, now time.Time) error {
	switch {
	case now.After(c.NotAfter):
		return fmt.Errorf("the certificate for %s expired on %s: issue a new one", certNames(c), c.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(c.NotBefore):
		return fmt.Errorf("the certificate for %s is not valid before %s: is this machine's clock right?", certNames(c), c.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// certNames names what a certificate is for, in an error.
func certNames(c *x509.Certificate) string {
	var names []string
	names = append(names, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	for _, u := range c.URIs {
		names = append(names, u.String())
	}
	if len(names) == 0 {
		return c.Subject.CommonName
	}
	return strings.Join(names, ", ")
}

// Pool is the site CA alone as a root pool: what peers verify each other
// with (never the system's roots: a node certificate comes from the site
// CA or from no one).
func Pool(c *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c)
	return p
}

// VerifyNode checks a peer's certificates (leaf first) against roots for
// usage (a server's or a client's) and returns the node it names.
func VerifyNode(certs []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage, now time.Time) (string, error) {
	if len(certs) == 0 {
		return "", errors.New("no certificate: a peer proves itself with one from the site CA (warren ca issue --node, or enrolment with its hub)")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}, CurrentTime: now}); err != nil {
		if err := CheckDates(certs[0], now); err != nil {
			return "", err
		}
		return "", fmt.Errorf("the certificate for %s is not from this site's CA: %w", certNames(certs[0]), err)
	}
	id, ok := NodeOf(certs[0])
	if !ok {
		return "", fmt.Errorf("the certificate for %s is the site CA's, but not a node's", certNames(certs[0]))
	}
	return id, nil
}
