package door

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/fill"
	"github.com/warren-cache/warren/hub"
)

// ErrNotModified ends a revalidating fill whose copy is still good.
var ErrNotModified = errors.New("not modified")

// UpstreamStatusError is an upstream answer that is not the file.
type UpstreamStatusError struct {
	Code   int
	Status string
	URL    string
	// Challenge is the origin's WWW-Authenticate on a 401: passed on, so
	// that a client can answer it as it would the origin's own.
	Challenge []string
}

func (e *UpstreamStatusError) Error() string {
	return fmt.Sprintf("upstream answered %s for %s", e.Status, hub.RedactURLs(e.URL))
}

// UpstreamFetchError is upstream not answering at all, or breaking off.
type UpstreamFetchError struct {
	URL string
	Err error
}

func (e *UpstreamFetchError) Error() string {
	return hub.RedactURLs(fmt.Sprintf("upstream unreachable for %s: %v", e.URL, e.Err))
}

func (e *UpstreamFetchError) Unwrap() error { return e.Err }

// Timeout says whether upstream was too slow rather than gone.
func (e *UpstreamFetchError) Timeout() bool {
	var ne net.Error
	return errors.Is(e.Err, context.DeadlineExceeded) || errors.As(e.Err, &ne) && ne.Timeout()
}

// Final is an upstream transport's refusal that neither a retry nor
// another source changes now (a feed's request budget spent): the fill
// stops with it.
type Final interface {
	error
	Final()
}

// IsUpstreamDown says whether err means upstream could not give an answer,
// which is when a cached copy is served instead (offline mode).
func IsUpstreamDown(err error) bool {
	var fe *UpstreamFetchError
	var st *UpstreamStatusError
	var de *DestinationError
	var re *RedirectError
	if errors.As(err, &de) || errors.As(err, &re) {
		return false // not down: refused, and a copy from before is not served either
	}
	return errors.As(err, &fe) || errors.As(err, &st) && st.Code >= 500
}

// Asker is what a fill keeps of the request that started it: it speaks
// for every requester upstream.
type Asker struct {
	UA  string
	Via []string // the Via chain so far: a hub chain that loops is refused
	// Rate, when set, caps what this fill takes from upstream (a
	// preload's preload_rate).
	Rate *rate.Limiter
}

// AskerOf speaks for a client's request.
func AskerOf(r *http.Request) Asker {
	return Asker{UA: r.Header.Get("User-Agent"), Via: r.Header.Values("Via")}
}

// upstreamSource is the origin mirror, or a hub that fetches from it for
// us, as a fill source: the first Open revalidates a URL-cached copy (304
// ends the fill), later ones resume with Range after what is written.
type upstreamSource struct {
	s    *Door
	p    Plan
	who  Asker
	prev *cachestore.Cached
	// hub is the hub asked, nil for the origin itself.
	hub Hub
	// url, when set, is another mirror of p's group to ask (mirrors.go)
	// in place of p's own URL; group is the group of either, when the
	// fill has other mirrors to go on to: then a stall, a refusal or a
	// wrong file moves on at once instead of ending the fill.
	url   string
	group *mirrorGroup
	// relan makes the LAN a source again, for the wait a busy hub asks
	// for (nil without peers or digest): by then the hub's first
	// requesters on the LAN may hold the artifact.
	relan func(ctx context.Context) fill.Source
	lan   fill.Source // the LAN, asked after a wait, until it has no more
	// hint, when set, makes the LAN a source from the peers a busy hub
	// names (they receive the blob from it); hinted: it was used, once.
	hint   func(peers []netip.AddrPort) fill.Source
	hinted bool
	// yield, when set, says when to leave this download to the LAN, which
	// then streams from a peer further along; left is the yield handed
	// with the last stream, to tell a stream left for the LAN from one
	// that broke off.
	yield *yieldOnce
	left  <-chan struct{}
	// tries counts transfers; waits the hub's "busy" answers.
	tries  int
	waits  int
	blamed bool
}

// OriginTries bounds the transfers of one fill from one upstream: a body
// that breaks off is resumed, but not forever.
const OriginTries = 3

