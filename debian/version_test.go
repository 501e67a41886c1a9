package debian

import (
	"bufio"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
)

// versionOrder is a < b, a = b or a > b (want -1, 0, +1) in dpkg's order.
// Every case is checked both ways round.
var versionOrder = []struct {
	a, b string
	want int
}{
	// dpkg's own table: scripts/t/Dpkg_Version.t, every line.
	{"1.0-1", "2.0-2", -1},
	{"2.2~rc-4", "2.2-1", -1},
	{"2.2-1", "2.2~rc-4", 1},
	{"1.0000-1", "1.0-1", 0},
	{"1", "0:1", 0},
	{"0", "0:0-0", 0},
	{"2:2.5", "1:7.5", 1},
	{"1:0foo", "0foo", 1},
	{"0:0foo", "0foo", 0},
	{"0foo", "0foo", 0},
	{"0foo-0", "0foo", 0},
	{"0foo", "0foo-0", 0},
	{"0foo", "0fo", 1},
	{"0foo-0", "0foo+", -1},
	{"0foo~1", "0foo", -1},
	{"0foo~foo+Bar", "0foo~foo+bar", -1},
	{"0foo~~", "0foo~", -1},
	{"1~", "1", -1},
	{"12345+that-really-is-some-ver-0", "12345+that-really-is-some-ver-10", -1},
	{"0foo-0", "0foo-01", -1},
	{"0foo.bar", "0foobar", 1},
	{"0foo.bar", "0foo1bar", 1},
	{"0foo.bar", "0foo0bar", 1},
	{"0foo1bar-1", "0foobar-1", -1},
	{"0foo2.0", "0foo2", 1},
	{"0foo2.0.0", "0foo2.10.0", -1},
	{"0foo2.0", "0foo2.0.0", -1},
	{"0foo2.0", "0foo2.10", -1},
	{"0foo2.1", "0foo2.10", -1},
	{"1.09", "1.9", 0},
	{"1.0.8+nmu1", "1.0.8", 1},
	{"3.11", "3.10+nmu1", 1},
	{"0.9j-20080306-4", "0.9i-20070324-2", 1},
	{"1.2.0~b7-1", "1.2.0~b6-1", 1},
	{"1.011-1", "1.06-2", 1},
	{"0.0.9+dfsg1-1", "0.0.8+dfsg1-3", 1},
	{"4.6.99+svn6582-1", "4.6.99+svn6496-1", 1},
	{"53", "52", 1},
	{"0.9.9~pre122-1", "0.9.9~pre111-1", 1},
	{"2:2.3.2-2+lenny2", "2:2.3.2-2", 1},
	{"1:3.8.1-1", "3.8.GA-1", 1},
	{"1.0.1+gpl-1", "1.0.1-2", 1},
	{"1a", "1000a", -1},

	// dpkg's lib/dpkg/t/t-version.c, as strings (its "a" and "b" upstream
	// versions get a leading digit, which a version string needs).
	{"1-1", "2-1", -1},
	{"1-1", "1-2", -1},
	{"0-0", "0-0", 0},
	{"0-00", "00-0", 0},
	{"1:2-3", "1:2-3", 0},
	{"0-0", "1:0-0", -1},
	{"0a-0", "0b-0", -1},
	{"0-a", "0-b", -1},
	{"0:0.0-0.0", "0.0-0.0", 0},
	{"0:0-0-0", "0-0-0", 0},
	{"0:0:0-0", "0:0:0-00", 0},

	// Epochs: numbers, before everything else, 0 when absent.
	{"1:1.0", "2.0", 1},
	{"1:0", "999999", 1},
	{"2:0", "1:9", 1},
	{"10:1", "9:1", 1},
	{"0:1.0", "1.0", 0},
	{"007:1", "7:1", 0},
	{"+1:1", "1:1", 0}, // dpkg reads the epoch with strtol
	{"-0:1", "1", 0},
	{"2147483647:0", "2147483646:9", 1},

	// '~' sorts before anything, even the end of the string.
	{"1.0~rc1", "1.0", -1},
	{"1.0~", "1.0", -1},
	{"1.0~~", "1.0~", -1},
	{"1.0~~", "1.0~~a", -1},
	{"1.0~~a", "1.0~", -1},
	{"1.0~rc1", "1.0~rc2", -1},
	{"1.0~alpha", "1.0~beta", -1},
	{"1.0~rc1-1", "1.0-1", -1},
	{"2.30-1~bpo12+1", "2.30-1", -1},
	{"1.0-1~deb12u1", "1.0-1", -1},
	{"1.0~rc1", "0.9", 1},

	// '+', and letters before everything else but '~'.
	{"1.0+dfsg1", "1.0", 1},
	{"1.0+dfsg1-1", "1.0-1", 1},
	{"1.0+dfsg1", "1.0.1", -1},
	{"1.0a", "1.0+b1", -1},
	{"1.0a", "1.0.", -1},
	{"1.0", "1.0a", -1},
	{"1.0Z", "1.0a", -1},
	{"1.0.0", "1.0.a", -1},
	{"1.0.", "1.0.0", 0},
	{"5.9-4", "5.9-4+b15", -1},

	// Numbers compare as numbers, of any length.
	{"1.9-1", "1.10-1", -1},
	{"1.9", "1.10", -1},
	{"1.010", "1.9", 1},
	{"9", "10", -1},
	{"1.18446744073709551616", "1.18446744073709551615", 1},
	{"1.99999999999999999999999999999999999999", "1.100000000000000000000000000000000000000", -1},
	{"1.000000000000000000000000000000000000001", "1.1", 0},
	{"20240101000000000000000000", "2024010100000000000000000", 1},
	{"0.0~git20150106.0.6724a57-2.1", "0.0~git20150106.0.6724a57-2.01", 0},

	// The revision: after the last '-', "0" when absent.
	{"1.0", "1.0-0", 0},
	{"1.0-1", "1.0", 1},
	{"1.0-0.1", "1.0", 1},
	{"1-2-3", "1-2-4", -1},
	{"1.0-1-1", "1.0-1.1", 1},
	{"1.0-a", "1.0-0", 1},

	// ':' upstream, where an epoch allows it.
	{"1:1.0:2-1", "1:1.0:1-1", 1},
	{"1:1.0:2", "1:1.0.2", 1},

	// Real upgrades from bookworm to its point releases and security
	// updates, each of which byte order gets wrong.
	{"22.11.11-0+deb12u1", "22.11.7-1~deb12u1", 1},
	{"2.36-9+deb12u14", "2.36-9+deb12u7", 1},
	{"1:9.2p1-2+deb12u10", "1:9.2p1-2+deb12u7", 1},
	{"7.88.1-10+deb12u15", "7.88.1-10+deb12u5", 1},
	{"1.6.5+dfsg-1+deb12u14", "1.6.5+dfsg-1+deb12u9", 1},
}

