package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"

	"github.com/warren-cache/warren/door"
)

// The story of one request, top to bottom. serveCache turns the URL into
// a plan (plan.go: what the metadata says it must hash to), servePlan
// answers errors and logs the request once, and serve walks the steps.

// serveCache serves a GET or HEAD for target, whose credential (if any)
// the door took (CredentialOf).
func (s *Server) serveCache(w http.ResponseWriter, r *http.Request, target *url.URL, cred door.Credential) {
	p := s.door.Plan(r.Context(), target, cred)
	if d, size, ok := s.role.Claim(r); ok && d != p.Digest {
		// The claimed blob is served, never learnt from: a node's claim
		// teaches the hub nothing.
		p.Digest, p.Size, p.Meta = d, size, ""
	}
	s.servePlan(w, r, p)
}

// servePlan serves a request as p says, answers errors and logs it once.
func (s *Server) servePlan(w http.ResponseWriter, r *http.Request, p door.Plan) {
	start := s.now()
	rw := &respWriter{ResponseWriter: w}
	outcome, err := s.serve(rw, r, p)
	midBody := rw.wrote
	if err != nil {
		outcome = "error"
		s.stats.Errors.Add(1)
		s.fail(rw, r, p, err)
	}
	s.board.CountRequest(outcome)
	s.role.Served(r, outcome, rw.bytes)
	s.door.Served(p, outcome)
	s.stats.BytesServed.Add(rw.bytes)
	s.hist.Add(s.now(), p.Eco, rw.bytes, 0)
	if ctx := r.Context(); s.log.Enabled(ctx, slog.LevelInfo) {
		// The access log, a line per request: built as a record without
		// the caller's frame, which Logger.Info looks up on every call
		// though the handler prints no source.
		now := s.now()
		rec := slog.NewRecord(now, slog.LevelInfo, "request", 0)
		rec.AddAttrs(slog.String("method", r.Method), slog.String("url", p.ShownURL()), slog.String("kind", p.Kind),
			slog.Bool("hash_known", !p.Digest.IsZero()), slog.String("outcome", outcome), slog.Int("status", rw.status), slog.Int64("bytes", rw.bytes),
			slog.Duration("took", now.Sub(start)), slog.String("client", r.RemoteAddr))
		if p.Cred.Private() {
			rec.AddAttrs(slog.String("scope", p.Cred.Scope()))
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
// Like groupcache's load, through the door (package door):
//
//  1. the store: a stored blob of the known digest, or a fresh copy of a
//     file cached by URL, is a hit (what the request's scope may read);
//     a hub tells a node whose LAN peers received the artifact lately to
//     take it from them;
//  2. a 404 upstream gave lately is given again; a hub in preload mode
//     refuses what it does not hold;
//  3. one flight per digest (per URL where no metadata names a hash): the
//     first request starts the fill from the ordered sources (the LAN's
//     peers, the site's hubs, then the origin) on a context no client
//     owns; a hub lets max_requesters stream one artifact while it
//     fetches it, and tells the rest when to come back;
//  4. every request streams the fill as it grows (respond.go), its last
//     byte held until the whole blob verifies;
//  5. the tails: stored meanwhile, or not modified upstream (serve it from
//     the store); upstream down (the last good copy, or a metalink's
//     alternate repomd.xml held); no room on the disk (from the origin
//     without storing, verified as it passes).
func (s *Server) serve(w *respWriter, r *http.Request, p door.Plan) (string, error) {
	revalidated := false
	for range 3 {
		// 1. The store.
		have, err := s.door.Lookup(p)
		if err != nil {
			return "", err
		}
		if have.Fresh || revalidated {
			if have.Blob != nil && p.Artifact() && s.role.Held(w, r, p.FillKey(), p.ShownURL()) {
				have.Blob.Close()
				return "hinted", nil
			}
			if have.Blob != nil {
				s.door.Hit(p, have.Info.Digest)
			}
			if s.serveStored(w, r, p, have) {
				return hitOr(!revalidated, "revalidated"), nil
			}
		}
		// 2. A 404 remembered; what a preload-only hub does not hold.
		if s.unheld(w, p) {
			return "refused", nil
		}
		if r.Method == http.MethodHead && have.Cached == nil {
			return "pass", s.passThrough(w, r, p)
		}
		if s.door.Negative(p) {
			return "negative", &door.UpstreamStatusError{Code: http.StatusNotFound, Status: "404 Not Found (remembered)", URL: p.URL}
		}
		// 3. One flight.
		fill, leader := s.door.Begin(p, door.AskerOf(r), have.Cached)
		leave := func() {}
		if p.Artifact() {
			var ok bool
			if leave, ok = s.role.Enter(w, r, fill, p.FillKey(), p.Size, p.ShownURL()); !ok {
				return "queued", nil
			}
		}
		// 4. Stream it (a list of mirrors: the site's view of it, once
		// it is whole and learnt).
		var hit bool
		if p.Meta == door.MetaMirrors {
			err = s.serveListFill(w, r, fill, p)
		} else {
			hit, err = s.serveFill(w, r, fill, p, leader)
		}
		leave()
		// 5. The tails.
		switch {
		case err == nil:
			return hitOr(hit, "miss"), nil
		case errors.Is(err, door.ErrAlreadyStored):
			continue
		case errors.Is(err, door.ErrNotModified):
			revalidated = true
			continue
		case w.wrote:
			return "miss", err
		case have.Cached != nil && door.IsUpstreamDown(err):
			s.log.Warn("upstream unavailable; serving the last good copy (offline mode)",
				slog.String("url", p.ShownURL()), slog.Time("fetched", have.Cached.Fetched), slog.Any("err", err))
			if s.serveStored(w, r, p, have) {
				return "stale", nil
			}
			return "", err
		case len(p.Also) > 0 && door.IsUpstreamDown(err) && s.serveAlternate(w, r, p, err):
			return "stale", nil
		case door.IsNoSpace(err):
			s.log.Warn("cache disk full; serving from upstream without storing", slog.String("url", p.ShownURL()), slog.Any("err", err))
			if p.Digest.IsZero() {
				return "pass", s.passThrough(w, r, p)
			}
			return "pass", s.serveUnstored(w, r, p, nil) // verified as it passes
		}
		return "miss", err
	}
	return "", fmt.Errorf("serve %s: it was stored, then evicted before it could be served, three times in a row; try again", p.ShownURL())
}

// unheld lets the role answer for what it does not fetch (a preload-only
// hub's refusal).
func (s *Server) unheld(w http.ResponseWriter, p door.Plan) bool {
	what := "this URL"
	if !p.Digest.IsZero() {
		what = "blob " + p.Digest.String()
	}
	return s.role.Unheld(w, what, p.ShownURL())
}

// serveStored serves what the door's Lookup found; false when the URL's
// copy lost its blob meanwhile (evicted).
func (s *Server) serveStored(w *respWriter, r *http.Request, p door.Plan, have door.Stored) bool {
	if have.Blob != nil {
		defer have.Blob.Close()
		s.serveFile(w, r, have.Blob.Content(), have.Info.Added, "", contentType(p))
		return true
	}
	if have.Cached != nil {
		return s.serveCached(w, r, p, *have.Cached)
	}
	return false
}

func hitOr(hit bool, other string) string {
	if hit {
		return "hit"
	}
	return other
}

// serveAlternate serves, with the mirrors down, a repomd.xml that a
// metalink names as the previous push's (valid: dnf takes it) in place of
// its current one, when that is all the site holds.
func (s *Server) serveAlternate(w *respWriter, r *http.Request, p door.Plan, why error) bool {
	b, bi, ok := s.door.Alternate(p)
	if !ok {
		return false
	}
	defer b.Close()
	s.log.Warn("upstream unavailable; serving the last good copy (offline mode): the previous repomd.xml its metalink still names",
		slog.String("url", p.ShownURL()), slog.String("digest", bi.Digest.String()), slog.Any("err", why))
	s.serveFile(w, r, b.Content(), bi.Added, "", contentType(p))
	return true
}

// passThrough answers the client straight from upstream, storing nothing:
// for HEAD on a miss, and when the disk is full.
func (s *Server) passThrough(w *respWriter, r *http.Request, p door.Plan) error {
	resp, err := s.door.PassThrough(r, p)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	for _, k := range []string{"Content-Type", "Content-Length", "Content-Range", "Last-Modified", "ETag", "Accept-Ranges"} {
		if v := resp.Header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	w.Header().Set("X-Cache", "MISS from warren (not stored)")
	w.WriteHeader(resp.StatusCode)
	if _, err := s.copyBuf(w, resp.Body); err != nil {
		return door.WrapFetch(p.URL, err)
	}
	return nil
}
