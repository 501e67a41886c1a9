package peering

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"

	"github.com/warren-cache/warren/cachestore"
)

// BlobStore is what the blob server needs of the cache.
type BlobStore interface {
	// OpenShared opens a stored blob that may be shared: a private
	// scope's blob is not found.
	OpenShared(d cachestore.Digest) (*cachestore.Blob, cachestore.BlobInfo, error)
	// Filling returns the fill in progress under key, if any.
	Filling(key string) (*cachestore.Fill, bool)
}

var _ BlobStore = (*cachestore.Store)(nil)

// BlobPathPrefix is where blobs are served.
const BlobPathPrefix = "/v1/blobs/"

// BlobServer serves verified blobs (and blobs still being filled, whose
// last byte waits for verification) to peers: at most slots at once, all
// sharing one rate limit.
type BlobServer struct {
	store   BlobStore
	slots   chan struct{}
	limiter *rate.Limiter // nil: unlimited
	secret  []byte
	tlsOnly bool
	log     *slog.Logger
	now     func() time.Time

	// writeTimeout bounds each write to a peer: one that stops reading
	// loses its slot instead of holding it (default 30s).
	writeTimeout time.Duration
	// notYet bounds the wait for a fill's first byte before the answer
	// "not yet" (default notYetWait).
	notYet time.Duration

	peers atomic.Pointer[Table] // the node's table: who a token's requester is

	mu   sync.Mutex                     // guards used
	used map[uint64]int64               // token nonces spent, until their expiry (unix s)
	sent *lru.Cache[sentKey, time.Time] // uploads by requester address and digest

	active   atomic.Int64 // uploads running now
	peak     atomic.Int64 // most uploads ever running at once
	uploaded atomic.Int64 // bytes sent
	busy     atomic.Int64 // requests refused for want of a slot
}

// BlobConfig is the blob server's policy.
type BlobConfig struct {
	Slots      int   // uploads at once (0: DefaultUploadSlots)
	UploadRate int64 // bytes/s shared by all uploads; 0: unlimited
	Secret     []byte
	// RequireTLS refuses a blob request that did not come over TLS
	// (peer_tls: the listener's TLS asks each peer for its node
	// certificate; tls.go).
	RequireTLS bool
	Logger     *slog.Logger
	Now        func() time.Time
}

// NewBlobServer builds the handler.
func NewBlobServer(store BlobStore, cfg BlobConfig) *BlobServer {
	slots := cfg.Slots
	if slots <= 0 {
		slots = DefaultUploadSlots
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	bs := &BlobServer{store: store, slots: make(chan struct{}, slots), secret: cfg.Secret, tlsOnly: cfg.RequireTLS, log: cfg.Logger, now: cfg.Now, writeTimeout: 30 * time.Second,
		notYet: notYetWait, used: map[uint64]int64{}}
	// The 4,096 most recent uploads: a report about an older one is not
	// believed, which costs only a recheck not done.
	bs.sent, _ = lru.New[sentKey, time.Time](4096)
	if cfg.UploadRate > 0 {
		burst := int(min(cfg.UploadRate, 1<<20))
		bs.limiter = rate.NewLimiter(rate.Limit(cfg.UploadRate), burst)
	}
	return bs
}

// notYetWait is how long a request for a blob whose download has no byte
// yet waits for one: well within peerHeaderTimeout, the requester's wait
// for an answer's head.
const notYetWait = 10 * time.Second

// FreeSlots is how many uploads could start now.
func (bs *BlobServer) FreeSlots() int { return cap(bs.slots) - len(bs.slots) }

// Stats returns uploads running, the peak, bytes sent and busy refusals.
func (bs *BlobServer) Stats() (active, peak, bytes, busy int64) {
	return bs.active.Load(), bs.peak.Load(), bs.uploaded.Load(), bs.busy.Load()
}

type sentKey struct {
	to netip.Addr
	d  cachestore.Digest
}

// TokenLife is how long a blob token may be used; each is good for one
// request.
const TokenLife = time.Minute

// BlobToken is what requester sends, in a group with a secret, to fetch d
// once before expiry: "v2.<requester>.<expiry>.<nonce>.<mac>". It is bound
// to the digest, the requester (whose address the server checks) and the
// time, and spent when used: a token seen on the wire is worth nothing.
func BlobToken(secret []byte, d cachestore.Digest, requester NodeID, expiry time.Time, nonce uint64) string {
	head := fmt.Sprintf("v2.%s.%d.%016x", requester, expiry.Unix(), nonce)
	return head + "." + tokenMAC(secret, d, head)
}

func tokenMAC(secret []byte, d cachestore.Digest, head string) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte("warren-blob:" + d.String() + ":" + head))
	return hex.EncodeToString(mac.Sum(nil))
}

