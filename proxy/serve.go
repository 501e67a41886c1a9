package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"

	"github.com/warren-cache/warren/cachestore"
)

// The story of one request, top to bottom. serveCache turns the URL into
// a plan (plan.go: what the metadata says it must hash to), servePlan
// answers errors and logs the request once, and serve walks the steps.

// serveCache serves a GET or HEAD for target, whose credential (if any)
// credentialOf took.
func (s *Server) serveCache(w http.ResponseWriter, r *http.Request, target *url.URL, cred credential) {
	p := s.plan(r.Context(), target, cred)
	if s.cfg.Hub != nil {
		s.hubPlan(r, &p)
	}
	s.servePlan(w, r, p)
}

// servePlan serves a request as p says, answers errors and logs it once.
func (s *Server) servePlan(w http.ResponseWriter, r *http.Request, p plan) {
	start := s.now()
	rw := &respWriter{ResponseWriter: w}
	outcome, err := s.serve(rw, r, p)
	midBody := rw.wrote
	if err != nil {
		outcome = "error"
		s.stats.Errors.Add(1)
		s.fail(rw, r, p, err)
	}
	s.requestsBy.WithLabelValues(outcome).Inc()
	s.stats.BytesServed.Add(rw.bytes)
	s.hist.add(s.now(), p.eco, rw.bytes, 0)
	if ctx := r.Context(); s.log.Enabled(ctx, slog.LevelInfo) {
		// The access log, a line per request: built as a record without
		// the caller's frame, which Logger.Info looks up on every call
		// though the handler prints no source.
		now := s.now()
		rec := slog.NewRecord(now, slog.LevelInfo, "request", 0)
		rec.AddAttrs(slog.String("method", r.Method), slog.String("url", p.shownURL()), slog.String("kind", p.kind),
			slog.Bool("hash_known", !p.digest.IsZero()), slog.String("outcome", outcome), slog.Int("status", rw.status), slog.Int64("bytes", rw.bytes),
			slog.Duration("took", now.Sub(start)), slog.String("client", r.RemoteAddr))
		if p.cred.private() {
			rec.AddAttrs(slog.String("scope", p.cred.scope))
		}
		_ = s.log.Handler().Handle(ctx, rec)
	}
	if err != nil && midBody {
		// Headers and part of the body are out: the only honest thing left
		// is to break the connection, so the client never takes a short or
		// wrong file for a whole one.
		panic(http.ErrAbortHandler)
	}
}

