package proxy

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// The page draws the day: what was served, by ecosystem.
func TestStatusPageChart(t *testing.T) {
	up := newUpstream(t, 100000)
	h := newHarness(t, up)
	h.learn()
	h.mustGet(up.debURL, 200)
	h.mustGet(up.debURL, 200)
	h.settle()
	resp, err := http.Get(h.front.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := string(b)
	if !strings.Contains(page, `<svg id="history"`) || !strings.Contains(page, `class="saved debian"`) || !strings.Contains(page, "<td>debian</td>") {
		t.Fatalf("the page has no chart of the day with debian's saving")
	}
	if strings.Contains(page, "ZgotmplZ") {
		t.Fatal("the template refused a value (ZgotmplZ)")
	}
}
