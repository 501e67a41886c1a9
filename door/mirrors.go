package door

import (
	"cmp"
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/sync/singleflight"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/fill"
	"github.com/warren-cache/warren/hub"
	"github.com/warren-cache/warren/rpm"
)

// Mirror groups. A repository's metalink= or mirrorlist= URL answers a
// list of mirrors (rpm.ParseMirrorList): dnf takes the first that works,
// in an order that differs from machine to machine. The list is an index
// file like any other (kept by URL, revalidated, served stale when its
// host does not answer, passed through a hub, replicated), and a trusted
// one (listtrust.go) defines a repository scope of its own: the mirror
// group. In dnf's trust model the list is what names the repository
// (fetched over https from the distribution, a metalink carrying
// repomd.xml's hashes), so within the group:
//
//   - a metalink's hashes of repomd.xml (current and alternates) are
//     what repodata/repomd.xml must hash to under every mirror (planRPM
//     takes them from the group: no fact is recorded under each mirror,
//     so a list of a thousand mirrors is no thousand repositories in the
//     index): repomd.xml is hash-known from any of them, and a stale
//     mirror's, which the list does not name, is refused;
//   - in a metalink's group, what its hash anchors (a file a repomd.xml
//     it names lists; a package a primary.xml such a repomd.xml lists,
//     learnt from any mirror) applies to the same path on every mirror
//     (groupFact): the mirror a package is asked of need not be the one
//     whose primary.xml passed through warren. A plain list anchors
//     nothing: one mirror's metadata never decides another's files;
//   - every mirror is a source of the same verified bytes: a fill that
//     stalls on one goes on from the next (mirrorSources);
//   - the list is answered in the site's order (SiteList): mirrors warren
//     can cache first (http, or https hosts it intercepts), those whose
//     metadata the site holds first among them, then the list's
//     preference; the same order for every machine, and a node keeps the
//     order its hub chose.
//
// A mirror's membership is a fact of its own (groupPrefix + its base ->
// the list's key), recorded and swept with the list's learn, so the group
// outlives a restart; the group itself is read from the list's stored
// copy when first needed. A base belongs to one list: the first trusted
// list that names it keeps it, but a metalink (whose hash anchors it)
// takes it from a plain mirror list, and a newer answer of the same list
// (the same URL but for its query: dnf adds countme=1) from the older.

// groupPrefix keys the fact that a mirror's base belongs to a list.
const groupPrefix = "mirror-group:"

// maxMirrorSources bounds the other mirrors one fill may go on to.
const maxMirrorSources = 4

// maxGroups and maxGroupBytes bound the groups kept read in memory (the
// least recently used forgotten first): a list's parsed form, what its
// rewrite needs of it (a metalink's head and tail), not its bytes. Real
// lists are tens of KB.
const (
	maxGroups     = 256
	maxGroupBytes = 16 << 20
)

// HeaderMirrors marks a list a warren answered in its site's order: a node
// keeps the order its hub chose.
const HeaderMirrors = "X-Warren-Mirrors"

// mirrorGroup is one list, read.
type mirrorGroup struct {
	list   string            // the list's key
	digest cachestore.Digest // the stored copy it was read from
	l      *rpm.MirrorList
	bases  []string            // each mirror's base, canonical ("" when unusable)
	repomd []cachestore.Digest // a metalink's: current, then alternates
	size   int                 // what it holds in memory, about
	fig    *groupFigures
}

// groupFigures are a group's counts for the page; they outlive a reread.
type groupFigures struct {
	hits, misses, refused atomic.Int64
	chosen                atomic.Pointer[string]
}

// mirrorGroups is what the door knows of the groups.
type mirrorGroups struct {
	mu     sync.Mutex // guards the rest
	loaded bool
	// byBase is every membership fact, read once and kept as lists are
	// learnt (listLearnt).
	byBase map[string]holder // a mirror's base -> the list it belongs to
	// groups are the lists read, by key; bytes what they hold.
	groups  *simplelru.LRU[string, *mirrorGroup]
	bytes   int
	figures map[string]*groupFigures
	// hosts are MirrorHosts' answer, built from byBase with policy;
	// stale once a list is learnt. version changes with the hosts.
	hosts      []string
	hostsOf    *ListPolicy
	hostsStale bool
	version    uint64
	// reads makes one read of a list at a time (readList); readCount
	// counts them.
	reads     singleflight.Group
	readCount atomic.Int64
}

