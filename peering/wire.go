package peering

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/warren-cache/warren/cachestore"
)

// MsgType says what a datagram is.
type MsgType uint8

const (
	// MsgQuery asks "who has Digest, and is ready to upload it?".
	MsgQuery MsgType = 1 + iota
	// MsgAnswer answers a query: Has, Ready, FreeSlots.
	MsgAnswer
	// MsgWant says the sender wants Digest (Total bytes) and stands for
	// election if it has room (FreeBytes).
	MsgWant
	// MsgDownloading is the elected downloader's heartbeat: Done of Total.
	MsgDownloading
	// MsgHave says the sender now holds a verified copy of Digest.
	MsgHave
	// MsgHello makes a node known to a peer that has not heard of it
	// (static discovery): just the sender block.
	MsgHello
	// MsgBadBlob tells a peer that the bytes of Digest it sent failed
	// verification: it rechecks its copy at once and drops it if bad.
	MsgBadBlob
)

func (t MsgType) String() string {
	switch t {
	case MsgQuery:
		return "query"
	case MsgAnswer:
		return "answer"
	case MsgWant:
		return "want"
	case MsgDownloading:
		return "downloading"
	case MsgHave:
		return "have"
	case MsgHello:
		return "hello"
	case MsgBadBlob:
		return "bad-blob"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// NodeID names a node; stable across restarts (kept in the cache directory).
type NodeID [16]byte

func (id NodeID) String() string { return hex.EncodeToString(id[:]) }

// ParseNodeID reads the hex form.
func ParseNodeID(s string) (NodeID, error) {
	var id NodeID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("node id %q: want %d hex digits", s, 2*len(id))
	}
	copy(id[:], b)
	return id, nil
}

// Message is every datagram: the sender block, then what the type uses.
type Message struct {
	Type MsgType
	// The sender.
	From NodeID
	// To is the node the datagram is for, zero when it goes to many (a
	// broadcast) or to an address whose node is not known yet. Under the
	// group's MAC it binds a datagram to its receiver: one captured on
	// its way to a member is dropped by every other.
	To NodeID
	// Sent is when the sender sent it (milliseconds since the Unix epoch)
	// and Nonce a random number never reused: with a group secret, a
	// datagram outside the replay window or seen before is dropped.
	Sent      int64
	Nonce     uint64
	HTTPPort  uint16 // the sender's blob (and proxy) port; UDP uses the same number
	Priority  int32
	FreeBytes uint64
	Passive   bool
	// What the message is about.
	ReqID  uint32
	Digest cachestore.Digest
	Has    bool
	Ready  bool
	Want   bool // an answer's sender is after the digest itself
	// Relay marks a downloading heartbeat whose sender receives the blob
	// from a LAN peer (rather than from outside the LAN) and passes on
	// what it has: a node that relays itself never takes a relay as its
	// source, so no two nodes can wait on each other.
	Relay bool
	// Prove, on a hello to one node, asks it to echo ReqID and Done (a
	// random challenge) from each address it sends from; Echo marks such
	// an echo (ties.go: how a dual-stack peer's other addresses are tied
	// to it without a group secret).
	Prove     bool
	Echo      bool
	FreeSlots uint8
	Done      int64
	Total     int64 // -1: unknown
}

// ProtocolVersion is the version byte every datagram carries. Version 2
// added the send time and nonce, version 3 the receiver; a node drops
// datagrams of any other version (and older nodes drop ours), so mixed
// groups ignore each other rather than misread each other.
const ProtocolVersion = 3

// MaxDatagram bounds a datagram: one packet on any LAN.
const MaxDatagram = 1200

var magic = [3]byte{'W', 'R', 'N'}

const (
	flagMAC     = 1 << 0
	bitHas      = 1 << 0
	bitReady    = 1 << 1
	bitPassive  = 1 << 2
	bitWant     = 1 << 3
	bitRelay    = 1 << 4
	bitProve    = 1 << 5
	bitEcho     = 1 << 6
	macLen      = sha256.Size
	headerLen   = 3 + 1 + 1 + 1
	algoSHA256  = 1
	algoSHA512  = 2
	algoSHA1    = 3
	fixedFields = 16 + 16 + 8 + 8 + 2 + 4 + 8 + 4 + 1 + 1 + 8 + 8 + 1 // through the digest's algo byte
)

// Errors a decoder returns; a node counts them and drops the datagram.
var (
	ErrShort      = errors.New("datagram too short")
	ErrOversized  = errors.New("datagram too large")
	ErrBadMagic   = errors.New("not a warren datagram")
	ErrVersion    = errors.New("unsupported protocol version")
	ErrBadType    = errors.New("unknown message type")
	ErrBadMAC     = errors.New("message authentication failed")
	ErrBadDigest  = errors.New("malformed digest")
	ErrTrailing   = errors.New("trailing bytes after the message")
	ErrMissingMAC = errors.New("message lacks the group's MAC")
)

var algoCode = map[string]byte{"": 0, "sha256": algoSHA256, "sha512": algoSHA512, "sha1": algoSHA1}
var codeAlgo = map[byte]string{0: "", algoSHA256: "sha256", algoSHA512: "sha512", algoSHA1: "sha1"}
var algoLen = map[byte]int{0: 0, algoSHA256: 32, algoSHA512: 64, algoSHA1: 20}

// Encode writes m as a datagram, with an HMAC-SHA256 over it when secret is set.
func Encode(m Message, secret []byte) ([]byte, error) {
	code, ok := algoCode[m.Digest.Algo]
	if !ok {
		return nil, fmt.Errorf("encode %s: %w: algorithm %q", m.Type, ErrBadDigest, m.Digest.Algo)
	}
	raw, err := hex.DecodeString(m.Digest.Hex)
	if err != nil || len(raw) != algoLen[code] {
		return nil, fmt.Errorf("encode %s: %w: %q", m.Type, ErrBadDigest, m.Digest.Hex)
	}
	var b bytes.Buffer
	b.Write(magic[:])
	b.WriteByte(ProtocolVersion)
	b.WriteByte(byte(m.Type))
	var flags byte
	if len(secret) > 0 {
		flags |= flagMAC
	}
	b.WriteByte(flags)
	b.Write(m.From[:])
	b.Write(m.To[:])
	_ = binary.Write(&b, binary.BigEndian, struct {
		Sent  int64
		Nonce uint64
	}{m.Sent, m.Nonce})
	var bits byte
	if m.Has {
		bits |= bitHas
	}
	if m.Ready {
		bits |= bitReady
	}
	if m.Passive {
		bits |= bitPassive
	}
	if m.Want {
		bits |= bitWant
	}
	if m.Relay {
		bits |= bitRelay
	}
	if m.Prove {
		bits |= bitProve
	}
	if m.Echo {
		bits |= bitEcho
	}
	_ = binary.Write(&b, binary.BigEndian, struct {
		HTTPPort  uint16
		Priority  int32
		FreeBytes uint64
		ReqID     uint32
		Bits      byte
		FreeSlots uint8
		Done      int64
		Total     int64
		Algo      byte
	}{m.HTTPPort, m.Priority, m.FreeBytes, m.ReqID, bits, m.FreeSlots, m.Done, m.Total, code})
	b.Write(raw)
	if len(secret) > 0 {
		mac := hmac.New(sha256.New, secret)
		mac.Write(b.Bytes())
		b.Write(mac.Sum(nil))
	}
	return b.Bytes(), nil
}

// Decode reads a datagram. With secret set, a message without a valid MAC
// is refused; without it, a MAC is ignored (it cannot be checked).
func Decode(p []byte, secret []byte) (Message, error) {
	var m Message
	if len(p) > MaxDatagram {
		return m, fmt.Errorf("%w: %d bytes", ErrOversized, len(p))
	}
	if len(p) < headerLen+fixedFields {
		return m, fmt.Errorf("%w: %d bytes", ErrShort, len(p))
	}
	if !bytes.Equal(p[:3], magic[:]) {
		return m, ErrBadMagic
	}
	if p[3] != ProtocolVersion {
		return m, fmt.Errorf("%w: %d", ErrVersion, p[3])
	}
	m.Type = MsgType(p[4])
	if m.Type < MsgQuery || m.Type > MsgBadBlob {
		return m, fmt.Errorf("%w: %d", ErrBadType, p[4])
	}
	flags := p[5]
	body := p
	if flags&flagMAC != 0 {
		if len(p) < headerLen+fixedFields+macLen {
			return m, fmt.Errorf("%w: no room for the MAC", ErrShort)
		}
		body = p[:len(p)-macLen]
		if len(secret) > 0 {
			mac := hmac.New(sha256.New, secret)
			mac.Write(body)
			if !hmac.Equal(mac.Sum(nil), p[len(p)-macLen:]) {
				return m, ErrBadMAC
			}
		}
	} else if len(secret) > 0 {
		return m, ErrMissingMAC
	}
	r := body[headerLen:]
	copy(m.From[:], r[:16])
	copy(m.To[:], r[16:32])
	r = r[32:]
	m.Sent = int64(binary.BigEndian.Uint64(r))
	m.Nonce = binary.BigEndian.Uint64(r[8:])
	r = r[16:]
	m.HTTPPort = binary.BigEndian.Uint16(r)
	m.Priority = int32(binary.BigEndian.Uint32(r[2:]))
	m.FreeBytes = binary.BigEndian.Uint64(r[6:])
	m.ReqID = binary.BigEndian.Uint32(r[14:])
	bits := r[18]
	m.Has, m.Ready, m.Passive, m.Want = bits&bitHas != 0, bits&bitReady != 0, bits&bitPassive != 0, bits&bitWant != 0
	m.Relay, m.Prove, m.Echo = bits&bitRelay != 0, bits&bitProve != 0, bits&bitEcho != 0
	m.FreeSlots = r[19]
	m.Done = int64(binary.BigEndian.Uint64(r[20:]))
	m.Total = int64(binary.BigEndian.Uint64(r[28:]))
	code := r[36]
	n, ok := algoLen[code]
	if !ok {
		return m, fmt.Errorf("%w: algorithm code %d", ErrBadDigest, code)
	}
	r = r[37:]
	if len(r) < n {
		return m, fmt.Errorf("%w: digest cut short", ErrShort)
	}
	if len(r) > n {
		return m, ErrTrailing
	}
	if n > 0 {
		m.Digest = cachestore.Digest{Algo: codeAlgo[code], Hex: hex.EncodeToString(r[:n])}
	}
	if m.Type != MsgHello && m.Digest.IsZero() {
		return m, fmt.Errorf("%w: a %s must name a digest", ErrBadDigest, m.Type)
	}
	if m.Done < 0 || m.Total < -1 {
		return m, fmt.Errorf("%w: negative progress", ErrBadType)
	}
	return m, nil
}
