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

// lateSamples is how many recent answer delays are kept.
const lateSamples = 32

// lateness is a ring of the latest answer delays; n.mu guards it.
type lateness struct {
	delays [lateSamples]time.Duration
	next   int
	n      int
}

// answeredAfter records an answer that came d after its question.
func (n *Node) answeredAfter(d time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	l := &n.late
	l.delays[l.next] = d
	l.next = (l.next + 1) % lateSamples
	l.n = min(l.n+1, lateSamples)
}

// electionWindow is how long wants are collected: twice the delay nine
// answers in ten came within lately, at least the configured window and at
// most four times it.
func (n *Node) electionWindow() time.Duration {
	n.mu.Lock()
	ds := slices.Clone(n.late.delays[:n.late.n])
	n.mu.Unlock()
	w := n.cfg.ElectionWindow
	if len(ds) == 0 {
		return w
	}
	slices.Sort(ds)
	p90 := ds[len(ds)*9/10]
	return min(max(w, 2*p90), 4*w)
}
