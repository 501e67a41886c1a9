package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/debian"
	"github.com/warren-cache/warren/rpm"
)

// plan is what the URL says about how to serve it.
type plan struct {
	url  string // upstream URL, as the client spelt it
	key  string // the canonical form of url: its key in the index
	kind string // what the ecosystem calls it, for the log
	// passThrough: never cache (mirror lists, metalinks).
	passThrough bool
	// digest is set when metadata (or the by-hash path) says what the bytes
	// must hash to: the blob is filled by digest and verified.
	digest cachestore.Digest
	size   int64 // -1 when unknown
	// meta is the metadata to parse as the bytes pass (metaRelease,
	// metaPackages, ...); metaName is its name as the repository knows it (which
	// says its compression).
	meta     string
	metaName string
}

const (
	metaRelease  = "release"
	metaPackages = "packages"
	metaSources  = "sources"
	metaRepomd   = "repomd"
	metaPrimary  = "primary"
)

// serveCache serves a GET or HEAD for target: the whole story of a request.
func (s *Server) serveCache(w http.ResponseWriter, r *http.Request, target *url.URL) {
	s.servePlan(w, r, s.plan(r.Context(), target))
}

// servePlan serves a request as p says, answers errors and logs it once.
func (s *Server) servePlan(w http.ResponseWriter, r *http.Request, p plan) {
	start := s.now()
	rw := &respWriter{ResponseWriter: w}
	outcome, err := s.serve(rw, r, p)
	midBody := rw.wrote
	if err != nil {
		outcome = "error"
		s.stats.Errors.Add(1)
		s.fail(rw, r, p, err)
	}
	s.requestsBy.WithLabelValues(outcome).Inc()
	s.log.Info("request",
		slog.String("method", r.Method), slog.String("url", p.url), slog.String("kind", p.kind),
		slog.Bool("hash_known", !p.digest.IsZero()), slog.String("outcome", outcome), slog.Int("status", rw.status), slog.Int64("bytes", rw.bytes),
		slog.Duration("took", s.now().Sub(start)), slog.String("client", r.RemoteAddr))
	if err != nil && midBody {
		// Headers and part of the body are out: the only honest thing left
		// is to break the connection, so the client never takes a short or
		// wrong file for a whole one.
		panic(http.ErrAbortHandler)
	}
}

func (s *Server) plan(ctx context.Context, u *url.URL) plan {
	p := plan{url: u.String(), key: canonicalURL(u), kind: "other", size: -1}
	if k := debian.Classify(u.Path); k != debian.KindOther {
		s.planDebian(ctx, &p, u, k)
	} else if k := rpm.Classify(u.Host, u.Path); k != rpm.KindOther {
		s.planRPM(ctx, &p, u, k)
	}
	return p
}

func (s *Server) planDebian(ctx context.Context, p *plan, u *url.URL, k debian.Kind) {
	p.kind = k.String()
	switch k {
	case debian.KindByHash:
		p.digest = cachestore.Digest{Algo: "sha256", Hex: debian.ByHashDigest(u.Path)}
		s.learning.wait(ctx, p.key, nil)
		if known, err := s.store.Known(p.key); err == nil && known.Digest == p.digest {
			p.size = known.Size
			p.meta, p.metaName = debianIndexMeta(known.Name), known.Name
		}
	case debian.KindPackage, debian.KindSource:
		s.useKnown(ctx, p)
	case debian.KindRelease:
		p.meta, p.metaName = metaRelease, path.Base(u.Path)
	case debian.KindIndex:
		p.meta, p.metaName = debianIndexMeta(u.Path), path.Base(u.Path)
	}
}

// debianIndexMeta says which parser an index file needs: metaPackages or
// metaSources, or "" for one that names no artifacts (Translation, ...).
func debianIndexMeta(name string) string {
	switch {
	case debian.IsPackagesIndex(name):
		return metaPackages
	case debian.IsSourcesIndex(name):
		return metaSources
	}
	return ""
}

func (s *Server) planRPM(ctx context.Context, p *plan, u *url.URL, k rpm.Kind) {
	p.kind = k.String()
	switch k {
	case rpm.KindPackage:
		s.useKnown(ctx, p)
	case rpm.KindRepomd:
		p.meta, p.metaName = metaRepomd, path.Base(u.Path)
	case rpm.KindMetadata:
		// Named by their checksum, listed in repomd.xml: immutable once known.
		s.useKnown(ctx, p)
		if rpm.IsPrimary(u.Path) {
			p.meta, p.metaName = metaPrimary, path.Base(u.Path)
		}
	case rpm.KindMirrorList:
		p.passThrough = true
	}
}

