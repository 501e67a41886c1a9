package cachestore

import (
	"context"
	"fmt"
	"io"
	"os"
)

// Readers of a fill: they follow the growing file, and never get its last
// byte before the leader has verified the whole.

// Wait blocks until the leader has started (or the fill has failed) and
// returns what the leader knows.
func (f *Fill) Wait(ctx context.Context) (FillInfo, error) {
	return f.wait(ctx, false)
}

// WaitData is Wait until a first byte can also be read: a client about to
// read wakes once, not once for the start and again for the bytes.
func (f *Fill) WaitData(ctx context.Context) (FillInfo, error) {
	return f.wait(ctx, true)
}

func (f *Fill) wait(ctx context.Context, data bool) (FillInfo, error) {
	for {
		f.mu.Lock()
		started, done, err, info, ch, verified := f.started, f.done, f.err, f.info, f.changed, f.verified
		// The last byte waits for verification; held bytes all do.
		readable := !data || verified || f.written > 1 && !f.held
		f.mu.Unlock()
		if done && err != nil && !verified {
			return info, err
		}
		if started && readable {
			return info, nil
		}
		if err := f.block(ctx, ch); err != nil {
			return info, err
		}
	}
}

// block waits for the change ch stands for, counted among the waiting so
// that the leader lets it run at once (yieldTo).
func (f *Fill) block(ctx context.Context, ch <-chan struct{}) error {
	f.mu.Lock()
	f.waiting++
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.waiting--
		f.mu.Unlock()
	}()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-ch:
		return nil
	}
}

// Result blocks until the fill ends and returns the blob's digest or why it failed.
func (f *Fill) Result(ctx context.Context) (Digest, error) {
	for {
		f.mu.Lock()
		done, err, d, ch := f.done, f.err, f.digest, f.changed
		f.mu.Unlock()
		if done {
			return d, err
		}
		select {
		case <-ctx.Done():
			return Digest{}, ctx.Err()
		case <-ch:
		}
	}
}

// NewReader returns a reader of the blob from offset off on, following the
// file as it grows. Reads block until bytes arrive or ctx ends; the last
// byte is held back until the blob is verified; a failed fill makes Read
// return its error.
func (f *Fill) NewReader(ctx context.Context, off int64) (*FillReader, error) {
	return f.newReader(ctx, off, false)
}

// NewRelayReader is NewReader for a LAN peer, which verifies the whole
// blob itself before any of its clients gets a byte: it is also given the
// bytes of an untrusted source (held from this node's clients), all but
// the last, so that every node receiving a blob can pass it on at once.
func (f *Fill) NewRelayReader(ctx context.Context, off int64) (*FillReader, error) {
	return f.newReader(ctx, off, true)
}

func (f *Fill) newReader(ctx context.Context, off int64, relay bool) (*FillReader, error) {
	if _, err := f.Wait(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done && f.err != nil {
		return nil, f.err
	}
	file, err := os.Open(f.path)
	if err != nil {
		return nil, fmt.Errorf("follow fill %s: %w", f.key, err)
	}
	return &FillReader{f: f, ctx: ctx, file: file, off: off, gen: f.gen, relay: relay}, nil
}

// FillReader follows a fill as it grows (see NewReader).
type FillReader struct {
	f    *Fill
	ctx  context.Context
	file *os.File
	off  int64
	gen  int  // the generation the reader's bytes came from
	took bool // whether it has returned any byte
	// relay: held bytes are read too (NewRelayReader).
	relay bool
}

func (r *FillReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		r.f.mu.Lock()
		done, err, written, ch, gen, held := r.f.done, r.f.err, r.f.written, r.f.changed, r.f.gen, r.f.held
		// Verified bytes are right even if storing them fails afterwards
		// (the open file outlives its removal): a reader may finish them.
		whole := r.f.verified
		r.f.mu.Unlock()
		if done && err != nil && !whole {
			return 0, err
		}
		if gen != r.gen {
			if r.took {
				return 0, fmt.Errorf("read fill %s: %w", r.f.key, ErrRestarted)
			}
			r.gen = gen
		}
		avail := r.avail(written, whole, held)
		if r.off < avail {
			n := int64(len(p))
			if n > avail-r.off {
				n = avail - r.off
			}
			m, rerr := r.file.ReadAt(p[:n], r.off)
			// The bytes must be of the generation the reader is on: a
			// restart between the look and the read would mix two.
			r.f.mu.Lock()
			same := r.f.gen == r.gen
			r.f.mu.Unlock()
			if !same {
				continue
			}
			r.off += int64(m)
			if m > 0 {
				r.took = true
				return m, nil
			}
			if rerr != nil && rerr != io.EOF {
				return 0, fmt.Errorf("read fill %s: %w", r.f.key, rerr)
			}
		}
		if whole && r.off >= written {
			return 0, io.EOF
		}
		if err := r.f.block(r.ctx, ch); err != nil {
			return 0, err
		}
	}
}

// avail is how many of the written bytes a reader may have.
func (r *FillReader) avail(written int64, whole, held bool) int64 {
	switch {
	case whole:
		return written
	case held && !r.relay:
		return 0 // an untrusted source's bytes wait for verification
	default:
		return written - 1 // the last byte waits for verification
	}
}

// Wait blocks until Read would return at once: bytes are there for it,
// or the end, or an error (which Read then returns). A caller waits here
// before it takes a buffer to read into, so that readers waiting on a
// slow fill hold no buffers.
func (r *FillReader) Wait() error {
	for {
		r.f.mu.Lock()
		done, err, written, ch, gen, held := r.f.done, r.f.err, r.f.written, r.f.changed, r.f.gen, r.f.held
		whole := r.f.verified
		r.f.mu.Unlock()
		if done && err != nil && !whole || gen != r.gen {
			return nil // Read says what happened
		}
		if r.off < r.avail(written, whole, held) || whole && r.off >= written {
			return nil
		}
		if err := r.f.block(r.ctx, ch); err != nil {
			return err
		}
	}
}

func (r *FillReader) Close() error { return r.file.Close() }

// Rest returns the reader's file positioned at the reader's offset once
// the fill is verified (its every byte whole and right), so that the caller
// sends the rest straight from it (sendfile) rather than through Read;
// false while bytes are still coming, or when the reader must hear from
// Read that the bytes it took were thrown away. Once it has the file, the
// caller reads from it, no longer through the reader.
func (r *FillReader) Rest() (*os.File, bool) {
	r.f.mu.Lock()
	whole, gen := r.f.verified, r.f.gen
	r.f.mu.Unlock()
	if !whole || gen != r.gen && r.took {
		return nil, false
	}
	if _, err := r.file.Seek(r.off, io.SeekStart); err != nil {
		return nil, false
	}
	return r.file, true
}

// Before returns the blob's first n bytes as the fill wrote them, n at
// most the reader's offset once it has taken a byte: what a client served
// by this reader has, and what precedes it. They come from the reader's
// open file, so they stay readable after the fill failed (a full disk)
// and its temp file went; a caller that goes on from elsewhere hashes them
// to verify the whole.
func (r *FillReader) Before(n int64) (io.Reader, error) {
	if !r.took || n > r.off || n < 0 {
		return nil, fmt.Errorf("read fill %s: the first %d bytes are not all behind this reader (at %d)", r.f.key, n, r.off)
	}
	return io.NewSectionReader(r.file, 0, n), nil
}
