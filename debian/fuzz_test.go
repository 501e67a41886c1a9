package debian

import (
	"bytes"
	"os"
	"testing"
)

func FuzzParseRelease(f *testing.F) {
	if b, err := os.ReadFile("testdata/InRelease"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rel, err := ParseRelease(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, e := range rel.Files {
			if len(e.SHA256) != 64 || e.Size < 0 || checkRelPath(e.Path) != nil {
				t.Fatalf("accepted a bad entry %+v", e)
			}
		}
	})
}

func FuzzParsePackages(f *testing.F) {
	if b, err := os.ReadFile("testdata/Packages"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = ParsePackages(bytes.NewReader(data), func(p Package) error {
			if len(p.SHA256) != 64 || p.Size < 0 || checkRelPath(p.Filename) != nil {
				t.Fatalf("accepted a bad package %+v", p)
			}
			return nil
		})
	})
}

func FuzzParseSources(f *testing.F) {
	if b, err := os.ReadFile("testdata/Sources"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = ParseSources(bytes.NewReader(data), func(p Package) error {
			if len(p.SHA256) != 64 || p.Size < 0 || checkRelPath(p.Filename) != nil {
				t.Fatalf("accepted a bad source file %+v", p)
			}
			return nil
		})
	})
}