// maxHubWaits bounds how often one fill waits for a busy hub before it
// goes on to the next source.
const maxHubWaits = 5

func (o *upstreamSource) name() string {
	switch {
	case o.hub != nil:
		return "hub " + o.hub.Name()
	case o.url != "":
		return "mirror " + hostOf(o.url)
	}
	return "the origin"
}

// target is the URL this source asks for.
func (o *upstreamSource) target() string {
	if o.url != "" {
		return o.url
	}
	return o.p.URL
}

func hostOf(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Host
	}
	return raw
}

func (o *upstreamSource) Open(ctx context.Context, off int64) (*fill.Stream, error) {
	s, p := o.s, o.p
	if o.lan != nil {
		st, err := o.lan.Open(ctx, off)
		if err == nil {
			return st, nil
		}
		if ctx.Err() != nil {
			return nil, fill.Stop(ctx.Err())
		}
		o.lan = nil // nothing (more) on the LAN: the hub again
	}
	if o.blamed {
		return nil, fmt.Errorf("%w: %s sent wrong or too slow bytes", fill.ErrSkip, o.name())
	}
	if o.yield.left(o.left) {
		// The last stream was left for a LAN peer further along, which
		// had nothing after all: it did not break off, so going on from
		// here is no new try (three yields once failed a healthy origin).
		o.tries--
	}
	o.left = nil
	if o.tries >= OriginTries {
		return nil, fmt.Errorf("%w: %d transfers from %s broke off", fill.ErrSkip, o.tries, o.name())
	}
	o.tries++
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.target(), nil)
	if err != nil {
		return nil, fill.Stop(fmt.Errorf("build upstream request for %s: %w", o.target(), err))
	}
	s.setUpstreamHeaders(req, o.who)
	if p.Cred.auth != "" {
		req.Header.Set("Authorization", p.Cred.auth)
	}
	if off == 0 && o.prev != nil && o.tries == 1 {
		if o.prev.ETag != "" {
			req.Header.Set("If-None-Match", o.prev.ETag)
		}
		if o.prev.LastModified != "" {
			req.Header.Set("If-Modified-Since", o.prev.LastModified)
		}
	}
	var client fill.Doer = s.up
	if o.hub != nil {
		client = o.hub
		if !p.Digest.IsZero() && !p.Unconfirmed {
			// The blob our metadata names: the hub serves that
			// generation if it holds it, whatever its own metadata says.
			// (Not an installer's checksum its origin has not
			// confirmed: the hub plans that URL by its own facts.)
			req.Header.Set(hub.HeaderDigest, p.Digest.String())
			if p.Size >= 0 {
				req.Header.Set(hub.HeaderSize, strconv.FormatInt(p.Size, 10))
			}
		}
		if o.hinted {
			// The peers it named did not give it: the hub's own bytes now.
			req.Header.Set(hub.HeaderHinted, "tried")
		}
	}
	resp, size, err := fill.GetAt(client, req, off)
	if err != nil {
		if o.hub != nil {
			return o.hubFailed(ctx, off, err)
		}
		var de *DestinationError
		if errors.As(err, &de) {
			return nil, fill.Stop(de) // no retry, no other source: refused
		}
		var re *RedirectError
		if errors.As(err, &re) {
			return nil, fill.Stop(re) // the origin's own answer: no other source says otherwise
		}
		var fe Final
		if errors.As(err, &fe) {
			return nil, fill.Stop(err) // the budget is spent: asking again now would not help
		}
		return nil, &UpstreamFetchError{URL: o.target(), Err: err}
	}
	if o.hub != nil {
		s.stats.HubFetches.Add(1)
	} else {
		s.stats.UpstreamFetches.Add(1)
	}
	switch {
	case resp.StatusCode == http.StatusNotModified && o.prev != nil && off == 0:
		resp.Body.Close()
		c := *o.prev
		c.Fetched = s.now()
		if v := resp.Header.Get("ETag"); v != "" {
			c.ETag = v
		}
		if v := resp.Header.Get("Last-Modified"); v != "" {
			c.LastModified = v
		}
		if err := s.store.PutCached(p.Key, c); err != nil {
			s.log.Warn("could not record revalidation", slog.String("url", p.ShownURL()), slog.Any("err", err))
		}
		return nil, fill.Stop(ErrNotModified)
	case resp.StatusCode == http.StatusOK, resp.StatusCode == http.StatusPartialContent && off > 0:
	case o.hub != nil && resp.StatusCode >= 500:
		// The hub could not get it (its upstream is down, its disk
		// broke): the next source may.
		resp.Body.Close()
		return nil, &UpstreamFetchError{URL: p.URL, Err: fmt.Errorf("%s answered %s", o.name(), resp.Status)}
	case o.group != nil:
		// One mirror of a group lacking the file (not synced yet,
		// gone) says nothing of the others.
		resp.Body.Close()
		err := &UpstreamStatusError{Code: resp.StatusCode, Status: resp.Status, URL: o.target()}
		if resp.StatusCode < 500 {
			return nil, fmt.Errorf("%w: %w", fill.ErrSkip, err)
		}
		return nil, &UpstreamFetchError{URL: o.target(), Err: err}
	default:
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone {
			s.rememberNotFound(p.Key)
		}
		return nil, fill.Stop(&UpstreamStatusError{Code: resp.StatusCode, Status: resp.Status, URL: p.URL, Challenge: resp.Header.Values("WWW-Authenticate")})
	}
	if p.Size < 0 && size >= 0 && len(p.sizes) > 0 && !slices.Contains(p.sizes, size) && o.staleRepomd(fmt.Errorf("%w: the metalink's versions are %v bytes, the mirror sends %d", cachestore.ErrSizeMismatch, p.sizes, size)) {
		// Of no version the metalink names: refused before a byte is
		// read (its length would become the fill's).
		resp.Body.Close()
		return nil, fmt.Errorf("%w: %s's repomd.xml is not the metalink's", fill.ErrSkip, o.name())
	}
	if p.Size >= 0 && size >= 0 && size != p.Size {
		resp.Body.Close()
		if o.staleRepomd(fmt.Errorf("%w: the metalink says %d bytes, the mirror sends %d", cachestore.ErrSizeMismatch, p.Size, size)) {
			return nil, fmt.Errorf("%w: %s's repomd.xml is not the metalink's", fill.ErrSkip, o.name())
		}
		s.stats.Mismatches.Add(1)
		s.log.Error("upstream length differs from the repository metadata; not storing",
			slog.String("url", p.ShownURL()), slog.String("from", o.name()), slog.Int64("expected", p.Size), slog.Int64("upstream", size))
		if o.hub != nil || o.group != nil {
			o.blamed = true
			return nil, fmt.Errorf("%w: metadata says %d bytes, %s sends %d for %s", cachestore.ErrSizeMismatch, p.Size, o.name(), size, p.URL)
		}
		return nil, fill.Stop(fmt.Errorf("%w: metadata says %d bytes, upstream sends %d for %s", cachestore.ErrSizeMismatch, p.Size, size, p.URL))
	}
	meta := map[string]string{}
	for _, k := range []string{"Content-Type", "Last-Modified", "ETag"} {
		if v := resp.Header.Get(k); v != "" {
			meta[k] = v
		}
	}
	body := resp.Body
	if o.who.Rate != nil {
		body = &paced{ReadCloser: body, ctx: ctx, lim: o.who.Rate}
	}
	st := &fill.Stream{
		Body: body, From: "origin " + req.URL.Host, Size: size, Meta: meta,
		Received: func(n int64) { s.stats.BytesFetched.Add(n); s.cfg.WAN(p.Eco, n) },
		Blame: func(reason error) {
			if errors.Is(reason, fill.ErrStalled) && o.group == nil {
				return // a stalled origin is resumed, within OriginTries; a group's next mirror takes over
			}
			o.blamed = true
			switch {
			case errors.Is(reason, cachestore.ErrDigestMismatch) && o.staleRepomd(reason):
			case errors.Is(reason, cachestore.ErrDigestMismatch):
				s.stats.Mismatches.Add(1)
				s.log.Error("upstream sent bytes that do not match the repository metadata; nothing stored",
					slog.String("url", o.target()), slog.Any("err", reason))
			case o.group != nil:
				s.log.Warn("a mirror failed this transfer; the next mirror of its group goes on from here",
					slog.String("url", o.target()), slog.Any("err", reason))
			}
		},
	}
	if ch, to := o.yield.offer(); ch != nil {
		st.Yield, st.YieldTo, o.left = ch, to, ch
	}
	if o.url != "" {
		st.From = "mirror " + req.URL.Host
	}
	if h := o.hub; h != nil {
		if v := resp.Header.Get(HeaderMirrors); v != "" {
			meta[HeaderMirrors] = v // a list in its hub's order: kept so (mirrors.go)
		}
		st.From = "hub " + h.Name()
		st.Received = func(n int64) { s.stats.BytesHub.Add(n); h.Received(n) }
		st.Blame = func(reason error) {
			// Wrong, too many or too slow: the origin (or the next hub)
			// takes over from here, as the stall rule promises.
			o.blamed = true
			if errors.Is(reason, cachestore.ErrDigestMismatch) {
				s.stats.Mismatches.Add(1)
			}
			s.log.Warn("hub failed this transfer; the next source goes on from here", slog.String("url", p.ShownURL()),
				slog.String("hub", h.Name()), slog.Any("err", reason))
		}
	}
	return st, nil
}

