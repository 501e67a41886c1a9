package door

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/debian"
	"github.com/warren-cache/warren/rpm"
)

// Metadata is learnt from its verified blob, after the fill that brought it
// has committed: the client's stream never waits on a parser, and only
// bytes that hashed right teach anything. A learn registers its repository
// scope before the fill's last byte is released, so a request that races
// it (apt asks for the packages as soon as it has the index) waits for it,
// briefly, instead of missing the hash.

// learnBatch bounds the facts held in memory at once; each batch is one
// index write.
const learnBatch = 512

// learnWaitMax bounds how long a request waits for a learn in progress.
const learnWaitMax = 15 * time.Second

// learning tracks learns in progress by the scope they teach about.
type learning struct {
	mu      sync.Mutex // guards running and seq
	running map[*learnRun]struct{}
	seq     uint64
}

type learnRun struct {
	scope string
	seq   uint64 // order of begin: a learn waits only for older ones
	// top: the file names index files' hashes (a Release, a repomd.xml,
	// a mirror list), not artifacts'; an index file's request waits only
	// for such learns (waitTop).
	top  bool
	done chan struct{}
	// named, for a package's learn (installerScope, which is every
	// URL no repository lists), is closed once its script is read, and
	// names then holds the keys it teaches about: a request for any other
	// URL does not wait for the rest of it. nil: not a package's learn.
	named chan struct{}
	names map[string]bool
}

func (l *learning) begin(scope repoScope, top bool) *learnRun {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	lr := &learnRun{scope: string(scope), seq: l.seq, top: top, done: make(chan struct{})}
	if scope == installerScope {
		lr.named = make(chan struct{})
	}
	if l.running == nil {
		l.running = map[*learnRun]struct{}{}
	}
	l.running[lr] = struct{}{}
	return lr
}

// name says which keys a package's learn teaches about, once (the first
// call counts): requests for others no longer wait for it.
func (l *learning) name(lr *learnRun, keys []string) {
	if lr.named == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-lr.named:
		return
	default:
	}
	lr.names = make(map[string]bool, len(keys))
	for _, k := range keys {
		lr.names[k] = true
	}
	close(lr.named)
}

func (l *learning) end(lr *learnRun) {
	l.name(lr, nil) // a learn that ends unread teaches about nothing
	l.mu.Lock()
	delete(l.running, lr)
	l.mu.Unlock()
	close(lr.done)
}

// wait blocks until no learn teaches about key (none older than self, if
// self is set: so two learns never wait for each other), ctx ends or
// learnWaitMax passes. A package's learn is waited for until its script
// is read, and to its end only when the script names key.
func (l *learning) wait(ctx context.Context, key string, self *learnRun) {
	l.waitFor(ctx, key, self, false)
}

// waitTop is wait for an index file's key: only a top file's learn (its
// Release, its repomd.xml) can name its hash, so a sibling index's is not
// waited for. apt asks for the next Packages file as soon as it has one:
// held for the parse of the one before, a cold node's update stalled for
// seconds after Debian's main (and its hub's again behind it).
func (l *learning) waitTop(ctx context.Context, key string, self *learnRun) {
	l.waitFor(ctx, key, self, true)
}

func (l *learning) waitFor(ctx context.Context, key string, self *learnRun, topOnly bool) {
	var deadline *time.Timer // made only once there is something to wait for: most calls (every hit) have nothing
	for {
		var pending <-chan struct{}
		l.mu.Lock()
		for lr := range l.running {
			if (self != nil && lr.seq >= self.seq) || (topOnly && !lr.top) || !strings.HasPrefix(key, lr.scope) {
				continue
			}
			ch := lr.done
			if lr.named != nil {
				if !closed(lr.named) {
					ch = lr.named // its script is not read yet: until it is
				} else if !lr.names[key] {
					continue // its script does not name key
				}
			}
			pending = ch
			break
		}
		l.mu.Unlock()
		if pending == nil {
			return
		}
		if deadline == nil {
			deadline = time.NewTimer(learnWaitMax)
			defer deadline.Stop()
		}
		select {
		case <-pending:
		case <-ctx.Done():
			return
		case <-deadline.C:
			return
		}
	}
}

