package hub

import (
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// The nodes and clients a hub serves, for its page and `warren status`:
// who comes, when last, what it took and how much of it the hub held.

// Client is one node (by the id it gives, HeaderNode, and its address) or
// plain client (by address) of the hub.
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

// maxRowsPerAddr bounds the rows one address holds (a node, a second
// instance, apt on the same machine): a client cycling through ids takes
// the place of its own rows, not of others'.
const maxRowsPerAddr = 4

// clients is the hub's table of them, by node id and address: the id is
// the client's word, so a client that gives another's id gets a row of
// its own, not that node's.
type clients struct {
	mu     sync.Mutex                  // guards m and byAddr
	m      *lru.Cache[rowKey, *Client] // nil until the first request
	byAddr map[string]int              // rows per address
}

// rowKey names a row: the node id given (empty for none) and the
// address the requests come from.
type rowKey struct{ node, addr string }

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
	key := rowKey{node, addr}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.byAddr = map[string]int{}
		c.m, _ = lru.NewWithEvict(maxClients, func(k rowKey, _ *Client) {
			if c.byAddr[k.addr]--; c.byAddr[k.addr] <= 0 {
				delete(c.byAddr, k.addr)
			}
		})
	}
	cl, ok := c.m.Get(key)
	if !ok {
		if c.byAddr[addr] >= maxRowsPerAddr {
			for _, k := range c.m.Keys() { // the least recently seen first
				if k.addr == addr {
					c.m.Remove(k)
					break
				}
			}
		}
		cl = &Client{Node: node, Addr: addr}
		c.byAddr[addr]++
		c.m.Add(key, cl)
	}
	cl.LastSeen = now
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
	if c.m == nil {
		return []Client{}
	}
	out := make([]Client, 0, c.m.Len())
	for _, cl := range c.m.Values() {
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
