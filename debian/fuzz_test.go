package debian

import (
	"bytes"
	"io"
	"os"
	"strings"
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

func FuzzParsePackages(f *testing.F) { fuzzIndex(f, "testdata/Packages", ParsePackages) }

func FuzzParseSources(f *testing.F) { fuzzIndex(f, "testdata/Sources", ParseSources) }

// fuzzIndex checks that a parser never hands out an entry that could name a
// file outside the archive or a bad digest.
func fuzzIndex(f *testing.F, seed string, parse func(io.Reader, func(Package) error) error) {
	if b, err := os.ReadFile(seed); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = parse(bytes.NewReader(data), func(p Package) error {
			if len(p.SHA256) != 64 || p.Size < 0 || checkRelPath(p.Filename) != nil {
				t.Fatalf("accepted a bad entry %+v", p)
			}
			return nil
		})
	})
}

// FuzzDependNames: a Depends field never yields an empty name or one with
// a version, architecture or separator left in it.
func FuzzDependNames(f *testing.F) {
	f.Add("libc6 (>= 2.34), libgcc-s1 | libgcc1, python3:any, foo [amd64]")
	f.Add(", , |")
	f.Fuzz(func(t *testing.T, depends string) {
		for _, n := range DependNames(depends) {
			if n == "" || strings.ContainsAny(n, " (:[,|") {
				t.Fatalf("DependNames(%q) gave %q", depends, n)
			}
		}
	})
}