const tokenHeader = "X-Warren-Token"

// attach gives the blob server the node's table, to check tokens'
// requesters against.
func (bs *BlobServer) attach(t *Table) { bs.peers.Store(t) }

// checkToken accepts tok for d from remote once.
func (bs *BlobServer) checkToken(tok string, d cachestore.Digest, remote netip.Addr) error {
	parts := strings.Split(tok, ".")
	if len(parts) != 5 || parts[0] != "v2" {
		return errors.New("missing or malformed group token")
	}
	head := strings.Join(parts[:4], ".")
	if !hmac.Equal([]byte(parts[4]), []byte(tokenMAC(bs.secret, d, head))) {
		return errors.New("wrong group token (another secret, or another blob)")
	}
	id, err := ParseNodeID(parts[1])
	if err != nil {
		return err
	}
	expiry, err1 := strconv.ParseInt(parts[2], 10, 64)
	nonce, err2 := strconv.ParseUint(parts[3], 16, 64)
	if err1 != nil || err2 != nil {
		return errors.New("malformed group token")
	}
	now := bs.now().Unix()
	if expiry < now || expiry > now+int64((TokenLife+ReplayWindow)/time.Second) {
		return fmt.Errorf("group token expired or not yet valid (expiry %d, now %d): are the peers' clocks in sync?", expiry, now)
	}
	t := bs.peers.Load()
	if t == nil {
		return errors.New("no peer table to check the token's requester against")
	}
	if !t.Holds(id, remote) { // its address, or one tied to it (a dual-stack peer's other family)
		return fmt.Errorf("group token names node %s, which is not a peer at %s", id, remote)
	}
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if _, spent := bs.used[nonce]; spent {
		return errors.New("group token already used")
	}
	if len(bs.used) >= 1<<16 {
		for k, until := range bs.used {
			if until < now {
				delete(bs.used, k)
			}
		}
		if len(bs.used) >= 1<<16 {
			return errors.New("too many tokens in flight; retry")
		}
	}
	bs.used[nonce] = expiry
	return nil
}

// recordSent remembers that d went to a: only then is its bad-blob report
// about d believed.
func (bs *BlobServer) recordSent(a netip.Addr, d cachestore.Digest) {
	bs.sent.Add(sentKey{a, d}, bs.now())
}

// sentMemory is how long an upload is remembered for bad-blob reports.
const sentMemory = 10 * time.Minute

// SentTo reports whether d was uploaded to a lately.
func (bs *BlobServer) SentTo(a netip.Addr, d cachestore.Digest) bool {
	at, ok := bs.sent.Get(sentKey{a, d})
	return ok && bs.now().Sub(at) <= sentMemory
}

func (bs *BlobServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "warren: blobs are read-only", http.StatusMethodNotAllowed)
		return
	}
	if bs.tlsOnly && (r.TLS == nil || len(r.TLS.PeerCertificates) == 0) {
		http.Error(w, "warren: this node serves blobs to its peers over mutual TLS only (peer_tls): a peer asks over https with a node certificate from the site CA", http.StatusForbidden)
		return
	}
	algo, hx, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, BlobPathPrefix), "/")
	d := cachestore.Digest{Algo: algo, Hex: hx}
	if !ok || d.Validate() != nil {
		http.Error(w, "warren: want /v1/blobs/<sha256|sha512|sha1>/<lowercase hex>", http.StatusBadRequest)
		return
	}
	remote := netip.Addr{}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		remote = ap.Addr().Unmap()
	}
	if len(bs.secret) > 0 {
		if err := bs.checkToken(r.Header.Get(tokenHeader), d, remote); err != nil {
			http.Error(w, "warren: "+err.Error(), http.StatusForbidden)
			return
		}
	}
	select {
	case bs.slots <- struct{}{}:
	default:
		bs.busy.Add(1)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "warren: all upload slots busy", http.StatusServiceUnavailable)
		return
	}
	n := bs.active.Add(1)
	for p := bs.peak.Load(); n > p && !bs.peak.CompareAndSwap(p, n); p = bs.peak.Load() {
	}
	defer func() {
		bs.active.Add(-1)
		<-bs.slots
	}()
	lw := &limitedWriter{ctx: r.Context(), w: w, rc: http.NewResponseController(w), timeout: bs.writeTimeout, lim: bs.limiter, sent: &bs.uploaded}
	// Only a requester that is sent the blob may later report it bad: one
	// that got a 404 has nothing to report.
	sending := func() {
		if r.Method == http.MethodGet {
			bs.recordSent(remote, d)
		}
	}
	if f, bi, err := bs.store.OpenShared(d); err == nil {
		defer f.Close()
		sending()
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(lw, r, "", bi.Added, f.File)
		return
	}
	fill, ok := bs.store.Filling(cachestore.FillKey(d))
	if !ok {
		http.Error(w, "warren: not here", http.StatusNotFound)
		return
	}
	bs.serveFill(lw, r, fill, sending)
}

