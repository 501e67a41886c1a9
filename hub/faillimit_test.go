package hub

import (
	"testing"
	"time"
)

func TestFailLimit(t *testing.T) {
	now := time.Unix(1000, 0)
	l := NewFailLimit(FailLimitConfig{Max: 3, Window: time.Minute, Addresses: 3, Now: func() time.Time { return now }})
	const a, b = "10.0.0.1:4000", "10.0.0.2:4000"
	type step struct {
		name    string
		advance time.Duration
		addr    string
		fail    bool          // a failed try after the check (unless blocked)
		blocked time.Duration // what Blocked says
		first   bool
		before  int
	}
	for _, s := range []step{
		{"first failure: logged", 0, a, true, 0, true, 0},
		{"second: not logged", time.Second, a, true, 0, false, 0},
		{"third: the last allowed", time.Second, a, true, 0, false, 0},
		{"fourth: refused for the window's rest", time.Second, a, true, 57 * time.Second, false, 0},
		{"refused again", 7 * time.Second, a, true, 50 * time.Second, false, 0},
		{"another address is untouched", 0, b, false, 0, false, 0},
		{"another address's failure is its own", 0, b, true, 0, true, 0},
		{"a's window over: it may try", 50 * time.Second, a, false, 0, false, 0},
		{"a's next failure: logged, with the last window's 5", 0, a, true, 0, true, 5},
		{"after a quiet window: nothing before", 3 * time.Minute, a, true, 0, true, 0},
		{"the same IPv4 address on another port counts with it", 0, "10.0.0.1:5000", true, 0, false, 0},
		{"an IPv6 /64 counts as one", 0, "[2001:db8::1]:80", true, 0, true, 0},
		{"its neighbour in the /64", 0, "[2001:db8::2]:80", true, 0, false, 0},
		{"a third in the /64", 0, "[2001:db8::3]:80", true, 0, false, 0},
		{"the /64 is refused", 0, "[2001:db8::ffff]:80", true, time.Minute, false, 0},
		{"another /64 is not", 0, "[2001:db8:0:1::1]:80", true, 0, true, 0},
	} {
		now = now.Add(s.advance)
		got := l.Blocked(s.addr)
		if got != s.blocked {
			t.Fatalf("%s: Blocked = %v, want %v", s.name, got, s.blocked)
		}
		if s.fail && got == 0 {
			if f := l.Failed(s.addr); f.First != s.first || f.Before != s.before {
				t.Fatalf("%s: Failed = %+v, want first %v, before %d", s.name, f, s.first, s.before)
			}
		}
	}
	// At most Addresses are remembered: the least recently failed goes.
	if l.seen.Len() != 3 {
		t.Fatalf("%d addresses remembered, want the bound, 3", l.seen.Len())
	}
	if l.Blocked("[2001:db8::1]:80") == 0 {
		t.Fatal("the /64 that failed lately was forgotten")
	}
}