// holder is the list a base belongs to.
type holder struct {
	list     string // its key
	metalink bool
}

// Membership facts say which kind of list holds the base (Known.Source).
const (
	kindMetalink   = "metalink"
	kindMirrorlist = "mirrorlist"
)

// baseOf is a mirror's base URL in canonical form, "" when it cannot be
// one (not http(s), a user name in it).
func baseOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return ""
	}
	return string(newScope(u, u.EscapedPath()))
}

// readList reads a stored list (bounded) and what it says.
func (s *Door) readList(list string, d cachestore.Digest) (*mirrorGroup, error) {
	s.mirrors.readCount.Add(1)
	b, err := s.store.ReadBlob(d)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	l, err := rpm.ParseMirrorList(b.File)
	if err != nil {
		return nil, fmt.Errorf("read the list %s: %w", list, err)
	}
	g := &mirrorGroup{list: list, digest: d, l: l}
	for _, m := range l.Mirrors {
		g.bases = append(g.bases, baseOf(m.Base))
	}
	for _, v := range l.Repomd {
		h, _ := v.Hash()
		g.repomd = append(g.repomd, cachestore.Digest{Algo: h.Algo, Hex: h.Hex})
	}
	g.size = l.Bytes() + len(list) + 128*len(g.repomd)
	for _, b := range g.bases {
		g.size += len(b) + 16
	}
	return g, nil
}

// trustedList says whether the list at key, whose stored copy has meta,
// makes a group (listtrust.go): a repo file or mirror_lists names it, or
// this node's hub answered it in the site's order.
func (s *Door) trustedList(key string, meta map[string]string) bool {
	if meta[HeaderMirrors] != "" {
		return true
	}
	return s.listPolicy().Trusts(key)
}

// liveList says whether list still makes a group: it is held, and trusted.
func (s *Door) liveList(list string) bool {
	c, err := s.store.Cached(list)
	return err == nil && s.trustedList(list, c.Meta)
}

// learnList records what list p (its stored blob d) teaches: each
// mirror's membership of its group; nothing at all when the list is not
// trusted. It returns the bases it took, for listLearnt.
func (s *Door) learnList(p Plan, d cachestore.Digest, r io.Reader, emit emitFunc) (kept []string, metalink bool, err error) {
	// A replicated list's URL-cache entry (what says a hub ordered it) may
	// come after its learn begins: without one, the policy alone decides
	// (it refused every replicated list learnt before the puller wrote
	// the entry, for good: the spoke made no group of it).
	var meta map[string]string
	if c, err := s.store.Cached(p.Key); err == nil {
		meta = c.Meta
	}
	if !s.trustedList(p.Key, meta) {
		if _, logged := s.untrusted.Get(p.Key); !logged {
			s.untrusted.Add(p.Key, struct{}{})
			s.log.Info("a list of mirrors that no repo file, mirror_lists entry or hub names: served as it came, and no mirror group is made of it",
				slog.String("url", p.ShownURL()))
		}
		return nil, false, nil
	}
	l, err := rpm.ParseMirrorList(r)
	if err != nil {
		return nil, false, err
	}
	s.loadGroups()
	policy := s.listPolicy()
	kind := kindMirrorlist
	if l.Metalink {
		kind = kindMetalink
	}
	for _, m := range l.Mirrors {
		base := baseOf(m.Base)
		if base == "" || policy.Plain(base) || !s.mayTake(p.Key, l.Metalink, base) {
			continue
		}
		kept = append(kept, base)
		// Depth -1: no repository scope (the key is no URL). A metalink's
		// hash of repomd.xml is no fact of its own under each mirror: the
		// plan takes it from the group (planRPM).
		if err := emit(groupPrefix+base, true, cachestore.Known{Digest: d, Size: -1, Name: p.Key, Source: kind, Depth: -1}); err != nil {
			return nil, false, err
		}
	}
	if len(kept) < len(l.Mirrors) {
		s.log.Debug("a list's mirrors that belong to another list or are a repo file's baseurl are left out of its group",
			slog.String("url", p.ShownURL()), slog.Int("mirrors", len(l.Mirrors)), slog.Int("kept", len(kept)))
	}
	return kept, l.Metalink, nil
}

