package hub

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/warren-cache/warren/internal/siteca"
)

// Enrolment: a node that holds the hub token, but not the site CA's key,
// gets its node certificate (mutual TLS between peers) from its hub. It
// sends a certificate request for its own node name over https with the
// token; the hub, holding the CA's key, signs it if it names that node and
// nothing else, and if the request's key is the one that node id first
// enrolled with, or the request comes over mutual TLS with the node's
// current certificate (a renewal with a new key). The token is shared by
// every node: without the tie to a key, any holder could have a
// certificate made for another node's id and pose as it to the peers.

// EnrolPath is where a hub signs nodes' certificate requests.
const EnrolPath = "/_warren/hub/enrol"

// maxEnrolBody bounds what a hub reads of a certificate request.
const maxEnrolBody = 64 << 10

// SignNode signs node id's certificate request (DER), given the
// certificates the request came with over TLS (current, leaf first; none
// without mutual TLS): the certificate and the CA's, leaf first, and
// whether it took a new key for a known node. An id enrolled with another
// key is refused with siteca.ErrOtherKey unless current is that node's
// valid certificate. (cmd wires the site CA and its record here.)
type SignNode func(csr []byte, id string, current []*x509.Certificate) (chain []*x509.Certificate, newKey bool, err error)

// serveEnrol answers an enrolment; the token was checked by Admit.
func (h *Role) serveEnrol(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get(HeaderNode)
	switch {
	case r.Method != http.MethodPost:
		http.Error(w, "warren hub: enrolment is a POST of a certificate request", http.StatusMethodNotAllowed)
		return
	case h.cfg.SignNode == nil:
		http.Error(w, "warren hub: this hub does not hold the site CA's key, so it signs no node certificate: enrol with the hub that holds it, or warren ca issue --node there by hand", http.StatusNotFound)
		return
	case !h.cfg.Tokens.Enabled():
		// Without tokens anyone allow_clients admits could become a
		// member of the site.
		http.Error(w, "warren hub: enrolment needs hub_tokens on the hub: a node proves itself with one", http.StatusForbidden)
		return
	case r.TLS == nil:
		http.Error(w, "warren hub: enrolment is over https only (the token and the certificate must not cross the site in clear): use the hub's https:// URL", http.StatusForbidden)
		return
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxEnrolBody))
	if err != nil {
		http.Error(w, "warren hub: read the certificate request: "+err.Error(), http.StatusBadRequest)
		return
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		http.Error(w, "warren hub: want a PEM certificate request", http.StatusBadRequest)
		return
	}
	var current []*x509.Certificate
	if r.TLS != nil {
		current = r.TLS.PeerCertificates
	}
	chain, newKey, err := h.cfg.SignNode(blk.Bytes, id, current)
	switch {
	case errors.Is(err, siteca.ErrOtherKey):
		// Another node's id, claimed with the shared token: counted, and
		// counted against the address as a wrong token is (429 after too
		// many), logged once a window.
		h.Refuse(ReasonEnrolKey)
		if f := h.cfg.Failures.Failed(r.RemoteAddr); f.First {
			h.log.Warn("refused a certificate request for a node id enrolled with another key: another node's id claimed with the hub token, or a node that lost its key (then: warren ca issue --node --id on this machine; logged once a window per address)",
				slog.String("client", r.RemoteAddr), slog.String("node", id), slog.Int("failures_window_before", f.Before), slog.Any("err", err))
		}
		http.Error(w, "warren hub: "+err.Error(), http.StatusForbidden)
		return
	case err != nil:
		h.log.Warn("refused a node's certificate request", slog.String("client", r.RemoteAddr), slog.String("node", id), slog.Any("err", err))
		http.Error(w, "warren hub: "+err.Error(), http.StatusBadRequest)
		return
	}
	h.log.Info("signed a node certificate", slog.String("client", r.RemoteAddr), slog.String("node", id), slog.Bool("new_key", newKey), slog.Time("not_after", chain[0].NotAfter))
	w.Header().Set("Content-Type", "application/x-pem-file")
	for _, c := range chain {
		pem.Encode(w, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
}

// Enrol asks the hub to sign this node's certificate request (DER) for
// node id, with the hub token, over https only. current, when set, is the
// node's certificate now, presented over mutual TLS: the hub then takes a
// new key for the node (a renewal); without it, only the key the node
// first enrolled with. It returns the chain the hub sent, leaf first; the
// caller verifies it against the site CA.
func (p *Parent) Enrol(ctx context.Context, id string, csr []byte, current *tls.Certificate) ([]*x509.Certificate, error) {
	switch {
	case !p.TLS():
		return nil, fmt.Errorf("hub %s: enrolment sends the hub token and is over https only: give the hub's https:// URL in hubs", p.Name())
	case p.token == "":
		return nil, fmt.Errorf("hub %s: enrolment needs hub_token: the hub signs only for nodes with one", p.Name())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url.String()+EnrolPath,
		bytes.NewReader(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	req.Header.Set(HeaderNode, id)
	client := p.direct
	if current != nil {
		client = p.withClientCert(current)
		defer client.CloseIdleConnections()
	}
	resp, err := do(client, req)
	if err != nil {
		return nil, &UnreachableError{Hub: p.Name(), Err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxEnrolBody))
	if err != nil {
		return nil, fmt.Errorf("hub %s: read its answer to the enrolment: %w", p.Name(), err)
	}
	if resp.StatusCode != http.StatusOK {
		msg := strings.TrimSpace(strings.TrimPrefix(string(b), "warren hub:"))
		if resp.StatusCode == http.StatusForbidden && strings.Contains(msg, siteca.ErrOtherKey.Error()) {
			return nil, fmt.Errorf("hub %s refused the enrolment (%s): %s: %w", p.Name(), resp.Status, msg, siteca.ErrOtherKey)
		}
		return nil, fmt.Errorf("hub %s refused the enrolment (%s): %s", p.Name(), resp.Status, msg)
	}
	var chain []*x509.Certificate
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("hub %s: its enrolment answer: %w", p.Name(), err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, errors.New("hub " + p.Name() + ": its enrolment answer holds no certificate")
	}
	return chain, nil
}
