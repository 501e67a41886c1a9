package peering

import (
	"errors"
	"strings"
	"testing"

	"github.com/warren-cache/warren/cachestore"
)

var testDigest = cachestore.Digest{Algo: "sha256", Hex: strings.Repeat("ab", 32)}

func TestWireRoundTrip(t *testing.T) {
	from := NodeID{1, 2, 3}
	tests := []Message{
		{Type: MsgQuery, From: from, Sent: 1764590000123, Nonce: 0xfeedface12345678, HTTPPort: 3142, Priority: 100, ReqID: 7, Digest: testDigest},
		{Type: MsgAnswer, From: from, HTTPPort: 3142, Priority: -5, ReqID: 7, Digest: testDigest, Has: true, Ready: true, FreeSlots: 2},
		{Type: MsgWant, From: from, HTTPPort: 1, FreeBytes: 1 << 40, Digest: cachestore.Digest{Algo: "sha512", Hex: strings.Repeat("cd", 64)}, Total: 20 << 20},
		{Type: MsgDownloading, From: from, Digest: cachestore.Digest{Algo: "sha1", Hex: strings.Repeat("ef", 20)}, Done: 5, Total: -1},
		{Type: MsgHave, From: from, Digest: testDigest, Passive: true},
		{Type: MsgHello, From: from, HTTPPort: 3142, Priority: 100},
		{Type: MsgHello, From: from, To: NodeID{9}, Prove: true, ReqID: 0xdeadbeef, Done: 1 << 62},
		{Type: MsgHello, From: from, Echo: true, ReqID: 0xdeadbeef, Done: 1 << 62},
	}
	for _, secret := range [][]byte{nil, []byte("s3cret")} {
		for _, m := range tests {
			b, err := Encode(m, secret)
			if err != nil {
				t.Fatalf("encode %v: %v", m.Type, err)
			}
			if len(b) > MaxDatagram {
				t.Fatalf("%v: %d bytes", m.Type, len(b))
			}
			got, err := Decode(b, secret)
			if err != nil {
				t.Fatalf("decode %v: %v", m.Type, err)
			}
			if got != m {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, m)
			}
		}
	}
}

func TestWireRejects(t *testing.T) {
	good, _ := Encode(Message{Type: MsgQuery, Digest: testDigest}, nil)
	signed, _ := Encode(Message{Type: MsgQuery, Digest: testDigest}, []byte("a"))
	mutate := func(b []byte, i int, v byte) []byte {
		c := append([]byte(nil), b...)
		c[i] = v
		return c
	}
	tests := []struct {
		name   string
		in     []byte
		secret []byte
		want   error
	}{
		{"empty", nil, nil, ErrShort},
		{"garbage", []byte("GET / HTTP/1.1\r\n\r\n" + strings.Repeat("x", 100)), nil, ErrBadMagic},
		{"protocol v1", mutate(good, 3, 1), nil, ErrVersion},
		{"oversized", make([]byte, MaxDatagram+1), nil, ErrOversized},
		{"future version", mutate(good, 3, 9), nil, ErrVersion},
		{"unknown type", mutate(good, 4, 99), nil, ErrBadType},
		{"cut digest", good[:len(good)-1], nil, ErrShort},
		{"trailing", append(append([]byte(nil), good...), 0), nil, ErrTrailing},
		{"bad algo", mutate(good, headerLen+fixedFields-1, 9), nil, ErrBadDigest},
		{"unsigned in a group", good, []byte("a"), ErrMissingMAC},
		{"wrong secret", signed, []byte("b"), ErrBadMAC},
		{"tampered", mutate(signed, headerLen+20, 0xff), []byte("a"), ErrBadMAC},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Decode(tt.in, tt.secret); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	for _, m := range []Message{
		{Type: MsgQuery, Digest: testDigest},
		{Type: MsgHello},
		{Type: MsgDownloading, Digest: testDigest, Done: 1, Total: 2},
	} {
		b, _ := Encode(m, nil)
		f.Add(b, false)
		b, _ = Encode(m, []byte("k"))
		f.Add(b, true)
	}
	f.Fuzz(func(t *testing.T, p []byte, signed bool) {
		var secret []byte
		if signed {
			secret = []byte("k")
		}
		m, err := Decode(p, secret)
		if err != nil {
			return
		}
		// Whatever decodes must encode back to a datagram that decodes the same.
		b, err := Encode(m, secret)
		if err != nil {
			t.Fatalf("decoded %+v but cannot encode it: %v", m, err)
		}
		m2, err := Decode(b, secret)
		if err != nil || m2 != m {
			t.Fatalf("re-decode: %+v, %v", m2, err)
		}
	})
}