// listPolicy is the lists of mirrors policy now (nil: none trusted but a
// hub's).
func (s *Door) listPolicy() *ListPolicy {
	if s.cfg.Lists == nil {
		return nil
	}
	return s.cfg.Lists()
}

// mayTake says whether list (a metalink or not) may take base into its
// group: a base held by another live list stays with it, unless that is
// an older answer of the same list, or a plain mirror list and list a
// metalink.
func (s *Door) mayTake(list string, metalink bool, base string) bool {
	gs := &s.mirrors
	gs.mu.Lock()
	h, held := gs.byBase[base]
	gs.mu.Unlock()
	switch {
	case !held, h.list == list, sameList(h.list, list), metalink && !h.metalink:
		return true
	}
	return !s.liveList(h.list)
}

// sameList says whether two lists' keys differ at most in their query.
func sameList(a, b string) bool {
	a, _, _ = strings.Cut(a, "?")
	b, _, _ = strings.Cut(b, "?")
	return a == b
}

// listLearnt records in memory what a learn of list taught: the bases
// it took (none when it is not trusted), which another list no longer
// holds, and the bases it held and no longer names. Other groups stay as
// they were read.
func (s *Door) listLearnt(list string, kept []string, metalink bool) {
	s.loadGroups()
	gs := &s.mirrors
	gs.mu.Lock()
	defer gs.mu.Unlock()
	for base, h := range gs.byBase {
		if h.list == list {
			delete(gs.byBase, base)
		}
	}
	for _, base := range kept {
		gs.byBase[base] = holder{list: list, metalink: metalink}
	}
	gs.hostsStale = true
}

// groupOf finds the group whose mirror key lies under, and that
// mirror's base.
func (s *Door) groupOf(key string) (*mirrorGroup, string) {
	s.loadGroups()
	i := strings.Index(key, "://")
	if i < 0 {
		return nil, ""
	}
	gs := &s.mirrors
	for j := len(key) - 1; j > i+3; j-- {
		if key[j] != '/' {
			continue
		}
		gs.mu.Lock()
		h, ok := gs.byBase[key[:j+1]]
		gs.mu.Unlock()
		if ok {
			if g := s.groupNamed(h.list); g != nil && slices.Contains(g.bases, key[:j+1]) {
				return g, key[:j+1]
			}
			return nil, ""
		}
	}
	return nil, ""
}

// loadGroups reads the members of every group from the facts, once.
func (s *Door) loadGroups() {
	gs := &s.mirrors
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if gs.loaded {
		return
	}
	byBase := map[string]holder{}
	err := s.store.KnownPrefix(groupPrefix, func(key string, k cachestore.Known) {
		byBase[strings.TrimPrefix(key, groupPrefix)] = holder{list: k.Name, metalink: k.Source == kindMetalink}
	})
	if err != nil {
		s.log.Warn("cannot read the mirror groups; each mirror is a repository of its own until its list is fetched again", slog.Any("err", err))
	}
	gs.byBase, gs.loaded = byBase, true
}

