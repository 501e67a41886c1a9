package replicate

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/debian"
	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/fill"
	"github.com/warren-cache/warren/hub"
	"github.com/warren-cache/warren/rpm"
)

// Door is what a pull needs of the door: plans, and fetches from a given
// source that are verified, learnt and stored as a request's are.
type Door interface {
	Plan(ctx context.Context, u *url.URL, cred door.Credential) door.Plan
	Fetch(ctx context.Context, p door.Plan, who door.Asker, opts door.FetchOptions) (cachestore.Digest, error)
	Holds(d cachestore.Digest) bool
	// PinGeneration pins the index files of a top metadata file p (a
	// Release, a repomd.xml) now at next, and of prev, the one before it.
	PinGeneration(p door.Plan, prev, next cachestore.Digest)
	// CheckSignature checks a held Release or repomd.xml as a fetched
	// one is (verify_signatures): an error refuses it.
	CheckSignature(ctx context.Context, p door.Plan, d cachestore.Digest) error
	// Keyed says whether key is a file of a repository with keys, and
	// Learnt what its verified metadata says of it (after any learn in
	// progress).
	Keyed(key string) bool
	Learnt(ctx context.Context, key string) (cachestore.Known, error)
}

// PullStore is what a pull needs of the cache beyond the door: the URL
// cache's entries of files kept by URL, tombstones and the change log.
type PullStore interface {
	Cached(url string) (cachestore.Cached, error)
	PutCached(url string, c cachestore.Cached) error
	ReadBlob(d cachestore.Digest) (*cachestore.Blob, error)
	Tombstoned(d cachestore.Digest) bool
	Remove(d cachestore.Digest) error
	RecordChange(c cachestore.Change) (uint64, error)
}

var _ PullStore = (*cachestore.Store)(nil)

// Puller pulls from source hubs into this one.
type Puller struct {
	door  Door
	store PullStore
	self  string // this hub's id: a source whose chain holds it is a loop
	log   *slog.Logger
	now   func() time.Time
}

// NewPuller builds the pulling side of hub self.
func NewPuller(d Door, store PullStore, self string, log *slog.Logger, now func() time.Time) *Puller {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	return &Puller{door: d, store: store, self: self, log: log, now: now}
}

// Options are one run's settings.
type Options struct {
	Client hub.FeedClient
	// From is where the last run stopped: the cursor, the source's log
	// it is a place in, and the entries to try again.
	From hub.SourceState
	// Deletes applies the source's deletions (replicate_deletes).
	Deletes bool
	// Saved is told each place applied (a page done): cursor, chain, log
	// and what to try again.
	Saved func(hub.SourceState)
	// Progress is told of each entry done, of about total.
	Progress func(done, total int, bytes int64)
	// Package, when set, readies a Chocolatey package the run holds (a
	// hub's internalization: its rewritten form and its installers).
	Package func(ctx context.Context, d cachestore.Digest) error
}

// maxPages bounds the pages of one run: a source that advances its
// cursor by one entry a page for ever does not hold the run (and its
// lock) for ever.
const maxPages = 100000

// run is one pull in progress.
type run struct {
	p      *Puller
	o      Options
	rep    hub.ReplicateRun
	failed map[cachestore.Digest]error // blobs that failed verification from this source, this run
	retry  []cachestore.Change
	// tops are the run's Releases and repomd.xml files, applied at its
	// end: what they list may come on any later page.
	tops []cachestore.Change
	// held are the index files and packages of repositories with keys,
	// applied at the run's end once a verified top (or an index file one
	// lists) lists them at their digest: a source hub's word is not
	// enough (applyHeld).
	held []cachestore.Change
	// verified are the repository roots of the tops whose signature
	// verified this run, with the greatest of their places in the log.
	verified map[string]uint64
	// offered are the index files the source offered over the run, by
	// key: a Release or repomd.xml is applied only when this hub holds
	// those of them it lists.
	offered map[string]cachestore.Digest
	total   int    // entries to go over, about: for Progress
	base    uint64 // the cursor the run started from (0 once the log restarted)
	// packages are the Chocolatey packages a page brought, readied
	// (Options.Package) once the page's other entries are in: their
	// installers may be among them.
	packages []cachestore.Change
}

