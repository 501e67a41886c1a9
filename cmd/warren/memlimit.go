package main

import (
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"strings"

	"github.com/dustin/go-humanize"
)

// minMemoryLimit is the smallest memory_limit taken, and its default. The
// daemon's heap in use is some 15-18 MB while it learns an archive's index
// or serves hundreds of clients; under a smaller limit the collector would
// run nearly all the time, spending the CPU the requests need, and the
// process would go over the limit anyway. At this limit a hub and a node
// learning an archive peak at 42-45 MB of RSS each (BenchmarkSiteLearning;
// 45-48 MB at 20 MiB, 46-48 MB at 24 MiB, with the same index options),
// under the 48 MB a small machine is promised. It costs time: working
// near the limit, the collector made learning a real-size Packages.xz take
// 1.7-3.7 s against 1.0-1.1 s at 24 MiB (BenchmarkIndexLearning,
// interleaved); a site server with memory to spare may give it more.
const minMemoryLimit = 16 << 20

// parseMemoryLimit reads memory_limit: a size such as 24MiB or 48MB, or 0
// or off for no limit (returned as 0).
func parseMemoryLimit(v string) (int64, error) {
	v = strings.TrimSpace(v)
	switch v {
	case "0", "off":
		return 0, nil
	case "":
		return 0, errors.New("memory_limit is empty: want a size such as 48MiB, or off for no limit")
	}
	n, err := humanize.ParseBytes(v)
	if err != nil {
		return 0, fmt.Errorf("memory_limit %q: want a size such as 48MiB, or off for no limit", v)
	}
	if n < minMemoryLimit {
		return 0, fmt.Errorf("memory_limit %q is below %s: the daemon's working set is some 15-20 MB, and under a smaller limit the garbage collector would run nearly all the time; give %s or more, or off for no limit",
			v, humanize.IBytes(minMemoryLimit), humanize.IBytes(minMemoryLimit))
	}
	if n > math.MaxInt64 {
		return 0, fmt.Errorf("memory_limit %q: too large; give a size such as 48MiB, or off for no limit", v)
	}
	return int64(n), nil
}

// applyMemoryLimit makes limit (0: none) the process's soft memory limit,
// the one GOMEMLIMIT sets: the garbage collector works harder near it
// instead of letting a burst (learning a whole archive's index) double the
// heap. GOMEMLIMIT in the environment wins: the runtime has read it already
// and it is left alone. It returns the limit in force and its source.
func applyMemoryLimit(limit int64, getenv func(string) string) (int64, string) {
	if getenv("GOMEMLIMIT") != "" {
		return debug.SetMemoryLimit(-1), "GOMEMLIMIT"
	}
	if limit == 0 {
		limit = math.MaxInt64 // the runtime's own "no limit"
	}
	debug.SetMemoryLimit(limit)
	return limit, "memory_limit"
}

// memoryLimitString prints a limit as the setting spells it.
func memoryLimitString(limit int64) string {
	if limit == math.MaxInt64 {
		return "off"
	}
	return strings.ReplaceAll(humanize.IBytes(uint64(limit)), " ", "")
}
