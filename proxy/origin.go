package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/fill"
	"github.com/warren-cache/warren/hub"
)

// errNotModified ends a revalidating fill whose copy is still good.
var errNotModified = errors.New("not modified")

// upstreamStatusError is an upstream answer that is not the file.
type upstreamStatusError struct {
	code   int
	status string
	url    string
}

func (e *upstreamStatusError) Error() string {
	return fmt.Sprintf("upstream answered %s for %s", e.status, e.url)
}

// upstreamFetchError is upstream not answering at all, or breaking off.
type upstreamFetchError struct {
	url string
	err error
}

func (e *upstreamFetchError) Error() string {
	return fmt.Sprintf("upstream unreachable for %s: %v", e.url, e.err)
}

func (e *upstreamFetchError) Unwrap() error { return e.err }

func (e *upstreamFetchError) timeout() bool {
	var ne net.Error
	return errors.Is(e.err, context.DeadlineExceeded) || errors.As(e.err, &ne) && ne.Timeout()
}

// isUpstreamDown says whether err means upstream could not give an answer,
// which is when a cached copy is served instead (offline mode).
func isUpstreamDown(err error) bool {
	var fe *upstreamFetchError
	var st *upstreamStatusError
	var de *DestinationError
	var re *RedirectError
	if errors.As(err, &de) || errors.As(err, &re) {
		return false // not down: refused, and a copy from before is not served either
	}
	return errors.As(err, &fe) || errors.As(err, &st) && st.code >= 500
}

// asker is what a fill keeps of the request that started it: it speaks
// for every requester upstream.
type asker struct {
	ua  string
	via []string // the Via chain so far: a hub chain that loops is refused
	// rate, when set, caps what this fill takes from upstream (a
	// preload's preload_rate).
	rate *rate.Limiter
}

func askerOf(r *http.Request) asker {
	return asker{ua: r.Header.Get("User-Agent"), via: r.Header.Values("Via")}
}

// upstreamSource is the origin mirror, or a hub that fetches from it for
// us, as a fill source: the first Open revalidates a URL-cached copy (304
// ends the fill), later ones resume with Range after what is written.
type upstreamSource struct {
	s    *Server
	p    plan
	who  asker
	prev *cachestore.Cached
	// hub is the hub asked, nil for the origin itself.
	hub Hub
	// relan makes the LAN a source again, for the wait a busy hub asks
	// for (nil without peers or digest): by then the hub's first
	// requesters on the LAN may hold the artifact.
	relan func(ctx context.Context) fill.Source
	lan   fill.Source // the LAN, asked after a wait, until it has no more
	// tries counts transfers; waits the hub's "busy" answers.
	tries  int
	waits  int
	blamed bool
}

// originTries bounds the transfers of one fill from one upstream: a body
// that breaks off is resumed, but not forever.
const originTries = 3

// maxHubWaits bounds how often one fill waits for a busy hub before it
// goes on to the next source.
const maxHubWaits = 5

func (o *upstreamSource) name() string {
	if o.hub != nil {
		return "hub " + o.hub.Name()
	}
	return "the origin"
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
	if o.tries >= originTries {
		return nil, fmt.Errorf("%w: %d transfers from %s broke off", fill.ErrSkip, o.tries, o.name())
	}
	o.tries++
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return nil, fill.Stop(fmt.Errorf("build upstream request for %s: %w", p.url, err))
	}
	s.setUpstreamHeaders(req, o.who)
	if p.cred.auth != "" {
		req.Header.Set("Authorization", p.cred.auth)
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
		if !p.digest.IsZero() {
			// The blob our metadata names: the hub serves that
			// generation if it holds it, whatever its own metadata says.
			req.Header.Set(hub.HeaderDigest, p.digest.String())
			if p.size >= 0 {
				req.Header.Set(hub.HeaderSize, strconv.FormatInt(p.size, 10))
			}
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
		var be *BudgetError
		if errors.As(err, &be) {
			return nil, fill.Stop(be) // the budget is spent: asking again now would not help
		}
		return nil, &upstreamFetchError{url: p.url, err: err}
	}
	s.stats.UpstreamFetches.Add(1)
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
		if err := s.store.PutCached(p.key, c); err != nil {
			s.log.Warn("could not record revalidation", slog.String("url", p.url), slog.Any("err", err))
		}
		return nil, fill.Stop(errNotModified)
	case resp.StatusCode == http.StatusOK, resp.StatusCode == http.StatusPartialContent && off > 0:
	case o.hub != nil && resp.StatusCode >= 500:
		// The hub could not get it (its upstream is down, its disk
		// broke): the next source may.
		resp.Body.Close()
		return nil, &upstreamFetchError{url: p.url, err: fmt.Errorf("%s answered %s", o.name(), resp.Status)}
	default:
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone {
			s.rememberNotFound(p.key)
		}
		return nil, fill.Stop(&upstreamStatusError{code: resp.StatusCode, status: resp.Status, url: p.url})
	}
	if p.size >= 0 && size >= 0 && size != p.size {
		resp.Body.Close()
		s.stats.Mismatches.Add(1)
		s.log.Error("upstream length differs from the repository metadata; not storing",
			slog.String("url", p.url), slog.String("from", o.name()), slog.Int64("expected", p.size), slog.Int64("upstream", size))
		if o.hub != nil {
			o.blamed = true
			return nil, fmt.Errorf("%w: metadata says %d bytes, %s sends %d for %s", cachestore.ErrSizeMismatch, p.size, o.name(), size, p.url)
		}
		return nil, fill.Stop(fmt.Errorf("%w: metadata says %d bytes, upstream sends %d for %s", cachestore.ErrSizeMismatch, p.size, size, p.url))
	}
	meta := map[string]string{}
	for _, k := range []string{"Content-Type", "Last-Modified", "ETag"} {
		if v := resp.Header.Get(k); v != "" {
			meta[k] = v
		}
	}
	body := resp.Body
	if o.who.rate != nil {
		body = &paced{ReadCloser: body, ctx: ctx, lim: o.who.rate}
	}
	st := &fill.Stream{
		Body: body, From: "origin " + req.URL.Host, Size: size, Meta: meta,
		Received: func(n int64) { s.stats.BytesFetched.Add(n); s.hist.add(s.now(), p.eco, 0, n) },
		Blame: func(reason error) {
			if errors.Is(reason, fill.ErrStalled) {
				return // a stalled origin is resumed, within originTries
			}
			o.blamed = true
			if errors.Is(reason, cachestore.ErrDigestMismatch) {
				s.stats.Mismatches.Add(1)
				s.log.Error("upstream sent bytes that do not match the repository metadata; nothing stored",
					slog.String("url", p.url), slog.Any("err", reason))
			}
		},
	}
	if h := o.hub; h != nil {
		st.From = "hub " + h.Name()
		st.Received = func(n int64) { s.stats.BytesHub.Add(n); h.Received(n) }
		st.Blame = func(reason error) {
			// Wrong, too many or too slow: the origin (or the next hub)
			// takes over from here, as the stall rule promises.
			o.blamed = true
			if errors.Is(reason, cachestore.ErrDigestMismatch) {
				s.stats.Mismatches.Add(1)
			}
			s.log.Warn("hub failed this transfer; the next source goes on from here", slog.String("url", p.url),
				slog.String("hub", h.Name()), slog.Any("err", reason))
		}
	}
	return st, nil
}

