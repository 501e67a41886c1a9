package door

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/fill"
	"github.com/warren-cache/warren/hub"
	"github.com/warren-cache/warren/internal/taskgroup"
	"github.com/warren-cache/warren/rpm"
)

// Store is what the door needs of the cache.
type Store interface {
	Known(url string) (cachestore.Known, error)
	PutKnown(facts map[string]cachestore.Known) error
	Cached(url string) (cachestore.Cached, error)
	PutCached(url string, c cachestore.Cached) error
	Stat(d cachestore.Digest) (cachestore.BlobInfo, error)
	// OpenHit opens a blob to serve it: read through Content.
	OpenHit(d cachestore.Digest, scope string) (*cachestore.Blob, cachestore.BlobInfo, error)
	ReadBlob(d cachestore.Digest) (*cachestore.Blob, error)
	KnownKeys(fn func(key string)) error
	KnownPrefix(prefix string, fn func(key string, k cachestore.Known)) error
	Learnt(lister uint64, at int64, d cachestore.Digest) error
	LearntFrom(lister uint64) (cachestore.Digest, error)
	LearntAt(lister uint64) (int64, cachestore.Digest, error)
	BeginFill(key string) (*cachestore.Fill, bool)
	Filling(key string) (*cachestore.Fill, bool)
	PinGenerations(owner string, gens []cachestore.PinGen, keep int) ([]cachestore.PinGen, error)
	RecordChange(c cachestore.Change) (uint64, error)
	// ScopeSecret keys private scopes (private.go).
	ScopeSecret() ([]byte, error)
}

var _ Store = (*cachestore.Store)(nil)

// Peers is what the door needs of the LAN (package peering provides it).
type Peers interface {
	// Source is the LAN as a fill source of blob d (size bytes, -1
	// unknown); progress feeds the heartbeats should this node be elected
	// to download it. Its question starts at once.
	Source(ctx context.Context, d cachestore.Digest, size int64, progress func() int64) fill.Source
	// Again is the LAN as the last source of a fill whose others all
	// failed: it asks afresh who has d now.
	Again(d cachestore.Digest, size int64, progress func() int64) fill.Source
	// From is the LAN as a source that first tries peers, which a hub says
	// receive d from it, then (as Again) whoever has d or receives it.
	From(peers []netip.AddrPort, d cachestore.Digest, size int64, progress func() int64) fill.Source
	// Done ends this node's part in d; ok announces that it has it now.
	Done(d cachestore.Digest, ok bool)
}

// Hub is what the door needs of one of its site's hubs (package hub's
// Parent provides it): an upstream that answers as the origin would, or
// refuses with a *hub.RefusedError or *hub.BusyError.
type Hub interface {
	Name() string
	Do(req *http.Request) (*http.Response, error)
	// Received counts the bytes a fill took from it.
	Received(n int64)
}

var _ Hub = (*hub.Parent)(nil)

