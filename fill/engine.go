package fill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-cache/warren/cachestore"
)

// Source is one place a blob's bytes may come from: the consumer's view of
// LAN peers, a hub or the origin. Open is called again after a stream of it
// failed, so a source with several candidates (peers) or a resumable
// transfer (origin) offers the next try; it returns an error wrapping
// ErrSkip when it has nothing (more) to offer, and any other error ends its
// turn too, remembered as the reason should no source deliver.
type Source interface {
	Open(ctx context.Context, off int64) (*Stream, error)
}

// Stream is one try of one source: the blob's bytes from the offset asked.
type Stream struct {
	Body io.ReadCloser
	// From names the sender for logs ("origin", "peer 0a1b…").
	From string
	// Size is the whole blob's size as the sender says (-1: unknown). With
	// no expected size, the first stream's Size becomes the cap.
	Size int64
	// Meta is what readers of the fill see (the proxy: Content-Type,
	// Last-Modified, ETag), taken from the first stream.
	Meta map[string]string
	// Blame, if set, is told that the bytes this stream sent were wrong,
	// too many, or too slow.
	Blame func(reason error)
	// Received, if set, counts the bytes taken from this stream.
	Received func(n int64)
	// Hold keeps this stream's bytes from the fill's readers until the
	// whole blob verifies (a LAN peer: never streamed through unverified).
	Hold bool
	// MinRate, when set, is the average rate in bytes/s the stream must
	// keep from its first StallTimeout on (a peer that holds the whole
	// blob on the LAN): the stall rule alone lets a source that sends just
	// above MinProgress hold a fill for minutes.
	MinRate int64
	// Yield, when set, is closed when another source should take over
	// from here (a LAN peer further along the same download, which this
	// node took from upstream too after a late election): the stream is
	// left, unblamed, and YieldTo is opened at the offset reached. Should
	// it have nothing, this stream's own source is asked again.
	Yield   <-chan struct{}
	YieldTo Source
}

// Doer sends an HTTP request: an *http.Client, or a hub that proxies it.
type Doer interface {
	Do(req *http.Request) (*http.Response, error)
}

// contentRangeTotal reads the whole size from a 206's Content-Range
// ("bytes a-b/total"), for GetAt; -1 when it is absent or "*".
func contentRangeTotal(h string) int64 {
	_, total, ok := strings.Cut(h, "/")
	if !ok {
		return -1
	}
	v, err := strconv.ParseInt(total, 10, 64)
	if err != nil || v < 0 {
		return -1
	}
	return v
}

// GetAt sends req, a GET, for a blob's bytes from off on (with Range)
// and returns the response with its body at off, and the whole blob's size
// as the server says (-1: unknown): a 206's Content-Range total, or a
// 200's length with the first off bytes read and dropped (a server that
// ignores Range). Any other answer is returned as it came, size -1, for
// the caller to read. Every HTTP source resumes through it.
func GetAt(c Doer, req *http.Request, off int64) (*http.Response, int64, error) {
	if off > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, -1, err
	}
	switch {
	case resp.StatusCode == http.StatusPartialContent && off > 0:
		return resp, contentRangeTotal(resp.Header.Get("Content-Range")), nil
	case resp.StatusCode == http.StatusOK:
		if off > 0 {
			if _, err := io.CopyN(io.Discard, resp.Body, off); err != nil {
				resp.Body.Close()
				return nil, -1, fmt.Errorf("skip to offset %d of a whole answer: %w", off, err)
			}
		}
		return resp, resp.ContentLength, nil
	}
	return resp, -1, nil
}

func (st *Stream) blame(reason error) {
	if st.Blame != nil {
		st.Blame(reason)
	}
}

// ErrSkip is what a source's Open wraps to say "nothing (more) here".
var ErrSkip = errors.New("source has nothing to offer")

// stopError ends the whole fill at once (see Stop).
type stopError struct{ err error }

func (e stopError) Error() string { return e.err.Error() }
func (e stopError) Unwrap() error { return e.err }

// Stop marks err, returned by a source's Open, as the end of the fill: no
// other source is tried (the origin's "not modified" or "not found").
func Stop(err error) error { return stopError{err} }

// errYielded ends a stream left for its YieldTo.
var errYielded = errors.New("stream left for a source further along")

