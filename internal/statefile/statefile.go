// Package statefile writes warren's small state files (the replication
// cursors, the preload log, the site CA, the node id) as the store writes
// blobs: a temp file in the same directory, fsynced, renamed into place,
// and the directory fsynced, so that a crash or power cut leaves the old
// file or the new one whole, never a torn or empty one. (google/renameio
// does all of this but the directory's fsync, without which the rename
// itself may be lost.)
package statefile

import (
	"fmt"
	"os"
	"path/filepath"
)

// Write replaces path with data, mode perm whatever the umask.
func Write(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	// A name of its own, not path+".tmp": two writers never share a temp
	// file, and a crash's leftover is never taken for the file.
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp, closed := f.Name(), false
	defer func() {
		if err != nil {
			if !closed {
				f.Close()
			}
			os.Remove(tmp)
		}
	}()
	// CreateTemp made it 0600; Chmod, unlike a create's mode, ignores the umask.
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// Without this a crash after the rename may leave an empty file under
	// the new name (ext4's data=ordered does not order the rename after
	// the data).
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync: %w", path, err)
	}
	closed = true
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// The rename is a change of the directory: durable once it is synced.
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("write %s: fsync its directory: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
