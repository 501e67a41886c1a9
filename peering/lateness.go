package peering

import (
	"slices"
	"time"
)

// How late answers come. On a busy LAN (a laptop waking, a VM on a loaded
// host, fifty daemons on two cores) answers come hundreds of milliseconds
// late; an election that closed before the wants arrived would make two
// winners, and two downloads over the WAN. The window stretches to twice
// what answers lately took, within four times the configured one; it still
// ends early once every peer is heard.
//
// A late answer is a datagram a LAN host chooses when to send: each
// question counts one delay per peer it asked, and a delay counts as at
// most twice the configured window. However late and however often a
// host answers, a miss waits at most three windows more, and a
// downloader's silence is noticed at most eight windows later. (At one
// window a delay, the fifty-host site's answers, late by hundreds of
// milliseconds, could not stretch it enough: two downloads.)

// lateSamples is how many recent answer delays are kept.
const lateSamples = 32

// lateness is a ring of the latest answer delays and their 90th
// percentile, kept as each comes (it is read far more often); n.mu
// guards it.
type lateness struct {
	delays [lateSamples]time.Duration
	next   int
	n      int
	p90    time.Duration
}

// answeredAfter records an answer that came d after its question, as at
// most twice the configured election window.
func (n *Node) answeredAfter(d time.Duration) {
	d = min(d, 2*n.cfg.ElectionWindow)
	n.mu.Lock()
	defer n.mu.Unlock()
	l := &n.late
	l.delays[l.next] = d
	l.next = (l.next + 1) % lateSamples
	l.n = min(l.n+1, lateSamples)
	ds := slices.Clone(l.delays[:l.n])
	slices.Sort(ds)
	l.p90 = ds[len(ds)*9/10]
}

// quietAfter is how long a downloader's heartbeats may stop before it is
// taken for gone: three intervals, and four times the delay nine answers
// in ten came within lately (at most eight windows, and 10 s, more): a
// busy LAN's heartbeats come late too, and electing again then would
// start a second download.
func (n *Node) quietAfter() time.Duration {
	return 3*n.cfg.Heartbeat + min(4*n.lateP90(), 10*time.Second)
}

// lateP90 is the delay nine answers in ten came within lately.
func (n *Node) lateP90() time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.late.p90
}

// electionWindow is how long wants are collected: twice the delay nine
// answers in ten came within lately, at least the configured window and at
// most four times it (delays count as at most two windows).
func (n *Node) electionWindow() time.Duration {
	w := n.cfg.ElectionWindow
	return min(max(w, 2*n.lateP90()), 4*w)
}
