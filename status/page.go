package status

import (
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/hub"
)

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"bytes": humanBytes,
	"join":  strings.Join,
	"pct": func(a, b int64) int {
		if b <= 0 {
			return 0
		}
		return int(100 * a / b)
	},
	"ratio": func(hits, misses int64) string {
		if hits+misses == 0 {
			return "-"
		}
		return fmt.Sprintf("%d%%", 100*hits/(hits+misses))
	},
	"ago":  func(t time.Time) string { return time.Since(t).Round(time.Second).String() },
	"took": func(from, to time.Time) string { return to.Sub(from).Round(100 * time.Millisecond).String() },
	// lag is how far a replication run left its source behind.
	"lag": func(r hub.ReplicateRun) string {
		if r.Last <= r.CursorOut {
			return "none"
		}
		lag := fmt.Sprintf("%d entries", r.Last-r.CursorOut)
		if !r.LastAt.IsZero() {
			lag += ", newest " + time.Since(r.LastAt).Round(time.Second).String() + " old"
		}
		return lag
	},
	"until": func(t time.Time) string {
		if d := time.Until(t); d > 0 {
			return d.Round(time.Second).String()
		}
		return ""
	},
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>warren {{.S.NodeID}}</title>
<style>
body{font:14px system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em}table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:left}
.bar{background:#eee;width:16em;height:1em;display:inline-block;vertical-align:middle}
.bar span{background:#4a8;height:1em;display:block}
.big{font-size:1.6em;font-weight:600}
.warn{background:#fde8c8;border-left:4px solid #d80;padding:.4em .8em}
</style></head><body>
<h1>warren <small>{{.S.NodeID}}</small></h1>
{{range .S.Warnings}}<p class="warn" id="warning">⚠ {{.}}</p>
{{end}}<table>
<tr><th>hit ratio</th><td class="big" id="hit-ratio">{{.HitRatio}}%</td><td>{{.Hits}} hits, {{.Misses}} misses of {{.Requests}} requests</td></tr>
<tr><th>served to clients</th><td class="big" id="bytes-served">{{bytes .B.Served}}</td><td id="bytes-by-source">by source: {{bytes .B.Cache}} from the store, {{bytes .B.Peers}} from LAN peers, {{bytes .B.Hubs}} from hubs, {{bytes .B.Origin}} from the origin (the WAN){{if .Replicating}}, {{bytes .B.Replicated}} replicated from other hubs (the WAN){{end}}</td></tr>
{{if .Hub}}<tr><th>the site's saving</th><td class="big" id="site-saving">{{.B.SitePercent}}%</td><td>{{bytes .B.Served}} served to nodes and clients against {{bytes .B.WAN}} over the WAN</td></tr>
{{else}}<tr><th>bytes saved</th><td class="big" id="bytes-saved">{{bytes .B.Saved}}</td><td>not fetched again: {{bytes .B.Cache}} from the store, {{bytes .B.Peers}} from LAN peers{{if .S.Hubs}} (what came from hubs crossed the site's WAN once: the hub's page counts the site's saving){{end}}</td></tr>{{end}}
<tr><th>cache</th><td id="cache-use">{{bytes .S.CacheBytes}}{{if .S.CacheMax}} of {{bytes .S.CacheMax}}{{end}}</td>
<td>{{.S.Blobs}} blobs{{if .S.CacheMax}} <span class="bar"><span style="width:{{pct .S.CacheBytes .S.CacheMax}}%"></span></span>{{end}}</td></tr>
<tr><th>learnt hashes</th><td id="known">{{.KnownTotal}}</td><td>{{range $eco, $n := .Known}}{{$n}} {{$eco}} {{end}}</td></tr>
{{if not .Hub}}<tr><th>uploads to peers</th><td>{{.S.Uploads}} of {{.S.UploadSlots}} slots</td><td>{{.Mismatches}} digest mismatches refused</td></tr>{{else}}<tr><th>digest mismatches</th><td>{{.Mismatches}}</td><td>refused</td></tr>{{end}}
</table>
<h2>The last 24 hours</h2>
<p>Bars: bytes served without crossing the WAN, per hour, by ecosystem
{{range .Ecosystems}}<span style="color:{{.Color}}">■</span> {{.Name}} {{end}}; dashed line: bytes fetched over the WAN.</p>
{{.Chart}}
<table id="saving"><tr><th>ecosystem</th><th>served</th><th>over the WAN</th><th>saved</th></tr>
{{range .Day}}<tr><td>{{.Ecosystem}}</td><td>{{bytes .Served}}</td><td>{{bytes .WAN}}</td><td>{{.Saved}}%</td></tr>
{{else}}<tr><td colspan="4">nothing served yet</td></tr>{{end}}</table>
<h2>Transfers in progress</h2>
<table id="transfers"><tr><th>what</th><th>received</th><th>progress</th></tr>
{{range .S.Transfers}}<tr><td>{{.What}}</td><td>{{bytes .Written}}{{if ge .Size 0}} of {{bytes .Size}}{{end}}</td>
<td>{{if gt .Size 0}}<span class="bar"><span style="width:{{pct .Written .Size}}%"></span></span>{{end}}</td></tr>
{{else}}<tr><td colspan="3">none</td></tr>{{end}}</table>
{{if .Hub}}<h2>Hub</h2>
<table id="hub"><tr><th>mode</th><td>{{.Hub.Mode}}</td></tr>
<tr><th>https</th><td id="hub-https">{{if .S.HTTPSNames}}for {{join .S.HTTPSNames ", "}}, beside plain http{{else}}none: plain http only{{end}}</td></tr>
<tr><th>served to nodes and clients</th><td class="big">{{bytes .B.Served}}</td><td>against {{bytes .B.WAN}} fetched over the WAN ({{bytes .B.Origin}} from the origin{{if .Replicating}}, {{bytes .B.Replicated}} replicated{{end}})</td></tr>
<tr><th>max requesters</th><td>{{.Hub.Queue.Max}} per artifact in transfer, beyond each LAN's first</td><td>told which LAN peer receives it: {{.Hub.Queue.Hinted}}; told to wait: {{.HubRefusedBusy}} since start; retry delay {{.Hub.Queue.Delay}}</td></tr>
</table>
<table id="hub-queue"><tr><th>artifact in transfer</th><th>LANs</th><th>streaming</th><th>told their peers</th><th>told to wait</th></tr>
{{range .HubQueue}}<tr><td>{{.Key}}</td><td>{{.LANs}}</td><td>{{.Streaming}}</td><td>{{.Hinted}}</td><td>{{.Waiting}}</td></tr>
{{else}}<tr><td colspan="5">none</td></tr>{{end}}</table>
<h2>Nodes and clients</h2>
<table id="hub-clients"><tr><th>node</th><th>address</th><th>LAN</th><th>last seen</th><th>requests</th><th>hits</th><th>bytes</th></tr>
{{range .HubClients}}<tr><td>{{if .Node}}{{.Node}}{{else}}(a client){{end}}</td><td>{{.Addr}}</td><td>{{.LAN}}</td><td>{{ago .LastSeen}} ago</td><td>{{.Requests}}</td><td>{{.Hits}}</td><td>{{bytes .Bytes}}</td></tr>
{{else}}<tr><td colspan="7">none yet</td></tr>{{end}}</table>
{{if .HubPulling}}<h2>Hubs pulling from this one</h2>
<table id="hub-pullers"><tr><th>sync token</th><th>hub</th><th>address</th><th>last run</th><th>cursor</th><th>lag</th><th>bytes</th></tr>
{{range .HubPullers}}<tr><td>{{.Token}}</td><td>{{.Hub}}</td><td>{{.Addr}}</td><td>{{ago .LastSeen}} ago</td><td>{{.Cursor}} of {{.Last}}</td><td>{{.Lag}} entries</td><td>{{bytes .Bytes}}</td></tr>
{{else}}<tr><td colspan="7">none yet</td></tr>{{end}}</table>{{end}}
<table id="hub-refusals"><tr><th>refused</th><th>count</th></tr>
{{range $r, $n := .HubRefusals}}<tr><td>{{$r}}</td><td>{{$n}}</td></tr>{{end}}</table>
{{if .HubMissingSuites}}<table id="hub-missing-suites"><tr><th>suite asked for, not on the preload list (refused)</th><th>times</th></tr>
{{range $s, $n := .HubMissingSuites}}<tr><td>{{$s}}</td><td>{{$n}}</td></tr>{{end}}</table>{{end}}{{end}}
{{if .S.Hubs}}<h2>Hubs</h2>
<table id="hubs"><tr><th>hub</th><th>link</th><th>state</th><th>received</th><th>requests</th><th>busy answers</th><th>last answer</th></tr>
{{range .S.Hubs}}<tr><td>{{.URL}}</td><td>{{if .TLS}}https{{else if .TokenInClear}}http: token in clear{{else}}http{{end}}</td><td>{{if .Reachable}}reachable{{else}}unreachable{{if .LastError}}: {{.LastError}}{{end}}{{end}}</td>
<td>{{bytes .Bytes}}</td><td>{{.Requests}}</td><td>{{.Waits}}</td><td>{{if not .LastOK.IsZero}}{{ago .LastOK}} ago{{else}}never{{end}}</td></tr>
{{end}}</table>
{{if .Waiting}}<table id="hub-waits"><tr><th>waiting out a busy hub</th><th>hub</th><th>asks the LAN again in</th></tr>
{{range .Waiting}}<tr><td>{{.URL}}</td><td>{{.Hub}}</td><td>{{until .Until}}</td></tr>{{end}}</table>{{end}}{{end}}
{{if .S.Preloading}}<h2>Preload</h2>
<p>schedule: {{if .S.PreloadSchedule}}{{.S.PreloadSchedule}} daily{{else}}on demand only{{end}} · <code>warren preload run [--dry-run]</code></p>
<table id="preload"><tr><th>start</th><th>took</th><th>trigger</th><th>wanted</th><th>missing</th><th>fetched</th><th>bytes</th><th>failures</th><th>stopped</th></tr>
{{range .PreloadRuns}}<tr><td>{{.Start.Format "2006-01-02 15:04:05"}}</td><td>{{took .Start .End}}</td><td>{{.Trigger}}{{if .DryRun}} (dry run){{end}}</td>
<td>{{.Wanted}}</td><td>{{.Missing}}</td><td>{{.Fetched}}</td><td>{{bytes .FetchedB}}</td><td>{{len .Failures}}</td><td>{{.Stopped}}</td></tr>
{{else}}<tr><td colspan="9">no run yet</td></tr>{{end}}</table>{{end}}
{{if or .S.ReplicateSchedule .S.ReplicationServes}}<h2>Replication</h2>
<p>{{if .S.ReplicationServes}}serves its change feed to other hubs (replication.tokens){{end}}{{if .S.ReplicateSchedule}}{{if .S.ReplicationServes}} · {{end}}pulls {{.S.ReplicateSchedule}} · <code>warren replicate run [--from NAME]</code>{{end}}</p>
{{if .S.ReplicateSchedule}}<table id="replication"><tr><th>start</th><th>took</th><th>from</th><th>trigger</th><th>cursor</th><th>lag</th><th>entries</th><th>blobs</th><th>bytes</th><th>result</th></tr>
{{range .ReplicateRuns}}<tr><td>{{.Start.Format "2006-01-02 15:04:05"}}</td><td>{{took .Start .End}}</td><td>{{.From}}</td><td>{{.Trigger}}</td>
<td>{{.CursorIn}} → {{.CursorOut}}</td><td>{{lag .}}</td><td>{{.Entries}}</td><td>{{.Blobs}}</td><td>{{bytes .Bytes}}</td>
<td>{{if .OK}}ok{{else}}failed: {{if .Error}}{{.Error}}{{else}}{{index .Failures 0}}{{if gt (len .Failures) 1}} (and {{len .Failures}} in all){{end}}{{end}}{{end}}</td></tr>
{{else}}<tr><td colspan="10">no run yet</td></tr>{{end}}</table>{{end}}{{end}}
{{if not .Hub}}<h2>Peers</h2>
{{if .S.Listen}}<p id="listen">serving on {{.S.Listen}} ({{.S.Families}}){{if .S.PeerTLS}} · blobs between peers: <span id="peer-tls">{{.S.PeerTLS}}</span>{{if .S.PeerTLSRefused}}, {{.S.PeerTLSRefused}} peers refused for want of one{{end}}{{end}}</p>{{end}}
<table id="peers"><tr><th>id</th><th>address</th><th>family</th><th>link</th><th>role</th><th>priority</th><th>free</th><th>last seen</th></tr>
{{range .S.Peers}}<tr><td>{{.ID}}</td><td>{{.Addr}}</td><td>{{.Family}}</td><td>{{.TLS}}</td><td>{{.Role}}</td><td>{{.Priority}}</td><td>{{bytes .FreeBytes}}</td><td>{{ago .LastSeen}} ago</td></tr>
{{else}}<tr><td colspan="8">none</td></tr>{{end}}</table>{{end}}
{{if .MirrorGroups}}<h2>Mirror groups</h2>
<table id="mirrors"><tr><th>list</th><th>mirrors</th><th>the site's mirror</th><th>hits</th><th>misses</th><th>hit ratio</th><th>stale repomd.xml refused</th></tr>
{{range .MirrorGroups}}<tr><td>{{if .Metalink}}metalink {{else}}mirror list {{end}}{{.List}}</td><td>{{.Mirrors}}</td><td>{{if .Chosen}}{{.Chosen}}{{else}}not answered yet{{end}}</td>
<td>{{.Hits}}</td><td>{{.Misses}}</td><td>{{ratio .Hits .Misses}}</td><td>{{.Refused}}</td></tr>
{{end}}</table>{{end}}
{{if .Signatures}}<h2>Repository signatures</h2>
<table id="signatures"><tr><th>repository</th><th>signature</th><th>key</th><th>checked</th></tr>
{{range .Signatures}}<tr><td>{{.Repository}}</td><td>{{if eq .State "failed"}}<b>failed</b>: {{.Reason}} (not learnt{{if $.Hub}}, not handed to nodes{{end}}){{else}}{{.State}}{{end}}</td><td>{{if .Signer}}{{.Signer}}{{else}}{{.Keys}}{{end}}</td><td>{{if not .At.IsZero}}{{ago .At}} ago{{end}}</td></tr>
{{end}}</table>{{end}}
{{if .Budgets}}<h2>Chocolatey upstream</h2>
<table id="chocolatey"><tr><th>feed</th><th>budget</th><th>waited</th><th>refused</th><th>429 answers</th><th>state</th></tr>
{{range .Budgets}}<tr><td>{{.Feed}}</td><td>{{.Rate}}</td><td>{{.Waits}}</td><td>{{.Refused}}</td><td>{{.TooMany}}</td>
<td>{{if until .BlockedUntil}}upstream refuses for {{until .BlockedUntil}}: answering from the cache{{else}}ok{{end}}</td></tr>
{{end}}</table>{{end}}
<h2>Use it</h2>
<table id="use">
{{if and .Hub .Hub.Tokens}}<tr><th>nodes</th><td><code>hubs: ["http://{{.Host}}"]</code> and <code>hub_token: TOKEN</code> in <code>/etc/warren/warren.yaml</code> (TOKEN: one of this hub's <code>hub_tokens</code>)</td></tr>
<tr><th>apt</th><td><code>echo 'Acquire::http::Proxy "http://warren:TOKEN@{{.Host}}";' &gt; /etc/apt/apt.conf.d/30warren</code> (the token as the proxy password; mode 0640, it is a secret)</td></tr>
<tr><th>dnf / yum</th><td><code>proxy=http://{{.Host}}</code>, <code>proxy_username=warren</code> and <code>proxy_password=TOKEN</code> in <code>/etc/dnf/dnf.conf</code> (or <code>/etc/yum.conf</code>)</td></tr>
<tr><th>Chocolatey</th><td>through a node: <code>choco source add -n warren -s http://NODE:3142/chocolatey/api/v2/</code> (this hub takes its token as a Bearer header, which choco cannot send)</td></tr>
{{else}}{{if .Hub}}<tr><th>nodes</th><td><code>hubs: ["http://{{.Host}}"]</code> in <code>/etc/warren/warren.yaml</code></td></tr>{{end}}
<tr><th>apt</th><td><code>echo 'Acquire::http::Proxy "http://{{.Host}}";' &gt; /etc/apt/apt.conf.d/30warren</code></td></tr>
<tr><th>dnf / yum</th><td><code>proxy=http://{{.Host}}</code> in <code>/etc/dnf/dnf.conf</code> (or <code>/etc/yum.conf</code>)</td></tr>
<tr><th>Chocolatey</th><td><code>choco source add -n warren -s http://{{.Host}}/chocolatey/api/v2/</code></td></tr>{{end}}
</table>
<p><a href="/metrics">/metrics</a> · <a href="/_warren/stats">/_warren/stats</a> · up {{.Uptime}}</p>
</body></html>
`))

// humanBytes prints a byte count as the page shows it (SI units).
func humanBytes(v any) string {
	switch x := v.(type) {
	case int64:
		return humanize.Bytes(uint64(max(x, 0)))
	case uint64:
		return humanize.Bytes(x)
	case int:
		return humanize.Bytes(uint64(max(x, 0)))
	}
	return fmt.Sprint(v)
}

// ServePage renders the status page (/_warren/).
func (b *Board) ServePage(w http.ResponseWriter, r *http.Request) {
	var st Status
	if b.src.Status != nil {
		st = b.src.Status()
	}
	front, ds := b.src.Snapshot(), b.src.Door.Stats()
	hits, misses := front["hits"], front["misses"]
	ratio := 0
	if hits+misses > 0 {
		ratio = int(100 * hits / (hits + misses))
	}
	known := b.src.Door.KnownArtifacts()
	var budgets []Budget
	if b.src.Budgets != nil {
		budgets = b.src.Budgets()
	}
	var mirrorGroups []door.MirrorGroup
	if b.src.MirrorGroups != nil {
		mirrorGroups = b.src.MirrorGroups()
	}
	now := b.src.Now()
	data := map[string]any{
		"S": st, "Requests": front["requests"], "Hits": hits, "Misses": misses, "HitRatio": ratio,
		"B": b.bytesBySource(), "Replicating": b.src.Replicated != nil, "Mismatches": ds.Mismatches.Load(),
		"Waiting": b.src.Door.HubWaits(),
		"Uptime":  time.Since(b.started).Round(time.Second).String(),
		"Known":   known, "KnownTotal": sumValues(known),
		"Signatures":    b.src.Door.SignatureStates(),
		"Budgets":       budgets,
		"MirrorGroups":  mirrorGroups,
		"PreloadRuns":   lastRuns(st.PreloadRuns, 10),
		"ReplicateRuns": lastRuns(st.Replication, 10),
		"Chart":         b.src.History.chart(now),
		"Day":           b.src.History.totals(now),
		"Ecosystems":    chartLegend(),
		"Host":          r.Host,
	}
	if h := b.src.Hub; h != nil {
		q, refused := h.Queue.Stats()
		data["Hub"], data["HubQueue"], data["HubRefusedBusy"], data["HubRefusals"] = h, q, refused, h.Refusals()
		if h.MissingSuites != nil {
			data["HubMissingSuites"] = h.MissingSuites()
		}
		if h.Clients != nil {
			data["HubClients"] = h.Clients()
		}
		if h.Pullers != nil {
			data["HubPulling"], data["HubPullers"] = true, h.Pullers()
		}
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := statusPage.Execute(w, data); err != nil {
		b.src.Logger.Warn("render status page", "err", err)
	}
}

// lastRuns are the newest n runs, newest first.
func lastRuns[R any](runs []R, n int) []R {
	out := make([]R, 0, n)
	for i := len(runs) - 1; i >= 0 && len(out) < n; i-- {
		out = append(out, runs[i])
	}
	return out
}

type legendEntry struct{ Name, Color string }

func chartLegend() []legendEntry {
	var out []legendEntry
	for _, eco := range chartEcosystems {
		out = append(out, legendEntry{eco, chartColors[eco]})
	}
	return out
}
