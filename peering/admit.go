package peering

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"golang.org/x/time/rate"
)

// Admission: what a datagram must pass before it is read further (a rate
// limit per source address; with a group secret, the replay window).

type replayKey struct {
	from  NodeID
	nonce uint64
}

// admit applies the per-source rate limit, before any decoding: a host
// that floods costs a map lookup per datagram.
func (n *Node) admit(a netip.Addr) bool {
	l, ok := n.limits.Get(a)
	if !ok {
		l = rate.NewLimiter(sourceRate, sourceBurst)
		n.limits.Add(a, l)
	}
	return l.Allow()
}

// errReplay is a datagram seen before, or sent outside the replay window.
var errReplay = errors.New("replayed or stale datagram")

// fresh drops, in a group with a secret, a datagram sent outside the
// replay window or one seen before: a captured datagram cannot be sent
// again to a member that saw it (PROTOCOL.md says what that leaves open).
// Without a secret anyone can forge a new one, so there is nothing to
// check.
func (n *Node) fresh(m Message) error {
	if len(n.cfg.Secret) == 0 {
		return nil
	}
	now := n.now().UnixMilli()
	window := ReplayWindow.Milliseconds()
	if skew := m.Sent - now; skew > window || skew < -window {
		if t := n.now(); t.Sub(n.skewLog) > time.Minute {
			n.skewLog = t
			n.log.Warn("dropping a peer's datagrams: its clock and ours differ by more than the replay window; keep the group's clocks in sync (NTP)",
				slog.String("peer", m.From.String()), slog.Duration("skew", time.Duration(skew)*time.Millisecond), slog.Duration("window", ReplayWindow))
		}
		return fmt.Errorf("%w: sent %dms from now", errReplay, m.Sent-now)
	}
	k := replayKey{m.From, m.Nonce}
	if until, seen := n.replay[k]; seen && until >= now {
		return fmt.Errorf("%w: nonce %x from %s seen before", errReplay, m.Nonce, m.From)
	}
	if len(n.replay) >= maxReplay {
		for k, until := range n.replay {
			if until < now {
				delete(n.replay, k)
			}
		}
		if len(n.replay) >= maxReplay {
			return fmt.Errorf("%w: too many datagrams in the window to remember", errReplay)
		}
	}
	// Remembered until it would be outside the window anyway.
	n.replay[k] = m.Sent + window
	return nil
}
