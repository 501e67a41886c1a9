package replicate

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/hub"
)

// ServeStore is what the serving side needs of the cache.
type ServeStore interface {
	Changes(after uint64, n int) ([]cachestore.Change, uint64, error)
	ChangeKeys(d cachestore.Digest) ([]string, error)
	ChangeLogID() (string, error)
	Stat(d cachestore.Digest) (cachestore.BlobInfo, error)
	ReadBlob(d cachestore.Digest) (*cachestore.Blob, error)
	Holds(d cachestore.Digest) bool
	RecordChange(c cachestore.Change) (uint64, error)
}

var _ ServeStore = (*cachestore.Store)(nil)

// ServerConfig is the serving side's.
type ServerConfig struct {
	// ID is this hub's id; Chain, it and the hubs it pulls from (as last
	// seen): a hub among them may not pull from this one.
	ID    string
	Chain func() []string
	// Tokens are replication.tokens: none serves nobody.
	Tokens hub.SyncTokens
	// Authenticate runs a token check under the hub's failure limit
	// (hub.Role.Authenticate): false means answered.
	Authenticate func(w http.ResponseWriter, r *http.Request, what string, check func() error) bool
	// Refuse counts a refusal by reason (hub.Role.Refuse).
	Refuse func(reason string)
	Store  ServeStore
	Logger *slog.Logger
}

// Server answers the change feed and blobs to the hubs that pull from
// this one, at hub.ReplicationPrefix. Read-only: nothing a puller sends
// changes this hub.
type Server struct {
	cfg    ServerConfig
	log    *slog.Logger
	served atomic.Int64 // blob bytes served to pullers

	mu      sync.Mutex                            // guards pullers
	pullers *lru.Cache[string, *hub.PullerStatus] // by token, hub id and address
}

// maxPullers bounds the pullers remembered (tokens are few; their hubs
// too): the least recently seen go.
const maxPullers = 256

// puller records what r, under tok, did: a page up to cursor of a log
// ending at last (zeros for a blob), or n blob bytes.
func (s *Server) puller(r *http.Request, tok hub.SyncToken, page *hub.Page, n int64) {
	addr := r.RemoteAddr
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		addr = ap.Addr().Unmap().String()
	}
	id := r.Header.Get(hub.HeaderHubID)
	if len(id) > 64 {
		id = id[:64]
	}
	key := tok.Name + " " + id + " " + addr
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pullers.Get(key)
	if !ok {
		p = &hub.PullerStatus{Token: tok.Name, Hub: id, Addr: addr}
		s.pullers.Add(key, p)
	}
	p.LastSeen = time.Now()
	p.Bytes += n
	if page != nil {
		p.Cursor, p.Last = page.Next, page.Last
	}
}

// Pullers are the hubs pulling from this one, the most recently seen
// first: the page of a source hub lists them.
func (s *Server) Pullers() []hub.PullerStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]hub.PullerStatus, 0, s.pullers.Len())
	for _, p := range s.pullers.Values() {
		out = append(out, *p)
	}
	slices.SortFunc(out, func(a, b hub.PullerStatus) int { return b.LastSeen.Compare(a.LastSeen) })
	return out
}

// NewServer builds the serving side.
func NewServer(cfg ServerConfig) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Refuse == nil {
		cfg.Refuse = func(string) {}
	}
	if cfg.Authenticate == nil {
		cfg.Authenticate = func(w http.ResponseWriter, r *http.Request, _ string, check func() error) bool {
			if err := check(); err != nil {
				hub.RefuseToken(w, false, err.Error())
				return false
			}
			return true
		}
	}
	if cfg.Chain == nil {
		cfg.Chain = func() []string { return []string{cfg.ID} }
	}
	pullers, _ := lru.New[string, *hub.PullerStatus](maxPullers)
	return &Server{cfg: cfg, log: cfg.Logger, pullers: pullers}
}

// Served is how many blob bytes pullers took.
func (s *Server) Served() int64 { return s.served.Load() }

// Record adds what a hub just stored to its change log: the door's
// Config.Record on a hub.
func Record(store interface {
	RecordChange(c cachestore.Change) (uint64, error)
}, log *slog.Logger) func(key, kind string, d cachestore.Digest, size int64, cached *cachestore.Cached) {
	return func(key, kind string, d cachestore.Digest, size int64, cached *cachestore.Cached) {
		if _, err := store.RecordChange(cachestore.Change{Key: key, Kind: kind, Digest: d, Size: size, Cached: cached}); err != nil {
			log.Warn("could not record a change for replication (hubs pulling from this one miss it until it is stored again)",
				slog.String("key", hub.RedactURLs(key)), slog.Any("err", err))
		}
	}
}

// ServeHTTP answers the change feed and blobs to a sync token.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.Tokens.Enabled() {
		http.Error(w, "warren: this warren serves no replication: set role hub and replication.tokens", http.StatusNotFound)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "warren: replication is read-only: GET only", http.StatusMethodNotAllowed)
		return
	}
	var tok hub.SyncToken
	if !s.cfg.Authenticate(w, r, "sync token", func() error {
		var err error
		tok, err = s.cfg.Tokens.Check(r)
		return err
	}) {
		return
	}
	chain := s.cfg.Chain()
	if id := r.Header.Get(hub.HeaderHubID); id != "" && slices.Contains(chain, id) {
		s.cfg.Refuse(hub.ReasonLoop)
		s.log.Warn("replication refused a hub that this one pulls from (a loop)", slog.String("client", r.RemoteAddr),
			slog.String("hub", id), slog.String("token", tok.Name))
		hub.Refuse(w, http.StatusLoopDetected, hub.ReasonLoop, strings.Join(chain, " <- "))
		return
	}
	switch {
	case r.URL.Path == hub.ChangesPath:
		s.serveChanges(w, r, tok, chain)
	case strings.HasPrefix(r.URL.Path, hub.BlobsPath):
		s.serveBlob(w, r, tok, strings.TrimPrefix(r.URL.Path, hub.BlobsPath))
	default:
		http.NotFound(w, r)
	}
}

