package rpm

import (
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/warren-cache/warren/internal/xmlbound"
)

// Kind says what an RPM repository URL names.
type Kind int

const (
	// KindOther is anything else, cached by URL and revalidated.
	KindOther Kind = iota
	// KindRepomd is repodata/repomd.xml: the root, revalidated and parsed.
	KindRepomd
	// KindRepomdSignature is repomd.xml.asc or .key, revalidated.
	KindRepomdSignature
	// KindMetadata is a file under repodata/ that repomd.xml lists (primary,
	// filelists, other, updateinfo, modules, comps), usually named by its
	// checksum.
	KindMetadata
	// KindPackage is an .rpm or .drpm.
	KindPackage
	// KindMirrorList is a mirrorlist or metalink answer (mirrors.go): an
	// index file, kept by URL and revalidated.
	KindMirrorList
)

func (k Kind) String() string {
	switch k {
	case KindRepomd:
		return "rpm-repomd"
	case KindRepomdSignature:
		return "rpm-repomd-signature"
	case KindMetadata:
		return "rpm-metadata"
	case KindPackage:
		return "rpm-package"
	case KindMirrorList:
		return "rpm-mirrorlist"
	default:
		return "other"
	}
}

// Classify tells what the URL (host and path) names.
func Classify(host, p string) Kind {
	base := path.Base(p)
	switch {
	case strings.HasSuffix(base, ".rpm"), strings.HasSuffix(base, ".drpm"):
		return KindPackage
	case isMirrorList(host, p, base):
		return KindMirrorList
	case path.Base(path.Dir(p)) != "repodata":
		return KindOther
	case base == "repomd.xml":
		return KindRepomd
	case base == "repomd.xml.asc" || base == "repomd.xml.key":
		return KindRepomdSignature
	}
	return KindMetadata
}

// isMirrorList says whether a URL names a list of mirrors: Fedora's and
// CentOS Stream's /metalink, Rocky's /mirrorlist, AlmaLinux's
// /mirrorlist/9/baseos, Amazon Linux's mirror.list, CentOS 7's
// mirrorlist.centos.org.
func isMirrorList(host, p, base string) bool {
	return strings.HasPrefix(host, "mirrorlist.") || base == "metalink" || base == "mirrorlist" || base == "mirror.list" ||
		strings.HasSuffix(base, "metalink.xml") || strings.HasPrefix(p, "/mirrorlist/")
}

// IsPrimary reports whether the file name (or href) is a primary.xml, plain
// or compressed.
func IsPrimary(name string) bool {
	base := path.Base(name)
	for _, ext := range []string{"", ".gz", ".xz", ".bz2", ".zst"} {
		if strings.HasSuffix(base, "primary.xml"+ext) {
			return true
		}
	}
	return false
}

// RepoBase is the repository root of a URL path under repodata/: the
// directory that repomd.xml's and primary.xml's hrefs are relative to.
func RepoBase(p string) string {
	dir := path.Dir(path.Dir(p))
	if dir == "/" || dir == "." {
		return "/"
	}
	return dir + "/"
}

// Checksum is an algorithm (normalised: sha1, sha256, sha512) and hex.
type Checksum struct {
	Algo string
	Hex  string
}

var hexLen = map[string]int{"sha1": 40, "sha256": 64, "sha512": 128}

// ErrUnsupportedChecksum is a checksum type warren cannot verify.
var ErrUnsupportedChecksum = errors.New("checksum type not supported")

func newChecksum(typ, value string) (Checksum, error) {
	algo := strings.ToLower(strings.TrimSpace(typ))
	if algo == "sha" {
		algo = "sha1" // createrepo's old name for it
	}
	n, ok := hexLen[algo]
	if !ok {
		return Checksum{}, fmt.Errorf("%w: %q (sha1, sha256, sha512 are)", ErrUnsupportedChecksum, clip(typ))
	}
	v := strings.ToLower(strings.TrimSpace(value))
	if _, err := hex.DecodeString(v); err != nil || len(v) != n {
		return Checksum{}, fmt.Errorf("%s checksum %q is not %d hex digits", algo, clip(value), n)
	}
	return Checksum{Algo: algo, Hex: v}, nil
}

// checkHref refuses locations that could climb out of the repository.
func checkHref(h string) error {
	if h == "" || strings.HasPrefix(h, "/") || strings.Contains(h, "://") || path.Clean(h) != h || h == ".." || strings.HasPrefix(h, "../") {
		return fmt.Errorf("location %q is not a clean relative path", clip(h))
	}
	return nil
}

