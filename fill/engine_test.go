package fill

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/warren-cache/warren/cachestore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// httpSource is a real HTTP server as a source: each Open is one GET with
// Range; after blame it offers nothing more.
type httpSource struct {
	url  string
	name string
	hold bool // peer-like: its bytes wait for verification
	// minRate: the average it must keep (a peer that holds the blob).
	minRate int64
	mu      sync.Mutex
	blamed  []error
	opens   int
	max     int // opens allowed (default 1)
}

func (h *httpSource) Open(ctx context.Context, off int64) (*Stream, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.blamed) > 0 || h.opens >= max(h.max, 1) {
		return nil, fmt.Errorf("%w: %s is done", ErrSkip, h.name)
	}
	h.opens++
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.url, nil)
	if off > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	size := resp.ContentLength
	if resp.StatusCode == http.StatusPartialContent {
		size = -1
	}
	return &Stream{Body: resp.Body, From: h.name, Size: size, Hold: h.hold, MinRate: h.minRate, Blame: func(reason error) {
		h.mu.Lock()
		h.blamed = append(h.blamed, reason)
		h.mu.Unlock()
	}}, nil
}

func (h *httpSource) blame() []error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.blamed
}

// serve starts a server whose handler writes the body it is given.
func serve(t *testing.T, h http.HandlerFunc) string {
	srv := httptest.NewServer(h)
	t.Cleanup(func() { srv.CloseClientConnections(); srv.Close(); http.DefaultClient.CloseIdleConnections() })
	return srv.URL
}

func blob(n int, seed byte) ([]byte, cachestore.Digest) {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed
	}
	sum := sha256.Sum256(b)
	return b, cachestore.Digest{Algo: "sha256", Hex: hex.EncodeToString(sum[:])}
}

func openStore(t *testing.T) *cachestore.Store {
	s, err := cachestore.Open(cachestore.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// clientRead is what a client following a fill from its start received.
type clientRead struct {
	body []byte
	err  error
}

// run fills d from the sources and returns the stored bytes; client gets
// what a client that followed the fill from the start received.
func runFill(t *testing.T, e *Engine, s *cachestore.Store, want Want, sources ...Source) ([]byte, Result, error) {
	t.Helper()
	got, res, _, err := runFillWithClient(t, e, s, want, sources...)
	return got, res, err
}

func runFillWithClient(t *testing.T, e *Engine, s *cachestore.Store, want Want, sources ...Source) ([]byte, Result, <-chan clientRead, error) {
	t.Helper()
	f, leader := s.BeginFill(cachestore.FillKey(want.Digest))
	if !leader {
		t.Fatal("not the leader")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	client := make(chan clientRead, 1)
	go func() {
		rd, err := f.NewReader(t.Context(), 0)
		if err != nil {
			client <- clientRead{err: err}
			return
		}
		defer rd.Close()
		b, err := io.ReadAll(rd)
		client <- clientRead{b, err}
	}()
	res, err := e.Run(ctx, f, want, sources)
	if err != nil {
		return nil, res, client, err
	}
	b, _, err := s.OpenBlob(res.Digest)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got, _ := io.ReadAll(b)
	return got, res, client, nil
}

// Each hostile peer: the fill still ends with the exact blob, from the next
// source, the peer is blamed for what it did, and a client that followed
// the fill from the start got exactly the blob: a peer's bytes are held
// until they verify, so a wrong one never reaches it.
func TestHostileSourceThenGood(t *testing.T) {
	body, d := blob(300<<10, 1)
	wrong, _ := blob(300<<10, 2)
	good := serve(t, func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	})
	tests := []struct {
		name    string
		handler http.HandlerFunc
		blame   error // what the hostile source must be blamed for
	}{
		{"too many bytes", func(w http.ResponseWriter, r *http.Request) {
			// The right bytes, then more: cut at the size; what was
			// taken verifies, so the fill commits without the next source.
			w.Write(body)
			w.Write([]byte("and more"))
		}, ErrTooMany},
		{"a body larger than the size, wrong", func(w http.ResponseWriter, r *http.Request) {
			w.Write(wrong)
			w.Write(make([]byte, 1<<20))
		}, cachestore.ErrDigestMismatch},
		{"wrong bytes", func(w http.ResponseWriter, r *http.Request) {
			w.Write(wrong)
		}, cachestore.ErrDigestMismatch},
		{"trickle", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			for i := 0; i < len(body); i++ {
				if _, err := w.Write(body[i : i+1]); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}, ErrStalled},
		{"stall after the headers", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.Write(body[:1000])
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}, ErrStalled},
		// Wrong bytes just above the stall rule (40 KiB a period against
		// 32 KiB): a holder must average its MinRate, so it is cut at the
		// first period instead of holding the fill to its end.
		{"steady just above the stall rule", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(wrong)))
			for off := 0; off < len(wrong); off += 40 << 10 {
				if _, err := w.Write(wrong[off:min(off+40<<10, len(wrong))]); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(200 * time.Millisecond):
				}
			}
		}, ErrStalled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			e := New(Config{StallTimeout: 200 * time.Millisecond})
			bad := &httpSource{url: serve(t, tt.handler), name: "hostile", hold: true, minRate: 1 << 20}
			// Twice: after held wrong bytes the fill starts again from it.
			next := &httpSource{url: good, name: "good", max: 2}
			got, res, client, err := runFillWithClient(t, e, s, Want{Digest: d, Size: int64(len(body))}, bad, next)
			if err != nil {
				t.Fatalf("fill failed: %v", err)
			}
			if c := <-client; c.err != nil || !bytes.Equal(c.body, body) {
				t.Fatalf("the client got %d bytes (exact: %v), err %v", len(c.body), bytes.Equal(c.body, body), c.err)
			}
			if !bytes.Equal(got, body) {
				t.Fatalf("stored %d bytes that are not the blob", len(got))
			}
			blamed := bad.blame()
			if !slices.ContainsFunc(blamed, func(e error) bool { return errors.Is(e, tt.blame) }) {
				t.Fatalf("hostile source blamed for %v, want %v", blamed, tt.blame)
			}
			if len(next.blame()) != 0 {
				t.Fatalf("the good source was blamed: %v", next.blame())
			}
			t.Logf("from %v", res.From)
		})
	}
}