// closed says whether ch is closed.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// metaScope is the repository a metadata file teaches about.
func metaScope(p Plan) (repoScope, error) {
	// The key, not the URL: the by-hash file of an index teaches about
	// the repository the index's name says, and a private plan's key
	// names its scope.
	ku, err := url.Parse(p.Key)
	if err != nil {
		return "", fmt.Errorf("parse key %q: %w", p.Key, err)
	}
	switch p.Meta {
	case MetaRelease:
		return newScope(ku, debian.SuiteDir(ku.EscapedPath())), nil
	case MetaPackages, MetaSources:
		return newScope(ku, debian.RepoRoot(ku.EscapedPath())), nil
	case MetaRepomd, MetaPrimary:
		return newScope(ku, rpm.RepoBase(ku.EscapedPath())), nil
	case MetaMirrors:
		// Its facts are its mirrors' (mirrors.go); a request waits for
		// its learn only for the list itself, which SiteList answers
		// once it is learnt.
		return repoScope(p.Key), nil
	case MetaNupkg:
		return installerScope, nil
	}
	return "", fmt.Errorf("no parser for metadata kind %q", p.Meta)
}

// beginLearn registers the learn of p's metadata; the caller runs it with
// learn once the blob is stored, or ends it.
func (s *Door) beginLearn(p Plan) (*learnRun, repoScope, bool) {
	if p.Meta == "" {
		return nil, "", false
	}
	scope, err := metaScope(p)
	if err != nil {
		s.log.Warn("cannot tell which repository metadata belongs to; nothing learnt", slog.String("url", p.ShownURL()), slog.Any("err", err))
		return nil, "", false
	}
	return s.learning.begin(scope, isTop(p) || p.Meta == MetaMirrors), scope, true
}