// staleRepomd refuses, for the rest of the fill, a mirror's repomd.xml
// that its metalink does not name (a mirror not synced: the next one
// has it); false when this is no such file.
func (o *upstreamSource) staleRepomd(why error) bool {
	if o.group == nil || o.p.Meta != MetaRepomd {
		return false
	}
	o.blamed = true
	o.group.fig.refused.Add(1)
	o.s.log.Warn("a mirror's repomd.xml is not one its metalink names (a stale mirror?); refused, the next mirror asked",
		slog.String("url", o.target()), slog.String("list", hub.RedactURLs(o.group.list)), slog.Any("err", why))
	return true
}

// hubFailed turns a hub's refusal or silence into the fill's next step.
// "Busy" (max_requesters) is a wait, then the LAN again: those who are
// streaming it from the hub will have it by then.
func (o *upstreamSource) hubFailed(ctx context.Context, off int64, err error) (*fill.Stream, error) {
	s, p := o.s, o.p
	o.tries-- // no transfer began
	var busy *hub.BusyError
	if !errors.As(err, &busy) {
		return nil, &UpstreamFetchError{URL: p.URL, Err: err}
	}
	if len(busy.Peers) > 0 && o.hint != nil && !o.hinted {
		// Peers of ours receive it from the hub: from them at once. A
		// second such answer waits out the delay first.
		o.hinted = true
		s.stats.HubHints.Add(1)
		s.log.Debug("hub streams this artifact to LAN peers already; taking it from them", slog.String("url", p.ShownURL()),
			slog.String("hub", o.hub.Name()), slog.Any("peers", busy.Peers))
		o.lan = o.hint(busy.Peers)
		return o.Open(ctx, off)
	}
	if o.waits >= maxHubWaits {
		return nil, &UpstreamFetchError{URL: p.URL, Err: fmt.Errorf("waited %d times and %s is still busy with it: %w", o.waits, o.name(), err)}
	}
	o.waits++
	s.stats.HubWaits.Add(1)
	s.log.Info("hub busy with this artifact; asking the LAN again after the delay", slog.String("url", p.ShownURL()),
		slog.String("hub", o.hub.Name()), slog.Int("position", busy.Position), slog.Int64("hub_bytes_done", busy.Done),
		slog.Int64("hub_bytes_total", busy.Total), slog.Duration("retry_after", busy.RetryAfter))
	done := s.waiting.add(p.URL, o.hub.Name(), s.now().Add(busy.RetryAfter))
	defer done()
	t := time.NewTimer(busy.RetryAfter)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return nil, fill.Stop(ctx.Err())
	case <-t.C:
	}
	if o.relan != nil {
		o.lan = o.relan(ctx)
	}
	return o.Open(ctx, off)
}

