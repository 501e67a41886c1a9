package peering

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/internal/siteca"
)

// nodeCert is a node certificate for id from ca.
func nodeCert(t *testing.T, ca *siteca.CA, id NodeID) *tls.Certificate {
	t.Helper()
	key, _ := siteca.NewKey()
	c, err := ca.IssueNode(id.String(), &key.PublicKey, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{c.Raw, ca.Cert.Raw}, PrivateKey: key, Leaf: c}
}

// Blob transfers between peers over mutual TLS: a peer with a node
// certificate from the site CA gets the blob; one with none, or with
// another CA's, gets nothing and the server hears of it; a plain request
// is refused; a peer presenting another node's certificate is not taken
// for the node asked.
func TestPeerTLS(t *testing.T) {
	ca, err := siteca.Init(t.TempDir(), []string{"repo.example"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	other, _ := siteca.Init(t.TempDir(), []string{"repo.example"}, time.Now())
	body := bytes.Repeat([]byte("mutual tls "), 5000)
	store, d := testBlob(t, body)
	bs := NewBlobServer(store, BlobConfig{Slots: 2, RequireTLS: true})
	server := NodeID{1}
	var mu sync.Mutex
	var refused []string
	serverCert := nodeCert(t, ca, server)
	srvTLS := TLSConfig{Cert: func() *tls.Certificate { return serverCert }, Roots: siteca.Pool(ca.Cert),
		Refused: func(remote string, err error) {
			mu.Lock()
			defer mu.Unlock()
			refused = append(refused, remote+": "+err.Error())
		}}
	srv := httptest.NewUnstartedServer(bs)
	srv.TLS = srvTLS.ServerConfig()
	srv.StartTLS()
	defer srv.Close()
	port := uint16(srv.Listener.Addr().(*net.TCPAddr).Port)
	p := testNode(t, Config{ID: server, Port: port, Priority: 100, Blobs: bs, Has: func(x cachestore.Digest) bool { return x == d },
		TLS: TLSConfig{Cert: srvTLS.Cert, Roots: siteca.Pool(ca.Cert)}.ClientConfig()})

	bothCAs := siteca.Pool(ca.Cert)
	bothCAs.AddCert(other.Cert)
	client := func(id NodeID, cert *tls.Certificate, roots *x509.CertPool) *Node {
		return testNode(t, Config{ID: id, Static: []netip.AddrPort{p.Addr()},
			TLS: TLSConfig{Cert: func() *tls.Certificate { return cert }, Roots: roots}.ClientConfig()})
	}
	for _, tc := range []struct {
		name string
		n    *Node
		want string // "" for the blob, else the peer's TLS state
	}{
		{"a member", client(NodeID{2}, nodeCert(t, ca, NodeID{2}), siteca.Pool(ca.Cert)), ""},
		{"no certificate", client(NodeID{3}, nil, siteca.Pool(ca.Cert)), "the peer refused this node's certificate"},
		// It trusts the site's CA too (so the server is the one to refuse).
		{"another CA's", client(NodeID{4}, nodeCert(t, other, NodeID{4}), bothCAs), "the peer refused this node's certificate"},
		{"a server from another CA", client(NodeID{6}, nodeCert(t, other, NodeID{6}), siteca.Pool(other.Cert)), "the peer's certificate: the certificate for warren://node/" + server.String() + " is not from this site's CA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			waitPeers(t, tc.n, 1)
			var buf bytes.Buffer
			_, err := fetch(t, tc.n, d, int64(len(body)), 0, &buf, func() int64 { return 0 })
			tc.n.Done(d, err == nil)
			st, ok := tc.n.PeerTLS(server)
			if tc.want == "" {
				if err != nil || !bytes.Equal(buf.Bytes(), body) || !ok || !st.OK || st.String() != "mutual TLS" {
					t.Fatalf("a member: %v, %d bytes, TLS state %+v", err, buf.Len(), st)
				}
				return
			}
			if err == nil || buf.Len() > 0 {
				t.Fatalf("got %d bytes over TLS with %s", buf.Len(), tc.name)
			}
			if !ok || st.OK || !strings.Contains(st.String(), tc.want) {
				t.Fatalf("TLS state %+v, want %q", st, tc.want)
			}
		})
	}
	mu.Lock()
	got := strings.Join(refused, "\n")
	mu.Unlock()
	if !strings.Contains(got, "no certificate") || !strings.Contains(got, "not from this site's CA") || !strings.Contains(got, "127.0.0.1:") {
		t.Fatalf("the server heard of these refusals:\n%s", got)
	}

	// A plain request, however it reaches the blob server, gets nothing.
	plain := httptest.NewServer(bs)
	defer plain.Close()
	resp, err := http.Get(plain.URL + BlobPathPrefix + d.Algo + "/" + d.Hex)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(b), "mutual TLS only") {
		t.Fatalf("a plain request: %d %s", resp.StatusCode, b)
	}
	closeIdle(t)

	// A member whose table says another node is at that address: it does
	// not take the blob from whoever answers there.
	impostorView := testNode(t, Config{ID: NodeID{5}, TLS: TLSConfig{Cert: func() *tls.Certificate { return nodeCert(t, ca, NodeID{5}) }, Roots: siteca.Pool(ca.Cert)}.ClientConfig()})
	impostorView.Table().Seen(Peer{ID: NodeID{9}, Addr: netip.MustParseAddr("127.0.0.1"), Port: port, Priority: 100})
	req, _ := http.NewRequest(http.MethodGet, impostorView.blobURL(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port), d), nil)
	if _, _, err := impostorView.getBlob(req, NodeID{9}, 0); err == nil || !strings.Contains(err.Error(), "presented node "+server.String()+"'s certificate, not node "+NodeID{9}.String()) {
		t.Fatalf("a peer with another node's certificate: %v", err)
	}
}

