package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
)

// countingHandler counts the records logged at Warn and above.
type countingHandler struct{ warns *atomic.Int64 }

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countingHandler) WithGroup(string) slog.Handler            { return h }

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.warns.Add(1)
	}
	return nil
}

func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }

// TestRefusedPeersWarnedBounded: a refused peer is warned of once a minute
// per host, and what is kept to know that is bounded: a LAN host cycling
// through IPv6 source addresses (each a failed handshake) pushes the
// oldest out rather than growing the map without end, so the first host
// is warned of again.
func TestRefusedPeersWarnedBounded(t *testing.T) {
	var warns atomic.Int64
	n := &nodeTLS{log: slog.New(countingHandler{&warns}), warned: newWarnedHosts()}
	refused := errors.New("no certificate from the site CA")
	first := "[fd00:77::1]:40000"
	n.refuse(first, refused)
	n.refuse("[fd00:77::1]:40001", refused) // the same host, another port
	if got := warns.Load(); got != 1 {
		t.Fatalf("one host refused twice within a minute was warned of %d times, want 1", got)
	}
	const others = 5000
	for i := range others {
		n.refuse(fmt.Sprintf("[fd00:77::1:%x]:443", i), refused)
	}
	if got := n.warned.Len(); got > 4096 {
		t.Fatalf("%d hosts kept after %d refusals, want at most 4096", got, others+2)
	}
	before := warns.Load()
	n.refuse(first, refused)
	if warns.Load() != before+1 {
		t.Fatalf("the first host, pushed out by %d others, was not warned of again: the hosts warned of are not bounded", others)
	}
	if n.refused.Load() != others+3 {
		t.Fatalf("refused counts %d, want %d", n.refused.Load(), others+3)
	}
}
