package sim

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Network is an in-memory IPv4 network: hosts in subnets (10.S.0.0/16),
// datagrams delivered at once (a subnet's broadcast address reaches every
// other host of it, and nothing else), and streams over pipes whose bytes
// pass each link on their way at that link's rate: the sender's uplink,
// the receiver's downlink and, between a subnet and the site's hub, the
// subnet's WAN link, shared by all its hosts.
type Network struct {
	mu       sync.Mutex // guards hosts, bySubnet and rnd
	hosts    map[netip.Addr]*Host
	bySubnet map[int][]*Host
	rnd      *mrand.Rand
	// Latency is added to each new stream (a connection's set-up).
	Latency time.Duration
	// Delay bounds a site host's scheduling delay (Slowness); 0: none.
	Delay time.Duration
	// Loss is the share of datagrams lost on the way to each receiver.
	Loss float64
}

// NewNetwork is an empty network.
func NewNetwork(latency time.Duration) *Network {
	return &Network{hosts: map[netip.Addr]*Host{}, bySubnet: map[int][]*Host{}, Latency: latency,
		rnd: mrand.New(mrand.NewPCG(7, 7))}
}

// Slowness models what makes a real node answer late: a laptop waking,
// a VM on a busy host, a Wi-Fi client, fifty daemons on two cores. Each
// site host has a scale drawn once, heavy-tailed across hosts (2 ms times
// a Pareto variate of index 1, at most 100 ms: half the hosts under 4 ms,
// one in ten over 20 ms); each datagram it receives, and each connection
// it accepts, waits that scale times a second Pareto variate of index 1,
// at most the network's Delay. A typical host's median is under 10 ms; a
// slow host's datagrams often wait the whole Delay.
func (n *Network) slowness() time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	return min(time.Duration(float64(2*time.Millisecond)/(1-n.rnd.Float64())), 100*time.Millisecond)
}

// delay is one wait of a host of scale s (0 without a Delay).
func (n *Network) delay(s time.Duration) time.Duration {
	if n.Delay <= 0 || s <= 0 {
		return 0
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return min(time.Duration(float64(s)/(1-n.rnd.Float64())), n.Delay)
}

// lost says whether one datagram is lost.
func (n *Network) lost() bool {
	if n.Loss <= 0 {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.rnd.Float64() < n.Loss
}

// Link is one direction of a link: a rate in bytes/s shared by everything
// that crosses it.
type Link struct {
	lim *rate.Limiter
	// Bytes counts what crossed it.
	Bytes atomic.Int64
}

// NewLink is a link of bytesPerSec.
func NewLink(bytesPerSec float64) *Link {
	return &Link{lim: rate.NewLimiter(rate.Limit(bytesPerSec), chunk)}
}

// chunk is the most one write takes of a link at once.
const chunk = 16 << 10

// Host is one machine: an address, its links, its datagram inbox and its
// listening stream port.
type Host struct {
	net    *Network
	Addr   netip.Addr
	Subnet int // -1: not on a site subnet (the hub, the origin)
	up     *Link
	down   *Link
	// wan is the subnet's link to the hub (nil off the subnets); toHub
	// and fromHub are its two directions.
	toHub, fromHub *Link

	inbox  chan datagram
	closed chan struct{}
	// slow is the scale of this host's scheduling delay (see slowness);
	// 0 for the hub and the origin.
	slow     time.Duration
	once     sync.Once
	listener *listener

	// Datagrams sent and received.
	Sent, Received atomic.Int64
}

type datagram struct {
	b    []byte
	from netip.AddrPort
}

// AddHost puts a host on the network with its NIC's rate each way; toHub
// and fromHub are its subnet's WAN link (nil for none).
func (n *Network) AddHost(addr netip.Addr, subnet int, nic float64, toHub, fromHub *Link) *Host {
	h := &Host{net: n, Addr: addr, Subnet: subnet, up: NewLink(nic), down: NewLink(nic), toHub: toHub, fromHub: fromHub,
		inbox: make(chan datagram, 1024), closed: make(chan struct{})}
	h.listener = &listener{h: h, conns: make(chan net.Conn), done: make(chan struct{})}
	if subnet >= 0 {
		h.slow = n.slowness()
	}
	n.mu.Lock()
	n.hosts[addr] = h
	n.bySubnet[subnet] = append(n.bySubnet[subnet], h)
	n.mu.Unlock()
	return h
}

func (n *Network) host(a netip.Addr) *Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.hosts[a]
}

// Broadcast is subnet s's broadcast address.
func Broadcast(s int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(s), 255, 255}) }