func TestCompareVersions(t *testing.T) {
	for _, tt := range versionOrder {
		t.Run(tt.a+" vs "+tt.b, func(t *testing.T) {
			if got := CompareVersions(tt.a, tt.b); got != tt.want {
				t.Errorf("CompareVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
			}
			if got := CompareVersions(tt.b, tt.a); got != -tt.want {
				t.Errorf("CompareVersions(%q, %q) = %d, want %d", tt.b, tt.a, got, -tt.want)
			}
		})
	}
}

// TestVersionOrderDefeatsStrings shows that the table above tells dpkg's
// order from the byte order preload used: most of it disagrees.
func TestVersionOrderDefeatsStrings(t *testing.T) {
	wrong := 0
	for _, tt := range versionOrder {
		if strings.Compare(tt.a, tt.b) != tt.want {
			wrong++
		}
	}
	if wrong < len(versionOrder)/2 {
		t.Errorf("byte order gets %d of %d cases wrong; the table no longer tells it from dpkg's", wrong, len(versionOrder))
	}
	t.Logf("byte order gets %d of %d cases wrong", wrong, len(versionOrder))
}

func TestParseVersion(t *testing.T) {
	for _, tt := range validVersions {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseVersion(tt.in)
			if err != nil || got != tt.want {
				t.Errorf("ParseVersion(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
		})
	}
	for _, tt := range invalidVersions {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseVersion(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.why) {
				t.Errorf("ParseVersion(%q) err = %v, want one saying %q", tt.in, err, tt.why)
			}
		})
	}
}

