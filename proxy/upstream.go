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
	"sync/atomic"
	"time"

	"github.com/warren-cache/warren/cachestore"
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
	return errors.As(err, &fe) || errors.As(err, &st) && st.code >= 500
}

// startFill runs the fill on the server's context, not the client's: a
// client that goes away does not cancel the download the others wait for.
func (s *Server) startFill(f *cachestore.Fill, r *http.Request, p plan, prev *cachestore.Cached) {
	ua := r.Header.Get("User-Agent")
	s.fills.Add(1)
	go func() {
		defer s.fills.Done()
		s.runFill(s.ctx, f, ua, p, prev)
	}()
}

// runFill fetches p.url into f: from LAN peers first when the digest is
// known, then upstream for whatever is missing; verify against p.digest
// (or compute sha256 for the URL cache), parse metadata as it passes, record
// what it learnt before the last byte is released, commit.
func (s *Server) runFill(ctx context.Context, f *cachestore.Fill, ua string, p plan, prev *cachestore.Cached) {
	// Check the store again inside the flight: a fill that just finished
	// may have stored what we are about to fetch.
	if !p.digest.IsZero() {
		if _, err := s.store.Stat(p.digest); err == nil {
			f.Abort(errAlreadyStored)
			return
		}
	} else if c, err := s.store.Cached(p.url); err == nil && s.now().Sub(c.Fetched) < s.cfg.IndexTTL {
		f.Abort(errNotModified)
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	run := &fillRun{s: s, f: f, p: p, size: -1}
	defer run.stopParser()
	committed := false
	if s.cfg.Peers != nil && !p.digest.IsZero() {
		defer func() { s.cfg.Peers.Done(p.digest, committed) }()
		if err := run.start(p.size, map[string]string{}); err != nil {
			return // Start aborted the fill; its readers have the reason
		}
		// Peer bytes count as they land, also when upstream sends the rest.
		sources, err := s.cfg.Peers.Fetch(ctx, p.digest, p.size, 0, peerBytes{run, &s.stats.BytesPeers}, f.Written)
		run.sources = sources
		if err == nil {
			committed = run.finish()
			return
		}
		s.log.Debug("fetching from upstream", slog.String("url", p.url), slog.Int64("have", f.Written()), slog.Any("why", err))
	}
	if run.fromUpstream(ctx, ua, prev) {
		committed = run.finish()
	}
}

// peerBytes counts what peers write into a fill.
type peerBytes struct {
	w io.Writer
	n *atomic.Int64
}

func (p peerBytes) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.n.Add(int64(n))
	return n, err
}

// fillRun is one fill in progress: its bytes also feed the metadata parser.
type fillRun struct {
	s       *Server
	f       *cachestore.Fill
	p       plan
	size    int64
	meta    map[string]string
	started bool
	parser  *metaParser
	sources []string // peers that sent bytes
}

func (r *fillRun) start(size int64, meta map[string]string) error {
	algo := r.p.digest.Algo
	if algo == "" {
		algo = "sha256"
	}
	if err := r.f.Start(cachestore.FillInfo{Algo: algo, Size: size, Meta: meta}); err != nil {
		return err
	}
	r.size, r.meta, r.started = size, meta, true
	if r.p.meta != "" {
		r.parser = r.s.startParser(r.p)
	}
	return nil
}

func (r *fillRun) stopParser() {
	if r.parser != nil {
		r.parser.abort()
	}
}

// Write appends to the fill and the parser; peers and upstream write here.
func (r *fillRun) Write(b []byte) (int, error) {
	n, err := r.f.Write(b)
	if n > 0 && r.parser != nil {
		r.parser.write(b[:n])
	}
	return n, err
}

