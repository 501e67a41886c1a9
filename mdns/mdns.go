package mdns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/grandcat/zeroconf"
)

const (
	// ServiceWarren is what warren peers announce and browse.
	ServiceWarren = "_warren._tcp"
	// ServiceAptProxy is what apt proxy auto-detect clients browse.
	ServiceAptProxy = "_apt_proxy._tcp"
	domain          = "local."
	txtVersion      = "1"
)

// Config describes this node.
type Config struct {
	ID       string // node id, hex
	Port     int    // HTTP (proxy and blobs) and UDP port
	Priority int32
	Passive  bool
	// FreeBytes is the cache room at announce time (peers learn the live
	// figure from every datagram).
	FreeBytes uint64
	// Interfaces announce and browse; nil means every multicast interface.
	Interfaces []net.Interface
	// Lonely says this node knows no peer: Browse then browses again
	// soon, however long its rests had grown (nil: never).
	Lonely func() bool
	Logger *slog.Logger
}

// Found is a warren seen on the LAN.
type Found struct {
	ID string
	// Addrs are its addresses from the answer's A and AAAA records, IPv4
	// first; an IPv6 link-local one carries the zone of the one interface
	// browsed, and is left out when several were.
	Addrs    []netip.Addr
	Port     uint16
	Priority int32
	Passive  bool
}

// Announcer keeps this node's services registered until Close.
type Announcer struct {
	servers []*zeroconf.Server
}

// Announce registers _warren._tcp and _apt_proxy._tcp. Passive nodes
// announce nothing and must not call it.
func Announce(cfg Config) (*Announcer, error) {
	a := &Announcer{}
	for _, svc := range []string{ServiceWarren, ServiceAptProxy} {
		s, err := zeroconf.Register("warren-"+cfg.ID[:min(12, len(cfg.ID))], svc, domain, cfg.Port, TXT(cfg), cfg.Interfaces)
		if err != nil {
			a.Close()
			return nil, fmt.Errorf("announce %s over mDNS: %w", svc, err)
		}
		a.servers = append(a.servers, s)
	}
	return a, nil
}

// Close withdraws the announcements.
func (a *Announcer) Close() {
	for _, s := range a.servers {
		s.Shutdown()
	}
	a.servers = nil
}

// TXT is the record announced for cfg.
func TXT(cfg Config) []string {
	role := "peer"
	if cfg.Passive {
		role = "passive"
	}
	port := strconv.Itoa(cfg.Port)
	return []string{"v=" + txtVersion, "id=" + cfg.ID, "prio=" + strconv.Itoa(int(cfg.Priority)), "role=" + role,
		"port=" + port, "udp=" + port, "free=" + strconv.FormatUint(cfg.FreeBytes, 10)}
}

// ParseTXT reads a peer's TXT record; the address comes from the mDNS answer.
func ParseTXT(txt []string) (Found, error) {
	kv := map[string]string{}
	for _, t := range txt {
		k, v, _ := strings.Cut(t, "=")
		kv[k] = v
	}
	if kv["v"] != txtVersion {
		return Found{}, fmt.Errorf("protocol version %q is not %s", kv["v"], txtVersion)
	}
	f := Found{ID: kv["id"], Passive: kv["role"] == "passive"}
	if len(f.ID) != 32 || strings.Trim(f.ID, "0123456789abcdef") != "" {
		return Found{}, fmt.Errorf("node id %q is not 32 lowercase hex digits", f.ID)
	}
	prio, err := strconv.ParseInt(kv["prio"], 10, 32)
	if err != nil {
		return Found{}, fmt.Errorf("priority %q is not a number", kv["prio"])
	}
	port, err := strconv.ParseUint(kv["port"], 10, 16)
	if err != nil || port == 0 {
		return Found{}, fmt.Errorf("port %q is not a port", kv["port"])
	}
	f.Priority, f.Port = int32(prio), uint16(port)
	return f, nil
}

// Browse looks for warren peers until ctx ends, in short rounds far
// apart: each round asks once (zeroconf asks again a few seconds in, for
// an answer lost) and hears answers for roundListen, then it rests, the
// rests doubling from firstRest to maxRest as RFC 6762 §5.2 spaces a
// continuous query's repeats. Every member answers a browse by multicast
// on both families and every member parses every answer: a LAN of N
// members parses N² answers a browse, N³ a round of everyone's, so fifty
// members browsing in back-to-back rounds of 20-30 s (as warren did) kept
// two cores busy doing nothing else. A peer once found is kept by the
// peering layer's hellos; the rounds find newcomers (which, browsing as
// they start, find and greet the LAN first).
func Browse(ctx context.Context, cfg Config, found func(Found)) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	browseLoop(ctx, restAfter, firstRest, cfg.Lonely, func() error {
		err := browseRound(ctx, cfg, roundListen, found)
		if err != nil {
			cfg.Logger.Warn("mDNS browse failed; trying again", slog.Any("err", err))
		}
		return err
	})
	return nil
}