// done tells Progress of an entry done.
func (r *run) done() {
	if r.o.Progress != nil {
		r.o.Progress(r.rep.Entries, max(r.total, r.rep.Entries), r.rep.Bytes)
	}
}

// Run runs one pull from the source and reports it.
func (p *Puller) Run(ctx context.Context, o Options) hub.ReplicateRun {
	r := &run{p: p, o: o, failed: map[cachestore.Digest]error{}, offered: map[string]cachestore.Digest{}, verified: map[string]uint64{}, base: o.From.Cursor,
		rep: hub.ReplicateRun{From: o.Client.From.Name, Start: p.now(), CursorIn: o.From.Cursor, CursorOut: o.From.Cursor}}
	r.walk(ctx)
	r.rep.End = p.now()
	p.log.Info("replication run", slog.String("from", r.rep.From), slog.Uint64("cursor_before", r.rep.CursorIn),
		slog.Uint64("cursor_after", r.rep.CursorOut), slog.Int("entries", r.rep.Entries), slog.Int("blobs", r.rep.Blobs),
		slog.Int64("bytes", r.rep.Bytes), slog.Int("deleted", r.rep.Deleted), slog.Int("refused", r.rep.Refused),
		slog.Int("unverified", r.rep.Unverified), slog.Int("failures", len(r.rep.Failures)), slog.Int("to_retry", len(r.retry)), slog.String("error", r.rep.Error))
	return r.rep
}

func (r *run) walk(ctx context.Context) {
	state, cursor, ok := r.pages(ctx)
	if !ok {
		return
	}
	// The tops last, once every page is in: a Release's Packages may
	// come pages after it. Their bytes first (checked, and learnt from
	// when they verify), then what they list of the repositories with
	// keys, then the tops themselves.
	tops := r.fetchTops(ctx)
	r.applyHeld(ctx)
	r.applyTops(ctx, tops)
	r.save(state, cursor)
}

// pages stores the source's pages from the cursor on (the tops kept for
// the end) and returns the place reached; false when the run may not go
// on at all (a loop).
func (r *run) pages(ctx context.Context) (hub.SourceState, uint64, bool) {
	p, o := r.p, r.o
	state := o.From
	// What failed last time first: its place in the log is behind the
	// cursor now.
	if len(state.Retry) > 0 {
		r.apply(ctx, state.Retry)
	}
	cursor := state.Cursor
	for pages := 0; ; pages++ {
		if ctx.Err() != nil {
			r.rep.Error = "stopped: " + ctx.Err().Error()
			return state, cursor, true
		}
		if pages == maxPages {
			r.rep.Error = fmt.Sprintf("the source sent %d pages in one run without reaching its end; the run stops (next run goes on from cursor %d)", maxPages, cursor)
			return state, cursor, true
		}
		page, err := o.Client.Page(ctx, state.Log, cursor)
		if err != nil {
			r.rep.Error = err.Error()
			return state, cursor, true
		}
		if p.self != "" && slices.Contains(page.Chain, p.self) {
			r.rep.Error = (&hub.LoopError{Source: o.Client.From.Name, Chain: strings.Join(page.Chain, " <- ")}).Error()
			return state, cursor, false
		}
		if page.Log != state.Log {
			// A state kept before logs had names (state.Log "") takes the
			// page's: its cursor is most likely in that log.
			if state.Log != "" {
				// Another log at the same URL: the source was rebuilt, and
				// its numbers started again. Read it from its start; what is
				// held already is not fetched again.
				p.log.Warn("the source hub's change log is a new one (rebuilt?); reading it from its start",
					slog.String("from", o.Client.From.Name), slog.String("log", page.Log), slog.String("was", state.Log), slog.Uint64("cursor_was", cursor))
				state.Log, cursor, r.base = page.Log, 0, 0
				r.rep.Restarted = true
				r.save(state, 0)
				continue
			}
			state.Log = page.Log
		}
		state.Chain = page.Chain
		r.rep.Last, r.rep.LastAt = page.Last, page.LastAt
		r.total = int(max(page.Last, cursor) - min(r.base, max(page.Last, cursor)))
		r.apply(ctx, page.Entries)
		if ctx.Err() != nil {
			r.rep.Error = "stopped: " + ctx.Err().Error()
			return state, cursor, true // this page again next time: what it stored is held
		}
		cursor = page.Next
		r.save(state, cursor)
		if !page.More {
			return state, cursor, true
		}
	}
}

