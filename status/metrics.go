package status

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/warren-cache/warren/door"
)

// newMetrics registers the figures and the extra collectors in a registry
// of this Board's own; each is read when scraped.
func (b *Board) newMetrics() http.Handler {
	src := b.src
	b.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "warren_requests_total", Help: "Requests served, by outcome (hit, miss, revalidated, stale, pass, negative, error; a hub's refused and queued).",
	}, []string{"outcome"})
	reg := prometheus.NewRegistry()
	reg.MustRegister(b.requests, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	counter := func(name, help string, f func() float64, labels prometheus.Labels) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels}, f))
	}
	front := func(name string) func() float64 { return func() float64 { return float64(src.Snapshot()[name]) } }
	bytesHelp := "Bytes by source: cache (sent to clients from the store), peers (fetched from LAN peers), hub (from the site's hubs), upstream (from the origin, over the WAN), replication (pulled from other hubs, over the WAN); served: sent to clients (a hub's nodes and clients)."
	counter("warren_bytes_total", bytesHelp, func() float64 { return float64(src.Door.Stats().BytesHub.Load()) }, prometheus.Labels{"source": "hub"})
	counter("warren_bytes_total", bytesHelp, front("bytes_served"), prometheus.Labels{"source": "served"})
	counter("warren_hub_waits_total", "Times a hub said it was busy with an artifact (max_requesters) and a fill waited, then asked the LAN again.", func() float64 { return float64(src.Door.Stats().HubWaits.Load()) }, nil)
	for _, h := range src.Hubs {
		labels := prometheus.Labels{"hub": h.Name()}
		counter("warren_hub_received_bytes_total", "Bytes fills took from each hub.", func() float64 { return float64(h.Status().Bytes) }, labels)
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "warren_hub_reachable", Help: "1 when the hub answered last, 0 when it failed.", ConstLabels: labels},
			func() float64 {
				if h.Status().Reachable {
					return 1
				}
				return 0
			}))
	}
	counter("warren_bytes_total", bytesHelp, front("bytes_cache"), prometheus.Labels{"source": "cache"})
	counter("warren_bytes_total", bytesHelp, func() float64 { return float64(src.Door.Stats().BytesPeers.Load()) }, prometheus.Labels{"source": "peers"})
	counter("warren_bytes_total", bytesHelp, func() float64 { return float64(src.Door.Stats().BytesFetched.Load()) }, prometheus.Labels{"source": "upstream"})
	for _, eco := range chartEcosystems {
		labels := prometheus.Labels{"ecosystem": eco}
		counter("warren_ecosystem_served_bytes_total", "Bytes sent to clients, by ecosystem (debian, rpm, chocolatey, other).",
			func() float64 { return float64(src.History.total(eco).served) }, labels)
		counter("warren_ecosystem_wan_bytes_total", "Bytes fetched from upstream (the WAN), by ecosystem.",
			func() float64 { return float64(src.History.total(eco).wan) }, labels)
	}
	if src.Replicated != nil {
		counter("warren_bytes_total", bytesHelp, func() float64 { return float64(src.Replicated()) }, prometheus.Labels{"source": "replication"})
	}
	counter("warren_upstream_fetches_total", "Requests fills made to the origin, over the WAN (revalidations included; a hub's are warren_hub_fetches_total).", func() float64 { return float64(src.Door.Stats().UpstreamFetches.Load()) }, nil)
	counter("warren_hub_fetches_total", "Requests fills made to the site's hubs (revalidations included).", func() float64 { return float64(src.Door.Stats().HubFetches.Load()) }, nil)
	counter("warren_hub_hints_total", "Times a hub named the LAN peers receiving an artifact it was fetching, and a fill took it from them.", func() float64 { return float64(src.Door.Stats().HubHints.Load()) }, nil)
	counter("warren_digest_mismatches_total", "Blobs refused because their bytes did not match the metadata.", func() float64 { return float64(src.Door.Stats().Mismatches.Load()) }, nil)
	for _, eco := range []string{door.EcoDebian, door.EcoRPM, door.EcoChocolatey} {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "warren_known_artifacts", Help: "URL -> digest facts learnt from repository metadata, by ecosystem.",
			ConstLabels: prometheus.Labels{"ecosystem": eco},
		}, func() float64 { return float64(src.Door.KnownArtifacts()[eco]) }))
	}
	for _, state := range []string{door.SigVerified, door.SigFailed, door.SigNoKey} {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "warren_repositories", Help: "Repositories by the state of their last signature check (verified, failed, unsigned (no key)).",
			ConstLabels: prometheus.Labels{"signature": state},
		}, func() float64 {
			n := 0
			for _, st := range src.Door.SignatureStates() {
				if st.State == state {
					n++
				}
			}
			return float64(n)
		}))
	}
	reg.MustRegister(budgetCollector{src.Budgets})
	if src.Hub != nil {
		registerHubMetrics(reg, src.Hub)
	}
	for _, c := range src.Collectors {
		reg.MustRegister(c)
	}
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// registerHubMetrics registers a hub's refusals and its queue.
func registerHubMetrics(reg *prometheus.Registry, h *HubRole) {
	for r := range h.Refusals() {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "warren_hub_refusals_total", Help: "Requests the hub refused, by reason (token, auth-limit, not-preloaded, max-requesters, loop).",
			ConstLabels: prometheus.Labels{"reason": r},
		}, func() float64 { return float64(h.Refusals()[r]) }))
	}
	q := h.Queue
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "warren_hub_queue_waiting", Help: "Requesters told to wait (max_requesters) during the transfers in progress.",
	}, func() float64 { _, n := q.Totals(); return float64(n) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "warren_hub_queue_streaming", Help: "Requesters streaming an artifact the hub is still fetching.",
	}, func() float64 { n, _ := q.Totals(); return float64(n) }))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "warren_hub_told_peers_total", Help: "Requesters of an artifact the hub was fetching that were told which LAN peers receive it (their LAN streams it already).",
	}, func() float64 { return float64(q.Hinted()) }))
}

