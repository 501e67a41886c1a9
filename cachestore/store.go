package cachestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"golang.org/x/sys/unix"
)

// Sentinel errors; callers test them with errors.Is.
var (
	ErrNotFound       = errors.New("not in cache")
	ErrDigestMismatch = errors.New("digest mismatch")
	ErrSizeMismatch   = errors.New("size mismatch")
	ErrNoSpace        = errors.New("not enough free disk space")
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
	Logger    *slog.Logger
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
	db           *badger.DB
	log          *slog.Logger
	now          func() time.Time

	fillsMu sync.Mutex       // guards fills
	fills   map[string]*Fill // in-progress fills by key

	// statFree, when set, stands in for statfs (tests of a full disk).
	statFree func() int64
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
}

// BlobInfo is what the index says of a stored blob.
type BlobInfo struct {
	Digest   Digest    `json:"-"`
	Size     int64     `json:"size"`
	Added    time.Time `json:"added"`
	LastUsed time.Time `json:"last_used"`
	Hits     int64     `json:"hits"`
}

// Known is a fact learnt from repository metadata: the URL must hash to Digest.
type Known struct {
	Digest Digest `json:"digest"`
	Size   int64  `json:"size"` // -1 when the metadata did not say
	// Name is the metadata's own name for the file (for example
	// "main/binary-amd64/Packages.xz"), kept for index files so that a
	// by-hash URL can be parsed as what it is.
	Name string `json:"name,omitempty"`
	// Source is where upstream serves the bytes, when that is not the URL
	// the fact is recorded under (a NuGet package's content src).
	Source string `json:"source,omitempty"`
	// Lister names the metadata file that listed the fact (its key's
	// ListerID) and Learnt when (Unix seconds): a fact older than its
	// lister's latest learn is no longer listed (SweepKnown). 0: unknown.
	Lister uint64 `json:"-"`
	Learnt int64  `json:"-"`
	// Depth is the length of the repository scope whose metadata listed
	// the fact. Where repositories nest on one host (one rooted at an
	// ancestor path of another), the most specific one's fact stands:
	// PutKnown never replaces a fact with one of a shallower scope.
	// 0: unknown (replaced by any).
	Depth int `json:"-"`
}

// Cached is a URL cached by URL: its bytes are the blob Digest (sha256
// computed on arrival), revalidated upstream with the validators.
type Cached struct {
	Digest       Digest    `json:"digest"`
	Size         int64     `json:"size"`
	ETag         string    `json:"etag,omitempty"`
	LastModified string    `json:"last_modified,omitempty"`
	ContentType  string    `json:"content_type,omitempty"`
	Fetched      time.Time `json:"fetched"`
	// Meta are more response headers to give back with it (a feed
	// answer's DataServiceVersion).
	Meta map[string]string `json:"meta,omitempty"`
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
	for _, sub := range []string{"blobs", "tmp", "index"} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, sub), 0o750); err != nil {
			return nil, fmt.Errorf("open cache: create %s: %w", filepath.Join(cfg.Dir, sub), err)
		}
	}
	db, rebuilt, mode, err := openIndex(filepath.Join(cfg.Dir, "index"), cfg.Logger)
	readOnly := mode == indexReadOnly
	if err != nil {
		return nil, fmt.Errorf("open cache index in %s: %w", cfg.Dir, err)
	}
	s := &Store{
		dir:          cfg.Dir,
		minFreeBytes: cfg.MinFreeBytes,
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
		return nil, err
	}
	return s, nil
}

// badgerOptions is a profile for a small daemon: Badger's defaults reserve
// some 86 MiB of heap. Small memtables keep the heap small while a whole
// archive's index is learnt (each memtable costs its size about 2.5 times
// over in arena and table-builder buffers; 8 MiB ones took the daemon's
// peak from 46 to 78 MB). Conflict detection is off: warren serialises its
// own read-modify-writes (blobMu) and writes facts blind.
func badgerOptions(dir string, log *slog.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		WithLogger(badgerLogger{log}).
		WithMemTableSize(2 << 20).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(4).
		WithBlockCacheSize(4 << 20).
		WithIndexCacheSize(4 << 20).
		WithValueLogFileSize(64 << 20).
		WithBaseTableSize(2 << 20).
		WithNumCompactors(2).
		WithNumVersionsToKeep(1).
		WithCompression(options.None).
		WithValueThreshold(1 << 10).
		WithDetectConflicts(false)
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

// knownMaxIdle is how long a metadata file may go unlearnt before the
// hashes it listed are dropped (its repository or suite is gone).
const knownMaxIdle = 30 * 24 * time.Hour

// closeHeadroom is the free space Close needs to flush the index safely:
// a memtable's table and the manifest, with room to spare.
const closeHeadroom = 16 << 20

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
	sweep := time.NewTicker(time.Hour)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			for s.db.RunValueLogGC(0.5) == nil {
			}
		case <-sweep.C:
			if _, err := s.SweepKnown(ctx, s.now().Unix(), knownMaxIdle); err != nil {
				s.log.Warn("could not sweep learnt hashes", slog.Any("err", err))
			}
		}
	}
}

