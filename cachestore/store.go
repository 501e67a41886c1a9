package cachestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Sentinel errors; callers test them with errors.Is.
var (
	ErrNotFound       = errors.New("not in cache")
	ErrDigestMismatch = errors.New("digest mismatch")
	ErrSizeMismatch   = errors.New("size mismatch")
	ErrNoSpace        = errors.New("not enough free disk space")
	// ErrOtherScope is a private blob asked for outside its scopes.
	ErrOtherScope = errors.New("held for another credential scope")
)

// Config is what Open needs.
type Config struct {
	Dir string
	// MinFreeBytes is the free space a fill must leave on the cache's file
	// system; below it the caller passes bytes through instead of storing them.
	MinFreeBytes int64
	// Limits bound the cache; see Evict.
	Limits Limits
	// ScrubRate is how fast (bytes/s) Run rehashes stored blobs in the
	// background to find bit rot; 0 turns the scrub off (rechecks asked
	// for with Recheck still run).
	ScrubRate int64
	// DirsAhead: Run makes the directories blobs go in before the first
	// fill needs them (a daemon's store; 256 directories).
	DirsAhead bool
	// Compactors are the index's background compactions (0: 2, as a
	// daemon runs; -1: none, for an index that stays a few hundred keys
	// small for its life: the simulator's thousand stores, whose
	// compactors woke 40,000 times a second between them).
	Compactors int
	Logger     *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Limits bound what the cache keeps.
type Limits struct {
	MaxBytes int64         // cache_max: 0 for no limit beyond MinFreeBytes
	MinAge   time.Duration // cache_min_days: newer blobs are never evicted
	MaxAge   time.Duration // cache_max_days: blobs unused this long go (0: never)
	HalfLife time.Duration // how fast unused blobs' hits fade; default 7 days
}

// Store is the blob store and its index. It is safe for concurrent use.
type Store struct {
	dir          string
	minFreeBytes int64
	dirsAhead    bool
	dirsMade     chan struct{} // closed once Run made them (DirsAhead)
	db           *badger.DB
	log          *slog.Logger
	now          func() time.Time

	fillsMu sync.Mutex       // guards fills
	fills   map[string]*Fill // in-progress fills by key

	// statFree, when set, stands in for statfs (tests of a full disk).
	statFree    func() int64
	known       knownCache          // decoded facts (knowncache.go)
	scopesMu    sync.Mutex          // guards knownScopes
	knownScopes map[string]struct{} // repository scopes facts came from (facts.go); nil until read

	// readOnly: the index was opened read-only (a nearly full disk): it
	// is read, never written, until a restart.
	readOnly bool
	// memIndex: the index is in memory for this run (see openIndex); its
	// writes cost no disk.
	memIndex bool

	spare     chan *os.File // temp files created ahead (spare.go)
	spareKick chan struct{}

	scrubRate    int64                // scrub.go
	recheck      chan Digest          // blobs to rehash soon
	scrubLater   map[Digest]time.Time // owned by scrubLoop: bad blobs in use, retried then
	scrubChecked atomic.Int64
	scrubBytes   atomic.Int64
	scrubBad     atomic.Int64

	limits    Limits
	evictMu   sync.Mutex // one eviction run at a time
	evictKick chan struct{}
	openMu    sync.Mutex     // guards open; taken before blobMu
	open      map[Digest]int // readers per blob: these are not evicted
	evictions atomic.Int64
	// blobMu guards the blob entries of the index (b/ and r/ keys)
	// together with usedBytes and usedBlobs, so that the totals change in
	// one place, with the entries, and cannot drift.
	blobMu sync.Mutex
	// usedBytes and usedBlobs are the index's totals, kept as blobs come
	// and go: Free is asked for every peer datagram and must not scan.
	usedBytes atomic.Int64
	usedBlobs atomic.Int64
	uses      uses     // use counts not yet in the index (uses.go)
	hot       hotFiles // descriptors of small blobs kept open (hot.go)

	changeMu sync.Mutex // one change log append at a time (changes.go)

	pinMu sync.Mutex     // guards pins
	pins  map[Digest]int // how many owners pin each blob (pins.go)
}

const (
	prefixBlob   = "b/"
	prefixKnown  = "k/"
	prefixCached = "c/"
	// prefixUses is r/<digest>/<url>: the URL-cache entries that name a
	// blob, so that removing the blob removes them too.
	prefixUses = "r/"
	// prefixLearn is g/<lister hex>: when that metadata file was last
	// learnt whole (Unix seconds).
	prefixLearn = "g/"
	// prefixScope marks each repository scope facts were learnt from
	// (their Depth long prefix): a learn checks existing facts only where
	// a deeper scope exists, so nesting costs nothing where there is none.
	prefixScope = "s/"
)

// Open opens (creating if need be) the store in cfg.Dir and recovers from
// whatever a crash left behind.
func Open(cfg Config) (*Store, error) {
	if cfg.Dir == "" {
		return nil, errors.New("open cache: no cache directory given")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	// Before anything is created or moved: a permission error is not
	// damage (access.go).
	if err := checkAccess(cfg.Dir); err != nil {
		return nil, err
	}
	for _, sub := range []string{"blobs", "tmp", "index"} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, sub), 0o750); err != nil {
			return nil, asPermission(cfg.Dir, cfg.Dir, fmt.Errorf("open cache: create %s: %w", filepath.Join(cfg.Dir, sub), err))
		}
	}
	db, rebuilt, mode, err := openIndex(filepath.Join(cfg.Dir, "index"), cfg.Logger, cfg.Compactors)
	readOnly := mode == indexReadOnly
	var pe *PermissionError
	if errors.As(err, &pe) {
		return nil, err // it says what was being done
	}
	if err != nil {
		return nil, fmt.Errorf("open cache index in %s: %w", cfg.Dir, err)
	}
	s := &Store{
		dir:          cfg.Dir,
		minFreeBytes: cfg.MinFreeBytes,
		dirsAhead:    cfg.DirsAhead,
		db:           db,
		log:          cfg.Logger,
		now:          cfg.Now,
		fills:        map[string]*Fill{},
		limits:       cfg.Limits,
		evictKick:    make(chan struct{}, 1),
		spare:        make(chan *os.File, spareFiles),
		readOnly:     readOnly,
		memIndex:     mode == indexInMemory,
		scrubRate:    cfg.ScrubRate,
		recheck:      make(chan Digest, 16),
		spareKick:    make(chan struct{}, 1),
		dirsMade:     make(chan struct{}),
		open:         map[Digest]int{},
	}
	if s.limits.HalfLife <= 0 {
		s.limits.HalfLife = 7 * 24 * time.Hour
	}
	if mode == indexOnDisk {
		s.takeReserve()
	}
	if err := s.recover(rebuilt); err != nil {
		db.Close()
		return nil, asPermission(cfg.Dir, cfg.Dir, err)
	}
	if err := s.loadPins(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open cache: read pins: %w", err)
	}
	return s, nil
}