// fromUpstream fetches what the fill lacks from upstream: all of it, or the
// rest after what peers sent (a Range request; a 200 is skipped forward).
// False when the fill was aborted.
func (r *fillRun) fromUpstream(ctx context.Context, ua string, prev *cachestore.Cached) bool {
	s, f, p := r.s, r.f, r.p
	var off int64
	if r.started {
		off = f.Written()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		f.Abort(fmt.Errorf("build upstream request for %s: %w", p.url, err))
		return false
	}
	s.setUpstreamHeaders(req, ua)
	if off > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
	} else if prev != nil {
		if prev.ETag != "" {
			req.Header.Set("If-None-Match", prev.ETag)
		}
		if prev.LastModified != "" {
			req.Header.Set("If-Modified-Since", prev.LastModified)
		}
	}
	resp, err := s.up.Do(req)
	if err != nil {
		f.Abort(&upstreamFetchError{url: p.url, err: err})
		return false
	}
	defer resp.Body.Close()
	s.stats.UpstreamFetches.Add(1)
	switch {
	case resp.StatusCode == http.StatusNotModified && prev != nil && !r.started:
		c := *prev
		c.Fetched = s.now()
		if v := resp.Header.Get("ETag"); v != "" {
			c.ETag = v
		}
		if v := resp.Header.Get("Last-Modified"); v != "" {
			c.LastModified = v
		}
		if err := s.store.PutCached(p.url, c); err != nil {
			s.log.Warn("could not record revalidation", slog.String("url", p.url), slog.Any("err", err))
		}
		f.Abort(errNotModified)
		return false
	case resp.StatusCode == http.StatusPartialContent && off > 0:
	case resp.StatusCode == http.StatusOK:
		if off > 0 { // upstream ignores Range: skip what the peers sent
			if _, err := io.CopyN(io.Discard, resp.Body, off); err != nil {
				f.Abort(&upstreamFetchError{url: p.url, err: fmt.Errorf("skip to offset %d: %w", off, err)})
				return false
			}
		}
	default:
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone {
			s.rememberNotFound(p.url)
		}
		f.Abort(&upstreamStatusError{code: resp.StatusCode, status: resp.Status, url: p.url})
		return false
	}
	if !r.started {
		size := resp.ContentLength
		if p.size >= 0 {
			if size >= 0 && size != p.size {
				s.log.Error("upstream length differs from the repository metadata; not storing",
					slog.String("url", p.url), slog.Int64("expected", p.size), slog.Int64("upstream", size))
				s.stats.Mismatches.Add(1)
				f.Abort(fmt.Errorf("%w: metadata says %d bytes, upstream sends %d for %s", cachestore.ErrSizeMismatch, p.size, size, p.url))
				return false
			}
			size = p.size
		}
		meta := map[string]string{}
		for _, k := range []string{"Content-Type", "Last-Modified", "ETag"} {
			if v := resp.Header.Get(k); v != "" {
				meta[k] = v
			}
		}
		if err := r.start(size, meta); err != nil {
			return false // Start aborted the fill; its readers have the reason
		}
	}
	// A stalled upstream must not hold every waiting client forever.
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stall := time.AfterFunc(s.cfg.StallTimeout, cancel)
	defer stall.Stop()
	go func() { <-cctx.Done(); resp.Body.Close() }()
	bp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(bp)
	buf := *bp
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			stall.Reset(s.cfg.StallTimeout)
			if _, err := r.Write(buf[:n]); err != nil {
				s.log.Warn("could not write to the cache; fill abandoned", slog.String("url", p.url), slog.Any("err", err))
				return false
			}
			s.stats.BytesFetched.Add(int64(n))
		}
		if rerr == io.EOF {
			return true
		}
		if rerr != nil {
			if cctx.Err() != nil && ctx.Err() == nil {
				rerr = fmt.Errorf("no data for %s: %w", s.cfg.StallTimeout, context.DeadlineExceeded)
			}
			s.log.Warn("upstream transfer broke off; nothing stored",
				slog.String("url", p.url), slog.Int64("received", f.Written()), slog.Int64("expected", r.size), slog.Any("err", rerr))
			f.Abort(&upstreamFetchError{url: p.url, err: fmt.Errorf("body broke off after %d bytes: %w", f.Written(), rerr)})
			return false
		}
	}
}