// groupNamed is the group of a trusted list, read from its stored copy if
// need be (once for all who ask at the same time).
func (s *Door) groupNamed(list string) *mirrorGroup {
	c, err := s.store.Cached(list)
	if err != nil || !s.trustedList(list, c.Meta) {
		return nil // its copy is gone, or no one trusts it: each mirror stands alone
	}
	gs := &s.mirrors
	gs.mu.Lock()
	if gs.groups != nil {
		if g, ok := gs.groups.Get(list); ok && g.digest == c.Digest {
			gs.mu.Unlock()
			return g
		}
	}
	gs.mu.Unlock()
	v, err, _ := gs.reads.Do(list+"@"+c.Digest.String(), func() (any, error) {
		g, err := s.readList(list, c.Digest)
		if err != nil {
			return nil, err
		}
		gs.mu.Lock()
		defer gs.mu.Unlock()
		if gs.groups == nil {
			gs.groups, _ = simplelru.NewLRU(maxGroups, func(_ string, old *mirrorGroup) { gs.bytes -= old.size })
		}
		if gs.figures == nil {
			gs.figures = map[string]*groupFigures{}
		}
		if g.fig = gs.figures[list]; g.fig == nil {
			g.fig = &groupFigures{}
			if len(gs.figures) < maxGroups {
				gs.figures[list] = g.fig
			}
		}
		gs.groups.Remove(list) // an older read's (evicted: its bytes counted off)
		gs.groups.Add(list, g)
		gs.bytes += g.size
		for gs.bytes > maxGroupBytes && gs.groups.Len() > 1 {
			gs.groups.RemoveOldest()
		}
		return g, nil
	})
	if err != nil {
		return nil
	}
	return v.(*mirrorGroup)
}

// groupFact is what p's group's metalink vouches for at p's path, when
// p's own URL has no fact, after the learns in progress that wait
// (useKnown's) waits for. Its hash anchors a chain: a file repomd.xml
// lists, from a repomd.xml the metalink names (current or an alternate)
// that the site holds; a package, from another mirror's fact learnt from
// a primary.xml such a repomd.xml lists (and still listed by it). One
// mirror's own metadata, whatever it says, never decides another
// mirror's files: a plain mirror list anchors nothing, and shares no
// fact.
func (s *Door) groupFact(ctx context.Context, p *Plan, wait func(ctx context.Context, key string, self *learnRun)) (cachestore.Known, bool) {
	g := s.groupNamed(p.Group)
	if g == nil || !g.l.Metalink || !strings.HasPrefix(p.Key, p.groupBase) {
		return cachestore.Known{}, false
	}
	scope := repoScope(p.groupBase)
	primaries := map[cachestore.Digest]bool{}
	for _, d := range g.repomd {
		for _, data := range s.repomdListing(d) {
			k := cachestore.Known{Digest: cachestore.Digest{Algo: data.Checksum.Algo, Hex: data.Checksum.Hex}, Size: data.Size, Name: data.Type}
			if key, ok := scope.join(data.Href); ok && key == p.Key {
				return k, true
			}
			if data.Type == "primary" {
				primaries[k.Digest] = true
			}
		}
	}
	if len(primaries) == 0 {
		return cachestore.Known{}, false
	}
	rel := p.Key[len(p.groupBase):]
	for _, base := range g.bases {
		if base == "" || base == p.groupBase {
			continue
		}
		key := base + rel
		wait(ctx, key, nil)
		k, err := s.store.Known(key)
		if err != nil {
			continue
		}
		lister := cachestore.ListerID(base + "repodata/primary")
		if k.Lister != lister {
			continue
		}
		if at, from, err := s.store.LearntAt(lister); err == nil && k.Learnt >= at && primaries[from] {
			return k, true
		}
	}
	return cachestore.Known{}, false
}

// repomdListing is what repomd.xml blob d lists, when the site holds it
// (nil otherwise), read once.
func (s *Door) repomdListing(d cachestore.Digest) []rpm.Data {
	if l, ok := s.listings.Get(d); ok {
		return l
	}
	if !s.Holds(d) {
		return nil
	}
	b, err := s.store.ReadBlob(d)
	if err != nil {
		return nil
	}
	defer b.Close()
	data, err := rpm.ParseRepomd(io.LimitReader(b.File, maxTopBytes))
	if err != nil {
		data = []rpm.Data{} // verified, and malformed: nothing, once
	}
	s.listings.Add(d, data)
	return data
}

