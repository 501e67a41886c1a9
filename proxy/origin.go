package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/fill"
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
	if errors.As(err, &de) {
		return false // not down: refused, and a copy from before is not served either
	}
	return errors.As(err, &fe) || errors.As(err, &st) && st.code >= 500
}

// originSource is the upstream mirror as a fill source: the first Open
// revalidates a URL-cached copy (304 ends the fill), later ones resume
// with Range after what is written.
type originSource struct {
	s      *Server
	p      plan
	ua     string
	prev   *cachestore.Cached
	tries  int
	blamed bool
}

// originTries bounds the transfers of one fill from the origin: a body
// that breaks off is resumed, but not forever.
const originTries = 3

func (o *originSource) Open(ctx context.Context, off int64) (*fill.Stream, error) {
	s, p := o.s, o.p
	if o.blamed {
		return nil, fmt.Errorf("%w: the origin sent wrong bytes", fill.ErrSkip)
	}
	if o.tries >= originTries {
		return nil, fmt.Errorf("%w: %d transfers from the origin broke off", fill.ErrSkip, o.tries)
	}
	o.tries++
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return nil, fill.Stop(fmt.Errorf("build upstream request for %s: %w", p.url, err))
	}
	s.setUpstreamHeaders(req, o.ua)
	if off == 0 && o.prev != nil && o.tries == 1 {
		if o.prev.ETag != "" {
			req.Header.Set("If-None-Match", o.prev.ETag)
		}
		if o.prev.LastModified != "" {
			req.Header.Set("If-Modified-Since", o.prev.LastModified)
		}
	}
	resp, size, err := fill.GetAt(s.up, req, off)
	if err != nil {
		var de *DestinationError
		if errors.As(err, &de) {
			return nil, fill.Stop(de) // no retry, no other source: refused
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
			slog.String("url", p.url), slog.Int64("expected", p.size), slog.Int64("upstream", size))
		return nil, fill.Stop(fmt.Errorf("%w: metadata says %d bytes, upstream sends %d for %s", cachestore.ErrSizeMismatch, p.size, size, p.url))
	}
	meta := map[string]string{}
	for _, k := range []string{"Content-Type", "Last-Modified", "ETag"} {
		if v := resp.Header.Get(k); v != "" {
			meta[k] = v
		}
	}
	return &fill.Stream{
		Body: resp.Body, From: "origin " + req.URL.Host, Size: size, Meta: meta,
		Received: func(n int64) { s.stats.BytesFetched.Add(n) },
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
	}, nil
}

func (s *Server) setUpstreamHeaders(req *http.Request, ua string) {
	if ua != "" {
		req.Header.Set("User-Agent", ua)
	}
	req.Header.Set("Via", s.via)
}

// passThrough answers the client straight from upstream, storing nothing:
// for HEAD on a miss and when the disk is full.
func (s *Server) passThrough(w *respWriter, r *http.Request, p plan) error {
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
