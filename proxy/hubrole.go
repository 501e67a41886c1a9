package proxy

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/hub"
)

// HubRole makes a warren a site's hub: the nodes' parent for everything
// upstream. Its parts come from package hub; the proxy applies them at
// the steps of its one request story (serve.go).
type HubRole struct {
	// ID names this hub in its info answer and in the nodes' status.
	ID   string
	Mode hub.Mode
	// Tokens, when enabled, are required of every proxy request.
	Tokens hub.Tokens
	// Queue bounds the requesters streaming one artifact in transfer.
	Queue *hub.Queue
	// KeepGenerations is how many generations of a Release's or
	// repomd.xml's index files stay servable (keep_index_generations).
	KeepGenerations int
	// Sync, when enabled, serves this hub's change feed and blobs to the
	// hubs that pull from it (replication.tokens).
	Sync hub.SyncTokens
	// Chain is this hub's id and those of the hubs it pulls from (as
	// last seen): a hub among them may not pull from this one.
	Chain func() []string
	// Failures bounds failed tokens (hub and sync tokens alike) per
	// client address; nil: New makes one with hub's defaults.
	Failures *hub.FailLimit
}

// DefaultKeepIndexGenerations is keep_index_generations unless set.
const DefaultKeepIndexGenerations = 2

// hubMetrics are the hub's own figures.
type hubMetrics struct {
	refused map[string]*atomic.Int64 // by reason; the map is made once, in New
}

func (m *hubMetrics) refuse(reason string) {
	if n := m.refused[reason]; n != nil {
		n.Add(1)
	}
}

func newHubMetrics() hubMetrics {
	m := hubMetrics{refused: map[string]*atomic.Int64{}}
	for _, r := range []string{hub.ReasonToken, hub.ReasonAuthLimit, hub.ReasonNotPreloaded, hub.ReasonMaxRequesters, hub.ReasonLoop} {
		m.refused[r] = new(atomic.Int64)
	}
	return m
}

// hubAdmit applies the hub's door rules to a request that is not for one
// of its pages: the token, and its info answer. false: answered.
func (s *Server) hubAdmit(w http.ResponseWriter, r *http.Request) bool {
	role := s.cfg.Hub
	if role.Tokens.Enabled() && !s.authenticate(w, r, "hub token", func() error { return role.Tokens.Check(r) }) {
		return false
	}
	// What proved the node goes no further upstream.
	hub.StripCredentials(r.Header)
	if !r.URL.IsAbs() && r.URL.Path == hub.InfoPath {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(hub.Info{ID: role.ID, Mode: role.Mode})
		return false
	}
	return true
}

// authenticate runs check, a token check, under the hub's failure limit:
// false means answered (429, 407 or 401). An address that failed too often
// lately is refused before its token is looked at; each window of its
// failures is logged once, with the count of the window before.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, what string, check func() error) bool {
	lim := s.cfg.Hub.Failures
	if wait := lim.Blocked(r.RemoteAddr); wait > 0 {
		s.hubm.refuse(hub.ReasonAuthLimit)
		hub.RefuseAuthLimit(w, wait)
		return false
	}
	err := check()
	if err == nil {
		return true
	}
	s.hubm.refuse(hub.ReasonToken)
	if f := lim.Failed(r.RemoteAddr); f.First {
		s.log.Warn("hub refused a request without a valid "+what+" (logged once a window per address; too many and it is refused with 429)",
			slog.String("client", r.RemoteAddr), slog.String("url", shownURL(r)), slog.Int("failures_window_before", f.Before), slog.Any("err", err))
	}
	hub.RefuseToken(w, r.Method == http.MethodConnect || r.URL.IsAbs(), err.Error())
	return false
}

// maxShownURL bounds a request's URL in a log line: a client chooses it.
const maxShownURL = 256

// shownURL is a request's URL as a log line shows it: without a password,
// and cut at maxShownURL characters, marked so.
func shownURL(r *http.Request) string {
	u := hub.RedactURLs(r.URL.String())
	if len(u) > maxShownURL {
		return fmt.Sprintf("%s…(cut, %d bytes)", u[:maxShownURL], len(u))
	}
	return u
}

// hubPlan takes the digest a node expects, when it sends one: the hub
// serves that blob if it holds it, whatever generation of the metadata
// the hub itself is at, and verifies against it whatever it fetches. The
// node's claim teaches the hub nothing (no fact is recorded from it), and
// knowing a digest is not enough to read a blob:
//   - never for sha1 (collisions can be made);
//   - only from a node the hub's door admitted (its hub token, where
//     hub_tokens are set; allow_clients alone otherwise, the operator's
//     choice);
//   - a held blob only for a request whose scope may read it (lookup
//     checks): a private scope's blob is fetched from the origin again,
//     which proves the node may have it.
//
// Otherwise the hub plans from its own facts, and a node's wrong claim
// only fails that node's own request.
func (s *Server) hubPlan(r *http.Request, p *door.Plan) {
	v := r.Header.Get(hub.HeaderDigest)
	if v == "" {
		return
	}
	d, err := cachestore.ParseDigest(v)
	if err != nil || d.Validate() != nil || d == p.Digest {
		return
	}
	if d.Algo == "sha1" {
		return
	}
	p.Digest, p.Size = d, -1
	if n, err := strconv.ParseInt(r.Header.Get(hub.HeaderSize), 10, 64); err == nil && n >= 0 {
		p.Size = n
	}
	p.PassThrough = false
}

// hubRefuseUnheld answers, in preload mode, for what the hub does not
// hold: 404 with the reason, and no byte over the WAN.
func (s *Server) hubRefuseUnheld(w http.ResponseWriter, p door.Plan) {
	s.hubm.refuse(hub.ReasonNotPreloaded)
	what := "this URL"
	if !p.Digest.IsZero() {
		what = "blob " + p.Digest.String()
	}
	hub.Refuse(w, http.StatusNotFound, hub.ReasonNotPreloaded,
		fmt.Sprintf("%s is not held and hub_mode is preload: only what was preloaded is served (%s)", what, p.URL))
}

// hubEnter admits a requester of an artifact in transfer, or tells it to
// wait: false means answered (503).
func (s *Server) hubEnter(w http.ResponseWriter, r *http.Request, f *cachestore.Fill, p door.Plan) (leave func(), ok bool) {
	q := s.cfg.Hub.Queue
	leave, pos, streaming, ok := q.Enter(p.FillKey())
	if ok {
		return leave, true
	}
	s.hubm.refuse(hub.ReasonMaxRequesters)
	// The size the metadata gives: waiting for the transfer's own would
	// hold this answer until upstream's headers arrive.
	total := p.Size
	s.log.Info("hub busy with this artifact; requester told to wait", slog.String("url", p.ShownURL()),
		slog.String("client", r.RemoteAddr), slog.Int("position", pos), slog.Int("streaming", streaming))
	done := f.Written()
	hub.WriteBusy(w, hub.Busy{Position: pos, RetryAfter: q.Wait(p.FillKey(), done, total), Done: done, Total: total, Requesters: streaming})
	return nil, false
}

// hubRefusals are the refusals counted so far, by reason.
func (s *Server) hubRefusals() map[string]int64 {
	out := map[string]int64{}
	for r, n := range s.hubm.refused {
		out[r] = n.Load()
	}
	return out
}
