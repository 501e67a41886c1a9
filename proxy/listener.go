package proxy

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// ConnLimits bound what connections cost before a request is read.
type ConnLimits struct {
	// PerClient is the most connections one client address may hold open
	// (default 64; apt opens a few, a site NAT more).
	PerClient int
	// Total is the most connections open at once (default 1024).
	Total int
}

// Listen wraps ln so that each accepted connection is checked before any
// byte of it is read: a client outside allow_clients is answered 403 and
// closed, one past its connection cap or the total cap 503 with
// Retry-After. A flood of connections then costs a socket each, not a
// request head in memory.
func (s *Server) Listen(ln net.Listener, lim ConnLimits) net.Listener {
	if lim.PerClient <= 0 {
		lim.PerClient = DefaultMaxClientConn
	}
	if lim.Total <= 0 {
		lim.Total = DefaultMaxConns
	}
	return &guardedListener{Listener: ln, s: s, lim: lim, per: map[netip.Prefix]int{}, warned: newWarned(), lingering: make(chan struct{}, maxLingering)}
}

type guardedListener struct {
	net.Listener
	s   *Server
	lim ConnLimits

	mu     sync.Mutex           // guards per, total and warned
	per    map[netip.Prefix]int // connections open per client (clientKey)
	total  int
	warned *lru.Cache[netip.Prefix, time.Time] // last warning per client: one a minute
	// lingering holds a place for each refused connection being read
	// for a moment before its close (see refuse).
	lingering chan struct{}
}

// maxLingering bounds the refused connections read before their close; a
// flood beyond it gets plain closes.
const maxLingering = 64

func (l *guardedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ap, perr := netip.ParseAddrPort(c.RemoteAddr().String())
		if perr != nil {
			c.Close()
			continue
		}
		a := ap.Addr().Unmap()
		if err := l.s.clientAllowed(a); err != nil {
			l.refuse(c, a, "403 Forbidden", err)
			continue
		}
		k := clientKey(a)
		l.mu.Lock()
		switch {
		case l.per[k] >= l.lim.PerClient:
			l.mu.Unlock()
			who := a.String()
			if k.Bits() == 64 {
				who += " (counted by its /64, " + k.String() + ")"
			}
			l.refuse(c, a, "503 Service Unavailable", fmt.Errorf("client %s already has %d connections open (the cap per client); close some and retry", who, l.lim.PerClient))
			continue
		case l.total >= l.lim.Total:
			l.mu.Unlock()
			l.refuse(c, a, "503 Service Unavailable", fmt.Errorf("warren has %d connections open (its cap); retry shortly", l.lim.Total))
			continue
		}
		l.per[k]++
		l.total++
		l.mu.Unlock()
		return &countedConn{Conn: c, l: l, key: k}, nil
	}
}

// refuse answers status on c without reading from it, and closes it. The
// write is small and bounded in time: a client that does not read costs
// nothing more.
func (l *guardedListener) refuse(c net.Conn, a netip.Addr, status string, why error) {
	msg := "warren: " + why.Error() + "\n"
	answer := func() {
		_ = c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		fmt.Fprintf(c, "HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nRetry-After: 5\r\nConnection: close\r\n\r\n%s", status, len(msg), msg)
	}
	// An answer sent before the client's request is taken by HTTP clients
	// for a response to nothing, and a close with the request unread sends
	// a reset that can take the answer with it. So, for at most
	// maxLingering connections at once, the answer waits for the client's
	// first byte, the write side is shut, and what the client sends is
	// read and dropped for a moment (at most 64 KiB, 250 ms each way). A
	// flood beyond that gets the answer and a plain close, costing nothing
	// more.
	//
	// A client that opens with a TLS handshake (a node reaching its hub
	// or a peer over https) would read a plain answer as a broken TLS
	// record ("first record does not look like a TLS handshake"), the
	// reason lost: it gets a TLS alert instead where one says it (403:
	// access denied), else the close alone, which its side reports as a
	// handshake the server cut short (internal/tlstrace).
	select {
	case l.lingering <- struct{}{}:
		go func() { // ends by its read deadlines
			defer func() { <-l.lingering }()
			defer c.Close()
			_ = c.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
			var first [1]byte
			n, _ := c.Read(first[:])
			switch {
			case n == 1 && first[0] == tlsHandshakeByte && strings.HasPrefix(status, "403"):
				_ = c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
				_, _ = c.Write(alertAccessDenied[:])
			case n == 1 && first[0] == tlsHandshakeByte:
			default:
				answer()
			}
			if cw, ok := c.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
			_ = c.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
			_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
		}()
	default:
		answer()
		c.Close()
	}
	now, k := time.Now(), clientKey(a)
	l.mu.Lock()
	last, seen := l.warned.Get(k)
	warn := !seen || now.Sub(last) > time.Minute
	if warn {
		l.warned.Add(k, now)
	}
	l.mu.Unlock()
	if warn {
		l.s.log.Warn("refused connection", slog.String("client", a.String()), slog.String("status", status), slog.Any("err", why))
	}
}

// alertAccessDenied is a TLS record (plaintext, as before any handshake)
// holding a fatal access_denied alert (RFC 8446 §6): a TLS client reports
// "remote error: tls: access denied".
var alertAccessDenied = [...]byte{21, 3, 3, 0, 2, 2, 49}

// countedConn gives its place back when closed, once. It can also be
// corked for one answer (cork.go).
type countedConn struct {
	net.Conn
	l    *guardedListener
	key  netip.Prefix // the client it counts under
	once sync.Once

	// Only the goroutine serving the connection's current request writes,
	// so these need no lock.
	corked  bool
	pending *[]byte // the corked answer's bytes, from l.s.corkBufs
	werr    error   // a corked answer's failed write; every later one fails the same
	raw     syscall.RawConn
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		if c.l.per[c.key]--; c.l.per[c.key] <= 0 {
			delete(c.l.per, c.key)
		}
		c.l.total--
		c.l.mu.Unlock()
	})
	return err
}

// clientAllowed checks a against allow_clients. A link-local IPv6
// client's zone (the interface it came in on) is no part of its network:
// a prefix never contains a zoned address.
func (s *Server) clientAllowed(a netip.Addr) error {
	a = a.WithZone("")
	for _, p := range s.cfg.AllowClients {
		if p.Contains(a) {
			return nil
		}
	}
	return fmt.Errorf("client %s is not in allow_clients; add its network to allow_clients in the config", a)
}

// clientKey is what one client's connections count under: its address,
// or an IPv6 client's /64 (as the hub's token failures count), which one
// host may hold whole (SLAAC privacy addresses: as many as it likes). A
// link-local address counts alone: every host on a link shares fe80::/64.
func clientKey(a netip.Addr) netip.Prefix {
	a = a.Unmap().WithZone("")
	if a.Is6() && !a.IsLinkLocalUnicast() {
		p, _ := a.Prefix(64)
		return p
	}
	return netip.PrefixFrom(a, a.BitLen())
}

// newWarned remembers the last warning of 4,096 clients at most, the
// least recently warned forgotten first: it only rate-limits the log.
func newWarned() *lru.Cache[netip.Prefix, time.Time] {
	c, _ := lru.New[netip.Prefix, time.Time](4096)
	return c
}
