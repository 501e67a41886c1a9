package cachestore

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// A permission error is not damage. A store made and used by the service
// user, in which a run as root left a part of root's; opened by the
// service user: Open fails with a *PermissionError that names the part,
// its owner and mode, who runs, and the fix, and nothing is moved aside.
// As root the service user is nobody, and Open runs in a copy of this
// test binary as nobody; as another user, the part is chmod 000 instead
// and Open runs here.
func TestPermissionErrorIsNotDamage(t *testing.T) {
	for _, tc := range []struct {
		name string
		part func(d Digest) string // under the cache directory
		mode os.FileMode           // what a run as root leaves
	}{
		{"an index file", func(Digest) string { return "index/MANIFEST" }, 0o600},
		{"the index directory", func(Digest) string { return "index" }, 0o750},
		{"tmp", func(Digest) string { return "tmp" }, 0o750},
		{"a blob directory", func(d Digest) string { return filepath.Join("blobs", d.Algo, d.Hex[:2]) }, 0o750},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(worldReadableDir(t), "cache")
			s, err := Open(Config{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			d := fill(t, s, []byte(strings.Repeat("a blob ", 1000)))
			if err := s.PutKnown(map[string]Known{"http://deb.example/debian/pool/a.deb": {Digest: d, Size: 7000}}); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			part := filepath.Join(dir, tc.part(d))
			index := listing(t, filepath.Join(dir, "index"))

			var got openReport
			var owner, runs, chown string
			if os.Geteuid() == 0 {
				uid, gid, name, group := nobody(t)
				chownAll(t, dir, uid, gid)
				if err := os.Chown(part, 0, 0); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(part, tc.mode); err != nil {
					t.Fatal(err)
				}
				got = openAs(t, dir, uid, gid)
				owner, runs, chown = "root", "uid "+strconv.Itoa(uid)+" "+name, name+":"+group
			} else {
				st, _ := os.Stat(part)
				if err := os.Chmod(part, 0); err != nil {
					t.Fatal(err)
				}
				got = reportOpen(dir)
				os.Chmod(part, st.Mode().Perm())
				me, g := currentUser(t)
				owner, runs, chown = me.Username, "uid "+me.Uid+" "+me.Username, me.Username+":"+g
				tc.mode = 0
			}
			want := "open cache" + map[bool]string{true: " index", false: ""}[strings.HasPrefix(tc.part(d), "index")] + ": " + part +
				": permission denied (owner " + owner + fmt.Sprintf(", mode %04o", tc.mode) + "; warren runs as " + runs +
				"): give the cache back to its user: chown -R " + chown + " " + dir
			if !got.PermissionError || !got.ErrPermission || got.Path != part || got.Err != want {
				t.Fatalf("Open: %+v\nwant a *PermissionError for %s: %s", got, part, want)
			}
			if aside, _ := filepath.Glob(filepath.Join(dir, "index.damaged-*")); len(aside) != 0 {
				t.Fatalf("the index was moved aside: %v", aside)
			}
			if after := listing(t, filepath.Join(dir, "index")); !reflect.DeepEqual(after, index) {
				t.Fatalf("the index changed: %v, was %v", after, index)
			}
		})
	}
}

// A cache not made yet, in a directory its user may not write: the
// error names that directory and says how to make the cache.
func TestPermissionErrorForACacheNotMadeYet(t *testing.T) {
	parent := worldReadableDir(t)
	dir := filepath.Join(parent, "cache")
	var got openReport
	var owner, runs, who string
	if os.Geteuid() == 0 {
		uid, gid, name, group := nobody(t)
		got = openAs(t, dir, uid, gid)
		owner, runs, who = "root", "uid "+strconv.Itoa(uid)+" "+name, "-o "+name+" -g "+group
	} else {
		if err := os.Chmod(parent, 0o555); err != nil {
			t.Fatal(err)
		}
		got = reportOpen(dir)
		os.Chmod(parent, 0o755)
		me, g := currentUser(t)
		owner, runs, who = me.Username, "uid "+me.Uid+" "+me.Username, "-o "+me.Username+" -g "+g
	}
	want := "open cache: " + parent + ": permission denied (owner " + owner + ", mode " + map[bool]string{true: "0755", false: "0555"}[os.Geteuid() == 0] +
		"; warren runs as " + runs + "): make it for its user: install -d " + who + " " + dir
	if !got.PermissionError || !got.ErrPermission || got.Path != parent || got.Err != want {
		t.Fatalf("Open: %+v\nwant a *PermissionError for %s: %s", got, parent, want)
	}
}

func currentUser(t *testing.T) (*user.User, string) {
	t.Helper()
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	group := strconv.Itoa(os.Getegid())
	if g, err := user.LookupGroupId(group); err == nil {
		group = g.Name
	}
	return me, group
}

// A file where the cache should be is no permission error, for root too
// (which may not execute a file).
func TestOpenOnAFileIsNoPermissionError(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := reportOpen(file); got.Err == "" || got.PermissionError || got.ErrPermission {
		t.Fatalf("Open on a file: %+v, want an error that is no permission error", got)
	}
}

// openReport is what Open said, in a form that crosses a process.
type openReport struct {
	Err             string
	PermissionError bool // errors.As(err, **PermissionError)
	ErrPermission   bool // errors.Is(err, fs.ErrPermission)
	Path            string
}

func reportOpen(dir string) openReport {
	s, err := Open(Config{Dir: dir})
	if err == nil {
		s.Close()
		return openReport{}
	}
	r := openReport{Err: err.Error(), ErrPermission: errors.Is(err, fs.ErrPermission)}
	var pe *PermissionError
	if errors.As(err, &pe) {
		r.PermissionError, r.Path = true, pe.Path
	}
	return r
}

// openAndReport is the child's side of openAs.
func openAndReport(dir string) int {
	if err := json.NewEncoder(os.Stdout).Encode(reportOpen(dir)); err != nil {
		return 1
	}
	return 0
}

// openAs opens the store in dir in a copy of this test binary (its own
// directory is root's alone) running as uid:gid.
func openAs(t *testing.T, dir string, uid, gid int) openReport {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(worldReadableDir(t), "cachestore.test")
	copyFile(t, self, bin)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "CACHESTORE_OPEN="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("Open as uid %d: %v\n%s", uid, err, out)
	}
	var r openReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("Open as uid %d said %q: %v", uid, out, err)
	}
	return r
}

// nobody is the unprivileged user: its ids and names (65534 when the
// machine has no such entry).
func nobody(t *testing.T) (uid, gid int, name, group string) {
	uid, gid, name, group = 65534, 65534, "65534", "65534"
	if u, err := user.Lookup("nobody"); err == nil {
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		name = u.Username
	}
	if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
		group = g.Name
	}
	return uid, gid, name, group
}

func chownAll(t *testing.T, dir string, uid, gid int) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func listing(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// worldReadableDir is a temporary directory other users may enter (a
// test's TempDir is 0700).
func worldReadableDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cachestore-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
