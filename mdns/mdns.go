package mdns

import (
	"context"
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
	Logger     *slog.Logger
}

// Found is a warren seen on the LAN.
type Found struct {
	ID       string
	Addr     netip.Addr
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

// Browse looks for warren peers until ctx ends, in rounds (zeroconf
// reports each entry once per round and never reports removals, so each
// round refreshes what is seen; the caller expires the rest).
func Browse(ctx context.Context, cfg Config, found func(Found)) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	for ctx.Err() == nil {
		// Rounds of 20-30s, jittered so that peers do not browse in step.
		round := 20*time.Second + time.Duration(rand.Int64N(int64(10*time.Second)))
		if err := browseRound(ctx, cfg, round, found); err != nil {
			cfg.Logger.Warn("mDNS browse failed; trying again", slog.Any("err", err))
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Second):
			}
		}
	}
	return nil
}

func browseRound(ctx context.Context, cfg Config, d time.Duration, found func(Found)) error {
	opts := []zeroconf.ClientOption{zeroconf.SelectIPTraffic(zeroconf.IPv4)}
	if cfg.Interfaces != nil {
		opts = append(opts, zeroconf.SelectIfaces(cfg.Interfaces))
	}
	r, err := zeroconf.NewResolver(opts...)
	if err != nil {
		return fmt.Errorf("start mDNS resolver: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	entries := make(chan *zeroconf.ServiceEntry, 16)
	if err := r.Browse(rctx, ServiceWarren, domain, entries); err != nil {
		return fmt.Errorf("browse %s: %w", ServiceWarren, err)
	}
	for {
		select {
		case <-rctx.Done():
			return nil
		case e, ok := <-entries:
			if !ok {
				<-rctx.Done()
				return nil
			}
			f, err := ParseTXT(e.Text)
			if err != nil {
				cfg.Logger.Debug("ignoring an mDNS entry", slog.String("instance", e.Instance), slog.Any("err", err))
				continue
			}
			if f.ID == cfg.ID || len(e.AddrIPv4) == 0 {
				continue
			}
			a, ok := netip.AddrFromSlice(e.AddrIPv4[0].To4())
			if !ok {
				continue
			}
			f.Addr = a
			found(f)
		}
	}
}
