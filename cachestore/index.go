package cachestore

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
)

// The index is derived data: the blobs are named by their digest, so a
// damaged or lost index never costs them. openIndex opens it; when Badger
// cannot (a truncated table, a lost MANIFEST beside its tables, a panic
// while loading), the damaged index is moved aside for inspection, the
// log says loudly what is lost, and a fresh one is built: recovery then
// adopts every blob on disk, each one rehashed first. Only a checksum or
// format failure is damage: a file this process may not read, another
// process's lock or a full disk fail the open and move nothing.

// errIndexLocked is another process holding the index: never "damage".
var errIndexLocked = errors.New("the cache index is in use by another process")

// openIndex opens the Badger index in dir; rebuilt says it was damaged
// and has been started afresh. On a nearly full disk it is opened
// read-only: Badger flushes what it replays at once, through mapped pages,
// which a full disk turns into a SIGBUS.
func openIndex(dir string, log *slog.Logger, compactors int) (db *badger.DB, rebuilt bool, mode indexMode, err error) {
	if freeSpace(filepath.Dir(dir)) < closeHeadroom {
		releaseReserve(filepath.Dir(dir), log)
	}
	if free := freeSpace(filepath.Dir(dir)); free < closeHeadroom {
		db, err := openBadgerWith(badgerOptions(dir, log, compactors).WithReadOnly(true))
		if err == nil {
			log.Warn("cache disk nearly full: the index is opened read-only; warren serves what it holds and passes the rest through. Restart it once there is room",
				slog.Int64("free_bytes", free), slog.String("dir", dir))
			return db, false, indexReadOnly, nil
		}
		// Read-only Badger cannot replay a log that needs truncating (one
		// left unflushed on a full disk), and replaying it for writing
		// would fault on the full disk. The index on disk is left as it
		// is, for a start with room; this run indexes in memory.
		mem, merr := openBadgerWith(badgerOptions("", log, compactors).WithInMemory(true))
		if merr != nil {
			return nil, false, indexOnDisk, fmt.Errorf("%w: the cache index in %s cannot be opened on a full disk (%d bytes free), nor one in memory (%v); free some space there: %w",
				ErrNoSpace, dir, free, merr, err)
		}
		log.Error("cache disk full: the index cannot be opened from it, so this run keeps one in memory, rebuilt from the blobs on disk. "+
			"Learnt hashes come back as clients fetch metadata; restart warren once there is room to use the index on disk again",
			slog.Int64("free_bytes", free), slog.String("dir", dir), slog.Any("why", err))
		return mem, true, indexInMemory, nil
	}
	why := indexDamage(dir)
	if why == nil {
		db, err = openBadger(dir, log, compactors)
		if err == nil {
			return db, false, indexOnDisk, nil
		}
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, false, indexOnDisk, fmt.Errorf("%w (is another warren using this cache directory?): %w", errIndexLocked, err)
		}
		if isNoSpaceErr(err) {
			// A full disk is not damage: moving the index aside would lose it.
			return nil, false, indexOnDisk, fmt.Errorf("%w: the cache index in %s cannot be opened on a full disk; free some space there: %w", ErrNoSpace, dir, err)
		}
		why = err
	}
	// Nor is a file this process may not read (checkAccess finds most
	// before; this is for what it cannot see): only a checksum or
	// format failure is damage.
	var pe *PermissionError
	if err := asPermission(filepath.Dir(dir), dir, why); errors.As(err, &pe) {
		return nil, false, indexOnDisk, err
	}
	aside := fmt.Sprintf("%s.damaged-%s", dir, time.Now().UTC().Format("20060102T150405Z"))
	if err := os.Rename(dir, aside); err != nil {
		return nil, false, indexOnDisk, fmt.Errorf("move the damaged cache index %s aside: %w (and it could not be opened: %v)", dir, err, why)
	}
	log.Error("the cache index is damaged; it was moved aside and is rebuilt from the blobs on disk. "+
		"Learnt hashes and URL-cache entries are lost: they come back as clients fetch repository metadata again",
		slog.String("damaged", aside), slog.Any("why", why))
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, false, indexOnDisk, fmt.Errorf("create a fresh cache index %s: %w", dir, err)
	}
	db, err = openBadger(dir, log, compactors)
	if err != nil {
		return nil, false, indexOnDisk, fmt.Errorf("open a fresh cache index in %s: %w", dir, err)
	}
	return db, true, indexOnDisk, nil
}

// indexMode is how the index was opened.
type indexMode int

const (
	indexOnDisk   indexMode = iota
	indexReadOnly           // a nearly full disk: read, never written, until a restart
	indexInMemory           // a full disk the index could not even be read from
)

// isNoSpaceErr says whether err is the file system being full; Badger
// does not always wrap the errno, so its text is read too.
func isNoSpaceErr(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || strings.Contains(err.Error(), "no space left on device")
}

// openBadger is badger.Open that turns a panic (Badger panics on some
// damaged tables) into an error.
func openBadger(dir string, log *slog.Logger, compactors int) (db *badger.DB, err error) {
	return openBadgerWith(badgerOptions(dir, log, compactors))
}

