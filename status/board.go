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
	// Replicated is the bytes replication pulled from other hubs (over
	// the WAN, like the origin's); nil: none.
	Replicated func() int64
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
	// Tokens says the hub requires hub_tokens: the page says how to
	// pass one.
	Tokens bool
	// Clients are the nodes and clients it served; nil: none listed.
	Clients func() []hub.Client
	// Pullers are the hubs pulling from it; nil: it serves no replication.
	Pullers func() []hub.PullerStatus
}

// Queue is what a Board reads of a hub's max-requesters queue.
type Queue interface {
	Max() int
	Delay() time.Duration
	Peak() int
	Hinted() int64
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
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(b.Figures())
}

// Figures are the running totals by name: /_warren/stats and `warren
// status` print them. Bytes by source: bytes_cache (served from the
// store), bytes_peers, bytes_hubs, bytes_upstream (the origin, over the
// WAN), bytes_replicated (from other hubs, over the WAN); bytes_saved is
// what this warren did not fetch again (store and peers: bytes from a hub
// crossed the site's WAN once, and the hub counts them); a hub's
// site_bytes_served and site_bytes_wan are the site's saving.
func (b *Board) Figures() map[string]any {
	out := map[string]any{}
	front := b.src.Snapshot()
	for k, v := range front {
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
	bs := b.bytesBySource()
	out["bytes_saved"] = bs.Saved()
	if b.src.Replicated != nil {
		out["bytes_replicated"] = bs.Replicated
	}
	if h := b.src.Hub; h != nil {
		for r, n := range h.Refusals() {
			out["hub_refused_"+r] = n
		}
		out["hub_mode"] = string(h.Mode)
		out["hub_streaming_peak"] = h.Queue.Peak()
		out["hub_told_peers"] = h.Queue.Hinted()
		out["site_bytes_served"], out["site_bytes_wan"] = bs.Served, bs.WAN()
		out["site_saved_percent"] = bs.SitePercent()
		if h.MissingSuites != nil {
			if m := h.MissingSuites(); len(m) > 0 {
				out["hub_missing_suites"] = m
			}
		}
		if h.Clients != nil {
			out["hub_clients"] = len(h.Clients())
		}
		if h.Pullers != nil {
			out["hub_pullers"] = len(h.Pullers())
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
	return out
}

// SourceBytes are the bytes by source, as the page, the figures and
// /metrics show them.
type SourceBytes struct {
	Served                                 int64 // sent to clients
	Cache, Peers, Hubs, Origin, Replicated int64
	HubFetches, OriginFetches, HubHints    int64
}

func (b *Board) bytesBySource() SourceBytes {
	front, ds := b.src.Snapshot(), b.src.Door.Stats()
	bs := SourceBytes{Served: front["bytes_served"], Cache: front["bytes_cache"], Peers: ds.BytesPeers.Load(), Hubs: ds.BytesHub.Load(),
		Origin: ds.BytesFetched.Load(), HubFetches: ds.HubFetches.Load(), OriginFetches: ds.UpstreamFetches.Load(),
		HubHints: ds.HubHints.Load()}
	if b.src.Replicated != nil {
		bs.Replicated = b.src.Replicated()
	}
	return bs
}

// Saved is what this warren did not fetch again: served from its store
// and taken from LAN peers. A hub's bytes are not counted: they crossed
// the site's WAN once, and the hub's page counts the site's saving.
func (bs SourceBytes) Saved() int64 { return bs.Cache + bs.Peers }

// WAN is what crossed the WAN to a hub's site: the origin's bytes, what
// replication pulled from other hubs, and what came from the hub's own
// hubs (a site hub fed by a main hub: every byte of those crossed the
// WAN). It is a hub's figure: a node's hubs are on its site, and its page
// shows no WAN.
func (bs SourceBytes) WAN() int64 { return bs.Origin + bs.Replicated + bs.Hubs }

// SitePercent is a hub's site's saving: what it served that did not
// cross the WAN, in percent of what it served.
func (bs SourceBytes) SitePercent() int {
	if bs.Served <= 0 {
		return 0
	}
	return int(100 * max(bs.Served-bs.WAN(), 0) / bs.Served)
}
