package preload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/chocolatey"
	"github.com/warren-cache/warren/debian"
	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/hub"
	"github.com/warren-cache/warren/rpm"
)

// Door is what a preload run needs of the door: plans, fetches that are
// verified, learnt and stored as a request's are, and reading index files
// back.
type Door interface {
	Plan(ctx context.Context, u *url.URL, cred door.Credential) door.Plan
	Fetch(ctx context.Context, p door.Plan, who door.Asker, opts door.FetchOptions) (cachestore.Digest, error)
	Holds(d cachestore.Digest) bool
	ReadIndex(ctx context.Context, d cachestore.Digest, name string) (io.ReadCloser, error)
	// VerifiedTop reads a held Release, InRelease or repomd.xml as a
	// learn does, once it passed its signature check (an InRelease's
	// signed text alone); an error for one that fails.
	VerifiedTop(ctx context.Context, p door.Plan, d cachestore.Digest) ([]byte, error)
}

// Feeds makes a feed call as a client's would be answered (kept, its
// entries learnt): package feedserver provides it.
type Feeds interface {
	// Call asks the feed at feedURL for rest (what follows api/v2/) and
	// returns its entries, or its body when it is no XML page.
	Call(ctx context.Context, feedURL, rest string) ([]chocolatey.Entry, []byte, error)
	// Prepare readies a preloaded package for the site (a hub's
	// internalization: its rewritten form, and the installers its script
	// downloads, fetched through the door).
	Prepare(ctx context.Context, feedURL string, e chocolatey.Entry, who door.Asker) error
}

// Runner runs a hub's preload list through the door.
type Runner struct {
	door  Door
	feeds Feeds // nil: no Chocolatey feeds
	log   *slog.Logger
	now   func() time.Time
}

// NewRunner builds a runner.
func NewRunner(d Door, feeds Feeds, log *slog.Logger, now func() time.Time) *Runner {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	return &Runner{door: d, feeds: feeds, log: log, now: now}
}

// Options are one run's settings.
type Options struct {
	List hub.PreloadList
	// Updates fetches the current version of every package seen held
	// before (State.Held), when the indexes list one not held.
	Updates bool
	DryRun  bool
	// Rate caps the bytes/s the run takes from upstream (0: no cap).
	Rate int64
	// Stop, when it returns a reason, ends the run between artifacts (the
	// schedule window closed).
	Stop func() string
	// Progress is told of each artifact done (dry runs: each one counted).
	Progress func(done, total int, bytes int64)
	// Held is the state's packages seen held; the run adds to it.
	Held map[string]bool
	// Recommends follows Recommends as Depends, as apt does by default
	// (preload_recommends, apt's APT::Install-Recommends).
	Recommends bool
}

// preloadItem is one artifact a list names.
type preloadItem struct {
	eco  string // apt, rpm, chocolatey
	name string
	url  string
	d    cachestore.Digest
	size int64
	// feed and entry are a Chocolatey package's.
	feed  string
	entry chocolatey.Entry
}

