package cachestore

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// The index needs room to flush its memtable (at shutdown, and when it
// replays its log at start): Badger writes tables through mapped pages, and
// a full disk turns that into a SIGBUS. Another process may fill the disk
// past warren's own limits, so warren keeps a reserve: a file of
// closeHeadroom bytes, allocated while there is room, released exactly when
// the index must flush on a full disk, and taken again once there is room.

const reserveName = "reserve"

func (s *Store) reservePath() string { return filepath.Join(s.dir, reserveName) }

// takeReserve allocates the reserve file if it is missing and the disk has
// room for it and the index's headroom besides.
func (s *Store) takeReserve() {
	p := s.reservePath()
	if _, err := os.Stat(p); err == nil {
		return
	}
	if s.fsFree() < indexHeadroom+closeHeadroom {
		return
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		s.log.Warn("could not create the index's disk reserve", slog.Any("err", err))
		return
	}
	defer f.Close()
	if err := unix.Fallocate(int(f.Fd()), 0, 0, closeHeadroom); err != nil {
		s.log.Warn("could not allocate the index's disk reserve", slog.Any("err", err))
		os.Remove(p)
	}
}

// releaseReserve frees the reserve for the index; it says whether there
// was one.
func releaseReserve(dir string, log *slog.Logger) bool {
	err := os.Remove(filepath.Join(dir, reserveName))
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	if err != nil {
		log.Warn("could not release the index's disk reserve", slog.Any("err", err))
		return false
	}
	log.Warn("cache disk nearly full: released the index's reserve so that it can flush safely; it is taken again once there is room")
	return true
}