// Config holds the door's settings.
type Config struct {
	// AllowUpstream are networks upstream may be in although they are
	// loopback, link-local, unspecified or this machine's own addresses,
	// which are refused otherwise.
	AllowUpstream []netip.Prefix
	// UpstreamRoots are the CAs trusted for https upstreams; nil: the
	// system's (SSL_CERT_FILE and SSL_CERT_DIR are honoured).
	UpstreamRoots *x509.CertPool
	// IndexTTL is how long a URL-cached file (Release, Packages, ...) is
	// served without asking upstream again (0: always asked).
	IndexTTL time.Duration
	// NegativeTTL is how long a 404 from upstream is remembered (0: not at all).
	NegativeTTL time.Duration
	// StallTimeout moves a fill on to its next source when the current one
	// makes too little progress for this long (0: fill.DefaultStallTimeout).
	StallTimeout time.Duration
	// ShareMinSize: artifacts smaller than this go upstream at once, the
	// peers' answers only a fallback (0: peers first for every size).
	ShareMinSize int64
	// Peers finds blobs of known digests on the LAN before upstream; nil:
	// no peering.
	Peers Peers
	// Hubs are the site's hubs, in failover order: asked after the LAN's
	// peers and before the origin, for index files and feed answers too.
	Hubs []Hub
	// HubOnly: never the origin directly; with no hub answering, a fill
	// fails with a clear error.
	HubOnly bool
	// KeepGenerations, on a hub, holds a new Release or repomd.xml back
	// until the hub holds the index files of it that the site uses, and
	// keeps that many generations' index files pinned (generations.go);
	// 0 on a node.
	KeepGenerations int
	// PreloadOnly: a file kept by URL is served as it is, never
	// revalidated (a hub in preload mode).
	PreloadOnly bool
	// Record, when set, is told of every file stored that anyone may read
	// (a hub's change feed); cached is the URL-cache entry of a file kept
	// by URL.
	Record func(key, kind string, d cachestore.Digest, size int64, cached *cachestore.Cached)
	// Keys are the repositories' signing keys (verify_signatures: auto):
	// their top metadata is checked before anything is learnt from it,
	// and a hub stores none that fails (signatures.go); nil: none checked.
	Keys Keys
	// WAN is told of bytes taken from the origin, by ecosystem.
	WAN func(eco string, n int64)
	// Lists, when set, says which lists of mirrors are trusted to make
	// mirror groups (listtrust.go): those the repo files here name and
	// mirror_lists. nil: only those a hub answers in the site's order.
	Lists func() *ListPolicy
	// Intercepts says whether warren answers CONNECTs to an https host
	// itself (the site CA may sign for it): a mirror group's https
	// mirrors on such hosts are cacheable, and put first with the http
	// ones. nil: none is.
	Intercepts func(host string) bool
	// Transport, when set, wraps the upstream transport (the Chocolatey
	// feeds' request budgets).
	Transport func(http.RoundTripper) http.RoundTripper
	// Dial, when set, makes upstream connections instead of TCP (the
	// simulator's network): the destination rules, which check the
	// addresses real sockets connect to, do not apply to it.
	Dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	Logger *slog.Logger
	Now    func() time.Time
}

// Stats are the door's running totals.
type Stats struct {
	BytesFetched atomic.Int64 // taken from the origin
	BytesPeers   atomic.Int64 // taken from LAN peers
	BytesHub     atomic.Int64 // taken from the site's hubs
	// HubWaits counts a hub's "busy, come back" answers waited out;
	// HubHints its "take it from these LAN peers" answers.
	HubWaits   atomic.Int64
	HubHints   atomic.Int64
	Mismatches atomic.Int64
	// UpstreamFetches counts requests fills made to the origin (the
	// WAN), HubFetches those to the site's hubs.
	UpstreamFetches atomic.Int64
	HubFetches      atomic.Int64
}

// Door is the one way bytes enter the store. Close stops its fills.
type Door struct {
	cfg   Config
	store Store
	log   *slog.Logger
	now   func() time.Time
	up    *http.Client
	tr    *http.Transport
	guard *destGuard
	// via marks our own upstream requests, so that a request that comes
	// back to us (a loop) is refused instead of multiplied.
	via string
	// scopeSecret keys the private scopes of requests with credentials.
	scopeSecret []byte

	ctx    context.Context // parent of every fill; no client owns it
	cancel context.CancelFunc
	fills  taskgroup.Group // fills and learns: Close waits for them

	// neg is URL -> until when upstream's 404 stands, the least recently
	// used forgotten first (a forgotten 404 only costs a request).
	neg *lru.Cache[string, time.Time]
	// relearnt are the metadata blobs learnt on a hit since start, by lister (see
	// learnIfNew), the least recently used forgotten first.
	relearnt *lru.Cache[string, struct{}]
	// besideZck are the repomd.xml files whose plain primary.xml was
	// fetched for a zchunk client (zchunk.go).
	besideZck *lru.Cache[cachestore.Digest, struct{}]
	// listings are the files of repomd.xml blobs a metalink names
	// (mirrors.go), read once.
	listings *lru.Cache[cachestore.Digest, []rpm.Data]
	// untrusted are the lists of mirrors whose refusal was logged.
	untrusted *lru.Cache[string, struct{}]

	engine   *fill.Engine
	learning learning
	decoders decoders
	// known counts the learnt URL -> digest facts by ecosystem; recounted
	// when asked after a learn.
	knownMu    sync.Mutex // guards known and knownAt
	known      map[string]int64
	knownAt    time.Time
	knownDirty atomic.Bool

	mirrors mirrorGroups // the lists of mirrors read (mirrors.go)

	stats   Stats
	waiting waitList   // fills waiting out a busy hub, for the page
	sigs    signatures // checked top files, and the repositories' states
}

