package chocolatey

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"github.com/warren-cache/warren/internal/xmlbound"
)

// EntryEdit changes one entry of a feed page: where its package downloads
// from, and the hash and size it has there (a hub's rewritten package).
type EntryEdit struct {
	ContentSrc string // "" keeps it
	// HashB64 is the package's SHA512, base64, as PackageHash gives it;
	// "" keeps the hash and the size.
	HashB64 string
	Size    int64
}

// EditEntries changes the entries of a feed page (or a single entry) that
// edit says to, and leaves every other byte as it was. An entry the
// parser leaves out (ParseFeed's Skipped) is not offered to edit.
func EditEntries(body []byte, edit func(Entry) (EntryEdit, bool)) ([]byte, error) {
	dec := xml.NewDecoder(xmlbound.NewReader(bytes.NewReader(body), 0, 0))
	dec.Strict = true
	dec.CharsetReader = func(label string, in io.Reader) (io.Reader, error) {
		if strings.EqualFold(label, "utf-8") {
			return in, nil
		}
		return nil, fmt.Errorf("encoding %q is not supported", clip(label))
	}
	type span struct {
		start, end int64
		ed         EntryEdit
	}
	var spans []span
	edited := map[string]EntryEdit{}
	depth := 0
	for {
		start := dec.InputOffset()
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
			if t.Name.Space != nsAtom || t.Name.Local != "entry" || depth > 2 {
				continue
			}
			var xe xmlEntry
			if err := dec.DecodeElement(&xe, &t); err != nil {
				return nil, fmt.Errorf("feed entry: %w", err)
			}
			depth--
			e, err := xe.entry()
			if err != nil {
				continue
			}
			if ed, ok := edit(e); ok {
				spans = append(spans, span{start, dec.InputOffset(), ed})
				edited[e.ID+"/"+e.Version] = ed
			}
		case xml.EndElement:
			depth--
		}
	}
	if len(spans) == 0 {
		return body, nil
	}
	var out bytes.Buffer
	at := int64(0)
	for _, sp := range spans {
		if sp.start < at || sp.end > int64(len(body)) {
			return nil, errors.New("feed xml: entries out of order")
		}
		out.Write(body[at:sp.start])
		out.Write(editEntry(body[sp.start:sp.end], sp.ed))
		at = sp.end
	}
	out.Write(body[at:])
	// The edits are made on the bytes: read back, each must say what it
	// was to (an element written in a form the edit does not know, text
	// in a CDATA section that looks like one, would not).
	after, err := ParseFeed(bytes.NewReader(out.Bytes()))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEdit, err)
	}
	for _, e := range after.Entries {
		ed, ok := edited[e.ID+"/"+e.Version]
		if !ok {
			continue
		}
		if ed.ContentSrc != "" && e.ContentSrc != ed.ContentSrc {
			return nil, fmt.Errorf("%w: %s %s still downloads from %s", ErrEdit, e.ID, e.Version, clip(e.ContentSrc))
		}
		if ed.HashB64 != "" {
			if _, h, err := PackageHash(ed.HashB64, "SHA512"); err != nil || e.HashHex != h || e.HashAlgo != "sha512" {
				return nil, fmt.Errorf("%w: %s %s's PackageHash is not the one given", ErrEdit, e.ID, e.Version)
			}
		}
	}
	return out.Bytes(), nil
}

// ErrEdit is a page whose entries could not be edited as asked.
var ErrEdit = errors.New("feed page not edited")

var (
	// The second group is what is replaced: an element's text, an
	// attribute's quoted value.
	// (An element written empty, <x />, has no text to replace.)
	reHash     = regexp.MustCompile(`(<(?:[\w.-]+:)?PackageHash(?:\s[^>]*[^>/])?>)([^<]*)</`)
	reHashAlgo = regexp.MustCompile(`(<(?:[\w.-]+:)?PackageHashAlgorithm(?:\s[^>]*[^>/])?>)([^<]*)</`)
	reSize     = regexp.MustCompile(`(<(?:[\w.-]+:)?PackageSize(?:\s[^>]*[^>/])?>)([^<]*)</`)
	reSrc      = regexp.MustCompile(`(<(?:[\w.-]+:)?content\b[^>]*?\ssrc=)("[^"]*"|'[^']*')`)
)

// editEntry applies an edit to one entry's bytes.
func editEntry(entry []byte, ed EntryEdit) []byte {
	// replace puts with in place of re's second group in its first match.
	replace := func(re *regexp.Regexp, b []byte, with string) []byte {
		loc := re.FindSubmatchIndex(b)
		if loc == nil {
			return b
		}
		out := make([]byte, 0, len(b)+len(with))
		out = append(out, b[:loc[4]]...)
		out = append(out, with...)
		return append(out, b[loc[5]:]...)
	}
	if ed.HashB64 != "" {
		entry = replace(reHash, entry, xmlEscape(ed.HashB64))
		entry = replace(reHashAlgo, entry, "SHA512")
		entry = replace(reSize, entry, strconv.FormatInt(ed.Size, 10))
	}
	if ed.ContentSrc != "" {
		entry = replace(reSrc, entry, `"`+xmlEscape(ed.ContentSrc)+`"`)
	}
	return entry
}

func xmlEscape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
