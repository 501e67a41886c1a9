package cachestore

import (
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// Fill is one blob being written. Exactly one leader writes it; any number of
// readers follow the growing temp file. A reader never receives the last byte
// before the leader has verified the whole blob (Commit), so no client ever
// completes a wrong or short file.
type Fill struct {
	s   *Store
	key string

	// Owned by the leader only.
	h    hash.Hash
	file *os.File

	mu      sync.Mutex // guards the fields below
	info    FillInfo
	started bool
	path    string // where the bytes are: the temp file, then the blob once renamed
	written int64
	// gen counts restarts: a reader that took bytes of an earlier
	// generation cannot be given the new ones.
	gen     int
	checked int64 // written when free space was last checked
	done    bool
	// verified: the bytes hashed right. Readers get the last byte from
	// then on; making the blob durable (flush, rename, index) follows, off
	// the clients' path.
	verified bool
	indexed  bool  // the blob is in the index (then digest is set)
	uses     int64 // hits served from the fill before it was indexed
	// held: bytes of this generation came from a source that is not to be
	// streamed through (a peer): readers get none until the blob verifies.
	held    bool
	err     error         // why the fill failed, once done
	digest  Digest        // the committed digest, once done without error
	changed chan struct{} // closed and replaced on every change
	waiting int           // readers blocked on changed
}

// FillInfo is what the leader knows when the first byte is about to arrive.
type FillInfo struct {
	Algo string // the hash to compute: sha256, sha512 or sha1
	Size int64  // -1 when unknown
	// Meta carries whatever the leader's caller wants readers to see (for
	// the proxy: the upstream's response headers).
	Meta map[string]string
	// Scope is the credential scope whose request fetched the bytes, ""
	// for one without credentials: the blob is private to it (private.go).
	Scope string
}

// Meta is what the leader passed to Start.
func (f *Fill) Meta() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.info.Meta
}

// Verified says whether the fill's bytes are whole and hashed right (they
// may still be being stored).
func (f *Fill) Verified() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.verified
}

// Written is how many bytes the leader has written so far.
func (f *Fill) Written() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.written
}

// Start opens the temp file; readers may follow from now on.
func (f *Fill) Start(info FillInfo) error {
	if _, ok := hexLen[info.Algo]; !ok {
		err := fmt.Errorf("start fill %s: hash algorithm %q is not supported", f.key, info.Algo)
		f.Abort(err)
		return err
	}
	if err := f.s.Room(info.Size); err != nil {
		f.Abort(err)
		return err
	}
	file, err := f.s.tempFile()
	if err != nil {
		err = fmt.Errorf("start fill %s: %w", f.key, err)
		f.Abort(err)
		return err
	}
	f.file = file
	f.h = newHash(info.Algo)
	f.mu.Lock()
	f.info, f.started, f.path = info, true, file.Name()
	f.notifyLocked()
	f.mu.Unlock()
	return nil
}

// ErrRestarted is what a reader gets when the bytes it already took were
// thrown away (they failed verification) and the fill began again.
var ErrRestarted = errors.New("fill restarted after its bytes failed verification")

// spaceCheckEvery is how often (in bytes written) a fill checks that the
// file system still keeps MinFreeBytes free.
const spaceCheckEvery = 4 << 20

// Write appends p to the blob. A failed write (a full disk, say) aborts the
// fill and returns the error; readers see it too. So does a file system
// that has dropped below MinFreeBytes since the fill started.
func (f *Fill) Write(p []byte) (int, error) {
	f.mu.Lock()
	due := f.written-f.checked >= spaceCheckEvery
	if due {
		f.checked = f.written
	}
	f.mu.Unlock()
	if due {
		if err := f.s.Room(int64(len(p))); err != nil {
			err = fmt.Errorf("write fill %s: %w", f.key, err)
			f.Abort(err)
			return 0, err
		}
	}
	n, err := f.file.Write(p)
	f.h.Write(p[:n])
	f.mu.Lock()
	f.written += int64(n)
	f.notifyLocked()
	waiting := f.waiting
	f.mu.Unlock()
	yieldTo(waiting)
	if err != nil {
		err = fmt.Errorf("write fill %s: %w", f.key, err)
		f.Abort(err)
		return n, err
	}
	return n, nil
}

// Hold keeps every byte of this generation from readers until the blob
// verifies: the leader calls it before writing bytes of an untrusted
// source (a LAN peer), so that no client ever receives a peer's byte that
// turns out wrong, and a fill that starts again from another source goes
// on seamlessly for its readers.
func (f *Fill) Hold() {
	f.mu.Lock()
	f.held = true
	f.mu.Unlock()
}

// Restart throws away what was written (it failed verification) so that
// the leader can write the blob again from offset 0. Readers that took
// bytes get ErrRestarted; readers that took none follow the new bytes.
func (f *Fill) Restart() error {
	if err := f.file.Truncate(0); err != nil {
		err = fmt.Errorf("restart fill %s: %w", f.key, err)
		f.Abort(err)
		return err
	}
	if _, err := f.file.Seek(0, io.SeekStart); err != nil {
		err = fmt.Errorf("restart fill %s: %w", f.key, err)
		f.Abort(err)
		return err
	}
	f.h.Reset()
	f.mu.Lock()
	f.written, f.checked = 0, 0
	f.held = false
	f.gen++
	f.notifyLocked()
	f.mu.Unlock()
	return nil
}

// Digest is the hash of what the leader has written so far.
func (f *Fill) Digest() Digest {
	f.mu.Lock()
	algo := f.info.Algo
	f.mu.Unlock()
	return Digest{Algo: algo, Hex: hex.EncodeToString(f.h.Sum(nil))}
}

