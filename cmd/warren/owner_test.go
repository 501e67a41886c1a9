package main

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"syscall"
	"testing"
)

// `warren serve` run once as root in a cache that belongs to the service
// user leaves root's files in its index; the service user's next start
// must say so and stop (exit 2), not take the healthy index for damage
// and move it aside. The admin CLI, opening the cache itself, says the
// same; the fix it names works. The service user is nobody here.
func TestRootsFilesInTheCacheAreNotDamage(t *testing.T) {
	requireRoot(t, "a cache with root's files in it, opened by another user,")
	base := worldReadableDir(t)
	cache := filepath.Join(base, "cache")
	bin := filepath.Join(base, "warren") // the built one's directory is root's alone
	copyExecutable(t, warrenBinary(t), bin)
	uid, gid, name, group := nobodyUser(t)

	serveAsRoot := func() {
		_, cmd, logs := startWarren(t, "--cache-dir", cache)
		cmd.Process.Signal(os.Interrupt)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("warren serve as root: %v\n%s", err, logs)
		}
	}
	serveAsRoot() // the cache, made ...
	chownTree(t, cache, uid, gid)
	serveAsRoot() // ... and a run as root in it: the mistake
	var rootFiles []string
	for _, e := range dirNames(t, filepath.Join(cache, "index")) {
		if st, err := os.Stat(filepath.Join(cache, "index", e)); err == nil && st.Sys().(*syscall.Stat_t).Uid == 0 {
			rootFiles = append(rootFiles, e)
		}
	}
	if len(rootFiles) == 0 {
		t.Fatal("the run as root left no file of root's in the index: the test proves nothing")
	}
	index := dirNames(t, filepath.Join(cache, "index"))

	asNobody := func(args ...string) (int, string) {
		cmd := exec.Command(bin, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("warren %v: %v", args, err)
		}
		return cmd.ProcessState.ExitCode(), string(out)
	}
	said := regexp.MustCompile(`^warren: open cache index: ` + regexp.QuoteMeta(cache) + `/index/(\S+): permission denied \(owner root, mode (0[0-7]{3}); warren runs as uid ` +
		strconv.Itoa(uid) + ` ` + regexp.QuoteMeta(name) + `\): give the cache back to its user: chown -R ` + regexp.QuoteMeta(name+":"+group+" "+cache) + `$`)
	for _, args := range [][]string{
		{"serve", "--config", "/dev/null", "--discovery", "off", "--listen", freeLoopbackPort(t), "--cache-dir", cache},
		{"cache", "stat", "--config", "/dev/null", "--cache-dir", cache},
	} {
		code, out := asNobody(args...)
		m := said.FindStringSubmatch(lastLine(out))
		if code != 2 || m == nil {
			t.Fatalf("warren %s as %s: exit %d, want 2 and a line naming a file of root's, its mode and the fix:\n%s", args[0], name, code, out)
		}
		st, err := os.Stat(filepath.Join(cache, "index", m[1]))
		if err != nil || st.Sys().(*syscall.Stat_t).Uid != 0 || m[2] != "0"+strconv.FormatUint(uint64(st.Mode().Perm()), 8) {
			t.Fatalf("warren %s named %s, mode %s: not a file of root's with that mode (%v)", args[0], m[1], m[2], err)
		}
		if aside, _ := filepath.Glob(filepath.Join(cache, "index.damaged-*")); len(aside) != 0 {
			t.Fatalf("warren %s moved the index aside: %v", args[0], aside)
		}
		if now := dirNames(t, filepath.Join(cache, "index")); !reflect.DeepEqual(now, index) {
			t.Fatalf("warren %s changed the index: %v, was %v", args[0], now, index)
		}
	}

	chownTree(t, cache, uid, gid) // the fix it named
	if code, out := asNobody("cache", "stat", "--config", "/dev/null", "--cache-dir", cache); code != 0 {
		t.Fatalf("warren cache stat as %s after the chown: exit %d\n%s", name, code, out)
	}
}

// nobodyUser is the unprivileged user: its ids and names (65534 when the
// machine has no such entry).
func nobodyUser(t *testing.T) (uid, gid int, name, group string) {
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

func chownTree(t *testing.T, dir string, uid, gid int) {
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

func dirNames(t *testing.T, dir string) []string {
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
	dir, err := os.MkdirTemp("", "warren-owner-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func copyExecutable(t *testing.T, from, to string) {
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