// Preload runs the list once and reports it. Failures of single artifacts
// or indexes are in the report; err is for a run that could not start.
func (s *Runner) Run(ctx context.Context, o Options) (hub.PreloadRun, error) {
	run := hub.PreloadRun{Start: s.now(), DryRun: o.DryRun, Ecosystem: map[string]int{}}
	who := door.Asker{UA: "warren-preload"}
	if o.Rate > 0 {
		who.Rate = rate.NewLimiter(rate.Limit(o.Rate), int(min(o.Rate, 256<<10)))
	}
	if o.Held == nil {
		o.Held = map[string]bool{}
	}
	var items []preloadItem
	fail := func(what string, err error) {
		// A list's URL may carry a password, and errors quote URLs: the
		// run log (warren preload status) and the log show neither.
		f := hub.RedactURLs(fmt.Sprintf("%s: %v", what, err))
		run.Failures = append(run.Failures, f)
		s.log.Warn("preload: a part of the list could not be read", slog.String("failure", f))
	}
	for _, a := range o.List.Apt {
		got, err := s.preloadApt(ctx, a, o, who)
		if err != nil {
			fail(a.URL, err)
		}
		items = append(items, got...)
	}
	// What clients read beside the indexes the walk needs (dnf's
	// filelists, other, updateinfo...), fetched by a real run.
	var metadata []preloadItem
	for _, r := range o.List.RPM {
		got, md, err := s.preloadRPM(ctx, r, o, who)
		if err != nil {
			fail(r.BaseURL, err)
		}
		items = append(items, got...)
		metadata = append(metadata, md...)
	}
	for _, c := range o.List.Chocolatey {
		got, err := s.preloadChocolatey(ctx, c)
		if err != nil {
			fail(c.Feed, err)
		}
		items = append(items, got...)
	}
	// One per blob; the rest are what is not held.
	seen := map[cachestore.Digest]bool{}
	var missing, chocos []preloadItem
	for _, it := range items {
		if seen[it.d] {
			continue
		}
		seen[it.d] = true
		if it.eco == "chocolatey" {
			chocos = append(chocos, it)
		}
		run.Wanted++
		run.Ecosystem[it.eco]++
		if s.door.Holds(it.d) {
			o.Held[it.eco+":"+it.name] = true
			continue
		}
		missing = append(missing, it)
		run.Missing++
		run.Bytes += max(it.size, 0)
	}
	if o.DryRun {
		if o.Progress != nil {
			o.Progress(len(missing), len(missing), run.Bytes)
		}
		run.End = s.now()
		return run, nil
	}
	for _, it := range metadata {
		if ctx.Err() != nil {
			break
		}
		if s.door.Holds(it.d) {
			continue
		}
		p := s.door.Plan(ctx, mustParse(it.url), door.Credential{})
		p.Digest, p.Size = it.d, it.size
		if err := s.fetch(ctx, p, who); err != nil {
			fail(it.url, err)
		}
	}
	for i, it := range missing {
		if o.Stop != nil {
			if why := o.Stop(); why != "" {
				run.Stopped = why
				break
			}
		}
		if ctx.Err() != nil {
			run.Stopped = "stopped: " + ctx.Err().Error()
			break
		}
		p := s.door.Plan(ctx, mustParse(it.url), door.Credential{})
		p.Digest, p.Size, p.Meta = it.d, it.size, ""
		if p.Kind == "other" {
			p.Kind = "preload"
		}
		if it.eco == "chocolatey" {
			// Verified against its feed's hash: its install script
			// teaches what its installers must hash to.
			p.Kind, p.Meta, p.MetaName = "nupkg", door.MetaNupkg, it.name+".nupkg"
		}
		if err := s.fetch(ctx, p, who); err != nil {
			fail(it.url, err)
		} else {
			run.Fetched++
			run.FetchedB += max(it.size, 0)
			o.Held[it.eco+":"+it.name] = true
		}
		if o.Progress != nil {
			o.Progress(i+1, len(missing), run.FetchedB)
		}
	}
	// The installers of the Chocolatey packages held, in the window too.
	for _, it := range chocos {
		if o.Stop != nil {
			if why := o.Stop(); why != "" {
				run.Stopped = why
				break
			}
		}
		if ctx.Err() != nil || run.Stopped != "" {
			break
		}
		if !s.door.Holds(it.d) {
			continue
		}
		if err := s.feeds.Prepare(ctx, it.feed, it.entry, who); err != nil {
			fail(it.entry.ID+" "+it.entry.Version, err)
		}
	}
	run.End = s.now()
	s.log.Info("preload run", slog.Bool("dry_run", o.DryRun), slog.Int("wanted", run.Wanted), slog.Int("missing", run.Missing),
		slog.Int("fetched", run.Fetched), slog.Int64("bytes", run.FetchedB), slog.Int("failures", len(run.Failures)), slog.String("stopped", run.Stopped))
	return run, nil
}

func mustParse(raw string) *url.URL {
	u, err := url.Parse(raw)
	if err != nil {
		return &url.URL{Scheme: "http", Host: "invalid", Path: "/"}
	}
	return u
}

