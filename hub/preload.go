package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/warren-cache/warren/internal/statefile"
)

// PreloadList is what a site must hold (the preload setting), by ecosystem.
type PreloadList struct {
	Apt        []AptPreload        `yaml:"apt" json:"apt,omitempty"`
	RPM        []RPMPreload        `yaml:"rpm" json:"rpm,omitempty"`
	Chocolatey []ChocolateyPreload `yaml:"chocolatey" json:"chocolatey,omitempty"`
}

// AptPreload is one apt repository's packages: name globs, their
// dependencies included.
type AptPreload struct {
	URL           string   `yaml:"url" json:"url"`
	Suites        []string `yaml:"suites" json:"suites"`
	Components    []string `yaml:"components" json:"components"`
	Architectures []string `yaml:"architectures" json:"architectures"`
	Packages      []string `yaml:"packages" json:"packages"`
}

// RPMPreload is one rpm repository's packages, by name glob.
type RPMPreload struct {
	BaseURL  string   `yaml:"baseurl" json:"baseurl"`
	Packages []string `yaml:"packages" json:"packages"`
}

// ChocolateyPreload is packages of one NuGet v2 feed, by id.
type ChocolateyPreload struct {
	Feed     string   `yaml:"feed" json:"feed"`
	IDs      []string `yaml:"ids" json:"ids"`
	Versions string   `yaml:"versions" json:"versions"` // latest (default) or all
}

// Empty says whether the list names nothing.
func (l PreloadList) Empty() bool { return len(l.Apt)+len(l.RPM)+len(l.Chocolatey) == 0 }

// Check says what is wrong with the list, naming the entry.
func (l PreloadList) Check() error {
	httpURL := func(s string) bool {
		u, err := url.Parse(s)
		return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
	}
	// What a hub preloads is for every node: a repository behind a
	// credential is its users' alone (RFC 9111 §3.5).
	private := func(where, s string) error {
		if u, err := url.Parse(s); err == nil && u.User != nil {
			return fmt.Errorf("%s: %s: a repository with credentials is private and never preloaded for the site; list it without user:password, or leave it to its own clients", where, RedactURLs(s))
		}
		return nil
	}
	globs := func(where string, gs []string) error {
		if len(gs) == 0 {
			return fmt.Errorf("%s: no packages: list names or globs such as \"libreoffice-*\"", where)
		}
		for _, g := range gs {
			if _, err := path.Match(g, ""); err != nil || g == "" {
				return fmt.Errorf("%s: %q is not a name glob", where, g)
			}
		}
		return nil
	}
	for i, a := range l.Apt {
		where := fmt.Sprintf("preload.apt[%d]", i)
		switch {
		case !httpURL(a.URL):
			return fmt.Errorf("%s: url %q: want the archive's http(s) URL, such as http://deb.debian.org/debian", where, RedactURLs(a.URL))
		case private(where, a.URL) != nil:
			return private(where, a.URL)
		case len(a.Suites) == 0 || len(a.Components) == 0 || len(a.Architectures) == 0:
			return fmt.Errorf("%s: suites, components and architectures are all needed", where)
		}
		if err := globs(where, a.Packages); err != nil {
			return err
		}
	}
	for i, r := range l.RPM {
		where := fmt.Sprintf("preload.rpm[%d]", i)
		if !httpURL(r.BaseURL) {
			return fmt.Errorf("%s: baseurl %q: want the repository's http(s) URL (the directory holding repodata/)", where, RedactURLs(r.BaseURL))
		}
		if err := private(where, r.BaseURL); err != nil {
			return err
		}
		if err := globs(where, r.Packages); err != nil {
			return err
		}
	}
	for i, c := range l.Chocolatey {
		where := fmt.Sprintf("preload.chocolatey[%d]", i)
		switch {
		case !httpURL(c.Feed):
			return fmt.Errorf("%s: feed %q: want a NuGet v2 URL such as https://community.chocolatey.org/api/v2/", where, RedactURLs(c.Feed))
		case private(where, c.Feed) != nil:
			return private(where, c.Feed)
		case len(c.IDs) == 0:
			return fmt.Errorf("%s: no ids", where)
		case c.Versions != "" && c.Versions != "latest" && c.Versions != "all":
			return fmt.Errorf("%s: versions %q: want latest or all", where, c.Versions)
		}
	}
	return nil
}

// Match says whether name matches one of the globs.
func Match(globs []string, name string) bool {
	for _, g := range globs {
		if ok, _ := path.Match(g, name); ok {
			return true
		}
	}
	return false
}

