package main

import (
	"math"
	"runtime/debug"
	"strings"
	"testing"
)

func TestParseMemoryLimit(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{in: "24MiB", want: 24 << 20},
		{in: "48MB", want: 48_000_000},
		{in: " 1GiB ", want: 1 << 30},
		{in: "off", want: 0},
		{in: "0", want: 0},
		{in: "", wantErr: "memory_limit is empty"},
		{in: "lots", wantErr: `memory_limit "lots": want a size such as 48MiB`},
		{in: "-5MiB", wantErr: `memory_limit "-5MiB": want a size`},
		{in: "8MiB", wantErr: `memory_limit "8MiB" is below 16 MiB`},
		{in: "100", wantErr: "give 16 MiB or more, or off"},
		{in: "16MiB", want: 16 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseMemoryLimit(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseMemoryLimit(%q) = %d, %v; want an error with %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseMemoryLimit(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

// The daemon applies the setting to the runtime, unless GOMEMLIMIT is
// set: read back from the runtime itself.
func TestApplyMemoryLimit(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	tests := []struct {
		name      string
		limit     int64
		env       string
		inForce   int64 // what the runtime has after
		wantLimit int64
		wantFrom  string
	}{
		{name: "the setting", limit: 48 << 20, inForce: 48 << 20, wantLimit: 48 << 20, wantFrom: "memory_limit"},
		{name: "off", limit: 0, inForce: math.MaxInt64, wantLimit: math.MaxInt64, wantFrom: "memory_limit"},
		// The runtime read GOMEMLIMIT at start (here: 40 MiB in force);
		// the setting must not replace it.
		{name: "GOMEMLIMIT wins", limit: 24 << 20, env: "40MiB", inForce: 40 << 20, wantLimit: 40 << 20, wantFrom: "GOMEMLIMIT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			debug.SetMemoryLimit(40 << 20) // as GOMEMLIMIT=40MiB would have at start
			getenv := func(k string) string {
				if k == "GOMEMLIMIT" {
					return tt.env
				}
				return ""
			}
			limit, from := applyMemoryLimit(tt.limit, getenv)
			if got := debug.SetMemoryLimit(-1); got != tt.inForce {
				t.Errorf("the runtime's limit is %d after applying %d (GOMEMLIMIT %q); want %d", got, tt.limit, tt.env, tt.inForce)
			}
			if limit != tt.wantLimit || from != tt.wantFrom {
				t.Errorf("applyMemoryLimit(%d) = %d, %q; want %d, %q", tt.limit, limit, from, tt.wantLimit, tt.wantFrom)
			}
		})
	}
}