// save tells the caller the place reached and what is left to try again
// (the tops not applied yet among them: the cursor is past them); past
// MaxRetry of those, the cursor stays before the first one kept out, so
// that nothing is lost.
func (r *run) save(state hub.SourceState, cursor uint64) {
	if len(r.retry) > hub.MaxRetry {
		slices.SortFunc(r.retry, func(a, b cachestore.Change) int { return cmp.Compare(a.Seq, b.Seq) })
		for _, e := range r.retry[hub.MaxRetry:] {
			if e.Seq > 0 {
				cursor = min(cursor, e.Seq-1)
				break
			}
		}
		r.retry = r.retry[:hub.MaxRetry]
	}
	state.Cursor, state.Retry = cursor, append(append(slices.Clone(r.retry), r.tops...), r.held...)
	r.rep.CursorOut = cursor
	r.rep.ToRetry = len(state.Retry)
	if r.o.Saved != nil {
		r.o.Saved(state)
	}
}

// apply stores a page's entries: index files and artifacts; the top
// metadata files that list them (a Release, a repomd.xml) are kept for
// the run's end (applyTops).
func (r *run) apply(ctx context.Context, entries []cachestore.Change) {
	for _, e := range entries {
		if ctx.Err() != nil {
			r.retry = append(r.retry, e)
			continue
		}
		r.rep.Entries++
		err := r.check(e)
		if err == nil && !e.Delete && (strings.Contains(e.Key, "/dists/") || strings.Contains(e.Key, "/repodata/")) {
			r.offered[e.Key] = e.Digest // what a Release or repomd.xml may list
		}
		switch {
		case err != nil:
			r.rep.Refused++
			r.p.log.Warn("replication refused an entry of the source", slog.String("from", r.o.Client.From.Name),
				slog.String("key", hub.RedactURLs(e.Key)), slog.Any("err", err))
		case e.Delete:
			r.delete(e)
		case r.p.isTop(ctx, e.Key):
			// After what it lists; a newer one of the same file replaces it.
			r.tops = slices.DeleteFunc(r.tops, func(t cachestore.Change) bool { return t.Key == e.Key })
			r.tops = append(r.tops, e)
		case r.p.door.Keyed(e.Key):
			r.held = append(r.held, e) // once a verified top lists it
		default:
			r.entry(ctx, e)
		}
		r.done()
	}
	for _, e := range r.packages {
		if r.o.Package == nil || ctx.Err() != nil {
			break
		}
		if err := r.o.Package(ctx, e.Digest); err != nil {
			r.rep.Failures = append(r.rep.Failures, fmt.Sprintf("%s: ready the package: %v", hub.RedactURLs(e.Key), err))
		}
	}
	r.packages = nil
}

// fetchTops brings in the bytes of the run's Releases and repomd.xml
// files (a fill of one learns from it once its signature verifies) and
// notes the repositories whose top verified; it returns those to apply.
// Those a stop leaves, or whose bytes failed, are tried again next run.
func (r *run) fetchTops(ctx context.Context) []cachestore.Change {
	tops := r.tops
	r.tops = nil
	// A Release's signature before the Release: checked, the Release
	// finds it held.
	slices.SortStableFunc(tops, func(a, b cachestore.Change) int {
		ag, bg := strings.HasSuffix(a.Key, "/Release.gpg"), strings.HasSuffix(b.Key, "/Release.gpg")
		switch {
		case ag && !bg:
			return -1
		case bg && !ag:
			return 1
		}
		return 0
	})
	var out []cachestore.Change
	for _, e := range tops {
		if ctx.Err() != nil {
			r.retry = append(r.retry, e)
			continue
		}
		if !r.p.store.Tombstoned(e.Digest) && !r.p.door.Holds(e.Digest) {
			if err := r.blob(ctx, e); err != nil {
				r.failure(e, err)
				continue
			}
		}
		if root := topRoot(e.Key); root != "" && !strings.HasSuffix(e.Key, "/Release.gpg") && r.p.door.Keyed(e.Key) &&
			r.p.door.CheckSignature(ctx, r.p.plan(ctx, e), e.Digest) == nil {
			r.verified[root] = max(r.verified[root], e.Seq)
		}
		out = append(out, e)
	}
	return out
}