// validVersions are versions dpkg takes without complaint, split; most are
// lib/dpkg/t/t-version.c's.
var validVersions = []struct {
	in   string
	want Version
}{
	{"0", Version{0, "0", ""}},
	{"0:0", Version{0, "0", ""}},
	{"0:0-0", Version{0, "0", "0"}},
	{"0:0.0-0.0", Version{0, "0.0", "0.0"}},
	{"1:0", Version{1, "0", ""}},
	{"5:1", Version{5, "1", ""}},
	{"0:0-0-0", Version{0, "0-0", "0"}},
	{"0:0-0-0-0", Version{0, "0-0-0", "0"}},
	{"0:0:0-0", Version{0, "0:0", "0"}},
	{"0:0:0:0-0", Version{0, "0:0:0", "0"}},
	{"0:0:0-0-0", Version{0, "0:0-0", "0"}},
	{"0:0-0:0-0", Version{0, "0-0:0", "0"}},
	{"0:09azAZ.-+~:-0", Version{0, "09azAZ.-+~:", "0"}},
	{"0:0-azAZ09.+~", Version{0, "0", "azAZ09.+~"}},
	{"  \t0:0-1", Version{0, "0", "1"}},
	{"0:0-1\t  ", Version{0, "0", "1"}},
	{"\t  0:0-1  \t", Version{0, "0", "1"}},
	// strtol's leniencies, which dpkg keeps.
	{"+1:2", Version{1, "2", ""}},
	{"-0:2", Version{0, "2", ""}},
	{"007:2", Version{7, "2", ""}},
	{"\n1:0", Version{1, "0", ""}},
	{"2147483647:1", Version{math.MaxInt32, "1", ""}},
	{"1:2:", Version{1, "2:", ""}},
	{"2:1.0~rc1+dfsg-3~bpo12+1", Version{2, "1.0~rc1+dfsg", "3~bpo12+1"}},
	{"5.9-4+b15", Version{0, "5.9", "4+b15"}},
}

// invalidVersions are versions dpkg fails on or warns about, with what it
// says; most are lib/dpkg/t/t-version.c's.
var invalidVersions = func() []struct{ in, why string } {
	v := []struct{ in, why string }{
		{"", "version string is empty"},
		{"  ", "version string is empty"},
		{"0:", "nothing after colon"},
		{":1.0", "epoch in version is empty"},
		{"1.0-", "revision number is empty"},
		{"1:-", "revision number is empty"},
		{"0:0 0-1", "embedded spaces"},
		{"-1:0-1", "epoch in version is negative"},
		{"-999999999999999999999:0", "epoch in version is negative"},
		{"999999999999999999999999:0-1", "epoch in version is too big"},
		{"2147483648:0", "epoch in version is too big"},
		{"a:0-0", "epoch in version is empty"},
		{"A:0-0", "epoch in version is empty"},
		{"+:1", "epoch in version is empty"},
		{"1a:0", "epoch in version is not number"},
		{"1.0:2", "epoch in version is not number"},
		{"-0", "version number is empty"},
		{"0:-0", "version number is empty"},
		{"0:abc3-0", "does not start with digit"},
		{"foo5.2", "does not start with digit"},
		{"~1", "does not start with digit"},
		{"0:0-0:0", "invalid character in revision"},
		{"1.0\n", "invalid character in version number"},
		{"1.0\x00", "invalid character in version number"},
		{"1.0é", "invalid character in version number"},
	}
	for _, c := range "!#@$%&/|\\<>()[]{};,_=*^'" {
		v = append(v, struct{ in, why string }{"0:0" + string(c) + "-0", "invalid character in version number"})
	}
	for _, c := range "!#@$%&/|\\<>()[]{}:;,_=*^'" {
		v = append(v, struct{ in, why string }{"0:0-" + string(c), "invalid character in revision number"})
	}
	return v
}()

