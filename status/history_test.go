package status

import (
	"encoding/xml"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/warren-cache/warren/door"
)

func TestHistory(t *testing.T) {
	var h History
	now := time.Date(2026, 12, 3, 15, 30, 0, 0, time.UTC)
	h.Add(now.Add(-25*time.Hour), door.EcoDebian, 1<<30, 0) // older than a day: not in the chart
	h.Add(now.Add(-2*time.Hour), door.EcoDebian, 3000, 1000)
	h.Add(now, door.EcoDebian, 2000, 0)
	h.Add(now, door.EcoRPM, 500, 500)
	rows := h.rows(now)
	if len(rows) != historyHours || !rows[historyHours-1].start.Equal(now.Truncate(time.Hour)) {
		t.Fatalf("rows: %d, last %s", len(rows), rows[len(rows)-1].start)
	}
	day := h.totals(now)
	if len(day) != 2 || day[0] != (ecoTotal{door.EcoDebian, 5000, 1000}) || day[0].Saved() != 80 || day[1].Saved() != 0 {
		t.Fatalf("the day's totals: %+v", day)
	}
	svg := string(h.chart(now))
	var doc struct {
		XMLName xml.Name
		Rects   []struct {
			Class string `xml:"class,attr"`
		} `xml:"rect"`
		Lines []struct {
			Points string `xml:"points,attr"`
		} `xml:"polyline"`
	}
	if err := xml.Unmarshal([]byte(svg), &doc); err != nil {
		t.Fatalf("the chart is not well-formed SVG: %v\n%s", err, svg)
	}
	if doc.XMLName.Local != "svg" || len(doc.Rects) != 2 || len(doc.Lines) != 1 || len(strings.Fields(doc.Lines[0].Points)) != historyHours {
		t.Fatalf("chart: %d bars, %d lines; want debian's two saved hours, one WAN line of %d points", len(doc.Rects), len(doc.Lines), historyHours)
	}
	if h.total(door.EcoDebian).served != 1<<30+5000 {
		t.Fatalf("the total since start lost the old hour")
	}
}

// The day survives a restart: saved and restored into a new History, the
// chart and the day's table are the same; hours outside the day, unknown
// ecosystems and damage are not taken; the totals since start (counters)
// begin again.
func TestHistorySurvivesARestart(t *testing.T) {
	var h History
	now := time.Date(2026, 12, 3, 15, 30, 0, 0, time.UTC)
	h.Add(now.Add(-2*time.Hour), door.EcoDebian, 3000, 1000)
	h.Add(now, door.EcoRPM, 500, 500)
	b, err := h.Save()
	if err != nil {
		t.Fatal(err)
	}
	later := now.Add(10 * time.Minute)
	var again History
	if err := again.Restore(b, later); err != nil {
		t.Fatal(err)
	}
	if got, want := again.totals(later), h.totals(later); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("restored day %+v, want %+v", got, want)
	}
	if again.chart(later) != h.chart(later) {
		t.Fatal("the restored chart differs")
	}
	if again.total(door.EcoDebian).served != 0 {
		t.Fatal("the totals since start were restored: counters begin again")
	}
	// A day later, nothing of it is in the chart.
	var dayAfter History
	dayAfter.Restore(b, now.Add(25*time.Hour))
	if len(dayAfter.totals(now.Add(25*time.Hour))) != 0 {
		t.Fatal("hours older than a day were restored")
	}
	for _, bad := range []string{`not json`, `[{"start":1,"eco":{"debian":[5,5]}}]`, `[{"start":` + fmt.Sprint(now.Truncate(time.Hour).Unix()) + `,"eco":{"nonsense":[5,5],"rpm":[-1,5]}}]`} {
		var x History
		x.Restore([]byte(bad), later)
		if len(x.totals(later)) != 0 {
			t.Fatalf("%s restored something: %+v", bad, x.totals(later))
		}
	}
}