// applyTops applies the run's Releases and repomd.xml files, each only
// once this hub holds what the source offered of what it lists; those a
// stop leaves are tried again next run.
func (r *run) applyTops(ctx context.Context, tops []cachestore.Change) {
	for _, e := range tops {
		if ctx.Err() != nil {
			r.retry = append(r.retry, e)
			continue
		}
		r.top(ctx, e)
	}
}

// applyHeld applies the held entries of repositories with keys that what
// this hub learnt from verified metadata lists at their digest: index
// files first (the packages they list are learnt from them), then the
// rest. One that nothing verified lists is not stored nor offered on:
// kept to try again (its Release may come in a later run), or dropped
// once a verified top of its repository that came after it in the
// source's log does not list it either (a forged generation's files).
func (r *run) applyHeld(ctx context.Context) {
	held := r.held
	r.held = nil
	slices.SortStableFunc(held, func(a, b cachestore.Change) int {
		return cmp.Compare(indexRank(a.Key), indexRank(b.Key))
	})
	for _, e := range held {
		if ctx.Err() != nil {
			r.retry = append(r.retry, e)
			continue
		}
		if k, err := r.p.door.Learnt(ctx, e.Key); err == nil && k.Digest == e.Digest {
			r.entry(ctx, e)
			if p := r.p.plan(ctx, e); indexRank(e.Key) == 0 && p.Meta != "" && r.p.door.Holds(e.Digest) {
				// Learnt (if it was held already, a fill did not learn
				// it): the packages it lists come next.
				_, _ = r.p.door.Fetch(ctx, p, door.Asker{UA: "warren-replicate"}, door.FetchOptions{Newest: true})
			}
			continue
		}
		r.rep.Unverified++
		if r.superseded(e) {
			r.p.log.Warn("replication dropped an entry that no verified metadata of its repository lists (a newer verified one does not either)",
				slog.String("from", r.o.Client.From.Name), slog.String("key", hub.RedactURLs(e.Key)), slog.String("digest", e.Digest.String()))
			continue
		}
		r.retry = append(r.retry, e)
	}
}

// superseded says whether a verified top of e's repository came after e
// in the source's log this run: what it lists is the repository's newest
// word.
func (r *run) superseded(e cachestore.Change) bool {
	for root, seq := range r.verified {
		if strings.HasPrefix(e.Key, root) && seq > e.Seq {
			return true
		}
	}
	return false
}

// indexRank puts index files (what a Release or repomd.xml lists) before
// what they list.
func indexRank(key string) int {
	if strings.Contains(key, "/dists/") || strings.Contains(key, "/repodata/") {
		return 0
	}
	return 1
}

// topRoot is the repository a Release or repomd.xml key belongs to: the
// archive root above dists/, the base above repodata/ ("" for another).
func topRoot(key string) string {
	if i := strings.Index(key, "/dists/"); i >= 0 {
		return key[:i+1]
	}
	if i := strings.LastIndex(key, "/repodata/"); i >= 0 {
		return key[:i+1]
	}
	return ""
}

// check refuses what the source may not give this hub: an entry outside
// the repositories it pulls, a key that is no URL of a repository (or
// names a private scope), a malformed one.
func (r *run) check(e cachestore.Change) error {
	if !r.o.Client.From.Repositories.Admits(e.Key) {
		return errors.New("outside the repositories this hub pulls (replicate_from repositories)")
	}
	if e.Digest.Validate() != nil && !e.Delete {
		return fmt.Errorf("malformed digest %q", e.Digest)
	}
	if strings.HasPrefix(e.Key, hub.FeedQueryPrefix) {
		return nil
	}
	u, err := url.Parse(e.Key)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return errors.New("not the URL of a repository's file")
	}
	return nil
}

// failure notes an entry that failed: tried again by the next run.
func (r *run) failure(e cachestore.Change, err error) {
	r.rep.Failures = append(r.rep.Failures, fmt.Sprintf("%s: %v", hub.RedactURLs(e.Key), err))
	r.retry = append(r.retry, e)
}

