package sim

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// A small site, simulated, on idle machines and on slow ones that lose
// datagrams: every client gets every artifact whole, each artifact crosses
// the WAN once, each subnet's link carries it at most twice, no node
// serves more uploads at once than its slots, and the report says so.
func TestSmallSite(t *testing.T) {
	for _, tc := range []struct {
		name  string
		delay time.Duration
		loss  float64
	}{{"idle", 0, 0}, {"slow and lossy", 500 * time.Millisecond, 0.02}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
			defer cancel()
			rep, err := Run(ctx, Config{Nodes: 60, Subnets: 3, Artifacts: 2, Size: 256 << 10, Spread: 3 * time.Second, Dir: t.TempDir(),
				Delay: tc.delay, Loss: tc.loss})
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
				for s, n := range a.SubnetGETs {
					if n < 1 || a.SubnetBytes[s] > 2*rep.Config.Size {
						t.Errorf("%s: subnet %d fetched it %d times from the hub, %d bytes (the artifact is %d): want once at least, at most twice its bytes",
							a.Path, s, n, a.SubnetBytes[s], rep.Config.Size)
					}
				}
			}
			if rep.MaxUploads > rep.Config.Slots {
				t.Errorf("a node served %d uploads at once, more than its %d slots", rep.MaxUploads, rep.Config.Slots)
			}
			if rep.DatagramsMax == 0 || !strings.Contains(out.String(), "origin fetches 1") {
				t.Errorf("the report lacks the datagrams or the WAN figures:\n%s", out.String())
			}
		})
	}
}
