// Package xmlbound bounds what an XML document can cost the parser that
// reads it: it sits between the bytes and encoding/xml, follows the markup
// with a small state machine, and fails the read once elements nest deeper
// than MaxDepth, one token (text, a tag, a comment) grows past MaxToken,
// or one element has more than MaxAttrs attributes. encoding/xml keeps a
// stack entry per open element, buffers each token whole and makes an
// xml.Attr (some 60 bytes, and a namespace entry for an xmlns one) of
// each attribute, so without it a 1 MB compressed file of nested elements
// or of spaces grows the daemon by gigabytes, and a 4 MB tag of a=""
// attributes allocates 200 MB.
//
// It checks cost, not validity: the decoder behind it still rejects what
// is malformed.
package xmlbound

import (
	"errors"
	"fmt"
	"io"
)

// Defaults fit every real repository document many times over: primary.xml
// nests 5 deep and Chocolatey's feeds 4; their longest token (a package's
// description or release notes) is a few KB.
const (
	DefaultMaxDepth = 64
	DefaultMaxToken = 4 << 20
	// MaxAttrs bounds the attributes of one element: real documents
	// have a handful (an rpm:entry six, a feed's root its namespaces).
	MaxAttrs = 256
)

// ErrTooDeep and ErrTokenTooLarge say why a document was refused.
var (
	ErrTooDeep       = errors.New("XML elements nest too deep")
	ErrTokenTooLarge = errors.New("XML token too large")
	ErrTooManyAttrs  = errors.New("XML element with too many attributes")
)

type state uint8

const (
	inText state = iota
	inMarkupStart
	inTag
	inQuote
	inComment
	inCDATA
	inPI
	inDecl
)

// Reader passes the bytes of r through while it checks them.
type Reader struct {
	r        io.Reader
	maxDepth int
	maxToken int
	err      error

	state  state
	run    int    // bytes of the current token
	depth  int    // open elements
	attrs  int    // attributes of the start tag being read
	pre    []byte // what follows '<' until the kind of markup is known
	endTag bool   // the tag being read is </...>
	slash  bool   // the tag's last byte outside quotes was '/'
	quote  byte
	last   [2]byte // the two bytes before this one, for "-->", "]]>", "?>"
	offset int64
}

// NewReader bounds r by maxDepth and maxToken (the defaults when <= 0).
func NewReader(r io.Reader, maxDepth, maxToken int) *Reader {
	if maxDepth <= 0 {
		maxDepth = DefaultMaxDepth
	}
	if maxToken <= 0 {
		maxToken = DefaultMaxToken
	}
	return &Reader{r: r, maxDepth: maxDepth, maxToken: maxToken, pre: make([]byte, 0, 8)}
}

func (b *Reader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.r.Read(p)
	for i := 0; i < n; i++ {
		if cerr := b.step(p[i]); cerr != nil {
			// The decoder never sees the byte that broke a bound.
			b.err = fmt.Errorf("at byte %d: %w", b.offset+int64(i), cerr)
			return i, b.err
		}
	}
	b.offset += int64(n)
	return n, err
}

const (
	commentOpen = "!--"
	cdataOpen   = "![CDATA["
)

func (b *Reader) step(c byte) error {
	b.run++
	if b.run > b.maxToken {
		return fmt.Errorf("%w: more than %d bytes", ErrTokenTooLarge, b.maxToken)
	}
	switch b.state {
	case inText:
		if c == '<' {
			b.state, b.run, b.pre = inMarkupStart, 1, b.pre[:0]
		}
	case inMarkupStart:
		b.pre = append(b.pre, c)
		switch {
		case b.pre[0] == '!':
			switch {
			case string(b.pre) == commentOpen:
				b.state = inComment
			case string(b.pre) == cdataOpen:
				b.state = inCDATA
			case len(b.pre) <= len(commentOpen) && commentOpen[:len(b.pre)] == string(b.pre),
				len(b.pre) <= len(cdataOpen) && cdataOpen[:len(b.pre)] == string(b.pre):
				// still either
			default:
				b.state = inDecl
				if c == '>' {
					b.endMarkup()
				}
			}
		case b.pre[0] == '?':
			b.state = inPI
		case b.pre[0] == '/':
			b.state, b.endTag, b.slash = inTag, true, false
		default:
			b.state, b.endTag, b.slash, b.attrs = inTag, false, false, 0
			return b.tagByte(c)
		}
	case inTag:
		return b.tagByte(c)
	case inQuote:
		if c == b.quote {
			b.state = inTag
		}
	case inComment:
		if c == '>' && b.last == [2]byte{'-', '-'} {
			b.endMarkup()
		}
	case inCDATA:
		if c == '>' && b.last == [2]byte{']', ']'} {
			b.endMarkup()
		}
	case inPI:
		if c == '>' && b.last[1] == '?' {
			b.endMarkup()
		}
	case inDecl:
		if c == '>' {
			b.endMarkup()
		}
	}
	b.last[0], b.last[1] = b.last[1], c
	return nil
}

func (b *Reader) tagByte(c byte) error {
	switch c {
	case '"', '\'':
		b.state, b.quote, b.slash = inQuote, c, false
	case '>':
		if b.endTag {
			b.depth--
		} else {
			// A self-closing element is one level deeper too, for the
			// moment between its start and its end.
			if b.depth+1 > b.maxDepth {
				return fmt.Errorf("%w: more than %d open elements", ErrTooDeep, b.maxDepth)
			}
			if !b.slash {
				b.depth++
			}
		}
		b.endMarkup()
	case ' ', '\t', '\r', '\n':
	case '=':
		// Outside quotes, '=' in a start tag is an attribute's.
		b.slash = false
		if b.attrs++; b.attrs > MaxAttrs && !b.endTag {
			return fmt.Errorf("%w: more than %d", ErrTooManyAttrs, MaxAttrs)
		}
	default:
		b.slash = c == '/'
	}
	b.last[0], b.last[1] = b.last[1], c
	return nil
}

func (b *Reader) endMarkup() {
	b.state, b.run = inText, 0
}
