package xmlbound

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestBounds(t *testing.T) {
	for _, tt := range []struct {
		name string
		doc  string
		want error
	}{
		{"primary-like", `<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment with <markup> in it -->
<metadata xmlns="http://linux.duke.edu/metadata/common" packages="1">
<package type="rpm"><name>a</name><checksum type="sha256" pkgid="YES">00</checksum>
<location href="a.rpm" xml:base="http://h/x?a=1&amp;b=&gt;/"/><size package="1"/>
<description><![CDATA[ <not> <markup> ]]></description><empty attr='/>' /></package>
</metadata>`, nil},
		{"at the depth", strings.Repeat("<a>", 64) + strings.Repeat("</a>", 64), nil},
		{"self-closing elements do not nest", "<r>" + strings.Repeat("<a/>", 1000) + "</r>", nil},
		{"nesting bomb", strings.Repeat("<a>", 65), ErrTooDeep},
		{"self-closing element past the depth", strings.Repeat("<a>", 64) + "<a/>", ErrTooDeep},
		{"nesting bomb with attributes", strings.Repeat(`<a b="/">`, 65), ErrTooDeep},
		{"text bomb", "<r>" + strings.Repeat(" ", 5<<20) + "</r>", ErrTokenTooLarge},
		{"text of '>'", "<r>" + strings.Repeat("> ", 3<<20) + "</r>", ErrTokenTooLarge},
		{"comment bomb", "<r><!--" + strings.Repeat("< ", 3<<20) + "--></r>", ErrTokenTooLarge},
		{"cdata bomb", "<r><![CDATA[" + strings.Repeat("<>", 3<<20) + "]]></r>", ErrTokenTooLarge},
		{"attribute bomb", `<r a="` + strings.Repeat("x", 5<<20) + `"/>`, ErrTokenTooLarge},
		{"at the attributes' bound", "<r " + strings.Repeat(`a="=" `, MaxAttrs) + "/>", nil},
		{"attributes bomb", "<r " + strings.Repeat(`a="" `, MaxAttrs+1) + "/>", ErrTooManyAttrs},
		{"namespaces bomb", "<r " + strings.Repeat(`xmlns:a='' `, MaxAttrs+1) + ">", ErrTooManyAttrs},
		{"attributes of many elements", "<r>" + strings.Repeat(`<a b="" c=""/>`, 1000) + "</r>", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// One byte a read: state must carry across reads.
			got, err := io.ReadAll(NewReader(iotest.OneByteReader(strings.NewReader(tt.doc)), 0, 0))
			if tt.want == nil {
				if err != nil || string(got) != tt.doc {
					t.Fatalf("a document within the bounds: %d of %d bytes, err %v", len(got), len(tt.doc), err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
		})
	}
}

// FuzzReader checks the state machine against encoding/xml: whatever it
// lets through whole, the decoder never finds nested deeper than the bound.
func FuzzReader(f *testing.F) {
	for _, s := range []string{"<a><b/></a>", "<a x='>'><!--<c>--><![CDATA[<d>]]></a>", "<?x?><!DOCTYPE a [<!ENTITY e 'v'>]><a/>", strings.Repeat("<a>", 5)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		const maxDepth = 4
		passed, err := io.ReadAll(NewReader(bytes.NewReader(doc), maxDepth, 1<<10))
		if err != nil {
			return
		}
		if !bytes.Equal(passed, doc) {
			t.Fatal("bytes changed in passing")
		}
		dec := xml.NewDecoder(bytes.NewReader(doc))
		depth := 0
		for {
			tok, err := dec.Token()
			if err != nil {
				return
			}
			switch tok.(type) {
			case xml.StartElement:
				depth++
				if depth > maxDepth {
					t.Fatalf("decoder found depth %d, the bound is %d", depth, maxDepth)
				}
			case xml.EndElement:
				depth--
			}
		}
	})
}
