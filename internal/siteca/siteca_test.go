package siteca

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSiteCA(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir); err != ErrNoCA {
		t.Fatalf("an empty directory: %v, want ErrNoCA", err)
	}
	if _, err := Init(dir, nil, time.Now()); err == nil {
		t.Fatal("a CA for no host")
	}
	if _, err := Init(dir, []string{"10.0.0.1"}, time.Now()); err == nil || !strings.Contains(err.Error(), "IP address") {
		t.Fatalf("a CA for an IP address: %v", err)
	}
	ca, err := Init(dir, []string{"Repo.Example", "download.docker.com"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, KeyFile)); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %o, want 600", fi.Mode().Perm())
	}
	// Written like blobs (internal/statefile): a write that fails leaves
	// no temp file beside the CA's files.
	bad := t.TempDir()
	os.Mkdir(filepath.Join(bad, CertFile), 0o755)
	if _, err := Init(bad, []string{"repo.example"}, time.Now()); err == nil {
		t.Fatal("Init wrote over a directory")
	}
	if ents, _ := os.ReadDir(bad); len(ents) != 2 {
		t.Fatalf("a failed Init left %d files, want the key and the directory in the certificate's place", len(ents))
	}
	if got := strings.Join(ca.Hosts(), ","); got != "download.docker.com,repo.example" {
		t.Fatalf("hosts %s", got)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	leaf, err := ca.Leaf("repo.example")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: "repo.example", Roots: roots}); err != nil {
		t.Fatalf("a leaf for a permitted host does not verify: %v", err)
	}
	if again, _ := ca.Leaf("REPO.example"); again != leaf {
		t.Fatal("a leaf is not kept while it is fresh")
	}
	if _, err := ca.Leaf("evil.example"); err == nil {
		t.Fatal("minted a leaf for a host the CA does not permit")
	}
	// The constraint is in the certificate: a leaf signed with the key for
	// another name, or an IP address, does not verify.
	for _, forged := range []*x509.Certificate{
		{DNSNames: []string{"bank.example"}},
		{DNSNames: []string{"repo.example.evil"}},
		{IPAddresses: []net.IP{net.ParseIP("192.0.2.7")}},
	} {
		forged.SerialNumber = big.NewInt(7)
		forged.Subject = pkix.Name{CommonName: "forged"}
		forged.NotBefore, forged.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
		forged.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		der, err := x509.CreateCertificate(rand.Reader, forged, ca.Cert, &ca.leafKey.PublicKey, ca.key)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		name := "bank.example"
		switch {
		case len(forged.IPAddresses) > 0:
			name = "192.0.2.7"
		case forged.DNSNames[0] != name:
			name = forged.DNSNames[0]
		}
		if _, err := c.Verify(x509.VerifyOptions{DNSName: name, Roots: roots}); err == nil {
			t.Fatalf("a certificate for %s signed with the site CA's key verified", name)
		}
	}
	// Export and install elsewhere: the same CA.
	pemBoth, err := ca.Export()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "site-ca.pem")
	os.WriteFile(file, pemBoth, 0o600)
	other, err := Install(filepath.Join(t.TempDir(), "ca"), file)
	if err != nil || other.Fingerprint() != ca.Fingerprint() {
		t.Fatalf("installed: %v, fingerprint %s want %s", err, other.Fingerprint(), ca.Fingerprint())
	}
	if c, err := Install(t.TempDir(), filepath.Join(dir, CertFile)); err != nil || c.HasKey() {
		t.Fatalf("the certificate alone: %v (TestInstallCertificateAlone has the rest)", err)
	}
	os.Chmod(filepath.Join(dir, KeyFile), 0o644)
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a key readable by others: %v", err)
	}
}