// TestCompareVersionsMalformed: what ParseVersion rejects orders below
// every valid version, and among its kind as plain strings.
func TestCompareVersionsMalformed(t *testing.T) {
	for _, tt := range invalidVersions {
		for _, valid := range []string{"0", "0~", "0~~", "1:0", "0-0"} {
			if got := CompareVersions(tt.in, valid); got != -1 {
				t.Errorf("CompareVersions(%q, %q) = %d, want -1", tt.in, valid, got)
			}
			if got := CompareVersions(valid, tt.in); got != 1 {
				t.Errorf("CompareVersions(%q, %q) = %d, want 1", valid, tt.in, got)
			}
		}
		if got := CompareVersions(tt.in, tt.in); got != 0 {
			t.Errorf("CompareVersions(%q, itself) = %d", tt.in, got)
		}
	}
	vs := []string{"1.10", "abc", "1.9", "", "1.0-", "1:1", "~", "1.9~"}
	slices.SortFunc(vs, CompareVersions)
	want := []string{"", "1.0-", "abc", "~", "1.9~", "1.9", "1.10", "1:1"}
	if !slices.Equal(vs, want) {
		t.Errorf("sorted = %q, want %q", vs, want)
	}
}

// TestCompareVersionsAgainstDpkg asks this machine's dpkg about the table
// above, the malformed versions, neighbours among real versions, and
// pairs made from a seeded random source over a small alphabet. Where
// dpkg finds both versions good, CompareVersions must order them as it
// does; ParseVersion must refuse exactly the versions dpkg complains about.
func TestCompareVersionsAgainstDpkg(t *testing.T) {
	if _, err := exec.LookPath("dpkg"); err != nil {
		// `make test` runs on Debian, which always has dpkg: never pass unseen there.
		if os.Getenv("WARREN_E2E") == "1" {
			t.Fatal("dpkg not found; `make test` runs on Debian, which has it")
		}
		t.Skip("no dpkg on this machine")
	}
	type pair struct{ a, b, from string }
	var pairs []pair
	for _, tt := range versionOrder {
		pairs = append(pairs, pair{tt.a, tt.b, "table"})
	}
	for _, tt := range validVersions {
		pairs = append(pairs, pair{tt.in, "1.0", "valid"})
	}
	for _, tt := range invalidVersions {
		// dpkg takes "" for no version at all, which is not a parse, and
		// no argument can hold a NUL.
		if tt.in != "" && !strings.Contains(tt.in, "\x00") {
			pairs = append(pairs, pair{tt.in, "1.0", "invalid"})
		}
	}
	real := readLines(t, "testdata/versions")
	slices.SortFunc(real, CompareVersions)
	for i := 1; i < len(real); i++ {
		pairs = append(pairs, pair{real[i-1], real[i], "real"})
	}
	rng := rand.New(rand.NewPCG(2026, 7))
	for generated := 0; generated < 600; {
		a := randomVersion(rng)
		b := randomVersion(rng)
		if rng.IntN(2) == 0 {
			b = mutateVersion(rng, a)
		}
		if b != "" { // a one-byte version may lose its byte
			pairs = append(pairs, pair{a, b, "random"})
			generated++
		}
	}

	type verdict struct {
		cmp          int
		goodA, goodB bool
	}
	verdicts := make([]verdict, len(pairs))
	var wg sync.WaitGroup
	work := make(chan int)
	for range 4 {
		wg.Go(func() {
			for i := range work {
				a, b := pairs[i].a, pairs[i].b
				// dpkg checks its first version first and stops at a
				// bad one: asking both ways round hears about each.
				aLess, errs1 := dpkgLess(t, a, b)
				bLess, errs2 := dpkgLess(t, b, a)
				v := verdict{
					goodA: !strings.Contains(errs1, "'"+a+"' has bad syntax"),
					goodB: !strings.Contains(errs2, "'"+b+"' has bad syntax"),
				}
				switch {
				case aLess:
					v.cmp = -1
				case bLess:
					v.cmp = 1
				}
				verdicts[i] = v
			}
		})
	}
	for i := range pairs {
		work <- i
	}
	close(work)
	wg.Wait()

	compared, refused := map[string]int{}, map[string]int{}
	for i, v := range verdicts {
		a, b, from := pairs[i].a, pairs[i].b, pairs[i].from
		for _, s := range []struct {
			v    string
			good bool
		}{{a, v.goodA}, {b, v.goodB}} {
			if _, err := ParseVersion(s.v); (err == nil) != s.good {
				t.Errorf("ParseVersion(%q) err = %v, but dpkg finds it good: %v", s.v, err, s.good)
			}
			if !s.good {
				refused[from]++
			}
		}
		if !v.goodA || !v.goodB {
			continue
		}
		compared[from]++
		if got := CompareVersions(a, b); got != v.cmp {
			t.Errorf("CompareVersions(%q, %q) = %d, dpkg says %d", a, b, got, v.cmp)
		}
	}
	total := 0
	for _, from := range []string{"table", "valid", "invalid", "real", "random"} {
		n := 0
		for _, p := range pairs {
			if p.from == from {
				n++
			}
		}
		t.Logf("%-7s %4d pairs, %4d both valid and compared with dpkg, %4d versions dpkg refuses", from, n, compared[from], refused[from])
		total += compared[from]
	}
	if compared["random"] < 400 {
		t.Errorf("only %d random pairs were good for dpkg: the generator makes too much junk", compared["random"])
	}
	t.Logf("%d of %d pairs compared with dpkg", total, len(pairs))
}

