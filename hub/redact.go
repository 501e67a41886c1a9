package hub

import (
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Secrets are shown redacted wherever warren prints or logs them: the
// settings (warren config check), the status page, replication's status
// and log, error messages and log lines.

// RedactToken is a token as shown: "…" and its last 4 characters, enough
// to tell which of several it is, too little to use or guess it. A short
// one (a mistake the settings refuse) shows nothing of itself; a sum keeps
// its prefix.
func RedactToken(s string) string {
	if s == "" {
		return ""
	}
	prefix := ""
	if rest, ok := strings.CutPrefix(s, SumPrefix); ok {
		prefix, s = SumPrefix, rest
	}
	if utf8.RuneCountInString(s) < 12 {
		return prefix + "…"
	}
	r := []rune(s)
	return prefix + "…" + string(r[len(r)-4:])
}

// userinfo is a URL's user[:password]@, wherever a URL stands in a text:
// what cannot be in it (/ ? # @ space, quotes) ends it.
var userinfo = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://)([^/?#@\s"'<>]*)@`)

// RedactURLs shows every URL in s, or s itself as a URL, without its
// password: http://alice:s3cret@host/ as http://alice:***@host/. A user
// with no password is often a token itself (https://TOKEN@host/): it is
// shown as ***.
func RedactURLs(s string) string {
	if !strings.Contains(s, "@") {
		return s // the common case costs no regexp
	}
	return userinfo.ReplaceAllStringFunc(s, func(m string) string {
		sub := userinfo.FindStringSubmatch(m)
		scheme, info := sub[1], sub[2]
		user, pass, hasPass := strings.Cut(info, ":")
		if !hasPass || pass == "" {
			return scheme + "***@" // a user with no password is the secret itself (TOKEN@, TOKEN:@)
		}
		if u, err := url.PathUnescape(user); err == nil {
			user = url.User(u).String() // as a URL spells it
		}
		return scheme + user + ":***@"
	})
}

// scopeName is a private scope's name in a key: "#p<hex>" after a digest,
// "://p<hex>@" before a host.
var scopeName = regexp.MustCompile(`(#|://)p[0-9a-f]{32}(@?)`)

// RedactScope shows a key (a fill's, a transfer's) without the private
// scope it names: whoever knew a scope's name could ask for its key.
func RedactScope(key string) string {
	if !strings.Contains(key, "p") {
		return key
	}
	return scopeName.ReplaceAllString(key, "${1}private${2}")
}
