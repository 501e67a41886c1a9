package proxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/debian"
	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/hub"
	"github.com/warren-cache/warren/rpm"
)

// serveCached serves a URL-cache entry; false when its blob is gone.
func (s *Server) serveCached(w *respWriter, r *http.Request, p door.Plan, c cachestore.Cached) bool {
	if p.Meta == door.MetaMirrors {
		return s.serveList(w, r, p, c, "HIT from warren")
	}
	return s.serveCopy(w, r, p, c, "HIT from warren")
}

// serveCopy serves the blob of a URL's copy; false when it is gone.
func (s *Server) serveCopy(w *respWriter, r *http.Request, p door.Plan, c cachestore.Cached, cache string) bool {
	f, bi, ok := s.door.OpenCached(p, c)
	if !ok {
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
	s.serveBlob(w, r, f.Content(), mod, c.ETag, ct, cache)
	return true
}

// serveList answers a list of mirrors with the site's view of it
// (door.SiteList: the mirrors in the order every machine of the site
// gets; a metalink's hashes as they came), or as it came when it makes
// no group; false when its blob is gone.
func (s *Server) serveList(w *respWriter, r *http.Request, p door.Plan, c cachestore.Cached, cache string) bool {
	body, ordered, err := s.door.SiteList(r.Context(), p, c)
	if err != nil {
		return false
	}
	h := w.Header()
	if ordered {
		// The site's order: a node of this hub keeps it, and trusts it.
		h.Set(door.HeaderMirrors, "site")
	}
	if body == nil {
		return s.serveCopy(w, r, p, c, cache)
	}
	ct := c.ContentType
	if ct == "" {
		ct = contentType(p)
	}
	sum := sha256.Sum256(body)
	h.Set("Content-Type", ct)
	h.Set("X-Cache", cache)
	h.Set("ETag", `"`+hex.EncodeToString(sum[:12])+`"`)
	if strings.HasPrefix(cache, "HIT") {
		w.source = &s.stats.BytesCache
		s.stats.Hits.Add(1)
	}
	mod, _ := http.ParseTime(c.LastModified)
	http.ServeContent(w, withRanges(r, int64(len(body))), "", mod, bytes.NewReader(body))
	return true
}

// serveListFill answers a list of mirrors once its fill is whole.
func (s *Server) serveListFill(w *respWriter, r *http.Request, fill *cachestore.Fill, p door.Plan) error {
	if _, err := fill.Result(r.Context()); err != nil {
		return err
	}
	s.stats.Misses.Add(1)
	have, err := s.door.Lookup(p)
	if err != nil {
		return err
	}
	if have.Cached == nil || !s.serveList(w, r, p, *have.Cached, "MISS from warren") {
		return door.ErrAlreadyStored // replaced or evicted meanwhile: the store again
	}
	return nil
}

// serveFile serves a stored blob with Range, HEAD and conditional requests;
// a blob's own *os.File takes the kernel's sendfile path, a small one's shared
// descriptor goes with sendfile behind a corked head (cork.go), or, on a
// connection not of Listen's, is read with pread.
func (s *Server) serveFile(w *respWriter, r *http.Request, f io.ReadSeeker, mod time.Time, etag, ctype string) {
	s.serveBlob(w, r, f, mod, etag, ctype, "HIT from warren")
}

// serveBlob is serveFile for a hit, or for a miss whose fill is whole
// (cache says which: its X-Cache).
func (s *Server) serveBlob(w *respWriter, r *http.Request, f io.ReadSeeker, mod time.Time, etag, ctype, cache string) {
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("X-Cache", cache)
	if etag != "" {
		h.Set("ETag", etag)
	}
	if strings.HasPrefix(cache, "HIT") {
		w.source = &s.stats.BytesCache
		s.stats.Hits.Add(1)
	}
	if r.Header.Get("Range") != "" {
		// Ranges as every path reads them (ranges.go).
		if size, err := f.Seek(0, io.SeekEnd); err == nil {
			if _, err := f.Seek(0, io.SeekStart); err == nil {
				r = withRanges(r, size)
			}
		}
	}
	if _, ok := f.(*os.File); ok {
		http.ServeContent(w, r, "", mod, f)
		return
	}
	// A small blob's shared descriptor. On a connection of Listen's, the
	// answer is corked: the head is held, and the body goes behind it
	// with sendfile from its offset (cork.go).
	if cc := connOf(r); cc != nil {
		cc.cork()
		hw := headFirst{w}
		defer func() {
			// A head flushed with its length and no body (HEAD) leaves
			// here. Another answer (an error, a 304) was not flushed:
			// net/http sends it once the handler returns, uncorked, as
			// flushing it now would make it chunk the body.
			_ = cc.uncork() // a failed write fails the connection's next one too
		}()
		http.ServeContent(hw, r, "", mod, f)
		return
	}
	// Elsewhere (a server of a test's): read with pread through Write, in
	// one piece. net/http's ReadFrom would send its first 512 bytes with
	// the headers, then read and send the rest: two writes and two reads.
	http.ServeContent(pooledWriter{w, s}, r, "", mod, f)
}

// headFirst flushes the answer's head as soon as it is written: into the
// corked connection, where it waits. net/http's ReadFrom then hands the
// whole body to the connection (sendCorked) instead of first reading 512
// bytes of it to sniff a type that is already set.
type headFirst struct{ *respWriter }

func (h headFirst) WriteHeader(code int) {
	// Only a head that says its length: flushed without one, as an
	// error's is, it would make net/http chunk the body.
	known := h.Header().Get("Content-Length") != ""
	h.respWriter.WriteHeader(code)
	if known {
		_ = http.NewResponseController(h.respWriter).Flush()
	}
}

// pooledWriter copies a small blob to the client through one of the
// server's buffers. Without a ReadFrom of its own, http.ServeContent's copy
// allocates a copy buffer for every hit (the body's size, up to 32 KB), and
// the garbage collection that follows was a third of the CPU of a small hit
// (a bare net/http server serving 20 KB from a file: 33 µs a request, 19 µs
// with a pooled buffer).
type pooledWriter struct {
	http.ResponseWriter
	s *Server
}

func (p pooledWriter) ReadFrom(r io.Reader) (int64, error) {
	return p.s.copyBuf(struct{ io.Writer }{p.ResponseWriter}, r)
}

// serveFill streams a fill to the client as it grows, from the client's
// Range offset when it asked for one. Until the first byte is written, an
// error is the caller's to answer; after it, the caller breaks the
// connection. hit says this request joined another's fill whose bytes were
// already whole and verified (being stored): served from this disk, like a
// hit. The leader's own request is a miss, however fast its fill was.
func (s *Server) serveFill(w *respWriter, r *http.Request, fill *cachestore.Fill, p door.Plan, leader bool) (hit bool, err error) {
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
	ranges, verdict := parseRanges(r.Header.Get("Range"), size)
	if !rangeOK {
		verdict = rangeWhole
	}
	if size >= 0 {
		h.Set("Accept-Ranges", "bytes")
	}
	switch {
	case verdict == rangeUnsatisfiable:
		h.Del("Content-Type")
		notSatisfiable(w, size)
		return hit, nil
	case verdict == rangeParts && len(ranges) > 1:
		return hit, s.serveFillRanges(w, r, fill, ranges, size)
	case verdict == rangeParts:
		off, n, status = ranges[0].start, ranges[0].length, http.StatusPartialContent
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, off+n-1, size))
	}
	if size >= 0 {
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
	// connection (which clients retry). A first chunk that small never
	// waits on the client (a new connection's send buffer takes it), so
	// the pooled buffer goes back at once.
	bp := s.fillBufs.Get().(*[]byte)
	first, err := io.ReadAtLeast(src, (*bp)[:firstChunk], 1)
	if err != nil && !errors.Is(err, io.EOF) {
		s.fillBufs.Put(bp)
		return hit, err
	}
	w.WriteHeader(status)
	_, err = w.Write((*bp)[:first])
	s.fillBufs.Put(bp)
	if err != nil {
		return hit, err
	}
	// Push the status line out now: were the connection cut while it still
	// sat in a buffer, the client would see no response and silently retry.
	if err := http.NewResponseController(w).Flush(); err != nil {
		return hit, err
	}
	rest, err := s.copyFill(w, rd, n-int64(first))
	if err == nil {
		return hit, nil
	}
	if door.IsNoSpace(err) {
		end := int64(-1)
		if n >= 0 {
			end = off + n
		}
		return hit, s.resumeUnstored(w, r, p, rd, off+int64(first)+rest, end)
	}
	return hit, err
}

