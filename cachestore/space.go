package cachestore

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Space: what the file system holds free, and what the index and fills
// must leave.

// closeHeadroom is the free space Close needs to flush the index safely:
// a memtable's table and the manifest, with room to spare.
const closeHeadroom = 16 << 20

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
