// Package siteca owns a site's certificate authority: an ECDSA key and a
// certificate whose X.509 name constraints permit only the intercepted
// repository hosts and the site's hub names (and no IP address), so the
// key can sign for no other host (within the site it signs hub and node
// certificates: its holder can pose as the hub or any node); the
// short-lived leaf certificates minted
// from it, in memory, for the hosts a client CONNECTs to; and the
// certificates of the site's own links (issue.go): hubs' for https, and
// nodes' for mutual TLS between peers.
package siteca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/warren-cache/warren/internal/statefile"
)

// File names in the CA's directory.
const (
	CertFile = "site-ca.crt"
	KeyFile  = "site-ca.key"
)

// Lifetimes: the CA's, and each leaf's (renewed an hour before it ends).
const (
	caLifetime   = 5 * 365 * 24 * time.Hour
	leafLifetime = 24 * time.Hour
)

// CA is a loaded site CA.
type CA struct {
	Cert *x509.Certificate
	key  *ecdsa.PrivateKey
	now  func() time.Time

	leafKey *ecdsa.PrivateKey // one key for every leaf: leaves live in memory only
	mu      sync.Mutex
	leaves  map[string]*tls.Certificate
}

// ValidHost says whether h can be a constraint: a DNS name, not an IP
// address or a wildcard.
func ValidHost(h string) error {
	switch {
	case h == "" || len(h) > 253:
		return fmt.Errorf("%q is not a host name", h)
	case net.ParseIP(h) != nil:
		return fmt.Errorf("%s is an IP address: the site CA signs only for host names", h)
	case strings.ContainsAny(h, "*/: ") || strings.HasPrefix(h, ".") || strings.HasSuffix(h, "."):
		return fmt.Errorf("%q is not a plain host name", h)
	}
	return nil
}

