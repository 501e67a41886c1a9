package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
)

// Corking: a small hit leaves as one answer, not as net/http writes it.
//
// net/http writes an answer's head and a body past its 4 KiB buffer in two
// writes: two system calls, and two wake-ups of the client. A connection
// of Listen's can be corked for one answer: what is written is held, and
// leaves in one write when uncorked. A body net/http hands over with
// ReadFrom from a section of a blob's file goes with sendfile instead,
// behind the head sent with MSG_MORE so that both leave together: no
// pread, no copy through user space. (nginx does the same with
// tcp_nopush and sendfile.)

type connKey struct{}

// ConnContext is for the http.Server's ConnContext: it lets a request's
// handler reach a connection of Listen's, to cork it for a small answer.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if cc, ok := c.(*countedConn); ok {
		return context.WithValue(ctx, connKey{}, cc)
	}
	return ctx
}

// connOf is the request's connection when Listen accepted it, or nil.
func connOf(r *http.Request) *countedConn {
	cc, _ := r.Context().Value(connKey{}).(*countedConn)
	return cc
}

// Write holds p while the connection is corked. After a corked answer
// failed to leave, it fails too: net/http then drops the connection
// instead of answering the next request on it.
func (c *countedConn) Write(p []byte) (int, error) {
	if c.werr != nil {
		return 0, c.werr
	}
	if c.corked {
		*c.pending = append(*c.pending, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// ReadFrom keeps the kernel's sendfile for bodies read from a file:
// net/http takes that path only when the connection is an io.ReaderFrom,
// and the embedded net.Conn hides *net.TCPConn's. Without it every hit
// was copied through user space (a profile of the daemon under the side
// by side bench: 35% of its CPU in the body's writes). Corked, a section of
// a file goes behind the held head (sendCorked).
func (c *countedConn) ReadFrom(r io.Reader) (int64, error) {
	if c.corked {
		if lr, sr, f, ok := fileSection(r); ok {
			return c.sendCorked(lr, sr, f)
		}
	}
	if err := c.uncork(); err != nil {
		return 0, err
	}
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// cork holds what is written until uncork.
func (c *countedConn) cork() {
	if c.corked || c.werr != nil {
		return
	}
	c.corked = true
	c.pending = c.l.s.corkBufs.Get().(*[]byte)
}

// uncork writes what was held, in one write.
func (c *countedConn) uncork() error {
	b, ok := c.takeCorked()
	if !ok {
		return c.werr
	}
	defer c.putCorked(b)
	if len(*b) == 0 {
		return nil
	}
	if _, err := c.Conn.Write(*b); err != nil {
		c.werr = err
		return err
	}
	return nil
}

// takeCorked ends the cork and returns what it held, for putCorked.
func (c *countedConn) takeCorked() (*[]byte, bool) {
	if !c.corked {
		return nil, false
	}
	c.corked = false
	b := c.pending
	c.pending = nil
	return b, true
}

func (c *countedConn) putCorked(b *[]byte) {
	if cap(*b) > maxCorkedKept {
		return // an error page or a multipart answer grew it: not kept
	}
	*b = (*b)[:0]
	c.l.s.corkBufs.Put(b)
}

// maxCorkedKept bounds a cork buffer kept for the next answer.
const maxCorkedKept = 64 << 10

// fileSection recognises what http.ServeContent hands on for a body read
// from a section of a file: io.CopyN's LimitedReader over the section.
func fileSection(r io.Reader) (*io.LimitedReader, *io.SectionReader, *os.File, bool) {
	lr, ok := r.(*io.LimitedReader)
	if !ok {
		return nil, nil, nil, false
	}
	sr, ok := lr.R.(*io.SectionReader)
	if !ok {
		return nil, nil, nil, false
	}
	ra, _, _ := sr.Outer()
	f, ok := ra.(*os.File)
	return lr, sr, f, ok
}

// errShortBlob: the file ended before the section did.
var errShortBlob = errors.New("blob file shorter than its section")

// sendCorked sends the held head with MSG_MORE, then lr's bytes of the
// section sr of f with sendfile from their offset (the descriptor may be
// shared with other requests, so its own offset is neither used nor
// moved), and advances sr and lr past what went.
func (c *countedConn) sendCorked(lr *io.LimitedReader, sr *io.SectionReader, f *os.File) (int64, error) {
	b, _ := c.takeCorked()
	defer c.putCorked(b)
	if c.raw == nil {
		sc, ok := c.Conn.(syscall.Conn)
		if !ok {
			return c.copyAfter(*b, lr)
		}
		raw, err := sc.SyscallConn()
		if err != nil {
			return c.copyAfter(*b, lr)
		}
		c.raw = raw
	}
	_, base, size := sr.Outer()
	pos, err := sr.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, fmt.Errorf("send blob section: %w", err)
	}
	n := min(lr.N, size-pos)
	off := base + pos
	head := *b
	var sent int64
	var serr error
	in := int(f.Fd()) // a regular file: Fd leaves its mode alone
	flags := syscall.MSG_NOSIGNAL
	if n > 0 {
		// The kernel holds a head sent with more to come until the body
		// joins it; with nothing to come it would wait out its 200 ms.
		flags |= syscall.MSG_MORE
	}
	err = c.raw.Write(func(fd uintptr) bool {
		for len(head) > 0 {
			m, err := syscall.SendmsgN(int(fd), head, nil, nil, flags)
			switch {
			case errors.Is(err, syscall.EINTR):
				continue
			case errors.Is(err, syscall.EAGAIN):
				return false // wait until the socket can take more
			case err != nil:
				serr = err
				return true
			}
			head = head[m:]
		}
		for sent < n {
			m, err := syscall.Sendfile(int(fd), in, &off, int(n-sent))
			sent += int64(max(m, 0))
			switch {
			case errors.Is(err, syscall.EINTR):
				continue
			case errors.Is(err, syscall.EAGAIN):
				return false
			case err != nil:
				serr = err
				return true
			case m == 0:
				serr = errShortBlob
				return true
			}
		}
		return true
	})
	if err == nil {
		err = serr
	}
	sr.Seek(pos+sent, io.SeekStart)
	lr.N -= sent
	if err != nil {
		c.werr = fmt.Errorf("send blob to client: %w", err)
		return sent, c.werr
	}
	return sent, nil
}

// copyAfter writes head and then r's bytes, uncorked: for a connection
// without a descriptor (none of Listen's, but a wrapped one in a test).
func (c *countedConn) copyAfter(head []byte, r io.Reader) (int64, error) {
	if len(head) > 0 {
		if _, err := c.Conn.Write(head); err != nil {
			c.werr = err
			return 0, err
		}
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}