// useKnown takes the digest metadata recorded for the URL, if any, after
// any learn in progress of the URL's repository.
func (s *Server) useKnown(ctx context.Context, p *plan) {
	s.learning.wait(ctx, p.key, nil)
	if k, err := s.store.Known(p.key); err == nil {
		p.digest, p.size = k.Digest, k.Size
	}
}

// serve returns the outcome for the log, or an error for fail to answer.
func (s *Server) serve(w *respWriter, r *http.Request, p plan) (string, error) {
	if p.passThrough {
		return "pass", s.passThrough(w, r, p, 0)
	}
	if !p.digest.IsZero() {
		return s.serveDigest(w, r, p)
	}
	return s.serveURL(w, r, p)
}

// serveDigest serves an artifact whose digest is known: from the store, or
// through the one fill for that digest, verified before its last byte.
func (s *Server) serveDigest(w *respWriter, r *http.Request, p plan) (string, error) {
	for {
		f, bi, err := s.store.OpenBlob(p.digest)
		if err == nil {
			defer f.Close()
			s.serveFile(w, r, f.File, bi.Added, "", contentType(p))
			return "hit", nil
		}
		if !errors.Is(err, cachestore.ErrNotFound) {
			return "", err
		}
		if r.Method == http.MethodHead {
			return "pass", s.passThrough(w, r, p, 0)
		}
		if s.negative(p.key) {
			return "negative", &upstreamStatusError{code: http.StatusNotFound, status: "404 Not Found (remembered)", url: p.url}
		}
		fill, leader := s.store.BeginFill(cachestore.FillKey(p.digest))
		if leader {
			s.startFill(fill, r, p, nil)
		}
		hit, err := s.serveFill(w, r, fill, p, leader)
		if errors.Is(err, errAlreadyStored) {
			continue // another flight stored it between our look and our fill
		}
		if isNoSpace(err) && !w.wrote {
			s.log.Warn("cache disk full; serving from upstream without storing, verified as it passes", slog.String("url", p.url), slog.Any("err", err))
			return "pass", s.serveUnstored(w, r, p, nil)
		}
		return missOrHit(hit), err
	}
}

// serveURL serves a file cached by URL (index files, and anything whose
// hash no metadata gave): fresh copies from the store, otherwise one
// revalidating flight per URL; the last good copy when upstream is down.
func (s *Server) serveURL(w *respWriter, r *http.Request, p plan) (string, error) {
	for tries := 0; ; tries++ {
		c, err := s.store.Cached(p.key)
		have := err == nil
		if err != nil && !errors.Is(err, cachestore.ErrNotFound) {
			return "", err
		}
		if have && s.now().Sub(c.Fetched) < s.cfg.IndexTTL {
			if ok := s.serveCached(w, r, p, c); ok {
				return "hit", nil
			}
			have = false
		}
		if r.Method == http.MethodHead && !have {
			return "pass", s.passThrough(w, r, p, 0)
		}
		if s.negative(p.key) {
			return "negative", &upstreamStatusError{code: http.StatusNotFound, status: "404 Not Found (remembered)", url: p.url}
		}
		fill, leader := s.store.BeginFill("url:" + p.key)
		if leader {
			var prev *cachestore.Cached
			if have {
				prev = &c
			}
			s.startFill(fill, r, p, prev)
		}
		hit, err := s.serveFill(w, r, fill, p, leader)
		switch {
		case err == nil:
			return missOrHit(hit), nil
		case errors.Is(err, errNotModified):
			if c, cerr := s.store.Cached(p.key); cerr == nil && s.serveCached(w, r, p, c) {
				return "revalidated", nil
			}
			if tries == 0 {
				// The copy went (evicted) between upstream's 304 and now:
				// fetch it again, without validators.
				continue
			}
			return "", fmt.Errorf("serve %s: the revalidated copy was evicted twice in a row; try again", p.url)
		case have && !w.wrote && isUpstreamDown(err):
			s.log.Warn("upstream unavailable; serving the last good copy (offline mode)",
				slog.String("url", p.url), slog.Time("fetched", c.Fetched), slog.Any("err", err))
			if s.serveCached(w, r, p, c) {
				return "stale", nil
			}
			return "", err
		case isNoSpace(err) && !w.wrote:
			s.log.Warn("cache disk full; passing through without storing", slog.String("url", p.url), slog.Any("err", err))
			return "pass", s.passThrough(w, r, p, 0)
		}
		return "miss", err
	}
}

// serveCached serves a URL-cache entry; false when its blob is gone.
func (s *Server) serveCached(w *respWriter, r *http.Request, p plan, c cachestore.Cached) bool {
	f, bi, err := s.store.OpenBlob(c.Digest)
	if err != nil {
		return false
	}
	defer f.Close()
	mod := bi.Added
	if t, err := http.ParseTime(c.LastModified); err == nil {
		mod = t
	}
	ct := c.ContentType
	if ct == "" {
		ct = contentType(p)
	}
	s.serveFile(w, r, f.File, mod, c.ETag, ct)
	return true
}