// entry stores what e names: its blob (unless held), and the URL-cache
// entry of a file kept by URL; a new one is recorded in this hub's own
// change log, for the hubs that pull from it.
func (r *run) entry(ctx context.Context, e cachestore.Change) {
	if r.p.store.Tombstoned(e.Digest) {
		r.rep.Skipped++ // deleted here: not brought back
		return
	}
	changed := false
	if !r.p.door.Holds(e.Digest) {
		if err := r.blob(ctx, e); err != nil {
			r.failure(e, err)
			return
		}
		changed = true
	}
	ch, err := r.keep(e)
	if err != nil {
		r.failure(e, err)
		return
	}
	if e.Kind == "nupkg" {
		r.packages = append(r.packages, e)
	}
	if !changed && !ch {
		r.rep.Skipped++
		return
	}
	r.record(e)
}

// keep records the URL-cache entry of a file kept by URL (an InRelease,
// an index by name): what nodes and clients are served at that URL. A
// newer copy of this hub's own (fetched from the origin since) is not
// replaced. The source's time is never taken past now: a time from the
// future is a clock ahead or a lie, so such an entry replaces no copy of
// this hub's and is dated now (fresh for index_ttl, then asked of the
// origin again). It says whether the entry changed.
func (r *run) keep(e cachestore.Change) (bool, error) {
	if e.Cached == nil {
		return false, nil
	}
	cc := *e.Cached
	cc.Digest, cc.Size = e.Digest, e.Size
	future := cc.Fetched.After(r.p.now())
	if future {
		cc.Fetched = r.p.now()
	}
	old, err := r.p.store.Cached(e.Key)
	if err == nil && old.Digest != e.Digest && (future || !old.Fetched.Before(cc.Fetched)) {
		r.rep.Skipped++
		return false, nil // this hub's copy is as new or newer
	}
	if err == nil && old.Digest == e.Digest {
		return false, nil
	}
	if err := r.p.store.PutCached(e.Key, cc); err != nil {
		return false, err
	}
	return true, nil
}

// record adds a replicated entry to this hub's own change log.
func (r *run) record(e cachestore.Change) {
	c := cachestore.Change{Key: e.Key, Kind: e.Kind, Digest: e.Digest, Size: e.Size}
	if e.Cached != nil {
		if cc, err := r.p.store.Cached(e.Key); err == nil && cc.Digest == e.Digest {
			c.Cached = &cc
		}
	}
	if _, err := r.p.store.RecordChange(c); err != nil {
		r.p.log.Warn("could not record a replicated change (hubs pulling from this one miss it until it is stored again)",
			slog.String("key", hub.RedactURLs(e.Key)), slog.Any("err", err))
	}
}

// blob brings e's blob in through the door from the source's blob
// endpoint: verified against its digest, learnt from if it is an index
// file, as if fetched from the origin. A blob the source sent wrong is not
// asked of it again this run.
func (r *run) blob(ctx context.Context, e cachestore.Change) error {
	if err := r.failed[e.Digest]; err != nil {
		return fmt.Errorf("not asked again: %w", err)
	}
	p := r.p.plan(ctx, e)
	var got atomic.Int64
	src := &source{c: r.o.Client, d: e.Digest, got: &got}
	_, err := r.p.door.Fetch(ctx, p, door.Asker{UA: "warren-replicate"}, door.FetchOptions{Sources: []fill.Source{src}, Unrecorded: true})
	r.rep.Bytes += got.Load()
	if err != nil {
		if src.blamed.Load() || errors.Is(err, cachestore.ErrDigestMismatch) || errors.Is(err, cachestore.ErrSizeMismatch) {
			r.failed[e.Digest] = err
		}
		return err
	}
	r.rep.Blobs++
	r.p.log.Debug("replicated", slog.String("key", hub.RedactURLs(e.Key)), slog.String("digest", e.Digest.String()), slog.Int64("bytes", got.Load()))
	return nil
}

// plan is how the door plans e: as a request for its key would be, at the
// digest the source gives (verified on arrival).
func (p *Puller) plan(ctx context.Context, e cachestore.Change) door.Plan {
	u, err := url.Parse(e.Key)
	if err != nil || u.Host == "" {
		// A feed answer's key: kept by its digest, no parser.
		return door.Plan{URL: e.Key, Key: e.Key, Kind: e.Kind, Eco: "other", Digest: e.Digest, Size: e.Size}
	}
	pl := p.door.Plan(ctx, u, door.Credential{})
	pl.Digest, pl.Size = e.Digest, e.Size
	if e.Kind == "nupkg" {
		// The source's feed verified it: its install script teaches
		// what its installers must hash to (their origin confirms it).
		pl.Kind, pl.Meta, pl.MetaName = "nupkg", door.MetaNupkg, path.Base(u.Path)
	}
	return pl
}

