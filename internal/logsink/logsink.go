// Package logsink owns the daemon's log output: lines written by many
// goroutines leave in batches, one write each, by a goroutine of its own.
//
// A busy proxy logs a line per request; written one by one, each costs a
// system call on the request's path (a tenth of a small cache hit's CPU,
// with its formatting). Here a line is appended to a buffer and the writer
// goroutine takes whatever has gathered: when idle, each line leaves at
// once, as it did before; under load, the lines of many requests leave in
// one write. Nothing waits on a timer, so a crash loses at most the lines
// gathered while the last write was under way.
package logsink

import (
	"io"
	"sync"
)

// maxPending bounds what gathers while a write is slow (a stalled journal
// or terminal): past it, writers wait, as a direct write would have.
const maxPending = 256 << 10

// Sink batches writes to out. Write never blocks on out unless maxPending
// bytes are waiting; Close writes what is left and stops the goroutine.
type Sink struct {
	out io.Writer

	mu      sync.Mutex
	cond    *sync.Cond // signalled when pending is taken, or on close
	pending []byte
	closed  bool
	err     error // the last write's error, reported by Close

	wake chan struct{} // one token: there is something to write
	done chan struct{} // closed when the goroutine has ended
}

// New starts a Sink writing to out; the caller must Close it.
func New(out io.Writer) *Sink {
	s := &Sink{out: out, wake: make(chan struct{}, 1), done: make(chan struct{})}
	s.cond = sync.NewCond(&s.mu)
	go s.run()
	return s
}

// Write queues p (a copy) for the writer goroutine. After Close it writes
// p directly, so nothing logged during shutdown is lost.
func (s *Sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	for len(s.pending) >= maxPending && !s.closed {
		s.cond.Wait()
	}
	if s.closed {
		s.mu.Unlock()
		<-s.done // after the last batch, in order
		return s.out.Write(p)
	}
	s.pending = append(s.pending, p...)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default: // already woken: it will take these bytes too
	}
	return len(p), nil
}

func (s *Sink) run() {
	defer close(s.done)
	var spare []byte
	for range s.wake {
		s.mu.Lock()
		batch := s.pending
		s.pending = spare[:0]
		closed := s.closed
		s.cond.Broadcast()
		s.mu.Unlock()
		if len(batch) > 0 {
			if _, err := s.out.Write(batch); err != nil {
				s.mu.Lock()
				s.err = err
				s.mu.Unlock()
			}
		}
		// A burst can grow a batch's buffer; one kept past maxPending
		// would be held for the daemon's life.
		if cap(batch) <= maxPending {
			spare = batch
		} else {
			spare = nil
		}
		if closed {
			return
		}
	}
}

// Close writes what is pending, stops the goroutine and returns the last
// write error, if any. Later writes go straight to out.
func (s *Sink) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.done
		return nil
	}
	s.closed = true
	s.cond.Broadcast()
	s.mu.Unlock()
	// The goroutine takes pending and ends on this token, or on the one a
	// write left behind (then it sees closed and ends the same way).
	select {
	case s.wake <- struct{}{}:
	default:
	}
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}