// Init makes a new CA for hosts in dir (the key 0600), replacing any
// there: what a rotation does.
func Init(dir string, hosts []string, now time.Time) (*CA, error) {
	if len(hosts) == 0 {
		return nil, errors.New("no host to intercept: a CA that permits nothing would be of no use; name the https repository hosts (https_intercept) or add them to apt's or dnf's sources")
	}
	hosts = slices.Clone(hosts)
	for i, h := range hosts {
		hosts[i] = strings.ToLower(h)
		if err := ValidHost(hosts[i]); err != nil {
			return nil, err
		}
	}
	slices.Sort(hosts)
	hosts = slices.Compact(hosts)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("make the site CA's key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "warren site CA (" + host + ")", Organization: []string{"warren"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caLifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		// The point: this key signs for these hosts (and their subdomains,
		// as RFC 5280 reads a DNS constraint) and nothing else, no IP
		// address among them.
		PermittedDNSDomainsCritical: true,
		PermittedDNSDomains:         hosts,
		ExcludedIPRanges:            []*net.IPNet{{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, {IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("make the site CA's certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("site CA directory: %w", err)
	}
	if err := statefile.Write(filepath.Join(dir, KeyFile), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	if err := statefile.Write(filepath.Join(dir, CertFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	return Load(dir)
}

// Install takes a CA made elsewhere (the hub's): file holds its
// certificate and key as PEM, as `warren ca export` writes them, or its
// certificate alone (`warren ca export --cert`): then this machine trusts
// the site CA (its hubs' and peers' certificates) without being able to
// sign anything, and intercepts no https host. A key left from another CA
// is removed.
func Install(dir, file string) (*CA, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	ca, err := parse(b, b)
	if errors.Is(err, errNoKeyInFile) {
		return installCert(dir, file, b)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w (want the site CA's certificate and key, as warren ca export writes them, or its certificate alone)", file, err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
	keyDER, err := x509.MarshalECPrivateKey(ca.key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("site CA directory: %w", err)
	}
	if err := statefile.Write(filepath.Join(dir, KeyFile), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	if err := statefile.Write(filepath.Join(dir, CertFile), certPEM, 0o644); err != nil {
		return nil, err
	}
	return Load(dir)
}

// installCert installs the site CA's certificate alone.
func installCert(dir, file string, b []byte) (*CA, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no PEM certificate in it (want what warren ca export writes)", file)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if err := checkCACert(c); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("site CA directory: %w", err)
	}
	// A key of another CA would make the pair fail to load; the same CA's
	// key stays (this is then a refresh of the certificate).
	if old, err := Load(dir); err == nil && !old.Cert.Equal(c) || errors.Is(err, errKeyMismatch) {
		if err := os.Remove(filepath.Join(dir, KeyFile)); err != nil {
			return nil, fmt.Errorf("remove the key of the site CA this one replaces: %w", err)
		}
	}
	if err := statefile.Write(filepath.Join(dir, CertFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o644); err != nil {
		return nil, err
	}
	if ca, err := Load(dir); err == nil {
		return ca, nil
	}
	return &CA{Cert: c, now: time.Now, leaves: map[string]*tls.Certificate{}}, nil
}

// Export is the CA's certificate and key as one PEM, for `warren ca
// install` on the site's nodes. Keep it as secret as the key.
func (ca *CA) Export() ([]byte, error) {
	keyDER, err := x509.MarshalECPrivateKey(ca.key)
	if err != nil {
		return nil, err
	}
	return append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})...), nil
}

// ErrNoCA is a directory without a site CA.
var ErrNoCA = errors.New("no site CA")

// ErrNoKey is a directory with the site CA's certificate but not its key
// (warren ca install of the certificate alone): enough to trust the site,
// not to sign.
var ErrNoKey = errors.New("the site CA's certificate is here without its key")

var (
	errNoKeyInFile = errors.New("a certificate without a key")
	errKeyMismatch = errors.New("the key does not belong to the certificate")
)

// Load reads the CA in dir; ErrNoCA when there is none.
func Load(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CertFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoCA
	}
	if err != nil {
		return nil, fmt.Errorf("read the site CA: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, KeyFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoKey
	}
	if err != nil {
		return nil, fmt.Errorf("read the site CA's key: %w", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, KeyFile)); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("the site CA's key %s is readable by others (mode %o): chmod 600 it", filepath.Join(dir, KeyFile), fi.Mode().Perm())
	}
	ca, err := parse(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("the site CA in %s: %w", dir, err)
	}
	return ca, nil
}

// LoadCert reads only the CA's certificate (public): what apt and dnf
// are told to trust.
func LoadCert(dir string) (*x509.Certificate, []byte, error) {
	b, err := os.ReadFile(filepath.Join(dir, CertFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, ErrNoCA
	}
	if err != nil {
		return nil, nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("%s is not a PEM certificate", filepath.Join(dir, CertFile))
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	return c, b, err
}

func parse(certPEM, keyPEM []byte) (*CA, error) {
	var cert *x509.Certificate
	var key *ecdsa.PrivateKey
	for _, src := range [][]byte{certPEM, keyPEM} {
		for rest := src; ; {
			var blk *pem.Block
			blk, rest = pem.Decode(rest)
			if blk == nil {
				break
			}
			switch blk.Type {
			case "CERTIFICATE":
				if cert == nil {
					c, err := x509.ParseCertificate(blk.Bytes)
					if err != nil {
						return nil, fmt.Errorf("certificate: %w", err)
					}
					cert = c
				}
			case "EC PRIVATE KEY":
				k, err := x509.ParseECPrivateKey(blk.Bytes)
				if err != nil {
					return nil, fmt.Errorf("key: %w", err)
				}
				key = k
			}
		}
	}
	switch {
	case cert != nil && key == nil:
		if err := checkCACert(cert); err != nil {
			return nil, err
		}
		return nil, errNoKeyInFile
	case cert == nil || key == nil:
		return nil, errors.New("a certificate and an EC private key are both needed")
	case checkCACert(cert) != nil:
		return nil, checkCACert(cert)
	case !key.PublicKey.Equal(cert.PublicKey):
		return nil, errKeyMismatch
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, key: key, now: time.Now, leafKey: leafKey, leaves: map[string]*tls.Certificate{}}, nil
}

// checkCACert says whether c is a warren site CA's certificate.
func checkCACert(c *x509.Certificate) error {
	if !c.IsCA || len(c.PermittedDNSDomains) == 0 || !c.PermittedDNSDomainsCritical {
		return errors.New("not a warren site CA: a CA certificate with critical DNS name constraints is needed")
	}
	return nil
}

// SetClock sets the clock certificates are dated by (tests).
func (ca *CA) SetClock(now func() time.Time) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	ca.now = now
}

func (ca *CA) clock() time.Time {
	ca.mu.Lock()
	now := ca.now
	ca.mu.Unlock()
	return now()
}

// HasKey says whether this CA can sign (its key is on this machine).
func (ca *CA) HasKey() bool { return ca.key != nil }

// Hosts are the host names the CA may sign for.
func (ca *CA) Hosts() []string { return slices.Clone(ca.Cert.PermittedDNSDomains) }

// Permits says whether the CA may sign for host.
func (ca *CA) Permits(host string) bool { return Permits(ca.Cert, host) }

// Permits says whether the CA certificate c may sign for host.
func Permits(c *x509.Certificate, host string) bool {
	host = strings.ToLower(host)
	for _, d := range c.PermittedDNSDomains {
		if host == d || strings.HasSuffix(host, "."+d) {
			return true
		}
	}
	return false
}

// Fingerprint is the SHA-256 of the CA's certificate, as openssl prints it.
func (ca *CA) Fingerprint() string { return Fingerprint(ca.Cert) }

// Fingerprint of a certificate: SHA-256, colon-separated hex.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	var b strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(h[i : i+2])
	}
	return b.String()
}

// Leaf returns a certificate for host, minted now or kept from before
// while it has more than an hour to live.
func (ca *CA) Leaf(host string) (*tls.Certificate, error) {
	host = strings.ToLower(host)
	if ca.key == nil {
		return nil, ErrNoKey
	}
	if !ca.Permits(host) {
		return nil, fmt.Errorf("the site CA may not sign for %s (its hosts: %s)", host, strings.Join(ca.Hosts(), ", "))
	}
	now := ca.clock()
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if c := ca.leaves[host]; c != nil && c.Leaf.NotAfter.Sub(now) > time.Hour {
		return c, nil
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host},
		DNSNames:     []string{host},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(leafLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &ca.leafKey.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("mint a certificate for %s: %w", host, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	if len(ca.leaves) > 1024 {
		clear(ca.leaves) // hosts are few: a flood of names costs a re-mint, not memory
	}
	c := &tls.Certificate{Certificate: [][]byte{der, ca.Cert.Raw}, PrivateKey: ca.leafKey, Leaf: leaf}
	ca.leaves[host] = c
	return c, nil
}
