package peering

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/warren-cache/warren/cachestore"
)

// serveDual serves h on one port of both loopbacks ([::]:port, 127.0.0.1
// and ::1 alike).
func serveDual(t *testing.T, h http.Handler) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "[::]:0")
	if err != nil {
		t.Fatalf("a dual-stack socket: %v", err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// A dual-stack node ([::]:port) serves a node that knows it over IPv4
// and one that knows it over IPv6: each finds it, asks it and takes the
// blob over its own family.
func TestDualStackNode(t *testing.T) {
	body := bytes.Repeat([]byte("dual stack "), 4000)
	store, d := testBlob(t, body)
	bs := NewBlobServer(store, BlobConfig{Slots: 2})
	port := serveDual(t, bs)
	dual := testNode(t, Config{ID: NodeID{1}, Port: port, Priority: 100, Blobs: bs, ListenUDP: netip.AddrPortFrom(netip.IPv6Unspecified(), port),
		Has: func(x cachestore.Digest) bool { return x == d }})
	if got := dual.Addr(); !got.Addr().IsUnspecified() || got.Addr().Is4() {
		t.Fatalf("a node told [::] is bound at %s", got)
	}
	v4 := testNode(t, Config{ID: NodeID{4}, Static: []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)}})
	v6 := testNode(t, Config{ID: NodeID{6}, ListenUDP: netip.MustParseAddrPort("[::1]:0"),
		Static: []netip.AddrPort{netip.AddrPortFrom(netip.IPv6Loopback(), port)}})
	for _, tc := range []struct {
		name string
		n    *Node
		want netip.Addr
	}{{"IPv4", v4, netip.MustParseAddr("127.0.0.1")}, {"IPv6", v6, netip.IPv6Loopback()}} {
		t.Run(tc.name, func(t *testing.T) {
			waitPeers(t, tc.n, 1)
			if p, _ := tc.n.Table().Get(NodeID{1}); p.Addr != tc.want {
				t.Fatalf("the dual-stack peer is known at %s, want %s", p.Addr, tc.want)
			}
			var buf bytes.Buffer
			src, err := fetch(t, tc.n, d, int64(len(body)), 0, &buf, func() int64 { return 0 })
			if err != nil || !bytes.Equal(buf.Bytes(), body) || len(src) != 1 {
				t.Fatalf("fetch: %v, %d bytes, sources %v", err, buf.Len(), src)
			}
		})
	}
	waitPeers(t, dual, 2)
}

// A host known at one address is reached the other way over the other
// family or the other IPv6 scope; another address of the same family and
// scope is another host.
func TestOtherWay(t *testing.T) {
	for _, tc := range []struct {
		known, from string
		other       bool
	}{
		{"10.0.0.5", "fd00:77::5", true},
		{"10.0.0.5", "fe80::5%eth0", true},
		{"fd00:77::5", "10.0.0.5", true},
		{"fd00:77::5", "fe80::5%eth0", true},
		{"fe80::5%eth0", "fd00:77::5", true},
		{"10.0.0.5", "10.0.0.6", false},
		{"fd00:77::5", "fd00:77::6", false},
		{"fe80::5%eth0", "fe80::6%eth0", false},
	} {
		if got := otherWay(netip.MustParseAddr(tc.known), netip.MustParseAddr(tc.from)); got != tc.other {
			t.Errorf("known at %s, heard from %s: the other way %v, want %v", tc.known, tc.from, got, tc.other)
		}
	}
}

// A link-local peer's blob URL names its interface, escaped.
func TestBlobURL(t *testing.T) {
	d := cachestore.Digest{Algo: "sha256", Hex: "ab"}
	for ap, want := range map[string]string{
		"10.0.0.5:3142":        "http://10.0.0.5:3142/v1/blobs/sha256/ab",
		"[fd00:77::5]:3142":    "http://[fd00:77::5]:3142/v1/blobs/sha256/ab",
		"[fe80::5%eth0]:3142":  "http://[fe80::5%25eth0]:3142/v1/blobs/sha256/ab",
		"[::ffff:10.0.0.5]:80": "http://[::ffff:10.0.0.5]:80/v1/blobs/sha256/ab",
	} {
		if got := blobURL("http", netip.MustParseAddrPort(ap), d); got != want {
			t.Errorf("%s: %s, want %s", ap, got, want)
		}
		if _, err := http.NewRequest(http.MethodGet, want, nil); err != nil {
			t.Errorf("%s: %v", want, err)
		}
	}
}