// Data is one <data> element of repomd.xml.
type Data struct {
	Type     string // primary, filelists, other, updateinfo, modules, group, ...
	Href     string // relative to the repository root
	Checksum Checksum
	Size     int64 // -1 when not given
}

type xmlChecksum struct {
	Type  string `xml:"type,attr"`
	Value string `xml:",chardata"`
}

type xmlData struct {
	Type     string      `xml:"type,attr"`
	Checksum xmlChecksum `xml:"checksum"`
	Location struct {
		Href string `xml:"href,attr"`
	} `xml:"location"`
	Size *int64 `xml:"size"`
}

// ParseRepomd reads repomd.xml.
func ParseRepomd(r io.Reader) ([]Data, error) {
	dec := newDecoder(r)
	var out []Data
	sawRoot := false
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("repomd.xml: %w", err)
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		switch se.Name.Local {
		case "repomd":
			sawRoot = true
		case "data":
			var d xmlData
			if err := dec.DecodeElement(&d, &se); err != nil {
				return nil, fmt.Errorf("repomd.xml data: %w", err)
			}
			sum, err := newChecksum(d.Checksum.Type, d.Checksum.Value)
			if err != nil {
				return nil, fmt.Errorf("repomd.xml data %q: %w", clip(d.Type), err)
			}
			if err := checkHref(d.Location.Href); err != nil {
				return nil, fmt.Errorf("repomd.xml data %q: %w", clip(d.Type), err)
			}
			size := int64(-1)
			if d.Size != nil {
				if *d.Size < 0 {
					return nil, fmt.Errorf("repomd.xml data %q: negative size", clip(d.Type))
				}
				size = *d.Size
			}
			out = append(out, Data{Type: d.Type, Href: d.Location.Href, Checksum: sum, Size: size})
		}
	}
	if !sawRoot {
		return nil, errors.New("repomd.xml: no <repomd> element")
	}
	return out, nil
}

// Package is what primary.xml says about one package file.
type Package struct {
	Href     string // relative to Base, or to the repository root when Base is ""
	Base     string // xml:base of the location, if any (an absolute URL)
	Checksum Checksum
	Size     int64
	Name     string // for a preload list's globs
	Arch     string
	// Epoch, Ver and Rel are its version (CompareEVR orders them).
	Epoch, Ver, Rel string
	// Provides and Requires are the capabilities the package offers and
	// needs (names only), for a preload list's dependencies.
	Provides []string
	Requires []string
}

// rpmEntry is one name of <rpm:provides> or <rpm:requires>.
type rpmEntry struct {
	Name string `xml:"name,attr"`
}

type xmlPackage struct {
	Name    string `xml:"name"`
	Arch    string `xml:"arch"`
	Version struct {
		Epoch string `xml:"epoch,attr"`
		Ver   string `xml:"ver,attr"`
		Rel   string `xml:"rel,attr"`
	} `xml:"version"`
	Format struct {
		Provides []rpmEntry `xml:"http://linux.duke.edu/metadata/rpm provides>entry"`
		Requires []rpmEntry `xml:"http://linux.duke.edu/metadata/rpm requires>entry"`
	} `xml:"format"`
	Checksum xmlChecksum `xml:"checksum"`
	Size     struct {
		Package *int64 `xml:"package,attr"`
	} `xml:"size"`
	Location struct {
		Href string `xml:"href,attr"`
		Base string `xml:"http://www.w3.org/XML/1998/namespace base,attr"`
	} `xml:"location"`
}

// ParsePrimary streams primary.xml (decompressed) and calls fn for every
// <package>. A malformed package, or one with a checksum type warren cannot
// verify, stops the parse with an error naming it.
func ParsePrimary(r io.Reader, fn func(Package) error) error {
	dec := newDecoder(r)
	sawRoot := false
	n := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("primary.xml after %d packages: %w", n, err)
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		switch se.Name.Local {
		case "metadata":
			sawRoot = true
		case "package":
			n++
			var xp xmlPackage
			if err := dec.DecodeElement(&xp, &se); err != nil {
				return fmt.Errorf("primary.xml package %d: %w", n, err)
			}
			p, err := xp.toPackage()
			if err != nil {
				return fmt.Errorf("primary.xml package %d (%s): %w", n, clip(xp.Name), err)
			}
			if err := fn(p); err != nil {
				return err
			}
		}
	}
	if !sawRoot {
		return errors.New("primary.xml: no <metadata> element")
	}
	return nil
}

