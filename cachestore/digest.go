package cachestore

import (
	"crypto/sha1" //nolint:gosec // sha1 is what some RPM repositories still name their packages by
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
	"strings"
)

// Digest names a blob: the algorithm its metadata uses and the lowercase hex
// of the hash.
type Digest struct {
	Algo string // "sha256", "sha512" or "sha1"
	Hex  string
}

var hexLen = map[string]int{"sha256": 64, "sha512": 128, "sha1": 40}

// ParseDigest reads "algo:hex".
func ParseDigest(s string) (Digest, error) {
	algo, h, ok := strings.Cut(s, ":")
	if !ok {
		return Digest{}, fmt.Errorf("digest %q: want <algo>:<hex> (for example sha256:<64 hex digits>)", s)
	}
	d := Digest{Algo: strings.ToLower(algo), Hex: strings.ToLower(h)}
	return d, d.Validate()
}

// Validate says whether d is well formed and of a supported algorithm.
func (d Digest) Validate() error {
	n, ok := hexLen[d.Algo]
	if !ok {
		return fmt.Errorf("digest algorithm %q is not supported (sha256, sha512, sha1)", d.Algo)
	}
	if len(d.Hex) != n {
		return fmt.Errorf("%s digest must be %d hex digits, got %d", d.Algo, n, len(d.Hex))
	}
	if _, err := hex.DecodeString(d.Hex); err != nil || strings.ToLower(d.Hex) != d.Hex {
		return fmt.Errorf("%s digest %q is not lowercase hex", d.Algo, d.Hex)
	}
	return nil
}

func (d Digest) String() string { return d.Algo + ":" + d.Hex }

// IsZero reports whether d names nothing.
func (d Digest) IsZero() bool { return d.Algo == "" && d.Hex == "" }

// NewHash returns a fresh hash for d's algorithm.
func (d Digest) NewHash() hash.Hash { return newHash(d.Algo) }

func newHash(algo string) hash.Hash {
	switch algo {
	case "sha512":
		return sha512.New()
	case "sha1":
		return sha1.New() //nolint:gosec // see import
	default:
		return sha256.New()
	}
}
