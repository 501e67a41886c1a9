package hub

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
)

// Tokens are the bearer tokens a hub accepts (hub_tokens). The zero value
// accepts every request: allow_clients alone decides.
type Tokens struct {
	sums [][32]byte
}

// NewTokens accepts the given tokens; empty strings are ignored.
func NewTokens(list []string) Tokens {
	var t Tokens
	for _, s := range list {
		if s != "" {
			t.sums = append(t.sums, sha256.Sum256([]byte(s)))
		}
	}
	return t
}

// Enabled says whether any token is required.
func (t Tokens) Enabled() bool { return len(t.sums) > 0 }

// Errors Check returns.
var (
	ErrNoToken  = errors.New("this hub needs a token: set hub_token (--hub-token) on the node, or Acquire::http::Proxy \"http://warren:TOKEN@hub:port/\" for apt")
	ErrBadToken = errors.New("the token is not one of this hub's hub_tokens")
)

// Check accepts a request that carries one of the tokens, as
// "Bearer TOKEN" (in Proxy-Authorization or Authorization) or as the
// password of Basic proxy credentials (what apt sends for a proxy URL's
// user:password; Basic in Authorization is the origin's business). Every token is compared, in constant time, whatever
// matched earlier: how long a check takes says nothing about the tokens.
func (t Tokens) Check(r *http.Request) error {
	if !t.Enabled() {
		return nil
	}
	given, ok := tokenOf(r)
	if !ok {
		return ErrNoToken
	}
	sum := sha256.Sum256([]byte(given))
	match := 0
	for i := range t.sums {
		match |= subtle.ConstantTimeCompare(sum[:], t.sums[i][:])
	}
	if match != 1 {
		return ErrBadToken
	}
	return nil
}

func tokenOf(r *http.Request) (string, bool) {
	for _, h := range []string{"Proxy-Authorization", "Authorization"} {
		v := r.Header.Get(h)
		scheme, cred, ok := strings.Cut(v, " ")
		if !ok {
			continue
		}
		switch strings.ToLower(scheme) {
		case "bearer":
			return strings.TrimSpace(cred), true
		case "basic":
			if h != "Proxy-Authorization" {
				continue
			}
			b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
			if err != nil {
				continue
			}
			if _, pass, ok := strings.Cut(string(b), ":"); ok {
				return pass, true
			}
		}
	}
	return "", false
}

// StripCredentials removes what a node sent the hub to prove itself, so
// that nothing of it travels further upstream.
func StripCredentials(h http.Header) {
	h.Del("Proxy-Authorization")
	if v := h.Get("Authorization"); v != "" {
		scheme, _, _ := strings.Cut(v, " ")
		if strings.EqualFold(scheme, "bearer") {
			h.Del("Authorization")
		}
	}
}
