package hub

import (
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// The nodes and clients a hub serves, for its page and `warren status`:
// who comes, when last, what it took and how much of it the hub held.

// Client is one node (by the id it gives, HeaderNode) or plain client (by
// address) of the hub.
type Client struct {
	// Node is the node's id; empty for a client that gives none (apt
	// pointed at the hub, another hub).
	Node     string    `json:"node,omitempty"`
	Addr     string    `json:"addr"`
	LAN      string    `json:"lan,omitempty"`
	LastSeen time.Time `json:"last_seen"`
	Requests int64     `json:"requests"`
	// Hits are the requests answered from what the hub held; Bytes what
	// it sent.
	Hits  int64 `json:"hits"`
	Bytes int64 `json:"bytes"`
}

// maxClients bounds the clients remembered: the least recently seen go.
const maxClients = 1024

// clients is the hub's table of them.
type clients struct {
	mu sync.Mutex // guards m
	m  map[string]*Client
}

// served records a request answered with outcome and n bytes.
func (c *clients) served(r *http.Request, now time.Time, outcome string, n int64) {
	addr := r.RemoteAddr
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		addr = ap.Addr().Unmap().String()
	}
	node := r.Header.Get(HeaderNode)
	if !validNodeID(node) {
		node = ""
	}
	key := "addr " + addr
	if node != "" {
		key = "node " + node
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]*Client{}
	}
	cl := c.m[key]
	if cl == nil {
		if len(c.m) >= maxClients {
			var oldest string
			for k, v := range c.m {
				if oldest == "" || v.LastSeen.Before(c.m[oldest].LastSeen) {
					oldest = k
				}
			}
			delete(c.m, oldest)
		}
		cl = &Client{Node: node}
		c.m[key] = cl
	}
	cl.Addr, cl.LastSeen = addr, now
	if lan := RequesterOf(r); lan.Hints {
		cl.LAN = lan.LAN
	}
	cl.Requests++
	cl.Bytes += n
	if outcome == "hit" || outcome == "revalidated" {
		cl.Hits++
	}
}

// list is every client, the most recently seen first.
func (c *clients) list() []Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Client, 0, len(c.m))
	for _, cl := range c.m {
		out = append(out, *cl)
	}
	slices.SortFunc(out, func(a, b Client) int { return b.LastSeen.Compare(a.LastSeen) })
	return out
}

// validNodeID says whether s is a node id as nodes give it: 32 lowercase
// hex digits (anything else a client sends is not shown as one).
func validNodeID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
