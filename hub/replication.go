package hub

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/internal/statefile"
)

// Replication: a hub serves what it holds to other hubs, read-only, as a
// change feed (its store's change log, paged by cursor) and blobs by
// digest; a hub pulls from others (replicate_from). This file holds the
// policy and the wire; the proxy applies it to its store.

// Where a hub serves replication (with a sync token, not a hub token).
const (
	ReplicationPrefix = "/_warren/replication/v1/"
	ChangesPath       = ReplicationPrefix + "changes"
	BlobsPath         = ReplicationPrefix + "blobs/"
	// HeaderHubID names the hub asking, so that a hub can refuse a pull
	// that would go round in a circle.
	HeaderHubID = "X-Warren-Hub-Id"
)

// Repos names repositories: what a sync token may read, or what a hub
// pulls. The zero value names every repository.
type Repos struct {
	Apt        []AptRepo        `yaml:"apt" json:"apt,omitempty"`
	RPM        []RPMRepo        `yaml:"rpm" json:"rpm,omitempty"`
	Chocolatey []ChocolateyRepo `yaml:"chocolatey" json:"chocolatey,omitempty"`
}

// AptRepo is an apt archive; suites, components and architectures narrow
// its index files (unset: all). Its pool is shared by its suites: a pool
// file of the archive is in any scope naming the archive.
type AptRepo struct {
	URL           string   `yaml:"url" json:"url"`
	Suites        []string `yaml:"suites" json:"suites,omitempty"`
	Components    []string `yaml:"components" json:"components,omitempty"`
	Architectures []string `yaml:"architectures" json:"architectures,omitempty"`
}

// RPMRepo is an rpm repository: everything under its baseurl.
type RPMRepo struct {
	BaseURL string `yaml:"baseurl" json:"baseurl"`
}

// ChocolateyRepo is a NuGet v2 feed, or some package ids of it.
type ChocolateyRepo struct {
	Feed string   `yaml:"feed" json:"feed"`
	IDs  []string `yaml:"ids" json:"ids,omitempty"`
}

// All says whether r names every repository.
func (r Repos) All() bool { return len(r.Apt)+len(r.RPM)+len(r.Chocolatey) == 0 }

// Check says what is wrong with r, naming the entry by where.
func (r Repos) Check(where string) error {
	ok := func(s string) bool {
		u, err := url.Parse(s)
		return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
	}
	for i, a := range r.Apt {
		if !ok(a.URL) {
			return fmt.Errorf("%s.apt[%d]: url %q: want the archive's http(s) URL, such as http://deb.debian.org/debian", where, i, a.URL)
		}
	}
	for i, p := range r.RPM {
		if !ok(p.BaseURL) {
			return fmt.Errorf("%s.rpm[%d]: baseurl %q: want the repository's http(s) URL (the directory holding repodata/)", where, i, p.BaseURL)
		}
	}
	for i, c := range r.Chocolatey {
		if !ok(c.Feed) {
			return fmt.Errorf("%s.chocolatey[%d]: feed %q: want a NuGet v2 URL such as https://community.chocolatey.org/api/v2/", where, i, c.Feed)
		}
	}
	return nil
}

// normRoot is a repository URL as index keys spell their start: scheme
// and host lower-case, the default port dropped, with one trailing slash.
func normRoot(s string) string {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		return s
	}
	host := strings.ToLower(u.Host)
	switch {
	case strings.EqualFold(u.Scheme, "http"):
		host = strings.TrimSuffix(host, ":80")
	case strings.EqualFold(u.Scheme, "https"):
		host = strings.TrimSuffix(host, ":443")
	}
	return strings.ToLower(u.Scheme) + "://" + host + strings.TrimSuffix(u.EscapedPath(), "/") + "/"
}

// FeedQueryPrefix starts the index key of a kept NuGet feed answer; the
// feed's URL and the call's normal form follow.
const FeedQueryPrefix = "chocolatey-query:"