// New builds the door.
func New(cfg Config, store Store) (*Door, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.WAN == nil {
		cfg.WAN = func(string, int64) {}
	}
	guard := newDestGuard(cfg.AllowUpstream, cfg.Now)
	tr := newTransport(guard, cfg.UpstreamRoots)
	if cfg.Dial != nil {
		tr.DialContext = cfg.Dial
	}
	var rt http.RoundTripper = tr
	if cfg.Transport != nil {
		rt = cfg.Transport(tr)
	}
	var tok [6]byte
	_, _ = rand.Read(tok[:])
	s := &Door{
		cfg:   cfg,
		store: store,
		log:   cfg.Logger,
		now:   cfg.Now,
		guard: guard,
		tr:    tr,
		// Redirects are followed (https stays https): the bytes are
		// verified whatever mirror ends up sending them.
		up:  &http.Client{CheckRedirect: checkRedirect, Transport: rt},
		via: "1.1 warren-" + hex.EncodeToString(tok[:]),
	}
	var err error
	if s.scopeSecret, err = store.ScopeSecret(); err != nil {
		// A read-only index (a full disk at start): scopes for this run
		// only; private entries kept before are not found, never leaked.
		s.log.Warn("cannot read the credential scope secret from the index; private repositories are cached for this run only", slog.Any("err", err))
		s.scopeSecret = make([]byte, 32)
		_, _ = rand.Read(s.scopeSecret)
	}
	s.neg, _ = lru.New[string, time.Time](10000)
	s.relearnt, _ = lru.New[string, struct{}](4096)
	s.besideZck, _ = lru.New[cachestore.Digest, struct{}](1024)
	s.untrusted, _ = lru.New[string, struct{}](256)
	s.listings, _ = lru.New[cachestore.Digest, []rpm.Data](256)
	s.sigs = newSignatures()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.engine = fill.New(fill.Config{StallTimeout: cfg.StallTimeout, Logger: cfg.Logger, Now: cfg.Now})
	s.decoders = findDecoders()
	if s.decoders.xz == "" {
		s.log.Info("no xz on PATH: .xz indexes are learnt with Go's decoder, about half as fast (install xz-utils)")
	}
	return s, nil
}

func newTransport(g *destGuard, roots *x509.CertPool) *http.Transport {
	d := g.dialer(10 * time.Second)
	return &http.Transport{
		Proxy:                 nil, // never follow HTTP_PROXY: we are the proxy
		DialContext:           d.DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   8,
		DisableCompression:    true, // store the bytes exactly as upstream sends them
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots},
	}
}

// Close stops every fill and learn and waits for them.
func (s *Door) Close() error {
	s.cancel()
	s.fills.Close()
	s.tr.CloseIdleConnections()
	return nil
}

// Stats are the door's running totals.
func (s *Door) Stats() *Stats { return &s.stats }

// Via is the Via token this warren adds to what it sends upstream: a
// request that carries it came back (a loop).
func (s *Door) Via() string { return s.via }

// Transport is the upstream transport, with the destination rules, for
// what the front passes through unseen (CONNECT tunnels' dials use
// Dialer).
func (s *Door) Transport() *http.Transport { return s.tr }

// Dialer dials upstream under the destination rules.
func (s *Door) Dialer() *net.Dialer { return s.guard.dialer(10 * time.Second) }

// CheckHost refuses (a *DestinationError) a host:port that may not be
// reached upstream, resolving a name.
func (s *Door) CheckHost(ctx context.Context, hostport string) error {
	return s.guard.checkHost(ctx, hostport)
}

// CheckAddr refuses (a *DestinationError) an upstream address literal.
func (s *Door) CheckAddr(target string, a netip.Addr) error { return s.guard.check(target, a) }

// Client is the upstream client (redirects followed, https kept https,
// destinations checked) for requests the door does not keep: a feed's
// calls, which keep their answers themselves.
func (s *Door) Client() *http.Client { return s.up }

// HubWaits are the fills waiting out a busy hub, for the page.
func (s *Door) HubWaits() []HubWait { return s.waiting.list() }