// serveFile serves a stored blob with Range, HEAD and conditional requests;
// http.ServeContent on an *os.File takes the kernel's sendfile path.
func (s *Server) serveFile(w *respWriter, r *http.Request, f *os.File, mod time.Time, etag, ctype string) {
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("X-Cache", "HIT from warren")
	if etag != "" {
		h.Set("ETag", etag)
	}
	w.source = &s.stats.BytesCache
	s.stats.Hits.Add(1)
	http.ServeContent(w, r, "", mod, f)
}

func missOrHit(hit bool) string {
	if hit {
		return "hit"
	}
	return "miss"
}

// serveFill streams a fill to the client as it grows, from the client's
// Range offset when it asked for one. Until the first byte is written, an
// error is the caller's to answer; after it, the caller breaks the
// connection. hit says this request joined another's fill whose bytes were
// already whole and verified (being stored): served from this disk, like a
// hit. The leader's own request is a miss, however fast its fill was.
func (s *Server) serveFill(w *respWriter, r *http.Request, fill *cachestore.Fill, p plan, leader bool) (hit bool, err error) {
	info, err := fill.WaitData(r.Context())
	if err != nil {
		return false, err
	}
	hit = !leader && fill.Verified()
	if hit {
		s.stats.Hits.Add(1)
		w.source = &s.stats.BytesCache
		fill.CountUse()
	} else {
		s.stats.Misses.Add(1)
	}
	size := info.Size
	h := w.Header()
	for _, k := range []string{"Content-Type", "Last-Modified", "ETag"} {
		if v := info.Meta[k]; v != "" {
			h.Set(k, v)
		}
	}
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", contentType(p))
	}
	if hit {
		h.Set("X-Cache", "HIT from warren")
	} else {
		h.Set("X-Cache", "MISS from warren")
	}
	notModified, rangeOK := conditional(r, h.Get("ETag"), h.Get("Last-Modified"))
	if notModified {
		// As http.ServeContent answers a hit.
		h.Del("Content-Type")
		w.WriteHeader(http.StatusNotModified)
		return hit, nil
	}
	off, n, status := int64(0), size, http.StatusOK
	if size >= 0 {
		h.Set("Accept-Ranges", "bytes")
		if start, length, ok := parseRange(r.Header.Get("Range"), size); ok && rangeOK {
			off, n, status = start, length, http.StatusPartialContent
			h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, start+length-1, size))
		}
		h.Set("Content-Length", strconv.FormatInt(n, 10))
	}
	rd, err := fill.NewReader(r.Context(), off)
	if err != nil {
		return hit, err
	}
	defer rd.Close()
	if r.Method == http.MethodHead {
		w.WriteHeader(status)
		return hit, nil
	}
	var src io.Reader = rd
	if n >= 0 {
		src = io.LimitReader(rd, n)
	}
	// The status goes out with the first bytes, not before: a fill that
	// fails before then gets a proper error status instead of a cut
	// connection (which clients retry).
	bp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(bp)
	first, err := io.ReadAtLeast(src, *bp, 1)
	if err != nil && !errors.Is(err, io.EOF) {
		return hit, err
	}
	w.WriteHeader(status)
	if _, err := w.Write((*bp)[:first]); err != nil {
		return hit, err
	}
	// Push the status line out now: were the connection cut while it still
	// sat in a buffer, the client would see no response and silently retry.
	if err := http.NewResponseController(w).Flush(); err != nil {
		return hit, err
	}
	rest, err := io.CopyBuffer(w, src, *bp)
	if err == nil {
		return hit, nil
	}
	if isNoSpace(err) {
		end := int64(-1)
		if n >= 0 {
			end = off + n
		}
		return hit, s.resumeUnstored(w, r, p, rd, off+int64(first)+rest, end)
	}
	return hit, err
}

// conditional reads a request's validators against a response's ETag
// and Last-Modified the way http.ServeContent does for hits, so that a
// miss answers the same: notModified for a matching If-None-Match (or,
// without one, an If-Modified-Since not older than the file); rangeOK
// false when an If-Range names another version (the whole file is sent).
func conditional(r *http.Request, etag, lastModified string) (notModified, rangeOK bool) {
	mod, modErr := http.ParseTime(lastModified)
	if inm := r.Header.Get("If-None-Match"); inm != "" {
		notModified = etag != "" && (strings.TrimSpace(inm) == "*" || slices.ContainsFunc(strings.Split(inm, ","), func(t string) bool {
			return weakTag(t) == weakTag(etag)
		}))
	} else if ims, err := http.ParseTime(r.Header.Get("If-Modified-Since")); err == nil && modErr == nil {
		notModified = !mod.Truncate(time.Second).After(ims)
	}
	rangeOK = true
	if ir := strings.TrimSpace(r.Header.Get("If-Range")); ir != "" {
		if strings.HasPrefix(ir, `"`) || strings.HasPrefix(ir, "W/") {
			// Strong comparison: a weak tag never matches.
			rangeOK = !strings.HasPrefix(ir, "W/") && !strings.HasPrefix(etag, "W/") && ir == etag
		} else {
			t, err := http.ParseTime(ir)
			rangeOK = err == nil && modErr == nil && t.Equal(mod)
		}
	}
	return notModified, rangeOK
}

