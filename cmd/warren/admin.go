package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/door"
)

// The admin API: what `warren status`, `peers` and `cache ...` ask. The
// daemon serves it on a unix socket in the cache directory (mode 0660:
// root and the warren group); with no daemon running, the CLI opens the
// cache itself and calls the same handler in process.

const adminSocket = "admin.sock"

type adminAPI struct {
	store *cachestore.Store
	d     *daemon // nil when the CLI runs it without a daemon
}

// blobRow is the index's BlobInfo with its digest spelt out and the URLs
// that name it.
type blobRow struct {
	cachestore.BlobInfo
	Digest string   `json:"digest"`
	URLs   []string `json:"urls"`
	// URLsPartial (cache show): the learnt facts were not all read, so
	// URLs may miss some (see maxKnownScan).
	URLsPartial bool `json:"urls_partial,omitempty"`
}

type peerRow struct {
	ID        string    `json:"id"`
	Address   string    `json:"address"`
	Priority  int32     `json:"priority"`
	Role      string    `json:"role"`
	Ready     bool      `json:"ready"`
	FreeBytes uint64    `json:"free_bytes"`
	LastSeen  time.Time `json:"last_seen"`
	// A hub's: bytes taken from it, and why it failed last.
	Received int64  `json:"received_bytes,omitempty"`
	Error    string `json:"error,omitempty"`
	// Link is how blobs go with it: a peer's "mutual TLS", "refused: why"
	// or "plain http"; a hub's "https", "http" or "http, token in clear".
	Link string `json:"link"`
}

func (a *adminAPI) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", a.status)
	mux.HandleFunc("GET /peers", a.peers)
	mux.HandleFunc("GET /cache", a.ls)
	mux.HandleFunc("GET /cache/stat", a.stat)
	mux.HandleFunc("GET /cache/show", a.show)
	mux.HandleFunc("POST /cache/rm", a.rm)
	mux.HandleFunc("POST /cache/gc", a.gc)
	mux.HandleFunc("POST /cache/verify", a.verify)
	mux.HandleFunc("POST /preload/run", a.preloadRun)
	mux.HandleFunc("GET /preload/status", a.preloadStatus)
	mux.HandleFunc("POST /replicate/run", a.replicateRun)
	mux.HandleFunc("GET /replicate/status", a.replicateStatus)
	// Go's profiles, for the operator (the socket is root's): e.g.
	// curl --unix-socket /run/warren/admin.sock http://warren/debug/pprof/profile?seconds=10
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func (a *adminAPI) status(w http.ResponseWriter, r *http.Request) {
	used, blobs, _ := a.store.Usage()
	out := map[string]any{"running": a.d != nil, "cache_dir": a.store.Dir(), "cache_bytes": used, "cache_max": a.store.MaxBytes(), "blobs": blobs}
	if a.d != nil {
		// What the page and /_warren/stats show: bytes by source, a hub's
		// mode, refusals and the site's saving.
		for k, v := range a.d.proxy.Figures() {
			out[k] = v
		}
		out["uptime"] = time.Since(a.d.started).Round(time.Second).String()
	}
	writeJSON(w, out)
}

func (a *adminAPI) peers(w http.ResponseWriter, r *http.Request) {
	rows := []peerRow{}
	if a.d != nil && a.d.node != nil {
		for _, p := range a.d.node.Table().Peers() {
			role := "peer"
			if p.Passive {
				role = "passive"
			}
			rows = append(rows, peerRow{ID: p.ID.String(), Address: p.AddrPort().String(), Priority: p.Priority, Role: role,
				Ready: !p.Passive && !time.Now().Before(p.BadUntil), FreeBytes: p.FreeBytes, LastSeen: p.LastSeen, Link: a.d.peerLink(p.ID)})
		}
	}
	if a.d != nil {
		// The hubs are this node's parents: shown beside its peers, with
		// whether they answer and what came from them.
		for _, h := range a.d.hubs {
			st := h.Status()
			link := "http"
			switch {
			case st.TLS:
				link = "https"
			case st.TokenInClear:
				link = "http, token in clear"
			}
			rows = append(rows, peerRow{ID: st.ID, Address: st.URL, Role: "hub", Ready: st.Reachable, LastSeen: st.LastOK,
				Received: st.Bytes, Error: st.LastError, Link: link})
		}
	}
	writeJSON(w, rows)
}

func (a *adminAPI) rows() ([]blobRow, error) {
	infos, err := a.store.Blobs()
	if err != nil {
		return nil, err
	}
	urls, err := a.store.URLs()
	if err != nil {
		return nil, err
	}
	rows := make([]blobRow, 0, len(infos))
	for _, bi := range infos {
		u := urls[bi.Digest]
		slices.Sort(u)
		rows = append(rows, blobRow{BlobInfo: bi, Digest: bi.Digest.String(), URLs: u})
	}
	return rows, nil
}

func (a *adminAPI) ls(w http.ResponseWriter, r *http.Request) {
	rows, err := a.rows()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	by := map[string]func(a, b blobRow) int{
		"size":      func(a, b blobRow) int { return cmpDesc(a.Size, b.Size) },
		"hits":      func(a, b blobRow) int { return cmpDesc(a.Hits, b.Hits) },
		"last-used": func(a, b blobRow) int { return b.LastUsed.Compare(a.LastUsed) },
		"added":     func(a, b blobRow) int { return b.Added.Compare(a.Added) },
		"digest":    func(a, b blobRow) int { return strings.Compare(a.Digest, b.Digest) },
	}
	sort := r.URL.Query().Get("sort")
	if sort == "" {
		sort = "last-used"
	}
	f, ok := by[sort]
	if !ok {
		http.Error(w, fmt.Sprintf("sort %q: want size, hits, last-used, added or digest", sort), http.StatusBadRequest)
		return
	}
	slices.SortStableFunc(rows, f)
	writeJSON(w, rows)
}