// Commit verifies what was written against want (want.Hex empty: accept what
// it hashes to, in want.Algo or the fill's algorithm) and wantSize (-1: any),
// then makes it a blob. On a mismatch the fill is aborted with an error
// wrapping ErrDigestMismatch or ErrSizeMismatch.
func (f *Fill) Commit(want Digest, wantSize int64) (Digest, error) {
	f.mu.Lock()
	written, algo := f.written, f.info.Algo
	f.mu.Unlock()
	if wantSize >= 0 && written != wantSize {
		err := fmt.Errorf("fill %s: %w: expected %d bytes, got %d", f.key, ErrSizeMismatch, wantSize, written)
		f.Abort(err)
		return Digest{}, err
	}
	got := Digest{Algo: algo, Hex: hex.EncodeToString(f.h.Sum(nil))}
	if want.Hex != "" && want != got {
		err := fmt.Errorf("fill %s: %w: expected %s, got %s", f.key, ErrDigestMismatch, want, got)
		f.Abort(err)
		return Digest{}, err
	}
	f.mu.Lock()
	f.verified = true
	f.notifyLocked()
	waiting := f.waiting
	f.mu.Unlock()
	yieldTo(waiting)
	if err := f.persist(got, written); err != nil {
		err = fmt.Errorf("store blob %s: %w", got, err)
		f.Abort(err)
		return Digest{}, err
	}
	f.s.fillsMu.Lock()
	delete(f.s.fills, f.key)
	f.s.fillsMu.Unlock()
	f.mu.Lock()
	f.done, f.digest = true, got
	f.notifyLocked()
	f.mu.Unlock()
	f.s.evictSoon()
	f.s.kickSpare()
	return got, nil
}

// persist flushes the temp file's data, renames it into place and indexes
// it: the index is written last, so a crash in between leaves either
// nothing or a verified file that recovery adopts. The directory is not
// synced: a rename lost in a crash leaves an index entry without its file,
// which recovery drops; that costs a refetch, never a wrong blob.
func (f *Fill) persist(d Digest, size int64) error {
	if err := unix.Fdatasync(int(f.file.Fd())); err != nil {
		return fmt.Errorf("fdatasync: %w", err)
	}
	if err := f.file.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	if err := f.s.indexRoom(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// Under blobMu from the index read to the index write: a fill of the
	// same bytes in another scope decides the blob's place (blobs/ or
	// private/, private.go) from the record this one leaves.
	f.s.blobMu.Lock()
	defer f.s.blobMu.Unlock()
	bi, err := f.s.statIndex(d)
	known := err == nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	was := f.s.pathOf(bi)
	now := withScope(bi, known, f.info.Scope)
	final := f.s.pathOf(now)
	if err := os.MkdirAll(filepath.Dir(final), 0o750); err != nil {
		return err
	}
	// Under f.mu, with path, so that a reader opening the file now finds it
	// by one name or the other.
	if err := os.Rename(f.path, final); err != nil {
		return fmt.Errorf("rename into place: %w", err)
	}
	f.path = final
	if known && was != final {
		// Made public: the private copy goes (its readers keep their
		// descriptors). A crash before this leaves a stray copy that
		// recovery removes.
		_ = os.Remove(was)
	}
	// Indexed under f.mu, with done set below in Commit: a use counted by
	// CountUse lands either in uses (taken here) or on the indexed blob.
	if err := f.s.addBlobLocked(bi, known, size, f.uses, f.info.Scope); err != nil {
		return err
	}
	f.indexed, f.digest = true, d
	return nil
}

// CountUse counts a client served from this fill after its bytes were
// verified (a hit: no upstream byte was needed) as a use of the blob, for
// eviction's scores.
func (f *Fill) CountUse() {
	f.mu.Lock()
	indexed, d := f.indexed, f.digest
	if !indexed {
		f.uses++
	}
	f.mu.Unlock()
	if indexed {
		f.s.countUse(BlobInfo{Digest: d})
	}
}

// Abort ends the fill with err: the temp file goes, readers get err.
// Aborting a finished fill does nothing.
func (f *Fill) Abort(err error) {
	// Out of the map before readers hear of the failure: a request that
	// comes after a reader saw the error starts a fresh fill rather than
	// joining this dead one.
	f.s.fillsMu.Lock()
	if f.s.fills[f.key] == f {
		delete(f.s.fills, f.key)
	}
	f.s.fillsMu.Unlock()
	f.mu.Lock()
	if f.done {
		f.mu.Unlock()
		return
	}
	f.done, f.err = true, err
	leftover := f.path
	f.notifyLocked()
	f.mu.Unlock()
	if f.file != nil {
		f.file.Close()
	}
	// Only a temp file goes: a blob already renamed into place is verified
	// and may be another fill's too; recovery indexes it on the next start.
	if leftover != "" && filepath.Dir(leftover) == filepath.Join(f.s.dir, "tmp") {
		_ = os.Remove(leftover)
	}
	f.s.kickSpare()
}

// yieldTo lets readers just woken by the leader's change run before the
// leader goes on. Woken goroutines queue behind the one that woke them on
// its processor: a leader that goes on reading upstream, hashing and
// syncing the file held its own client's bytes back for the whole of it
// (a 20 KB miss's last byte waited 200 µs for fdatasync, the index and the
// log).
func yieldTo(waiting int) {
	if waiting > 0 {
		runtime.Gosched()
	}
}

func (f *Fill) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// Bytes reads what the leader has written so far: for the leader to look
// at before it commits (a hub checks what a new Release lists first).
func (f *Fill) Bytes() io.Reader {
	f.mu.Lock()
	n := f.written
	f.mu.Unlock()
	return io.NewSectionReader(f.file, 0, n)
}
