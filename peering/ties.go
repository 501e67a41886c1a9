package peering

import (
	"crypto/rand"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"slices"
	"time"
)

// Addresses of one host. A dual-stack peer is heard over IPv4 and IPv6,
// and over IPv6 from its link-local address (multicast) as well as its
// unique one (unicast); the table knows it at one address. Without a
// group secret a datagram proves nothing of its sender, so one naming a
// known peer from its other family or scope could be anyone's: nothing it
// says of the peer is taken (its table entry, its wants, haves, beats,
// answers) until that address is tied to the peer, which takes a proof
// only the peer can give:
//
//  1. a node that hears a known peer from such an address (or, on an
//     IPv6-capable socket, as soon as a peer joins its table) sends the
//     peer, at the address the table knows, a hello with Prove set and a
//     random challenge (ReqID and Done: 95 bits);
//  2. the peer echoes the challenge (a hello with Echo set) to every
//     address it sends datagrams to besides the known peers: each subnet's
//     broadcast address, each interface's multicast group, its static
//     peers; and to the challenger's own address;
//  3. the challenger ties each address an echo of its challenge comes
//     from to the peer. A host that took the peer's id never sees the
//     challenge, which went to the peer's known address.
//
// With a group secret every datagram is authenticated: one from the
// other family or scope is the peer's (an authenticated one for this
// node ties its address, so the blob tokens it sends from there are
// taken), and no challenge is sent.

// proveFor is how long a challenge waits for its echoes; a peer is
// challenged at most once in it.
const proveFor = 10 * time.Second

// Echoes a node sends a second (burst echoBurst): each is a datagram per
// broadcast target, so a host that asks for them cannot make a node flood
// the LAN.
const (
	echoRate  = 10
	echoBurst = 50
)

// challenge is one outstanding proof of a peer's other addresses.
type challenge struct {
	req   uint32
	token int64
	until time.Time
}

// way says how a datagram naming a known peer reached this node.
type way int

const (
	// wayKnown: from the address the table knows (or a new id, which the
	// table judges): as it says.
	wayKnown way = iota
	// wayTied: from another address of the peer's host, tied to it, or
	// authenticated: the peer's, answered at its known address.
	wayTied
	// wayUntied: from its other family or scope, not (yet) tied: nothing
	// it says of the peer is taken.
	wayUntied
)

// otherWay says whether b reaches a host known at a over the other family
// or the other IPv6 scope (link-local against unique).
func otherWay(a, b netip.Addr) bool {
	return a.Is4() != b.Is4() || a.Is6() && b.Is6() && a.IsLinkLocalUnicast() != b.IsLinkLocalUnicast()
}

// way says how m, from src, reached this node, and where a reply goes:
// the peer's known address, but for a datagram from an address the table
// judges (its known one, a new id, or the same family and scope, where
// another address is an impostor's unless an authenticated message moves
// the peer).
func (n *Node) way(m Message, src netip.AddrPort) (way, netip.AddrPort) {
	p, ok := n.table.Get(m.From)
	a := src.Addr().Unmap()
	switch {
	case !ok || p.Addr == a:
		return wayKnown, src
	case slices.Contains(p.Also, a):
		return wayTied, p.AddrPort()
	case !otherWay(p.Addr, a):
		return wayKnown, src
	case len(n.cfg.Secret) > 0:
		if m.To == n.cfg.ID {
			n.table.Tie(m.From, a)
		}
		return wayTied, p.AddrPort()
	case m.Type == MsgHello && m.Echo && n.proven(m):
		n.table.Tie(m.From, a)
		n.log.Debug("tied a peer's other address to it", slog.String("peer", m.From.String()), slog.String("known", p.Addr.String()), slog.String("addr", a.String()))
		return wayTied, p.AddrPort()
	}
	return wayUntied, p.AddrPort()
}

// challengePeer asks peer id, at to, to echo a challenge from each of its
// addresses (at most once in proveFor; never with a group secret, whose
// MAC proves every datagram).
func (n *Node) challengePeer(id NodeID, to netip.AddrPort) {
	if len(n.cfg.Secret) > 0 {
		return
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	c := challenge{req: binary.BigEndian.Uint32(b[:4]), token: int64(binary.BigEndian.Uint64(b[4:]) >> 1), until: n.now().Add(proveFor)}
	n.mu.Lock()
	if old, ok := n.challenges[id]; ok && n.now().Before(old.until) {
		n.mu.Unlock()
		return
	}
	if len(n.challenges) >= 2*n.cfg.MaxPeers {
		// Only peers in the table are challenged; an id gone from it
		// leaves its entry behind until here.
		now := n.now()
		for k, v := range n.challenges {
			if now.After(v.until) {
				delete(n.challenges, k)
			}
		}
		if len(n.challenges) >= 2*n.cfg.MaxPeers {
			n.mu.Unlock()
			return
		}
	}
	n.challenges[id] = c
	n.mu.Unlock()
	n.send(Message{Type: MsgHello, To: id, Prove: true, ReqID: c.req, Done: c.token}, to)
}

// proven says whether m echoes the outstanding challenge to its sender.
func (n *Node) proven(m Message) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	c, ok := n.challenges[m.From]
	return ok && n.now().Before(c.until) && m.ReqID == c.req && m.Done == c.token
}

// echo answers a challenge from node id (at reply) from each address this
// node sends from: its broadcast and multicast targets and static peers,
// and the challenger's address. The copies that go to many name no
// receiver: every other node drops an echo that is not its own challenge's.
func (n *Node) echo(m Message, reply netip.AddrPort) {
	if !n.echoes.Allow() {
		return
	}
	e := Message{Type: MsgHello, Echo: true, ReqID: m.ReqID, Done: m.Done}
	for _, a := range append(slices.Clone(n.cfg.Broadcast), n.cfg.Static...) {
		if a.IsValid() && a != reply {
			n.send(e, a)
		}
	}
	e.To = m.From
	n.send(e, reply)
}

// untied is a datagram naming a known peer from its other family or
// scope, not tied to it: a question is answered (at the peer's known
// address), a challenge echoed; anything else is dropped and counted, and
// the peer challenged, so that an honest peer's other addresses are tied
// from then on.
func (n *Node) untied(m Message, src, known netip.AddrPort) {
	n.challengePeer(m.From, known)
	switch {
	case m.Type == MsgQuery:
		n.answer(m, known)
	case m.Type == MsgHello && m.Prove:
		// Echoed already.
	default:
		n.Dropped.Add(1)
		n.log.Debug("dropped a datagram naming a known peer from its other family or scope, not tied to it (a proof is asked of the peer)",
			slog.String("peer", m.From.String()), slog.String("type", m.Type.String()), slog.String("from", src.String()), slog.String("known", known.String()))
	}
}