// learn parses the stored blob d of p's metadata and records its facts in
// batches. It runs on the server's context and ends lr.
func (s *Door) learn(lr *learnRun, scope repoScope, p Plan, d cachestore.Digest) {
	defer s.learning.end(lr)
	defer func() {
		// A parser bug must not take the daemon down with a stack trace:
		// the file teaches nothing, and the log says so.
		if v := recover(); v != nil {
			s.log.Error("learning metadata failed: its parser panicked; nothing more is learnt from this file (please report it)",
				slog.String("url", p.ShownURL()), slog.String("panic", fmt.Sprint(v)))
		}
	}()
	start := s.now()
	if p.Meta == MetaNupkg && p.Digest.IsZero() {
		return // a package its feed gave no hash for teaches nothing
	}
	var nupkg []nupkgFact
	var nupkgErr error
	if p.Meta == MetaNupkg {
		// Its script first: until it is read, a request for any URL no
		// repository lists waits for this learn; then only one for a URL
		// the script names does (learning.wait).
		nupkg, nupkgErr = s.readNupkg(p, d)
		var keys []string
		for _, f := range nupkg {
			keys = append(keys, f.key, f.waitKey)
		}
		s.learning.name(lr, keys)
	}
	// The parent metadata (Release for a Packages file) may still be
	// being learnt: its verdict on this file's hash comes first.
	s.learning.wait(s.ctx, p.Key, lr)
	if p.Digest.IsZero() {
		if k, err := s.store.Known(p.Key); err == nil && k.Digest.Algo == d.Algo && k.Digest != d {
			s.log.Warn("index does not match its Release (mirror mid-sync?); its hashes are not recorded",
				slog.String("url", p.ShownURL()), slog.String("release_says", k.Digest.String()), slog.String("actual", d.String()))
			return
		}
	}
	if !s.vouched(p, d) {
		s.log.Info("index file that no verified Release or repomd.xml lists, in a repository with keys; nothing learnt from it",
			slog.String("url", p.ShownURL()), slog.String("digest", d.String()))
		return
	}
	f, err := s.store.ReadBlob(d)
	if err != nil {
		s.log.Warn("could not read metadata back from the cache; nothing learnt", slog.String("url", p.ShownURL()), slog.Any("err", err))
		return
	}
	defer f.Close()
	var src io.Reader = f.File
	if isTop(p) && s.cfg.Keys != nil {
		// Its signature first: what fails teaches nothing
		// (signatures.go); an InRelease's signed text alone is read.
		body, err := io.ReadAll(io.LimitReader(f.File, maxTopBytes+1))
		if err != nil || len(body) > maxTopBytes {
			s.log.Warn("could not read metadata back from the cache; nothing learnt", slog.String("url", p.ShownURL()), slog.Any("err", err))
			return
		}
		v := s.checkTop(s.ctx, p, d, body)
		if !v.ok {
			return
		}
		src = bytes.NewReader(body)
		if v.text != nil {
			src = bytes.NewReader(v.text)
		}
	}
	rec := &recorder{s: s, scope: scope, batch: make(map[string]cachestore.Known, learnBatch),
		lister: cachestore.ListerID(listerKey(p, scope)), learnt: start.Unix()}
	switch p.Meta {
	case MetaNupkg:
		err = nupkgErr
		for _, nf := range nupkg {
			if aerr := rec.add(nf.key, nf.inScope, nf.k); aerr != nil && err == nil {
				err = aerr
			}
		}
	case MetaMirrors:
		var (
			kept     []string
			metalink bool
		)
		kept, metalink, err = s.learnList(p, d, ctxReader{ctx: s.ctx, r: src}, rec.add)
		if err == nil {
			defer s.listLearnt(p.Key, kept, metalink) // before the learn ends (deferred earlier)
		}
	default:
		err = parseMeta(s.ctx, s.decoders, p, d, scope, src, rec.add)
	}
	// What was parsed before an error is true (the file verified): it is
	// recorded, and only the rest is lost.
	if ferr := rec.flush(); err == nil {
		err = ferr
	}
	if err == nil {
		// Whole: what this file listed before and not now is stale.
		err = s.store.Learnt(rec.lister, rec.learnt, d)
	}
	if rec.outside > 0 {
		s.log.Warn("metadata names files outside its own repository; those teach nothing",
			slog.String("url", p.ShownURL()), slog.String("repository", string(scope)), slog.Int("count", rec.outside), slog.String("first", rec.firstOutside))
	}
	switch {
	// What was recorded before an error is true (the file verified), but
	// the rest is not learnt.
	case errors.Is(err, cachestore.ErrNoSpace):
		s.log.Warn("cache disk nearly full; the rest of this index's hashes are not recorded (its artifacts are cached by URL only)",
			slog.String("url", p.ShownURL()), slog.Int("recorded", rec.count), slog.Any("err", err))
	case err != nil:
		s.log.Warn("malformed repository metadata; the rest of its hashes are not recorded and those artifacts are cached by URL only",
			slog.String("url", p.ShownURL()), slog.Int("recorded", rec.count), slog.Any("err", err))
	default:
		s.log.Debug("recorded repository hashes", slog.String("url", p.ShownURL()), slog.Int("count", rec.count),
			slog.Duration("took", s.now().Sub(start)))
	}
	s.knownDirty.Store(true)
}

// learnIfNew learns a metadata blob served from the store when the index
// has no learn of that file at all (a rebuilt index), once: a file its
// parser refuses is not parsed again on every hit. The learn is
// registered before the client gets the file, as on a miss. A file learnt
// from another blob is left alone: an older generation asked for by a
// client midway through its update must not take the facts back.
func (s *Door) learnIfNew(p Plan, d cachestore.Digest) {
	scope, err := metaScope(p)
	if err != nil {
		return
	}
	lister := cachestore.ListerID(listerKey(p, scope))
	// A file whose signature could not be fetched when it came is checked
	// again now.
	_, recheck := s.sigs.retry.Get(d)
	if from, err := s.store.LearntFrom(lister); err == nil && !from.IsZero() && !recheck {
		return
	}
	// Once per lister and blob: the same bytes in another scope (a
	// private copy of a public Release) are another lister's to learn.
	tried := strconv.FormatUint(lister, 16) + "/" + d.String()
	if _, ok := s.relearnt.Get(tried); ok && !recheck {
		return
	}
	s.sigs.retry.Remove(d)
	s.relearnt.Add(tried, struct{}{})
	lr, scope, ok := s.beginLearn(p)
	if !ok {
		return
	}
	if !s.fills.Go(func() { s.learn(lr, scope, p, d) }) {
		s.learning.end(lr)
	}
}

