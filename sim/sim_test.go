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

// Nodes of a subnet that do not know each other all ask for an artifact
// while the hub still fetches it: the hub streams it to each subnet once
// and tells the subnet's other nodes which peer receives it, and they
// take it from that peer.
func TestStrangersTakeHintedPeers(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	// The origin's link is slow: the hub's fetch lasts about 2 s, and
	// every node asks within its first half.
	rep, err := Run(ctx, Config{Nodes: 12, Subnets: 2, Artifacts: 1, Size: 256 << 10, Spread: time.Second, Origin: 128 << 10,
		Dir: t.TempDir(), Strangers: true})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rep.Print(&out)
	t.Log("\n" + out.String())
	a := rep.Artifacts[0]
	if a.Failed != 0 || len(a.Times) != 12 {
		t.Errorf("%d clients failed, %d got it; want all 12", a.Failed, len(a.Times))
	}
	for s, n := range a.SubnetGETs {
		if n != 1 {
			t.Errorf("subnet %d fetched it %d times from the hub, want once (its other nodes told which peer receives it)", s, n)
		}
	}
	if a.HubWaits != 10 {
		t.Errorf("the hub named a receiving peer %d times, want 10 (each subnet's 5 later nodes)", a.HubWaits)
	}
}

// Nodes of a subnet that do not know each other ask for an artifact one
// after another, long after the hub stored it: the hub names the peers of
// the subnet that received it, and each subnet's link carries it once.
func TestStrangersTakeHolders(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Config{Nodes: 12, Subnets: 2, Artifacts: 1, Size: 256 << 10, Spread: 6 * time.Second,
		Dir: t.TempDir(), Strangers: true})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rep.Print(&out)
	t.Log("\n" + out.String())
	a := rep.Artifacts[0]
	if a.Failed != 0 || len(a.Times) != 12 {
		t.Errorf("%d clients failed, %d got it; want all 12", a.Failed, len(a.Times))
	}
	for s, n := range a.SubnetGETs {
		if n != 1 {
			t.Errorf("subnet %d fetched it %d times from the hub, want once (its later nodes told which peers received it)", s, n)
		}
	}
}
