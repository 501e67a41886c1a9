package door

import (
	"net/url"
	"path"
	"strings"
)

// The canonical form of an artifact URL is the one key under which warren
// records what metadata lists and looks up what a client asks for. apt
// percent-encodes '+', '~' and ':' in the paths it requests (%2b, %7e, %3a)
// while Packages lists Filename literally; dnf and NuGet clients escape
// other characters their own way. So both sides pass through canonicalURL:
//
//   - scheme and host lower-case, the scheme's default port dropped;
//   - in the path, an escape of a character that may stand literally in a
//     path (unreserved, sub-delims, ':' and '@') is decoded, every other
//     byte outside that set is escaped as %XX in upper case;
//   - '/' and '%' are never decoded: "a%2Fb" and "a/b" stay different
//     files, as they are to the server;
//   - dot segments are removed (after decoding, as the server would);
//   - the query is kept as sent.

// pathLiteral says which bytes stand for themselves in a canonical path.
var pathLiteral = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "-._~!$&'()*+,;=:@" {
		t[c] = true
	}
	return t
}()

const upperHex = "0123456789ABCDEF"

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// canonicalPath turns an escaped path (as a client sent it) into the
// canonical form described above. A '%' not followed by two hex digits is
// taken literally, as most servers do.
func canonicalPath(escaped string) string {
	var b strings.Builder
	b.Grow(len(escaped))
	for i := 0; i < len(escaped); i++ {
		c := escaped[i]
		if c == '%' && i+2 < len(escaped) {
			hi, ok1 := unhex(escaped[i+1])
			lo, ok2 := unhex(escaped[i+2])
			if ok1 && ok2 {
				if d := hi<<4 | lo; pathLiteral[d] {
					b.WriteByte(d)
				} else {
					writeEscaped(&b, d)
				}
				i += 2
				continue
			}
		}
		if c == '/' || pathLiteral[c] {
			b.WriteByte(c)
			continue
		}
		writeEscaped(&b, c)
	}
	p := b.String()
	if p == "" {
		return "/"
	}
	clean := path.Clean(p)
	if strings.HasSuffix(p, "/") && clean != "/" {
		clean += "/" // a directory stays a directory
	}
	return clean
}

// escapeLiteral escapes a literal path as metadata gives it (Packages'
// Filename, primary's location href) so that canonicalPath reads every
// byte as itself: a literal '%' becomes %25.
func escapeLiteral(p string) string {
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		if c := p[i]; c == '/' || pathLiteral[c] {
			b.WriteByte(c)
		} else {
			writeEscaped(&b, c)
		}
	}
	return b.String()
}

// writeEscaped writes c as %XX, in upper case.
func writeEscaped(b *strings.Builder, c byte) {
	b.WriteByte('%')
	b.WriteByte(upperHex[c>>4])
	b.WriteByte(upperHex[c&15])
}

// canonicalURL is the key of u in the index.
func CanonicalURL(u *url.URL) string {
	return canonicalOrigin(u.Scheme, u.Host) + canonicalPath(u.EscapedPath()) + query(u.RawQuery)
}

func query(q string) string {
	if q == "" {
		return ""
	}
	return "?" + q
}

// canonicalOrigin is scheme://host[:port] with the default port dropped.
func canonicalOrigin(scheme, host string) string {
	scheme, host = strings.ToLower(scheme), strings.ToLower(host)
	switch {
	case scheme == "http" && strings.HasSuffix(host, ":80"):
		host = strings.TrimSuffix(host, ":80")
	case scheme == "https" && strings.HasSuffix(host, ":443"):
		host = strings.TrimSuffix(host, ":443")
	}
	return scheme + "://" + host
}

// CanonicalKey is the index key of a URL given as text (the CLI's
// `cache show URL`); text that is not an http(s) URL is returned as is.
func CanonicalKey(s string) string {
	if k, ok := CanonicalString(s); ok {
		return k
	}
	return s
}

// canonicalString parses and canonicalises a URL given as text; ok is false
// when it is not an absolute http(s) URL.
func CanonicalString(s string) (string, bool) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", false
	}
	return CanonicalURL(u), true
}

// repoScope is a repository's base in canonical form: the directory its
// InRelease, repomd.xml or index came from. Facts learnt from its metadata
// apply only to URLs under it.
type repoScope string

// newScope is the scope of a repository rooted at dir (an escaped path) on
// the origin of u.
// A key's user is a private scope (private.go): the repository is that
// scope's.
func newScope(u *url.URL, dir string) repoScope {
	p := canonicalPath(dir)
	if !strings.HasSuffix(p, "/") {
		p += "/"
	}
	host := u.Host
	if u.User != nil {
		host = u.User.Username() + "@" + host
	}
	return repoScope(canonicalOrigin(u.Scheme, host) + p)
}

// join resolves a path that metadata lists literally (relative to the
// scope) and says whether the result stays inside the scope.
func (sc repoScope) join(literal string) (string, bool) {
	if strings.HasPrefix(literal, "/") {
		return "", false
	}
	origin, dir := sc.split()
	full := origin + canonicalPath(dir+escapeLiteral(literal))
	return full, sc.contains(full)
}

// joinURL resolves a literal path against an absolute base URL that
// metadata gives (rpm's xml:base) and says whether it stays inside the scope.
func (sc repoScope) joinURL(base, literal string) (string, bool) {
	u, err := url.Parse(strings.TrimSuffix(base, "/") + "/")
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || strings.HasPrefix(literal, "/") {
		return "", false
	}
	full := canonicalOrigin(u.Scheme, u.Host) + canonicalPath(u.EscapedPath()+escapeLiteral(literal))
	return full, sc.contains(full)
}

func (sc repoScope) contains(full string) bool {
	return strings.HasPrefix(full, string(sc)) && len(full) > len(sc)
}

func (sc repoScope) split() (origin, dir string) {
	s := string(sc)
	i := strings.Index(s, "://")
	j := strings.IndexByte(s[i+3:], '/')
	return s[:i+3+j], s[i+3+j:]
}