// fetchIndex fetches (or revalidates) an index file through the door, as a
// request would, and returns its stored blob, once its facts are being
// learnt.
func (s *Runner) fetchIndex(ctx context.Context, raw string, who door.Asker) (cachestore.Digest, door.Plan, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return cachestore.Digest{}, door.Plan{}, fmt.Errorf("%q is not an http(s) URL", raw)
	}
	if u.User != nil {
		// What a hub preloads is for every node; a repository behind a
		// credential is its users' alone (RFC 9111 §3.5).
		return cachestore.Digest{}, door.Plan{}, fmt.Errorf("%s: a repository with credentials is private and never preloaded for the site; list it without user:password, or leave it to its own clients",
			door.RedactURL(u))
	}
	p := s.door.Plan(ctx, u, door.Credential{})
	d, err := s.door.Fetch(ctx, p, who, door.FetchOptions{})
	return d, p, err
}

// fetch brings an artifact in through the door.
func (s *Runner) fetch(ctx context.Context, p door.Plan, who door.Asker) error {
	_, err := s.door.Fetch(ctx, p, who, door.FetchOptions{})
	return err
}

// readIndex opens an index file's stored bytes, decompressed.
func (s *Runner) readIndex(ctx context.Context, d cachestore.Digest, name string) (io.ReadCloser, error) {
	return s.door.ReadIndex(ctx, d, name)
}

