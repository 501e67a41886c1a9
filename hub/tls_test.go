package hub

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/warren-cache/warren/internal/siteca"
)

const (
	tlsTestToken = "a-hub-token-of-24-chars!"
	tlsTestNode  = "00112233445566778899aabbccddeeff"
)

// httpsHub is a hub role served over TLS with a certificate for
// hub.test from a site CA of the test's own; every proxy request it
// admits is answered with what it saw.
type httpsHub struct {
	srv  *httptest.Server
	ca   *siteca.CA
	addr string
	role *Role
}

func newHTTPSHub(t *testing.T, certAt time.Time, withTokens bool) *httpsHub {
	t.Helper()
	ca, err := siteca.Init(t.TempDir(), []string{"hub.test"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := siteca.NewKey()
	// A certificate issued at certAt for an hour: one from long ago has
	// expired.
	cert, err := issueAt(ca, certAt, key)
	if err != nil {
		t.Fatal(err)
	}
	var tokens Tokens
	if withTokens {
		tokens = NewTokens([]string{tlsTestToken})
	}
	enrolled := siteca.OpenEnrolled(t.TempDir())
	role := NewRole(RoleConfig{ID: "hub-id", Tokens: tokens, SignNode: func(csr []byte, id string, current []*x509.Certificate) ([]*x509.Certificate, bool, error) {
		c, newKey, err := ca.EnrolNode(csr, id, current, enrolled)
		if err != nil {
			return nil, false, err
		}
		return []*x509.Certificate{c, ca.Cert}, newKey, nil
	}})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !role.Admit(w, r) {
			return
		}
		target := *r.URL
		role.Target(r, &target)
		fmt.Fprintf(w, "%s tls=%v", target.String(), r.TLS != nil)
	}))
	// As cmd's serverCert.config: a client certificate asked for, not
	// required (a node renewing its own presents it).
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw, ca.Cert.Raw}, PrivateKey: key}}, ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &httpsHub{srv: srv, ca: ca, addr: srv.Listener.Addr().String(), role: role}
}

func issueAt(ca *siteca.CA, at time.Time, key crypto.Signer) (*x509.Certificate, error) {
	ca.SetClock(func() time.Time { return at })
	defer ca.SetClock(time.Now)
	return ca.IssueServer([]string{"hub.test"}, key.Public(), time.Hour)
}

// parent is a node's side of h under url (any host name: the dial goes
// to h), trusting roots.
func (h *httpsHub) parent(t *testing.T, url string, roots *x509.CertPool, token string) *Parent {
	t.Helper()
	p, err := NewParent(ParentConfig{URL: url, Token: token, TLS: &tls.Config{RootCAs: roots},
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, h.addr)
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.CloseIdleConnections)
	return p
}

func (h *httpsHub) url(host string) string {
	_, port, _ := net.SplitHostPort(h.addr)
	return "https://" + host + ":" + port
}

// A node reaches an https hub inside TLS, verified against the site CA:
// its token and an intercepted https fetch never cross the site in clear.
func TestHTTPSHub(t *testing.T) {
	h := newHTTPSHub(t, time.Now(), true)
	p := h.parent(t, h.url("hub.test"), siteca.Pool(h.ca.Cert), tlsTestToken)
	for _, u := range []string{"http://repo.example/pool/a.deb", "https://repo.example/pool/a.deb"} {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		resp, err := p.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := u + " tls=true"; string(b) != want {
			t.Fatalf("the hub saw %q, want %q", b, want)
		}
	}
	if info, err := p.Probe(t.Context()); err != nil || info.ID != "hub-id" {
		t.Fatalf("probe: %v %v", info, err)
	}
	if st := p.Status(); !st.TLS || st.TokenInClear || !st.Reachable {
		t.Fatalf("status %+v", st)
	}
	plain, _ := NewParent(ParentConfig{URL: "http://hub.test:3142", Token: tlsTestToken})
	if st := plain.Status(); st.TLS || !st.TokenInClear {
		t.Fatalf("an http hub with a token: %+v", st)
	}
}

// What a node is told when an https hub's certificate does not verify.
func TestHTTPSHubRefused(t *testing.T) {
	good := newHTTPSHub(t, time.Now(), true)
	expired := newHTTPSHub(t, time.Now().Add(-48*time.Hour), true)
	// A hub without a certificate answers a TLS client in plain http.
	plainSrv := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(plainSrv.Close)
	plain := &httpsHub{srv: plainSrv, ca: good.ca, addr: plainSrv.Listener.Addr().String()}
	for _, tc := range []struct {
		name  string
		hub   *httpsHub
		url   string
		roots *x509.CertPool
		want  string
	}{
		{"a URL that does not name it", good, good.url("other.test"), siteca.Pool(good.ca.Cert), "must name the hub as its certificate does (hub.test)"},
		{"another CA", good, good.url("hub.test"), siteca.Pool(expired.ca.Cert), "not from the site CA"},
		{"expired", expired, expired.url("hub.test"), siteca.Pool(expired.ca.Cert), "give the hub a new certificate"},
		{"no https there", plain, plain.url("hub.test"), siteca.Pool(good.ca.Cert), "the hub serves no https on that port: give it a certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.hub.parent(t, tc.url, tc.roots, tlsTestToken)
			req, _ := http.NewRequest(http.MethodGet, "http://repo.example/a.deb", nil)
			if _, err := p.Do(req); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Do: %v, want %q", err, tc.want)
			}
			if _, err := p.Probe(t.Context()); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Probe: %v, want %q", err, tc.want)
			}
			if st := p.Status(); st.Reachable || !strings.Contains(st.LastError, tc.want) {
				t.Fatalf("status %+v", st)
			}
		})
	}
}