// Dir is the cache directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) blobPath(d Digest) string {
	return filepath.Join(s.dir, "blobs", d.Algo, d.Hex[:2], d.Hex)
}

// Known returns what metadata said the URL hashes to.
func (s *Store) Known(url string) (Known, error) {
	var k Known
	err := s.getWith(prefixKnown+url, func(b []byte) error { return decodeKnown(b, &k) })
	return k, err
}

// PutKnown records URL -> digest facts in one batch.
func (s *Store) PutKnown(facts map[string]Known) error {
	if err := s.indexRoom(); err != nil {
		return fmt.Errorf("record %d hashes: %w", len(facts), err)
	}
	deeper, err := s.deeperFacts(facts)
	if err != nil {
		return fmt.Errorf("record %d hashes: %w", len(facts), err)
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for url, k := range facts {
		if deeper[url] {
			continue // a more specific repository lists it
		}
		if err := k.Digest.Validate(); err != nil {
			return fmt.Errorf("record hash of %s: %w", url, err)
		}
		b, err := encodeKnown(k)
		if err != nil {
			return fmt.Errorf("record hash of %s: %w", url, err)
		}
		if err := wb.Set([]byte(prefixKnown+url), b); err != nil {
			return fmt.Errorf("record hash of %s: %w", url, err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("record %d hashes: %w", len(facts), err)
	}
	return nil
}

// deeperFacts says which of facts a fact already recorded, from a more
// specific repository scope, must not be replaced by.
func (s *Store) deeperFacts(facts map[string]Known) (map[string]bool, error) {
	var deeper map[string]bool
	err := s.db.View(func(txn *badger.Txn) error {
		for url, k := range facts {
			it, err := txn.Get([]byte(prefixKnown + url))
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			var old Known
			if err := it.Value(func(b []byte) error { return decodeKnown(b, &old) }); err != nil {
				continue // a damaged record is replaced
			}
			if old.Depth > k.Depth {
				if deeper == nil {
					deeper = map[string]bool{}
				}
				deeper[url] = true
			}
		}
		return nil
	})
	return deeper, err
}

// KnownKeys calls fn with the key of every learnt fact (keys only: cheap).
func (s *Store) KnownKeys(fn func(key string)) error {
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixKnown)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			fn(string(it.Item().Key()[len(prefixKnown):]))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list learnt hashes: %w", err)
	}
	return nil
}

// Cached returns the URL cache's entry for url.
func (s *Store) Cached(url string) (Cached, error) {
	var c Cached
	err := s.get(prefixCached+url, &c)
	return c, err
}

// PutCached records that url is cached as c.Digest; a fill records it just
// before its blob is committed. Removing the blob removes the entry.
func (s *Store) PutCached(url string, c Cached) error {
	if err := s.indexRoom(); err != nil {
		return fmt.Errorf("record cached %s: %w", url, err)
	}
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("record cached %s: %w", url, err)
	}
	s.blobMu.Lock()
	defer s.blobMu.Unlock()
	err = s.db.Update(func(txn *badger.Txn) error {
		var old Cached
		if it, err := txn.Get([]byte(prefixCached + url)); err == nil {
			if it.Value(func(v []byte) error { return json.Unmarshal(v, &old) }) == nil && old.Digest != c.Digest {
				if err := txn.Delete(usesKey(old.Digest, url)); err != nil {
					return err
				}
			}
		}
		if err := txn.Set(usesKey(c.Digest, url), nil); err != nil {
			return err
		}
		return txn.Set([]byte(prefixCached+url), b)
	})
	if err != nil {
		return fmt.Errorf("record cached %s: %w", url, err)
	}
	return nil
}

func usesKey(d Digest, url string) []byte { return []byte(prefixUses + d.String() + "/" + url) }

