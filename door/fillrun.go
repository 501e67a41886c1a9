package door

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/fill"
)

// startFill runs the fill on the server's context, not the client's: a
// client that goes away does not cancel the download the others wait for.
func (s *Door) startFill(f *cachestore.Fill, who Asker, p Plan, prev *cachestore.Cached) {
	if !s.fills.Go(func() { s.runFillWith(s.ctx, f, who, p, prev, FetchOptions{}) }) {
		f.Abort(ErrShuttingDown)
	}
}

// ErrShuttingDown answers a request that comes while the server closes.
var ErrShuttingDown = errors.New("warren is shutting down; try again shortly")

// runFillWith fills f through the engine from the ordered sources (or
// from given ones: a source hub's blob endpoint). The URL-cache entry is
// recorded and the metadata's learn registered before the last byte is
// released (committingFill); the learn itself runs from the stored blob
// afterwards; then the change feed records it.
func (s *Door) runFillWith(ctx context.Context, f *cachestore.Fill, who Asker, p Plan, prev *cachestore.Cached, opts FetchOptions) {
	// Check the store again inside the flight: a fill that just finished
	// may have stored what we are about to fetch. (Given sources are the
	// caller's choice: it looked itself.)
	if opts.Sources == nil {
		if err := s.storedMeanwhile(p); err != nil {
			f.Abort(err)
			return
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sources, lan := opts.Sources, fill.Source(nil)
	if sources == nil {
		sources, lan = s.sources(ctx, f, p, who, prev)
	}
	peers := lan != nil
	cf := &committingFill{Fill: f, s: s, p: p, who: who}
	res, err := s.run(ctx, cf, p, sources)
	if peers {
		s.cfg.Peers.Done(p.Digest, err == nil)
	}
	if err != nil {
		if cf.learn != nil {
			s.learning.end(cf.learn)
		}
		if !errors.Is(err, ErrNotModified) {
			s.log.Debug("fill failed", slog.String("url", p.ShownURL()), slog.Any("err", err))
		}
		return
	}
	if cf.learn != nil && !s.fills.Go(func() {
		s.learn(cf.learn, cf.scope, p, res.Digest)
		// A hub's index files fetched ahead of their Release teach what
		// they list once the Release's own facts are in.
		for _, pp := range cf.prefetched {
			if lr, scope, ok := s.beginLearn(pp); ok {
				s.learn(lr, scope, pp, pp.Digest)
			}
		}
	}) {
		s.learning.end(cf.learn) // shutting down: learnt on the next fetch
	}
	if !opts.Unrecorded && !cf.same {
		s.recordFill(p, res.Digest, res.Size)
	}
	// How long each phase of the miss took: the peers' answer, the
	// downloader known (an election, or one found), the first byte.
	attrs := []any{slog.String("url", p.ShownURL()), slog.String("digest", res.Digest.String()),
		slog.Int64("bytes", res.Size), slog.Any("from", res.From),
		slog.Duration("first_byte", res.FirstByte), slog.Duration("took", res.Took)}
	if ph, ok := lan.(phased); ok {
		q, e := ph.Phases()
		attrs = append(attrs, slog.Duration("query", q), slog.Duration("election", e))
	}
	s.log.Info("stored", attrs...)
}

// recordFill tells the change feed what a fill for p stored (a file kept
// by URL with its validators): never a private scope's.
func (s *Door) recordFill(p Plan, d cachestore.Digest, size int64) {
	if s.cfg.Record == nil || p.Cred.Private() {
		return
	}
	var cached *cachestore.Cached
	if p.Digest.IsZero() || p.Unconfirmed {
		c, err := s.store.Cached(p.Key)
		if err != nil || c.Digest != d {
			return // replaced meanwhile: that fill records its own
		}
		cached = &c
	}
	s.cfg.Record(p.Key, p.Kind, d, size, cached)
}

// run is the one place the fill engine runs: into the store (a fill) or,
// with no room on the disk, into a client's response.
func (s *Door) run(ctx context.Context, f fill.Filler, p Plan, sources []fill.Source) (fill.Result, error) {
	return s.engine.Run(ctx, f, fill.Want{Digest: p.Digest, Size: p.Size, Also: p.Also}, sources)
}

// yielder is a LAN source that says when this node should leave its own
// download to a LAN peer further along (peering.Source).
type yielder interface {
	Yield() <-chan struct{}
}

// yieldOnce hands a fill's upstream streams the LAN's yield (see
// fill.Stream.Yield) until one of them was left for it: a fill leaves its
// upstream download at most once. peering yields once a fill too; this
// bounds the engine's walk whatever the LAN source says. The engine opens
// one source at a time, so no lock.
type yieldOnce struct {
	lan   yielder
	to    fill.Source // the LAN, opened at the offset reached
	taken bool
}

// offer is the yield for the next upstream stream, nil once one was
// taken (or for a nil yieldOnce: no LAN).
func (y *yieldOnce) offer() (<-chan struct{}, fill.Source) {
	if y == nil || y.taken {
		return nil, nil
	}
	if ch := y.lan.Yield(); ch != nil {
		return ch, y.to
	}
	return nil, nil
}

// left says whether the stream handed ch was left for the LAN (ch is
// closed), and if so counts the fill's one yield as taken.
func (y *yieldOnce) left(ch <-chan struct{}) bool {
	if y == nil || ch == nil {
		return false
	}
	select {
	case <-ch:
		y.taken = true
		return true
	default:
		return false
	}
}

// phased is a LAN source that says how long its question and its
// election took.
type phased interface {
	Phases() (query, election time.Duration)
}

// ErrAlreadyStored ends a flight whose blob another one stored first.
var ErrAlreadyStored = errors.New("blob was stored meanwhile")

// storedMeanwhile says (as the error to end the flight with) that what p
// names was stored since the request looked.
func (s *Door) storedMeanwhile(p Plan) error {
	if !s.confirmed(p) {
		return nil
	}
	if !p.Digest.IsZero() {
		if bi, err := s.store.Stat(p.Digest); err == nil && p.Readable(bi) {
			return ErrAlreadyStored
		}
	} else if c, err := s.store.Cached(p.Key); err == nil && s.now().Sub(c.Fetched) < s.cfg.IndexTTL {
		return ErrNotModified
	}
	return nil
}

// sources are where p's bytes may come from, in the order the engine tries
// them: LAN peers, the site's hubs, the origin (unless hub_only). A URL
// whose hash no metadata gave is never fetched from peers. Artifacts below
// share_min_size go up the chain at once, the peers' question running
// beside the download and its answers the fallback. Last, should every
// other source fail, the peers are asked again: a fill never fails while
// the LAN holds the blob. lan is the LAN's first source when the LAN
// takes part (Done ends its part), else nil.
func (s *Door) sources(ctx context.Context, f *cachestore.Fill, p Plan, who Asker, prev *cachestore.Cached) (sources []fill.Source, lan fill.Source) {
	if s.cfg.Peers == nil || p.Digest.IsZero() || p.Cred.Private() || p.Unconfirmed {
		// A private fill never involves the LAN: its bytes are its
		// scope's, and no peer may be told it has them (private.go).
		// Nor does an installer its origin has not confirmed: a peer
		// holds bytes of that digest from anywhere (installer.go).
		return s.upstreamSources(p, who, prev, nil), nil
	}
	counted := func(src fill.Source) fill.Source {
		return countingSource{src, &s.stats.BytesPeers, &s.stats.Mismatches}
	}
	// After a busy hub's wait, the LAN is asked who has the blob or is
	// receiving it, with no election: this node is the one its LAN chose
	// to fetch it (or fetches it alone), and electing again among peers
	// that wait for it would have each wait on the other.
	relan := func(context.Context) fill.Source {
		return counted(s.cfg.Peers.Again(p.Digest, p.Size, f.Written))
	}
	lan = s.cfg.Peers.Source(ctx, p.Digest, p.Size, f.Written)
	up := s.upstreamSources(p, who, prev, relan)
	for _, src := range up {
		if u := src.(*upstreamSource); u.hub != nil {
			// A hub that streams the blob to this LAN already names the
			// peers receiving it.
			u.hint = func(peers []netip.AddrPort) fill.Source {
				return counted(s.cfg.Peers.From(peers, p.Digest, p.Size, f.Written))
			}
		}
	}
	if y, ok := lan.(yielder); ok {
		// Downloading for the LAN, this node leaves the download to a LAN
		// peer further along, should the election have made two winners:
		// once a fill, whichever upstream it comes from.
		once := &yieldOnce{lan: y, to: counted(lan)}
		for _, src := range up {
			src.(*upstreamSource).yield = once
		}
	}
	again := counted(s.cfg.Peers.Again(p.Digest, p.Size, f.Written))
	if p.Size >= 0 && p.Size < s.cfg.ShareMinSize {
		return append(up, counted(lan), again), lan // the peers are the fallback
	}
	return append(append([]fill.Source{counted(lan)}, up...), again), lan
}

// upstreamSources are the hubs in their failover order, then the origin
// unless hub_only. relan, when set, lets a busy hub send the fill back to
// the LAN after its delay.
func (s *Door) upstreamSources(p Plan, who Asker, prev *cachestore.Cached, relan func(context.Context) fill.Source) []fill.Source {
	var out []fill.Source
	hubs := s.cfg.Hubs
	if p.Cred.Private() && !s.cfg.HubOnly {
		// A credential goes to its origin alone, unless the site's
		// policy is that nothing goes to an origin directly.
		hubs = nil
	}
	for _, h := range hubs {
		out = append(out, &upstreamSource{s: s, p: p, who: who, prev: prev, hub: h, relan: relan})
	}
	if !s.cfg.HubOnly || len(s.cfg.Hubs) == 0 {
		origin := &upstreamSource{s: s, p: p, who: who, prev: prev}
		out = append(out, origin)
		// The other mirrors of its group, after the one asked for.
		if mirrors := s.mirrorSources(p, who); len(mirrors) > 0 {
			origin.group = mirrors[0].(*upstreamSource).group
			out = append(out, mirrors...)
		}
	}
	return out
}

// committingFill does what must precede the release of the last byte:
// the URL-cache entry, and the registration of the metadata's learn (so
// that a request racing it waits for it).
type committingFill struct {
	*cachestore.Fill
	s     *Door
	p     Plan
	who   Asker
	learn *learnRun
	scope repoScope
	// prefetched are a hub's index files fetched before their new
	// Release was released (generations.go).
	prefetched []Plan
	// same: a URL's copy fetched again with the bytes it had (nothing
	// new for the change feed).
	same bool
}

// holdsGeneration says whether this fill is a hub's new top metadata file,
// released only with what it lists (generations.go): a Release or
// repomd.xml kept by URL, or a repomd.xml a metalink gives the hash of
// (its URL's copy is recorded too). A private scope's is not held: what
// it lists is its client's to fetch, with its credential.
func (c *committingFill) holdsGeneration() bool {
	top := c.p.Digest.IsZero() && (c.p.Meta == MetaRelease || c.p.Meta == MetaRepomd) || c.p.listHashed()
	return c.s.cfg.KeepGenerations > 0 && top && !c.p.Cred.Private()
}

func (c *committingFill) Start(info cachestore.FillInfo) error {
	info.Scope = c.p.Cred.scope // a private plan's bytes are its scope's
	if err := c.Fill.Start(info); err != nil {
		return err
	}
	if c.held() {
		// Not a byte reaches a node before the hub knows it can serve
		// what the file lists: else a held-back Release would be cut
		// mid-transfer instead of the previous one served. Nor of a
		// mirror's repomd.xml a metalink names the hash of: a stale
		// mirror's is refused unseen, the next mirror's sent instead.
		c.Fill.Hold()
	}
	return nil
}

// checksSignature says whether this fill is a hub's top metadata file (a
// Release, an InRelease, a repomd.xml), which it stores only once its
// signature verifies: whatever planned its digest (none, or a metalink's).
func (c *committingFill) checksSignature() bool {
	return c.s.cfg.KeepGenerations > 0 && c.s.cfg.Keys != nil && isTop(c.p) && !c.p.Cred.Private()
}

// checkSignature checks the fill's bytes (verified against the plan's
// digest, if any, by the engine) as top metadata, closed: bytes that
// cannot be read back fail.
func (c *committingFill) checkSignature() error {
	body, err := io.ReadAll(io.LimitReader(c.Fill.Bytes(), maxTopBytes+1))
	switch {
	case err != nil:
		return fmt.Errorf("%w: its bytes could not be read back to check: %w", ErrSignature, err)
	case len(body) > maxTopBytes:
		return fmt.Errorf("%w: larger than %d bytes", ErrSignature, maxTopBytes)
	}
	if v := c.s.checkTop(c.s.ctx, c.p, c.Fill.Digest(), body); !v.ok {
		return v.err
	}
	return nil
}

// held says whether the fill's bytes reach no reader before they verify.
func (c *committingFill) held() bool {
	return c.holdsGeneration() || c.p.listHashed()
}

// Restart begins again from the next source, held as before.
func (c *committingFill) Restart() error {
	if err := c.Fill.Restart(); err != nil {
		return err
	}
	if c.held() {
		c.Fill.Hold()
	}
	return nil
}

func (c *committingFill) Commit(want cachestore.Digest, size int64) (cachestore.Digest, error) {
	s, p := c.s, c.p
	if c.checksSignature() {
		// A hub stores no top metadata that fails its signature check:
		// nodes and clients keep the previous generation (signatures.go).
		if err := c.checkSignature(); err != nil {
			return cachestore.Digest{}, &UpstreamFetchError{URL: p.URL, Err: err}
		}
	}
	if c.holdsGeneration() && c.learn == nil {
		pre, err := s.holdGeneration(s.ctx, c.Fill, p, c.who)
		if err != nil {
			s.log.Warn("new repository metadata held back: nodes get the previous generation until the hub holds what it lists",
				slog.String("url", p.ShownURL()), slog.Any("err", err))
			return cachestore.Digest{}, err
		}
		c.prefetched = pre
	}
	got := c.Fill.Digest()
	// A file kept by URL, an installer its origin just confirmed (the
	// engine verified it), or a metalink-hashed repomd.xml (which version
	// this mirror serves: lookupAlternate; a hub's previous generation):
	// the URL's copy is recorded.
	if p.Digest.IsZero() || p.Unconfirmed && got == p.Digest || p.listHashed() {
		if old, err := s.store.Cached(p.Key); err == nil && old.Digest == got {
			c.same = true
		}
		meta := c.Fill.Meta()
		cached := cachestore.Cached{
			Digest: got, Size: size, ETag: meta["ETag"], LastModified: meta["Last-Modified"],
			ContentType: meta["Content-Type"], Fetched: s.now(), Meta: extraMeta(meta),
		}
		if err := s.store.PutCached(p.Key, cached); err != nil {
			s.log.Warn("could not record a cached URL", slog.String("url", p.ShownURL()), slog.Any("err", err))
		}
	}
	if c.learn == nil {
		// Once: a learn registered twice would be ended once, and every
		// request in its repository would wait learnWaitMax for the other.
		c.learn, c.scope, _ = s.beginLearn(p)
	}
	return c.Fill.Commit(want, size)
}

// extraMeta are the headers a stream gave beyond the validators and the
// type (a feed answer's DataServiceVersion), kept with a URL's copy; nil
// when there are none.
func extraMeta(meta map[string]string) map[string]string {
	var out map[string]string
	for k, v := range meta {
		switch k {
		case "ETag", "Last-Modified", "Content-Type":
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out
}

// countingSource counts what a source sends and what it got wrong.
type countingSource struct {
	fill.Source
	bytes      *atomic.Int64
	mismatches *atomic.Int64
}

func (c countingSource) Open(ctx context.Context, off int64) (*fill.Stream, error) {
	st, err := c.Source.Open(ctx, off)
	if err != nil {
		return nil, err
	}
	st.Received = func(n int64) { c.bytes.Add(n) }
	blame := st.Blame
	st.Blame = func(reason error) {
		if errors.Is(reason, cachestore.ErrDigestMismatch) {
			c.mismatches.Add(1)
		}
		if blame != nil {
			blame(reason)
		}
	}
	return st, nil
}
