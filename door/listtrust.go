package door

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Which lists of mirrors make a mirror group. A list is read from any URL
// whose path looks like one (rpm.Classify), on any host, and a group is
// powerful: its list says which bases are the same repository (a fact of
// one mirror then holds for the others), a metalink's hash decides which
// repomd.xml every mirror may serve, and its https mirrors may be
// intercepted. So only a trusted list makes one:
//
//   - a list a repo file on this machine names (metalink= or
//     mirrorlist=, dnf's variables such as $releasever matching any
//     value, extra query parameters such as dnf's countme allowed);
//   - a list the operator names in mirror_lists (a URL prefix): a hub's
//     or a site server's, for machines whose repo files it does not have;
//   - a list this node's hub answered in the site's order (HeaderMirrors):
//     the hub trusted it.
//
// Any other list is kept and served as an ordinary file: dnf works as
// before, and nothing is learnt from it. A base a repo file names as a
// baseurl= (a repository dnf uses without a list) belongs to no group.

// ListPolicy says which lists of mirrors are trusted to make groups.
type ListPolicy struct {
	lists    []*regexp.Regexp // a repo file's metalink= and mirrorlist=
	prefixes []string         // mirror_lists: canonical URL prefixes
	plain    []*regexp.Regexp // a repo file's baseurl=
}

// dnfVar is a dnf variable in a repo file's URL: $releasever, ${basearch}.
var dnfVar = regexp.MustCompile(`\$\{[A-Za-z0-9_]+\}|\$[A-Za-z0-9_]+`)

// NewListPolicy builds the policy from the URLs repo files give as
// metalink= or mirrorlist= (lists) and as baseurl= (bases), and the
// mirror_lists URL prefixes. A URL that cannot be read is an error that
// names it; the others still count.
func NewListPolicy(lists, bases, prefixes []string) (*ListPolicy, error) {
	var (
		p    = &ListPolicy{}
		errs []string
	)
	for _, l := range lists {
		re, err := urlPattern(l, false)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		p.lists = append(p.lists, re)
	}
	for _, b := range bases {
		re, err := urlPattern(b, true)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		p.plain = append(p.plain, re)
	}
	for _, raw := range prefixes {
		k, ok := CanonicalString(strings.TrimSpace(raw))
		if !ok || strings.Contains(raw, "$") {
			errs = append(errs, fmt.Sprintf("mirror_lists: %q is not an http(s) URL", raw))
			continue
		}
		p.prefixes = append(p.prefixes, k)
	}
	if len(errs) > 0 {
		return p, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return p, nil
}

// urlPattern compiles a repo file's URL into the canonical keys it stands
// for: each dnf variable one or more bytes of a path segment or query
// value. A list's pattern allows more query parameters after its own
// (dnf's countme); a base's ends in "/".
func urlPattern(raw string, base bool) (*regexp.Regexp, error) {
	raw = strings.TrimSpace(raw)
	// Each variable becomes an escaped NUL, which canonicalisation keeps
	// as it is and no URL a client asks for holds, then a wildcard.
	u, err := url.Parse(dnfVar.ReplaceAllLiteralString(raw, "%00"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.Contains(u.Host, "%00") {
		return nil, fmt.Errorf("%q is not an http(s) URL with a literal host", raw)
	}
	if base && !strings.HasSuffix(u.Path, "/") {
		if u.RawPath != "" {
			u.RawPath += "/"
		}
		u.Path += "/"
	}
	key := CanonicalURL(u)
	var b strings.Builder
	b.WriteString("^")
	for i, lit := range strings.Split(key, "%00") {
		if i > 0 {
			b.WriteString(`[^/?#&]+`)
		}
		b.WriteString(regexp.QuoteMeta(lit))
	}
	switch {
	case base:
	case u.RawQuery != "":
		b.WriteString(`(&[^#]*)?`)
	default:
		b.WriteString(`(\?[^#]*)?`)
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}

// Trusts says whether the list at key (its canonical URL) is trusted.
func (p *ListPolicy) Trusts(key string) bool {
	if p == nil {
		return false
	}
	for _, re := range p.lists {
		if re.MatchString(key) {
			return true
		}
	}
	for _, pre := range p.prefixes {
		if strings.HasPrefix(key, pre) {
			return true
		}
	}
	return false
}

// Plain says whether a repo file names base (canonical) as a baseurl=:
// a repository of its own, which no list takes into a group.
func (p *ListPolicy) Plain(base string) bool {
	if p == nil {
		return false
	}
	for _, re := range p.plain {
		if re.MatchString(base) {
			return true
		}
	}
	return false
}

// Empty says whether the policy trusts no list.
func (p *ListPolicy) Empty() bool { return p == nil || len(p.lists) == 0 && len(p.prefixes) == 0 }
