package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/hub"
)

// Replication, the serving side: a hub's change log (every blob it
// stored, by key, and every deletion) is its change feed, read by the
// hubs that pull from it with a sync token, which sees only its
// repositories. Read-only: nothing a puller sends changes this hub.

// recordStored adds what a hub just stored to its change log.
func (s *Server) recordStored(key, kind string, d cachestore.Digest, size int64, cached *cachestore.Cached) {
	if s.cfg.Hub == nil {
		return
	}
	if _, err := s.store.RecordChange(cachestore.Change{Key: key, Kind: kind, Digest: d, Size: size, Cached: cached}); err != nil {
		s.log.Warn("could not record a change for replication (hubs pulling from this one miss it until it is stored again)",
			slog.String("key", key), slog.Any("err", err))
	}
}

// recordFill records what a fill for p stored (a file kept by URL with
// its validators).
func (s *Server) recordFill(p door.Plan, d cachestore.Digest, size int64) {
	if s.cfg.Hub == nil || p.Cred.Private() {
		return // a private scope's files are never offered (private.go)
	}
	var cached *cachestore.Cached
	if p.Digest.IsZero() {
		c, err := s.store.Cached(p.Key)
		if err != nil || c.Digest != d {
			return // replaced meanwhile: that fill records its own
		}
		cached = &c
	}
	s.recordStored(p.Key, p.Kind, d, size, cached)
}

// serveReplication answers the change feed and blobs to a sync token.
func (s *Server) serveReplication(w http.ResponseWriter, r *http.Request) {
	role := s.cfg.Hub
	if role == nil || !role.Sync.Enabled() {
		http.Error(w, "warren: this warren serves no replication: set role hub and replication.tokens", http.StatusNotFound)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "warren: replication is read-only: GET only", http.StatusMethodNotAllowed)
		return
	}
	var tok hub.SyncToken
	if !s.authenticate(w, r, "sync token", func() (err error) { tok, err = role.Sync.Check(r); return err }) {
		return
	}
	chain := []string{role.ID}
	if role.Chain != nil {
		chain = role.Chain()
	}
	if id := r.Header.Get(hub.HeaderHubID); id != "" && slices.Contains(chain, id) {
		s.hubm.refuse(hub.ReasonLoop)
		s.log.Warn("replication refused a hub that this one pulls from (a loop)", slog.String("client", r.RemoteAddr),
			slog.String("hub", id), slog.String("token", tok.Name))
		hub.Refuse(w, http.StatusLoopDetected, hub.ReasonLoop, strings.Join(chain, " <- "))
		return
	}
	switch {
	case r.URL.Path == hub.ChangesPath:
		s.serveChanges(w, r, tok, chain)
	case strings.HasPrefix(r.URL.Path, hub.BlobsPath):
		s.serveReplicaBlob(w, r, tok, strings.TrimPrefix(r.URL.Path, hub.BlobsPath))
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
	limit = min(limit, hub.MaxPage)
	admit := hub.Intersect{tok.Repositories, scope}
	page := hub.Page{Hub: s.cfg.Hub.ID, Chain: chain, Entries: []cachestore.Change{}, Next: after}
	for scanned := 0; len(page.Entries) < limit && scanned < maxScan; {
		batch, last, err := s.store.Changes(page.Next, hub.MaxPage)
		if err != nil {
			http.Error(w, "warren: "+err.Error(), http.StatusInternalServerError)
			return
		}
		page.Last = last
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
			if !c.Delete && !s.store.Holds(c.Digest) {
				continue // evicted since: nothing to give
			}
			page.Entries = append(page.Entries, c)
		}
	}
	page.More = page.Next < page.Last
	if page.LastAt.IsZero() && page.Last > 0 {
		if c, _, err := s.store.Changes(page.Last-1, 1); err == nil && len(c) == 1 {
			page.LastAt = c[0].At
		}
	}
	s.log.Debug("replication page", slog.String("token", tok.Name), slog.Uint64("after", after), slog.Uint64("next", page.Next),
		slog.Int("entries", len(page.Entries)), slog.String("client", r.RemoteAddr))
	writeJSONTo(w, page)
}

func writeJSONTo(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// serveReplicaBlob serves a blob that the token's repositories name, with
// Range; any other is not found, whether held or not.
func (s *Server) serveReplicaBlob(w http.ResponseWriter, r *http.Request, tok hub.SyncToken, raw string) {
	d, err := cachestore.ParseDigest(raw)
	if err != nil || d.Validate() != nil {
		http.Error(w, "warren: want /blobs/<algo>:<hex>", http.StatusBadRequest)
		return
	}
	keys, err := s.store.ChangeKeys(d)
	if err != nil {
		http.Error(w, "warren: "+err.Error(), http.StatusInternalServerError)
		return
	}
	if !slices.ContainsFunc(keys, tok.Repositories.Admits) {
		http.Error(w, "warren: no blob "+d.String()+" in this token's repositories", http.StatusNotFound)
		return
	}
	info, err := s.store.Stat(d)
	var b *cachestore.Blob
	if err == nil && info.Private() {
		err = cachestore.ErrNotFound // stored again since, by a private scope
	}
	if err == nil {
		b, err = s.store.ReadBlob(d)
	}
	if err != nil {
		http.Error(w, "warren: blob "+d.String()+" is not held (evicted?)", http.StatusNotFound)
		return
	}
	defer b.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	rw := &respWriter{ResponseWriter: w}
	http.ServeContent(rw, r, "", info.Added, b.File)
	s.replServed.Add(rw.bytes)
}
