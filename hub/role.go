package hub

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-cache/warren/cachestore"
)

// Role makes a warren a site's hub: the nodes' parent for everything
// upstream. The front (package proxy) applies it at the steps of its one
// request story: who may come in (tokens, the failure limit), what a node
// says it expects (X-Warren-Digest), what a preload-only hub refuses, and
// the max-requesters queue.
type Role struct {
	cfg     RoleConfig
	log     *slog.Logger
	refused map[string]*atomic.Int64 // by reason; made once, in NewRole

	missingMu sync.Mutex // guards missing
	// missing counts what clients asked for of apt suites the preload
	// list lacks, by "archive suite" (a bounded number of them).
	missing map[string]int64

	clients clients // the nodes and clients served
}

// RoleConfig is a hub's policy.
type RoleConfig struct {
	// ID names this hub in its info answer and in the nodes' status.
	ID   string
	Mode Mode
	// Tokens, when enabled, are required of every proxy request.
	Tokens Tokens
	// Queue bounds the requesters streaming one artifact in transfer.
	Queue *Queue
	// Failures bounds failed tokens (hub and sync tokens alike) per
	// client address; nil: NewRole makes one with the defaults.
	Failures *FailLimit
	Logger   *slog.Logger
	Now      func() time.Time
	// Preload is the hub's preload list: in preload mode, an index file of
	// a suite the list lacks is refused saying so, and counted.
	Preload PreloadList
	// SignNode signs nodes' certificate requests (enrol.go): set when the
	// hub holds the site CA's key.
	SignNode SignNode
}