// finish verifies the whole blob, records what its metadata said (and the
// URL-cache entry) before the last byte is released, and commits. A blob
// that fails verification blames the peers that sent parts of it.
func (r *fillRun) finish() bool {
	s, f, p := r.s, r.f, r.p
	written := f.Written()
	got := f.Digest()
	if r.size >= 0 && written != r.size || !p.digest.IsZero() && got != p.digest {
		s.stats.Mismatches.Add(1)
		s.log.Error("bytes do not match the repository metadata; nothing stored",
			slog.String("url", p.url), slog.String("expected", p.digest.String()), slog.String("actual", got.String()),
			slog.Int64("expected_size", r.size), slog.Int64("size", written), slog.Any("peers", r.sources))
		if s.cfg.Peers != nil && len(r.sources) > 0 {
			s.cfg.Peers.Blame(r.sources)
		}
		err := fmt.Errorf("%w: %s: expected %s, got %s", cachestore.ErrDigestMismatch, p.url, p.digest, got)
		if r.size >= 0 && written != r.size {
			err = fmt.Errorf("%w: expected %d bytes from %s, got %d", cachestore.ErrSizeMismatch, r.size, p.url, written)
		}
		f.Abort(err)
		return false
	}
	// apt asks for the artifacts as soon as it has the index, and a client
	// that has the file may ask again at once.
	if r.parser != nil {
		s.recordFacts(p, got, r.parser.finish(), r.parser.facts)
	}
	if p.digest.IsZero() {
		c := cachestore.Cached{
			Digest: got, Size: written, ETag: r.meta["ETag"], LastModified: r.meta["Last-Modified"],
			ContentType: r.meta["Content-Type"], Fetched: s.now(),
		}
		if err := s.store.PutCached(p.url, c); err != nil {
			s.log.Warn("could not record a cached URL", slog.String("url", p.url), slog.Any("err", err))
		}
	}
	d, err := f.Commit(got, written)
	if err != nil {
		s.log.Error("could not store a fill", slog.String("url", p.url), slog.Any("err", err))
		return false
	}
	s.log.Debug("stored", slog.String("url", p.url), slog.String("digest", d.String()), slog.Int64("bytes", written))
	return true
}

func (s *Server) setUpstreamHeaders(req *http.Request, ua string) {
	if ua != "" {
		req.Header.Set("User-Agent", ua)
	}
	req.Header.Set("Via", s.via)
}

// passThrough answers the client straight from upstream, storing nothing:
// for HEAD on a miss and when the disk is full.
func (s *Server) passThrough(w *respWriter, r *http.Request, p plan, off int64) error {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, p.url, nil)
	if err != nil {
		return fmt.Errorf("build upstream request for %s: %w", p.url, err)
	}
	s.setUpstreamHeaders(req, r.Header.Get("User-Agent"))
	for _, k := range []string{"Range", "If-Range", "If-Modified-Since", "If-None-Match", "Accept"} {
		if v := r.Header.Get(k); v != "" {
			req.Header.Set(k, v)
		}
	}
	resp, err := s.up.Do(req)
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

// resumeFromUpstream continues a response whose fill failed for want of
// disk: the rest of the bytes, from off on, come straight from upstream.
func (s *Server) resumeFromUpstream(w *respWriter, r *http.Request, p plan, off, n int64) error {
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, p.url, nil)
	if err != nil {
		return fmt.Errorf("build upstream request for %s: %w", p.url, err)
	}
	s.setUpstreamHeaders(req, r.Header.Get("User-Agent"))
	req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
	resp, err := s.up.Do(req)
	if err != nil {
		return &upstreamFetchError{url: p.url, err: err}
	}
	defer resp.Body.Close()
	var body io.Reader = resp.Body
	switch resp.StatusCode {
	case http.StatusPartialContent:
	case http.StatusOK: // upstream ignores Range: skip what the client has
		if _, err := io.CopyN(io.Discard, resp.Body, off); err != nil {
			return &upstreamFetchError{url: p.url, err: err}
		}
	default:
		return &upstreamStatusError{code: resp.StatusCode, status: resp.Status, url: p.url}
	}
	if n >= 0 {
		body = io.LimitReader(body, n)
	}
	got, err := s.copyBuf(w, body)
	if err == nil && n >= 0 && got != n {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return &upstreamFetchError{url: p.url, err: err}
	}
	return nil
}