// firstChunk is the most of a fill's bytes sent with the status;
// fillChunk the most sent through user space at once after them (a fill
// buffer's size). 16 KiB chunks take four writes where 64 KiB ones took
// one, only while a fill grows (once it is whole the rest goes with
// sendfile), and 480 slow readers of growing fills hold 7.5 MiB of them
// instead of 30 MiB.
const (
	firstChunk = 4 << 10
	fillChunk  = 16 << 10
)

// copyFill sends want bytes (-1: to the end) of a fill the client already
// has the first of: through Read while the fill grows, and once it is
// whole and verified, the rest straight from its file with sendfile. A
// follower of a peer's bytes (held until they verify) gets all of them at
// that moment: copied through user space, twenty such clients on one
// machine took 0.2-0.45 s for 20 MB each. A fill buffer is held only
// while bytes go through user space, never while waiting for them nor
// while sending a stored blob: 480 slow readers holding a 64 KiB buffer
// each took their daemon's peak RSS to 88-95 MB.
func (s *Server) copyFill(w io.Writer, rd *cachestore.FillReader, want int64) (int64, error) {
	var done int64
	for want < 0 || done < want {
		if want >= 0 {
			if f, ok := rd.Rest(); ok {
				m, err := io.Copy(w, io.LimitReader(f, want-done))
				if err == nil && m < want-done {
					err = fmt.Errorf("blob file ended %d bytes short of its size: %w", want-done-m, io.ErrUnexpectedEOF)
				}
				return done + m, err
			}
		}
		if err := rd.Wait(); err != nil {
			return done, err
		}
		m, err := s.copyChunk(w, rd, want-done)
		done += int64(m)
		if errors.Is(err, io.EOF) {
			if want < 0 {
				return done, nil
			}
			return done, fmt.Errorf("fill ended %d bytes short of its size: %w", want-done, io.ErrUnexpectedEOF)
		}
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// copyChunk reads what rd has (at most left bytes; left < 0: no bound)
// into a pooled fill buffer and writes it to w. The buffer is held while
// the client takes the bytes, which for a slow one is long: fill buffers
// are small (fillBufs) so that hundreds of them cost little.
func (s *Server) copyChunk(w io.Writer, rd io.Reader, left int64) (int, error) {
	bp := s.fillBufs.Get().(*[]byte)
	defer s.fillBufs.Put(bp)
	chunk := *bp
	if left >= 0 && left < int64(len(chunk)) {
		chunk = chunk[:left]
	}
	m, err := rd.Read(chunk)
	if m > 0 {
		if _, werr := w.Write(chunk[:m]); werr != nil {
			return 0, werr
		}
	}
	return m, err
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

func (s *Server) copyBuf(dst io.Writer, src io.Reader) (int64, error) {
	bp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(bp)
	return io.CopyBuffer(dst, src, *bp)
}

// fail answers an error that happened before any byte was written; after
// that it only logs, and serveCache breaks the connection.
// retryLater is an upstream's refusal for now (a feed's request budget
// spent): 503 with when to come back.
type retryLater interface {
	error
	RetryIn() time.Duration
}

func (s *Server) fail(w *respWriter, r *http.Request, p door.Plan, err error) {
	var (
		code = http.StatusInternalServerError
		msg  = err.Error()
		st   *door.UpstreamStatusError
		fe   *door.UpstreamFetchError
		de   *door.DestinationError
		re   *door.RedirectError
		be   retryLater
		he   *hub.RefusedError
	)
	switch {
	case r.Context().Err() != nil:
		s.log.Debug("client went away", slog.String("url", p.ShownURL()), slog.Any("err", err))
		return
	case errors.As(err, &de):
		code, msg = http.StatusForbidden, de.Error()
	case errors.As(err, &re):
		code, msg = http.StatusBadGateway, re.Error()
	case errors.Is(err, door.ErrShuttingDown):
		code = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", "5")
	case errors.As(err, &be):
		code, msg = http.StatusServiceUnavailable, be.Error()
		w.Header().Set("Retry-After", strconv.Itoa(int(max(be.RetryIn().Round(time.Second)/time.Second, 1))))
	case errors.As(err, &he) && he.Reason == hub.ReasonNotPreloaded:
		// Passed on as the hub said it: not an upstream failure.
		code = http.StatusNotFound
		w.Header().Set(hub.HeaderRefused, he.Reason)
	case errors.As(err, &st):
		code = st.Code
		for _, c := range st.Challenge {
			w.Header().Add("WWW-Authenticate", c)
		}
		// A loop stays a loop (508: the request came back to a warren);
		// other upstream failures are a bad gateway.
		if code >= 500 && code != http.StatusLoopDetected {
			code = http.StatusBadGateway
		}
	case errors.As(err, &fe):
		code = http.StatusBadGateway
		if fe.Timeout() {
			code = http.StatusGatewayTimeout
		}
	case errors.Is(err, cachestore.ErrDigestMismatch), errors.Is(err, cachestore.ErrSizeMismatch):
		code = http.StatusBadGateway
		msg = "upstream sent a file that does not match the repository metadata: " + msg
	}
	if s.cfg.HubOnly && len(s.cfg.Hubs) > 0 && code >= 500 && !strings.Contains(msg, "hub_only") {
		msg += " (hub_only is set: the origin is not asked directly; bring a hub back, or unset hub_only)"
	}
	if w.wrote {
		s.log.Error("transfer aborted", slog.String("url", p.ShownURL()), slog.Any("err", err))
		return
	}
	if code >= 500 {
		s.log.Warn("request failed", slog.String("url", p.ShownURL()), slog.Int("status", code), slog.Any("err", err))
	}
	http.Error(w, "warren: "+msg, code)
}

// serveFillRanges answers a request for several ranges of a fill (the
// chunks of a zchunk file librepo lacks) as net/http answers it on a hit:
// 206 multipart/byteranges, each part as the fill grows to it. The last
// byte is still held until the blob verifies. The status goes out with the
// first range's first byte, so that a fill failing before then is an error
// status, not a cut connection.
func (s *Server) serveFillRanges(w *respWriter, r *http.Request, fill *cachestore.Fill, ranges []byteRange, size int64) error {
	ctype := w.Header().Get("Content-Type")
	mw := multipart.NewWriter(w)
	w.Header().Set("Content-Type", "multipart/byteranges; boundary="+mw.Boundary())
	w.Header().Del("Content-Length") // chunked: the parts' headers are not counted ahead
	rd, err := fill.NewReader(r.Context(), ranges[0].start)
	if err != nil {
		return err
	}
	bp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(bp)
	buf := *bp
	if r.Method == http.MethodHead {
		rd.Close()
		w.WriteHeader(http.StatusPartialContent)
		return nil
	}
	first, err := io.ReadAtLeast(rd, buf[:min(int64(len(buf)), ranges[0].length)], 1)
	if err != nil && !errors.Is(err, io.EOF) {
		rd.Close()
		return err
	}
	w.WriteHeader(http.StatusPartialContent)
	for i, rg := range ranges {
		part, err := mw.CreatePart(textproto.MIMEHeader{
			"Content-Type":  {ctype},
			"Content-Range": {fmt.Sprintf("bytes %d-%d/%d", rg.start, rg.start+rg.length-1, size)},
		})
		if err != nil {
			rd.Close()
			return err
		}
		want := rg.length
		if i == 0 {
			if _, err := part.Write(buf[:first]); err != nil {
				rd.Close()
				return err
			}
			want -= int64(first)
		} else if rd, err = fill.NewReader(r.Context(), rg.start); err != nil {
			return err
		}
		n, err := io.CopyBuffer(part, io.LimitReader(rd, want), buf)
		rd.Close()
		if err == nil && n < want {
			err = fmt.Errorf("fill ended %d bytes short of range %d: %w", want-n, i, io.ErrUnexpectedEOF)
		}
		if err != nil {
			return err
		}
	}
	return mw.Close()
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

// contentType is what a stored file is served as when upstream said nothing.
func contentType(p door.Plan) string {
	switch {
	case p.Kind == debian.KindPackage.String():
		return "application/vnd.debian.binary-package"
	case p.Kind == rpm.KindPackage.String():
		return "application/x-rpm"
	case strings.HasSuffix(p.URL, ".gz"):
		return "application/gzip"
	case strings.HasSuffix(p.URL, ".xz"):
		return "application/x-xz"
	case strings.HasSuffix(p.URL, ".xml"):
		return "text/xml"
	case p.Kind != "other":
		return "text/plain; charset=utf-8"
	}
	return "application/octet-stream"
}