func cmpDesc(a, b int64) int {
	switch {
	case a > b:
		return -1
	case a < b:
		return 1
	}
	return 0
}

func (a *adminAPI) stat(w http.ResponseWriter, r *http.Request) {
	used, n, err := a.store.Usage()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	known, err := door.CountKnown(a.store)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, map[string]any{"cache_dir": a.store.Dir(), "blobs": n, "bytes": used, "cache_max": a.store.MaxBytes(),
		"free_for_cache": a.store.Free(), "evictions": a.store.Evictions(),
		"known_artifacts": known[door.EcoDebian] + known[door.EcoRPM] + known[door.EcoChocolatey],
		"known_debian":    known[door.EcoDebian], "known_rpm": known[door.EcoRPM], "known_chocolatey": known[door.EcoChocolatey]})
}

// resolve turns a digest ("sha256:<hex>", or its first hex digits with
// or without the algorithm, as cache ls prints it) or a URL into the
// blob's digest.
func (a *adminAPI) resolve(q string) (cachestore.Digest, error) {
	if q == "" {
		return cachestore.Digest{}, errors.New("give a digest (sha256:<hex>, or its first digits as warren cache ls prints them) or a URL")
	}
	if !strings.Contains(q, "/") {
		d, err := a.store.Resolve(q)
		if err == nil || errors.Is(err, cachestore.ErrAmbiguous) {
			return d, err
		}
	}
	key := door.CanonicalKey(q) // as apt or dnf would have asked for it
	if k, err := a.store.Known(key); err == nil {
		return k.Digest, nil
	}
	if c, err := a.store.Cached(key); err == nil {
		return c.Digest, nil
	}
	return cachestore.Digest{}, fmt.Errorf("%q is neither a stored blob's digest (or its first digits) nor a URL the cache knows", q)
}

// maxShownURLs bounds the learnt URLs cache show lists for one blob.
const maxShownURLs = 50

// maxKnownScan bounds the learnt facts cache show reads to find the URLs
// that name a blob: the index has no digest to URL key for facts, so it is
// a scan (some 0.2 s per 200,000 facts with the index in memory), bounded
// so that a real archive's index answers in reasonable time.
const maxKnownScan = 500_000

// show looks up one blob: its record and the URL-cache entries that name
// it (keyed by digest), the URL it was asked by, and the learnt facts
// that name it, found by a scan of at most maxKnownScan facts
// (urls_partial says it stopped there).
func (a *adminAPI) show(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query().Get("q")
	d, err := a.resolve(q)
	if errors.Is(err, cachestore.ErrAmbiguous) {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	bi, err := a.store.Stat(d)
	if errors.Is(err, cachestore.ErrNotFound) {
		http.Error(w, fmt.Sprintf("%s is known but not stored", d), http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	// The URLs that name it: the URL cache's entries, and the facts
	// learnt from repository metadata (a hash-known artifact has no URL
	// cache entry).
	complete := true
	urls, err := a.store.CachedURLs(d)
	if err == nil {
		var known []string
		if known, complete, err = a.store.KnownURLs(d, maxShownURLs, maxKnownScan); err == nil {
			urls = append(urls, known...)
		}
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if strings.Contains(q, "://") { // asked by URL: that one names it too
		urls = append(urls, door.CanonicalKey(q))
	}
	slices.Sort(urls)
	urls = slices.Compact(urls)
	if urls == nil {
		urls = []string{}
	}
	writeJSON(w, blobRow{BlobInfo: bi, Digest: d.String(), URLs: urls, URLsPartial: !complete})
}

func (a *adminAPI) rm(w http.ResponseWriter, r *http.Request) {
	d, err := a.resolve(r.URL.Query().Get("q"))
	if err == nil {
		err = a.store.Remove(d)
	}
	if err == nil {
		if rerr := a.store.RecordDeletion(d); rerr != nil {
			http.Error(w, fmt.Sprintf("removed %s, but its deletion was not recorded for replication: %v", d, rerr), http.StatusInternalServerError)
			return
		}
	}
	switch {
	case errors.Is(err, cachestore.ErrInUse), errors.Is(err, cachestore.ErrAmbiguous):
		http.Error(w, err.Error(), http.StatusConflict)
	case err != nil:
		http.Error(w, err.Error(), http.StatusNotFound)
	default:
		writeJSON(w, map[string]string{"removed": d.String()})
	}
}

func (a *adminAPI) gc(w http.ResponseWriter, r *http.Request) {
	rep, err := a.store.Evict()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, rep)
}

// verify streams one JSON line per progress step, then the report.
func (a *adminAPI) verify(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	flush := http.NewResponseController(w)
	rep, err := a.store.Verify(r.Context(), func(done, total int) {
		enc.Encode(map[string]int{"done": done, "total": total})
		flush.Flush()
	})
	if err != nil {
		enc.Encode(map[string]string{"error": err.Error()})
		return
	}
	enc.Encode(map[string]any{"report": rep})
}

// listenAdmin listens on the cache directory's admin socket.
func (d *daemon) listenAdmin() (net.Listener, error) {
	path := filepath.Join(d.cfg.CacheDir, adminSocket)
	os.Remove(path) // a stale socket from a crash
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	return ln, nil
}

// serveAdmin serves the admin API on ln (listenAdmin) until ctx ends.
func (d *daemon) serveAdmin(ctx context.Context, ln net.Listener) error {
	path := filepath.Join(d.cfg.CacheDir, adminSocket)
	srv := &http.Server{Handler: d.tracked((&adminAPI{store: d.store, d: d}).handler()), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin socket: %w", err)
	}
	os.Remove(path)
	return nil
}