// maxScan bounds the log entries one page reads, whatever the token
// admits: a narrow token pages through a long log in steps.
const maxScan = 20 * hub.MaxPage

func (s *Server) serveChanges(w http.ResponseWriter, r *http.Request, tok hub.SyncToken, chain []string) {
	q := r.URL.Query()
	after, err := strconv.ParseUint(q.Get("after"), 10, 64)
	if q.Get("after") == "" {
		after, err = 0, nil
	}
	limit, lerr := strconv.Atoi(q.Get("limit"))
	if q.Get("limit") == "" {
		limit, lerr = hub.MaxPage, nil
	}
	var scope hub.Repos
	var serr error
	if v := q.Get("scope"); v != "" {
		serr = json.Unmarshal([]byte(v), &scope)
	}
	if err != nil || lerr != nil || limit < 1 || serr != nil {
		http.Error(w, fmt.Sprintf("warren: want ?after=<cursor>&limit=<1..%d>&scope=<repositories as JSON>: %v", hub.MaxPage, errors.Join(err, lerr, serr)), http.StatusBadRequest)
		return
	}
	logID, err := s.cfg.Store.ChangeLogID()
	if err != nil {
		http.Error(w, "warren: "+err.Error(), http.StatusInternalServerError)
		return
	}
	if v := q.Get("log"); v != "" && v != logID {
		// The puller's cursor is a place in another log (this hub was
		// rebuilt): this one is read from its start. The page names
		// this log, and the puller takes it.
		after = 0
	}
	limit = min(limit, hub.MaxPage)
	admit := hub.Intersect{tok.Repositories, scope}
	page := hub.Page{Hub: s.cfg.ID, Chain: chain, Log: logID, Entries: []cachestore.Change{}, Next: after}
	for scanned := 0; len(page.Entries) < limit && scanned < maxScan; {
		batch, last, err := s.cfg.Store.Changes(page.Next, hub.MaxPage)
		if err != nil {
			http.Error(w, "warren: "+err.Error(), http.StatusInternalServerError)
			return
		}
		page.Last = last
		if after > last {
			// Not a place in this log: the puller's cursor is another
			// log's (it compares Log) or made up.
			http.Error(w, fmt.Sprintf("warren: cursor %d is past this change log's end (%d): start again from 0", after, last), http.StatusBadRequest)
			return
		}
		if len(batch) == 0 {
			break
		}
		for _, c := range batch {
			if len(page.Entries) == limit {
				break
			}
			scanned++
			page.Next = c.Seq
			if c.Seq == last {
				page.LastAt = c.At
			}
			if !admit.Admits(c.Key) {
				continue
			}
			if !c.Delete && !s.cfg.Store.Holds(c.Digest) {
				continue // evicted since (or now a private scope's): nothing to give
			}
			page.Entries = append(page.Entries, c)
		}
	}
	page.More = page.Next < page.Last
	if page.LastAt.IsZero() && page.Last > 0 {
		if c, _, err := s.cfg.Store.Changes(page.Last-1, 1); err == nil && len(c) == 1 {
			page.LastAt = c[0].At
		}
	}
	s.log.Debug("replication page", slog.String("token", tok.Name), slog.Uint64("after", after), slog.Uint64("next", page.Next),
		slog.Int("entries", len(page.Entries)), slog.String("client", r.RemoteAddr))
	s.puller(r, tok, &page, 0)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(page)
}

// serveBlob serves a blob that the token's repositories name, with Range;
// any other is not found, whether held or not.
func (s *Server) serveBlob(w http.ResponseWriter, r *http.Request, tok hub.SyncToken, raw string) {
	d, err := cachestore.ParseDigest(raw)
	if err != nil || d.Validate() != nil {
		http.Error(w, "warren: want /blobs/<algo>:<hex>", http.StatusBadRequest)
		return
	}
	keys, err := s.cfg.Store.ChangeKeys(d)
	if err != nil {
		http.Error(w, "warren: "+err.Error(), http.StatusInternalServerError)
		return
	}
	if !slices.ContainsFunc(keys, tok.Repositories.Admits) {
		http.Error(w, "warren: no blob "+d.String()+" in this token's repositories", http.StatusNotFound)
		return
	}
	info, err := s.cfg.Store.Stat(d)
	var b *cachestore.Blob
	if err == nil && info.Private() {
		err = cachestore.ErrNotFound // stored again since, by a private scope
	}
	if err == nil {
		b, err = s.cfg.Store.ReadBlob(d)
	}
	if err == nil {
		// Looked at again once open: made private between the two looks,
		// it is not this hub's to give.
		if again, serr := s.cfg.Store.Stat(d); serr != nil || again.Private() {
			b.Close()
			err = cachestore.ErrNotFound
		}
	}
	if err != nil {
		http.Error(w, "warren: blob "+d.String()+" is not held (evicted?)", http.StatusNotFound)
		return
	}
	defer b.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	cw := &countingWriter{ResponseWriter: w}
	http.ServeContent(cw, r, "", info.Added, b.File)
	s.served.Add(cw.n)
	s.puller(r, tok, nil, cw.n)
}

// countingWriter counts the body bytes written.
type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}
