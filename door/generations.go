package door

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
	"github.com/warren-cache/warren/rpm"
)

// A hub hands out only consistent metadata: a new InRelease/Release or
// repomd.xml is released to nodes only once the hub holds the new
// versions of the index files the site uses (those of the previous
// generation it holds). Until then nodes get the previous one. The index
// files of the last keep_index_generations generations are pinned, so a
// node midway through `apt-get update` on the previous one still gets
// what it lists (by hash, or by name with the digest it expects).

// DefaultKeepGenerations is keep_index_generations unless set.
const DefaultKeepGenerations = 2

// listed is one index file a Release or repomd.xml lists.
type listed struct {
	rel  string // path relative to the repository, as listed
	url  string // where to fetch it: its by-hash URL where the Release offers one
	name string // its name (compression), for the parser
	k    cachestore.Known
}

// listing reads the index files a top metadata file lists, by the name
// that stays the same across generations (a Release's path, repomd's type).
func listing(p Plan, scope repoScope, r io.Reader) (map[string]listed, error) {
	out := map[string]listed{}
	switch p.Meta {
	case MetaRelease:
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
	case MetaRepomd:
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
// UpstreamFetchError: nodes get the previous generation meanwhile) holds
// the new file back.
func (s *Door) holdGeneration(ctx context.Context, f *cachestore.Fill, p Plan, who Asker) ([]Plan, error) {
	prev, err := s.store.Cached(p.Key)
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
			slog.String("url", p.ShownURL()), slog.Any("err", err))
		return nil, nil
	}
	var need []Plan
	for id, o := range old {
		n, ok := next[id]
		if !ok || n.k.Digest == o.k.Digest || !s.Holds(o.k.Digest) || s.Holds(n.k.Digest) {
			continue // gone, unchanged, unused by the site, or held already
		}
		pp := Plan{URL: n.url, Key: n.url, Kind: "index", Eco: p.Eco, Digest: n.k.Digest, Size: n.k.Size, MetaName: n.name}
		if p.Meta == MetaRelease {
			pp.Meta = debianIndexMeta(n.rel)
		} else if n.k.Name == "primary" {
			pp.Meta = MetaPrimary
		}
		need = append(need, pp)
	}
	if err := s.prefetch(ctx, need, who); err != nil {
		return nil, &UpstreamFetchError{URL: p.URL, Err: fmt.Errorf("%w: %w", errInconsistent, err)}
	}
	if len(need) > 0 {
		s.log.Info("new repository metadata: fetched the index files the site uses before handing it out",
			slog.String("url", p.ShownURL()), slog.Int("files", len(need)))
	}
	gens := []cachestore.PinGen{{Gen: f.Digest(), Digests: s.heldOf(next)}, {Gen: prev.Digest, Digests: s.heldOf(old)}}
	if _, err := s.store.PinGenerations(p.Key, gens, s.cfg.KeepGenerations); err != nil {
		s.log.Warn("could not pin the index files of the last generations; they may be evicted early",
			slog.String("url", p.ShownURL()), slog.Any("err", err))
	}
	return need, nil
}

func (s *Door) heldOf(files map[string]listed) []cachestore.Digest {
	var out []cachestore.Digest
	for _, l := range files {
		if s.Holds(l.k.Digest) {
			out = append(out, l.k.Digest)
		}
	}
	return out
}

func (s *Door) readListing(p Plan, scope repoScope, d cachestore.Digest) (map[string]listed, error) {
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
func (s *Door) prefetch(ctx context.Context, plans []Plan, who Asker) error {
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
					first = fmt.Errorf("%s: %w", pp.URL, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

// fillNow brings p's blob in through the door without learning from it
// yet (its Release's own facts come first).
func (s *Door) fillNow(ctx context.Context, p Plan, who Asker) error {
	p.Meta = ""
	_, err := s.Fetch(ctx, p, who, FetchOptions{})
	return err
}
