package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"strings"
	"sync"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/debian"
	"github.com/warren-cache/warren/fill"
	"github.com/warren-cache/warren/rpm"
)

// A hub hands out only consistent metadata: a new InRelease/Release or
// repomd.xml is released to nodes only once the hub holds the new
// versions of the index files the site uses (those of the previous
// generation it holds). Until then nodes get the previous one. The index
// files of the last keep_index_generations generations are pinned, so a
// node midway through `apt-get update` on the previous one still gets
// what it lists (by hash, or by name with the digest it expects).

// listed is one index file a Release or repomd.xml lists.
type listed struct {
	rel  string // path relative to the repository, as listed
	url  string // where to fetch it: its by-hash URL where the Release offers one
	name string // its name (compression), for the parser
	k    cachestore.Known
}

// listing reads the index files a top metadata file lists, by the name
// that stays the same across generations (a Release's path, repomd's type).
func listing(p plan, scope repoScope, r io.Reader) (map[string]listed, error) {
	out := map[string]listed{}
	switch p.meta {
	case metaRelease:
		rel, err := debian.ParseRelease(bufio.NewReader(r))
		if err != nil {
			return nil, err
		}
		for _, e := range rel.Files {
			key, ok := scope.join(e.Path)
			if !ok {
				continue
			}
			if rel.AcquireByHash {
				dir, _ := strings.CutSuffix(e.Path, lastSegment(e.Path))
				if bh, ok := scope.join(dir + "by-hash/SHA256/" + e.SHA256); ok {
					key = bh
				}
			}
			out[e.Path] = listed{rel: e.Path, url: key, name: lastSegment(e.Path),
				k: cachestore.Known{Digest: cachestore.Digest{Algo: "sha256", Hex: e.SHA256}, Size: e.Size, Name: e.Path}}
		}
	case metaRepomd:
		data, err := rpm.ParseRepomd(bufio.NewReader(r))
		if err != nil {
			return nil, err
		}
		for _, d := range data {
			key, ok := scope.join(d.Href)
			if !ok {
				continue
			}
			out[d.Type] = listed{rel: d.Href, url: key, name: path.Base(d.Href),
				k: cachestore.Known{Digest: cachestore.Digest{Algo: d.Checksum.Algo, Hex: d.Checksum.Hex}, Size: d.Size, Name: d.Type}}
		}
	}
	return out, nil
}

// errInconsistent is a new Release or repomd.xml held back.
var errInconsistent = errors.New("the hub cannot serve all the index files it lists yet")

// holdGeneration runs, on a hub, before a new top metadata file (in f) is
// released: it fetches the new versions of the index files the site uses
// and pins the generations. It returns the plans of the files it fetched,
// to be learnt once the new file's own facts are; an error (an
// upstreamFetchError: nodes get the previous generation meanwhile) holds
// the new file back.
func (s *Server) holdGeneration(ctx context.Context, f *cachestore.Fill, p plan, who asker) ([]plan, error) {
	prev, err := s.store.Cached(p.key)
	if err != nil || prev.Digest == f.Digest() {
		return nil, nil // the first generation, or the same one again
	}
	scope, err := metaScope(p)
	if err != nil {
		return nil, nil
	}
	next, err := listing(p, scope, f.Bytes())
	if err != nil {
		return nil, nil // the learn will say it is malformed
	}
	old, err := s.readListing(p, scope, prev.Digest)
	if err != nil {
		s.log.Warn("cannot read the previous generation of this metadata; the new one is handed out as it is",
			slog.String("url", p.url), slog.Any("err", err))
		return nil, nil
	}
	var need []plan
	for id, o := range old {
		n, ok := next[id]
		if !ok || n.k.Digest == o.k.Digest || !s.holds(o.k.Digest) || s.holds(n.k.Digest) {
			continue // gone, unchanged, unused by the site, or held already
		}
		pp := plan{url: n.url, key: n.url, kind: "index", eco: p.eco, digest: n.k.Digest, size: n.k.Size, metaName: n.name}
		if p.meta == metaRelease {
			pp.meta = debianIndexMeta(n.rel)
		} else if n.k.Name == "primary" {
			pp.meta = metaPrimary
		}
		need = append(need, pp)
	}
	if err := s.prefetch(ctx, need, who); err != nil {
		return nil, &upstreamFetchError{url: p.url, err: fmt.Errorf("%w: %w", errInconsistent, err)}
	}
	if len(need) > 0 {
		s.log.Info("new repository metadata: fetched the index files the site uses before handing it out",
			slog.String("url", p.url), slog.Int("files", len(need)))
	}
	gens := []cachestore.PinGen{{Gen: f.Digest(), Digests: s.heldOf(next)}, {Gen: prev.Digest, Digests: s.heldOf(old)}}
	if _, err := s.store.PinGenerations(p.key, gens, s.cfg.Hub.KeepGenerations); err != nil {
		s.log.Warn("could not pin the index files of the last generations; they may be evicted early",
			slog.String("url", p.url), slog.Any("err", err))
	}
	return need, nil
}

// holds says whether the hub can serve d to its nodes: held, and not a
// private scope's.
func (s *Server) holds(d cachestore.Digest) bool {
	bi, err := s.store.Stat(d)
	return err == nil && !bi.Private()
}

func (s *Server) heldOf(files map[string]listed) []cachestore.Digest {
	var out []cachestore.Digest
	for _, l := range files {
		if s.holds(l.k.Digest) {
			out = append(out, l.k.Digest)
		}
	}
	return out
}

func (s *Server) readListing(p plan, scope repoScope, d cachestore.Digest) (map[string]listed, error) {
	b, err := s.store.ReadBlob(d)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	return listing(p, scope, b.File)
}

// prefetchParallel bounds the index files fetched at once for one release.
const prefetchParallel = 4

// prefetch fills each plan (sharing a fill already running) and returns
// the first failure.
func (s *Server) prefetch(ctx context.Context, plans []plan, who asker) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		slots = make(chan struct{}, prefetchParallel)
	)
	for _, pp := range plans {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			err := s.fillNow(ctx, pp, who)
			if err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("%s: %w", pp.url, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

// fillNow fills p's blob from upstream (or waits for the fill already
// running) without learning from it.
func (s *Server) fillNow(ctx context.Context, p plan, who asker) error {
	if s.holds(p.digest) {
		return nil
	}
	f, leader := s.store.BeginFill(p.fillKey())
	if !leader {
		_, err := f.Result(ctx)
		return err
	}
	res, err := s.engine.Run(ctx, f, fill.Want{Digest: p.digest, Size: p.size}, s.upstreamSources(p, who, nil, nil))
	if err == nil {
		s.recordFill(p, res.Digest, res.Size)
	}
	return err
}