// Stat returns the index's record of a blob, or ErrNotFound.
func (s *Store) Stat(d Digest) (BlobInfo, error) {
	var bi BlobInfo
	if err := d.Validate(); err != nil {
		return bi, err
	}
	err := s.get(prefixBlob+d.String(), &bi)
	bi.Digest = d
	return bi, err
}

// OpenBlob opens a stored blob for reading and counts the use; until Close
// the blob is not evicted. A blob whose file is missing or whose size
// differs from the index is dropped and reported as ErrNotFound: it is
// never served.
func (s *Store) OpenBlob(d Digest) (*Blob, BlobInfo, error) {
	return s.openBlob(d, true)
}

// ReadBlob opens a stored blob for warren's own reading (learning the
// metadata it holds): kept from eviction until Close, not counted as a use.
func (s *Store) ReadBlob(d Digest) (*Blob, error) {
	b, _, err := s.openBlob(d, false)
	return b, err
}

func (s *Store) openBlob(d Digest, use bool) (*Blob, BlobInfo, error) {
	if err := d.Validate(); err != nil {
		return nil, BlobInfo{Digest: d}, err
	}
	// Counted as open before the index is read: remove checks the count
	// under openMu, so it either ran before (the entry is gone) or leaves
	// the blob alone.
	s.openMu.Lock()
	s.open[d]++
	s.openMu.Unlock()
	release := func() {
		s.openMu.Lock()
		if s.open[d]--; s.open[d] <= 0 {
			delete(s.open, d)
		}
		s.openMu.Unlock()
	}
	bi, err := s.Stat(d)
	if err != nil {
		release()
		return nil, bi, err
	}
	f, err := os.Open(s.blobPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		release()
		s.log.Warn("blob file missing; dropping it from the index", slog.String("digest", d.String()))
		_ = s.dropBlob(d)
		return nil, bi, ErrNotFound
	}
	if err != nil {
		release()
		return nil, bi, fmt.Errorf("open blob %s: %w", d, err)
	}
	st, err := f.Stat()
	if err != nil {
		release()
		f.Close()
		return nil, bi, fmt.Errorf("stat blob %s: %w", d, err)
	}
	if st.Size() != bi.Size {
		release()
		f.Close()
		s.log.Warn("blob size differs from the index; removing it",
			slog.String("digest", d.String()), slog.Int64("index_size", bi.Size), slog.Int64("file_size", st.Size()))
		_ = s.dropBlob(d)
		return nil, bi, ErrNotFound
	}
	if use {
		if nb, err := s.touchBlob(d); err == nil {
			bi = nb
		} else {
			s.log.Warn("could not count a blob use", slog.String("digest", d.String()), slog.Any("err", err))
		}
	}
	return &Blob{File: f, release: release}, bi, nil
}

// touchBlob counts one use of a blob that is in the index.
func (s *Store) touchBlob(d Digest) (BlobInfo, error) {
	s.blobMu.Lock()
	defer s.blobMu.Unlock()
	bi, err := s.Stat(d)
	if err != nil {
		return bi, err
	}
	if s.indexRoom() != nil {
		return bi, nil // a use not counted beats a full disk; serving goes on
	}
	bi.Hits++
	bi.LastUsed = s.now()
	return bi, s.writeBlob(bi)
}

// addBlob records a stored blob (new, or stored again) and counts it once;
// uses are hits it already served.
func (s *Store) addBlob(d Digest, size int64, uses int64) error {
	if err := s.indexRoom(); err != nil {
		return err
	}
	s.blobMu.Lock()
	defer s.blobMu.Unlock()
	bi, err := s.Stat(d)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	now := s.now()
	added := errors.Is(err, ErrNotFound)
	if added {
		bi = BlobInfo{Digest: d, Added: now}
	}
	old := bi.Size
	bi.Size, bi.LastUsed = size, now
	bi.Hits += uses
	if err := s.writeBlob(bi); err != nil {
		return err
	}
	if added {
		s.usedBlobs.Add(1)
		s.usedBytes.Add(size)
	} else {
		s.usedBytes.Add(size - old)
	}
	return nil
}

func (s *Store) writeBlob(bi BlobInfo) error {
	b, err := json.Marshal(bi)
	if err != nil {
		return err
	}
	return s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(prefixBlob+bi.Digest.String()), b) })
}

