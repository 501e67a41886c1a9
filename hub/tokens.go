package hub

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Tokens are the bearer tokens a hub accepts (hub_tokens). The zero value
// accepts every request: allow_clients alone decides.
type Tokens struct {
	sums [][32]byte
}

// NewTokens accepts the given tokens, each the token itself or
// "sha256:<hex>" of it; empty strings are ignored.
func NewTokens(list []string) Tokens {
	var t Tokens
	for _, s := range list {
		if s != "" {
			t.sums = append(t.sums, tokenSum(s))
		}
	}
	return t
}

// MinTokenLen is the shortest token the settings take: a token is all
// that stands between a hub and anyone on its network.
const MinTokenLen = 16

// SumPrefix starts a token a hub accepts given as the SHA-256 of the
// token, in hex: what a hub compares anyway, so its config file need not
// hold the token itself.
const SumPrefix = "sha256:"

// tokenSum is what a request's token must hash to: the sum given, or the
// sum of the token given.
func tokenSum(s string) [32]byte {
	var sum [32]byte
	if h, ok := strings.CutPrefix(s, SumPrefix); ok && len(h) == 2*len(sum) {
		if _, err := hex.Decode(sum[:], []byte(h)); err == nil {
			return sum
		}
	}
	return sha256.Sum256([]byte(s))
}

// howToMake says how to make a good token, for the settings' errors.
const howToMake = "make one with: openssl rand -hex 24"

// CheckAccepted says what is wrong with a token a hub accepts (hub_tokens,
// replication.tokens): it is too short to resist guessing, or a sum that
// is not one.
func CheckAccepted(s string) error {
	if h, ok := strings.CutPrefix(s, SumPrefix); ok {
		if _, err := hex.DecodeString(h); err != nil || len(h) != 2*sha256.Size {
			return fmt.Errorf("%s must be followed by the token's SHA-256 in hex, 64 characters (printf %%s TOKEN | sha256sum)", SumPrefix)
		}
		return nil // a sum: its token's length cannot be known
	}
	if len(s) < MinTokenLen {
		return fmt.Errorf("the token is %d characters; give at least %d (%s)", len(s), MinTokenLen, howToMake)
	}
	return nil
}

// CheckSent says what is wrong with a token this warren sends (hub_token,
// a replicate_from token): it is too short, or a sum, which only the
// receiving hub's settings may hold.
func CheckSent(s string) error {
	if strings.HasPrefix(s, SumPrefix) {
		return fmt.Errorf("give the token itself: the %s form is for the hub that checks it (hub_tokens, replication.tokens)", SumPrefix)
	}
	if len(s) < MinTokenLen {
		return fmt.Errorf("the token is %d characters; give at least %d (%s)", len(s), MinTokenLen, howToMake)
	}
	return nil
}

// Enabled says whether any token is required.
func (t Tokens) Enabled() bool { return len(t.sums) > 0 }

// Errors Check returns.
var (
	ErrNoToken  = errors.New("this hub needs a token: set hub_token (--hub-token) on the node, or Acquire::http::Proxy \"http://warren:TOKEN@hub:port/\" for apt")
	ErrBadToken = errors.New("the token is not one of this hub's hub_tokens: check hub_token (--hub-token) on the node, or the password in apt's Acquire::http::Proxy \"http://warren:TOKEN@hub:port/\"")
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

// Strip removes what a node sent the hub to prove itself, so that
// nothing of it travels further upstream: Proxy-Authorization (the
// proxy's, never the origin's), and an Authorization that carries one of
// the hub's tokens. Any other Authorization is the origin's (a private
// repository's credential) and stays.
func (t Tokens) Strip(h http.Header) {
	h.Del("Proxy-Authorization")
	v := h.Get("Authorization")
	scheme, cred, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || !t.Enabled() {
		return
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(cred)))
	match := 0
	for i := range t.sums {
		match |= subtle.ConstantTimeCompare(sum[:], t.sums[i][:])
	}
	if match == 1 {
		h.Del("Authorization")
	}
}