// serveFill streams a blob that is still arriving, from the Range offset.
// sending is called once the blob is about to be sent.
func (bs *BlobServer) serveFill(w *limitedWriter, r *http.Request, fill *cachestore.Fill, sending func()) {
	ctx, cancel := context.WithTimeout(r.Context(), bs.notYet)
	info, err := fill.Wait(ctx)
	cancel()
	if err != nil && errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil {
		// Its download has no byte yet (a slow upstream): "busy", to be
		// asked again, answered before the requester's header timeout
		// would take an honest wait for a stall and blame this node.
		w.Header().Set("Retry-After", "1")
		http.Error(w, fmt.Sprintf("warren: this blob's download has had no byte for %s; ask again", bs.notYet), http.StatusServiceUnavailable)
		return
	}
	if err != nil {
		http.Error(w, "warren: not here", http.StatusNotFound)
		return
	}
	var off int64
	if rg := r.Header.Get("Range"); rg != "" {
		v, ok := strings.CutPrefix(rg, "bytes=")
		v, ok2 := strings.CutSuffix(v, "-")
		n, err := strconv.ParseInt(v, 10, 64)
		// An offset at the size asks for nothing: no range "N-(N-1)" exists.
		if !ok || !ok2 || err != nil || n < 0 || info.Size >= 0 && n > 0 && n >= info.Size {
			if info.Size >= 0 {
				w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", info.Size))
			}
			http.Error(w, "warren: only bytes=<offset>- ranges within the blob on blobs in progress", http.StatusRequestedRangeNotSatisfiable)
			return
		}
		off = n
	}
	// Bytes this node is itself receiving from a peer go on too: the
	// requester verifies the whole before its clients get any of them.
	rd, err := fill.NewRelayReader(r.Context(), off)
	if err != nil {
		http.Error(w, "warren: not here", http.StatusNotFound)
		return
	}
	defer rd.Close()
	sending()
	status := http.StatusOK
	if off > 0 {
		status = http.StatusPartialContent
		if info.Size >= 0 {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, info.Size-1, info.Size))
		}
	}
	if info.Size >= 0 {
		w.Header().Set("Content-Length", strconv.FormatInt(info.Size-off, 10))
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	if _, err := io.Copy(w, rd); err != nil {
		// Cut the connection: the peer must not take a short blob for whole
		// (it verifies anyway, but this tells it at once).
		panic(http.ErrAbortHandler)
	}
}

// limitedWriter paces writes through the shared limiter. It hides
// io.ReaderFrom on purpose when limited, so every byte is paced.
type limitedWriter struct {
	ctx     context.Context
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration // each write's deadline
	lim     *rate.Limiter
	sent    *atomic.Int64
}

func (l *limitedWriter) Header() http.Header { return l.w.Header() }
func (l *limitedWriter) WriteHeader(c int)   { l.w.WriteHeader(c) }

func (l *limitedWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		chunk := p
		if l.lim != nil {
			// WaitN fails when n exceeds the burst: wait in chunks of at most Burst().
			if b := l.lim.Burst(); len(chunk) > b {
				chunk = chunk[:b]
			}
			if err := l.lim.WaitN(l.ctx, len(chunk)); err != nil {
				return written, fmt.Errorf("upload pacing: %w", err)
			}
		}
		if l.rc != nil && l.timeout > 0 {
			// A real deadline on a real socket: the wall clock, not the
			// injected one.
			_ = l.rc.SetWriteDeadline(time.Now().Add(l.timeout))
		}
		n, err := l.w.Write(chunk)
		written += n
		l.sent.Add(int64(n))
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}