// dropBlob removes a blob's file and its index entries (and the URL-cache
// entries that name it), counting it out if it was counted in.
func (s *Store) dropBlob(d Digest) error {
	if s.readOnly {
		return fmt.Errorf("remove blob %s: %w", d, s.indexRoom())
	}
	s.blobMu.Lock()
	defer s.blobMu.Unlock()
	if err := os.Remove(s.blobPath(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove blob %s: %w", d, err)
	}
	var size int64 = -1
	err := s.db.Update(func(txn *badger.Txn) error {
		if it, err := txn.Get([]byte(prefixBlob + d.String())); err == nil {
			var bi BlobInfo
			if it.Value(func(v []byte) error { return json.Unmarshal(v, &bi) }) == nil {
				size = bi.Size
			} else {
				size = 0
			}
		}
		if err := txn.Delete([]byte(prefixBlob + d.String())); err != nil {
			return err
		}
		return s.dropUsesTxn(txn, d)
	})
	if err != nil {
		return fmt.Errorf("drop blob %s from the index: %w", d, err)
	}
	if size >= 0 {
		s.usedBlobs.Add(-1)
		s.usedBytes.Add(-size)
	}
	return nil
}

// dropUsesTxn deletes the URL-cache entries that name d: the file is gone,
// so those URLs are fetched again rather than revalidated into nothing.
func (s *Store) dropUsesTxn(txn *badger.Txn, d Digest) error {
	prefix := []byte(prefixUses + d.String() + "/")
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	var keys [][]byte
	for it.Rewind(); it.Valid(); it.Next() {
		keys = append(keys, it.Item().KeyCopy(nil))
	}
	it.Close()
	for _, k := range keys {
		url := string(k[len(prefix):])
		var c Cached
		if it, err := txn.Get([]byte(prefixCached + url)); err == nil &&
			it.Value(func(v []byte) error { return json.Unmarshal(v, &c) }) == nil && c.Digest == d {
			if err := txn.Delete([]byte(prefixCached + url)); err != nil {
				return err
			}
		}
		if err := txn.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// Free is the room left for new blobs: free space on the cache's file
// system less MinFreeBytes, and within MaxBytes (never negative).
func (s *Store) Free() int64 {
	free := max(s.fsFree()-s.minFreeBytes, 0)
	if s.limits.MaxBytes > 0 {
		used, _, err := s.Usage()
		if err == nil {
			free = min(free, max(s.limits.MaxBytes-used, 0))
		}
	}
	return free
}

// fsFree is the free space on the cache's file system.
func (s *Store) fsFree() int64 {
	if s.statFree != nil {
		return s.statFree()
	}
	var st unix.Statfs_t
	if err := unix.Statfs(s.dir, &st); err != nil {
		return 0
	}
	return int64(st.Bavail) * st.Bsize
}

// indexHeadroom is the free space the index's writes keep: Badger maps its
// files, and a write into a mapped page the file system cannot back kills
// the process (SIGBUS) instead of returning an error. Fills keep it too.
const indexHeadroom = 32 << 20

// indexRoom says whether the index may be written now.
func (s *Store) indexRoom() error {
	if s.readOnly {
		return fmt.Errorf("%w in %s: the index was opened read-only on a nearly full disk; restart warren once there is room", ErrNoSpace, s.dir)
	}
	if s.memIndex {
		return nil // the index takes no disk this run
	}
	if free := s.fsFree(); free < indexHeadroom {
		return fmt.Errorf("%w in %s: %d bytes free; the index keeps %d MiB for itself (free some space or lower cache_max)",
			ErrNoSpace, s.dir, free, indexHeadroom>>20)
	}
	return nil
}

// Room checks that size more bytes fit on the cache's file system while
// leaving MinFreeBytes (and the index's headroom) free; it returns
// ErrNoSpace otherwise.
func (s *Store) Room(size int64) error {
	free := s.fsFree()
	if size < 0 {
		size = 0
	}
	keep := max(s.minFreeBytes, indexHeadroom)
	if free-size < keep {
		return fmt.Errorf("%w in %s: %d bytes free, %d needed plus %d kept free", ErrNoSpace, s.dir, free, size, keep)
	}
	return nil
}

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

// recover removes what a crash left: temp files of fills, index entries
// whose blob is gone or of the wrong size, URL-cache entries without a blob;
// and indexes blob files that were renamed into place but not yet indexed
// (they were verified before the rename).
func (s *Store) recover(rebuilt bool) error {
	tmp := filepath.Join(s.dir, "tmp")
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return fmt.Errorf("recover: read %s: %w", tmp, err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(tmp, e.Name())); err != nil {
			return fmt.Errorf("recover: remove leftover temp file: %w", err)
		}
	}
	if len(entries) > 0 {
		s.log.Info("removed temp files a previous run left (interrupted fills, spare files)", slog.Int("count", len(entries)))
	}

	indexed := map[string]int64{}
	var drop [][]byte
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100, Prefix: []byte(prefixBlob)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			key := string(it.Item().Key())
			d, err := ParseDigest(strings.TrimPrefix(key, prefixBlob))
			var bi BlobInfo
			if err == nil {
				err = it.Item().Value(func(b []byte) error { return json.Unmarshal(b, &bi) })
			}
			if err != nil {
				drop = append(drop, []byte(key))
				continue
			}
			st, err := os.Stat(s.blobPath(d))
			if err != nil || st.Size() != bi.Size {
				drop = append(drop, []byte(key))
				_ = os.Remove(s.blobPath(d))
				continue
			}
			indexed[d.String()] = bi.Size
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("recover: scan blob index: %w", err)
	}

	adopted := 0
	blobs := filepath.Join(s.dir, "blobs")
	err = filepath.WalkDir(blobs, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(blobs, p)
		parts := strings.Split(rel, string(filepath.Separator))
		if len(parts) != 3 {
			return nil
		}
		d := Digest{Algo: parts[0], Hex: parts[2]}
		if d.Validate() != nil || parts[1] != d.Hex[:2] {
			return nil
		}
		if _, ok := indexed[d.String()]; ok {
			return nil
		}
		if !s.adoptable(d, p, rebuilt) {
			return nil
		}
		if err := s.indexRoom(); err != nil {
			s.log.Warn("not adopting blobs now: the disk is nearly full", slog.Any("err", err))
			return filepath.SkipAll
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		now := s.now()
		if err := s.writeBlob(BlobInfo{Digest: d, Size: info.Size(), Added: info.ModTime(), LastUsed: now}); err != nil {
			return err
		}
		indexed[d.String()] = info.Size()
		adopted++
		return nil
	})
	if err != nil {
		return fmt.Errorf("recover: scan blob files: %w", err)
	}

	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100, Prefix: []byte(prefixCached)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var c Cached
			if err := it.Item().Value(func(b []byte) error { return json.Unmarshal(b, &c) }); err != nil {
				drop = append(drop, it.Item().KeyCopy(nil))
				continue
			}
			if _, ok := indexed[c.Digest.String()]; !ok {
				key := it.Item().KeyCopy(nil)
				drop = append(drop, key, usesKey(c.Digest, strings.TrimPrefix(string(key), prefixCached)))
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("recover: scan url cache: %w", err)
	}
	if len(drop) > 0 && s.readOnly {
		s.log.Warn("stale index entries stay until a start with room to write the index", slog.Int("count", len(drop)))
		drop = nil
	}
	if len(drop) > 0 {
		wb := s.db.NewWriteBatch()
		defer wb.Cancel()
		for _, k := range drop {
			if err := wb.Delete(k); err != nil {
				return fmt.Errorf("recover: drop stale entry: %w", err)
			}
		}
		if err := wb.Flush(); err != nil {
			return fmt.Errorf("recover: drop stale entries: %w", err)
		}
	}
	for _, size := range indexed {
		s.usedBytes.Add(size)
		s.usedBlobs.Add(1)
	}
	if len(drop) > 0 || adopted > 0 {
		s.log.Info("recovered cache index", slog.Int("dropped_entries", len(drop)), slog.Int("adopted_blobs", adopted), slog.Bool("rebuilt", rebuilt))
	}
	return nil
}

// badgerLogger sends Badger's chatter to slog, most of it at debug level.
type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) Errorf(f string, a ...any) {
	l.log.Error(strings.TrimSpace(fmt.Sprintf(f, a...)), slog.String("component", "badger"))
}
func (l badgerLogger) Warningf(f string, a ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(f, a...))
	// Badger's cache monitor says these every minute when its caches are
	// small, as ours are on purpose (a small daemon; the index is read by
	// key, not scanned): not worth a warning, nor a multi-line one.
	for _, periodic := range []string{"Block cache might be too small", "Index cache might be too small", "Cache life expectancy"} {
		if strings.HasPrefix(msg, periodic) {
			l.log.Debug(firstLine(msg), slog.String("component", "badger"))
			return
		}
	}
	l.log.Warn(msg, slog.String("component", "badger"))
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}
func (l badgerLogger) Infof(f string, a ...any) {
	l.log.Debug(strings.TrimSpace(fmt.Sprintf(f, a...)), slog.String("component", "badger"))
}
func (l badgerLogger) Debugf(f string, a ...any) {
	l.log.Debug(strings.TrimSpace(fmt.Sprintf(f, a...)), slog.String("component", "badger"))
}