// Admits says whether the file kept under key (a canonical URL, or a
// feed answer's key) belongs to one of the repositories.
func (r Repos) Admits(key string) bool {
	if r.All() {
		return true
	}
	if rest, ok := strings.CutPrefix(key, FeedQueryPrefix); ok {
		for _, c := range r.Chocolatey {
			if call, ok := cutFold(rest, normRoot(c.Feed)); ok && admitsCall(c.IDs, call) {
				return true
			}
		}
		return false
	}
	for _, a := range r.Apt {
		if rest, ok := strings.CutPrefix(key, normRoot(a.URL)); ok && a.admits(rest) {
			return true
		}
	}
	for _, p := range r.RPM {
		if strings.HasPrefix(key, normRoot(p.BaseURL)) {
			return true
		}
	}
	for _, c := range r.Chocolatey {
		// A package's download: <feed>package/<id>/<version>.
		if rest, ok := cutFold(key, normRoot(c.Feed)); ok {
			id, _, _ := strings.Cut(strings.TrimPrefix(rest, "package/"), "/")
			if len(c.IDs) == 0 || slices.ContainsFunc(c.IDs, func(x string) bool { return strings.EqualFold(x, id) }) {
				return true
			}
		}
	}
	return false
}

func cutFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return "", false
}

// admitsCall: a feed's own documents, and with ids the calls that name one.
func admitsCall(ids []string, call string) bool {
	if len(ids) == 0 {
		return true
	}
	lower := strings.ToLower(call)
	if lower == "" || strings.HasPrefix(lower, "$metadata") {
		return true
	}
	for _, id := range ids {
		if strings.Contains(lower, "'"+strings.ToLower(id)+"'") {
			return true
		}
	}
	return false
}

// admits a path under the archive: dists/<suite>/... narrowed by suites,
// components and architectures; the pool.
func (a AptRepo) admits(rest string) bool {
	if strings.HasPrefix(rest, "pool/") {
		return true
	}
	rest, ok := strings.CutPrefix(rest, "dists/")
	if !ok {
		return false
	}
	parts := strings.Split(rest, "/")
	if len(parts) < 2 || len(a.Suites) > 0 && !slices.Contains(a.Suites, parts[0]) {
		return false
	}
	if len(parts) == 2 {
		return true // InRelease, Release, Release.gpg
	}
	if len(a.Components) > 0 && !slices.Contains(a.Components, parts[1]) {
		return false
	}
	if len(a.Architectures) > 0 && len(parts) >= 4 {
		if arch, ok := strings.CutPrefix(parts[2], "binary-"); ok {
			return arch == "all" || slices.Contains(a.Architectures, arch)
		}
	}
	return true
}

// Intersect is what both admit: a requested selection read with a token's
// scope. Both are applied to each key, so it is kept as a pair.
type Intersect [2]Repos

// Admits says whether both admit key.
func (i Intersect) Admits(key string) bool { return i[0].Admits(key) && i[1].Admits(key) }

// SyncToken is one of replication.tokens: a name for the logs and what it
// may read.
type SyncToken struct {
	Name         string `yaml:"name" json:"name"`
	Token        string `yaml:"token" json:"-"`
	Repositories Repos  `yaml:"repositories" json:"repositories"`
}

// SyncTokens are a hub's replication.tokens. The zero value serves
// nobody: replication is off.
type SyncTokens struct {
	list []SyncToken
	sums [][32]byte
}

// NewSyncTokens takes the configured tokens (each the token itself or
// "sha256:<hex>" of it).
func NewSyncTokens(list []SyncToken) SyncTokens {
	var t SyncTokens
	for _, s := range list {
		if s.Token != "" {
			t.list = append(t.list, s)
			t.sums = append(t.sums, tokenSum(s.Token))
		}
	}
	return t
}

// Enabled says whether this hub serves replication at all.
func (t SyncTokens) Enabled() bool { return len(t.list) > 0 }

// ErrNoSyncToken and ErrBadSyncToken are a request's failures.
var (
	ErrNoSyncToken  = errors.New("replication needs a sync token: Authorization: Bearer TOKEN (the token of a replicate_from entry)")
	ErrBadSyncToken = errors.New("the token is not one of this hub's replication.tokens")
)

