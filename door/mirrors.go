package door

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/fill"
	"github.com/warren-cache/warren/hub"
	"github.com/warren-cache/warren/rpm"
)

// Mirror groups. A repository's metalink= or mirrorlist= URL answers a
// list of mirrors (rpm.ParseMirrorList): dnf takes the first that works,
// in an order that differs from machine to machine. The list is an index
// file like any other (kept by URL, revalidated, served stale when its
// host does not answer, passed through a hub, replicated), and it defines
// a repository scope of its own: the mirror group. In dnf's trust model
// the list is what names the repository (fetched over https from the
// distribution, a metalink carrying repomd.xml's hashes), so within the
// group:
//
//   - a metalink's hashes of repomd.xml (current and alternates) are facts
//     for repodata/repomd.xml under every mirror: repomd.xml is
//     hash-known from any of them, and a stale mirror's, which the list
//     does not name, is refused;
//   - a fact learnt from one mirror's metadata applies to the same path
//     on every mirror (useKnown): the mirror a package is asked of need
//     not be the one whose primary.xml passed through warren;
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
// copy when first needed.

// groupPrefix keys the fact that a mirror's base belongs to a list.
const groupPrefix = "mirror-group:"

// maxMirrorSources bounds the other mirrors one fill may go on to.
const maxMirrorSources = 4

// maxGroups bounds the groups kept read in memory.
const maxGroups = 256

// HeaderMirrors marks a list a warren answered in its site's order: a node
// keeps the order its hub chose.
const HeaderMirrors = "X-Warren-Mirrors"

// mirrorGroup is one list, read.
type mirrorGroup struct {
	list   string            // the list's key
	digest cachestore.Digest // the stored copy it was read from
	raw    []byte
	l      *rpm.MirrorList
	bases  []string            // each mirror's base, canonical ("" when unusable)
	repomd []cachestore.Digest // a metalink's: current, then alternates
	fig    *groupFigures
}

// groupFigures are a group's counts for the page; they outlive a reread.
type groupFigures struct {
	hits, misses, refused atomic.Int64
	chosen                atomic.Pointer[string]
}

