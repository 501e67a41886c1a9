package sim

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// A small site, simulated: every client gets every artifact whole, each
// artifact crosses the WAN once, no node serves more uploads at once than
// its slots, and the report says so.
func TestSmallSite(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Config{Nodes: 60, Subnets: 3, Artifacts: 2, Size: 256 << 10, Spread: 3 * time.Second, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rep.Print(&out)
	t.Log("\n" + out.String())
	for _, a := range rep.Artifacts {
		if a.Failed != 0 || len(a.Times) != 60 {
			t.Errorf("%s: %d clients failed, %d got it; want all 60", a.Path, a.Failed, len(a.Times))
		}
		if a.OriginGETs != 1 {
			t.Errorf("%s crossed the WAN %d times, want once", a.Path, a.OriginGETs)
		}
		if a.HubGETs < 3 {
			t.Errorf("%s: %d fetches at the hub for 3 subnets, want one at least from each", a.Path, a.HubGETs)
		}
	}
	if rep.MaxUploads > rep.Config.Slots {
		t.Errorf("a node served %d uploads at once, more than its %d slots", rep.MaxUploads, rep.Config.Slots)
	}
	if rep.DatagramsMax == 0 || !strings.Contains(out.String(), "WAN fetches 1") {
		t.Errorf("the report lacks the datagrams or the WAN figures:\n%s", out.String())
	}
}
