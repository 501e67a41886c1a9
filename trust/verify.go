package trust

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// Signed is a file whose signature verified.
type Signed struct {
	// Signer is the fingerprint of the key that signed it (a subkey's,
	// when a subkey signed), Primary that of its primary key (the same
	// when the primary key signed).
	Signer, Primary string
	// Text is what the signature covers: an InRelease's signed text
	// (what to read, nothing around it), a detached signature's file.
	Text []byte
}

// Errors say why a file failed, for the log and the page.
var (
	// ErrNoKey: the repository's keys could not be read.
	ErrNoKey = errors.New("the repository's keys cannot be read")
	// ErrNotSigned: no signature where one must be.
	ErrNotSigned = errors.New("not signed")
	// ErrUnknownSigner: signed, but by no key trusted for the repository.
	ErrUnknownSigner = errors.New("signed by a key not trusted for this repository")
	// ErrBadSignature: the signature does not match the bytes, or its key
	// is expired or revoked.
	ErrBadSignature = errors.New("bad signature")
)

// maxSignedBytes bounds a signed file: Ubuntu's largest InRelease is
// about 250 KB.
const maxSignedBytes = 32 << 20

// CheckInline verifies a clearsigned file (an InRelease) at time now. The
// file must be the signed message alone (what apt accepts): nothing but
// white space before or after it.
func (r *Repo) CheckInline(data []byte, now time.Time) (*Signed, error) {
	if r.problem != "" {
		return nil, fmt.Errorf("%w (%s)", ErrNoKey, r.problem)
	}
	if len(data) > maxSignedBytes {
		return nil, fmt.Errorf("%w: %d bytes is more than a signed file can be", ErrNotSigned, len(data))
	}
	text, sig, err := SplitInline(data)
	if err != nil {
		return nil, err
	}
	signer, err := r.check(bytes.NewReader(text.Bytes), sig, now)
	if err != nil {
		return nil, err
	}
	// The last line's end belongs to the signature's framing: the text
	// is given back as a file of whole lines, as apt writes it out.
	plain := text.Plaintext
	if len(plain) > 0 && plain[len(plain)-1] != '\n' {
		plain = append(plain[:len(plain):len(plain)], '\n')
	}
	signer.Text = plain
	return signer, nil
}

// clearBlock is a clearsigned message's parts.
type clearBlock struct {
	Plaintext []byte // the text, as written
	Bytes     []byte // what the signature covers (canonical line ends)
}

// SplitInline takes a clearsigned file apart, unverified: the text and
// the signature (armored). Data before or after the message is refused.
func SplitInline(data []byte) (clearBlock, []byte, error) {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if !bytes.HasPrefix(trimmed, []byte("-----BEGIN PGP SIGNED MESSAGE-----")) {
		return clearBlock{}, nil, fmt.Errorf("%w: it is not a clearsigned message", ErrNotSigned)
	}
	b, rest := decodeClearsigned(trimmed)
	if b == nil {
		return clearBlock{}, nil, fmt.Errorf("%w: its clearsigned message is malformed", ErrNotSigned)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return clearBlock{}, nil, fmt.Errorf("%w: %d bytes follow the signed message (apt refuses that too)", ErrBadSignature, len(bytes.TrimSpace(rest)))
	}
	return clearBlock{Plaintext: b.Plaintext, Bytes: b.Bytes}, b.sig, nil
}

// CheckDetached verifies data against a detached signature (Release.gpg,
// repomd.xml.asc; armored or binary) at time now.
func (r *Repo) CheckDetached(data, sig []byte, now time.Time) (*Signed, error) {
	if r.problem != "" {
		return nil, fmt.Errorf("%w (%s)", ErrNoKey, r.problem)
	}
	if len(sig) == 0 {
		return nil, fmt.Errorf("%w: the signature file is empty", ErrNotSigned)
	}
	body := sig
	if bytes.Contains(sig[:min(len(sig), 64)], []byte("-----BEGIN PGP")) {
		blk, err := armor.Decode(bytes.NewReader(sig))
		if err != nil {
			return nil, fmt.Errorf("%w: its armor: %v", ErrNotSigned, err)
		}
		if blk.Type != openpgp.SignatureType {
			return nil, fmt.Errorf("%w: it holds a %s, not a signature", ErrNotSigned, blk.Type)
		}
		if body, err = io.ReadAll(io.LimitReader(blk.Body, maxSignedBytes)); err != nil {
			return nil, fmt.Errorf("%w: its armor: %v", ErrNotSigned, err)
		}
	}
	signer, err := r.check(bytes.NewReader(data), body, now)
	if err != nil {
		return nil, err
	}
	signer.Text = data
	return signer, nil
}

