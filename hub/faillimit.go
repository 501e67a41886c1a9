package hub

import (
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// FailLimit bounds failed authentications (hub tokens, sync tokens) per
// client address: after Max failures within a Window the address is
// refused (429) until the window ends, its token not even checked, so
// tokens cannot be guessed at speed and a flood costs no hashing and no
// log line per request. Other addresses are untouched. An IPv6 client
// counts by its /64, which one host may hold whole.
type FailLimit struct {
	max    int
	window time.Duration
	now    func() time.Time

	mu   sync.Mutex // guards seen: a check and its count are one step
	seen *simplelru.LRU[netip.Prefix, *failWindow]
}

// failWindow is one address's failures in its current window.
type failWindow struct {
	start time.Time
	fails int // in this window, those refused with 429 included
	prev  int // in the window just before, for the log
}

// FailLimitConfig configures a FailLimit; zero fields take the defaults.
type FailLimitConfig struct {
	Max    int           // failures allowed in a window (5)
	Window time.Duration // (a minute)
	// Addresses bounds the addresses remembered (4096, least recently
	// failed forgotten first): memory stays small whoever floods.
	Addresses int
	Now       func() time.Time
}

// Defaults of FailLimitConfig.
const (
	DefaultFailMax       = 5
	DefaultFailWindow    = time.Minute
	DefaultFailAddresses = 4096
)

// NewFailLimit makes a limit.
func NewFailLimit(cfg FailLimitConfig) *FailLimit {
	if cfg.Max <= 0 {
		cfg.Max = DefaultFailMax
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultFailWindow
	}
	if cfg.Addresses <= 0 {
		cfg.Addresses = DefaultFailAddresses
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	seen, _ := simplelru.NewLRU[netip.Prefix, *failWindow](cfg.Addresses, nil) // errs only on a size below 1
	return &FailLimit{max: cfg.Max, window: cfg.Window, now: cfg.Now, seen: seen}
}

// clientKey is what failures count under: the address, an IPv6 one's /64.
// A RemoteAddr that is no address (never, from net/http) counts as one.
func clientKey(remoteAddr string) netip.Prefix {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return netip.Prefix{}
	}
	a := ap.Addr().Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p
	}
	return netip.PrefixFrom(a, 32)
}

// Blocked says how long the client at remoteAddr must wait before it may
// try a token again: 0 when it may now. A refused try counts as a failure.
func (l *FailLimit) Blocked(remoteAddr string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	w, ok := l.seen.Peek(clientKey(remoteAddr))
	if !ok {
		return 0
	}
	left := w.start.Add(l.window).Sub(l.now())
	if left <= 0 || w.fails < l.max {
		return 0
	}
	w.fails++
	return left
}

// Failure is what Failed tells of a client's failures.
type Failure struct {
	// First says this is the first failure of the client's window: the
	// one to log (the rest of the window is not).
	First bool
	// Before counts the failures of the window just before, refused ones
	// included (0: none, or longer ago).
	Before int
}

// Failed counts a failed try from the client at remoteAddr.
func (l *FailLimit) Failed(remoteAddr string) Failure {
	l.mu.Lock()
	defer l.mu.Unlock()
	key, now := clientKey(remoteAddr), l.now()
	w, ok := l.seen.Get(key)
	if !ok {
		l.seen.Add(key, &failWindow{start: now, fails: 1})
		return Failure{First: true}
	}
	if end := w.start.Add(l.window); !now.Before(end) {
		prev := w.fails
		if now.Sub(end) >= l.window {
			prev = 0 // a quiet window in between
		}
		*w = failWindow{start: now, fails: 1, prev: prev}
		return Failure{First: true, Before: prev}
	}
	w.fails++
	return Failure{}
}
