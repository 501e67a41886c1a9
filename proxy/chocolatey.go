package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/chocolatey"
)

// The NuGet v2 pull-through feed: /chocolatey/api/v2/ (the default feed) and
// /chocolatey/<name>/api/v2/. Feed pages are fetched from upstream each
// time, their PackageHash facts recorded, and every link rewritten to point
// here; packages are served from the store by digest, shared like any blob.

const (
	chocoPrefix  = "/chocolatey/"
	maxFeedBytes = 16 << 20 // one OData page is tens of KiB; more is not a feed
)

type chocoRoute struct {
	feed     string // "" for the default feed
	upstream string // upstream base URL, ending in /
	ourBase  string // this feed's base URL as the client reaches it, ending in /
	rest     string // what follows api/v2/
}

// errBadFeedPath is a path that could leave the feed's base upstream.
var errBadFeedPath = errors.New("feed paths may not contain . or .. segments")

func (s *Server) chocoRoute(r *http.Request) (chocoRoute, error) {
	for _, seg := range strings.Split(r.URL.Path, "/") {
		if seg == "." || seg == ".." {
			return chocoRoute{}, errBadFeedPath
		}
	}
	// The escaped form, so that what the client encoded stays encoded upstream.
	p := strings.TrimPrefix(r.URL.EscapedPath(), chocoPrefix)
	var feed string
	if !strings.HasPrefix(p, "api/v2") {
		feed, p, _ = strings.Cut(p, "/")
	}
	rest, ok := strings.CutPrefix(p, "api/v2")
	if !ok || rest != "" && rest[0] != '/' {
		return chocoRoute{}, fmt.Errorf("%q is not a feed path: use %sapi/v2/ or %s<feed>/api/v2/", r.URL.Path, chocoPrefix, chocoPrefix)
	}
	up, ok := s.cfg.ChocolateyFeeds[feed]
	if !ok {
		return chocoRoute{}, fmt.Errorf("no chocolatey feed named %q is configured (chocolatey.feeds in the config)", feed)
	}
	our := "http://" + r.Host + chocoPrefix
	if feed != "" {
		our += feed + "/"
	}
	return chocoRoute{feed: feed, upstream: up, ourBase: our + "api/v2/", rest: strings.TrimPrefix(rest, "/")}, nil
}

func (s *Server) serveChocolatey(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "warren: the chocolatey feed is read-only (GET and HEAD)", http.StatusMethodNotAllowed)
		return
	}
	rt, err := s.chocoRoute(r)
	if errors.Is(err, errBadFeedPath) {
		http.Error(w, "warren: "+err.Error(), http.StatusBadRequest)
		return
	}
	if err != nil {
		http.Error(w, "warren: "+err.Error(), http.StatusNotFound)
		return
	}
	if parts := strings.Split(rt.rest, "/"); len(parts) == 3 && strings.EqualFold(parts[0], "package") {
		s.serveNupkg(w, r, rt, parts[1], parts[2])
		return
	}
	s.serveFeed(w, r, rt)
}

// serveFeed passes an OData call to upstream, learns the hashes of the
// packages in the answer and rewrites its links to this feed.
func (s *Server) serveFeed(w http.ResponseWriter, r *http.Request, rt chocoRoute) {
	target := rt.upstream + rt.rest
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, target, nil)
	if err != nil {
		http.Error(w, "warren: bad feed request: "+err.Error(), http.StatusBadRequest)
		return
	}
	s.setUpstreamHeaders(req, r.Header.Get("User-Agent"))
	for _, k := range []string{"Accept", "Accept-Language", "DataServiceVersion", "MaxDataServiceVersion"} {
		if v := r.Header.Get(k); v != "" {
			req.Header.Set(k, v)
		}
	}
	resp, err := s.up.Do(req)
	if err != nil {
		s.log.Warn("chocolatey feed upstream unreachable", slog.String("url", target), slog.Any("err", err))
		http.Error(w, "warren: "+(&upstreamFetchError{url: target, err: err}).Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxFeedBytes+1))
	if err != nil {
		http.Error(w, "warren: "+(&upstreamFetchError{url: target, err: err}).Error(), http.StatusBadGateway)
		return
	}
	if len(body) > maxFeedBytes {
		http.Error(w, fmt.Sprintf("warren: feed answer from %s is larger than %d bytes", target, maxFeedBytes), http.StatusBadGateway)
		return
	}
	if resp.StatusCode == http.StatusOK && r.Method == http.MethodGet && isXML(resp.Header.Get("Content-Type")) {
		body = s.learnAndRewrite(rt, target, body)
	}
	for _, k := range []string{"Content-Type", "DataServiceVersion", "Cache-Control", "Last-Modified", "ETag"} {
		if v := resp.Header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	if r.Method == http.MethodGet {
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	}
	w.WriteHeader(resp.StatusCode)
	if r.Method == http.MethodGet {
		w.Write(body)
	}
	s.log.Info("request", slog.String("method", r.Method), slog.String("url", target), slog.String("kind", "nuget-feed"),
		slog.String("outcome", "pass"), slog.Int("status", resp.StatusCode), slog.Int("bytes", len(body)), slog.String("client", r.RemoteAddr))
}

