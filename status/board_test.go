package status

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/hub"
)

// fakeDoor is a door's figures, as a Board reads them.
type fakeDoor struct {
	stats door.Stats
	known map[string]int64
	waits []door.HubWait
	sigs  []door.SignatureState
}

func (d *fakeDoor) Stats() *door.Stats               { return &d.stats }
func (d *fakeDoor) KnownArtifacts() map[string]int64 { return d.known }
func (d *fakeDoor) HubWaits() []door.HubWait         { return d.waits }
func (d *fakeDoor) SignatureStates() []door.SignatureState {
	return d.sigs
}

// fakeParent is one of the site's hubs.
type fakeParent struct{ st hub.ParentStatus }

func (p fakeParent) Name() string             { return p.st.URL }
func (p fakeParent) Status() hub.ParentStatus { return p.st }

// get answers path from the Board as the front routes it.
func get(t *testing.T, b *Board, path string) (string, http.Header) {
	t.Helper()
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, "http://warren.lan:3142"+path, nil)
	switch path {
	case "/_warren/":
		b.ServePage(w, r)
	case "/_warren/stats":
		b.ServeStats(w, r)
	case "/metrics":
		b.ServeMetrics(w, r)
	default:
		t.Fatalf("no route %s", path)
	}
	body, _ := io.ReadAll(w.Result().Body)
	return string(body), w.Result().Header
}

// A Board shows what its sources say, and only what they have: a hub's
// sections and figures on a hub, a node's hubs on a node, the budgets of
// the feeds there are.
func TestBoard(t *testing.T) {
	now := time.Date(2026, 12, 3, 15, 30, 0, 0, time.UTC)
	front := map[string]int64{"requests": 4, "hits": 1, "misses": 3, "errors": 0, "bytes_cache": 1000, "bytes_served": 5000}
	refusals := map[string]int64{hub.ReasonToken: 2, hub.ReasonLoop: 0}
	tests := []struct {
		name string
		src  func(*Sources)
		sigs []door.SignatureState
		// want and absent, by path.
		want, absent map[string][]string
	}{
		{
			name: "node",
			sigs: []door.SignatureState{
				{Repository: "http://deb.debian.org/debian/dists/bookworm/", State: door.SigVerified, Signer: "B7C5D7D6350947F8"},
				{Repository: "http://mirror.example/debian/dists/stable/", State: door.SigFailed, Reason: "signed by a key not trusted for this repository: signed by key 0123", Keys: "sources.list:3"},
				{Repository: "http://ppa.example/ubuntu/dists/jammy/", State: door.SigNoKey},
			},
			src: func(s *Sources) {
				s.Hubs = []Parent{fakeParent{hub.ParentStatus{URL: "http://hub.lan:3142", Reachable: true, Bytes: 4000}}}
				s.Status = func() Status {
					return Status{NodeID: "n1", Role: "peer", Peers: []Peer{{ID: "peer-a", Addr: "10.0.0.2:3142"}},
						Hubs: []hub.ParentStatus{{URL: "http://hub.lan:3142", LastError: "refused <b>"}}}
				}
			},
			want: map[string][]string{
				"/_warren/": {"<title>warren n1</title>", `id="hit-ratio">25%`, "1 hits, 3 misses of 4 requests", "peer-a",
					`<table id="hubs">`, "unreachable: refused &lt;b&gt;", "http://warren.lan:3142/chocolatey/api/v2/",
					`<table id="signatures">`, "<td>http://deb.debian.org/debian/dists/bookworm/</td><td>verified</td><td>B7C5D7D6350947F8</td>",
					"<b>failed</b>: signed by a key not trusted for this repository: signed by key 0123 (not learnt)", "<td>unsigned (no key)</td>"},
				"/_warren/stats": {`"hits":1`, `"node":"n1"`, `"peers":1`, `"hub_1":"http://hub.lan:3142 unreachable (refused \u003cb\u003e)`,
					`"repositories_verified":1`, `"repositories_failed":1`, `"repositories_unsigned":1`},
				"/metrics": {`warren_requests_total{outcome="hit"} 1`, `warren_bytes_total{source="cache"} 1000`, `warren_bytes_total{source="served"} 5000`,
					`warren_hub_received_bytes_total{hub="http://hub.lan:3142"} 4000`, `warren_hub_reachable{hub="http://hub.lan:3142"} 1`,
					`warren_known_artifacts{ecosystem="debian"} 7`, `warren_ecosystem_served_bytes_total{ecosystem="debian"} 3000`,
					`warren_repositories{signature="failed"} 1`},
			},
			absent: map[string][]string{
				"/_warren/":      {"<h2>Hub</h2>", "Chocolatey upstream", "ZgotmplZ", "Mirror groups"},
				"/_warren/stats": {"hub_mode", "hub_refused_"},
				"/metrics":       {"warren_hub_refusals_total", "warren_hub_queue_", "warren_chocolatey_"},
			},
		},
		{
			name: "mirror groups",
			src: func(s *Sources) {
				s.MirrorGroups = func() []door.MirrorGroup {
					return []door.MirrorGroup{{List: "https://mirrors.example/metalink?repo=f40", Metalink: true, Mirrors: 3,
						Chosen: "http://m1.example/fedora/", Hits: 3, Misses: 1, Refused: 2}}
				}
			},
			want: map[string][]string{
				"/_warren/": {"<h2>Mirror groups</h2>", "metalink https://mirrors.example/metalink?repo=f40</td><td>3</td>",
					"<td>http://m1.example/fedora/</td>", "<td>3</td><td>1</td><td>75%</td><td>2</td>"},
				"/_warren/stats": {`"mirror_groups":[{"List":"https://mirrors.example/metalink?repo=f40"`, `"Chosen":"http://m1.example/fedora/"`},
			},
		},
		{
			name: "hub with a feed",
			src: func(s *Sources) {
				s.Hub = &HubRole{Mode: hub.FetchAndPreload, Queue: hub.NewQueue(5, 90*time.Second), Refusals: func() map[string]int64 { return refusals }}
				s.Budgets = func() []Budget { return []Budget{{Feed: "default", Rate: "15/min", TooMany: 1}} }
			},
			want: map[string][]string{
				"/_warren/": {"<h2>Hub</h2>", "<td>fetch-and-preload</td>", "5 per artifact in transfer", "retry delay 1m30s",
					"<tr><td>token</td><td>2</td></tr>", `<table id="chocolatey">`, "<td>default</td><td>15/min</td>"},
				"/_warren/stats": {`"hub_mode":"fetch-and-preload"`, `"hub_refused_token":2`, `"hub_refused_loop":0`, `"hub_streaming_peak":0`},
				"/metrics": {`warren_hub_refusals_total{reason="token"} 2`, `warren_hub_refusals_total{reason="loop"} 0`,
					"warren_hub_queue_waiting 0", "warren_hub_queue_streaming 0", `warren_chocolatey_upstream_429_total{feed="default"} 1`},
			},
			absent: map[string][]string{
				"/_warren/": {`<table id="hubs">`, "ZgotmplZ", "Repository signatures"},
				"/metrics":  {"warren_hub_received_bytes_total", "warren_hub_reachable"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &fakeDoor{known: map[string]int64{door.EcoDebian: 7}, sigs: tt.sigs}
			src := Sources{Snapshot: func() map[string]int64 { return front }, Door: d, History: new(History), Now: func() time.Time { return now }}
			tt.src(&src)
			b := New(src)
			b.CountRequest("hit")
			src.History.Add(now, door.EcoDebian, 3000, 1000)
			for _, path := range []string{"/_warren/", "/_warren/stats", "/metrics"} {
				body, _ := get(t, b, path)
				for _, w := range tt.want[path] {
					if !strings.Contains(body, w) {
						t.Errorf("%s lacks %q:\n%s", path, w, body)
					}
				}
				for _, a := range tt.absent[path] {
					if strings.Contains(body, a) {
						t.Errorf("%s shows %q, which its sources do not have", path, a)
					}
				}
			}
		})
	}
}

// /_warren/stats is JSON whose numbers are the sources' own.
func TestBoardStatsJSON(t *testing.T) {
	b := New(Sources{
		Snapshot: func() map[string]int64 { return map[string]int64{"hits": 3, "bytes_served": 1 << 40} },
		Door:     &fakeDoor{},
		Status:   func() Status { return Status{KnownArtifacts: map[string]int64{"debian": 2, "rpm": 3}, Role: "hub"} },
	})
	body, h := get(t, b, "/_warren/stats")
	if ct := h.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, body)
	}
	if v["hits"] != 3.0 || v["bytes_served"] != float64(1<<40) || v["known_artifacts"] != 5.0 || v["role"] != "hub" {
		t.Fatalf("stats: %v", v)
	}
}

