package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/debian"
	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/fill"
	"github.com/warren-cache/warren/hub"
	"github.com/warren-cache/warren/rpm"
)

// Replication, the pulling side: a hub reads another's change feed from
// its cursor and stores what it names, each blob verified against its
// digest by the fill engine, so a site holds it before anyone asks and
// installs from it with the WAN down. What is held is never fetched
// again; a page's cursor is saved once the page is applied, so a run cut
// short goes on from there. A Release or repomd.xml is applied after the
// files it lists, and only when this hub holds the ones the feed offered:
// a node never gets a Release whose listed files its hub lacks.

// ReplicateOptions are one run's settings.
type ReplicateOptions struct {
	Client hub.FeedClient
	Cursor uint64 // where the last run stopped
	// Deletes applies the source's deletions (replicate_deletes).
	Deletes bool
	// Saved is told each cursor applied, and the source's chain.
	Saved func(cursor uint64, chain []string)
	// Progress is told of each entry done, of about total.
	Progress func(done, total int, bytes int64)
}

// Replicate runs one pull from the source and reports it.
func (s *Server) Replicate(ctx context.Context, o ReplicateOptions) (run hub.ReplicateRun) {
	run = hub.ReplicateRun{From: o.Client.From.Name, Start: s.now(), CursorIn: o.Cursor, CursorOut: o.Cursor}
	defer func() {
		run.End = s.now()
		s.log.Info("replication run", slog.String("from", run.From), slog.Uint64("cursor_before", run.CursorIn),
			slog.Uint64("cursor_after", run.CursorOut), slog.Int("entries", run.Entries), slog.Int("blobs", run.Blobs),
			slog.Int64("bytes", run.Bytes), slog.Int("deleted", run.Deleted), slog.Int("failures", len(run.Failures)), slog.String("error", run.Error))
	}()
	self := ""
	if s.cfg.Hub != nil {
		self = s.cfg.Hub.ID
	}
	offered := map[string]cachestore.Digest{} // index files' key -> digest, over the run
	cursor := o.Cursor
	for {
		if ctx.Err() != nil {
			run.Error = "stopped: " + ctx.Err().Error()
			return run
		}
		page, err := o.Client.Page(ctx, cursor)
		if err != nil {
			run.Error = err.Error()
			return run
		}
		if self != "" && slices.Contains(page.Chain, self) {
			run.Error = (&hub.LoopError{Source: o.Client.From.Name, Chain: strings.Join(page.Chain, " <- ")}).Error()
			return run
		}
		run.Last, run.LastAt = page.Last, page.LastAt
		total := int(max(page.Last, cursor) - o.Cursor)
		var top []cachestore.Change
		for _, e := range page.Entries {
			run.Entries++
			if e.Delete {
				s.replicateDelete(e, o.Deletes, &run)
			} else {
				if strings.Contains(e.Key, "/dists/") || strings.Contains(e.Key, "/repodata/") {
					offered[e.Key] = e.Digest // what a Release or repomd.xml may list
				}
				if s.topMetadata(ctx, e.Key) {
					top = append(top, e) // after what it lists
				} else if err := s.replicateEntry(ctx, o.Client, e, &run); err != nil {
					run.Failures = append(run.Failures, fmt.Sprintf("%s: %v", e.Key, err))
				}
			}
			if o.Progress != nil {
				o.Progress(run.Entries, max(total, run.Entries), run.Bytes)
			}
		}
		for _, e := range top {
			if !s.store.Holds(e.Digest) && !s.store.Tombstoned(e.Digest) {
				// Its bytes first, to read what it lists; its URL entry
				// (what nodes are served) only once that is here.
				n, err := s.replicateBlob(ctx, o.Client, e)
				run.Bytes += n
				if err != nil {
					run.Failures = append(run.Failures, fmt.Sprintf("%s: %v", e.Key, err))
					continue
				}
				run.Blobs++
				s.log.Debug("replicated", slog.String("key", e.Key), slog.String("digest", e.Digest.String()), slog.Int64("bytes", n))
			}
			if err := s.consistent(e, offered); err != nil {
				run.Failures = append(run.Failures, fmt.Sprintf("%s: kept the previous one: %v", e.Key, err))
				continue
			}
			if err := s.replicateEntry(ctx, o.Client, e, &run); err != nil {
				run.Failures = append(run.Failures, fmt.Sprintf("%s: %v", e.Key, err))
			}
		}
		if ctx.Err() != nil {
			run.Error = "stopped: " + ctx.Err().Error()
			return run // this page again next time: what it stored is held
		}
		cursor = page.Next
		run.CursorOut = cursor
		if o.Saved != nil {
			o.Saved(cursor, page.Chain)
		}
		if !page.More {
			return run
		}
	}
}

// topMetadata says whether key is a file that names others' hashes and is
// named by none: a Release, InRelease or repomd.xml.
func (s *Server) topMetadata(ctx context.Context, key string) bool {
	if strings.HasSuffix(key, "/Release.gpg") {
		return true
	}
	if strings.HasPrefix(key, hub.FeedQueryPrefix) {
		return false
	}
	p := s.door.Plan(ctx, mustParse(key), door.Credential{})
	return p.Meta == door.MetaRelease || p.Meta == door.MetaRepomd
}

