package chocolatey

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"github.com/warren-cache/warren/internal/xmlbound"
)

// Entry is one package of a feed page.
type Entry struct {
	ID         string
	Version    string
	ContentSrc string // the download URL, as the feed gives it
	// HashAlgo and HashHex are the package's digest from PackageHash and
	// PackageHashAlgorithm; empty when the feed gives none that warren can
	// verify.
	HashAlgo string
	HashHex  string
	Size     int64 // -1 when not given
}

// Feed is what a parsed response holds.
type Feed struct {
	Base    string // xml:base of the root element, if any
	Entries []Entry
	// Skipped says why entries were left out (odd ids, bad hashes).
	Skipped []string
}

const (
	nsAtom = "http://www.w3.org/2005/Atom"
	nsData = "http://schemas.microsoft.com/ado/2007/08/dataservices"
	nsMeta = "http://schemas.microsoft.com/ado/2007/08/dataservices/metadata"
	nsXML  = "http://www.w3.org/XML/1998/namespace"
)

type xmlEntry struct {
	ID      string `xml:"http://www.w3.org/2005/Atom id"`
	Title   string `xml:"http://www.w3.org/2005/Atom title"`
	Content struct {
		Src string `xml:"src,attr"`
	} `xml:"http://www.w3.org/2005/Atom content"`
	Props struct {
		ID       string `xml:"http://schemas.microsoft.com/ado/2007/08/dataservices Id"`
		Version  string `xml:"http://schemas.microsoft.com/ado/2007/08/dataservices Version"`
		Hash     string `xml:"http://schemas.microsoft.com/ado/2007/08/dataservices PackageHash"`
		HashAlgo string `xml:"http://schemas.microsoft.com/ado/2007/08/dataservices PackageHashAlgorithm"`
		Size     string `xml:"http://schemas.microsoft.com/ado/2007/08/dataservices PackageSize"`
	} `xml:"http://schemas.microsoft.com/ado/2007/08/dataservices/metadata properties"`
}

// entryKey reads Id and Version out of an entry's <id> URL, the last
// resort when neither properties nor title carry them.
var entryKey = regexp.MustCompile(`Packages\(Id='([^']*)',Version='([^']*)'\)`)

// ParseFeed reads a feed page (<feed>) or a single entry (<entry>, the
// answer to Packages(Id='x',Version='y')). Other documents (the service
// document, $metadata) parse to an empty feed with their xml:base.
func ParseFeed(r io.Reader) (*Feed, error) {
	// Bounded: nesting and token size capped (see xmlbound).
	dec := xml.NewDecoder(xmlbound.NewReader(r, 0, 0))
	dec.Strict = true
	dec.CharsetReader = func(label string, in io.Reader) (io.Reader, error) {
		if strings.EqualFold(label, "utf-8") {
			return in, nil
		}
		return nil, fmt.Errorf("encoding %q is not supported", clip(label))
	}
	feed := &Feed{}
	depth := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("feed xml: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			if depth == 1 {
				for _, a := range t.Attr {
					if a.Name.Space == nsXML && a.Name.Local == "base" {
						feed.Base = a.Value
					}
				}
			}
			if t.Name.Space != nsAtom || t.Name.Local != "entry" || depth > 2 {
				continue
			}
			var xe xmlEntry
			if err := dec.DecodeElement(&xe, &t); err != nil {
				return nil, fmt.Errorf("feed entry %d: %w", len(feed.Entries)+len(feed.Skipped)+1, err)
			}
			depth--
			e, err := xe.entry()
			if err != nil {
				feed.Skipped = append(feed.Skipped, err.Error())
				continue
			}
			feed.Entries = append(feed.Entries, e)
		case xml.EndElement:
			depth--
		}
	}
	return feed, nil
}

func (xe xmlEntry) entry() (Entry, error) {
	e := Entry{ID: strings.TrimSpace(xe.Props.ID), Version: strings.TrimSpace(xe.Props.Version), ContentSrc: strings.TrimSpace(xe.Content.Src), Size: -1}
	// Id: the property, else the entry's own URL; the title only on
	// galleries that map Id to it (Chocolatey's title is the display name).
	if m := entryKey.FindStringSubmatch(xe.ID); m != nil {
		if e.ID == "" {
			e.ID = m[1]
		}
		if e.Version == "" {
			e.Version = m[2]
		}
	}
	if e.ID == "" {
		e.ID = strings.TrimSpace(xe.Title)
	}
	if !ValidID(e.ID) {
		return Entry{}, fmt.Errorf("entry id %q is not a package id", clip(e.ID))
	}
	if !ValidVersion(e.Version) {
		return Entry{}, fmt.Errorf("entry %s: version %q is not a package version", e.ID, clip(e.Version))
	}
	if e.ContentSrc == "" {
		return Entry{}, fmt.Errorf("entry %s %s: no content src", e.ID, e.Version)
	}
	if xe.Props.Size != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(xe.Props.Size), 10, 64)
		if err != nil || n < 0 {
			return Entry{}, fmt.Errorf("entry %s %s: PackageSize %q is not a size", e.ID, e.Version, clip(xe.Props.Size))
		}
		e.Size = n
	}
	if xe.Props.Hash != "" {
		algo, h, err := PackageHash(xe.Props.Hash, xe.Props.HashAlgo)
		if err != nil {
			return Entry{}, fmt.Errorf("entry %s %s: %w", e.ID, e.Version, err)
		}
		e.HashAlgo, e.HashHex = algo, h
	}
	return e, nil
}

// PackageHash turns a feed's base64 PackageHash and its algorithm name
// (SHA512 when empty, as NuGet defaults) into a lowercase algorithm and hex.
func PackageHash(b64, algo string) (string, string, error) {
	a := strings.ToLower(strings.TrimSpace(algo))
	if a == "" {
		a = "sha512"
	}
	want := map[string]int{"sha512": 64, "sha256": 32, "sha1": 20}[a]
	if want == 0 {
		return "", "", fmt.Errorf("PackageHashAlgorithm %q is not supported (SHA512, SHA256, SHA1 are)", clip(algo))
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
	if err != nil {
		return "", "", fmt.Errorf("PackageHash %q is not base64", clip(b64))
	}
	if len(raw) != want {
		return "", "", fmt.Errorf("PackageHash is %d bytes, a %s is %d", len(raw), a, want)
	}
	return a, hex.EncodeToString(raw), nil
}

var (
	validID      = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$`)
	validVersion = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z.+-]{0,63}$`)
)

// ValidID reports whether s is a NuGet package id (letters, digits, '.',
// '-', '_'; nothing that could be a path).
func ValidID(s string) bool { return validID.MatchString(s) && !strings.Contains(s, "..") }

// ValidVersion reports whether s is a package version (SemVer 1 or 2).
func ValidVersion(s string) bool {
	return validVersion.MatchString(s) && !strings.Contains(s, "..")
}

func clip(s string) string {
	const max = 80
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