// NewRole builds a hub's role.
func NewRole(cfg RoleConfig) *Role {
	if cfg.Failures == nil {
		// Never a hub whose tokens can be tried at line speed.
		cfg.Failures = NewFailLimit(FailLimitConfig{Now: cfg.Now})
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Queue == nil {
		cfg.Queue = NewQueue(DefaultMaxRequesters, DefaultRetryDelay)
	}
	r := &Role{cfg: cfg, log: cfg.Logger, refused: map[string]*atomic.Int64{}, missing: map[string]int64{}}
	for _, reason := range []string{ReasonToken, ReasonAuthLimit, ReasonNotPreloaded, ReasonMaxRequesters, ReasonLoop, ReasonEnrolKey} {
		r.refused[reason] = new(atomic.Int64)
	}
	return r
}

// ID is the hub's id.
func (h *Role) ID() string { return h.cfg.ID }

// Mode is the hub's mode.
func (h *Role) Mode() Mode { return h.cfg.Mode }

// Queue is the hub's max-requesters queue.
func (h *Role) Queue() *Queue { return h.cfg.Queue }

// Refuse counts a refusal for reason (the front's own: a loop).
func (h *Role) Refuse(reason string) {
	if n := h.refused[reason]; n != nil {
		n.Add(1)
	}
}

// Refusals are the refusals counted so far, by reason.
func (h *Role) Refusals() map[string]int64 {
	out := map[string]int64{}
	for r, n := range h.refused {
		out[r] = n.Load()
	}
	return out
}

// Admit applies the hub's door rules to a request that is not for one of
// the front's pages: the token, and the hub's info answer. false: answered.
func (h *Role) Admit(w http.ResponseWriter, r *http.Request) bool {
	if h.cfg.Tokens.Enabled() && !h.Authenticate(w, r, "hub token", func() error { return h.cfg.Tokens.Check(r) }) {
		return false
	}
	// What proved the node goes no further upstream.
	h.cfg.Tokens.Strip(r.Header)
	if !r.URL.IsAbs() && r.URL.Path == InfoPath {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(Info{ID: h.cfg.ID, Mode: h.cfg.Mode})
		return false
	}
	if !r.URL.IsAbs() && r.URL.Path == EnrolPath {
		h.serveEnrol(w, r)
		return false
	}
	return true
}

// Authenticate runs check, a token check, under the hub's failure limit:
// false means answered (429, 407 or 401). An address that failed too often
// lately is refused before its token is looked at; each window of its
// failures is logged once, with the count of the window before.
func (h *Role) Authenticate(w http.ResponseWriter, r *http.Request, what string, check func() error) bool {
	lim := h.cfg.Failures
	if wait := lim.Blocked(r.RemoteAddr); wait > 0 {
		h.Refuse(ReasonAuthLimit)
		RefuseAuthLimit(w, wait)
		return false
	}
	err := check()
	if err == nil {
		return true
	}
	h.Refuse(ReasonToken)
	if f := lim.Failed(r.RemoteAddr); f.First {
		h.log.Warn("hub refused a request without a valid "+what+" (logged once a window per address; too many and it is refused with 429)",
			slog.String("client", r.RemoteAddr), slog.String("url", ShownRequestURL(r)), slog.Int("failures_window_before", f.Before), slog.Any("err", err))
	}
	RefuseToken(w, r.Method == http.MethodConnect || r.URL.IsAbs(), err.Error())
	return false
}

// maxShownURL bounds a request's URL in a log line: a client chooses it.
const maxShownURL = 256

// ShownRequestURL is a request's URL as a log line shows it: without a
// password, and cut at 256 characters, marked so.
func ShownRequestURL(r *http.Request) string {
	u := RedactURLs(r.URL.String())
	if len(u) > maxShownURL {
		return fmt.Sprintf("%s…(cut, %d bytes)", u[:maxShownURL], len(u))
	}
	return u
}

// Served records a request the front answered with outcome (hit, miss,
// ...) and n bytes: the hub's page lists its nodes and clients.
func (h *Role) Served(r *http.Request, outcome string, n int64) {
	now := time.Now
	if h.cfg.Now != nil {
		now = h.cfg.Now
	}
	h.clients.served(r, now(), outcome, n)
}

// Clients are the nodes and clients served, the most recently seen first.
func (h *Role) Clients() []Client { return h.clients.list() }

// Target says whether a node's request asks for an https URL: a node
// asks for one as plain http with HeaderScheme (its link to the hub is
// not the origin's TLS); target's scheme is set to https then.
func (h *Role) Target(r *http.Request, target *url.URL) bool {
	if r.URL.IsAbs() && target.Scheme == "http" && r.Header.Get(HeaderScheme) == "https" {
		target.Scheme = "https"
		return true
	}
	return false
}

// Claim is the digest a node expects, when it sends one (X-Warren-Digest):
// the hub serves that blob if it holds it, whatever generation of the
// metadata the hub itself is at, and verifies against it whatever it
// fetches. The claim teaches the hub nothing (no fact is recorded from
// it), and knowing a digest is not enough to read a blob:
//   - never for sha1 (collisions can be made);
//   - only from a node the hub's door admitted (its hub token, where
//     hub_tokens are set; allow_clients alone otherwise, the operator's
//     choice);
//   - a held blob only for a request whose scope may read it (the door's
//     lookup checks): a private scope's blob is fetched from the origin
//     again, which proves the node may have it.
//
// Otherwise the hub plans from its own facts, and a node's wrong claim
// only fails that node's own request. size is -1 when the node gave none.
func (h *Role) Claim(r *http.Request) (d cachestore.Digest, size int64, ok bool) {
	v := r.Header.Get(HeaderDigest)
	if v == "" {
		return d, -1, false
	}
	d, err := cachestore.ParseDigest(v)
	if err != nil || d.Validate() != nil || d.Algo == "sha1" {
		return cachestore.Digest{}, -1, false
	}
	size = -1
	if n, err := strconv.ParseInt(r.Header.Get(HeaderSize), 10, 64); err == nil && n >= 0 {
		size = n
	}
	return d, size, true
}

// Unheld answers, in preload mode, for what the hub does not hold: 404
// with the reason, and no byte over the WAN. false: the mode fetches it.
func (h *Role) Unheld(w http.ResponseWriter, what, url string) bool {
	if h.cfg.Mode.OnDemand() {
		return false
	}
	h.Refuse(ReasonNotPreloaded)
	if archive, suite, ok := h.missingSuite(url); ok {
		Refuse(w, http.StatusNotFound, ReasonNotPreloaded,
			fmt.Sprintf("suite %s of %s is not on this hub's preload list and hub_mode is preload: add it to the suites of that archive's preload.apt entry (warren preload run --dry-run lists the suites clients asked for), or take it out of the clients' sources (%s)", suite, archive, url))
		return true
	}
	Refuse(w, http.StatusNotFound, ReasonNotPreloaded,
		fmt.Sprintf("%s is not held and hub_mode is preload: only what was preloaded is served (%s)", what, url))
	return true
}

// maxMissingSuites bounds the suites counted: clients name them.
const maxMissingSuites = 256

// missingSuite says whether url is a file under an apt suite's dists/
// directory that the preload list lacks (its archive not listed, or the
// suite not among the archive's), and counts it.
func (h *Role) missingSuite(raw string) (archive, suite string, ok bool) {
	i := strings.Index(raw, "/dists/")
	if i < 0 {
		return "", "", false
	}
	archive = raw[:i+1]
	suite, _, _ = strings.Cut(raw[i+len("/dists/"):], "/")
	if suite == "" {
		return "", "", false
	}
	for _, a := range h.cfg.Preload.Apt {
		if normRoot(a.URL) == normRoot(archive) && slices.Contains(a.Suites, suite) {
			return "", "", false
		}
	}
	h.missingMu.Lock()
	defer h.missingMu.Unlock()
	k := archive + " " + suite
	if _, seen := h.missing[k]; seen || len(h.missing) < maxMissingSuites {
		h.missing[k]++
	}
	return archive, suite, true
}

// MissingSuites are the apt suites clients asked for that the preload
// list lacks ("archive suite"), with how often.
func (h *Role) MissingSuites() map[string]int64 {
	h.missingMu.Lock()
	defer h.missingMu.Unlock()
	return maps.Clone(h.missing)
}

// Held answers a node that asks for a stored artifact which peers of its
// LAN received it lately (Queue.Holders): 503 with X-Warren-Peers, so it
// takes it from them and the LAN's link carries it once. false when it
// names none (then serve it).
func (h *Role) Held(w http.ResponseWriter, r *http.Request, key, shown string) bool {
	who := RequesterOf(r)
	peers := h.cfg.Queue.Holders(key, who)
	if len(peers) == 0 {
		return false
	}
	h.log.Debug("peers of the requester's LAN received this artifact lately; told which", slog.String("url", shown),
		slog.String("client", r.RemoteAddr), slog.String("lan", who.LAN), slog.Any("peers", peers))
	WriteBusy(w, Busy{Peers: peers, RetryAfter: minWait, Done: -1, Total: -1})
	return true
}

// Enter admits a requester of the artifact in transfer under key (size
// bytes, -1 unknown; f its fill), tells it which LAN peers receive it, or
// tells it to wait: false means answered (503). shown names it in the log.
func (h *Role) Enter(w http.ResponseWriter, r *http.Request, f *cachestore.Fill, key string, size int64, shown string) (leave func(), ok bool) {
	q := h.cfg.Queue
	who := RequesterOf(r)
	a := q.Enter(key, who)
	if a.OK {
		return a.Leave, true
	}
	// The size the metadata gives: waiting for the transfer's own would
	// hold this answer until upstream's headers arrive.
	done := f.Written()
	if len(a.Peers) > 0 {
		h.log.Debug("hub streams this artifact to the requester's LAN already; told which peers receive it", slog.String("url", shown),
			slog.String("client", r.RemoteAddr), slog.String("lan", who.LAN), slog.Any("peers", a.Peers))
		WriteBusy(w, Busy{Peers: a.Peers, RetryAfter: q.Wait(key, done, size), Done: done, Total: size, Requesters: a.Streaming})
		return nil, false
	}
	h.Refuse(ReasonMaxRequesters)
	h.log.Info("hub busy with this artifact; requester told to wait", slog.String("url", shown),
		slog.String("client", r.RemoteAddr), slog.Int("position", a.Position), slog.Int("streaming", a.Streaming))
	WriteBusy(w, Busy{Position: a.Position, RetryAfter: q.Wait(key, done, size), Done: done, Total: size, Requesters: a.Streaming})
	return nil, false
}
