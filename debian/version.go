package debian

import (
	"cmp"
	"fmt"
	"math"
	"strings"
)

// Version is a Debian package version split as deb-version(7) says:
// [epoch:]upstream_version[-debian_revision].
type Version struct {
	Epoch    int    // 0 when the version names none
	Upstream string // never empty; starts with a digit
	Revision string // "" when the version has none, which orders as "0" does
}

// ParseVersion splits s as dpkg's parseversion does: blanks (space, tab)
// around it are dropped, the epoch is what comes before the first ':', and
// the revision what comes after the last '-'.
//
// It accepts what dpkg accepts without complaint, and nothing else. That
// includes dpkg's leniencies on the epoch (it reads it with strtol, so
// "+1:2" and "007:2" are fine), and excludes what dpkg only warns about (an
// upstream version not starting with a digit, characters outside
// [A-Za-z0-9.+~:-] upstream or [A-Za-z0-9.+~] in the revision): dpkg
// refuses to build or install those, so no archive carries them.
func ParseVersion(s string) (Version, error) {
	v, why := parseVersion(s)
	if why != "" {
		return Version{}, fmt.Errorf("parse version %q: %s", clip(s), why)
	}
	return v, nil
}

// parseVersion is ParseVersion with the problem as a constant string, so
// that CompareVersions allocates nothing for a malformed version. The
// problems are worded as dpkg words them.
func parseVersion(s string) (Version, string) {
	s = strings.Trim(s, " \t")
	if s == "" {
		return Version{}, "version string is empty"
	}
	if strings.ContainsAny(s, " \t") {
		return Version{}, "version string has embedded spaces"
	}
	var v Version
	if e, rest, ok := strings.Cut(s, ":"); ok {
		n, why := parseEpoch(e)
		if why == "" && rest == "" {
			why = "nothing after colon in version number"
		}
		if why != "" {
			return Version{}, why
		}
		v.Epoch, s = n, rest
	}
	v.Upstream = s
	if i := strings.LastIndexByte(s, '-'); i >= 0 {
		v.Upstream, v.Revision = s[:i], s[i+1:]
		if v.Revision == "" {
			return Version{}, "revision number is empty"
		}
	}
	if v.Upstream == "" {
		return Version{}, "version number is empty"
	}
	if !isDigit(v.Upstream[0]) {
		return Version{}, "version number does not start with digit"
	}
	if !onlyBytes(v.Upstream, ".-+~:") {
		return Version{}, "invalid character in version number"
	}
	if !onlyBytes(v.Revision, ".+~") {
		return Version{}, "invalid character in revision number"
	}
	return v, ""
}

// parseEpoch reads an epoch as dpkg does, with strtol: whitespace and a
// sign before the digits are taken, so "+1" and "-0" are fine, but nothing
// may follow them, and the value must fit a C int.
func parseEpoch(e string) (int, string) {
	d := strings.TrimLeft(e, " \t\n\v\f\r")
	neg := d != "" && d[0] == '-'
	if d != "" && (d[0] == '+' || d[0] == '-') {
		d = d[1:]
	}
	if d == "" || !isDigit(d[0]) {
		return 0, "epoch in version is empty"
	}
	if strings.TrimLeft(d, "0123456789") != "" {
		return 0, "epoch in version is not number"
	}
	d = strings.TrimLeft(d, "0")
	if neg && d != "" {
		return 0, "epoch in version is negative"
	}
	if len(d) > 10 { // MaxInt32 has ten digits; more cannot fit
		return 0, "epoch in version is too big"
	}
	n := 0
	for i := 0; i < len(d); i++ {
		n = n*10 + int(d[i]-'0')
	}
	if n > math.MaxInt32 {
		return 0, "epoch in version is too big"
	}
	return n, ""
}

// onlyBytes reports whether s holds only ASCII letters, digits and bytes
// of extra.
func onlyBytes(s, extra string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isDigit(c) && !isLetter(c) && strings.IndexByte(extra, c) < 0 {
			return false
		}
	}
	return true
}

// Compare orders v and w as dpkg does: by epoch, then upstream version,
// then revision. It returns -1, 0 or +1. Distinct spellings can be equal
// ("1.0" and "1.00-0").
func (v Version) Compare(w Version) int {
	if c := cmp.Compare(v.Epoch, w.Epoch); c != 0 {
		return c
	}
	if c := compareParts(v.Upstream, w.Upstream); c != 0 {
		return c
	}
	return compareParts(v.Revision, w.Revision)
}

// CompareVersions orders two version strings as dpkg --compare-versions
// does, returning -1, 0 or +1. Of two Packages of one name, a is the newer
// when CompareVersions(a.Version, b.Version) > 0.
//
// A version ParseVersion rejects (dpkg would fail on it, or warn and
// refuse to install it) orders below every valid one, and two of them
// order as plain strings, so that the order stays total and a broken entry
// never wins over a good one.
func CompareVersions(a, b string) int {
	va, whyA := parseVersion(a)
	vb, whyB := parseVersion(b)
	switch {
	case whyA == "" && whyB == "":
		return va.Compare(vb)
	case whyA == "":
		return 1
	case whyB == "":
		return -1
	}
	return strings.Compare(a, b)
}

// compareParts is dpkg's verrevcmp, for an upstream version or a revision.
// The string alternates non-digit and digit runs, compared pairwise in
// turn. Non-digit runs compare byte by byte by weight, a run's end
// weighing 0: '~' is -1, so it sorts before anything, even the end ("1~" <
// "1"); letters weigh their ASCII code, other bytes theirs plus 256, so
// letters come before '+', '.' and the rest. Digit runs compare as
// numbers, of any length.
func compareParts(a, b string) int {
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		for i < len(a) && !isDigit(a[i]) || j < len(b) && !isDigit(b[j]) {
			ac, bc := weightAt(a, i), weightAt(b, j)
			if ac != bc {
				return cmp.Compare(ac, bc)
			}
			// Equal weights are never both 0 here (one side has a
			// non-digit, which weighs non-zero), so neither index
			// passes its end.
			i, j = i+1, j+1
		}
		// Numbers: without leading zeros, the longer is the bigger, and
		// equal lengths compare as text; no run is too long to compare.
		for i < len(a) && a[i] == '0' {
			i++
		}
		for j < len(b) && b[j] == '0' {
			j++
		}
		si, sj := i, j
		for i < len(a) && isDigit(a[i]) {
			i++
		}
		for j < len(b) && isDigit(b[j]) {
			j++
		}
		if c := cmp.Compare(i-si, j-sj); c != 0 {
			return c
		}
		if c := strings.Compare(a[si:i], b[sj:j]); c != 0 {
			return c
		}
	}
	return 0
}

// weightAt is dpkg's order() for s[i], with the end of s (and a digit,
// which ends a non-digit run) weighing 0.
func weightAt(s string, i int) int {
	if i >= len(s) {
		return 0
	}
	switch c := s[i]; {
	case isDigit(c):
		return 0
	case isLetter(c):
		return int(c)
	case c == '~':
		return -1
	default:
		return int(c) + 256
	}
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
