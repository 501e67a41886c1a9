package door

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DestinationError is an upstream address warren will not connect to: a
// client must not reach, through warren, what listens only on warren's own
// machine or its link (squid's to_localhost rule, and cloud metadata at
// 169.254.169.254), nor have such answers cached and shared.
type DestinationError struct {
	Target string     // what was asked for: host:port
	Addr   netip.Addr // the address it resolved to
	Why    string     // "loopback", "link-local", ...
}

func (e *DestinationError) Error() string {
	return fmt.Sprintf("upstream %s is %s, a %s address: warren does not fetch from it (to allow it, add it to allow_upstream, e.g. --allow-upstream %s)",
		e.Target, e.Addr, e.Why, netip.PrefixFrom(e.Addr, e.Addr.BitLen()))
}

// destGuard decides which addresses upstream connections may reach. It is
// consulted by the dialer on the resolved address, right before the
// connect, so a name whose DNS answer changes between a check and the dial
// (rebinding) gains nothing: what is dialled is what was checked.
type destGuard struct {
	allow []netip.Prefix
	now   func() time.Time

	mu    sync.Mutex // guards own and ownAt
	own   map[netip.Addr]bool
	ownAt time.Time
}

func newDestGuard(allow []netip.Prefix, now func() time.Time) *destGuard {
	return &destGuard{allow: allow, now: now}
}

// check returns a *DestinationError when a may not be dialled. An IPv6
// address that carries an IPv4 one (v4-mapped, NAT64, 6to4, Teredo, the
// old v4-compatible form) is judged as that IPv4 address too: a NAT64
// gateway asked for 64:ff9b::7f00:1 connects to its own 127.0.0.1.
func (g *destGuard) check(target string, a netip.Addr) error {
	a = a.Unmap().WithZone("")
	if g.allowed(a) {
		return nil
	}
	why := g.refused(a)
	if v4, how, ok := embeddedIPv4(a); ok && why == "" && !g.allowed(v4) {
		if w := g.refused(v4); w != "" {
			why = fmt.Sprintf("%s address of %s, a %s", how, v4, w) // "...is 64:ff9b::7f00:1, a NAT64 address of 127.0.0.1, a loopback address"
		}
	}
	if why == "" {
		return nil
	}
	return &DestinationError{Target: target, Addr: a, Why: why}
}

func (g *destGuard) allowed(a netip.Addr) bool {
	for _, p := range g.allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// refused says why a is refused, "" when it is not.
func (g *destGuard) refused(a netip.Addr) string {
	switch {
	case a.IsLoopback():
		return "loopback"
	case a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast():
		return "link-local"
	case a.IsUnspecified():
		return "unspecified"
	case a.IsMulticast():
		return "multicast"
	case g.isOwn(a):
		return "this machine's own"
	}
	return ""
}

// Prefixes of IPv6 addresses that carry an IPv4 address.
var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")   // RFC 6052, well-known
	nat64Loc  = netip.MustParsePrefix("64:ff9b:1::/48") // RFC 8215, local use
	sixToFour = netip.MustParsePrefix("2002::/16")      // RFC 3056
	teredo    = netip.MustParsePrefix("2001::/32")      // RFC 4380
	v4Compat  = netip.MustParsePrefix("::/96")          // RFC 4291, deprecated
)

// embeddedIPv4 is the IPv4 address an IPv6 address carries, and how.
func embeddedIPv4(a netip.Addr) (netip.Addr, string, bool) {
	if !a.Is6() {
		return netip.Addr{}, "", false
	}
	b := a.As16()
	switch {
	case nat64.Contains(a), nat64Loc.Contains(a):
		return netip.AddrFrom4([4]byte(b[12:16])), "NAT64", true
	case sixToFour.Contains(a):
		return netip.AddrFrom4([4]byte(b[2:6])), "6to4", true
	case teredo.Contains(a):
		// The client's address, obfuscated (every bit inverted).
		return netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]}), "Teredo", true
	case v4Compat.Contains(a) && !a.IsUnspecified() && !a.IsLoopback():
		return netip.AddrFrom4([4]byte(b[12:16])), "IPv4-compatible", true
	}
	return netip.Addr{}, "", false
}

// isOwn reports whether a is one of this machine's interface addresses,
// which are re-read at most every 10 seconds (they change with DHCP).
func (g *destGuard) isOwn(a netip.Addr) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.own == nil || g.now().Sub(g.ownAt) > 10*time.Second {
		own := map[netip.Addr]bool{}
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, ia := range addrs {
				if ipn, ok := ia.(*net.IPNet); ok {
					if x, ok := netip.AddrFromSlice(ipn.IP); ok {
						own[x.Unmap()] = true
					}
				}
			}
		}
		g.own, g.ownAt = own, g.now()
	}
	return g.own[a]
}

// control is the dialer's hook: address is the resolved ip:port about to
// be connected.
func (g *destGuard) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("upstream address %q: %w", address, err)
	}
	return g.check(address, ap.Addr())
}

// dialer is a net.Dialer that only connects where the guard allows.
func (g *destGuard) dialer(timeout time.Duration) *net.Dialer {
	return &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second, Control: g.control}
}

// checkHost resolves host (host:port or a bare host) and checks every
// address it names, for the paths that answer before dialling (CONNECT and
// passed-through methods): a refusal is a clear 403, not a dial error
// inside someone else's response. The dial is still guarded.
func (g *destGuard) checkHost(ctx context.Context, hostport string) error {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if a, err := netip.ParseAddr(host); err == nil {
		return g.check(hostport, a)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil // the dial reports it, with its own error
	}
	for _, a := range addrs {
		if err := g.check(hostport, a); err != nil {
			return err
		}
	}
	return nil
}

// RedirectError is an upstream redirect warren will not follow: from https
// to plain http (the bytes would cross the network in the clear and then
// be served as https under the site CA; apt refuses such a redirect too),
// or one too many.
type RedirectError struct {
	From, To string
	Why      string
}

func (e *RedirectError) Error() string {
	return fmt.Sprintf("upstream redirected %s to %s: %s; not followed", e.From, e.To, e.Why)
}

// maxRedirects bounds the redirects one upstream request follows.
const maxRedirects = 5

// checkRedirect is the upstream client's redirect policy: https stays
// https, at most maxRedirects hops. Each hop's destination is checked as
// the first one was, by the guard's dialer, on the address it connects to.
func checkRedirect(req *http.Request, via []*http.Request) error {
	from := via[len(via)-1].URL
	switch {
	case len(via) > maxRedirects:
		return &RedirectError{From: via[0].URL.Redacted(), To: req.URL.Redacted(), Why: fmt.Sprintf("more than %d redirects", maxRedirects)}
	case via[0].URL.Scheme == "https" && req.URL.Scheme != "https":
		return &RedirectError{From: from.Redacted(), To: req.URL.Redacted(), Why: "a downgrade from https to " + req.URL.Scheme}
	}
	return nil
}
