package door

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"net/url"
	"strings"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/hub"
)

// Private scopes (RFC 9111 §3.5: a shared cache must not answer a request
// with the response to another's authorized request). A request that
// carries a credential for its origin (a user:password in the URL, an
// Authorization header meant for the origin: what apt sends for an
// auth.conf entry and dnf for a repo's username) is private. Its keys in
// the index (URL cache, learnt facts, remembered 404s) carry its scope in
// place of the credential (http://p<hex>@host/...), so what it teaches and
// keeps is found only by requests with the same credential; the blobs it
// stores are private to that scope (cachestore/private.go) and never
// offered to peers, pulling hubs or a change feed. Its fills go to the
// origin (through a hub only with hub_only), with the credential, and
// never to the LAN.

// Credential is what a request proves to its origin.
type Credential struct {
	// scope is "p" and a keyed hash of the origin and the credential;
	// "" for a request without one.
	scope string
	// auth is the Authorization header to send the origin.
	auth string
	// user is the URL's user name, for the log ("" when the credential
	// came as a header, or when the user name is itself the secret: a
	// token with no password, as packagecloud's and Gemfury's URLs carry).
	user string
}

func (c Credential) Private() bool { return c.scope != "" }

// credentialOf takes the credential for target's origin from a request's
// header h (nil for warren's own requests) and target's userinfo, and
// removes the userinfo from target, so that no secret is in the URL warren
// logs, shows or keys anything by.
func (s *Door) CredentialOf(h http.Header, target *url.URL) Credential {
	var c Credential
	if target.User != nil {
		user := target.User.Username()
		pw, _ := target.User.Password()
		c.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pw))
		if pw != "" {
			c.user = user // shown with the password hidden; without one, the user is the secret
		} else {
			c.user = "***"
		}
		target.User = nil
	}
	if v := h.Get("Authorization"); v != "" {
		c.auth = v // what the client chose to send wins, as it would direct
	}
	if c.auth == "" {
		return c
	}
	mac := hmac.New(sha256.New, s.scopeSecret)
	mac.Write([]byte(canonicalOrigin(target.Scheme, target.Host)))
	mac.Write([]byte{0})
	mac.Write([]byte(c.auth))
	c.scope = "p" + hex.EncodeToString(mac.Sum(nil)[:16])
	return c
}

// scopedKey is u's key in the index for a request in scope.
func scopedKey(u *url.URL, scope string) string {
	if scope == "" {
		return CanonicalURL(u)
	}
	return canonicalOrigin(u.Scheme, scope+"@"+u.Host) + canonicalPath(u.EscapedPath()) + query(u.RawQuery)
}

// shownURL is p's URL for the log: a user name stays, the password is
// never there.
func (p Plan) ShownURL() string {
	if p.Cred.user == "" {
		return hub.RedactURLs(p.URL) // a key of warren's own (a feed's) may name a URL with a password
	}
	scheme, rest, ok := strings.Cut(p.URL, "://")
	if !ok {
		return p.URL
	}
	if p.Cred.user == "***" {
		return scheme + "://***@" + rest
	}
	return scheme + "://" + url.User(p.Cred.user).String() + ":***@" + rest
}

// RedactURL is u for the log, its password (if any) as "***"
// (hub.RedactURLs).
func RedactURL(u *url.URL) string { return hub.RedactURLs(u.String()) }

// Readable says whether a stored blob may answer p.
func (p Plan) Readable(bi cachestore.BlobInfo) bool { return bi.Readable(p.Cred.scope) }

// Scope names the credential's scope for the log ("" without one).
func (c Credential) Scope() string { return c.scope }
