package chocolatey

import (
	"strings"
	"testing"
)

func TestNormalizeQuery(t *testing.T) {
	same := []struct{ rest, query string }{
		{"FindPackagesById()", "id='tool'&semVerLevel=2.0.0"},
		{"FindPackagesById()", "semVerLevel=2.0.0&id='tool'"},
		{"findpackagesbyid()", "semVerLevel=2.0.0&id=%27tool%27"},
		{"FindPackagesById%28%29", "id='tool'&semVerLevel=2.0.0"},
	}
	first, kind, err := NormalizeQuery(same[0].rest, same[0].query)
	if err != nil || kind != KindFind {
		t.Fatalf("%v %v", kind, err)
	}
	for _, c := range same[1:] {
		got, _, err := NormalizeQuery(c.rest, c.query)
		if err != nil || got != first {
			t.Errorf("%s?%s: %q, want %q (%v)", c.rest, c.query, got, first, err)
		}
	}
	differ := [][2]string{
		{"FindPackagesById()", "id='other'&semVerLevel=2.0.0"},
		{"FindPackagesById()", "id='tool'&semVerLevel=2.0.0&$skiptoken='tool','2.0.0'"},
		{"Search()", "id='tool'&semVerLevel=2.0.0"},
	}
	for _, c := range differ {
		if got, _, _ := NormalizeQuery(c[0], c[1]); got == first {
			t.Errorf("%s?%s normalises like a different call", c[0], c[1])
		}
	}
	kinds := map[string]QueryKind{
		"":                                      KindService,
		"$metadata":                             KindMetadata,
		"Packages(Id='tool',Version='2.0.0')":   KindPackage,
		"Packages()":                            KindFilter,
		"Search()":                              KindSearch,
		"GetUpdates()":                          KindUpdates,
		"Search()/$count":                       KindSearch,
		"Packages(Id='tool',Version='2.0.0')/x": KindOther,
	}
	for rest, want := range kinds {
		if _, got, err := NormalizeQuery(rest, ""); err != nil || got != want {
			t.Errorf("%q: %s %v, want %s", rest, got, err, want)
		}
	}
	for _, bad := range [][2]string{{"%zz", ""}, {"Search()", "q=%zz"}} {
		if _, _, err := NormalizeQuery(bad[0], bad[1]); err == nil {
			t.Errorf("%q?%q: no error", bad[0], bad[1])
		}
	}
}

func FuzzNormalizeQuery(f *testing.F) {
	f.Add("FindPackagesById()", "id='tool'&semVerLevel=2.0.0")
	f.Add("Packages()", "$filter=(tolower(Id)%20eq%20'tool')%20and%20IsLatestVersion&semVerLevel=2.0.0")
	f.Add("Packages(Id='tool',Version='2.0.0')", "")
	f.Add("GetUpdates()", "packageIds='a|b'&versions='1|2'&includePrerelease=false")
	f.Fuzz(func(t *testing.T, rest, query string) {
		key, kind, err := NormalizeQuery(rest, query)
		if err != nil {
			return
		}
		if kind == "" {
			t.Fatal("no kind")
		}
		// The normal form is a fixed point of itself.
		p, q, _ := strings.Cut(key, "?")
		again, kind2, err := NormalizeQuery(p, q)
		if err != nil && len(p)+len(q) > maxQueryLen {
			return // escaping made it longer than a call may be
		}
		if err != nil || again != key || kind2 != kind {
			t.Fatalf("normal form %q is not stable: %q %v %v", key, again, kind2, err)
		}
	})
}
