package proxy

import (
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/fill"
)

// Serving without the store: when the disk has no room for a fill, the
// client is still served, through the same engine and the same origin
// source, into the response instead of a file. The promise holds on this
// path too: the bytes are hashed as they pass and the client's last byte
// is held back until the whole blob verifies; a mismatch cuts the
// connection, so no client completes a wrong file.

// sentPart is what a client already got of a response whose fill then ran
// out of disk: the blob's bytes before at (read back from the fill's open
// file, to be hashed) and the end of its window (-1: the blob's end).
type sentPart struct {
	before io.Reader
	at     int64
	end    int64
}

// serveUnstored serves p's artifact (or URL-keyed file) straight from the
// origin, storing nothing. sent is nil for a fresh response, or says where
// a response cut short by a full disk stands.
func (s *Server) serveUnstored(w *respWriter, r *http.Request, p door.Plan, sent *sentPart) error {
	df := &directFill{w: w, algo: p.Digest.Algo}
	if df.algo == "" {
		df.algo = "sha256"
	}
	df.h = cachestore.Digest{Algo: df.algo}.NewHash()
	if sent != nil {
		n, err := io.Copy(df.h, sent.before)
		if err != nil {
			return fmt.Errorf("read back the bytes sent of %s: %w", p.URL, err)
		}
		df.written, df.from, df.end, df.sent = n, sent.at, sent.end, true
	} else {
		df.head = func(size int64) {
			s.unstoredHeaders(w, r, p, size, df)
		}
	}
	return s.door.Drive(r.Context(), df, p, door.AskerOf(r))
}

// unstoredHeaders sets a fresh unstored response's headers once the
// blob's size is known (-1: unknown), and its window: the client's Range,
// or the whole blob.
func (s *Server) unstoredHeaders(w *respWriter, r *http.Request, p door.Plan, size int64, df *directFill) {
	h := w.Header()
	h.Set("Content-Type", contentType(p))
	h.Set("X-Cache", "MISS from warren (not stored)")
	df.from, df.end, df.status = 0, -1, http.StatusOK
	if size < 0 {
		return
	}
	h.Set("Accept-Ranges", "bytes")
	n := size
	// One range at most: a multi-range answer needs the ranges in the
	// order asked, which a stream from the origin does not give.
	if ranges, verdict := parseRanges(r.Header.Get("Range"), size); verdict == rangeParts && len(ranges) == 1 {
		start, length := ranges[0].start, ranges[0].length
		df.from, n, df.status = start, length, http.StatusPartialContent
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, start+length-1, size))
	}
	df.end = df.from + n
	h.Set("Content-Length", strconv.FormatInt(n, 10))
}

// directFill is a fill.Filler that writes the window [from, end) of the
// blob to one client instead of a file, hashing every byte of the blob,
// and holds the client's last byte until Commit has verified the whole.
type directFill struct {
	w       *respWriter
	head    func(size int64) // sets headers and the window; nil when they are out
	status  int              // sent with the first byte; 0 once out
	algo    string
	h       hash.Hash
	written int64 // bytes of the blob hashed
	from    int64
	end     int64  // -1: to the blob's end
	last    []byte // the client's held-back byte, once there is one
	sent    bool   // the client has bytes of this response
	held    bool
}

var _ fill.Filler = (*directFill)(nil)

func (d *directFill) Start(info cachestore.FillInfo) error {
	if d.head != nil {
		d.head(info.Size)
		d.head = nil
	}
	return nil
}

// errNoHold: with no file to keep them in, a source whose bytes must wait
// for verification (a LAN peer) cannot feed a client directly.
var errNoHold = errors.New("bytes that must be held until verified cannot be served without the store")

func (d *directFill) Hold() { d.held = true }

func (d *directFill) Write(p []byte) (int, error) {
	if d.held {
		return 0, errNoHold
	}
	base := d.written
	d.h.Write(p)
	d.written += int64(len(p))
	lo, hi := max(d.from, base), d.written
	if d.end >= 0 {
		hi = min(hi, d.end)
	}
	if lo >= hi {
		return len(p), nil
	}
	seg := p[lo-base : hi-base]
	// The byte held so far goes out, and the new last one is held.
	if err := d.out(d.last); err != nil {
		return 0, err
	}
	if err := d.out(seg[:len(seg)-1]); err != nil {
		return 0, err
	}
	d.last = append(d.last[:0], seg[len(seg)-1])
	return len(p), nil
}

func (d *directFill) out(b []byte) error {
	if d.status != 0 {
		d.w.WriteHeader(d.status)
		d.status = 0
	}
	if len(b) == 0 {
		return nil
	}
	d.sent = true
	if _, err := d.w.Write(b); err != nil {
		return fmt.Errorf("write to the client: %w", err)
	}
	return nil
}

func (d *directFill) Written() int64 { return d.written }

func (d *directFill) Digest() cachestore.Digest {
	return cachestore.Digest{Algo: d.algo, Hex: hex.EncodeToString(d.h.Sum(nil))}
}

// Restart can begin again only while the client has nothing: bytes it has
// cannot be taken back.
func (d *directFill) Restart() error {
	if d.sent {
		return fmt.Errorf("%w: bytes already sent to the client are of a blob that failed verification; the connection is cut", cachestore.ErrDigestMismatch)
	}
	d.h.Reset()
	d.written, d.last, d.held = 0, nil, false
	return nil
}

// Commit releases the held byte once the whole blob verifies.
func (d *directFill) Commit(want cachestore.Digest, size int64) (cachestore.Digest, error) {
	if size >= 0 && d.written != size {
		return cachestore.Digest{}, fmt.Errorf("%w: expected %d bytes, got %d", cachestore.ErrSizeMismatch, size, d.written)
	}
	got := d.Digest()
	if want.Hex != "" && got != want {
		return cachestore.Digest{}, fmt.Errorf("%w: expected %s, got %s", cachestore.ErrDigestMismatch, want, got)
	}
	if err := d.out(d.last); err != nil {
		return cachestore.Digest{}, err
	}
	d.last = nil
	return got, nil
}

func (d *directFill) Abort(error) {}

// resumeUnstored goes on with a response whose fill ran out of disk after
// the client got bytes up to at: the rest comes from the origin, verified
// with the bytes before it.
func (s *Server) resumeUnstored(w *respWriter, r *http.Request, p door.Plan, rd *cachestore.FillReader, at, end int64) error {
	before, err := rd.Before(at)
	if err != nil {
		return err
	}
	s.log.Warn("cache disk filled up during a fill; continuing this client from upstream without storing",
		slog.String("url", p.ShownURL()), slog.Int64("offset", at))
	return s.serveUnstored(w, r, p, &sentPart{before: before, at: at, end: end})
}