// A source that breaks off is resumed at the offset written, by the next
// try (here the same source again), and readers following the fill see
// one seamless stream.
func TestResumeAtOffset(t *testing.T) {
	body, d := blob(200<<10, 3)
	var mu sync.Mutex
	var ranges []string
	url := serve(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		ranges = append(ranges, r.Header.Get("Range"))
		first := len(ranges) == 1
		mu.Unlock()
		if first {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.Write(body[:70000])
			panic(http.ErrAbortHandler)
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	})
	s := openStore(t)
	src := &httpSource{url: url, name: "flaky", max: 3}
	got, _, err := runFill(t, New(Config{}), s, Want{Digest: d, Size: int64(len(body))}, src)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("fill: %v, %d bytes", err, len(got))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ranges) != 2 || ranges[1] != "bytes=70000-" {
		t.Fatalf("requests' Range %q, want a resume at 70000", ranges)
	}
}

// No source: the fill fails with the reason and stores nothing; a reader
// that took bytes of a blob that then failed verification is cut, never
// handed a whole wrong file.
func TestNoSourceDelivers(t *testing.T) {
	body, d := blob(100<<10, 4)
	wrong, _ := blob(100<<10, 5)
	bad := &httpSource{name: "wrong", url: serve(t, func(w http.ResponseWriter, r *http.Request) { w.Write(wrong) })}
	s := openStore(t)
	f, _ := s.BeginFill(cachestore.FillKey(d))
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	readErr := make(chan error, 1)
	go func() {
		rd, err := f.NewReader(ctx, 0)
		if err != nil {
			readErr <- err
			return
		}
		defer rd.Close()
		got, err := io.ReadAll(rd)
		if err == nil {
			err = fmt.Errorf("reader got %d bytes and a clean end", len(got))
		}
		readErr <- err
	}()
	_, err := New(Config{}).Run(ctx, f, Want{Digest: d, Size: int64(len(body))}, []Source{bad})
	if !errors.Is(err, cachestore.ErrDigestMismatch) && !strings.Contains(err.Error(), "no source delivered") {
		t.Fatalf("err = %v", err)
	}
	if rerr := <-readErr; rerr == nil || strings.Contains(rerr.Error(), "clean end") {
		t.Fatalf("reader: %v", rerr)
	}
	if _, err := s.Stat(d); !errors.Is(err, cachestore.ErrNotFound) {
		t.Fatalf("a blob was stored: %v", err)
	}
}

