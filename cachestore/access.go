package cachestore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// A permission error is not damage. A cache this process may not use is
// typically one where `warren serve` ran once as root while the cache
// belongs to the service user: the files that run made are root's. Its
// index is healthy; moving it aside as damaged would lose it for nothing
// and the next step (tmp/, blobs/) would fail anyway. So Open checks
// first, and says whose the files are and how to give them back.

// PermissionError is a part of the cache this process may not use. It
// wraps the errno: errors.Is(err, fs.ErrPermission) holds.
type PermissionError struct {
	Op   string // what was being done: "open cache index"
	Path string
	Err  error
	// why says whose the path is and who this process is; fix, what to do.
	why, fix string
}

func (e *PermissionError) Error() string {
	text := "permission denied"
	var errno syscall.Errno
	if errors.As(e.Err, &errno) {
		text = errno.Error()
	}
	return fmt.Sprintf("%s: %s: %s (%s): %s", e.Op, e.Path, text, e.why, e.fix)
}

func (e *PermissionError) Unwrap() error { return e.Err }

// checkAccess finds, before anything is opened, created or moved, a part
// of the cache in dir this process may not read and write: the directory,
// blobs/, tmp/, index/ and the index's files, and the blob directories.
// Blob files are not each checked (a start would stat every one): a run as
// root that stored a blob also wrote index files. Root may use anything.
func checkAccess(dir string) error {
	check := func(p string) error {
		st, err := os.Stat(p)
		if err != nil {
			return nil // not there yet, or another failure: the open meets it
		}
		mode := uint32(unix.R_OK | unix.W_OK)
		if st.IsDir() {
			mode |= unix.X_OK
		}
		// AT_EACCESS: as the effective user, the one that opens files.
		err = unix.Faccessat(unix.AT_FDCWD, p, mode, unix.AT_EACCESS)
		if errors.Is(err, fs.ErrPermission) {
			return permissionError(dir, p, &fs.PathError{Op: "access", Path: p, Err: err})
		}
		return nil
	}
	dirs := func(p string) []string {
		entries, _ := os.ReadDir(p) // checked before, readable
		var out []string
		for _, e := range entries {
			if e.IsDir() {
				out = append(out, filepath.Join(p, e.Name()))
			}
		}
		return out
	}
	if err := check(dir); err != nil {
		return err
	}
	for _, sub := range []string{"blobs", "tmp", "index"} {
		if err := check(filepath.Join(dir, sub)); err != nil {
			return err
		}
	}
	index, _ := os.ReadDir(filepath.Join(dir, "index"))
	for _, e := range index {
		if err := check(filepath.Join(dir, "index", e.Name())); err != nil {
			return err
		}
	}
	for _, algo := range dirs(filepath.Join(dir, "blobs")) {
		if err := check(algo); err != nil {
			return err
		}
		for _, aa := range dirs(algo) {
			if err := check(aa); err != nil {
				return err
			}
		}
	}
	return nil
}

// asPermission turns err into a *PermissionError when it is one, naming
// the path it carries (else where); other errors pass as they are. Badger
// flattens the errors it wraps into text, so that is read too.
func asPermission(cache, where string, err error) error {
	if err == nil {
		return nil
	}
	var pe *PermissionError
	if errors.As(err, &pe) {
		return err
	}
	var pathErr *fs.PathError
	switch m := deniedInText.FindStringSubmatch(err.Error()); {
	case errors.As(err, &pathErr) && errors.Is(err, fs.ErrPermission):
		where = pathErr.Path
	case errors.Is(err, fs.ErrPermission):
	case m != nil:
		where = m[1]
	default:
		return err
	}
	return permissionError(cache, where, err)
}

// deniedInText finds the path in an os error flattened into text:
// "open /var/cache/warren/index/000002.vlog: permission denied".
var deniedInText = regexp.MustCompile(`(/[^\s:]*): (?:permission denied|operation not permitted)`)

// permissionError says whose path is (or, when it is not there, whose
// the directory it would be made in is) and what to do: give the cache
// back to the user it belongs to (its directory's owner; this process's
// user when that is root), or run warren as that user.
func permissionError(cache, path string, err error) *PermissionError {
	op := "open cache"
	if rel, rerr := filepath.Rel(cache, path); rerr == nil && (rel == "index" || strings.HasPrefix(rel, "index"+string(filepath.Separator))) {
		op = "open cache index"
	}
	euid := os.Geteuid()
	me := fmt.Sprintf("uid %d %s", euid, userName(euid))
	why := "owner unknown; warren runs as " + me
	for p := path; ; p = filepath.Dir(p) {
		if st, serr := os.Lstat(p); serr == nil {
			path = p
			why = fmt.Sprintf("owner %s, mode %04o; warren runs as %s", userName(ownerOf(st)), st.Mode().Perm(), me)
			break
		}
		if p == filepath.Dir(p) {
			break
		}
	}
	owner, group := euid, os.Getegid()
	st, serr := os.Stat(cache)
	if serr == nil && ownerOf(st) > 0 {
		owner, group = ownerOf(st), int(st.Sys().(*syscall.Stat_t).Gid)
	}
	fix := fmt.Sprintf("give the cache back to its user: chown -R %s:%s %s", userName(owner), groupName(group), cache)
	switch {
	case serr != nil:
		fix = fmt.Sprintf("make it for its user: install -d -o %s -g %s %s", userName(owner), groupName(group), cache)
	case owner != euid:
		fix = fmt.Sprintf("the cache belongs to %s: run warren as %[1]s, or as root", userName(owner))
	}
	return &PermissionError{Op: op, Path: path, Err: err, why: why, fix: fix}
}

func ownerOf(st fs.FileInfo) int {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return int(sys.Uid)
	}
	return -1
}

func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return strconv.Itoa(uid)
}

func groupName(gid int) string {
	if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
		return g.Name
	}
	return strconv.Itoa(gid)
}