// isTop says whether key is a file that names others' hashes and is
// named by none: a Release, InRelease or repomd.xml (Release.gpg goes
// with them).
func (p *Puller) isTop(ctx context.Context, key string) bool {
	if strings.HasSuffix(key, "/Release.gpg") {
		return true
	}
	if strings.HasPrefix(key, hub.FeedQueryPrefix) {
		return false
	}
	u, err := url.Parse(key)
	if err != nil {
		return false
	}
	pl := p.door.Plan(ctx, u, door.Credential{})
	return pl.Meta == door.MetaRelease || pl.Meta == door.MetaRepomd
}

// top applies a Release or repomd.xml: its bytes first, to read what it
// lists; its URL entry (what nodes are served) only once this hub holds
// what the source offered of that; then the index files it lists are
// learnt (those that came before it were planned without its facts), and
// the generation pinned as a fetched one is.
func (r *run) top(ctx context.Context, e cachestore.Change) {
	if r.p.store.Tombstoned(e.Digest) {
		r.rep.Skipped++
		return
	}
	if !r.p.door.Holds(e.Digest) {
		if err := r.blob(ctx, e); err != nil {
			r.failure(e, err)
			return
		}
	}
	listed, err := r.p.consistent(e, r.offered)
	if err != nil {
		r.failure(e, fmt.Errorf("kept the previous one: %w", err))
		return
	}
	// Signed by the repository's keys, as one fetched from the origin
	// must be: a source hub's word is not enough.
	if !strings.HasSuffix(e.Key, "/Release.gpg") {
		if err := r.p.door.CheckSignature(ctx, r.p.plan(ctx, e), e.Digest); err != nil {
			r.failure(e, fmt.Errorf("kept the previous one: %w", err))
			return
		}
	}
	var prev cachestore.Digest
	if old, err := r.p.store.Cached(e.Key); err == nil {
		prev = old.Digest
	}
	changed, err := r.keep(e)
	if err != nil {
		r.failure(e, err)
		return
	}
	if changed || prev.IsZero() {
		r.record(e)
	} else {
		r.rep.Skipped++
	}
	if strings.HasSuffix(e.Key, "/Release.gpg") {
		return
	}
	pl := r.p.plan(ctx, e)
	if changed && !prev.IsZero() {
		r.p.door.PinGeneration(pl, prev, e.Digest)
	}
	// Learnt as a request's would be: the Release first (its facts name
	// the index files), then each index file it lists that is held. It is
	// the newest: what it teaches replaces what an older one taught.
	if _, err := r.p.door.Fetch(ctx, pl, door.Asker{UA: "warren-replicate"}, door.FetchOptions{Stale: true, Newest: true}); err != nil {
		r.failure(e, fmt.Errorf("learn it: %w", err))
		return
	}
	// A listed file not learnt is reported; the top is tried again (it
	// learns them all again), not the file, which has no place in the
	// source's log.
	relearn := false
	for _, key := range listed {
		u, err := url.Parse(key)
		if err != nil {
			continue
		}
		ip := r.p.door.Plan(ctx, u, door.Credential{})
		if ip.Digest.IsZero() || ip.Meta == "" || !r.p.door.Holds(ip.Digest) {
			continue
		}
		if _, err := r.p.door.Fetch(ctx, ip, door.Asker{UA: "warren-replicate"}, door.FetchOptions{Stale: true, Newest: true}); err != nil {
			r.rep.Failures = append(r.rep.Failures, fmt.Sprintf("%s: learn it: %v", hub.RedactURLs(key), err))
			relearn = true
		}
	}
	if relearn {
		r.retry = append(r.retry, e)
	}
}