// Plan says how to serve u for a request whose credential for its origin
// (if any) CredentialOf took.
func (s *Door) Plan(ctx context.Context, u *url.URL, cred Credential) Plan {
	return s.plan(ctx, u, cred)
}

// Stored is what the store holds for a plan: the open blob of its digest
// (the caller closes it), or the copy of its URL (fresh, or to revalidate).
type Stored struct {
	Blob   *cachestore.Blob
	Info   cachestore.BlobInfo
	Cached *cachestore.Cached
	Fresh  bool // servable without asking upstream
}

// Lookup finds what the store holds for p that p's scope may read.
func (s *Door) Lookup(p Plan) (Stored, error) { return s.lookup(p, s.cfg.PreloadOnly) }

// lookup is Lookup; asHeld serves a URL's copy however old.
func (s *Door) lookup(p Plan, asHeld bool) (Stored, error) {
	if !s.confirmed(p) {
		return Stored{}, nil // the origin first (installer.go)
	}
	if !p.Digest.IsZero() {
		f, bi, err := s.store.OpenHit(p.Digest, p.Cred.scope)
		switch {
		case errors.Is(err, cachestore.ErrOtherScope):
			// Another scope's: this request's own sources must deliver
			// the bytes to prove it may have them. No use of it.
			return Stored{}, nil
		case err == nil:
			return Stored{Blob: f, Info: bi, Fresh: true}, nil
		case errors.Is(err, cachestore.ErrNotFound):
			return s.lookupAlternate(p, asHeld)
		}
		return Stored{}, err
	}
	c, err := s.store.Cached(p.Key)
	switch {
	case err == nil:
		// A preload-only hub serves what it holds as it is: asking
		// upstream again is what its mode forbids.
		return Stored{Cached: &c, Fresh: asHeld || s.now().Sub(c.Fetched) < s.cfg.IndexTTL}, nil
	case errors.Is(err, cachestore.ErrNotFound):
		return Stored{}, nil
	}
	return Stored{}, err
}

// lookupAlternate finds, for a metalink-hashed repomd.xml whose current
// version the site does not hold, the alternate (the previous push, still
// valid) its URL answered within index_ttl: mirrors not synced yet serve
// it, and asking them again on every request would only bring it again.
// Once index_ttl has passed the mirror is asked again (it may have synced).
func (s *Door) lookupAlternate(p Plan, asHeld bool) (Stored, error) {
	if len(p.Also) == 0 {
		return Stored{}, nil
	}
	c, err := s.store.Cached(p.Key)
	if err != nil || !slices.Contains(p.Also, c.Digest) || !asHeld && s.now().Sub(c.Fetched) >= s.cfg.IndexTTL {
		return Stored{}, nil
	}
	f, bi, err := s.store.OpenHit(c.Digest, p.Cred.scope)
	if err != nil {
		return Stored{}, nil
	}
	return Stored{Blob: f, Info: bi, Fresh: true}, nil
}

// OpenCached opens the blob of a URL's copy for p, if p may read it.
func (s *Door) OpenCached(p Plan, c cachestore.Cached) (*cachestore.Blob, cachestore.BlobInfo, bool) {
	// A URL's copy is its scope's: another scope's blob is never served.
	f, bi, err := s.store.OpenHit(c.Digest, p.Cred.scope)
	if err != nil {
		return nil, bi, false
	}
	return f, bi, true
}

// Hit is told of a stored blob about to answer p: metadata never learnt
// from (a rebuilt index) is learnt now, before the client has it.
func (s *Door) Hit(p Plan, d cachestore.Digest) {
	if p.Meta != "" {
		s.learnIfNew(p, d)
	}
}

// Alternate opens a blob held of another digest p's bytes may have (a
// metalink's previous repomd.xml), if p may read one.
func (s *Door) Alternate(p Plan) (*cachestore.Blob, cachestore.BlobInfo, bool) {
	for _, d := range p.Also {
		if f, bi, err := s.store.OpenHit(d, p.Cred.scope); err == nil {
			return f, bi, true
		}
	}
	return nil, cachestore.BlobInfo{}, false
}

// Negative says whether upstream answered 404 for p lately.
func (s *Door) Negative(p Plan) bool { return s.negative(p.Key) }

