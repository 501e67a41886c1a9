package cachestore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// Creating a file costs about a millisecond on some disks, and a fill needs
// one before its first byte. So Run keeps a few temp files created ahead,
// and a fill takes one of them; without Run (the CLI, tests) a fill creates
// its own. The spares are topped up when a fill ends, not when it takes
// one: creating a file is a system call of 150-300 µs on this machine's
// disk, and run while the fill streams it held up the client's handler,
// queued on the same processor (a 20 KB miss was served in 480 µs, 330
// with the refill after).

// spareFiles is how many temp files are kept ready.
const spareFiles = 4

// tempFile returns a new temp file in tmp/, a spare one if there is one.
func (s *Store) tempFile() (*os.File, error) {
	select {
	case f := <-s.spare:
		return f, nil
	default:
	}
	f, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "fill-*")
	if err != nil {
		return nil, fmt.Errorf("create temp file: %w", err)
	}
	return f, nil
}

func (s *Store) kickSpare() {
	select {
	case s.spareKick <- struct{}{}:
	default:
	}
}

// spareLoop keeps the spare files topped up until ctx ends, then removes
// those left.
func (s *Store) spareLoop(ctx context.Context) {
	defer s.dropSpares()
	sharded := !s.dirsAhead
	for {
		for len(s.spare) < cap(s.spare) {
			f, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "fill-*")
			if err != nil {
				break // a full disk: fills will say so themselves
			}
			select {
			case s.spare <- f:
			default:
				f.Close()
				os.Remove(f.Name())
			}
		}
		if !sharded {
			sharded = true
			if s.makeShards(ctx) {
				close(s.dirsMade)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-s.spareKick:
		}
	}
}

// makeShards creates the directories sha256 blobs go in (blobPath: one per
// first byte), those missing, once the first spares are ready: a new
// directory costs as much as a new file, and a fresh cache paid it on most
// of its first few hundred misses (a fifth of a cold install's CPU).
// It says whether every one is there.
func (s *Store) makeShards(ctx context.Context) bool {
	for i := range 256 {
		if ctx.Err() != nil {
			return false
		}
		dir := filepath.Join(s.dir, "blobs", "sha256", fmt.Sprintf("%02x", i))
		if _, err := os.Stat(dir); err == nil {
			continue
		}
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return false // a full disk: persist makes what it needs, or says why not
		}
	}
	return true
}

func (s *Store) dropSpares() {
	for {
		select {
		case f := <-s.spare:
			f.Close()
			os.Remove(f.Name())
		default:
			return
		}
	}
}