// budgetCollector shows each Chocolatey feed budget's figures.
type budgetCollector struct{ budgets func() []Budget }

var (
	budgetWaitsDesc   = prometheus.NewDesc("warren_chocolatey_budget_waits_total", "Upstream feed requests that waited for the request budget.", []string{"feed"}, nil)
	budgetRefusedDesc = prometheus.NewDesc("warren_chocolatey_budget_refusals_total", "Upstream feed requests not sent: the budget's wait would pass its bound, or upstream said 429.", []string{"feed"}, nil)
	budget429Desc     = prometheus.NewDesc("warren_chocolatey_upstream_429_total", "429 Too Many Requests answers from a feed's upstream.", []string{"feed"}, nil)
	budgetBlockedDesc = prometheus.NewDesc("warren_chocolatey_upstream_blocked_seconds", "Seconds until a feed's upstream may be asked again after a 429 (0: it may).", []string{"feed"}, nil)
)

func (c budgetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- budgetWaitsDesc
	ch <- budgetRefusedDesc
	ch <- budget429Desc
	ch <- budgetBlockedDesc
}

func (c budgetCollector) Collect(ch chan<- prometheus.Metric) {
	if c.budgets == nil {
		return
	}
	for _, st := range c.budgets() {
		ch <- prometheus.MustNewConstMetric(budgetWaitsDesc, prometheus.CounterValue, float64(st.Waits), st.Feed)
		ch <- prometheus.MustNewConstMetric(budgetRefusedDesc, prometheus.CounterValue, float64(st.Refused), st.Feed)
		ch <- prometheus.MustNewConstMetric(budget429Desc, prometheus.CounterValue, float64(st.TooMany), st.Feed)
		ch <- prometheus.MustNewConstMetric(budgetBlockedDesc, prometheus.GaugeValue, max(time.Until(st.BlockedUntil).Seconds(), 0), st.Feed)
	}
}
