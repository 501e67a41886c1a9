package status

import (
	"encoding/xml"
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