// siteOrder is the order warren answers a group's list in: mirrors it can
// cache first; among them the one it put first before (a list server
// that shuffles its mirrors for every request does not move the site),
// then those whose metadata the site holds (a repomd.xml's copy, a
// primary.xml learnt: what it used before a restart), then the list's
// preference, then a hash of the URL (the same on every warren).
func (s *Door) siteOrder(g *mirrorGroup) []int {
	type rank struct {
		i                        int
		cacheable, chosen, holds bool
		preference               int
		hash                     uint64
	}
	chosen := g.fig.chosen.Load()
	ranks := make([]rank, len(g.l.Mirrors))
	for i, m := range g.l.Mirrors {
		r := rank{i: i, preference: m.Preference, chosen: chosen != nil && *chosen == m.Base}
		if base := g.bases[i]; base != "" {
			r.cacheable = !m.HTTPS() || s.cacheableHTTPS(base)
			_, err := s.store.Cached(base + "repodata/repomd.xml")
			from, _ := s.store.LearntFrom(cachestore.ListerID(base + "repodata/primary"))
			r.holds = err == nil || !from.IsZero()
		}
		h := fnv.New64a()
		h.Write([]byte(m.Base))
		r.hash = h.Sum64()
		ranks[i] = r
	}
	slices.SortStableFunc(ranks, func(a, b rank) int {
		if a.cacheable != b.cacheable {
			return boolFirst(a.cacheable)
		}
		if a.chosen != b.chosen {
			return boolFirst(a.chosen)
		}
		if a.holds != b.holds {
			return boolFirst(a.holds)
		}
		if c := cmp.Compare(b.preference, a.preference); c != 0 {
			return c
		}
		return cmp.Compare(a.hash, b.hash)
	})
	out := make([]int, len(ranks))
	for n, r := range ranks {
		out[n] = r.i
	}
	return out
}

func boolFirst(a bool) int {
	if a {
		return -1
	}
	return 1
}

// cacheableHTTPS says whether warren answers CONNECTs to an https mirror
// itself (package intercept), so that what dnf asks of it is cached.
func (s *Door) cacheableHTTPS(base string) bool {
	if s.cfg.Intercepts == nil {
		return false
	}
	u, err := url.Parse(base)
	return err == nil && s.cfg.Intercepts(u.Hostname())
}

// SiteList is what a client is answered for list p, whose stored copy is
// c: the list with its mirrors in the site's order (a metalink's hashes
// as they were), once what it teaches is learnt, so that no request that
// follows from it can miss a fact. body is nil when the stored copy is
// the answer as it is: a list that makes no group, or one its hub
// ordered for its nodes (ordered then). ordered says the answer is in
// the site's order (HeaderMirrors).
func (s *Door) SiteList(ctx context.Context, p Plan, c cachestore.Cached) (body []byte, ordered bool, err error) {
	s.learning.wait(ctx, p.Key, nil)
	if c.Meta[HeaderMirrors] != "" {
		return nil, true, nil
	}
	var g *mirrorGroup
	if p.Meta == MetaMirrors {
		if g = s.groupNamed(p.Key); g != nil && g.digest != c.Digest {
			g = nil
		}
	}
	if g == nil {
		return nil, false, nil
	}
	order := s.siteOrder(g)
	out, err := g.l.Rewrite(order)
	if err != nil {
		s.log.Warn("cannot reorder this list of mirrors; answered as it came", slog.String("url", p.ShownURL()), slog.Any("err", err))
		return nil, false, nil
	}
	chosen := g.l.Mirrors[order[0]].Base
	if old := g.fig.chosen.Swap(&chosen); old == nil || *old != chosen {
		s.log.Info("mirror group: the site's mirror", slog.String("list", p.ShownURL()), slog.String("mirror", chosen),
			slog.Int("mirrors", len(g.l.Mirrors)), slog.Bool("metalink", g.l.Metalink))
	}
	return out, true, nil
}