func (s *Runner) preloadApt(ctx context.Context, a hub.AptPreload, o Options, who door.Asker) ([]preloadItem, error) {
	base := strings.TrimSuffix(a.URL, "/") + "/"
	var out []preloadItem
	var errs []error
	// As apt sees them on a machine of each architecture: every suite and
	// component of the archive at once, the newest version of each name
	// (dpkg's order) the candidate.
	byArch := map[string]map[string]debian.Package{}
	for _, arch := range a.Architectures {
		byArch[arch] = map[string]debian.Package{}
	}
	for _, suite := range a.Suites {
		relURL := base + "dists/" + suite + "/InRelease"
		d, p, err := s.fetchIndex(ctx, relURL, who)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// What its signature covers, as the door learns it: a Release
		// that fails its check lists nothing to preload.
		text, err := s.door.VerifiedTop(ctx, p, d)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", relURL, err))
			continue
		}
		rel, err := debian.ParseRelease(bytes.NewReader(text))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", relURL, err))
			continue
		}
		listed := map[string]string{} // path -> SHA256
		for _, f := range rel.Files {
			listed[f.Path] = f.SHA256
		}
		for _, comp := range a.Components {
			// apt asks for the English descriptions too (unless
			// Acquire::Languages says otherwise): a preload-only hub must
			// hold them, or every node's update reports them missing.
			for _, name := range []string{"Translation-en.xz", "Translation-en.bz2", "Translation-en.gz", "Translation-en"} {
				if listed[comp+"/i18n/"+name] != "" {
					if _, _, err := s.fetchIndex(ctx, base+"dists/"+suite+"/"+comp+"/i18n/"+name, who); err != nil {
						errs = append(errs, err)
					}
					break
				}
			}
			for _, arch := range a.Architectures {
				if err := s.aptPackages(ctx, base+"dists/"+suite+"/", comp+"/binary-"+arch+"/", listed, who, byArch[arch]); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	for _, arch := range a.Architectures {
		out = append(out, aptWanted(base, byArch[arch], a.Packages, o)...)
	}
	return out, errors.Join(errs...)
}

// aptPackages reads one component's Packages for one architecture, the
// best compression its Release lists (with its SHA256), into pkgs: a
// name's newest version (dpkg's order: epochs, ~) wins, whichever suite
// lists it. A Packages that is not what the Release lists is not read.
func (s *Runner) aptPackages(ctx context.Context, suiteURL, dir string, listed map[string]string, who door.Asker, pkgs map[string]debian.Package) error {
	for _, name := range []string{"Packages.xz", "Packages.gz", "Packages"} {
		sum := listed[dir+name]
		if sum == "" {
			continue
		}
		d, _, err := s.fetchIndex(ctx, suiteURL+dir+name, who)
		if err != nil {
			return err
		}
		if want := (cachestore.Digest{Algo: "sha256", Hex: sum}); d != want {
			return fmt.Errorf("%s%s%s is %s, not what its Release lists (%s): not read", suiteURL, dir, name, d, want)
		}
		r, err := s.readIndex(ctx, d, name)
		if err != nil {
			return err
		}
		defer r.Close()
		return debian.ParsePackages(r, func(p debian.Package) error {
			if old, ok := pkgs[p.Name]; !ok || debian.CompareVersions(p.Version, old.Version) > 0 {
				pkgs[p.Name] = p
			}
			return nil
		})
	}
	return fmt.Errorf("%s lists no Packages under %s", suiteURL, dir)
}

// aptWanted is what the globs name, their dependencies (and what they
// recommend, as apt installs it by default), and (with Updates) the
// packages seen held before.
func aptWanted(base string, pkgs map[string]debian.Package, globs []string, o Options) []preloadItem {
	var roots []string
	for name := range pkgs {
		if hub.Match(globs, name) || o.Updates && o.Held["apt:"+name] {
			roots = append(roots, name)
		}
	}
	var out []preloadItem
	for _, name := range hub.Closure(roots, func(n string) ([]string, bool) {
		p, ok := pkgs[n]
		if !ok {
			return nil, false
		}
		next := debian.DependNames(p.Depends)
		if o.Recommends {
			next = append(next, debian.DependNames(p.Recommends)...)
		}
		return next, true
	}) {
		p := pkgs[name]
		out = append(out, preloadItem{eco: "apt", name: name, url: base + p.Filename,
			d: cachestore.Digest{Algo: "sha256", Hex: p.SHA256}, size: p.Size})
	}
	return out
}

// preloadRPM returns the packages the globs name, and the repository's
// other metadata files (what dnf reads besides primary).
func (s *Runner) preloadRPM(ctx context.Context, r hub.RPMPreload, o Options, who door.Asker) (_ []preloadItem, metadata []preloadItem, _ error) {
	base := strings.TrimSuffix(r.BaseURL, "/") + "/"
	d, p, err := s.fetchIndex(ctx, base+"repodata/repomd.xml", who)
	if err != nil {
		return nil, nil, err
	}
	// What its signature covers, as the door learns it: a repomd.xml
	// that fails its check lists nothing to preload.
	text, err := s.door.VerifiedTop(ctx, p, d)
	if err != nil {
		return nil, nil, fmt.Errorf("%srepodata/repomd.xml: %w", base, err)
	}
	data, err := rpm.ParseRepomd(bytes.NewReader(text))
	if err != nil {
		return nil, nil, fmt.Errorf("%srepodata/repomd.xml: %w", base, err)
	}
	i := slices.IndexFunc(data, func(d rpm.Data) bool { return d.Type == "primary" })
	if i < 0 {
		return nil, nil, fmt.Errorf("%srepodata/repomd.xml lists no primary", base)
	}
	for j, md := range data {
		if j != i {
			metadata = append(metadata, preloadItem{eco: "rpm", name: "repodata:" + md.Type, url: base + md.Href,
				d: cachestore.Digest{Algo: md.Checksum.Algo, Hex: md.Checksum.Hex}, size: md.Size})
		}
	}
	pd, _, err := s.fetchIndex(ctx, base+data[i].Href, who)
	if err != nil {
		return nil, nil, err
	}
	if want := (cachestore.Digest{Algo: data[i].Checksum.Algo, Hex: data[i].Checksum.Hex}); pd.Algo == want.Algo && pd != want {
		return nil, nil, fmt.Errorf("%s%s is %s, not what its repomd.xml lists (%s): not read", base, data[i].Href, pd, want)
	}
	pr, err := s.readIndex(ctx, pd, data[i].Href)
	if err != nil {
		return nil, nil, err
	}
	defer pr.Close()
	// The newest version of each name and architecture, and who provides
	// what, for the dependencies.
	pkgs := map[string]rpm.Package{} // by name.arch
	err = rpm.ParsePrimary(pr, func(p rpm.Package) error {
		k := p.Name + "." + p.Arch
		if old, ok := pkgs[k]; !ok || rpm.CompareEVR(p, old) > 0 {
			pkgs[k] = p
		}
		return nil
	})
	if err != nil {
		return nil, metadata, err
	}
	provider := map[string]string{}
	for k, p := range pkgs {
		for _, c := range append([]string{p.Name}, p.Provides...) {
			if _, ok := provider[c]; !ok {
				provider[c] = k
			}
		}
	}
	var roots []string
	for k, p := range pkgs {
		if hub.Match(r.Packages, p.Name) || o.Updates && o.Held["rpm:"+p.Name] {
			roots = append(roots, k)
		}
	}
	var out []preloadItem
	for _, k := range hub.Closure(roots, func(k string) ([]string, bool) {
		p, ok := pkgs[k]
		if !ok {
			return nil, false
		}
		var next []string
		for _, req := range p.Requires {
			if by, ok := provider[req]; ok {
				next = append(next, by)
			}
		}
		return next, true
	}) {
		p := pkgs[k]
		u := base + p.Href
		if p.Base != "" {
			u = strings.TrimSuffix(p.Base, "/") + "/" + p.Href
		}
		out = append(out, preloadItem{eco: "rpm", name: p.Name, url: u,
			d: cachestore.Digest{Algo: p.Checksum.Algo, Hex: p.Checksum.Hex}, size: p.Size})
	}
	return out, metadata, nil
}

var reNextLink = regexp.MustCompile(`<link rel="next" href="([^"]+)"`)

// preloadChocolatey keeps the answers to the calls choco makes for each
// id (so that a preload-only hub can answer them) and returns the
// packages: the latest version of each, or all.
func (s *Runner) preloadChocolatey(ctx context.Context, c hub.ChocolateyPreload) ([]preloadItem, error) {
	feed := strings.TrimSuffix(c.Feed, "/") + "/"
	if s.feeds == nil {
		return nil, fmt.Errorf("feed %s is not one this warren serves: add it as chocolatey.upstream or under chocolatey.feeds", feed)
	}
	// call asks upstream for one feed call and keeps its answer under the
	// call's normal form, as a client's would be.
	call := func(rest string) ([]chocolatey.Entry, []byte, error) {
		return s.feeds.Call(ctx, feed, rest)
	}
	var errs []error
	for _, rest := range []string{"", "$metadata"} {
		if _, _, err := call(rest); err != nil {
			errs = append(errs, err)
		}
	}
	var out []preloadItem
	for _, id := range c.IDs {
		if !chocolatey.ValidID(id) {
			errs = append(errs, fmt.Errorf("%q is not a package id", id))
			continue
		}
		lower := strings.ToLower(id)
		latest, _, err := call("Packages()?$filter=(tolower(Id)%20eq%20'" + lower + "')%20and%20IsLatestVersion&semVerLevel=2.0.0")
		if err != nil {
			errs = append(errs, err)
		}
		if _, _, err := call("Search()?$filter=IsLatestVersion&searchTerm='" + lower + "'&targetFramework=''&includePrerelease=false&$skip=0&$top=30&semVerLevel=2.0.0"); err != nil {
			errs = append(errs, err)
		}
		var all []chocolatey.Entry
		next := "FindPackagesById()?id='" + id + "'&semVerLevel=2.0.0"
		for pages := 0; next != "" && pages < 100; pages++ {
			entries, body, err := call(next)
			if err != nil {
				errs = append(errs, err)
				break
			}
			all = append(all, entries...)
			next = ""
			if m := reNextLink.FindSubmatch(body); m != nil {
				next = strings.TrimPrefix(strings.ReplaceAll(string(m[1]), "&amp;", "&"), feed)
				if strings.Contains(next, "://") {
					errs = append(errs, fmt.Errorf("%s: the next page %s is not under the feed; paging stops", id, next))
					next = ""
				}
			}
		}
		chosen := latest
		if c.Versions == "all" {
			chosen = all
		}
		for _, e := range chosen {
			if !strings.EqualFold(e.ID, id) || e.HashHex == "" {
				continue
			}
			if _, _, err := call("Packages(Id='" + e.ID + "',Version='" + e.Version + "')"); err != nil {
				errs = append(errs, err)
			}
			out = append(out, preloadItem{eco: "chocolatey", name: lower, url: e.ContentSrc,
				d: cachestore.Digest{Algo: e.HashAlgo, Hex: e.HashHex}, size: e.Size, feed: feed, entry: e})
		}
	}
	return out, errors.Join(errs...)
}
