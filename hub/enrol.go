package hub

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
)

// Enrolment: a node that holds the hub token, but not the site CA's key,
// gets its node certificate (mutual TLS between peers) from its hub. It
// sends a certificate request for its own node name over https with the
// token; the hub, holding the CA's key, signs it if it names that node and
// nothing else.

// EnrolPath is where a hub signs nodes' certificate requests.
const EnrolPath = "/_warren/hub/enrol"

// HeaderNode names the node a request is from (its id).
const HeaderNode = "X-Warren-Node"

// maxEnrolBody bounds what a hub reads of a certificate request.
const maxEnrolBody = 64 << 10

// SignNode signs node id's certificate request (DER): the certificate and
// the CA's, leaf first. (cmd wires the site CA here.)
type SignNode func(csr []byte, id string) ([]*x509.Certificate, error)

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
	chain, err := h.cfg.SignNode(blk.Bytes, id)
	if err != nil {
		h.log.Warn("refused a node's certificate request", slog.String("client", r.RemoteAddr), slog.String("node", id), slog.Any("err", err))
		http.Error(w, "warren hub: "+err.Error(), http.StatusBadRequest)
		return
	}
	h.log.Info("signed a node certificate", slog.String("client", r.RemoteAddr), slog.String("node", id), slog.Time("not_after", chain[0].NotAfter))
	w.Header().Set("Content-Type", "application/x-pem-file")
	for _, c := range chain {
		pem.Encode(w, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
}

// Enrol asks the hub to sign this node's certificate request (DER) for
// node id, with the hub token, over https only. It returns the chain the
// hub sent, leaf first; the caller verifies it against the site CA.
func (p *Parent) Enrol(ctx context.Context, id string, csr []byte) ([]*x509.Certificate, error) {
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
	resp, err := do(p.direct, req)
	if err != nil {
		return nil, &UnreachableError{Hub: p.Name(), Err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxEnrolBody))
	if err != nil {
		return nil, fmt.Errorf("hub %s: read its answer to the enrolment: %w", p.Name(), err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("hub %s refused the enrolment (%s): %s", p.Name(), resp.Status, strings.TrimSpace(strings.TrimPrefix(string(b), "warren hub:")))
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
