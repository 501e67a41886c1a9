package feedserver

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"
)

func TestBudgetWindow(t *testing.T) {
	b := &budget{feed: "", rate: Rate{3, 300 * time.Millisecond}, maxWait: time.Second, log: slog.New(slog.DiscardHandler)}
	ctx := context.Background()
	var at []time.Time
	for i := range 7 {
		if err := b.take(ctx); err != nil {
			t.Fatalf("take %d: %v", i, err)
		}
		at = append(at, time.Now())
	}
	// Never more than 3 grants in any 300ms: grant i+3 comes at least
	// 300ms after grant i (less the jitter of noting the time here).
	for i := 0; i+3 < len(at); i++ {
		if d := at[i+3].Sub(at[i]); d < 290*time.Millisecond {
			t.Fatalf("grants %d and %d only %s apart", i, i+3, d)
		}
	}
	if st := b.stats(); st.Waits < 2 {
		t.Fatalf("%d waits, want at least 2", st.Waits)
	}
	// A wait past maxWait is refused with the time to retry.
	short := &budget{rate: Rate{1, time.Hour}, maxWait: time.Millisecond, log: slog.New(slog.DiscardHandler)}
	if err := short.take(ctx); err != nil {
		t.Fatal(err)
	}
	var be *BudgetError
	if err := short.take(ctx); !errors.As(err, &be) || be.RetryAfter < 59*time.Minute {
		t.Fatalf("over budget: %v", err)
	}
	// A 429 stops everything until its Retry-After.
	free := &budget{log: slog.New(slog.DiscardHandler)}
	free.tooManyRequests(time.Minute)
	if err := free.take(ctx); !errors.As(err, &be) {
		t.Fatalf("during a 429 block: %v", err)
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]Rate{"15/min": {15, time.Minute}, "2/s": {2, time.Second}, "100/h": {100, time.Hour}, "0": {}} {
		if got, err := ParseRate(in); err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "fast", "0/min", "-1/min", "15/fortnight", "15"} {
		if _, err := ParseRate(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	for host, want := range map[string]bool{"community.chocolatey.org": true, "community.chocolatey.org:443": true, "chocolatey.org": true,
		"proget.example": false, "evilchocolatey.org": false} {
		if isCommunityHost(host) != want {
			t.Errorf("isCommunityHost(%q) != %v", host, want)
		}
	}
}
