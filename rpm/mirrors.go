package rpm

import (
	"bufio"
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"html"
	"io"
	"net/url"
	"strconv"
	"strings"
)

// Mirror lists: what a repository's metalink= or mirrorlist= URL answers.
// A metalink (MirrorManager's metalink 3.0 XML, Fedora's, CentOS Stream's
// and EPEL's) gives repomd.xml's size and hashes, the previous push's as
// alternates, and each mirror's URL of repomd.xml; a mirror list
// (AlmaLinux's, Rocky's) is a line per repository base URL. librepo reads
// either from either URL, by its content, and so does ParseMirrorList.

// Bounds of a list: real ones are tens of KB and list at most a few
// hundred mirrors.
const (
	MaxMirrorListBytes = 4 << 20
	MaxMirrors         = 1000
	maxListLine        = 8 << 10
)

// Errors a list is refused with.
var (
	ErrNoMirror       = errors.New("the list names no http or https mirror")
	ErrTooManyMirrors = fmt.Errorf("the list names more than %d mirrors", MaxMirrors)
	ErrListTooLarge   = fmt.Errorf("the list is larger than %d bytes", MaxMirrorListBytes)
)

// MirrorList is a metalink or a mirror list, as read.
type MirrorList struct {
	Metalink bool
	// Mirrors are the repository bases the list names, http and https
	// only, in its order.
	Mirrors []Mirror
	// Repomd is, for a metalink, what repomd.xml may be: the current one
	// first, then the alternates (the previous push: mirrors not synced
	// yet still serve it, and dnf accepts it).
	Repomd []RepomdVersion

	// A metalink's <resources> of repomd.xml: where its content starts
	// and ends in the bytes read, and each <url> element's span.
	resStart, resEnd int64
	urls             []span
	other            []span // <url>s of other protocols (rsync, ftp), kept as they are
}

type span struct{ start, end int64 }

// Mirror is one repository base of a list.
type Mirror struct {
	// Base is the repository's base URL, ending in "/": what librepo
	// makes of the list's URL (repodata/repomd.xml cut off).
	Base string
	// Listed is the URL as the list gives it.
	Listed string
	// Preference is a metalink's (1-100; 0 in a mirror list), Location
	// its country code.
	Preference int
	Location   string
}

// HTTPS says whether the mirror is reached over https.
func (m Mirror) HTTPS() bool { return strings.HasPrefix(m.Base, "https://") }

// RepomdVersion is one repomd.xml a metalink accepts.
type RepomdVersion struct {
	Size      int64 // -1 when not given
	Timestamp int64
	// Hashes are those warren can verify (sha1, sha256, sha512), in the
	// list's order; md5 is left out.
	Hashes []Checksum
}

// Hash is the version's strongest hash warren verifies: sha256, else
// sha512, else sha1.
func (v RepomdVersion) Hash() (Checksum, bool) {
	for _, algo := range []string{"sha256", "sha512", "sha1"} {
		for _, h := range v.Hashes {
			if h.Algo == algo {
				return h, true
			}
		}
	}
	return Checksum{}, false
}

// ParseMirrorList reads a metalink or a mirror list (by its first bytes,
// as librepo does), at most MaxMirrorListBytes. A list with no usable
// mirror, more than MaxMirrors, or a malformed hash is refused whole.
func ParseMirrorList(r io.Reader) (*MirrorList, error) {
	lr := &io.LimitedReader{R: r, N: MaxMirrorListBytes + 1}
	br := bufio.NewReader(lr)
	head, _ := br.Peek(512)
	head = bytes.TrimLeft(bytes.TrimPrefix(head, []byte("\xef\xbb\xbf")), " \t\r\n")
	var (
		l   *MirrorList
		err error
	)
	if bytes.HasPrefix(head, []byte("<")) {
		l, err = parseMetalink(br)
	} else {
		l, err = parseMirrorlist(br)
	}
	if lr.N <= 0 {
		return nil, ErrListTooLarge
	}
	if err != nil {
		return nil, err
	}
	if len(l.Mirrors) == 0 {
		return nil, ErrNoMirror
	}
	return l, nil
}

// parseMirrorlist reads the plain form: a URL a line, '#' comments.
func parseMirrorlist(r io.Reader) (*MirrorList, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxListLine)
	l := &MirrorList{}
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		u, err := url.Parse(line)
		if err != nil || u.Scheme == "" || u.Host == "" && u.Scheme != "file" {
			return nil, fmt.Errorf("mirror list line %d: %q is not a URL", n, clip(line))
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			continue // ftp, rsync: dnf's business, not warren's
		}
		if err := l.add(Mirror{Base: withSlash(lowerScheme(line, u)), Listed: line}); err != nil {
			return nil, err
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("mirror list: %w", err)
	}
	return l, nil
}

func (l *MirrorList) add(m Mirror) error {
	if len(l.Mirrors) >= MaxMirrors {
		return ErrTooManyMirrors
	}
	l.Mirrors = append(l.Mirrors, m)
	return nil
}

// lowerScheme is s with its scheme as url.Parse read it (lower case).
func lowerScheme(s string, u *url.URL) string {
	return u.Scheme + s[len(u.Scheme):]
}

func withSlash(s string) string {
	if strings.HasSuffix(s, "/") {
		return s
	}
	return s + "/"
}

// repomdSuffix is what librepo cuts off a metalink's URLs.
const repomdSuffix = "repodata/repomd.xml"

