package cachestore

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
)

// A learnt fact is stored in a compact binary form: a whole Debian release
// is some 70,000 of them, and the index's size is memory (Badger maps its
// tables) and disk. Facts written as JSON by earlier versions still read.
//
//	byte 0      knownV1
//	byte 1      algorithm (1 sha256, 2 sha512, 3 sha1)
//	digest      its raw bytes (32, 64 or 20)
//	uvarint     size + 1 (0: unknown)
//	uvarint, s  Name
//	uvarint, s  Source
//	uvarint     Lister  (knownV2)
//	uvarint     Learnt  (knownV2)
//	uvarint     Depth   (knownV3)
const (
	knownV1 = 1
	knownV2 = 2
	knownV3 = 3
)

var knownAlgos = []string{"", "sha256", "sha512", "sha1"}

func encodeKnown(k Known) ([]byte, error) {
	code := 0
	for i, a := range knownAlgos {
		if a != "" && a == k.Digest.Algo {
			code = i
		}
	}
	raw, err := hex.DecodeString(k.Digest.Hex)
	if code == 0 || err != nil {
		return nil, fmt.Errorf("encode hash %s: %w", k.Digest, errors.Join(err, k.Digest.Validate()))
	}
	b := make([]byte, 0, 2+len(raw)+binary.MaxVarintLen64+2+len(k.Name)+len(k.Source))
	b = append(b, knownV3, byte(code))
	b = append(b, raw...)
	b = binary.AppendUvarint(b, uint64(max(k.Size+1, 0)))
	b = binary.AppendUvarint(b, uint64(len(k.Name)))
	b = append(b, k.Name...)
	b = binary.AppendUvarint(b, uint64(len(k.Source)))
	b = append(b, k.Source...)
	b = binary.AppendUvarint(b, k.Lister)
	b = binary.AppendUvarint(b, uint64(max(k.Learnt, 0)))
	return binary.AppendUvarint(b, uint64(max(k.Depth, 0))), nil
}

var errBadKnown = errors.New("malformed hash record")

func decodeKnown(b []byte, k *Known) error {
	if len(b) > 0 && b[0] == '{' {
		return json.Unmarshal(b, k)
	}
	if len(b) < 2 || b[0] < knownV1 || b[0] > knownV3 || int(b[1]) >= len(knownAlgos) || b[1] == 0 {
		return errBadKnown
	}
	version := b[0]
	algo := knownAlgos[b[1]]
	n := hexLen[algo] / 2
	b = b[2:]
	if len(b) < n {
		return errBadKnown
	}
	k.Digest = Digest{Algo: algo, Hex: hex.EncodeToString(b[:n])}
	b = b[n:]
	size, m := binary.Uvarint(b)
	if m <= 0 || size > 1<<62 { // beyond int64 once shifted back by one
		return errBadKnown
	}
	k.Size = int64(size) - 1
	b = b[m:]
	var err error
	if k.Name, b, err = knownString(b); err != nil {
		return err
	}
	if k.Source, b, err = knownString(b); err != nil {
		return err
	}
	k.Lister, k.Learnt, k.Depth = 0, 0, 0
	if version >= knownV2 {
		lister, m := binary.Uvarint(b)
		if m <= 0 {
			return errBadKnown
		}
		learnt, m2 := binary.Uvarint(b[m:])
		if m2 <= 0 || learnt > 1<<62 {
			return errBadKnown
		}
		k.Lister, k.Learnt, b = lister, int64(learnt), b[m+m2:]
	}
	if version >= knownV3 {
		depth, m := binary.Uvarint(b)
		if m <= 0 || depth > 1<<20 {
			return errBadKnown
		}
		k.Depth, b = int(depth), b[m:]
	}
	if len(b) != 0 {
		return errBadKnown
	}
	return nil
}

func knownString(b []byte) (string, []byte, error) {
	l, m := binary.Uvarint(b)
	if m <= 0 || uint64(len(b)-m) < l {
		return "", nil, errBadKnown
	}
	return string(b[m : m+int(l)]), b[m+int(l):], nil
}

// ListerID names a metadata file (by its index key) for Known.Lister.
func ListerID(key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	return max(h.Sum64(), 1) // 0 means "unknown"
}