// Check finds the request's token, comparing every one in constant time.
func (t SyncTokens) Check(r *http.Request) (SyncToken, error) {
	scheme, given, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return SyncToken{}, ErrNoSyncToken
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(given)))
	found := -1
	for i := range t.sums {
		if subtle.ConstantTimeCompare(sum[:], t.sums[i][:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return SyncToken{}, ErrBadSyncToken
	}
	return t.list[found], nil
}

// Page is one answer of the change feed.
type Page struct {
	// Hub is the serving hub's id; Chain, it and the hubs it pulls from
	// (transitively, as last seen): a hub in it must not pull from this one.
	Hub   string   `json:"hub"`
	Chain []string `json:"chain"`
	// Log names the serving hub's change log (cachestore.ChangeLogID): a
	// cursor is a place in that log only.
	Log     string              `json:"log,omitempty"`
	Entries []cachestore.Change `json:"entries"`
	// Next is the cursor to ask from next; Last the log's newest seq, and
	// LastAt when it was written (for the puller's lag).
	Next   uint64    `json:"next"`
	Last   uint64    `json:"last"`
	LastAt time.Time `json:"last_at,omitzero"`
	More   bool      `json:"more"`
}

// MaxPage bounds the entries of one page.
const MaxPage = 1000

// MaxRetry bounds the failed entries a hub keeps to try again; past it
// the cursor stops before the first one left out, so nothing is lost.
const MaxRetry = 10000

// ReplicateFrom is one replicate_from entry: a hub to pull from.
type ReplicateFrom struct {
	Name  string `yaml:"name" json:"name"`
	URL   string `yaml:"url" json:"url"`
	Token string `yaml:"token" json:"-"`
	// TokenFile names a file holding the token instead (the settings read
	// it into Token), so that the config file need not hold it.
	TokenFile    string `yaml:"token_file" json:"-"`
	Repositories Repos  `yaml:"repositories" json:"repositories"`
}

// Check says what is wrong with the entry.
func (f ReplicateFrom) Check(i int) error {
	where := fmt.Sprintf("replicate_from[%d]", i)
	u, err := url.Parse(f.URL)
	switch {
	case CheckURLHost(f.URL) != nil:
		return fmt.Errorf("%s (%s): url %q: %w", where, f.Name, RedactURLs(f.URL), CheckURLHost(f.URL))
	case f.Name == "":
		return fmt.Errorf("%s: no name: give each source hub a name (for the log and --from)", where)
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return fmt.Errorf("%s (%s): url %q: want the hub's http(s) URL, such as http://main-hub:3142", where, f.Name, RedactURLs(f.URL))
	case f.Token == "" && f.TokenFile == "":
		return fmt.Errorf("%s (%s): no token: set token (or token_file, a file holding it) to one of that hub's replication.tokens", where, f.Name)
	case f.Token != "" && f.TokenFile != "":
		return fmt.Errorf("%s (%s): token and token_file both set: give the token one way", where, f.Name)
	}
	return f.Repositories.Check(where + ".repositories")
}

// ReplicateRun is one run against one source hub, for the run log.
type ReplicateRun struct {
	From      string    `json:"from"`
	Trigger   string    `json:"trigger"` // schedule or demand
	Start     time.Time `json:"start"`
	End       time.Time `json:"end"`
	CursorIn  uint64    `json:"cursor_before"`
	CursorOut uint64    `json:"cursor_after"`
	// Last is the source's newest seq when the run ended (lag: Last - CursorOut).
	Last    uint64    `json:"source_last"`
	LastAt  time.Time `json:"source_last_at,omitzero"`
	Entries int       `json:"entries"`
	Blobs   int       `json:"blobs"`
	Bytes   int64     `json:"bytes"`
	Deleted int       `json:"deleted"`
	Skipped int       `json:"skipped"` // held already, or deleted here
	// Refused counts the source's entries this hub does not take: outside
	// its repositories, malformed.
	Refused int `json:"refused,omitempty"`
	// ToRetry counts the entries that failed, kept to try again.
	ToRetry int `json:"to_retry,omitempty"`
	// Unverified counts the entries of repositories with keys that no
	// verified Release or repomd.xml (nor an index file one lists) lists:
	// not applied nor offered on; kept to try again, or dropped once a
	// newer verified one does not list them either.
	Unverified int `json:"unverified,omitempty"`
	// Restarted: the source's change log was a new one (it was rebuilt),
	// read from its start.
	Restarted bool `json:"restarted,omitempty"`
	// Failures say what could not be replicated and why; Error, a run
	// that could not go on (a wrong token, a loop, the hub unreachable).
	Failures []string `json:"failures,omitempty"`
	Error    string   `json:"error,omitempty"`
}

// OK says whether the run did all it set out to.
func (r ReplicateRun) OK() bool { return r.Error == "" && len(r.Failures) == 0 }

// SourceState is what a hub keeps of one source between runs.
type SourceState struct {
	Cursor uint64   `json:"cursor"`
	Chain  []string `json:"chain,omitempty"`
	// Log is the source's change log the cursor is a place in: another
	// one (the source rebuilt) starts from 0.
	Log string `json:"log,omitempty"`
	// Retry are entries before the cursor that failed: tried again first
	// by the next run (at most MaxRetry).
	Retry []cachestore.Change `json:"retry,omitempty"`
	// URL is the source's URL the cursor belongs to: another hub at that
	// name starts from 0.
	URL string `json:"url"`
}

// ReplicateState is what replication keeps across restarts
// (replication.json): cursors and the run log.
type ReplicateState struct {
	Sources map[string]*SourceState `json:"sources"`
	Runs    []ReplicateRun          `json:"runs"`
}

// MaxReplicateRuns bounds the run log.
const MaxReplicateRuns = 50

// LoadReplicateState reads the state in dir (empty when there is none).
func LoadReplicateState(dir string) (ReplicateState, error) {
	st := ReplicateState{Sources: map[string]*SourceState{}}
	b, err := os.ReadFile(filepath.Join(dir, "replication.json"))
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("read replication state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return ReplicateState{Sources: map[string]*SourceState{}},
			fmt.Errorf("replication state %s is damaged (%v): every source starts from the beginning (held blobs are not fetched again)", filepath.Join(dir, "replication.json"), err)
	}
	if st.Sources == nil {
		st.Sources = map[string]*SourceState{}
	}
	return st, nil
}

// Save writes the state to dir durably, the run log bounded.
func (st *ReplicateState) Save(dir string) error {
	if len(st.Runs) > MaxReplicateRuns {
		st.Runs = st.Runs[len(st.Runs)-MaxReplicateRuns:]
	}
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("save replication state: %w", err)
	}
	if err := statefile.Write(filepath.Join(dir, "replication.json"), b, 0o640); err != nil {
		return fmt.Errorf("save replication state: %w", err)
	}
	return nil
}