// learnNewest learns a metadata blob known to be the newest of its name
// (replication applied it) unless that very blob was learnt last.
func (s *Door) learnNewest(p Plan, d cachestore.Digest) {
	scope, err := metaScope(p)
	if err != nil {
		return
	}
	if from, err := s.store.LearntFrom(cachestore.ListerID(listerKey(p, scope))); err == nil && from == d {
		return
	}
	lr, scope, ok := s.beginLearn(p)
	if !ok {
		return
	}
	if !s.fills.Go(func() { s.learn(lr, scope, p, d) }) {
		s.learning.end(lr)
	}
}

// listerKey names the metadata file a learn reads as its repository knows
// it, whatever URL it came by: apt fetches an index by hash, under a new
// URL each update, and rpm names primary.xml by its checksum. A fact is
// stale once its lister's latest learn no longer lists it, so the name
// must outlive the versions: the index's directory and its name without
// the compression suffix (by-hash, .xz and .gz copies share it), the
// repository for rpm's primary, the suite for Release.
func listerKey(p Plan, scope repoScope) string {
	switch p.Meta {
	case MetaPackages, MetaSources:
		dir := p.Key[:strings.LastIndexByte(p.Key, '/')+1]
		if i := strings.Index(p.Key, "/by-hash/"); i >= 0 {
			dir = p.Key[:i+1]
		}
		return dir + strings.TrimSuffix(lastSegment(p.MetaName), path.Ext(p.MetaName))
	case MetaPrimary:
		return string(scope) + "repodata/primary"
	case MetaRelease:
		return string(scope) + "Release"
	}
	return p.Key
}

// recorder writes facts to the index in bounded batches.
type recorder struct {
	s            *Door
	scope        repoScope
	lister       uint64 // the metadata file's ListerID
	learnt       int64  // when this learn began (Unix seconds)
	batch        map[string]cachestore.Known
	count        int
	outside      int
	firstOutside string
}

// add records one fact about a path the metadata lists relative to the
// scope (rel) or as an absolute URL (abs).
func (r *recorder) add(key string, inScope bool, k cachestore.Known) error {
	if !inScope {
		if r.outside == 0 {
			r.firstOutside = key
		}
		r.outside++
		return nil
	}
	k.Lister, k.Learnt = r.lister, r.learnt
	if k.Depth == 0 {
		k.Depth = len(r.scope)
	}
	r.batch[key] = k
	if len(r.batch) >= learnBatch {
		return r.flush()
	}
	return nil
}

func (r *recorder) flush() error {
	if len(r.batch) == 0 {
		return nil
	}
	if err := r.s.store.PutKnown(r.batch); err != nil {
		return fmt.Errorf("record repository hashes: %w", err)
	}
	r.count += len(r.batch)
	clear(r.batch)
	return nil
}

type emitFunc func(key string, inScope bool, k cachestore.Known) error