// Errors the engine blames streams with.
var (
	ErrTooMany = errors.New("source sent more bytes than the expected size")
	ErrStalled = errors.New("source made too little progress")
	ErrShort   = errors.New("source ended before the expected size")
)

// Want is what the fill must end as.
type Want struct {
	// Digest to verify; with Hex empty, the fill accepts what the bytes
	// hash to in Digest.Algo (sha256 when empty): the URL cache.
	Digest cachestore.Digest
	// Size in bytes; -1 when unknown.
	Size int64
	// Also are other digests (of Digest's algorithm) the bytes may
	// have: a metalink's alternates of repomd.xml, all valid.
	Also []cachestore.Digest
}

// Config is the engine's policy.
type Config struct {
	// StallTimeout: a stream that delivers less than MinProgress bytes in
	// this long is cut, blamed, and the next try begins at the same offset.
	StallTimeout time.Duration // default 10s
	// MinProgress is the progress a stream must make per StallTimeout
	// (default 32 KiB: a trickle of a byte every few seconds is a stall).
	MinProgress int64
	// MaxRestarts bounds how often a fill begins again after its bytes
	// failed verification (default 3).
	MaxRestarts int
	Logger      *slog.Logger
	Now         func() time.Time
}

// Engine runs fills. It is stateless between fills and safe for
// concurrent use.
type Engine struct {
	cfg  Config
	bufs sync.Pool
}

// DefaultStallTimeout is the stall timeout of a Config that sets none
// (and the daemon's default).
const DefaultStallTimeout = 10 * time.Second

// New builds an engine.
func New(cfg Config) *Engine {
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = DefaultStallTimeout
	}
	if cfg.MinProgress <= 0 {
		cfg.MinProgress = 32 << 10
	}
	if cfg.MaxRestarts <= 0 {
		cfg.MaxRestarts = 3
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Engine{cfg: cfg, bufs: sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}}
}

// Filler is what the engine writes into: cachestore.Fill.
type Filler interface {
	Start(info cachestore.FillInfo) error
	Write(p []byte) (int, error)
	Written() int64
	Digest() cachestore.Digest
	Hold()
	Restart() error
	Commit(want cachestore.Digest, size int64) (cachestore.Digest, error)
	Abort(err error)
}

var _ Filler = (*cachestore.Fill)(nil)

// Result says how a fill ended.
type Result struct {
	Digest cachestore.Digest
	Size   int64
	Meta   map[string]string
	// From lists who sent the committed bytes, in order.
	From []string
	// FirstByte is how long the first byte took to arrive, Took the
	// whole fill.
	FirstByte, Took time.Duration
}

// Run fills f from the sources in order until the blob is whole and
// verified, then commits it. On failure f is aborted with the error, which
// is also returned. ctx should be one no single client owns.
func (e *Engine) Run(ctx context.Context, f Filler, want Want, sources []Source) (Result, error) {
	r := &run{e: e, f: f, want: want, size: want.Size, began: e.cfg.Now()}
	res, err := r.walk(ctx, sources)
	if err != nil {
		f.Abort(err)
		return res, err
	}
	res.Took = e.cfg.Now().Sub(r.began)
	if !r.firstByte.IsZero() {
		res.FirstByte = r.firstByte.Sub(r.began)
	}
	return res, nil
}

// run is one fill in progress.
type run struct {
	e       *Engine
	f       Filler
	want    Want
	size    int64 // the cap: want.Size, or the first stream's Size
	started bool
	meta    map[string]string
	// streams that contributed bytes since the last restart, for blame.
	from     []*Stream
	restarts int
	// began is when the fill started, firstByte when its first byte came.
	began, firstByte time.Time
}