// dpkgLess runs dpkg --compare-versions a lt b, returning its answer and
// what it said on stderr (its complaints about bad versions).
func dpkgLess(t *testing.T, a, b string) (bool, string) {
	cmd := exec.Command("dpkg", "--compare-versions", "--", a, "lt", b)
	cmd.Env = append(os.Environ(), "LC_ALL=C", "DPKG_COLORS=never")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return true, stderr.String()
	case errors.As(err, &exit) && exit.ExitCode() == 1:
		return false, stderr.String()
	case errors.As(err, &exit) && exit.ExitCode() == 2 && strings.Contains(stderr.String(), "has bad syntax"):
		return false, stderr.String()
	}
	t.Errorf("dpkg --compare-versions -- %q lt %q: %v: %s", a, b, err, stderr.String())
	return false, stderr.String()
}

// randomVersion makes a version over a small alphabet: mostly well formed
// (an optional epoch, an upstream version that starts with a digit, an
// optional revision) so that most pairs get compared; now and then any
// string of the alphabet, to see ParseVersion refuse what dpkg refuses.
func randomVersion(r *rand.Rand) string {
	const all = "0123456789abzAZ.+~-:"
	pick := func(n int, from string) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = from[r.IntN(len(from))]
		}
		return string(b)
	}
	if r.IntN(8) == 0 {
		return pick(1+r.IntN(8), all)
	}
	var s strings.Builder
	if r.IntN(4) == 0 {
		s.WriteString(pick(1+r.IntN(2), "0123456789") + ":")
	}
	s.WriteString(pick(1, "0123456789"))
	s.WriteString(pick(r.IntN(7), "00112233456789..+~abzAZ:-"))
	if r.IntN(2) == 0 {
		s.WriteString("-" + pick(1+r.IntN(4), "0123456789..+~abZ"))
	}
	return s.String()
}

// mutateVersion changes, inserts or deletes one byte of v, for the near
// misses where orderings go wrong ("1.0" and "1.0~", "1.9" and "1.19").
func mutateVersion(r *rand.Rand, v string) string {
	const all = "0123456789abzAZ.+~-:"
	i := r.IntN(len(v) + 1)
	c := string(all[r.IntN(len(all))])
	switch {
	case r.IntN(3) == 0 && i < len(v):
		return v[:i] + v[i+1:]
	case r.IntN(2) == 0 && i < len(v):
		return v[:i] + c + v[i+1:]
	}
	return v[:i] + c + v[i:]
}

// readLines reads a testdata list: one entry a line, '#' comments.
func readLines(t *testing.T, name string) []string {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := sc.Text(); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
