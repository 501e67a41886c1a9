package debian

import (
	"bytes"
	"cmp"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"unicode"
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
			checkDependNames(t, p.Depends)
			checkDependNames(t, p.Recommends)
			return nil
		})
	})
}

// FuzzDependNames: a Depends or Recommends field never yields an empty
// name or one with a version, qualifier, restriction, space or separator
// left in it.
func FuzzDependNames(f *testing.F) {
	f.Add("libc6 (>= 2.34), libgcc-s1 | libgcc1, python3:any, foo [amd64]")
	f.Add(", , |")
	f.Fuzz(checkDependNames)
}

func checkDependNames(t *testing.T, field string) {
	for _, n := range DependNames(field) {
		if n == "" || strings.ContainsAny(n, "(:[<,|") || strings.IndexFunc(n, unicode.IsSpace) >= 0 {
			t.Fatalf("DependNames(%q) gave %q", field, n)
		}
	}
}

// FuzzCompareVersions: CompareVersions is a total order on any strings
// (reflexive, antisymmetric, transitive, never a panic); on versions
// ParseVersion takes it agrees with tokenCompare, a second reading of
// deb-version(7); and ParseVersion's parts spell the version they came from.
func FuzzCompareVersions(f *testing.F) {
	for i, tt := range versionOrder {
		f.Add(tt.a, tt.b, versionOrder[(i+1)%len(versionOrder)].a)
	}
	f.Fuzz(func(t *testing.T, a, b, c string) {
		vs := []string{a, b, c}
		parsed := make([]Version, len(vs))
		valid := make([]bool, len(vs))
		for i, x := range vs {
			parsed[i], valid[i] = checkParse(t, x)
		}
		for i, x := range vs {
			for j, y := range vs {
				xy, yx := CompareVersions(x, y), CompareVersions(y, x)
				switch {
				case xy < -1 || xy > 1 || xy != -yx:
					t.Fatalf("CompareVersions(%q, %q) = %d but (%q, %q) = %d", x, y, xy, y, x, yx)
				case x == y && xy != 0:
					t.Fatalf("CompareVersions(%q, itself) = %d", x, xy)
				case valid[i] && valid[j] && xy != tokenCompare(parsed[i], parsed[j]):
					t.Fatalf("CompareVersions(%q, %q) = %d, tokenCompare says %d", x, y, xy, tokenCompare(parsed[i], parsed[j]))
				case valid[i] && !valid[j] && xy != 1:
					t.Fatalf("CompareVersions(%q, %q) = %d: a valid version must order above an invalid one", x, y, xy)
				}
				for _, z := range vs {
					// x <= y <= z gives x <= z, and x < z if either step is strict.
					if yz := CompareVersions(y, z); xy <= 0 && yz <= 0 {
						if xz := CompareVersions(x, z); xz != cmp.Or(xy, yz) {
							t.Fatalf("not transitive: %q vs %q = %d, %q vs %q = %d, %q vs %q = %d", x, y, xy, y, z, yz, x, z, xz)
						}
					}
				}
			}
		}
	})
}

// checkParse parses s, and checks that a version ParseVersion takes is its
// parts joined again.
func checkParse(t *testing.T, s string) (Version, bool) {
	v, err := ParseVersion(s)
	if err != nil {
		return v, false
	}
	tail := v.Upstream
	if v.Revision != "" {
		tail += "-" + v.Revision
	}
	// What precedes the tail is nothing, or an epoch and its colon.
	epoch, ok := strings.CutSuffix(strings.Trim(s, " \t"), tail)
	if !ok || epoch == "" && v.Epoch != 0 || epoch != "" && strings.Index(epoch, ":") != len(epoch)-1 ||
		v.Upstream == "" || !isDigit(v.Upstream[0]) || v.Epoch < 0 || v.Epoch > math.MaxInt32 {
		t.Fatalf("ParseVersion(%q) = %+v", s, v)
	}
	return v, true
}

// tokenCompare orders two versions by deb-version(7)'s description rather
// than dpkg's loop: each part is cut into (non-digit run, number) pairs,
// compared pair by pair, a missing pair being ("", 0); runs compare by
// weight, a missing byte weighing 0.
func tokenCompare(v, w Version) int {
	if c := cmp.Compare(v.Epoch, w.Epoch); c != 0 {
		return c
	}
	if c := tokenCompareParts(v.Upstream, w.Upstream); c != 0 {
		return c
	}
	return tokenCompareParts(v.Revision, w.Revision)
}

func tokenCompareParts(a, b string) int {
	ta, tb := tokens(a), tokens(b)
	for len(ta) < len(tb) {
		ta = append(ta, [2]string{})
	}
	for len(tb) < len(ta) {
		tb = append(tb, [2]string{})
	}
	for k := range ta {
		run := func(s string) []int {
			w := make([]int, max(len(ta[k][0]), len(tb[k][0])))
			for i := range s {
				switch c := s[i]; {
				case c == '~':
					w[i] = -1
				case 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z':
					w[i] = int(c)
				default:
					w[i] = int(c) + 256
				}
			}
			return w
		}
		if c := slices.Compare(run(ta[k][0]), run(tb[k][0])); c != 0 {
			return c
		}
		na, nb := strings.TrimLeft(ta[k][1], "0"), strings.TrimLeft(tb[k][1], "0")
		if c := cmp.Or(cmp.Compare(len(na), len(nb)), strings.Compare(na, nb)); c != 0 {
			return c
		}
	}
	return 0
}

// tokens cuts s into (non-digit run, digit run) pairs.
func tokens(s string) [][2]string {
	var out [][2]string
	for s != "" {
		i := strings.IndexFunc(s, func(r rune) bool { return '0' <= r && r <= '9' })
		if i < 0 {
			i = len(s)
		}
		j := strings.IndexFunc(s[i:], func(r rune) bool { return r < '0' || r > '9' })
		if j < 0 {
			j = len(s) - i
		}
		out = append(out, [2]string{s[:i], s[i : i+j]})
		s = s[i+j:]
	}
	return out
}