// serve returns the outcome for the log, or an error for fail to answer.
// Like groupcache's load:
//
//  1. the store: a stored blob of the known digest, or a fresh copy of a
//     file cached by URL, is a hit;
//  2. a 404 upstream gave lately is given again; a hub in preload mode
//     refuses what it does not hold;
//  3. one flight per digest (per URL where no metadata names a hash): the
//     first request starts the fill from the ordered sources (fillrun.go:
//     the LAN's peers, the site's hubs, then the origin) on a context no
//     client owns; a hub lets max_requesters stream one artifact while it
//     fetches it, and tells the rest when to come back;
//  4. every request streams the fill as it grows (respond.go), its last
//     byte held until the whole blob verifies;
//  5. the tails: stored meanwhile, or not modified upstream (serve it from
//     the store); upstream down (the last good copy); no room on the disk
//     (from the origin without storing, verified as it passes).
func (s *Server) serve(w *respWriter, r *http.Request, p plan) (string, error) {
	if p.passThrough {
		if s.cfg.Hub != nil && !s.cfg.Hub.Mode.OnDemand() {
			s.hubRefuseUnheld(w, p)
			return "refused", nil
		}
		return "pass", s.passThrough(w, r, p)
	}
	revalidated := false
	for range 3 {
		// 1. The store.
		have, err := s.lookup(p)
		if err != nil {
			return "", err
		}
		if have.fresh || revalidated {
			if have.blob != nil && p.meta != "" {
				s.learnIfNew(p, have.info.Digest)
			}
			if s.serveStored(w, r, p, have) {
				return hitOr(!revalidated, "revalidated"), nil
			}
		}
		// 2. A 404 remembered; what a preload-only hub does not hold.
		if s.cfg.Hub != nil && !s.cfg.Hub.Mode.OnDemand() {
			s.hubRefuseUnheld(w, p)
			return "refused", nil
		}
		if r.Method == http.MethodHead && have.cached == nil {
			return "pass", s.passThrough(w, r, p)
		}
		if s.negative(p.key) {
			return "negative", &upstreamStatusError{code: http.StatusNotFound, status: "404 Not Found (remembered)", url: p.url}
		}
		// 3. One flight.
		fill, leader := s.store.BeginFill(p.fillKey())
		if leader {
			s.startFill(fill, askerOf(r), p, have.cached)
		}
		leave := func() {}
		if s.cfg.Hub != nil && p.meta == "" && !p.digest.IsZero() {
			var ok bool
			if leave, ok = s.hubEnter(w, r, fill, p); !ok {
				return "queued", nil
			}
		}
		// 4. Stream it.
		hit, err := s.serveFill(w, r, fill, p, leader)
		leave()
		// 5. The tails.
		switch {
		case err == nil:
			return hitOr(hit, "miss"), nil
		case errors.Is(err, errAlreadyStored):
			continue
		case errors.Is(err, errNotModified):
			revalidated = true
			continue
		case w.wrote:
			return "miss", err
		case have.cached != nil && isUpstreamDown(err):
			s.log.Warn("upstream unavailable; serving the last good copy (offline mode)",
				slog.String("url", p.url), slog.Time("fetched", have.cached.Fetched), slog.Any("err", err))
			if s.serveStored(w, r, p, have) {
				return "stale", nil
			}
			return "", err
		case isNoSpace(err):
			s.log.Warn("cache disk full; serving from upstream without storing", slog.String("url", p.url), slog.Any("err", err))
			if p.digest.IsZero() {
				return "pass", s.passThrough(w, r, p)
			}
			return "pass", s.serveUnstored(w, r, p, nil) // verified as it passes
		}
		return "miss", err
	}
	return "", fmt.Errorf("serve %s: it was stored, then evicted before it could be served, three times in a row; try again", p.url)
}

// stored is what the store holds for a plan: the open blob of its digest,
// or the copy of its URL (fresh, or to revalidate).
type stored struct {
	blob   *cachestore.Blob
	info   cachestore.BlobInfo
	cached *cachestore.Cached
	fresh  bool // servable without asking upstream
}

// lookup finds what the store holds for p.
func (s *Server) lookup(p plan) (stored, error) {
	if !p.digest.IsZero() {
		f, bi, err := s.store.OpenHit(p.digest)
		switch {
		case err == nil && !p.readable(bi):
			// Another scope's: this request's own sources must deliver
			// the bytes to prove it may have them.
			f.Close()
			return stored{}, nil
		case err == nil:
			return stored{blob: f, info: bi, fresh: true}, nil
		case errors.Is(err, cachestore.ErrNotFound):
			return stored{}, nil
		}
		return stored{}, err
	}
	c, err := s.store.Cached(p.key)
	switch {
	case err == nil:
		// A preload-only hub serves what it holds as it is: asking
		// upstream again is what its mode forbids.
		preloadOnly := s.cfg.Hub != nil && !s.cfg.Hub.Mode.OnDemand()
		return stored{cached: &c, fresh: preloadOnly || s.now().Sub(c.Fetched) < s.cfg.IndexTTL}, nil
	case errors.Is(err, cachestore.ErrNotFound):
		return stored{}, nil
	}
	return stored{}, err
}

// serveStored serves what lookup found; false when the URL's copy lost
// its blob meanwhile (evicted).
func (s *Server) serveStored(w *respWriter, r *http.Request, p plan, have stored) bool {
	if have.blob != nil {
		defer have.blob.Close()
		s.serveFile(w, r, have.blob.Content(), have.info.Added, "", contentType(p))
		return true
	}
	if have.cached != nil {
		return s.serveCached(w, r, p, *have.cached)
	}
	return false
}

func hitOr(hit bool, other string) string {
	if hit {
		return "hit"
	}
	return other
}