func (xp xmlPackage) toPackage() (Package, error) {
	sum, err := newChecksum(xp.Checksum.Type, xp.Checksum.Value)
	if err != nil {
		return Package{}, err
	}
	if xp.Size.Package == nil || *xp.Size.Package < 0 {
		return Package{}, errors.New("no valid <size package=...>")
	}
	if err := checkHref(xp.Location.Href); err != nil {
		return Package{}, err
	}
	base := xp.Location.Base
	if base != "" && !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return Package{}, fmt.Errorf("xml:base %q is not an http(s) URL", clip(base))
	}
	p := Package{Href: xp.Location.Href, Base: base, Checksum: sum, Size: *xp.Size.Package, Name: xp.Name, Arch: xp.Arch,
		Epoch: xp.Version.Epoch, Ver: xp.Version.Ver, Rel: xp.Version.Rel}
	for _, e := range xp.Format.Provides {
		p.Provides = append(p.Provides, e.Name)
	}
	for _, e := range xp.Format.Requires {
		// rpmlib(...) are rpm's own features, no package provides them.
		if !strings.HasPrefix(e.Name, "rpmlib(") {
			p.Requires = append(p.Requires, e.Name)
		}
	}
	return p, nil
}

// newDecoder is strict: undefined entities (and so entity tricks) are
// errors, not expansions; and bounded: nesting and token size are capped,
// so a small compressed bomb cannot grow the daemon without end.
func newDecoder(r io.Reader) *xml.Decoder {
	dec := xml.NewDecoder(xmlbound.NewReader(r, 0, 0))
	dec.Strict = true
	dec.Entity = nil
	dec.CharsetReader = func(label string, in io.Reader) (io.Reader, error) {
		if strings.EqualFold(label, "utf-8") || strings.EqualFold(label, "us-ascii") {
			return in, nil
		}
		return nil, fmt.Errorf("encoding %q is not supported", clip(label))
	}
	return dec
}

func clip(s string) string {
	const max = 80
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// CompareEVR orders two versions as rpm does (epoch, then version, then
// release, each compared segment by segment: digits as numbers, letters
// as text, a tilde before anything): -1, 0 or 1.
func CompareEVR(a, b Package) int {
	ea, eb := a.Epoch, b.Epoch
	if ea == "" {
		ea = "0"
	}
	if eb == "" {
		eb = "0"
	}
	if c := vercmp(ea, eb); c != 0 {
		return c
	}
	if c := vercmp(a.Ver, b.Ver); c != 0 {
		return c
	}
	return vercmp(a.Rel, b.Rel)
}

func vercmp(a, b string) int {
	isAlnum := func(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	for {
		for len(a) > 0 && !isAlnum(a[0]) && a[0] != '~' {
			a = a[1:]
		}
		for len(b) > 0 && !isAlnum(b[0]) && b[0] != '~' {
			b = b[1:]
		}
		// A tilde sorts before anything, the end included.
		if len(a) > 0 && a[0] == '~' || len(b) > 0 && b[0] == '~' {
			switch {
			case len(a) == 0 || a[0] != '~':
				return 1
			case len(b) == 0 || b[0] != '~':
				return -1
			}
			a, b = a[1:], b[1:]
			continue
		}
		if len(a) == 0 || len(b) == 0 {
			switch {
			case len(a) == len(b):
				return 0
			case len(a) == 0:
				return -1
			}
			return 1
		}
		digits := a[0] >= '0' && a[0] <= '9'
		seg := func(s string) (string, string) {
			i := 0
			for i < len(s) && isAlnum(s[i]) && (s[i] >= '0' && s[i] <= '9') == digits {
				i++
			}
			return s[:i], s[i:]
		}
		var sa, sb string
		sa, a = seg(a)
		sb, b = seg(b)
		if sb == "" {
			// Numbers sort after letters.
			if digits {
				return 1
			}
			return -1
		}
		if digits {
			sa, sb = strings.TrimLeft(sa, "0"), strings.TrimLeft(sb, "0")
			if len(sa) != len(sb) {
				if len(sa) < len(sb) {
					return -1
				}
				return 1
			}
		}
		if c := strings.Compare(sa, sb); c != 0 {
			return c
		}
	}
}
