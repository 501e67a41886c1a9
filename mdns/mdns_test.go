package mdns

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/grandcat/zeroconf"
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

// A peer's A and AAAA records: IPv4 first, then IPv6; a link-local IPv6
// address only with the zone of the one interface browsed.
func TestAddrsOf(t *testing.T) {
	e := &zeroconf.ServiceEntry{
		AddrIPv4: []net.IP{net.ParseIP("10.0.0.5")},
		AddrIPv6: []net.IP{net.ParseIP("fe80::5"), net.ParseIP("fd00:77::5")},
	}
	for zone, want := range map[string]string{
		"":     "[10.0.0.5 fd00:77::5]",
		"eth0": "[10.0.0.5 fe80::5%eth0 fd00:77::5]",
	} {
		if got := fmt.Sprint(addrsOf(e, zone)); got != want {
			t.Errorf("zone %q: %s, want %s", zone, got, want)
		}
	}
	v6only := &zeroconf.ServiceEntry{AddrIPv6: []net.IP{net.ParseIP("fd00:77::6")}}
	if got := fmt.Sprint(addrsOf(v6only, "")); got != "[fd00:77::6]" {
		t.Errorf("an IPv6-only peer: %s", got)
	}
}

// Browse rounds rest 15 s, then twice as long each time up to 5 minutes,
// each with at most a fifth more at random: in steady state a member
// browses once in five minutes, not every 20-30 s.
func TestBrowseRestsDouble(t *testing.T) {
	want := []time.Duration{15 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute, 4 * time.Minute, 5 * time.Minute, 5 * time.Minute}
	for round, base := range append(want, make([]time.Duration, 60)...) {
		if base == 0 {
			base = maxRest
		}
		for range 20 {
			if got := restAfter(round); got < base || got > base+base/5 {
				t.Fatalf("round %d rests %s, want %s to %s", round, got, base, base+base/5)
			}
		}
	}
}

// A node whose table has emptied (a LAN outage outlived its peers' expiry,
// and no one greets anyone any more) browses again within a step, however
// long its rests had grown; one that knows peers keeps resting.
func TestLonelyNodeBrowsesAgainSoon(t *testing.T) {
	for _, lonely := range []bool{true, false} {
		ctx, cancel := context.WithCancel(t.Context())
		rounds := make(chan struct{}, 16)
		done := make(chan struct{})
		go func() {
			defer close(done)
			browseLoop(ctx, func(int) time.Duration { return time.Hour }, 5*time.Millisecond,
				func() bool { return lonely }, func() error { rounds <- struct{}{}; return nil })
		}()
		<-rounds // the first round, at once
		// Waiting for a round that must not come proves less the
		// shorter it is, but a rest of an hour cannot end in 200 ms.
		wait := 200 * time.Millisecond
		if lonely {
			wait = 5 * time.Second
		}
		select {
		case <-rounds:
			if !lonely {
				t.Error("a node that knows peers browsed again before its rest was over")
			}
		case <-time.After(wait):
			if lonely {
				t.Errorf("a lonely node did not browse again within %s (its rest is an hour)", wait)
			}
		}
		cancel()
		<-done
	}
}
