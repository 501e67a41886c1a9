package rpm

import (
	"bytes"
	"os"
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
