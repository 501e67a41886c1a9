package status

import (
	"encoding/json"
	"fmt"
	"html/template"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/warren-cache/warren/door"
)

// The site's saving over the last day: bytes served to clients against
// bytes fetched over the WAN, per ecosystem and hour, for the status page's
// chart. Kept in memory and, through Save and Restore, in the cache's
// index (cmd/warren saves it every minute and when it stops): a restart
// keeps the day. The totals since start (the counters of /metrics) start
// again, as counters do.

// historyHours is how far back the chart goes.
const historyHours = 24

// ecoBytes are one ecosystem's bytes in one hour.
type ecoBytes struct{ served, wan int64 }

type historyHour struct {
	start time.Time
	eco   map[string]*ecoBytes
}

// History is the day's bytes by ecosystem: a ring of hourly buckets, and
// the totals since start. The zero value is ready; it is safe for
// concurrent use.
type History struct {
	mu    sync.Mutex // guards hours and since
	hours [historyHours]historyHour
	since map[string]ecoBytes
}

// ecosystems in the chart's order; "other" is what none of them names.
var chartEcosystems = []string{door.EcoDebian, door.EcoRPM, door.EcoChocolatey, "other"}

// Add counts bytes of ecosystem eco ("" is "other") at now: served to
// clients, and fetched over the WAN.
func (h *History) Add(now time.Time, eco string, served, wan int64) {
	if served == 0 && wan == 0 {
		return
	}
	if eco == "" {
		eco = "other"
	}
	start := now.Truncate(time.Hour)
	i := int(start.Unix()/3600) % historyHours
	h.mu.Lock()
	defer h.mu.Unlock()
	b := &h.hours[i]
	if !b.start.Equal(start) {
		*b = historyHour{start: start, eco: map[string]*ecoBytes{}}
	}
	e := b.eco[eco]
	if e == nil {
		e = &ecoBytes{}
		b.eco[eco] = e
	}
	e.served += served
	e.wan += wan
	if h.since == nil {
		h.since = map[string]ecoBytes{}
	}
	t := h.since[eco]
	t.served += served
	t.wan += wan
	h.since[eco] = t
}

// total is eco's bytes since start.
func (h *History) total(eco string) ecoBytes {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.since[eco]
}

// hourRow is one hour of the chart.
type hourRow struct {
	start time.Time
	eco   map[string]ecoBytes
}

// rows are the last historyHours hours, oldest first (empty hours too).
func (h *History) rows(now time.Time) []hourRow {
	h.mu.Lock()
	defer h.mu.Unlock()
	last := now.Truncate(time.Hour)
	out := make([]hourRow, historyHours)
	for k := range historyHours {
		start := last.Add(-time.Duration(historyHours-1-k) * time.Hour)
		row := hourRow{start: start, eco: map[string]ecoBytes{}}
		b := h.hours[int(start.Unix()/3600)%historyHours]
		if b.start.Equal(start) {
			for eco, e := range b.eco {
				row.eco[eco] = *e
			}
		}
		out[k] = row
	}
	return out
}

// ecoTotal is one ecosystem's day.
type ecoTotal struct {
	Ecosystem   string
	Served, WAN int64
}

// Saved is what clients got without the WAN, in percent of what they got.
func (t ecoTotal) Saved() int {
	if t.Served <= 0 {
		return 0
	}
	return int(100 * max(t.Served-t.WAN, 0) / t.Served)
}

// totals are the day's bytes by ecosystem, in the chart's order (those
// with none left out).
func (h *History) totals(now time.Time) []ecoTotal {
	sum := map[string]*ecoTotal{}
	for _, r := range h.rows(now) {
		for eco, e := range r.eco {
			t := sum[eco]
			if t == nil {
				t = &ecoTotal{Ecosystem: eco}
				sum[eco] = t
			}
			t.Served += e.served
			t.WAN += e.wan
		}
	}
	var out []ecoTotal
	for _, eco := range chartEcosystems {
		if t := sum[eco]; t != nil {
			out = append(out, *t)
		}
	}
	return out
}

var chartColors = map[string]string{door.EcoDebian: "#c70036", door.EcoRPM: "#2a6ebb", door.EcoChocolatey: "#7b4f2c", "other": "#8a8a8a"}