// Chain is this hub's id and the chains of the hubs it pulls from, each
// id once: what it sends with its feed.
func (st ReplicateState) Chain(self string) []string {
	out := []string{self}
	for _, s := range st.Sources {
		for _, id := range s.Chain {
			if !slices.Contains(out, id) {
				out = append(out, id)
			}
		}
	}
	return out
}

// LoopError is a pull that would go round in a circle.
type LoopError struct{ Source, Chain string }

func (e *LoopError) Error() string {
	return fmt.Sprintf("replication loop: hub %s already pulls from this hub (its chain: %s); pulling from it would go round in a circle: remove one of the replicate_from entries", e.Source, e.Chain)
}

// PullerStatus is a hub that pulls from this one, as its requests show:
// under which sync token, from where, the cursor it reached and the log's
// end then (its lag), when it came last and the blob bytes it took.
type PullerStatus struct {
	Token    string    `json:"token"`
	Hub      string    `json:"hub,omitempty"`
	Addr     string    `json:"addr"`
	LastSeen time.Time `json:"last_seen"`
	Cursor   uint64    `json:"cursor"`
	Last     uint64    `json:"last"`
	Bytes    int64     `json:"bytes"`
}

// Lag is the change-log entries the puller had not reached yet.
func (p PullerStatus) Lag() uint64 { return p.Last - min(p.Last, p.Cursor) }