// Close closes the index. Fills still running are aborted.
func (s *Store) Close() error {
	s.fillsMu.Lock()
	fills := make([]*Fill, 0, len(s.fills))
	for _, f := range s.fills {
		fills = append(fills, f)
	}
	s.fillsMu.Unlock()
	for _, f := range fills {
		f.Abort(errors.New("cache is closing"))
	}
	if err := s.flushUses(); err != nil {
		s.log.Warn("could not write use counts to the index", slog.Any("err", err))
	}
	s.hot.closeAll()
	onDisk := !s.readOnly && !s.memIndex
	if s.fsFree() < closeHeadroom && onDisk {
		releaseReserve(s.dir, s.log)
	}
	if free := s.fsFree(); free < closeHeadroom && onDisk {
		// Closing flushes the memtable into a new table, written through
		// mapped pages: on a full disk that kills the process. Its
		// write-ahead log already holds it, and is replayed at the next
		// start, as after a crash.
		s.log.Warn("cache disk nearly full: leaving the index's write-ahead log to be replayed at the next start",
			slog.Int64("free_bytes", free))
		return nil
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close cache index: %w", err)
	}
	return nil
}

// Run does the housekeeping until ctx ends: eviction every five minutes and
// after fills, value-log GC every ten, spare temp files for fills, the
// scrub and rechecks, and hourly the sweep of learnt hashes no current
// metadata lists.
func (s *Store) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.evictLoop(ctx, 5*time.Minute)
	}()
	defer func() { <-done }()
	spared := make(chan struct{})
	go func() {
		defer close(spared)
		s.spareLoop(ctx)
	}()
	defer func() { <-spared }()
	scrubbed := make(chan struct{})
	go func() {
		defer close(scrubbed)
		s.scrubLoop(ctx)
	}()
	defer func() { <-scrubbed }()
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	flush := time.NewTicker(usesFlushEvery)
	defer flush.Stop()
	sweep := time.NewTicker(time.Hour)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			for s.db.RunValueLogGC(0.5) == nil {
			}
		case <-flush.C:
			if err := s.flushUses(); err != nil {
				s.log.Warn("could not write use counts to the index", slog.Any("err", err))
			}
		case <-sweep.C:
			if _, err := s.SweepKnown(ctx, s.now().Unix(), knownMaxIdle); err != nil {
				s.log.Warn("could not sweep learnt hashes", slog.Any("err", err))
			}
			if n, err := s.CompactChanges(s.now().Add(-TombstoneTTL)); err != nil {
				s.log.Warn("could not compact the change log", slog.Any("err", err))
			} else if n > 0 {
				s.log.Info("compacted the change log: deletions older than their time dropped", slog.Int("dropped", n), slog.Duration("kept", TombstoneTTL))
			}
		}
	}
}

// Dir is the cache directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) get(key string, v any) error {
	return s.getWith(key, func(b []byte) error { return json.Unmarshal(b, v) })
}

func (s *Store) getWith(key string, decode func([]byte) error) error {
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get([]byte(key))
		if err != nil {
			return err
		}
		return it.Value(decode)
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("read index key %q: %w", key, err)
	}
	return nil
}