// consistent says whether this hub holds, at the hashes e lists, every
// file of e that the source offered in this run.
func (s *Server) consistent(e cachestore.Change, offered map[string]cachestore.Digest) error {
	if strings.HasSuffix(e.Key, "/Release.gpg") || s.store.Tombstoned(e.Digest) {
		return nil
	}
	b, err := s.store.ReadBlob(e.Digest)
	if err != nil {
		return fmt.Errorf("read it: %w", err)
	}
	defer b.Close()
	dir := e.Key[:strings.LastIndex(e.Key, "/")+1]
	type listed struct {
		key string
		d   cachestore.Digest
	}
	var files []listed
	if strings.HasSuffix(e.Key, "/repomd.xml") {
		data, err := rpm.ParseRepomd(b.File)
		if err != nil {
			return fmt.Errorf("malformed repomd.xml: %w", err)
		}
		base := strings.TrimSuffix(dir, "repodata/")
		for _, d := range data {
			files = append(files, listed{base + d.Href, cachestore.Digest{Algo: d.Checksum.Algo, Hex: d.Checksum.Hex}})
		}
	} else {
		rel, err := debian.ParseRelease(b.File)
		if err != nil {
			return fmt.Errorf("malformed Release: %w", err)
		}
		for _, f := range rel.Files {
			files = append(files, listed{dir + f.Path, cachestore.Digest{Algo: "sha256", Hex: f.SHA256}})
		}
	}
	for _, f := range files {
		if _, ok := offered[f.key]; ok && !s.store.Holds(f.d) {
			return fmt.Errorf("it lists %s at %s, which this hub does not hold (the source offered %s)", path.Base(f.key), f.d, offered[f.key])
		}
	}
	return nil
}

// replicateEntry stores what e names: its blob (unless held), and the
// URL-cache entry of a file kept by URL. A new one is recorded in this
// hub's own change log, for the hubs that pull from it.
func (s *Server) replicateEntry(ctx context.Context, c hub.FeedClient, e cachestore.Change, run *hub.ReplicateRun) error {
	if s.store.Tombstoned(e.Digest) {
		run.Skipped++ // deleted here: not brought back
		return nil
	}
	changed := false
	if !s.store.Holds(e.Digest) {
		n, err := s.replicateBlob(ctx, c, e)
		run.Bytes += n
		if err != nil {
			return err
		}
		run.Blobs++
		changed = true
		s.log.Debug("replicated", slog.String("key", e.Key), slog.String("digest", e.Digest.String()), slog.Int64("bytes", n))
	}
	var cached *cachestore.Cached
	if e.Cached != nil {
		cc := *e.Cached
		cc.Digest, cc.Size = e.Digest, e.Size
		cached = &cc
		old, err := s.store.Cached(e.Key)
		if err == nil && old.Digest != e.Digest && old.Fetched.After(cc.Fetched) {
			// This hub has a newer copy of the URL (fetched from the origin
			// since): an older one does not replace it.
			run.Skipped++
			return nil
		}
		if err != nil || old.Digest != e.Digest {
			if err := s.store.PutCached(e.Key, cc); err != nil {
				return err
			}
			changed = true
		}
	}
	if !changed {
		run.Skipped++
		return nil
	}
	s.recordStored(e.Key, e.Kind, e.Digest, e.Size, cached)
	return nil
}

// replicateBlob fills e's blob from the source hub, verified; it returns
// the bytes taken.
func (s *Server) replicateBlob(ctx context.Context, c hub.FeedClient, e cachestore.Change) (int64, error) {
	var got atomic.Int64
	p := s.door.Plan(ctx, mustParse(e.Key), door.Credential{})
	p.Digest, p.Size = e.Digest, e.Size
	src := &replicaSource{c: c, d: e.Digest, got: &got}
	_, err := s.door.Fetch(ctx, p, door.Asker{UA: "warren-replicate"}, door.FetchOptions{Sources: []fill.Source{src}, Unrecorded: true})
	return got.Load(), err
}

// replicaSource is a source hub's blob endpoint, as a fill source.
type replicaSource struct {
	c     hub.FeedClient
	d     cachestore.Digest
	tries int
	got   *atomic.Int64
}

func (r *replicaSource) Open(ctx context.Context, off int64) (*fill.Stream, error) {
	if r.tries >= 3 {
		return nil, fmt.Errorf("%w: 3 transfers from hub %s broke off", fill.ErrSkip, r.c.From.Name)
	}
	r.tries++
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.c.BlobURL(r.d), nil)
	if err != nil {
		return nil, fill.Stop(err)
	}
	resp, size, err := fill.GetAt(r.c, req, off)
	if err != nil {
		return nil, fmt.Errorf("hub %s: %w", r.c.From.Name, err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		resp.Body.Close()
		return nil, fill.Stop(fmt.Errorf("hub %s answered %s for blob %s", r.c.From.Name, resp.Status, r.d))
	}
	return &fill.Stream{Body: resp.Body, From: "hub " + r.c.From.Name, Size: size, Received: func(n int64) { r.got.Add(n) }}, nil
}

// replicateDelete applies a source's deletion when asked to, and keeps
// its tombstone either way: a pull from another hub does not bring the
// blob back.
func (s *Server) replicateDelete(e cachestore.Change, apply bool, run *hub.ReplicateRun) {
	if !apply {
		run.Skipped++
		return
	}
	if s.store.Holds(e.Digest) {
		if err := s.store.Remove(e.Digest); err != nil && !errors.Is(err, cachestore.ErrNotFound) {
			run.Failures = append(run.Failures, fmt.Sprintf("delete %s (%s): %v", e.Key, e.Digest, err))
			return
		}
		run.Deleted++
	}
	if _, err := s.store.RecordChange(cachestore.Change{Delete: true, Key: e.Key, Digest: e.Digest}); err != nil {
		run.Failures = append(run.Failures, fmt.Sprintf("record the deletion of %s: %v", e.Key, err))
	}
}