// mirrorGroups is what the door knows of the groups.
type mirrorGroups struct {
	mu      sync.Mutex // guards the rest
	loaded  bool
	byBase  map[string]string // a mirror's base -> its list's key
	groups  map[string]*mirrorGroup
	figures map[string]*groupFigures
}

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
	b, err := s.store.ReadBlob(d)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	raw, err := io.ReadAll(io.LimitReader(b.File, rpm.MaxMirrorListBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read the list %s: %w", list, err)
	}
	l, err := rpm.ParseMirrorList(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	g := &mirrorGroup{list: list, digest: d, raw: raw, l: l}
	for _, m := range l.Mirrors {
		g.bases = append(g.bases, baseOf(m.Base))
	}
	for _, v := range l.Repomd {
		h, _ := v.Hash()
		g.repomd = append(g.repomd, cachestore.Digest{Algo: h.Algo, Hex: h.Hex})
	}
	return g, nil
}

// listFacts are what a list teaches: each mirror's membership, and a
// metalink's current repomd.xml hash under each mirror.
func listFacts(p Plan, d cachestore.Digest, r io.Reader, emit emitFunc) error {
	l, err := rpm.ParseMirrorList(r)
	if err != nil {
		return err
	}
	for _, m := range l.Mirrors {
		base := baseOf(m.Base)
		if base == "" {
			continue
		}
		// Depth -1: no repository scope (the key is no URL).
		if err := emit(groupPrefix+base, true, cachestore.Known{Digest: d, Size: -1, Name: p.Key, Depth: -1}); err != nil {
			return err
		}
		if l.Metalink {
			h, _ := l.Repomd[0].Hash()
			k := cachestore.Known{Digest: cachestore.Digest{Algo: h.Algo, Hex: h.Hex}, Size: l.Repomd[0].Size, Name: "repomd", Depth: len(base)}
			if err := emit(base+"repodata/repomd.xml", true, k); err != nil {
				return err
			}
		}
	}
	return nil
}

// listLearnt drops what the door read of the groups: a list changed.
func (s *Door) listLearnt() {
	g := &s.mirrors
	g.mu.Lock()
	g.loaded, g.byBase, g.groups = false, nil, nil
	g.mu.Unlock()
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
		list, ok := gs.byBase[key[:j+1]]
		gs.mu.Unlock()
		if ok {
			if g := s.groupNamed(list); g != nil {
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
	byBase := map[string]string{}
	err := s.store.KnownPrefix(groupPrefix, func(key string, k cachestore.Known) {
		byBase[strings.TrimPrefix(key, groupPrefix)] = k.Name
	})
	if err != nil {
		s.log.Warn("cannot read the mirror groups; each mirror is a repository of its own until its list is fetched again", slog.Any("err", err))
	}
	gs.byBase, gs.loaded = byBase, true
}

// groupNamed is the group of a list, read from its stored copy if need be.
func (s *Door) groupNamed(list string) *mirrorGroup {
	c, err := s.store.Cached(list)
	if err != nil {
		return nil // its copy is gone: each mirror stands alone
	}
	gs := &s.mirrors
	gs.mu.Lock()
	g := gs.groups[list]
	gs.mu.Unlock()
	if g != nil && g.digest == c.Digest {
		return g
	}
	g, err = s.readList(list, c.Digest)
	if err != nil {
		return nil
	}
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if gs.groups == nil || len(gs.groups) >= maxGroups {
		gs.groups = map[string]*mirrorGroup{}
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
	gs.groups[list] = g
	return g
}

// groupFact is what another mirror of p's group knows of the same path,
// when p's own URL has no fact, after the learns in progress that wait
// (useKnown's) waits for.
func (s *Door) groupFact(ctx context.Context, p *Plan, wait func(ctx context.Context, key string, self *learnRun)) (cachestore.Known, bool) {
	g := s.groupNamed(p.Group)
	if g == nil || !strings.HasPrefix(p.Key, p.groupBase) {
		return cachestore.Known{}, false
	}
	rel := p.Key[len(p.groupBase):]
	for _, base := range g.bases {
		if base == "" || base == p.groupBase {
			continue
		}
		key := base + rel
		wait(ctx, key, nil)
		if k, err := s.store.Known(key); err == nil {
			return k, true
		}
	}
	return cachestore.Known{}, false
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
// follows from it can miss a fact. A list that does not parse is answered
// as it is; one a hub ordered for its nodes too (HeaderMirrors).
func (s *Door) SiteList(ctx context.Context, p Plan, c cachestore.Cached) ([]byte, error) {
	s.learning.wait(ctx, p.Key, nil)
	var g *mirrorGroup
	if p.Meta == MetaMirrors {
		if g = s.groupNamed(p.Key); g != nil && g.digest != c.Digest {
			g = nil
		}
	}
	if g == nil || c.Meta[HeaderMirrors] != "" {
		b, err := s.store.ReadBlob(c.Digest)
		if err != nil {
			return nil, err
		}
		defer b.Close()
		return io.ReadAll(io.LimitReader(b.File, max(c.Size, 0)))
	}
	order := s.siteOrder(g)
	out, err := g.l.Rewrite(g.raw, order)
	if err != nil {
		s.log.Warn("cannot reorder this list of mirrors; answered as it came", slog.String("url", p.ShownURL()), slog.Any("err", err))
		return g.raw, nil
	}
	chosen := g.l.Mirrors[order[0]].Base
	if old := g.fig.chosen.Swap(&chosen); old == nil || *old != chosen {
		s.log.Info("mirror group: the site's mirror", slog.String("list", p.ShownURL()), slog.String("mirror", chosen),
			slog.Int("mirrors", len(g.l.Mirrors)), slog.Bool("metalink", g.l.Metalink))
	}
	return out, nil
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

// MirrorHosts are the https hosts of the mirrors of every group warren
// knows: what interception may add (cmd/warren).
func (s *Door) MirrorHosts() []string {
	s.loadGroups()
	gs := &s.mirrors
	gs.mu.Lock()
	defer gs.mu.Unlock()
	var out []string
	for base := range gs.byBase {
		if rest, ok := strings.CutPrefix(base, "https://"); ok {
			host, _, _ := strings.Cut(rest, "/")
			if u, err := url.Parse("https://" + host); err == nil {
				out = append(out, u.Hostname())
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
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
	groups := make([]*mirrorGroup, 0, len(gs.groups))
	for _, g := range gs.groups {
		groups = append(groups, g)
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