// Begin joins p's one flight, or starts it (leader) on the door's own
// context, from p's ordered sources; prev is the URL's copy to revalidate.
// The fill's readers follow its bytes; its last byte waits for the verify.
func (s *Door) Begin(p Plan, who Asker, prev *cachestore.Cached) (f *cachestore.Fill, leader bool) {
	if p.Kind == "installer" && !p.Unconfirmed {
		// The flight that is confirming it, if any: its digest is
		// recorded for the URL before its blob is stored.
		if uf, ok := s.store.Filling(unconfirmedFillKey(p)); ok {
			return uf, false
		}
	}
	f, leader = s.store.BeginFill(p.FillKey())
	if leader {
		s.startFill(f, who, p, prev)
	}
	return f, leader
}

// Fetch brings p's bytes into the store, as a request would (the store,
// one flight, the ordered sources, learning, the change feed), and waits
// for them: for warren's own callers (preload, a hub's generations,
// replication). opts.Sources, when set, replaces the ordered sources (a
// source hub's blob endpoint); its result is verified and learnt all the
// same. It returns the stored blob's digest.
func (s *Door) Fetch(ctx context.Context, p Plan, who Asker, opts FetchOptions) (cachestore.Digest, error) {
	for range 3 {
		// Fresh by index_ttl whatever the mode: a preload run is how a
		// preload-only hub learns what changed upstream.
		have, err := s.lookup(p, false)
		if err != nil {
			return cachestore.Digest{}, err
		}
		switch {
		case have.Blob != nil:
			have.Blob.Close()
			s.learnHeld(p, have.Info.Digest, opts.Newest)
			return have.Info.Digest, nil
		case have.Cached != nil && (have.Fresh || opts.Stale):
			s.learnHeld(p, have.Cached.Digest, opts.Newest)
			return have.Cached.Digest, nil
		}
		if err := ctx.Err(); err != nil {
			return cachestore.Digest{}, err // a run cut short starts nothing more
		}
		f, leader := s.store.BeginFill(p.FillKey())
		if leader {
			// The fill is the door's, not the caller's: a client that
			// joined it is not cut off when the run that started it
			// stops (a window that closes, a run canceled); only the
			// caller's wait ends. Shutdown ends it.
			if !s.fills.Go(func() { s.runFillWith(s.ctx, f, who, p, have.Cached, opts) }) {
				f.Abort(ErrShuttingDown)
			}
		}
		d, err := f.Result(ctx)
		switch {
		case err == nil:
			return d, nil
		case errors.Is(err, ErrNotModified) && have.Cached != nil:
			return have.Cached.Digest, nil
		case errors.Is(err, ErrAlreadyStored), errors.Is(err, ErrNotModified):
			continue
		}
		return cachestore.Digest{}, fmt.Errorf("fetch %s: %w", p.ShownURL(), err)
	}
	return cachestore.Digest{}, fmt.Errorf("fetch %s: it kept changing while it was fetched", p.ShownURL())
}

// learnHeld learns a held metadata blob the way Fetch was asked to.
func (s *Door) learnHeld(p Plan, d cachestore.Digest, newest bool) {
	switch {
	case p.Meta == "":
	case newest:
		s.learnNewest(p, d)
	default:
		s.learnIfNew(p, d)
	}
}

// PinGeneration pins, on a hub, the index files of top metadata file p
// (a Release, a repomd.xml) at next and at prev, the one before it, as a
// fetched one's are (generations.go): a node midway through its update
// still gets what the one it has lists.
func (s *Door) PinGeneration(p Plan, prev, next cachestore.Digest) {
	if s.cfg.KeepGenerations <= 0 || (p.Meta != MetaRelease && p.Meta != MetaRepomd) {
		return
	}
	scope, err := metaScope(p)
	if err != nil {
		return
	}
	nextL, err := s.readListing(p, scope, next)
	if err != nil {
		return
	}
	gens := []cachestore.PinGen{{Gen: next, Digests: s.heldOf(nextL)}}
	if prevL, err := s.readListing(p, scope, prev); err == nil {
		gens = append(gens, cachestore.PinGen{Gen: prev, Digests: s.heldOf(prevL)})
	}
	if _, err := s.store.PinGenerations(p.Key, gens, s.cfg.KeepGenerations); err != nil {
		s.log.Warn("could not pin the index files of the last generations; they may be evicted early",
			slog.String("url", p.ShownURL()), slog.Any("err", err))
	}
}