func (r *run) walk(ctx context.Context, sources []Source) (Result, error) {
	var last error
	for i := 0; i < len(sources); {
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		off := r.f.Written()
		st, err := sources[i].Open(ctx, off)
		if err != nil {
			var stop stopError
			if errors.As(err, &stop) {
				return Result{}, stop.err
			}
			if !errors.Is(err, ErrSkip) || last == nil {
				last = err
			}
			i++
			continue
		}
		r.e.cfg.Logger.Debug("fill source opened", slog.String("from", st.From), slog.Int64("offset", off))
		if err := r.begin(st); err != nil {
			st.Body.Close()
			if errors.Is(err, cachestore.ErrSizeMismatch) {
				last = err // the source's claim is wrong (blamed): its next try, or the next source
				continue
			}
			return Result{}, err // Start failed (no room): the fill is aborted
		}
		complete, err := r.take(ctx, st)
		if errors.Is(err, errYielded) {
			r.e.cfg.Logger.Info("fill leaves its source for one further along", slog.String("from", st.From), slog.Int64("offset", r.f.Written()))
			// Its own source stays next: it takes over again should the
			// other have nothing.
			sources = slices.Insert(slices.Clip(sources), i, st.YieldTo)
			continue
		}
		if err != nil {
			var stop stopError
			if errors.As(err, &stop) {
				return Result{}, stop.err
			}
			last = err
			r.e.cfg.Logger.Info("fill source failed; trying the next",
				slog.String("from", st.From), slog.Int64("offset", r.f.Written()), slog.Any("err", err))
			continue // the same source again: it offers its next try or skips
		}
		if !complete {
			continue
		}
		res, err := r.verify()
		if err == nil {
			return res, nil
		}
		if !errors.Is(err, cachestore.ErrDigestMismatch) || r.restarts >= r.e.cfg.MaxRestarts {
			return Result{}, err
		}
		last = err
		r.restarts++
		if rerr := r.f.Restart(); rerr != nil {
			return Result{}, rerr
		}
		r.from = nil
	}
	if last == nil {
		last = ErrSkip
	}
	return Result{}, fmt.Errorf("no source delivered the blob: %w", last)
}

// begin starts the fill with the first stream's figures, and checks each
// later stream's claim against them.
func (r *run) begin(st *Stream) error {
	if r.started {
		if r.size >= 0 && st.Size >= 0 && st.Size != r.size {
			err := fmt.Errorf("%w: %s says %d bytes, expected %d", cachestore.ErrSizeMismatch, st.From, st.Size, r.size)
			st.blame(err)
			return err
		}
		return nil
	}
	if r.size < 0 {
		r.size = st.Size
	} else if st.Size >= 0 && st.Size != r.size {
		err := fmt.Errorf("%w: %s says %d bytes, the repository metadata %d", cachestore.ErrSizeMismatch, st.From, st.Size, r.size)
		st.blame(err)
		return err
	}
	algo := r.want.Digest.Algo
	if algo == "" {
		algo = "sha256"
	}
	r.meta = st.Meta
	if r.meta == nil {
		r.meta = map[string]string{}
	}
	if err := r.f.Start(cachestore.FillInfo{Algo: algo, Size: r.size, Meta: r.meta}); err != nil {
		return err
	}
	r.started = true
	return nil
}