// setUpstreamHeaders speaks for the asker upstream, adding this warren to
// the Via chain.
func (s *Door) setUpstreamHeaders(req *http.Request, who Asker) {
	if who.UA != "" {
		req.Header.Set("User-Agent", who.UA)
	}
	req.Header.Del("Via")
	for _, v := range who.Via {
		req.Header.Add("Via", v)
	}
	req.Header.Add("Via", s.via)
}

// upstreamDo sends a request that is no fill (a feed call, a pass-through)
// to the first hub that answers it, then the origin unless hub_only.
// A private request's (private: it carries its origin's credential) goes
// to its origin alone, as its fills do, unless hub_only.
func (s *Door) upstreamDo(req *http.Request, private bool) (*http.Response, error) {
	var last error
	hubs := s.cfg.Hubs
	if private && !s.cfg.HubOnly {
		hubs = nil
	}
	for _, h := range hubs {
		resp, err := h.Do(req)
		if err == nil && resp.StatusCode < 500 {
			return resp, nil
		}
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("hub %s answered %s", h.Name(), resp.Status)
		}
		last = err
	}
	if s.cfg.HubOnly && len(s.cfg.Hubs) > 0 {
		return nil, fmt.Errorf("hub_only: no hub delivered, and the origin is not asked directly: %w", last)
	}
	return s.up.Do(req)
}