// parseMetalink reads MirrorManager's metalink 3.0: of its files, only
// repomd.xml's entry.
func parseMetalink(r io.Reader) (*MirrorList, error) {
	dec := newDecoder(r)
	l := &MirrorList{Metalink: true, resStart: -1}
	var (
		sawRoot, inFile, done bool
		cur                   *RepomdVersion // the current one, or an alternate
		depth                 int
	)
	for {
		before := dec.InputOffset()
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("metalink: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			name := t.Name.Local
			if name == "metalink" && depth == 1 {
				sawRoot = true
			}
			if !inFile {
				if name == "file" && !done && attr(t, "name") == "repomd.xml" {
					inFile, done = true, true
					l.Repomd = append(l.Repomd, RepomdVersion{Size: -1})
					cur = &l.Repomd[0]
				}
				continue
			}
			switch name {
			case "alternate":
				l.Repomd = append(l.Repomd, RepomdVersion{Size: -1})
				cur = &l.Repomd[len(l.Repomd)-1]
			case "size", "timestamp":
				var s string
				if err := dec.DecodeElement(&s, &t); err != nil {
					return nil, fmt.Errorf("metalink %s: %w", name, err)
				}
				depth--
				v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
				if err != nil || v < 0 {
					return nil, fmt.Errorf("metalink: %s %q is not a number", name, clip(s))
				}
				if name == "size" {
					cur.Size = v
				} else {
					cur.Timestamp = v
				}
			case "hash":
				var s string
				if err := dec.DecodeElement(&s, &t); err != nil {
					return nil, fmt.Errorf("metalink hash: %w", err)
				}
				depth--
				typ := strings.ToLower(strings.TrimSpace(attr(t, "type")))
				if typ == "md5" {
					continue // not verified: never trusted
				}
				sum, err := newChecksum(typ, s)
				if errors.Is(err, ErrUnsupportedChecksum) {
					continue
				}
				if err != nil {
					return nil, fmt.Errorf("metalink: repomd.xml's %w", err)
				}
				cur.Hashes = append(cur.Hashes, sum)
			case "resources":
				l.resStart = dec.InputOffset()
			case "url":
				var s string
				if err := dec.DecodeElement(&s, &t); err != nil {
					return nil, fmt.Errorf("metalink url: %w", err)
				}
				depth--
				sp := span{before, dec.InputOffset()}
				s = strings.TrimSpace(s)
				u, err := url.Parse(s)
				if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
					l.other = append(l.other, sp)
					continue
				}
				pref, _ := strconv.Atoi(attr(t, "preference"))
				base, _ := strings.CutSuffix(lowerScheme(s, u), repomdSuffix)
				if err := l.add(Mirror{Base: withSlash(base), Listed: s, Preference: pref, Location: attr(t, "location")}); err != nil {
					return nil, err
				}
				l.urls = append(l.urls, sp)
			}
		case xml.EndElement:
			depth--
			if !inFile {
				continue
			}
			switch t.Name.Local {
			case "alternate":
				cur = &l.Repomd[0]
			case "resources":
				if l.resEnd == 0 {
					l.resEnd = before
				}
			case "file":
				inFile = false
			}
		}
	}
	if !sawRoot {
		return nil, errors.New("metalink: no <metalink> element")
	}
	if len(l.Repomd) == 0 {
		return nil, errors.New("metalink: no entry for repomd.xml")
	}
	for i, v := range l.Repomd {
		if _, ok := v.Hash(); !ok {
			what := "repomd.xml"
			if i > 0 {
				what = fmt.Sprintf("repomd.xml's alternate %d", i)
			}
			return nil, fmt.Errorf("metalink: %s has no sha256, sha512 or sha1 hash", what)
		}
	}
	return l, nil
}

func attr(se xml.StartElement, name string) string {
	for _, a := range se.Attr {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// Rewrite returns raw, the bytes l was read from, with the mirrors in the
// given order (indexes into l.Mirrors; those left out follow in the list's
// order). Of a metalink only the <url> elements change (in order, each
// its new preference, 100 down); its hashes, sizes and alternates stay as
// they are, byte for byte: they are what dnf checks repomd.xml against.
func (l *MirrorList) Rewrite(raw []byte, order []int) ([]byte, error) {
	order = l.fullOrder(order)
	if !l.Metalink {
		var b bytes.Buffer
		b.WriteString("# mirrors in the order warren chose for this site\n")
		for _, i := range order {
			b.WriteString(l.Mirrors[i].Listed)
			b.WriteByte('\n')
		}
		return b.Bytes(), nil
	}
	if l.resStart < 0 || l.resEnd < l.resStart || l.resEnd > int64(len(raw)) || len(l.urls) != len(l.Mirrors) {
		return nil, errors.New("metalink: cannot find its resources to reorder")
	}
	var b bytes.Buffer
	b.Write(raw[:l.resStart])
	for n, i := range order {
		m := l.Mirrors[i]
		proto := "http"
		if m.HTTPS() {
			proto = "https"
		}
		fmt.Fprintf(&b, "\n      <url protocol=%q type=%q", proto, proto)
		if m.Location != "" {
			fmt.Fprintf(&b, " location=\"%s\"", html.EscapeString(m.Location))
		}
		fmt.Fprintf(&b, " preference=\"%d\">%s</url>", max(100-n, 1), html.EscapeString(m.Listed))
	}
	for _, sp := range l.other {
		b.WriteString("\n      ")
		b.Write(raw[sp.start:sp.end])
	}
	b.WriteString("\n    ")
	b.Write(raw[l.resEnd:])
	return b.Bytes(), nil
}

// fullOrder is order without repeats or strays, then the mirrors it left out.
func (l *MirrorList) fullOrder(order []int) []int {
	seen := make([]bool, len(l.Mirrors))
	out := make([]int, 0, len(l.Mirrors))
	for _, i := range order {
		if i >= 0 && i < len(seen) && !seen[i] {
			seen[i] = true
			out = append(out, i)
		}
	}
	for i := range seen {
		if !seen[i] {
			out = append(out, i)
		}
	}
	return out
}
