package mdns

import (
	"strings"
	"testing"
)

func TestTXTRoundTrip(t *testing.T) {
	cfg := Config{ID: strings.Repeat("ab", 16), Port: 3142, Priority: 250, Passive: true}
	f, err := ParseTXT(TXT(cfg))
	if err != nil {
		t.Fatal(err)
	}
	if f.ID != cfg.ID || f.Port != 3142 || f.Priority != 250 || !f.Passive {
		t.Fatalf("got %+v", f)
	}
}

func TestParseTXTRejects(t *testing.T) {
	good := TXT(Config{ID: strings.Repeat("0", 32), Port: 1, Priority: 1})
	tests := map[string][]string{
		"no version":    good[1:],
		"other version": append([]string{"v=2"}, good[1:]...),
		"short id":      {"v=1", "id=abc", "prio=1", "port=1"},
		"upper id":      {"v=1", "id=" + strings.Repeat("A", 32), "prio=1", "port=1"},
		"bad prio":      {"v=1", "id=" + strings.Repeat("0", 32), "prio=x", "port=1"},
		"bad port":      {"v=1", "id=" + strings.Repeat("0", 32), "prio=1", "port=70000"},
	}
	for name, txt := range tests {
		if _, err := ParseTXT(txt); err == nil {
			t.Errorf("%s: accepted %q", name, txt)
		}
	}
}

func FuzzParseTXT(f *testing.F) {
	f.Add(strings.Join(TXT(Config{ID: strings.Repeat("0", 32), Port: 3142, Priority: 100}), "\n"))
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseTXT(strings.Split(s, "\n"))
		if err == nil && (len(got.ID) != 32 || got.Port == 0) {
			t.Fatalf("accepted %+v", got)
		}
	})
}