func isXML(ct string) bool {
	return strings.Contains(ct, "xml") // application/atom+xml, application/xml, text/xml
}

// learnAndRewrite records the page's package hashes and points its links
// (content src, next, xml:base, ids) at this feed. A page that does not
// parse is passed on unchanged and teaches nothing.
func (s *Server) learnAndRewrite(rt chocoRoute, target string, body []byte) []byte {
	feed, err := chocolatey.ParseFeed(bytes.NewReader(body))
	if err != nil {
		s.log.Warn("malformed feed answer; passed on unchanged, nothing learnt", slog.String("url", target), slog.Any("err", err))
		return body
	}
	if len(feed.Skipped) > 0 {
		s.log.Warn("feed entries left out (they download from upstream directly)", slog.String("url", target),
			slog.Int("count", len(feed.Skipped)), slog.String("first", feed.Skipped[0]))
	}
	s.recordEntries(rt, feed.Entries)
	// strings.Replacer tries its pairs in order at each position: the
	// package URLs first, then the bases they start with.
	var pairs []string
	for _, e := range feed.Entries {
		ours := rt.ourBase + "package/" + e.ID + "/" + e.Version
		pairs = append(pairs, xmlAttr(e.ContentSrc), xmlAttr(ours))
	}
	for _, base := range []string{feed.Base, rt.upstream} {
		if base = strings.TrimSuffix(base, "/"); base != "" {
			pairs = append(pairs, xmlAttr(base)+"/", rt.ourBase, xmlAttr(base), strings.TrimSuffix(rt.ourBase, "/"))
		}
	}
	return []byte(strings.NewReplacer(pairs...).Replace(string(body)))
}

func xmlAttr(s string) string { return strings.ReplaceAll(s, "&", "&amp;") }

func chocoKey(feed, id, version string) string {
	return "chocolatey:" + feed + ":" + strings.ToLower(id) + "/" + strings.ToLower(version)
}

func (s *Server) recordEntries(rt chocoRoute, entries []chocolatey.Entry) {
	facts := map[string]cachestore.Known{}
	for _, e := range entries {
		if e.HashHex == "" {
			continue // no hash: the package is cached by URL only
		}
		facts[chocoKey(rt.feed, e.ID, e.Version)] = cachestore.Known{
			Digest: cachestore.Digest{Algo: e.HashAlgo, Hex: e.HashHex}, Size: e.Size, Source: e.ContentSrc,
		}
	}
	if len(facts) == 0 {
		return
	}
	if err := s.store.PutKnown(facts); err != nil {
		s.log.Error("could not record package hashes", slog.String("feed", rt.feed), slog.Any("err", err))
	}
	s.knownDirty.Store(true)
}

// learnPackage asks upstream for one package's entry, for a download whose
// metadata did not pass through us first.
func (s *Server) learnPackage(ctx context.Context, rt chocoRoute, id, version string) {
	target := rt.upstream + "Packages(Id='" + id + "',Version='" + version + "')"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return
	}
	s.setUpstreamHeaders(req, "")
	resp, err := s.up.Do(req)
	if err != nil {
		s.log.Warn("could not look up a package's hash", slog.String("url", target), slog.Any("err", err))
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return
	}
	feed, err := chocolatey.ParseFeed(io.LimitReader(resp.Body, maxFeedBytes))
	if err != nil {
		s.log.Warn("malformed package entry", slog.String("url", target), slog.Any("err", err))
		return
	}
	s.recordEntries(rt, feed.Entries)
}

// serveNupkg serves a package by the digest its feed entry gave, fetched
// from its upstream content src on a miss and verified against PackageHash.
func (s *Server) serveNupkg(w http.ResponseWriter, r *http.Request, rt chocoRoute, id, version string) {
	if !chocolatey.ValidID(id) || !chocolatey.ValidVersion(version) {
		http.Error(w, fmt.Sprintf("warren: %q %q is not a package id and version", id, version), http.StatusBadRequest)
		return
	}
	key := chocoKey(rt.feed, id, version)
	k, err := s.store.Known(key)
	if errors.Is(err, cachestore.ErrNotFound) {
		s.learnPackage(r.Context(), rt, id, version)
		k, err = s.store.Known(key)
	}
	// PackageSize is informational in feeds; the hash is what is checked.
	p := plan{kind: "nupkg", size: -1, url: rt.upstream + "package/" + id + "/" + version}
	if err == nil {
		p.url, p.digest = k.Source, k.Digest
	}
	p.key = p.url
	if key, ok := canonicalString(p.url); ok {
		p.key = key
	}
	s.servePlan(w, r, p)
}
