package status

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/hub"
)

// Sources are where a Board reads what it shows, each at the moment a
// page, /_warren/stats or a scrape asks. Snapshot and Door are required.
type Sources struct {
	// Snapshot is the front's running totals by name (proxy's
	// Server.Snapshot). /_warren/stats shows them as they are; the page
	// and /metrics read requests, hits, misses, bytes_cache and
	// bytes_served from them.
	Snapshot func() map[string]int64
	// Door gives the bytes fills took by source, the facts learnt and the
	// fills waiting out a busy hub.
	Door Door
	// History is the day's bytes by ecosystem the front adds to; nil: a
	// Board of its own.
	History *History
	// Status is the other parts' state (cmd/warren assembles it); nil:
	// none.
	Status func() Status
	// Hub is a hub's own figures; nil: not a hub.
	Hub *HubRole
	// Hubs are the site's hubs as this node sees them.
	Hubs []Parent
	// Budgets are the Chocolatey feeds' request budgets, by feed; nil:
	// none.
	Budgets func() []Budget
	// MirrorGroups are the lists of mirrors warren read (door's
	// MirrorGroups): each group's chosen mirror and hit ratio; nil: none.
	MirrorGroups func() []door.MirrorGroup
	// Collectors are more Prometheus metrics for /metrics (the front's
	// feed counters, the store's and the peers').
	Collectors []prometheus.Collector
	Logger     *slog.Logger
	// Now is the front's clock: the chart's hours, the uptime's start.
	Now func() time.Time
}

// Door is what a Board reads of the door.
type Door interface {
	Stats() *door.Stats
	KnownArtifacts() map[string]int64
	HubWaits() []door.HubWait
	// SignatureStates are the repositories' last signature checks.
	SignatureStates() []door.SignatureState
}

var _ Door = (*door.Door)(nil)

// HubRole is what a hub shows of its own door: its mode, the queue of
// requesters of artifacts in transfer, and what it refused.
type HubRole struct {
	Mode  hub.Mode
	Queue Queue
	// Refusals are the requests refused so far, by reason. Every reason
	// is there from the start (with 0): /metrics labels a counter for
	// each reason it is given when the Board is built.
	Refusals func() map[string]int64
	// MissingSuites are the apt suites clients asked a preload-only hub
	// for that its list lacks ("archive suite": times); nil: none.
	MissingSuites func() map[string]int64
}

// Queue is what a Board reads of a hub's max-requesters queue.
type Queue interface {
	Max() int
	Delay() time.Duration
	Peak() int
	Totals() (streaming, waiting int)
	Stats() (transfers []hub.QueueStat, refused int64)
}

var _ Queue = (*hub.Queue)(nil)

// Parent is one of the site's hubs, as this node sees it.
type Parent interface {
	Name() string
	Status() hub.ParentStatus
}

var _ Parent = (*hub.Parent)(nil)

// Budget is a Chocolatey feed's upstream request budget and what it did.
type Budget struct {
	Feed string
	// Rate is the budget as the page prints it ("15/min", "unlimited").
	Rate         string
	Waits        int64
	Refused      int64
	TooMany      int64 // 429 answers from upstream
	BlockedUntil time.Time
}

// Board serves the status page, /_warren/stats and /metrics, and counts
// the requests the front answered.
type Board struct {
	src      Sources
	started  time.Time
	requests *prometheus.CounterVec // by outcome
	metrics  http.Handler
}

// New builds a Board on its sources, with a Prometheus registry of its own
// (no process-wide state).
func New(src Sources) *Board {
	if src.Logger == nil {
		src.Logger = slog.New(slog.DiscardHandler)
	}
	if src.Now == nil {
		src.Now = time.Now
	}
	if src.History == nil {
		src.History = new(History)
	}
	b := &Board{src: src, started: src.Now()}
	b.metrics = b.newMetrics()
	return b
}

// CountRequest counts a request the front answered, by outcome (hit,
// miss, revalidated, stale, pass, negative, error; a hub's refused and
// queued).
func (b *Board) CountRequest(outcome string) {
	b.requests.WithLabelValues(outcome).Inc()
}

// ServeMetrics answers /metrics.
func (b *Board) ServeMetrics(w http.ResponseWriter, r *http.Request) {
	b.metrics.ServeHTTP(w, r)
}

// ServeStats answers /_warren/stats: the running totals as JSON, for
// scripts and tests (the status page and /metrics build on the same
// figures).
func (b *Board) ServeStats(w http.ResponseWriter, _ *http.Request) {
	out := map[string]any{}
	for k, v := range b.src.Snapshot() {
		out[k] = v
	}
	if b.src.Status != nil {
		st := b.src.Status()
		for k, v := range st.Figures() {
			out[k] = v
		}
		for k, v := range st.HubLines() {
			out[k] = v
		}
	}
	if h := b.src.Hub; h != nil {
		for r, n := range h.Refusals() {
			out["hub_refused_"+r] = n
		}
		out["hub_mode"] = string(h.Mode)
		out["hub_streaming_peak"] = h.Queue.Peak()
		if h.MissingSuites != nil {
			if m := h.MissingSuites(); len(m) > 0 {
				out["hub_missing_suites"] = m
			}
		}
	}
	if b.src.MirrorGroups != nil {
		if g := b.src.MirrorGroups(); len(g) > 0 {
			out["mirror_groups"] = g
		}
	}
	// Repositories by signature state: verified, failed, unsigned (no key).
	for _, st := range b.src.Door.SignatureStates() {
		k := "repositories_" + strings.NewReplacer(" (no key)", "", " ", "_").Replace(st.State)
		n, _ := out[k].(int)
		out[k] = n + 1
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}