// parseMeta turns one metadata file (blob d) into URL -> digest facts,
// each passed to emit with its canonical key and whether it lies inside
// scope.
func parseMeta(ctx context.Context, dec decoders, p Plan, d cachestore.Digest, scope repoScope, r io.Reader, emit emitFunc) error {
	// A parse of a large (or hostile) file ends with the daemon: each read
	// of what the parser reads asks whether it is shutting down. (The raw
	// file stays an *os.File: the system's xz reads it directly.)
	stoppable := func(r io.Reader) io.Reader { return ctxReader{ctx: ctx, r: r} }
	switch p.Meta {
	case MetaRelease:
		rel, err := debian.ParseRelease(bufio.NewReader(stoppable(r)))
		if err != nil {
			return err
		}
		for _, e := range rel.Files {
			k := cachestore.Known{Digest: cachestore.Digest{Algo: "sha256", Hex: e.SHA256}, Size: e.Size, Name: e.Path}
			key, ok := scope.join(e.Path)
			if err := emit(key, ok, k); err != nil {
				return err
			}
			if rel.AcquireByHash {
				dir, _ := strings.CutSuffix(e.Path, lastSegment(e.Path))
				key, ok := scope.join(dir + "by-hash/SHA256/" + e.SHA256)
				if err := emit(key, ok, k); err != nil {
					return err
				}
			}
		}
		return nil
	case MetaPackages, MetaSources:
		zr, err := dec.open(ctx, p.MetaName, r, maxIndexBytes)
		if err != nil {
			return err
		}
		defer zr.Close()
		parse := debian.ParsePackages
		if p.Meta == MetaSources {
			parse = debian.ParseSources
		}
		return parse(stoppable(zr), func(pkg debian.Package) error {
			key, ok := scope.join(pkg.Filename)
			return emit(key, ok, cachestore.Known{Digest: cachestore.Digest{Algo: "sha256", Hex: pkg.SHA256}, Size: pkg.Size})
		})
	case MetaRepomd:
		data, err := rpm.ParseRepomd(bufio.NewReader(stoppable(r)))
		if err != nil {
			return err
		}
		for _, d := range data {
			key, ok := scope.join(d.Href)
			if err := emit(key, ok, cachestore.Known{Digest: cachestore.Digest{Algo: d.Checksum.Algo, Hex: d.Checksum.Hex}, Size: d.Size, Name: d.Type}); err != nil {
				return err
			}
		}
		return nil
	case MetaPrimary:
		zr, err := dec.open(ctx, p.MetaName, r, maxIndexBytes)
		if err != nil {
			return err
		}
		defer zr.Close()
		return rpm.ParsePrimary(stoppable(zr), func(pkg rpm.Package) error {
			key, ok := scope.join(pkg.Href)
			if pkg.Base != "" {
				key, ok = scope.joinURL(pkg.Base, pkg.Href)
			}
			return emit(key, ok, cachestore.Known{Digest: cachestore.Digest{Algo: pkg.Checksum.Algo, Hex: pkg.Checksum.Hex}, Size: pkg.Size})
		})
	}
	return fmt.Errorf("no parser for metadata kind %q", p.Meta)
}

func lastSegment(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}

// Ecosystems, as the known-artifacts figure names them.
const (
	// EcoDebian, EcoRPM and EcoChocolatey label CountKnown's figures.
	EcoDebian     = "debian"
	EcoRPM        = "rpm"
	EcoChocolatey = "chocolatey"
)

// ecosystemOf says which ecosystem a learnt key belongs to.
func ecosystemOf(key string) string {
	if strings.HasPrefix(key, "chocolatey:") || isInstallerFact(key) {
		return EcoChocolatey
	}
	if strings.HasPrefix(key, installerPrefix) {
		return "" // an installer's digest, counted by its URL
	}
	u, err := url.Parse(key)
	if err != nil {
		return ""
	}
	if debian.Classify(u.Path) != debian.KindOther {
		return EcoDebian
	}
	if rpm.Classify(u.Host, u.Path) != rpm.KindOther {
		return EcoRPM
	}
	return ""
}

// KnownArtifacts is how many URL -> digest facts warren has learnt, by
// ecosystem. It recounts only after something was learnt.
func (s *Door) KnownArtifacts() map[string]int64 {
	s.knownMu.Lock()
	defer s.knownMu.Unlock()
	// Also recounted now and then: the store's sweep drops facts unseen.
	if s.known != nil && s.now().Sub(s.knownAt) < 5*time.Minute && !s.knownDirty.Swap(false) {
		return maps.Clone(s.known)
	}
	s.knownAt = s.now()
	counts, err := CountKnown(s.store)
	if err != nil {
		s.log.Warn("could not count the learnt hashes", slog.Any("err", err))
		s.knownDirty.Store(true)
	}
	s.known = counts
	return maps.Clone(counts)
}

// CountKnown counts the facts in an index by ecosystem: a keys-only scan,
// tens of milliseconds for a whole Debian release.
func CountKnown(idx interface{ KnownKeys(func(string)) error }) (map[string]int64, error) {
	counts := map[string]int64{EcoDebian: 0, EcoRPM: 0, EcoChocolatey: 0}
	err := idx.KnownKeys(func(key string) {
		if eco := ecosystemOf(key); eco != "" {
			counts[eco]++
		}
	})
	return counts, err
}

// ctxReader fails its reads once ctx has ended.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, fmt.Errorf("stopped: %w", err)
	}
	return c.r.Read(p)
}
