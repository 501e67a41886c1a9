package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// WithTLS serves TLS and plain HTTP on one port: each connection ln
// accepts (Listen's, so admitted and counted first) whose first byte opens
// a TLS handshake is handed on as a TLS server connection with cfg; the
// rest stay plain. apt and dnf keep using a hub as a plain http proxy while
// its nodes and other hubs reach it over https, and peers take blobs over
// mutual TLS, all on the one port every setting and announcement already
// names. A plain connection is handed on as it was accepted (its first
// byte only peeked at, never read), so corking and sendfile still apply.
//
// The first byte is awaited off the accept loop: a client that connects
// and sends nothing holds its own connection (and its place under the
// connection caps) for at most ReadHeaderTimeout, never the next client's
// accept.
func WithTLS(ln net.Listener, cfg *tls.Config) net.Listener {
	return withTLS(ln, cfg, ReadHeaderTimeout)
}

// withTLS is WithTLS with wait for the first byte and the handshake.
func withTLS(ln net.Listener, cfg *tls.Config, wait time.Duration) net.Listener {
	l := &tlsListener{Listener: ln, cfg: cfg, wait: wait, out: make(chan accepted), done: make(chan struct{})}
	go l.loop()
	return l
}

// tlsHandshakeByte opens every TLS record of a handshake (a ClientHello's
// included); no HTTP method starts with it.
const tlsHandshakeByte = 0x16

type accepted struct {
	c   net.Conn
	err error
}

type tlsListener struct {
	net.Listener
	cfg  *tls.Config
	wait time.Duration // for the first byte and the handshake, together
	out  chan accepted
	done chan struct{} // closed by Close
	once sync.Once
}

func (l *tlsListener) loop() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			// The server sees every error (it backs off on temporary
			// ones); a closed listener ends the loop.
			select {
			case l.out <- accepted{err: err}:
			case <-l.done:
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go l.classify(c)
	}
}

// classify waits for c's first byte and hands c on, as TLS (its
// handshake done) or as it is. The wait for the first byte and the
// handshake share one deadline, l.wait (ReadHeaderTimeout) from the
// accept: a client that dawdles over both holds its place no longer than
// one that dawdles over either.
func (l *tlsListener) classify(c net.Conn) {
	deadline := time.Now().Add(l.wait)
	_ = c.SetDeadline(deadline)
	first, err := peekByte(c)
	if err != nil {
		c.Close() // closed or silent before its first byte: nothing to serve
		return
	}
	if first == tlsHandshakeByte {
		tc := tls.Server(c, l.cfg)
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			// A refused peer was heard by the config's own check
			// (peering's Refused); the rest is a client's failure,
			// said as net/http says it when it does the handshake.
			if g, ok := l.Listener.(*guardedListener); ok {
				g.s.log.Debug("TLS handshake failed", slog.String("client", c.RemoteAddr().String()), slog.Any("err", err))
			}
			tc.Close()
			return
		}
		c = tc
	}
	_ = c.SetDeadline(time.Time{})
	select {
	case l.out <- accepted{c: c}:
	case <-l.done:
		c.Close()
	}
}

func (l *tlsListener) Accept() (net.Conn, error) {
	select {
	case a := <-l.out:
		return a.c, a.err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *tlsListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// peekByte reads c's first byte without taking it from the socket
// (MSG_PEEK), so c can be handed on untouched; waiting honours c's read
// deadline.
func peekByte(c net.Conn) (byte, error) {
	inner := c
	if cc, ok := c.(*countedConn); ok {
		inner = cc.Conn
	}
	sc, ok := inner.(syscall.Conn)
	if !ok {
		return 0, errors.New("not a socket: its first byte cannot be peeked at")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var b [1]byte
	var n int
	var perr error
	err = rc.Read(func(fd uintptr) bool {
		n, _, perr = unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK)
		return !errors.Is(perr, unix.EAGAIN) && !errors.Is(perr, unix.EINTR)
	})
	switch {
	case err != nil:
		return 0, err
	case perr != nil:
		return 0, perr
	case n == 0:
		return 0, errors.New("closed before its first byte")
	}
	return b[0], nil
}
