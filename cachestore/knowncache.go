package cachestore

import (
	"sync"
	"sync/atomic"
)

// knownCache keeps decoded hash facts (Known, by URL) in memory: every
// hash-known request reads one, and reading it from the index was a tenth
// of the CPU of a small hit. Any write of facts (PutKnown, the sweep)
// moves the generation on after it lands, which drops every entry at once:
// facts change when metadata is learnt, rarely beside the hits that read
// them. An entry is tagged with the generation seen before its index read,
// so a read that raced a write is never kept past that write.
type knownCache struct {
	gen atomic.Uint64
	mu  sync.Mutex
	m   map[string]knownEntry
}

type knownEntry struct {
	gen   uint64
	k     Known
	found bool
}

// knownCacheMax bounds the entries (about 250 bytes each: under 1 MB);
// past it the map starts again, and the requests that follow fill it with
// what is asked for now.
const knownCacheMax = 4 << 10

func (c *knownCache) get(url string) (Known, bool, bool) {
	gen := c.gen.Load()
	c.mu.Lock()
	e, ok := c.m[url]
	c.mu.Unlock()
	if !ok || e.gen != gen {
		return Known{}, false, false
	}
	return e.k, e.found, true
}

func (c *knownCache) put(url string, gen uint64, k Known, found bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= knownCacheMax {
		c.m = make(map[string]knownEntry)
	}
	c.m[url] = knownEntry{gen: gen, k: k, found: found}
}

// changed drops every entry: call it after a write of facts has landed.
func (c *knownCache) changed() { c.gen.Add(1) }