// sendTo delivers b to the host at to, or to every other host of the
// sender's subnet for its broadcast address; a full inbox drops it, as a
// socket's buffer would.
func (h *Host) sendTo(b []byte, to netip.AddrPort, port uint16) {
	from := netip.AddrPortFrom(h.Addr, port)
	deliver := func(r *Host) {
		if h.net.lost() {
			return
		}
		dg := datagram{b: append([]byte(nil), b...), from: from}
		push := func() {
			select {
			case r.inbox <- dg:
				r.Received.Add(1)
			case <-r.closed:
			default:
			}
		}
		if d := h.net.delay(r.slow); d > 0 {
			time.AfterFunc(d, push)
			return
		}
		push()
	}
	h.Sent.Add(1)
	if h.Subnet >= 0 && to.Addr() == Broadcast(h.Subnet) {
		h.net.mu.Lock()
		rs := h.net.bySubnet[h.Subnet]
		h.net.mu.Unlock()
		for _, r := range rs {
			if r != h {
				deliver(r)
			}
		}
		return
	}
	if r := h.net.host(to.Addr()); r != nil && r != h {
		deliver(r)
	}
}

// PacketConn is the host's datagram socket on port.
func (h *Host) PacketConn(port uint16) *PacketConn { return &PacketConn{h: h, port: port} }

// PacketConn is a Host's datagram socket (peering.PacketConn).
type PacketConn struct {
	h    *Host
	port uint16
}

func (c *PacketConn) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	select {
	case d := <-c.h.inbox:
		return copy(b, d.b), d.from, nil
	case <-c.h.closed:
		return 0, netip.AddrPort{}, net.ErrClosed
	}
}

func (c *PacketConn) WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error) {
	select {
	case <-c.h.closed:
		return 0, net.ErrClosed
	default:
	}
	c.h.sendTo(b, to, c.port)
	return len(b), nil
}

func (c *PacketConn) LocalAddr() net.Addr {
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.h.Addr, c.port))
}

func (c *PacketConn) Close() error {
	c.h.once.Do(func() { close(c.h.closed) })
	return nil
}

// Listener is the host's stream port (one per host: the simulated daemons
// serve everything on one).
func (h *Host) Listener() net.Listener { return h.listener }

type listener struct {
	h     *Host
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *listener) Addr() net.Addr { return &net.TCPAddr{IP: l.h.Addr.AsSlice(), Port: 3142} }

// Dial connects from h to the host named by addr ("10.1.0.7:3142"); the
// port is not checked: each host listens on one.
func (h *Host) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("sim: dial %s: %w", addr, err)
	}
	r := h.net.host(ap.Addr())
	if r == nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("no route to host")}
	}
	// The set-up, and the time the receiving host takes to get to it.
	if wait := h.net.Latency + h.net.delay(r.slow); wait > 0 {
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	a, b := net.Pipe()
	there := &shaped{Conn: a, links: h.path(r), local: h.tcpAddr(), remote: r.tcpAddr()}
	back := &shaped{Conn: b, links: r.path(h), local: r.tcpAddr(), remote: h.tcpAddr()}
	select {
	case r.listener.conns <- back:
		return there, nil
	case <-r.listener.done:
		return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("connection refused")}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (h *Host) tcpAddr() net.Addr { return &net.TCPAddr{IP: h.Addr.AsSlice(), Port: 3142} }

// path is the links bytes from h to r cross.
func (h *Host) path(r *Host) []*Link {
	links := []*Link{h.up, r.down}
	switch {
	case h.Subnet >= 0 && r.Subnet != h.Subnet && h.toHub != nil:
		links = append(links, h.toHub)
	case r.Subnet >= 0 && h.Subnet != r.Subnet && r.fromHub != nil:
		links = append(links, r.fromHub)
	}
	return links
}

// shaped is one end of a pipe whose writes wait for each link on the way.
type shaped struct {
	net.Conn
	links         []*Link
	local, remote net.Addr
	deadline      atomic.Pointer[time.Time]
}

func (c *shaped) Write(b []byte) (int, error) {
	written := 0
	ctx := context.Background()
	if d := c.deadline.Load(); d != nil && !d.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, *d)
		defer cancel()
	}
	for len(b) > 0 {
		n := min(len(b), chunk)
		for _, l := range c.links {
			if err := l.lim.WaitN(ctx, n); err != nil {
				return written, os.ErrDeadlineExceeded
			}
			l.Bytes.Add(int64(n))
		}
		k, err := c.Conn.Write(b[:n])
		written += k
		if err != nil {
			return written, err
		}
		b = b[n:]
	}
	return written, nil
}

func (c *shaped) SetDeadline(t time.Time) error {
	c.deadline.Store(&t)
	return c.Conn.SetDeadline(t)
}

func (c *shaped) SetWriteDeadline(t time.Time) error {
	c.deadline.Store(&t)
	return c.Conn.SetWriteDeadline(t)
}

func (c *shaped) LocalAddr() net.Addr  { return c.local }
func (c *shaped) RemoteAddr() net.Addr { return c.remote }
