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
// hundred mirrors, a repomd.xml's current version and a few alternates,
// each with up to four hashes (md5, sha1, sha256, sha512). Every <url>
// and every URL line counts against MaxMirrors, whatever its protocol.
const (
	MaxMirrorListBytes = 4 << 20
	MaxMirrors         = 1000
	MaxAlternates      = 32
	maxHashes          = 8 // of one version of repomd.xml
	maxListLine        = 8 << 10
)

// Errors a list is refused with.
var (
	ErrNoMirror          = errors.New("the list names no http or https mirror")
	ErrTooManyMirrors    = fmt.Errorf("the list names more than %d mirrors", MaxMirrors)
	ErrListTooLarge      = fmt.Errorf("the list is larger than %d bytes", MaxMirrorListBytes)
	ErrTooManyAlternates = fmt.Errorf("the metalink names more than %d alternates of repomd.xml", MaxAlternates)
	ErrTooManyHashes     = fmt.Errorf("the metalink gives a version of repomd.xml more than %d hashes", maxHashes)
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

	// What Rewrite keeps of a metalink as it came: the bytes before its
	// <resources>' content and after it, and the elements in it that are
	// no http(s) mirror (rsync, ftp), each whole. Copies: the list's
	// bytes need not be kept.
	head, tail []byte
	other      [][]byte
	reorder    bool // a <resources> was found whole
}

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
// mirror, more than MaxMirrors URLs, more than MaxAlternates, or a
// malformed hash is refused whole.
func ParseMirrorList(r io.Reader) (*MirrorList, error) {
	raw, err := io.ReadAll(io.LimitReader(r, MaxMirrorListBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read the list: %w", err)
	}
	if len(raw) > MaxMirrorListBytes {
		return nil, ErrListTooLarge
	}
	head := raw[:min(len(raw), 512)]
	head = bytes.TrimLeft(bytes.TrimPrefix(head, []byte("\xef\xbb\xbf")), " \t\r\n")
	var l *MirrorList
	if bytes.HasPrefix(head, []byte("<")) {
		l, err = parseMetalink(raw)
	} else {
		l, err = parseMirrorlist(bytes.NewReader(raw))
	}
	if err != nil {
		return nil, err
	}
	if len(l.Mirrors) == 0 {
		return nil, ErrNoMirror
	}
	return l, nil
}

// Bytes is about what l holds in memory.
func (l *MirrorList) Bytes() int {
	n := len(l.head) + len(l.tail) + 200
	for _, o := range l.other {
		n += len(o) + 24
	}
	for _, m := range l.Mirrors {
		n += len(m.Base) + len(m.Listed) + len(m.Location) + 64
	}
	for _, v := range l.Repomd {
		n += 48
		for _, h := range v.Hashes {
			n += len(h.Algo) + len(h.Hex) + 32
		}
	}
	return n
}

// parseMirrorlist reads the plain form: a URL a line, '#' comments.
func parseMirrorlist(r io.Reader) (*MirrorList, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxListLine)
	l := &MirrorList{}
	urls := 0
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		u, err := url.Parse(line)
		if err != nil || u.Scheme == "" || u.Host == "" && u.Scheme != "file" {
			return nil, fmt.Errorf("mirror list line %d: %q is not a URL", n, clip(line))
		}
		if urls++; urls > MaxMirrors {
			return nil, ErrTooManyMirrors
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			continue // ftp, rsync: dnf's business, not warren's
		}
		l.Mirrors = append(l.Mirrors, Mirror{Base: withSlash(lowerScheme(line, u)), Listed: line})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("mirror list: %w", err)
	}
	return l, nil
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
// repomd.xml's entry, and of that entry's <resources> (the first one),
// its <url> elements.
func parseMetalink(raw []byte) (*MirrorList, error) {
	dec := newDecoder(bytes.NewReader(raw))
	l := &MirrorList{Metalink: true}
	var (
		sawRoot, inFile, done bool
		cur                   int   // the version of repomd.xml read: 0 the current one, else an alternate
		hashes                []int // hashes given of each
		depth                 int
		resLevel              int   // the depth of the <resources> read, 0 outside it
		resStart, resEnd      int64 = -1, -1
		children              int   // elements in it
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
					cur, hashes = 0, []int{0}
				}
				continue
			}
			if resLevel > 0 {
				// An element of <resources>: a mirror, or kept whole.
				if depth != resLevel+1 {
					continue
				}
				if children++; children > MaxMirrors {
					return nil, ErrTooManyMirrors
				}
				keep := name != "url"
				if !keep {
					var s string
					if err := dec.DecodeElement(&s, &t); err != nil {
						return nil, fmt.Errorf("metalink url: %w", err)
					}
					depth--
					s = strings.TrimSpace(s)
					u, err := url.Parse(s)
					if err == nil && u.Host != "" && (u.Scheme == "http" || u.Scheme == "https") {
						pref, _ := strconv.Atoi(attr(t, "preference"))
						base, _ := strings.CutSuffix(lowerScheme(s, u), repomdSuffix)
						l.Mirrors = append(l.Mirrors, Mirror{Base: withSlash(base), Listed: s, Preference: pref, Location: attr(t, "location")})
						continue
					}
				} else {
					if err := dec.Skip(); err != nil {
						return nil, fmt.Errorf("metalink resources: %w", err)
					}
					depth--
				}
				l.other = append(l.other, bytes.Clone(raw[before:dec.InputOffset()]))
				continue
			}
			switch name {
			case "alternate":
				if len(l.Repomd) > MaxAlternates {
					return nil, ErrTooManyAlternates
				}
				l.Repomd = append(l.Repomd, RepomdVersion{Size: -1})
				cur, hashes = len(l.Repomd)-1, append(hashes, 0)
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
					l.Repomd[cur].Size = v
				} else {
					l.Repomd[cur].Timestamp = v
				}
			case "hash":
				if hashes[cur]++; hashes[cur] > maxHashes {
					return nil, ErrTooManyHashes
				}
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
				l.Repomd[cur].Hashes = append(l.Repomd[cur].Hashes, sum)
			case "resources":
				if resStart < 0 {
					resLevel, resStart = depth, dec.InputOffset()
				}
			}
		case xml.EndElement:
			if inFile && resLevel > 0 && depth == resLevel && t.Name.Local == "resources" {
				resLevel, resEnd = 0, before
			}
			depth--
			if !inFile {
				continue
			}
			switch t.Name.Local {
			case "alternate":
				cur = 0
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
	if resStart >= 0 && resEnd >= resStart {
		l.head, l.tail, l.reorder = bytes.Clone(raw[:resStart]), bytes.Clone(raw[resEnd:]), true
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

// Rewrite returns the list l was read from with the mirrors in the given
// order (indexes into l.Mirrors; those left out follow in the list's
// order). Of a metalink only its <resources>' <url> elements change (in
// order, each its new preference, 100 down; the other elements there
// follow as they were); its hashes, sizes and alternates stay as they
// are, byte for byte: they are what dnf checks repomd.xml against.
func (l *MirrorList) Rewrite(order []int) ([]byte, error) {
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
	if !l.reorder {
		return nil, errors.New("metalink: cannot find its resources to reorder")
	}
	var b bytes.Buffer
	b.Write(l.head)
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
	for _, o := range l.other {
		b.WriteString("\n      ")
		b.Write(o)
	}
	b.WriteString("\n    ")
	b.Write(l.tail)
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