// PassThrough asks upstream (the hubs, then the origin) for what r asks
// of p, storing nothing: for HEAD on a miss, and a full
// disk's URL-keyed files. The caller copies the answer (a failed copy is
// an UpstreamFetchError: WrapFetch) and closes its body.
func (s *Door) PassThrough(r *http.Request, p Plan) (*http.Response, error) {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, p.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("build upstream request for %s: %w", p.URL, err)
	}
	s.setUpstreamHeaders(req, AskerOf(r))
	if p.Cred.auth != "" {
		req.Header.Set("Authorization", p.Cred.auth)
	}
	for _, k := range []string{"Range", "If-Range", "If-Modified-Since", "If-None-Match", "Accept"} {
		if v := r.Header.Get(k); v != "" {
			req.Header.Set(k, v)
		}
	}
	resp, err := s.upstreamDo(req, p.Cred.Private())
	if err != nil {
		return nil, &UpstreamFetchError{URL: p.URL, Err: err}
	}
	if resp.StatusCode >= 500 {
		resp.Body.Close()
		return nil, &UpstreamStatusError{Code: resp.StatusCode, Status: resp.Status, URL: p.URL}
	}
	return resp, nil
}

// WrapFetch says that a transfer from upstream of url broke off.
func WrapFetch(url string, err error) error { return &UpstreamFetchError{URL: url, Err: err} }

// paced reads no faster than its limiter allows.
type paced struct {
	io.ReadCloser
	ctx context.Context
	lim *rate.Limiter
}

func (p *paced) Read(b []byte) (int, error) {
	// WaitN refuses more than the burst at once: read at most that.
	if burst := p.lim.Burst(); len(b) > burst {
		b = b[:burst]
	}
	n, err := p.ReadCloser.Read(b)
	if n > 0 {
		if werr := p.lim.WaitN(p.ctx, n); werr != nil && err == nil {
			err = werr
		}
	}
	return n, err
}

// waitList is the fills waiting out a busy hub, for the status page.
type waitList struct {
	mu sync.Mutex // guards m
	m  map[*HubWait]struct{}
}

// HubWait is one fill waiting out a busy hub.
type HubWait struct {
	URL   string
	Hub   string
	Until time.Time
}

func (l *waitList) add(url, hub string, until time.Time) (done func()) {
	w := &HubWait{URL: url, Hub: hub, Until: until}
	l.mu.Lock()
	if l.m == nil {
		l.m = map[*HubWait]struct{}{}
	}
	l.m[w] = struct{}{}
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		delete(l.m, w)
		l.mu.Unlock()
	}
}

func (l *waitList) list() []HubWait {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]HubWait, 0, len(l.m))
	for w := range l.m {
		out = append(out, *w)
	}
	return out
}