// A node with the hub token gets its own node certificate from the hub,
// and nothing else.
func TestEnrol(t *testing.T) {
	h := newHTTPSHub(t, time.Now(), true)
	roots := siteca.Pool(h.ca.Cert)
	key, _ := siteca.NewKey()
	csr, err := siteca.NodeRequest(tlsTestNode, key)
	if err != nil {
		t.Fatal(err)
	}
	p := h.parent(t, h.url("hub.test"), roots, tlsTestToken)
	chain, err := p.Enrol(t.Context(), tlsTestNode, csr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := siteca.VerifyNode(chain, roots, x509.ExtKeyUsageClientAuth, time.Now()); err != nil || id != tlsTestNode {
		t.Fatalf("the enrolled certificate: node %q, %v", id, err)
	}

	// The request names another node than the one it says it is from.
	if _, err := p.Enrol(t.Context(), "ffeeddccbbaa99887766554433221100", csr, nil); err == nil || !strings.Contains(err.Error(), "not node ffeeddccbbaa99887766554433221100") {
		t.Fatalf("a request for another name: %v", err)
	}
	// A wrong token, no token, a hub without tokens, plain http.
	if _, err := h.parent(t, h.url("hub.test"), roots, "not-the-token-at-all").Enrol(t.Context(), tlsTestNode, csr, nil); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("a wrong token: %v", err)
	}
	if _, err := h.parent(t, h.url("hub.test"), roots, "").Enrol(t.Context(), tlsTestNode, csr, nil); err == nil || !strings.Contains(err.Error(), "needs hub_token") {
		t.Fatalf("no token: %v", err)
	}
	open := newHTTPSHub(t, time.Now(), false)
	if _, err := open.parent(t, open.url("hub.test"), siteca.Pool(open.ca.Cert), tlsTestToken).Enrol(t.Context(), tlsTestNode, csr, nil); err == nil || !strings.Contains(err.Error(), "needs hub_tokens on the hub") {
		t.Fatalf("a hub without tokens: %v", err)
	}
	plain, _ := NewParent(ParentConfig{URL: "http://hub.test:3142", Token: tlsTestToken})
	if _, err := plain.Enrol(t.Context(), tlsTestNode, csr, nil); err == nil || !strings.Contains(err.Error(), "over https only") {
		t.Fatalf("an http hub: %v", err)
	}
}

// The hub token is shared by every node: enrolment ties each node id to
// the key that first enrolled it, so a token holder cannot have a
// certificate made for another node's id. The same key is signed again; a
// new key only over mutual TLS with the node's current certificate; each
// refusal says so, and is counted.
func TestEnrolTiesANodeToItsKey(t *testing.T) {
	h := newHTTPSHub(t, time.Now(), true)
	roots := siteca.Pool(h.ca.Cert)
	p := h.parent(t, h.url("hub.test"), roots, tlsTestToken)
	const victim, other = tlsTestNode, "ffeeddccbbaa99887766554433221100"
	keyA, _ := siteca.NewKey() // the node's own
	keyB, _ := siteca.NewKey() // its new one, at renewal
	keyC, _ := siteca.NewKey() // another token holder's
	certs := map[string]*tls.Certificate{}
	keys := map[string]*ecdsa.PrivateKey{"A": keyA, "B": keyB, "C": keyC}
	for _, step := range []struct {
		name    string
		id, key string
		current string // the certificate presented over mutual TLS: a step's name, or none
		refused string // "" when signed
	}{
		{"a node's first enrolment", victim, "A", "", ""},
		{"another token holder claims its id", victim, "C", "", "this node id is enrolled with another key"},
		{"the node again, same key", victim, "A", "", ""},
		{"the node renews with a new key, its certificate presented", victim, "B", "the node again, same key", ""},
		{"its old key, now", victim, "A", "", "this node id is enrolled with another key"},
		{"a certificate for another node presented", other, "C", "", ""},
		{"with another node's certificate, for this id", victim, "C", "a certificate for another node presented", "this node id is enrolled with another key"},
	} {
		t.Run(step.name, func(t *testing.T) {
			csr, err := siteca.NodeRequest(step.id, keys[step.key])
			if err != nil {
				t.Fatal(err)
			}
			chain, err := p.Enrol(t.Context(), step.id, csr, certs[step.current])
			if step.refused != "" {
				if err == nil || !errors.Is(err, siteca.ErrOtherKey) || !strings.Contains(err.Error(), step.refused) || !strings.Contains(err.Error(), "403") {
					t.Fatalf("enrolled as %s with key %s: %v, want refused: %q", step.id, step.key, err, step.refused)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if id, err := siteca.VerifyNode(chain, roots, x509.ExtKeyUsageClientAuth, time.Now()); err != nil || id != step.id || !keys[step.key].PublicKey.Equal(chain[0].PublicKey) {
				t.Fatalf("the certificate: node %q, %v", id, err)
			}
			certs[step.name] = &tls.Certificate{Certificate: [][]byte{chain[0].Raw, chain[1].Raw}, PrivateKey: keys[step.key], Leaf: chain[0]}
		})
	}
	if n := h.role.Refusals()[ReasonEnrolKey]; n != 3 {
		t.Fatalf("%d refusals counted for another key, want 3", n)
	}
}
