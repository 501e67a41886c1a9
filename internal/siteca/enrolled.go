package siteca

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/warren-cache/warren/internal/statefile"
)

// Which key each node id was first certified with, kept beside the CA
// (enrolled.json in its directory). The hub token is one secret shared by
// every node of a site: without this record any holder could have the
// hub sign a certificate naming any node and pose as it to the peers. With
// it an id belongs to the key that first enrolled it; another key for
// that id is signed only when the request comes with the node's current
// certificate (a renewal over mutual TLS, which proves the old key). What
// it cannot stop is a token holder claiming an id no node has enrolled
// yet.

// EnrolledFile is the record's name in the CA's directory.
const EnrolledFile = "enrolled.json"

// maxEnrolled bounds the ids recorded: a site's nodes, many times over.
const maxEnrolled = 1 << 16

// ErrOtherKey is a request for a node id that enrolled with another key,
// without that node's current certificate.
var ErrOtherKey = errors.New("this node id is enrolled with another key")

// Enrolled is the record of one CA's directory. Its methods read and write
// the file under a lock (the daemon and warren ca issue may both write
// it), so it is never stale.
type Enrolled struct {
	dir string
	mu  sync.Mutex // serialises this process's writers; the file lock, other processes'
}

// enrolment is one node id's entry.
type enrolment struct {
	Key   string    `json:"key"` // KeyID of its public key
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
}

type enrolledFile struct {
	Version int                  `json:"version"`
	Nodes   map[string]enrolment `json:"nodes"`
}

// OpenEnrolled is the record kept in dir, the CA's directory.
func OpenEnrolled(dir string) *Enrolled { return &Enrolled{dir: dir} }

// Path is the record's file.
func (e *Enrolled) Path() string { return filepath.Join(e.dir, EnrolledFile) }

// KeyID names a public key: the SHA-256 of its SubjectPublicKeyInfo.
func KeyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("read the public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// Bind records that node id holds pub, now. A known id with another key
// is refused (ErrOtherKey) unless replace: its current certificate came
// with the request, or the CA's holder issues it by hand.
func (e *Enrolled) Bind(id string, pub crypto.PublicKey, replace bool, now time.Time) (replaced bool, err error) {
	key, err := KeyID(pub)
	if err != nil {
		return false, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	unlock, err := e.lock()
	if err != nil {
		return false, err
	}
	defer unlock()
	f, err := e.read()
	if err != nil {
		return false, err
	}
	old, known := f.Nodes[id]
	switch {
	case known && old.Key != key && !replace:
		return false, fmt.Errorf("%w (enrolled %s): renew over mutual TLS with the node's current certificate, or with the same key", ErrOtherKey, old.First.UTC().Format(time.DateOnly))
	case !known && len(f.Nodes) >= maxEnrolled:
		return false, fmt.Errorf("%d node ids are enrolled already, the most %s keeps: remove those of retired nodes", len(f.Nodes), e.Path())
	}
	ent := enrolment{Key: key, First: now, Last: now}
	if known && old.Key == key {
		ent.First = old.First
	}
	f.Nodes[id] = ent
	b, err := json.MarshalIndent(f, "", " ")
	if err != nil {
		return false, err
	}
	if err := statefile.Write(e.Path(), b, 0o640); err != nil {
		return false, fmt.Errorf("record node %s's key: %w", id, err)
	}
	return known && old.Key != key, nil
}

// read loads the record; a missing file is an empty one.
func (e *Enrolled) read() (enrolledFile, error) {
	f := enrolledFile{Version: 1, Nodes: map[string]enrolment{}}
	b, err := os.ReadFile(e.Path())
	if errors.Is(err, fs.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return f, fmt.Errorf("read the enrolled nodes: %w", err)
	}
	if err := json.Unmarshal(b, &f); err != nil || f.Version != 1 {
		return f, fmt.Errorf("%s is damaged (%v): the keys nodes enrolled with are lost; move it aside, and every node's next enrolment is taken as its first", e.Path(), err)
	}
	if f.Nodes == nil {
		f.Nodes = map[string]enrolment{}
	}
	return f, nil
}

// lock takes the record's file lock (enrolled.lock), for writers in other
// processes.
func (e *Enrolled) lock() (func(), error) {
	lf, err := os.OpenFile(filepath.Join(e.dir, "enrolled.lock"), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("lock the enrolled nodes: %w", err)
	}
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		lf.Close()
		return nil, fmt.Errorf("lock the enrolled nodes: %w", err)
	}
	return func() { lf.Close() }, nil // closing drops the lock
}

// EnrolNode signs a node's certificate request (DER) for node id, the
// node the request says it is, as SignNodeRequest checks it, and only when
// the request's key is the one id enrolled with, or id is new, or
// current (the certificates the request came with over mutual TLS, leaf
// first) is id's valid certificate from this CA: a renewal with a new key.
// The key is recorded before the certificate is made. replaced says a
// renewal took a new key.
func (ca *CA) EnrolNode(der []byte, id string, current []*x509.Certificate, rec *Enrolled) (cert *x509.Certificate, replaced bool, err error) {
	csr, err := ca.checkNodeRequest(der, id)
	if err != nil {
		return nil, false, err
	}
	renewal := false
	if len(current) > 0 {
		got, err := VerifyNode(current, Pool(ca.Cert), x509.ExtKeyUsageClientAuth, ca.clock())
		renewal = err == nil && got == id
	}
	if replaced, err = rec.Bind(id, csr.PublicKey, renewal, ca.clock()); err != nil {
		return nil, false, err
	}
	cert, err = ca.IssueNode(id, csr.PublicKey, NodeLifetime)
	return cert, replaced, err
}