func weakTag(t string) string { return strings.TrimPrefix(strings.TrimSpace(t), "W/") }

func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, cachestore.ErrNoSpace)
}

func (s *Server) copyBuf(dst io.Writer, src io.Reader) (int64, error) {
	bp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(bp)
	return io.CopyBuffer(dst, src, *bp)
}

// fail answers an error that happened before any byte was written; after
// that it only logs, and serveCache breaks the connection.
func (s *Server) fail(w *respWriter, r *http.Request, p plan, err error) {
	var (
		code = http.StatusInternalServerError
		msg  = err.Error()
		st   *upstreamStatusError
		fe   *upstreamFetchError
		de   *DestinationError
		be   *BudgetError
	)
	switch {
	case r.Context().Err() != nil:
		s.log.Debug("client went away", slog.String("url", p.url), slog.Any("err", err))
		return
	case errors.As(err, &de):
		code, msg = http.StatusForbidden, de.Error()
	case errors.Is(err, errShuttingDown):
		code = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", "5")
	case errors.As(err, &be):
		code, msg = http.StatusServiceUnavailable, be.Error()
		w.Header().Set("Retry-After", strconv.Itoa(int(max(be.RetryAfter.Round(time.Second)/time.Second, 1))))
	case errors.As(err, &st):
		code = st.code
		// A loop stays a loop (508: the request came back to a warren);
		// other upstream failures are a bad gateway.
		if code >= 500 && code != http.StatusLoopDetected {
			code = http.StatusBadGateway
		}
	case errors.As(err, &fe):
		code = http.StatusBadGateway
		if fe.timeout() {
			code = http.StatusGatewayTimeout
		}
	case errors.Is(err, cachestore.ErrDigestMismatch), errors.Is(err, cachestore.ErrSizeMismatch):
		code = http.StatusBadGateway
		msg = "upstream sent a file that does not match the repository metadata: " + msg
	}
	if w.wrote {
		s.log.Error("transfer aborted", slog.String("url", p.url), slog.Any("err", err))
		return
	}
	if code >= 500 {
		s.log.Warn("request failed", slog.String("url", p.url), slog.Int("status", code), slog.Any("err", err))
	}
	http.Error(w, "warren: "+msg, code)
}

func contentType(p plan) string {
	switch {
	case p.kind == debian.KindPackage.String():
		return "application/vnd.debian.binary-package"
	case p.kind == rpm.KindPackage.String():
		return "application/x-rpm"
	case strings.HasSuffix(p.url, ".gz"):
		return "application/gzip"
	case strings.HasSuffix(p.url, ".xz"):
		return "application/x-xz"
	case strings.HasSuffix(p.url, ".xml"):
		return "text/xml"
	case p.kind != "other":
		return "text/plain; charset=utf-8"
	}
	return "application/octet-stream"
}

// parseRange understands one byte range ("bytes=a-b", "bytes=a-",
// "bytes=-n"). Anything else is ignored and the whole file is sent, as
// RFC 9110 allows.
func parseRange(h string, size int64) (start, length int64, ok bool) {
	spec, found := strings.CutPrefix(h, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	a, b, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false
	}
	if a == "" {
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n <= 0 {
			return 0, 0, false
		}
		n = min(n, size)
		return size - n, n, n > 0
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil || start < 0 || start >= size {
		return 0, 0, false
	}
	end := size - 1
	if b != "" {
		e, err := strconv.ParseInt(b, 10, 64)
		if err != nil || e < start {
			return 0, 0, false
		}
		end = min(e, size-1)
	}
	return start, end - start + 1, true
}

// respWriter remembers what went out, and keeps io.ReaderFrom so that
// ServeContent's copy from an *os.File still becomes sendfile.
type respWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
	wrote  bool
	source interface{ Add(int64) int64 } // which byte counter this response feeds
}

func (w *respWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *respWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(b)
	w.count(int64(n))
	return n, err
}

func (w *respWriter) ReadFrom(r io.Reader) (int64, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(struct{ io.Writer }{w.ResponseWriter}, r)
	}
	w.count(n)
	return n, err
}

func (w *respWriter) count(n int64) {
	w.bytes += n
	if w.source != nil {
		w.source.Add(n)
	}
}

func (w *respWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