func TestContentRangeTotal(t *testing.T) {
	for h, want := range map[string]int64{"bytes 0-99/100": 100, "bytes 5-9/10": 10, "bytes 0-9/*": -1, "": -1, "bytes 0-9/-3": -1, "bytes 0-9/x": -1} {
		if got := contentRangeTotal(h); got != want {
			t.Errorf("contentRangeTotal(%q) = %d, want %d", h, got, want)
		}
	}
}

// A source that claims another size than the metadata's is blamed and
// skipped; the fill goes on from the next source.
func TestWrongSizeClaimSkipped(t *testing.T) {
	body, d := blob(100<<10, 6)
	liar := &httpSource{name: "liar", hold: true, url: serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)+10))
		w.Write(append(bytes.Clone(body), make([]byte, 10)...))
	})}
	good := &httpSource{name: "good", url: serve(t, func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	})}
	got, _, err := runFill(t, New(Config{}), openStore(t), Want{Digest: d, Size: int64(len(body))}, liar, good)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("fill: %v, %d bytes", err, len(got))
	}
	if b := liar.blame(); len(b) == 0 || !errors.Is(b[0], cachestore.ErrSizeMismatch) {
		t.Fatalf("liar blamed for %v", b)
	}
}

// A source that sends exactly the blob, with no length, and then holds the
// connection open: the probe for an extra byte is bounded by the stall
// timeout, and the fill completes.
func TestRightBytesThenHeldOpen(t *testing.T) {
	body, d := blob(100<<10, 7)
	holder := &httpSource{name: "holder", hold: true, url: serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write(body) // chunked: no Content-Length
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})}
	s := openStore(t)
	f, _ := s.BeginFill(cachestore.FillKey(d))
	// The daemon's fill context never ends: only the engine may end this.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := New(Config{StallTimeout: 200 * time.Millisecond}).Run(ctx, f, Want{Digest: d, Size: int64(len(body))}, []Source{holder})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("fill: %v", err)
		}
	case <-time.After(10 * time.Second):
		cancel()
		<-done
		t.Fatal("the fill hangs on a source that holds the connection open after the last byte")
	}
	if _, err := s.Stat(d); err != nil {
		t.Fatalf("not stored: %v", err)
	}
}

// A peer sends one wrong byte and stalls; the origin resumes after it.
// The mix fails verification: the peer is blamed, not the origin, which
// sends the whole blob again on the restart.
func TestHeldPrefixThenOriginBlamesThePeer(t *testing.T) {
	body, d := blob(300<<10, 11)
	peerURL := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write([]byte{body[0] ^ 0xff})
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	originURL := serve(t, func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	})
	peer := &httpSource{url: peerURL, name: "peer", hold: true}
	origin := &httpSource{url: originURL, name: "origin", max: 3}
	got, _, err := runFill(t, New(Config{StallTimeout: 200 * time.Millisecond}), openStore(t), Want{Digest: d, Size: int64(len(body))}, peer, origin)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("fill: %v, exact %v", err, bytes.Equal(got, body))
	}
	if len(origin.blame()) != 0 {
		t.Fatalf("the origin was blamed: %v", origin.blame())
	}
	if b := peer.blame(); len(b) == 0 || !slices.ContainsFunc(b, func(e error) bool { return errors.Is(e, cachestore.ErrDigestMismatch) }) {
		t.Fatalf("the peer's blame: %v, want a digest mismatch", b)
	}
}

// yieldingSource is an upstream whose stream yields to a LAN peer further
// along once the fill has read half the blob from it (the server holds
// the rest back).
type yieldingSource struct {
	httpSource
	yield chan struct{}
	half  int64
	to    Source
}

