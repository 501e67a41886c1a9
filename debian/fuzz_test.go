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

func FuzzDecompressPackages(f *testing.F) {
	for _, name := range []string{"Packages.gz", "Packages.xz", "Packages.bz2"} {
		if b, err := os.ReadFile("testdata/" + name); err == nil {
			f.Add(name, b)
		}
	}
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		r, err := Decompress(name, bytes.NewReader(data), 4<<20) // small, to keep fuzzing fast
		if err != nil {
			return
		}
		defer r.Close()
		_ = ParsePackages(r, func(Package) error { return nil })
	})
}