// mirrorSources are the other mirrors of p's group as sources of p's
// verified bytes, in the site's order: a fill that stalls or fails on
// one goes on from the next.
func (s *Door) mirrorSources(p Plan, who Asker) []fill.Source {
	if p.Group == "" || p.Digest.IsZero() || p.Cred.Private() || !strings.HasPrefix(p.Key, p.groupBase) {
		return nil
	}
	g := s.groupNamed(p.Group)
	if g == nil {
		return nil
	}
	rel := p.Key[len(p.groupBase):]
	var out []fill.Source
	for _, i := range s.siteOrder(g) {
		base := g.bases[i]
		if base == "" || base == p.groupBase {
			continue
		}
		out = append(out, &upstreamSource{s: s, p: p, who: who, url: base + rel, group: g})
		if len(out) == maxMirrorSources {
			break
		}
	}
	return out
}

// MirrorHosts are the https hosts of the mirrors of every group of a
// trusted list warren knows: what interception may add (cmd/warren); the
// slice is shared, not to be changed. version changes whenever the hosts
// do: built once, again only when a list is learnt or the lists policy
// changes (interception asks on every CONNECT).
func (s *Door) MirrorHosts() (hosts []string, version uint64) {
	s.loadGroups()
	policy := s.listPolicy()
	gs := &s.mirrors
	gs.mu.Lock()
	if gs.hosts != nil && !gs.hostsStale && gs.hostsOf == policy {
		defer gs.mu.Unlock()
		return gs.hosts, gs.version
	}
	byBase := maps.Clone(gs.byBase)
	gs.hostsStale, gs.hostsOf = false, policy
	gs.mu.Unlock()
	live := map[string]bool{}
	out := []string{}
	for base, h := range byBase {
		rest, ok := strings.CutPrefix(base, "https://")
		if !ok {
			continue
		}
		isLive, seen := live[h.list]
		if !seen {
			isLive = s.liveList(h.list)
			live[h.list] = isLive
		}
		if !isLive {
			continue
		}
		host, _, _ := strings.Cut(rest, "/")
		if u, err := url.Parse("https://" + host); err == nil {
			out = append(out, u.Hostname())
		}
	}
	slices.Sort(out)
	out = slices.Compact(out)
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if !slices.Equal(out, gs.hosts) || gs.hosts == nil {
		gs.hosts = out
		gs.version++
	}
	return gs.hosts, gs.version
}

// MirrorGroup is one group, for the page.
type MirrorGroup struct {
	List     string // the list's URL
	Metalink bool
	Mirrors  int
	// Chosen is the mirror the site's answers put first.
	Chosen string
	// Hits and Misses count the requests for its mirrors' files; Refused
	// the repomd.xml files of mirrors the metalink does not name.
	Hits, Misses, Refused int64
}

// MirrorGroups are the groups warren read, for the page.
func (s *Door) MirrorGroups() []MirrorGroup {
	gs := &s.mirrors
	gs.mu.Lock()
	var groups []*mirrorGroup
	if gs.groups != nil {
		groups = gs.groups.Values()
	}
	gs.mu.Unlock()
	out := make([]MirrorGroup, 0, len(groups))
	for _, g := range groups {
		mg := MirrorGroup{List: hub.RedactURLs(g.list), Metalink: g.l.Metalink, Mirrors: len(g.l.Mirrors),
			Hits: g.fig.hits.Load(), Misses: g.fig.misses.Load(), Refused: g.fig.refused.Load()}
		if c := g.fig.chosen.Load(); c != nil {
			mg.Chosen = *c
		}
		out = append(out, mg)
	}
	slices.SortFunc(out, func(a, b MirrorGroup) int { return strings.Compare(a.List, b.List) })
	return out
}

// Served is told how a request for p ended: its mirror group's figures,
// and a zchunk primary.xml's plain one fetched beside it (zchunk.go).
func (s *Door) Served(p Plan, outcome string) {
	if outcome == "hit" || outcome == "miss" {
		s.learnBesideZchunk(p)
	}
	if p.Group == "" {
		return
	}
	gs := &s.mirrors
	gs.mu.Lock()
	fig := gs.figures[p.Group]
	gs.mu.Unlock()
	if fig == nil {
		return
	}
	switch outcome {
	case "hit", "revalidated", "stale":
		fig.hits.Add(1)
	case "miss":
		fig.misses.Add(1)
	}
}