// FetchOptions change how Fetch gets p's bytes.
type FetchOptions struct {
	// Sources replace the ordered sources (store, LAN, hubs, origin).
	Sources []fill.Source
	// Stale takes a kept copy of a URL however old (a preload run's
	// revalidation is its own concern).
	Stale bool
	// Unrecorded: the caller records what it stored in the change feed
	// itself (replication, with the URL-cache entry it carries).
	Unrecorded bool
	// Newest: a metadata file held is the newest of its name (replication
	// applied it): learnt from unless this very blob was, replacing what
	// an older one taught. (Otherwise a file of an older generation, as a
	// client midway through its update asks for, never takes facts back.)
	Newest bool
}

// Learnt waits until no learn in progress teaches about key (or ctx ends),
// then says what is known of it: what a request would plan with.
func (s *Door) Learnt(ctx context.Context, key string) (cachestore.Known, error) {
	s.learning.wait(ctx, key, nil)
	return s.store.Known(key)
}

// Drive runs the engine into a sink that is not the store (the response
// itself, when the disk has no room), from p's upstream sources: the
// bytes are verified as they pass, as a stored fill's are.
func (s *Door) Drive(ctx context.Context, sink fill.Filler, p Plan, who Asker) error {
	if p.listHashed() {
		// As a stored fill is held (committingFill.held): a stale
		// mirror's is refused unseen, the next mirror's sent instead.
		sink = newHeldFill(sink, p.Digest.Algo)
	}
	_, err := s.run(ctx, sink, p, s.upstreamSources(p, who, nil, nil))
	return err
}

// heldFill keeps what a fill into a response receives in memory until it
// verifies, then hands it to the response: for a small file whose bytes
// reach no reader before they verify, filled without the store.
type heldFill struct {
	fill.Filler
	buf  []byte
	h    hash.Hash
	algo string
}

func newHeldFill(f fill.Filler, algo string) *heldFill {
	return &heldFill{Filler: f, h: cachestore.Digest{Algo: algo}.NewHash(), algo: algo}
}

// errTooLargeToHold ends a held fill past maxTopBytes.
var errTooLargeToHold = fmt.Errorf("more than %d bytes to hold until verified without the store", maxTopBytes)

func (h *heldFill) Write(b []byte) (int, error) {
	if len(h.buf)+len(b) > maxTopBytes {
		return 0, errTooLargeToHold
	}
	h.buf = append(h.buf, b...)
	h.h.Write(b)
	return len(b), nil
}

func (h *heldFill) Written() int64 { return int64(len(h.buf)) }

func (h *heldFill) Digest() cachestore.Digest {
	return cachestore.Digest{Algo: h.algo, Hex: hex.EncodeToString(h.h.Sum(nil))}
}

func (h *heldFill) Hold() {}

// Restart begins again: nothing reached the response.
func (h *heldFill) Restart() error {
	h.buf, h.h = h.buf[:0], cachestore.Digest{Algo: h.algo}.NewHash()
	return nil
}

// Commit hands the verified bytes to the response, which checks them as
// it would have as they came.
func (h *heldFill) Commit(want cachestore.Digest, size int64) (cachestore.Digest, error) {
	if _, err := h.Filler.Write(h.buf); err != nil {
		return cachestore.Digest{}, err
	}
	return h.Filler.Commit(want, size)
}

// negative remembers an upstream 404 for NegativeTTL.
func (s *Door) negative(u string) bool {
	until, ok := s.neg.Get(u)
	if ok && s.now().After(until) {
		s.neg.Remove(u)
		return false
	}
	return ok
}

func (s *Door) rememberNotFound(u string) {
	if s.cfg.NegativeTTL <= 0 {
		return
	}
	s.neg.Add(u, s.now().Add(s.cfg.NegativeTTL))
}

// IsNoSpace says whether err is the disk having no room: the fill (or a
// copy out of it) failed for the store's sake, not the source's.
func IsNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, cachestore.ErrNoSpace)
}

// Upstream sends a request the door keeps nothing of (a feed call, whose
// answer its caller keeps) to the first hub that answers it, then the
// origin unless hub_only, speaking for who.
func (s *Door) Upstream(req *http.Request, who Asker) (*http.Response, error) {
	s.setUpstreamHeaders(req, who)
	return s.upstreamDo(req, false)
}

