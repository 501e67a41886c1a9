package rpm

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

func FuzzParseRepomd(f *testing.F) {
	if b, err := os.ReadFile("testdata/repomd.xml"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ds, err := ParseRepomd(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, d := range ds {
			if checkHref(d.Href) != nil || len(d.Checksum.Hex) != hexLen[d.Checksum.Algo] {
				t.Fatalf("accepted a bad entry %+v", d)
			}
		}
	})
}

func FuzzParsePrimary(f *testing.F) {
	for _, name := range []string{"testdata/primary.xml", "testdata/primary-mixed.xml"} {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = ParsePrimary(bytes.NewReader(data), func(p Package) error {
			if checkHref(p.Href) != nil || p.Size < 0 || len(p.Checksum.Hex) != hexLen[p.Checksum.Algo] {
				t.Fatalf("accepted a bad package %+v", p)
			}
			return nil
		})
	})
}

func FuzzParseMirrorList(f *testing.F) {
	for _, name := range []string{"testdata/metalink.xml", "testdata/mirrorlist.txt"} {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := ParseMirrorList(bytes.NewReader(data))
		if err != nil {
			return
		}
		if len(l.Mirrors) == 0 || len(l.Mirrors) > MaxMirrors {
			t.Fatalf("accepted %d mirrors", len(l.Mirrors))
		}
		for _, m := range l.Mirrors {
			if !strings.HasPrefix(m.Base, "http://") && !strings.HasPrefix(m.Base, "https://") || !strings.HasSuffix(m.Base, "/") {
				t.Fatalf("accepted a mirror %+v", m)
			}
		}
		for _, v := range l.Repomd {
			if h, ok := v.Hash(); !ok || len(h.Hex) != hexLen[h.Algo] {
				t.Fatalf("accepted a repomd.xml version %+v", v)
			}
		}
		// Its rewrite is a list of the same mirrors.
		out, err := l.Rewrite(data, []int{len(l.Mirrors) - 1})
		if err != nil {
			return
		}
		again, err := ParseMirrorList(bytes.NewReader(out))
		if err != nil || len(again.Mirrors) != len(l.Mirrors) {
			t.Fatalf("the rewrite of an accepted list: %v, %d mirrors of %d\n%q\n%q", err, len(again.Mirrors), len(l.Mirrors), data, out)
		}
	})
}