// A hub's site saving counts as WAN whatever crossed it: the origin's
// bytes, replication, and a parent hub's (a site hub whose own hubs are a
// main hub). (Before, a hub fed by a parent hub read WAN 0 and a saving of
// 100% with every byte having crossed the WAN.)
func TestSiteWAN(t *testing.T) {
	const mb = 1 << 20
	for _, tc := range []struct {
		name    string
		bs      SourceBytes
		wan     int64
		percent int
	}{
		{"from the origin", SourceBytes{Served: 100 * mb, Cache: 60 * mb, Origin: 40 * mb}, 40 * mb, 60},
		{"replicated", SourceBytes{Served: 100 * mb, Cache: 75 * mb, Replicated: 25 * mb}, 25 * mb, 75},
		{"from a parent hub", SourceBytes{Served: 100 * mb, Hubs: 100 * mb}, 100 * mb, 0},
		{"all three", SourceBytes{Served: 100 * mb, Cache: 40 * mb, Origin: 20 * mb, Replicated: 10 * mb, Hubs: 30 * mb}, 60 * mb, 40},
	} {
		if w, p := tc.bs.WAN(), tc.bs.SitePercent(); w != tc.wan || p != tc.percent {
			t.Errorf("%s: WAN %d, saving %d%%; want %d, %d%%", tc.name, w, p, tc.wan, tc.percent)
		}
	}
}
