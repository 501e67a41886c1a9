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
// its own.

// spareFiles is how many temp files are kept ready.
const spareFiles = 4

// tempFile returns a new temp file in tmp/, a spare one if there is one.
func (s *Store) tempFile() (*os.File, error) {
	select {
	case f := <-s.spare:
		s.kickSpare()
		return f, nil
	default:
	}
	s.kickSpare()
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
		select {
		case <-ctx.Done():
			return
		case <-s.spareKick:
		}
	}
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