// chart draws the last day as inline SVG: per hour, the bytes served
// without the WAN stacked by ecosystem, and the WAN's bytes as a line.
func (h *History) chart(now time.Time) template.HTML {
	const (
		w, hgt       = 720, 220
		left, bottom = 60, 24
		top          = 10
	)
	rows := h.rows(now)
	peak := int64(1)
	for _, r := range rows {
		var saved, wan int64
		for _, e := range r.eco {
			saved += max(e.served-e.wan, 0)
			wan += e.wan
		}
		peak = max(peak, saved, wan)
	}
	plotH := float64(hgt - bottom - top)
	barW := float64(w-left) / historyHours
	y := func(v int64) float64 { return float64(top) + plotH*(1-float64(v)/float64(peak)) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg id="history" xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="bytes saved and fetched over the WAN, last 24 hours">`, w, hgt, w, hgt)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999"/>`, left, hgt-bottom, w, hgt-bottom)
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" text-anchor="end">%s</text>`, left-4, top+10, template.HTMLEscapeString(humanize.Bytes(uint64(peak))))
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" text-anchor="end">0</text>`, left-4, hgt-bottom)
	var wanPts []string
	for k, r := range rows {
		x := float64(left) + float64(k)*barW
		base := int64(0)
		var wan int64
		for _, eco := range chartEcosystems {
			e := r.eco[eco]
			wan += e.wan
			saved := max(e.served-e.wan, 0)
			if saved == 0 {
				continue
			}
			fmt.Fprintf(&b, `<rect class="saved %s" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s served without the WAN</title></rect>`,
				eco, x+1, y(base+saved), barW-2, y(base)-y(base+saved), chartColors[eco], r.start.Format("15:04"), eco, humanize.Bytes(uint64(saved)))
			base += saved
		}
		wanPts = append(wanPts, fmt.Sprintf("%.1f,%.1f", x+barW/2, y(wan)))
		if k%3 == 0 {
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="10" text-anchor="middle">%s</text>`, x+barW/2, hgt-8, r.start.Format("15h"))
		}
	}
	fmt.Fprintf(&b, `<polyline class="wan" points="%s" fill="none" stroke="#111" stroke-width="1.5" stroke-dasharray="4 2"/>`, strings.Join(wanPts, " "))
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // built here from numbers and escaped labels only
}

// savedHour is one hour of the day as the index keeps it.
type savedHour struct {
	Start int64               `json:"start"` // Unix seconds
	Eco   map[string][2]int64 `json:"eco"`   // served, WAN
}

// Save encodes the day's hours for the index (Restore reads it back).
func (h *History) Save() ([]byte, error) {
	h.mu.Lock()
	var out []savedHour
	for _, b := range h.hours {
		if b.start.IsZero() || len(b.eco) == 0 {
			continue
		}
		sh := savedHour{Start: b.start.Unix(), Eco: map[string][2]int64{}}
		for eco, e := range b.eco {
			sh.Eco[eco] = [2]int64{e.served, e.wan}
		}
		out = append(out, sh)
	}
	h.mu.Unlock()
	return json.Marshal(out)
}

// Restore adds the hours b holds that are within the day before now to
// the chart (not to the totals since start). A damaged b restores nothing.
func (h *History) Restore(b []byte, now time.Time) error {
	var in []savedHour
	if err := json.Unmarshal(b, &in); err != nil {
		return fmt.Errorf("read the day's bytes kept in the index: %w", err)
	}
	last := now.Truncate(time.Hour)
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, sh := range in {
		start := time.Unix(sh.Start, 0).Truncate(time.Hour)
		if start.After(last) || !start.After(last.Add(-historyHours*time.Hour)) || sh.Start%3600 != 0 {
			continue // outside the day, or not an hour's start
		}
		bucket := &h.hours[int(start.Unix()/3600)%historyHours]
		if !bucket.start.Equal(start) {
			*bucket = historyHour{start: start, eco: map[string]*ecoBytes{}}
		}
		for eco, v := range sh.Eco {
			if !slices.Contains(chartEcosystems, eco) || v[0] < 0 || v[1] < 0 {
				continue
			}
			e := bucket.eco[eco]
			if e == nil {
				e = &ecoBytes{}
				bucket.eco[eco] = e
			}
			e.served += v[0]
			e.wan += v[1]
		}
	}
	return nil
}