// A peer that takes no TLS handshake is shown as what it is, not left
// blank: one with peer_tls off (a plain-http answer, which net/http
// reports as ErrSchemeMismatch), one whose listener turns this node away
// before any request (a TLS alert, or the connection closed in the
// handshake).
func TestPeerTLSStateWithoutAHandshake(t *testing.T) {
	ca, err := siteca.Init(t.TempDir(), []string{"repo.example"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	store, d := testBlob(t, bytes.Repeat([]byte("x"), 1000))
	plain := httptest.NewServer(NewBlobServer(store, BlobConfig{Slots: 2}))
	defer plain.Close()
	// refusing is a listener that reads the ClientHello's first byte, then
	// sends answer (nothing: a plain close) and closes.
	refusing := func(answer []byte) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Read(make([]byte, 1))
				c.Write(answer)
				c.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, c)
				c.Close()
			}
		}()
		return ln.Addr().String()
	}
	cert := nodeCert(t, ca, NodeID{5})
	for _, tc := range []struct {
		name, addr, want string
	}{
		{"peer_tls off there", plain.Listener.Addr().String(), "refused: the peer does not speak TLS (peer_tls off there?)"},
		{"closed in the handshake", refusing(nil), "refused: the peer closed the connection in the TLS handshake: it holds its max_client_connections"},
		{"access denied", refusing([]byte{21, 3, 3, 0, 2, 2, 49}), "refused: the peer refuses this node's address: its allow_clients leaves it out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := testNode(t, Config{ID: NodeID{5}, TLS: TLSConfig{Cert: func() *tls.Certificate { return cert }, Roots: siteca.Pool(ca.Cert)}.ClientConfig()})
			req, _ := http.NewRequest(http.MethodGet, n.blobURL(netip.MustParseAddrPort(tc.addr), d), nil)
			resp, _, err := n.getBlob(req, NodeID{9}, 0)
			if err == nil {
				resp.Body.Close()
				t.Fatal("a blob taken without TLS")
			}
			st, ok := n.PeerTLS(NodeID{9})
			if !ok || !strings.HasPrefix(st.String(), tc.want) {
				t.Fatalf("TLS state %q (noted: %v), want %q; the fetch said %v", st.String(), ok, tc.want, err)
			}
		})
	}
}