// LearnFacts records facts that an answer warren keeps itself lists (a
// NuGet feed's entries: each package's hash), as a learn of an index file
// does.
func (s *Door) LearnFacts(facts map[string]cachestore.Known) error {
	if len(facts) == 0 {
		return nil
	}
	err := s.store.PutKnown(facts)
	s.knownDirty.Store(true)
	if err != nil {
		return fmt.Errorf("record %d hashes: %w", len(facts), err)
	}
	return nil
}

// Holds says whether d is here for anyone (not a private scope's).
func (s *Door) Holds(d cachestore.Digest) bool {
	bi, err := s.store.Stat(d)
	return err == nil && !bi.Private()
}

// ReadIndex opens a stored index file's bytes, decompressed as its name
// says, bounded as a learn's are.
func (s *Door) ReadIndex(ctx context.Context, d cachestore.Digest, name string) (io.ReadCloser, error) {
	b, err := s.store.ReadBlob(d)
	if err != nil {
		return nil, err
	}
	zr, err := s.decoders.open(ctx, name, b.File, maxIndexBytes)
	if err != nil {
		b.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{zr, closers{zr, b}}, nil
}

type closers []io.Closer

func (c closers) Close() error {
	for _, x := range c {
		x.Close()
	}
	return nil
}

// Keep stores bytes warren already holds in hand (a feed answer it fetched
// and read) under key, as a fill from the origin would store them: hashed,
// kept by URL with meta (the headers to give back), recorded in the change
// feed. It returns the blob's digest.
func (s *Door) Keep(ctx context.Context, key, kind string, body []byte, meta map[string]string) (cachestore.Digest, error) {
	p := Plan{URL: key, Key: key, Kind: kind, Eco: "other", Size: int64(len(body))}
	f, leader := s.store.BeginFill(p.FillKey())
	if leader {
		src := &heldSource{body: body, meta: meta}
		if !s.fills.Go(func() { s.runFillWith(s.ctx, f, Asker{}, p, nil, FetchOptions{Sources: []fill.Source{src}}) }) {
			f.Abort(ErrShuttingDown)
		}
	}
	d, err := f.Result(ctx)
	if err != nil {
		return d, fmt.Errorf("keep %s: %w", key, err)
	}
	return d, nil
}

// KeepBlob stores bytes warren made itself (a hub's rewritten package)
// under their digest d, verified against it as any fill is: found by
// digest, not kept by URL, and not offered in the change feed (they are
// this warren's own making).
func (s *Door) KeepBlob(ctx context.Context, key, kind string, body []byte, d cachestore.Digest) error {
	if s.Holds(d) {
		return nil
	}
	p := Plan{URL: key, Key: key, Kind: kind, Eco: EcoChocolatey, Digest: d, Size: int64(len(body))}
	f, leader := s.store.BeginFill(p.FillKey())
	if leader {
		src := &heldSource{body: body}
		if !s.fills.Go(func() {
			s.runFillWith(s.ctx, f, Asker{}, p, nil, FetchOptions{Sources: []fill.Source{src}, Unrecorded: true})
		}) {
			f.Abort(ErrShuttingDown)
		}
	}
	if _, err := f.Result(ctx); err != nil {
		return fmt.Errorf("keep %s: %w", key, err)
	}
	return nil
}

// heldSource is bytes in hand as a fill source.
type heldSource struct {
	body []byte
	meta map[string]string
}

func (h *heldSource) Open(_ context.Context, off int64) (*fill.Stream, error) {
	if off > int64(len(h.body)) {
		return nil, fill.Stop(fmt.Errorf("offset %d past the %d bytes in hand", off, len(h.body)))
	}
	return &fill.Stream{Body: io.NopCloser(bytes.NewReader(h.body[off:])), From: "warren", Size: int64(len(h.body)), Meta: h.meta}, nil
}

// ReadBlob opens a stored blob for warren's own reading (a Release a
// preload run reads): kept from eviction until Close, not counted a use.
func (s *Door) ReadBlob(d cachestore.Digest) (*cachestore.Blob, error) { return s.store.ReadBlob(d) }