// browseLoop runs round until ctx ends, resting rests(n) after the n-th
// round that ran (a failed one, no network yet, does not count: 5 s). A
// rest is looked into every step: when lonely says this node knows no
// peer (a LAN outage outlived the peers' expiry: no one greets anyone any
// more), the rest ends and the rests start over from the first.
func browseLoop(ctx context.Context, rests func(int) time.Duration, step time.Duration, lonely func() bool, round func() error) {
	for n := 0; ctx.Err() == nil; {
		rest := rests(n)
		if err := round(); err != nil {
			rest = 5 * time.Second
		} else {
			n++
		}
		for end := time.Now().Add(rest); ctx.Err() == nil && time.Now().Before(end); {
			select {
			case <-ctx.Done():
			case <-time.After(min(step, time.Until(end))):
			}
			if lonely != nil && lonely() && n > 0 {
				n = 0
				break
			}
		}
	}
}

const (
	// roundListen is how long a round hears answers: on a busy LAN the
	// last of fifty members answers seconds late.
	roundListen = 5 * time.Second
	firstRest   = 15 * time.Second
	maxRest     = 5 * time.Minute
)

// restAfter is the pause after the round-th round (from 0): firstRest,
// doubling to maxRest, each with up to a fifth more at random so that
// members started together drift apart.
func restAfter(round int) time.Duration {
	rest := maxRest
	if round < 8 {
		rest = min(firstRest<<round, maxRest)
	}
	return rest + time.Duration(rand.Int64N(int64(rest/5)+1))
}

// newResolvers are a resolver per family the interfaces can browse
// (IPv4's, IPv6's): one per family, never one for both, because
// zeroconf's resolver for both leaks the IPv4 socket it opened when the
// IPv6 group cannot be joined (an IPv4-only machine), which every browse
// round would repeat. A resolver for one family opens one socket and
// closes it when it fails. The caller ends them with the Browse context.
func newResolvers(cfg Config) ([]*zeroconf.Resolver, error) {
	var rs []*zeroconf.Resolver
	var errs []error
	for _, family := range []zeroconf.IPType{zeroconf.IPv4, zeroconf.IPv6} {
		opts := []zeroconf.ClientOption{zeroconf.SelectIPTraffic(family)}
		if cfg.Interfaces != nil {
			opts = append(opts, zeroconf.SelectIfaces(cfg.Interfaces))
		}
		r, err := zeroconf.NewResolver(opts...)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rs = append(rs, r)
	}
	if len(rs) == 0 {
		return nil, fmt.Errorf("start mDNS resolver: %w", errors.Join(errs...))
	}
	return rs, nil
}

// addrsOf are an entry's addresses as Found gives them: IPv4 first, then
// IPv6; link-local IPv6 only with zone (the one interface browsed).
func addrsOf(e *zeroconf.ServiceEntry, zone string) []netip.Addr {
	var out []netip.Addr
	for _, ip := range e.AddrIPv4 {
		if a, ok := netip.AddrFromSlice(ip.To4()); ok {
			out = append(out, a)
		}
	}
	for _, ip := range e.AddrIPv6 {
		a, ok := netip.AddrFromSlice(ip.To16())
		switch {
		case !ok || a.Is4In6():
		case a.IsLinkLocalUnicast() && zone != "":
			out = append(out, a.WithZone(zone))
		case !a.IsLinkLocalUnicast():
			out = append(out, a)
		}
	}
	return out
}

// browseZone is the zone a link-local address seen by browsing cfg's
// interfaces is on: the one interface, when there is one.
func browseZone(cfg Config) string {
	ifs := cfg.Interfaces
	if ifs == nil {
		all, _ := net.Interfaces()
		for _, ifc := range all {
			if ifc.Flags&net.FlagUp != 0 && ifc.Flags&net.FlagMulticast != 0 && ifc.Flags&net.FlagLoopback == 0 {
				ifs = append(ifs, ifc)
			}
		}
	}
	if len(ifs) == 1 {
		return ifs[0].Name
	}
	return ""
}

func browseRound(ctx context.Context, cfg Config, d time.Duration, found func(Found)) error {
	rs, err := newResolvers(cfg)
	if err != nil {
		return err
	}
	zone := browseZone(cfg)
	// The resolvers' sockets close when rctx ends, whatever happens
	// below: zeroconf's loops end with the context they browse with.
	rctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	// One resolver's answers or two (a peer heard over both families is
	// found twice: found takes it twice, as it does round after round).
	// Every resolver browses, since zeroconf has no other way to close one
	// (a failed Browse closes its own), and each one's channel is drained
	// until zeroconf closes it as its loop ends: a loop blocked on a send
	// would never see the context end, nor close its socket.
	in := make(chan *zeroconf.ServiceEntry)
	var errs []error
	for _, r := range rs {
		ch := make(chan *zeroconf.ServiceEntry, 16)
		if err := r.Browse(rctx, ServiceWarren, domain, ch); err != nil {
			errs = append(errs, err)
			continue
		}
		go func() {
			for e := range ch {
				select {
				case in <- e:
				case <-rctx.Done():
				}
			}
		}()
	}
	if len(errs) == len(rs) {
		return fmt.Errorf("browse %s: %w", ServiceWarren, errors.Join(errs...))
	}
	for {
		select {
		case <-rctx.Done():
			return nil
		case e := <-in:
			f, err := ParseTXT(e.Text)
			if err != nil {
				cfg.Logger.Debug("ignoring an mDNS entry", slog.String("instance", e.Instance), slog.Any("err", err))
				continue
			}
			if f.Addrs = addrsOf(e, zone); f.ID == cfg.ID || len(f.Addrs) == 0 {
				continue
			}
			found(f)
		}
	}
}