// hubFailed turns a hub's refusal or silence into the fill's next step.
// "Busy" (max_requesters) is a wait, then the LAN again: those who are
// streaming it from the hub will have it by then.
func (o *upstreamSource) hubFailed(ctx context.Context, off int64, err error) (*fill.Stream, error) {
	s, p := o.s, o.p
	o.tries-- // no transfer began
	var busy *hub.BusyError
	if !errors.As(err, &busy) {
		return nil, &upstreamFetchError{url: p.url, err: err}
	}
	if o.waits >= maxHubWaits {
		return nil, &upstreamFetchError{url: p.url, err: fmt.Errorf("waited %d times and %s is still busy with it: %w", o.waits, o.name(), err)}
	}
	o.waits++
	s.stats.HubWaits.Add(1)
	s.log.Info("hub busy with this artifact; asking the LAN again after the delay", slog.String("url", p.url),
		slog.String("hub", o.hub.Name()), slog.Int("position", busy.Position), slog.Int64("hub_bytes_done", busy.Done),
		slog.Int64("hub_bytes_total", busy.Total), slog.Duration("retry_after", busy.RetryAfter))
	done := s.waiting.add(p.url, o.hub.Name(), s.now().Add(busy.RetryAfter))
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
func (s *Server) setUpstreamHeaders(req *http.Request, who asker) {
	if who.ua != "" {
		req.Header.Set("User-Agent", who.ua)
	}
	req.Header.Del("Via")
	for _, v := range who.via {
		req.Header.Add("Via", v)
	}
	req.Header.Add("Via", s.via)
}

// upstreamDo sends a request that is no fill (a feed call, a pass-through)
// to the first hub that answers it, then the origin unless hub_only.
func (s *Server) upstreamDo(req *http.Request) (*http.Response, error) {
	var last error
	for _, h := range s.cfg.Hubs {
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

// passThrough answers the client straight from upstream, storing nothing:
// for HEAD on a miss and when the disk is full.
func (s *Server) passThrough(w *respWriter, r *http.Request, p plan) error {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, p.url, nil)
	if err != nil {
		return fmt.Errorf("build upstream request for %s: %w", p.url, err)
	}
	s.setUpstreamHeaders(req, askerOf(r))
	if p.cred.auth != "" {
		req.Header.Set("Authorization", p.cred.auth)
	}
	for _, k := range []string{"Range", "If-Range", "If-Modified-Since", "If-None-Match", "Accept"} {
		if v := r.Header.Get(k); v != "" {
			req.Header.Set(k, v)
		}
	}
	resp, err := s.upstreamDo(req)
	if err != nil {
		return &upstreamFetchError{url: p.url, err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 500 {
		return &upstreamStatusError{code: resp.StatusCode, status: resp.Status, url: p.url}
	}
	for _, k := range []string{"Content-Type", "Content-Length", "Content-Range", "Last-Modified", "ETag", "Accept-Ranges"} {
		if v := resp.Header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	w.Header().Set("X-Cache", "MISS from warren (not stored)")
	w.WriteHeader(resp.StatusCode)
	_, err = s.copyBuf(w, resp.Body)
	if err != nil {
		return &upstreamFetchError{url: p.url, err: err}
	}
	return nil
}

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