// Closure is roots and everything they need, by deps (a name's direct
// dependencies), sorted; names deps does not know are left out.
func Closure(roots []string, deps func(name string) ([]string, bool)) []string {
	seen := map[string]bool{}
	stack := append([]string(nil), roots...)
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[n] {
			continue
		}
		next, ok := deps(n)
		if !ok {
			continue
		}
		seen[n] = true
		stack = append(stack, next...)
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Window is a daily time window (preload_schedule), such as 02:00-04:00;
// one that ends before it starts runs past midnight. The zero Window is
// never open: preload runs on demand only.
type Window struct {
	start, end time.Duration // since midnight
	set        bool
}

// ParseWindow reads "HH:MM-HH:MM" ("" for none).
func ParseWindow(s string) (Window, error) {
	if s == "" {
		return Window{}, nil
	}
	a, b, ok := strings.Cut(s, "-")
	start, err1 := clockTime(a)
	end, err2 := clockTime(b)
	if !ok || err1 != nil || err2 != nil || start == end {
		return Window{}, fmt.Errorf("preload_schedule %q: want a daily window such as 02:00-04:00", s)
	}
	return Window{start: start, end: end, set: true}, nil
}

func clockTime(s string) (time.Duration, error) {
	h, m, ok := strings.Cut(strings.TrimSpace(s), ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || hh < 0 || hh > 23 || mm < 0 || mm > 59 {
		return 0, errors.New("not HH:MM")
	}
	return time.Duration(hh)*time.Hour + time.Duration(mm)*time.Minute, nil
}

// Open says whether t (local time) is inside the window, and when that
// occurrence of the window ends.
func (w Window) Open(t time.Time) (bool, time.Time) {
	if !w.set {
		return false, time.Time{}
	}
	midnight := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, t.Location())
	since := t.Sub(midnight)
	switch {
	case w.start < w.end && since >= w.start && since < w.end:
		return true, midnight.Add(w.end)
	case w.start > w.end && since >= w.start: // before midnight
		return true, midnight.Add(24*time.Hour + w.end)
	case w.start > w.end && since < w.end: // after midnight
		return true, midnight.Add(w.end)
	}
	return false, time.Time{}
}

func (w Window) String() string {
	if !w.set {
		return ""
	}
	f := func(d time.Duration) string { return fmt.Sprintf("%02d:%02d", int(d.Hours()), int(d.Minutes())%60) }
	return f(w.start) + "-" + f(w.end)
}

// PreloadRun is one run, for the run log.
type PreloadRun struct {
	Start     time.Time      `json:"start"`
	End       time.Time      `json:"end"`
	DryRun    bool           `json:"dry_run"`
	Trigger   string         `json:"trigger"` // schedule or demand
	Wanted    int            `json:"wanted"`  // artifacts the list names
	Missing   int            `json:"missing"` // of those, not held when the run began
	Bytes     int64          `json:"missing_bytes"`
	Fetched   int            `json:"fetched"`
	FetchedB  int64          `json:"fetched_bytes"`
	Failures  []string       `json:"failures,omitempty"`
	Stopped   string         `json:"stopped,omitempty"` // why it ended early (the window closed)
	Ecosystem map[string]int `json:"wanted_by_ecosystem,omitempty"`
	// MissingSuites are the apt suites clients asked this (preload-only)
	// hub for that the list lacks ("archive suite": times asked).
	MissingSuites map[string]int64 `json:"missing_suites,omitempty"`
}

// PreloadState is what preloading keeps across restarts: the run log,
// and the packages seen held (for preload_updates).
type PreloadState struct {
	Runs []PreloadRun `json:"runs"`
	// Held are packages ("apt:name", "rpm:name", "chocolatey:id") seen
	// held: a newer version of them is fetched by preload_updates.
	Held map[string]bool `json:"held"`
}

// maxRuns bounds the run log.
const maxRuns = 50

// LoadPreloadState reads the state in dir (empty when there is none).
func LoadPreloadState(dir string) (PreloadState, error) {
	st := PreloadState{Held: map[string]bool{}}
	b, err := os.ReadFile(filepath.Join(dir, "preload.json"))
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("read preload state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return PreloadState{Held: map[string]bool{}}, fmt.Errorf("preload state %s is damaged (%v): starting afresh", filepath.Join(dir, "preload.json"), err)
	}
	if st.Held == nil {
		st.Held = map[string]bool{}
	}
	return st, nil
}

// Save writes the state to dir durably, with the run log bounded.
func (st *PreloadState) Save(dir string) error {
	if len(st.Runs) > maxRuns {
		st.Runs = st.Runs[len(st.Runs)-maxRuns:]
	}
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("save preload state: %w", err)
	}
	if err := statefile.Write(filepath.Join(dir, "preload.json"), b, 0o640); err != nil {
		return fmt.Errorf("save preload state: %w", err)
	}
	return nil
}