// consistent says whether this hub holds, at the hashes e lists, every
// file of e that the source offered in this run (by name, or by hash where
// the Release says Acquire-By-Hash), and returns the keys of the files it
// lists.
func (p *Puller) consistent(e cachestore.Change, offered map[string]cachestore.Digest) ([]string, error) {
	if strings.HasSuffix(e.Key, "/Release.gpg") || p.store.Tombstoned(e.Digest) {
		return nil, nil
	}
	b, err := p.store.ReadBlob(e.Digest)
	if err != nil {
		return nil, fmt.Errorf("read it: %w", err)
	}
	defer b.Close()
	dir := e.Key[:strings.LastIndex(e.Key, "/")+1]
	type file struct {
		keys []string // its names: by name, and by hash
		d    cachestore.Digest
	}
	var files []file
	if strings.HasSuffix(e.Key, "/repomd.xml") {
		data, err := rpm.ParseRepomd(b.File)
		if err != nil {
			return nil, fmt.Errorf("malformed repomd.xml: %w", err)
		}
		base := strings.TrimSuffix(dir, "repodata/")
		for _, d := range data {
			files = append(files, file{[]string{base + d.Href}, cachestore.Digest{Algo: d.Checksum.Algo, Hex: d.Checksum.Hex}})
		}
	} else {
		rel, err := debian.ParseRelease(b.File)
		if err != nil {
			return nil, fmt.Errorf("malformed Release: %w", err)
		}
		for _, f := range rel.Files {
			keys := []string{dir + f.Path}
			if rel.AcquireByHash {
				keys = append(keys, dir+path.Dir(f.Path)+"/by-hash/SHA256/"+f.SHA256)
			}
			files = append(files, file{keys, cachestore.Digest{Algo: "sha256", Hex: f.SHA256}})
		}
	}
	var listed []string
	for _, f := range files {
		for _, k := range f.keys {
			listed = append(listed, k)
			if got, ok := offered[k]; ok && !p.door.Holds(f.d) {
				return nil, fmt.Errorf("it lists %s at %s, which this hub does not hold (the source offered %s)", path.Base(k), f.d, got)
			}
		}
	}
	return listed, nil
}

// delete applies a source's deletion when asked to, and keeps its
// tombstone either way: a pull from another hub does not bring the blob
// back.
func (r *run) delete(e cachestore.Change) {
	if !r.o.Deletes {
		r.rep.Skipped++
		return
	}
	if r.p.door.Holds(e.Digest) {
		if err := r.p.store.Remove(e.Digest); err != nil && !errors.Is(err, cachestore.ErrNotFound) {
			r.failure(e, fmt.Errorf("delete %s: %w", e.Digest, err))
			return
		}
		r.rep.Deleted++
	}
	if _, err := r.p.store.RecordChange(cachestore.Change{Delete: true, Key: e.Key, Digest: e.Digest}); err != nil {
		r.failure(e, fmt.Errorf("record the deletion: %w", err))
	}
}

// source is a source hub's blob endpoint as a fill source. Once its bytes
// failed verification it is not asked again: the same source would send
// the same wrong bytes.
type source struct {
	c      hub.FeedClient
	d      cachestore.Digest
	tries  int
	got    *atomic.Int64
	blamed atomic.Bool
}

func (s *source) Open(ctx context.Context, off int64) (*fill.Stream, error) {
	if s.blamed.Load() {
		return nil, fmt.Errorf("%w: hub %s sent wrong bytes for blob %s", fill.ErrSkip, s.c.From.Name, s.d)
	}
	if s.tries >= 3 {
		return nil, fmt.Errorf("%w: 3 transfers from hub %s broke off", fill.ErrSkip, s.c.From.Name)
	}
	s.tries++
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.c.BlobURL(s.d), nil)
	if err != nil {
		return nil, fill.Stop(err)
	}
	resp, size, err := fill.GetAt(s.c, req, off)
	if err != nil {
		return nil, fmt.Errorf("hub %s: %w", s.c.From.Name, err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		resp.Body.Close()
		return nil, fill.Stop(fmt.Errorf("hub %s answered %s for blob %s", s.c.From.Name, resp.Status, s.d))
	}
	return &fill.Stream{Body: resp.Body, From: "hub " + s.c.From.Name, Size: size,
		Received: func(n int64) { s.got.Add(n) },
		Blame: func(reason error) {
			if !errors.Is(reason, fill.ErrStalled) {
				s.blamed.Store(true)
			}
		}}, nil
}