func (y *yieldingSource) Open(ctx context.Context, off int64) (*Stream, error) {
	st, err := y.httpSource.Open(ctx, off)
	if err != nil {
		return nil, err
	}
	if y.yield != nil {
		st.Yield, st.YieldTo = y.yield, y.to
		st.Body = &yieldAfter{ReadCloser: st.Body, left: y.half, yield: y.yield}
		y.yield = nil // once: a source re-arms its yield for its next stream
	}
	return st, nil
}

// yieldAfter closes yield once left bytes were read through it.
type yieldAfter struct {
	io.ReadCloser
	left  int64
	yield chan struct{}
}

func (y *yieldAfter) Read(p []byte) (int, error) {
	n, err := y.ReadCloser.Read(p)
	if y.left > 0 {
		if y.left -= int64(n); y.left <= 0 {
			close(y.yield)
		}
	}
	return n, err
}

// A stream told to yield is left unblamed at the offset it reached, the
// source it yields to sends the rest, and the blob is whole and exact;
// should that source have nothing, the stream's own source goes on.
func TestYieldToASourceFurtherAlong(t *testing.T) {
	body, d := blob(600<<10, 3)
	for _, peerHasIt := range []bool{true, false} {
		t.Run(fmt.Sprintf("peer has it %v", peerHasIt), func(t *testing.T) {
			up := serve(t, func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Range") != "" {
					// Asked again (the peer had nothing): the rest.
					http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
					return
				}
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				w.Write(body[:len(body)/2])
				w.(http.Flusher).Flush()
				<-r.Context().Done() // the rest never comes this way
			})
			peer := &httpSource{url: up, name: "peer", hold: true}
			if !peerHasIt {
				peer.max = -1 // opens nothing
				peer.opens = 1
			}
			src := &yieldingSource{httpSource: httpSource{url: up, name: "origin", max: 2}, yield: make(chan struct{}), half: int64(len(body) / 2), to: peer}
			got, res, err := runFill(t, New(Config{StallTimeout: 5 * time.Second}), openStore(t), Want{Digest: d, Size: int64(len(body))}, src)
			if err != nil || !bytes.Equal(got, body) {
				t.Fatalf("fill: %v, %d bytes; want the exact blob", err, len(got))
			}
			if b := src.blame(); len(b) > 0 {
				t.Fatalf("the stream that yielded was blamed: %v", b)
			}
			want := []string{"origin", "peer"}
			if !peerHasIt {
				want = []string{"origin", "origin"}
			}
			if !slices.Equal(res.From, want) {
				t.Fatalf("bytes came from %v, want %v", res.From, want)
			}
		})
	}
}

// lastBytesThenError sends the blob's last bytes together with an error
// (a reset, or the watchdog closing the body as they came).
type lastBytesThenError struct {
	body []byte
	off  int
}

func (l *lastBytesThenError) Read(p []byte) (int, error) {
	n := copy(p, l.body[l.off:])
	l.off += n
	if l.off == len(l.body) {
		return n, errors.New("connection reset by peer")
	}
	return n, nil
}

func (l *lastBytesThenError) Close() error { return nil }

type streamSource struct {
	st    *Stream
	opens int
}

func (s *streamSource) Open(_ context.Context, off int64) (*Stream, error) {
	s.opens++
	if s.st == nil || off > 0 {
		return nil, fmt.Errorf("%w: asked for offset %d", ErrSkip, off)
	}
	st := s.st
	s.st = nil
	return st, nil
}

// A stream whose last bytes come with an error (a reset as they arrive,
// the stall watchdog closing the body as they came) has given every byte:
// the fill verifies and commits them, and asks no source past the end.
// (Before, it asked the next source from the blob's size on: a 416, and
// the fill failed with every byte in hand.)
func TestLastBytesWithAnError(t *testing.T) {
	body, d := blob(100<<10, 9)
	first := &streamSource{st: &Stream{Body: &lastBytesThenError{body: body}, From: "peer", Size: int64(len(body))}}
	next := &streamSource{}
	got, _, err := runFill(t, New(Config{}), openStore(t), Want{Digest: d, Size: int64(len(body))}, first, next)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("fill: %v, %d bytes", err, len(got))
	}
	if next.opens != 0 || first.opens != 1 {
		t.Fatalf("sources opened %d and %d times after every byte was in, want once and never", first.opens, next.opens)
	}
}