// check verifies signed against the binary signature packets sig with
// the keys the repository's sources trust to sign, and says which key
// signed.
func (r *Repo) check(signed io.Reader, sig []byte, now time.Time) (*Signed, error) {
	cfg := &packet.Config{Time: func() time.Time { return now }}
	ring := signingKeys(r.sets)
	s, e, err := openpgp.VerifyDetachedSignature(ring, signed, bytes.NewReader(sig), cfg)
	switch {
	case err == nil:
		return &Signed{Signer: ring.signer(s, e), Primary: keyFingerprint(e.PrimaryKey)}, nil
	case errors.Is(err, pgperrors.ErrUnknownIssuer):
		return nil, fmt.Errorf("%w: signed by %s", ErrUnknownSigner, issuers(sig))
	}
	return nil, fmt.Errorf("%w: %v", ErrBadSignature, err)
}

// signingKeys is the keys of sets that may sign, as the OpenPGP library
// looks them up: a key a Signed-By fingerprint leaves out is not found,
// as if its keyring did not hold it.
type signingKeys []keySet

func (k signingKeys) KeysById(id uint64) []openpgp.Key {
	return k.allowed(func(ring openpgp.EntityList) []openpgp.Key { return ring.KeysById(id) })
}

func (k signingKeys) KeysByIdUsage(id uint64, usage byte) []openpgp.Key {
	return k.allowed(func(ring openpgp.EntityList) []openpgp.Key { return ring.KeysByIdUsage(id, usage) })
}

// DecryptionKeys: none (nothing is decrypted).
func (k signingKeys) DecryptionKeys() []openpgp.Key { return nil }

func (k signingKeys) allowed(find func(openpgp.EntityList) []openpgp.Key) []openpgp.Key {
	var out []openpgp.Key
	for _, set := range k {
		for _, key := range find(set.ring) {
			if set.only == nil || set.only[keyFingerprint(key.PublicKey)] {
				out = append(out, key)
			}
		}
	}
	return out
}

// signer is the fingerprint of the key of e that made s: the one the
// library verified it with (the first of its issuer's keys it may use).
func (k signingKeys) signer(s *packet.Signature, e *openpgp.Entity) string {
	if s != nil && s.IssuerKeyId != nil {
		for _, key := range k.KeysByIdUsage(*s.IssuerKeyId, packet.KeyFlagSign) {
			fp := keyFingerprint(key.PublicKey)
			if key.Entity == e && (len(s.IssuerFingerprint) == 0 || fp == strings.ToUpper(hex.EncodeToString(s.IssuerFingerprint))) {
				return fp
			}
		}
	}
	return keyFingerprint(e.PrimaryKey)
}

// issuers names the keys a signature says made it (for the log).
func issuers(sig []byte) string {
	var ids []string
	pr := packet.NewReader(bytes.NewReader(sig))
	for len(ids) < 8 {
		p, err := pr.Next()
		if err != nil {
			break
		}
		s, ok := p.(*packet.Signature)
		if !ok {
			continue
		}
		switch {
		case len(s.IssuerFingerprint) > 0:
			ids = append(ids, strings.ToUpper(hex.EncodeToString(s.IssuerFingerprint)))
		case s.IssuerKeyId != nil:
			ids = append(ids, fmt.Sprintf("%016X", *s.IssuerKeyId))
		}
	}
	if len(ids) == 0 {
		return "no key it names"
	}
	return "key " + strings.Join(ids, ", ")
}

// decoded is a clearsigned message taken apart.
type decoded struct {
	Plaintext, Bytes []byte
	sig              []byte // the signature packets, unarmored
}

func decodeClearsigned(data []byte) (*decoded, []byte) {
	b, rest := clearsign.Decode(data)
	if b == nil {
		return nil, rest
	}
	sig, err := io.ReadAll(io.LimitReader(b.ArmoredSignature.Body, maxSignedBytes))
	if err != nil {
		return nil, rest
	}
	return &decoded{Plaintext: b.Plaintext, Bytes: b.Bytes, sig: sig}, rest
}
