package peering

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"sync"
	"syscall"

	"github.com/warren-cache/warren/cachestore"
	"golang.org/x/sys/unix"
)

// The datagram transport: one UDP socket per address family. IPv4 reaches
// the LAN by subnet broadcast; IPv6 has no broadcast, so a node joins the
// link-local multicast group below on each of its interfaces and sends
// there, the interface named by the address's zone (ff02::…%eth0).

// MulticastGroup is the IPv6 group warren's datagrams go to on each link
// ("WARN" in its last 32 bits); the port is the nodes' one port.
var MulticastGroup = netip.MustParseAddr("ff02::5741:524e")

// MulticastOn is where datagrams for every node on interface ifname go.
func MulticastOn(ifname string, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(MulticastGroup.WithZone(ifname), port)
}

// listenUDP binds the datagram sockets for addr: both families when its
// address is the IPv6 wildcard ([::]:port, what a listen of ":port"
// binds), else the one family it names. The IPv6 socket joins
// MulticastGroup on the interface of each multicast target's zone.
func listenUDP(addr netip.AddrPort, targets []netip.AddrPort, log *slog.Logger) (PacketConn, error) {
	a := addr.Addr()
	switch {
	case a.Is4() || a.Is4In6():
		return listenFamily("udp4", netip.AddrPortFrom(a.Unmap(), addr.Port()), nil)
	case !a.IsUnspecified():
		return listenFamily("udp6", addr, targets)
	}
	v4, err4 := listenFamily("udp4", netip.AddrPortFrom(netip.IPv4Unspecified(), addr.Port()), nil)
	v6, err6 := listenFamily("udp6", addr, targets)
	switch {
	case err4 != nil && err6 != nil:
		return nil, errors.Join(err4, err6)
	case err6 != nil:
		// A machine with IPv6 turned off, or an interface that cannot
		// join the group: IPv4 alone, as before, and said.
		log.Warn("peers over IPv4 only: the IPv6 datagram socket cannot be made", slog.Any("err", err6))
		return v4, nil
	case err4 != nil:
		log.Warn("peers over IPv6 only: the IPv4 datagram socket cannot be made", slog.Any("err", err4))
		return v6, nil
	}
	return newDualConn(v4, v6), nil
}

// listenFamily binds one socket of network (udp4, udp6) at addr: IPv4's
// may broadcast, IPv6's joins the group on each target's interface.
func listenFamily(network string, addr netip.AddrPort, targets []netip.AddrPort) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if network == "udp4" {
				// SO_BROADCAST: queries and wants go to subnet broadcast addresses.
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), network, addr.String())
	if err != nil {
		return nil, fmt.Errorf("listen for peers on %s %s: %w", network, addr, err)
	}
	c := pc.(*net.UDPConn)
	if network == "udp6" {
		if err := joinGroup(c, targets); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// joinGroup joins MulticastGroup on the interface of each multicast
// target (its zone).
func joinGroup(c *net.UDPConn, targets []netip.AddrPort) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	for _, t := range targets {
		if t.Addr().WithZone("") != MulticastGroup {
			continue
		}
		ifc, err := net.InterfaceByName(t.Addr().Zone())
		if err != nil {
			return fmt.Errorf("join %s: %w", t.Addr(), err)
		}
		mreq := &unix.IPv6Mreq{Multiaddr: MulticastGroup.As16(), Interface: uint32(ifc.Index)}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptIPv6Mreq(int(fd), unix.IPPROTO_IPV6, unix.IPV6_JOIN_GROUP, mreq)
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("join %s on %s: %w", MulticastGroup, ifc.Name, serr)
		}
	}
	return nil
}

// dualConn is an IPv4 and an IPv6 socket as one PacketConn: reads come
// from either, a write goes out of the socket of its address's family.
type dualConn struct {
	v4, v6 *net.UDPConn
	in     chan datagram
	done   chan struct{}
	once   sync.Once
}

type datagram struct {
	b    []byte
	from netip.AddrPort
	err  error
}

func newDualConn(v4, v6 *net.UDPConn) *dualConn {
	d := &dualConn{v4: v4, v6: v6, in: make(chan datagram), done: make(chan struct{})}
	go d.read(v4)
	go d.read(v6)
	return d
}

// read hands on what c receives until the conn closes.
func (d *dualConn) read(c *net.UDPConn) {
	buf := make([]byte, MaxDatagram+1)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		dg := datagram{from: from, err: err}
		if err == nil {
			dg.b = append([]byte(nil), buf[:n]...)
		}
		select {
		case d.in <- dg:
		case <-d.done:
			return
		}
		if errors.Is(err, net.ErrClosed) {
			return
		}
	}
}

func (d *dualConn) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	select {
	case dg := <-d.in:
		return copy(b, dg.b), dg.from, dg.err
	case <-d.done:
		return 0, netip.AddrPort{}, net.ErrClosed
	}
}

func (d *dualConn) WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	if a := addr.Addr(); a.Is4() || a.Is4In6() {
		return d.v4.WriteToUDPAddrPort(b, netip.AddrPortFrom(a.Unmap(), addr.Port()))
	}
	return d.v6.WriteToUDPAddrPort(b, addr)
}

// LocalAddr is the IPv6 socket's: [::]:port, both families.
func (d *dualConn) LocalAddr() net.Addr { return d.v6.LocalAddr() }

func (d *dualConn) Close() error {
	d.once.Do(func() { close(d.done) })
	return errors.Join(d.v4.Close(), d.v6.Close())
}

// blobURL is where the peer at ap serves d over scheme: an IPv6 address
// in brackets, its zone (a link-local peer's interface) escaped as %25.
func blobURL(scheme string, ap netip.AddrPort, d cachestore.Digest) string {
	u := url.URL{Scheme: scheme, Host: ap.String(), Path: BlobPathPrefix + d.Algo + "/" + d.Hex}
	return u.String()
}