func openBadgerWith(opts badger.Options) (db *badger.DB, err error) {
	defer func() {
		if p := recover(); p != nil {
			db, err = nil, fmt.Errorf("badger panicked while opening the index: %v", p)
		}
	}()
	return badger.Open(opts)
}

// freeSpace is the free space on dir's file system (0 when unknown).
func freeSpace(dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0
	}
	return int64(st.Bavail) * st.Bsize
}

// indexDamage finds damage Badger would not survive or not report: a
// table file it cannot read (Badger opens tables in goroutines of its own,
// where a panic on a truncated one kills the process), or tables and value
// logs with no MANIFEST to list them (Badger would silently start an empty
// index beside them).
func indexDamage(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("read the cache index directory: %w", err)
	}
	manifest, data := false, false
	for _, e := range entries {
		switch name := e.Name(); {
		case name == "MANIFEST":
			manifest = true
		case strings.HasSuffix(name, ".sst"), strings.HasSuffix(name, ".vlog"):
			data = true
		}
	}
	if data && !manifest {
		return errors.New("the index has tables but no MANIFEST")
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".sst") {
			if err := checkTable(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkTable opens one table file with Badger's own reader, checksums
// verified, in this goroutine, where a panic can be caught. The file is
// read, not mapped: a table left half-written by a full disk can fault a
// mapped read (SIGBUS), where read(2) returns an error.
func checkTable(path string) (err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read index table %s: %w", filepath.Base(path), err)
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("index table %s is damaged: %v", filepath.Base(path), p)
		}
	}()
	t, err := table.OpenInMemoryTable(data, 1, &table.Options{ReadOnly: true, Compression: options.None})
	if err != nil {
		return fmt.Errorf("index table %s is damaged: %w", filepath.Base(path), err)
	}
	if err := t.VerifyChecksum(); err != nil {
		return fmt.Errorf("index table %s is damaged: %w", filepath.Base(path), err)
	}
	return nil
}

// adoptable says whether a blob file found on disk may be indexed: after a
// crash, a file renamed into place was verified before the rename; after a
// rebuild nothing is taken on trust, and a file that does not hash to its
// name is removed.
func (s *Store) adoptable(d Digest, path string, rehash bool) bool {
	if !rehash {
		return true
	}
	ok, err := verifyFile(path, BlobInfo{Digest: d, Size: -1})
	if err != nil || !ok {
		s.log.Warn("blob does not match its name; removed while rebuilding the index",
			slog.String("digest", d.String()), slog.Any("err", err))
		_ = os.Remove(path)
		return false
	}
	return true
}

// badgerOptions are the index's: a small daemon's. Badger's defaults
// reserve some 86 MiB of heap; these keep a hub and a node under 48 MB of
// peak RSS each while they learn a whole archive's index
// (BenchmarkSiteLearning), measured option by option (README,
// Performance). compactors is Config.Compactors.
func badgerOptions(dir string, log *slog.Logger, compactors int) badger.Options {
	switch {
	case compactors < 0:
		compactors = 0
	case compactors == 0:
		compactors = 2
	}
	return badger.DefaultOptions(dir).
		WithLogger(badgerLogger{log}).
		// A memtable is an arena of 1.3 times its size, made whole at
		// once, and a flush builds its table in memory before writing
		// it: 1 MiB memtables and tables halve both against 2 MiB ones
		// (8 MiB took a daemon's learning peak from 46 to 78 MB).
		WithMemTableSize(1 << 20).
		// A table builder reserves twice its table's size up front, and
		// Badger keeps up to 8 idle builders' buffers: small tables keep
		// compaction's share of the heap small. The index is tens of MB
		// at most: many small tables cost little to open.
		WithBaseTableSize(1 << 20).
		// One memtable filling while one flushes: a learn's writes
		// never wait on a flush for long, and no third arena is held.
		WithNumMemtables(2).
		// Compact L0 early (2 tables) and stall writes at 4: fewer
		// tables mapped at once, each read of a fact looks in fewer.
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(4).
		// Uncompressed blocks are read in place from the mapped tables;
		// the cache saves decoding their entry offsets again, and its
		// 4 MiB (about a thousand 4 KiB blocks) allocates little up front.
		WithBlockCacheSize(4 << 20).
		// The index cache serves encrypted tables only (a plain table's
		// index is read in place from its mapping): none is built.
		WithIndexCacheSize(0).
		WithValueLogFileSize(64 << 20).
		WithNumCompactors(compactors).
		// One version of a fact: warren never reads history.
		WithNumVersionsToKeep(1).
		// Compression made the learning peak higher, not lower (ZSTD 53-59
		// MB, Snappy 51-52, against 46-52 without): blocks must then be
		// decompressed into the heap and cached there, and the tables are
		// built by a goroutine per core.
		WithCompression(options.None).
		// Facts are small (a digest, a size, a name): they live in the
		// LSM tree, beside their keys; only larger values go to the
		// value log.
		WithValueThreshold(1 << 10).
		// warren serialises its own read-modify-writes (blobMu) and
		// writes facts blind.
		WithDetectConflicts(false)
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