// take copies one stream into the fill under the watchdog and the cap.
// complete says the blob has all its bytes (or, of unknown size, the
// stream ended cleanly).
func (r *run) take(ctx context.Context, st *Stream) (complete bool, err error) {
	body := st.Body
	defer body.Close()
	// The watchdog: each StallTimeout the stream must have made
	// MinProgress (or sent all that was left); else its body is closed,
	// which unblocks the Read below.
	var progress atomic.Int64
	var stalled, slow, yielded atomic.Bool
	var total int64 // bytes of this stream, as of the last tick
	period := r.e.cfg.StallTimeout
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	yield := st.Yield
	if st.YieldTo == nil {
		yield = nil
	}
	go func() {
		defer wg.Done()
		t := time.NewTicker(period)
		defer t.Stop()
		for ticks := int64(1); ; ticks++ {
			select {
			case <-done:
				return
			case <-yield:
				yielded.Store(true)
				body.Close()
				return
			case <-t.C:
				// Near the end less is due, but never nothing: with every
				// byte in, the probe for one more must not wait forever on
				// a source that holds the connection open.
				need := r.e.cfg.MinProgress
				left := int64(1)
				if r.size >= 0 {
					left = r.size - r.f.Written()
					need = max(min(need, left), 1)
				}
				got := progress.Swap(0)
				total += got
				if got < need {
					stalled.Store(true)
					body.Close()
					return
				}
				// Elapsed time counted in ticks, not read from a clock: the
				// rule is the same on a slow machine.
				if st.MinRate > 0 && left > 0 && float64(total) < float64(st.MinRate)*(time.Duration(ticks)*period).Seconds() {
					slow.Store(true)
					body.Close()
					return
				}
			}
		}
	}()
	defer func() { close(done); wg.Wait() }()

	bp := r.e.bufs.Get().(*[]byte)
	defer r.e.bufs.Put(bp)
	buf := *bp
	contributed := false
	for {
		room := int64(len(buf))
		if r.size >= 0 {
			room = min(room, r.size-r.f.Written())
		}
		if room == 0 {
			// The cap: one more byte tells a source that sends too much.
			var one [1]byte
			if n, _ := body.Read(one[:]); n > 0 {
				st.blame(fmt.Errorf("%w (%d) from %s", ErrTooMany, r.size, st.From))
				r.e.cfg.Logger.Warn("source sent more than the expected size; cut at the size", slog.String("from", st.From), slog.Int64("size", r.size))
			}
			return true, nil
		}
		n, rerr := body.Read(buf[:room])
		if n > 0 {
			progress.Add(int64(n))
			if r.firstByte.IsZero() {
				r.firstByte = r.e.cfg.Now()
			}
			if !contributed {
				contributed = true
				r.from = append(r.from, st)
				if st.Hold {
					r.f.Hold()
				}
				r.e.cfg.Logger.Debug("fill receiving", slog.String("from", st.From), slog.Int64("offset", r.f.Written()), slog.Bool("held", st.Hold))
			}
			if _, err := r.f.Write(buf[:n]); err != nil {
				return false, Stop(err) // the fill is aborted (a full disk)
			}
			if st.Received != nil {
				st.Received(int64(n))
			}
		}
		if rerr == nil {
			continue
		}
		if r.size >= 0 && r.f.Written() >= r.size {
			// Every byte is in, whatever ended the stream with them (the
			// watchdog firing as the last bytes came, a yield, a reset):
			// the verify decides, and no source is asked past the end.
			return true, nil
		}
		if yielded.Load() {
			return false, errYielded
		}
		if stalled.Load() || slow.Load() {
			err := fmt.Errorf("%w: less than %d bytes in %s from %s", ErrStalled, r.e.cfg.MinProgress, period, st.From)
			if slow.Load() {
				err = fmt.Errorf("%w: %s sent below the %d bytes/s it must average", ErrStalled, st.From, st.MinRate)
			}
			st.blame(err)
			return false, err
		}
		if errors.Is(rerr, io.EOF) {
			if r.size >= 0 && r.f.Written() < r.size {
				return false, fmt.Errorf("%w: %s sent %d of %d bytes", ErrShort, st.From, r.f.Written(), r.size)
			}
			return true, nil
		}
		if ctx.Err() != nil {
			return false, Stop(ctx.Err())
		}
		return false, fmt.Errorf("receive from %s after %d bytes: %w", st.From, r.f.Written(), rerr)
	}
}

// verify commits the fill if its bytes hash right. A mismatch blames the
// streams that contributed; when held (peer) bytes were mixed with bytes
// of a source trusted to reach clients at once (the origin), only the held
// ones: a peer that sent one wrong byte and stalled must not get the
// origin, which resumed after it, struck off. The restart asks the origin
// alone, and it is blamed then if it alone is wrong.
func (r *run) verify() (Result, error) {
	var names []string
	for _, st := range r.from {
		names = append(names, st.From)
	}
	want := r.want.Digest
	if want.Algo == "" {
		want.Algo = "sha256"
	}
	got := r.f.Digest()
	if want.Hex != "" && got != want && slices.Contains(r.want.Also, got) {
		want = got // an alternate: committed as what it is
	}
	if want.Hex != "" && got != want {
		err := fmt.Errorf("%w: expected %s, got %s from %v", cachestore.ErrDigestMismatch, want, got, names)
		suspects := r.from
		if held := slices.DeleteFunc(slices.Clone(r.from), func(st *Stream) bool { return !st.Hold }); len(held) > 0 {
			suspects = held
		}
		for _, st := range suspects {
			st.blame(err)
		}
		r.e.cfg.Logger.Warn("bytes failed verification; starting again from the next source",
			slog.String("expected", want.String()), slog.String("actual", got.String()), slog.Any("from", names))
		return Result{}, err
	}
	size := r.f.Written()
	d, err := r.f.Commit(cachestore.Digest{Algo: want.Algo, Hex: want.Hex}, size)
	if err != nil {
		return Result{}, err
	}
	return Result{Digest: d, Size: size, Meta: r.meta, From: names}, nil
}
