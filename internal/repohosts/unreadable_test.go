package repohosts

import (
	"encoding/json"
	"errors"
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

// TestMain is also Scan run by another user: TestScanPermissionDenied
// starts a copy of this binary as nobody, with REPOHOSTS_SCAN set to the
// root to scan, and reads its report on stdout.
func TestMain(m *testing.M) {
	if root := os.Getenv("REPOHOSTS_SCAN"); root != "" {
		if err := json.NewEncoder(os.Stdout).Encode(reportOf(Scan(root))); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// report is what a Scan found, in a form that crosses a process.
type report struct {
	Intercept  []string
	Unreadable []unreadableReport
}

type unreadableReport struct {
	Path       string
	Dir        bool
	Permission bool // errors.Is(err, fs.ErrPermission)
	Err        string
}

func reportOf(f Found) report {
	r := report{Intercept: f.Intercept()}
	for _, u := range f.Unreadable {
		r.Unreadable = append(r.Unreadable, unreadableReport{Path: u.Path, Dir: u.Dir, Permission: errors.Is(u.Err, fs.ErrPermission), Err: u.Err.Error()})
	}
	return r
}

// writeTree writes the files (path relative to root: content) with mode
// 0644 and their directories 0755.
func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, body := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Files warren cannot read for a reason even root meets: each one may
// hide a credential, so auto intercepts nothing. Files apt and dnf do not
// read never count.
func TestScanUnreadable(t *testing.T) {
	sources := map[string]string{"etc/apt/sources.list": "deb https://repo.example/debian stable main\n"}
	big := strings.Repeat("# padding\n", maxFile/10+1)
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, root string)
		want  []string // unreadable, relative to root
	}{
		{"auth.conf is a directory", func(t *testing.T, root string) {
			os.MkdirAll(filepath.Join(root, "etc/apt/auth.conf"), 0o755)
		}, []string{"etc/apt/auth.conf"}},
		{"an auth.conf.d part too large", func(t *testing.T, root string) {
			writeTree(t, root, map[string]string{"etc/apt/auth.conf.d/big.conf": big})
		}, []string{"etc/apt/auth.conf.d/big.conf"}},
		{"a sources part too large", func(t *testing.T, root string) {
			writeTree(t, root, map[string]string{"etc/apt/sources.list.d/big.list": big})
		}, []string{"etc/apt/sources.list.d/big.list"}},
		{"a .repo that is a FIFO", func(t *testing.T, root string) {
			os.MkdirAll(filepath.Join(root, "etc/yum.repos.d"), 0o755)
			if err := syscall.Mkfifo(filepath.Join(root, "etc/yum.repos.d/pipe.repo"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, []string{"etc/yum.repos.d/pipe.repo"}},
		{"sources.list.d is a file", func(t *testing.T, root string) {
			writeTree(t, root, map[string]string{"etc/apt/sources.list.d": "x"})
		}, []string{"etc/apt/sources.list.d"}},
		{"parts apt does not read", func(t *testing.T, root string) {
			writeTree(t, root, map[string]string{"etc/apt/auth.conf.d/big.conf.save": big, "etc/apt/sources.list.d/big.list.bak": big,
				"etc/apt/auth.conf.d/.hidden.conf": big})
			os.MkdirAll(filepath.Join(root, "etc/apt/auth.conf.d/sub.conf"), 0o755)
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, sources)
			tc.setup(t, root)
			got := reportOf(Scan(root))
			var paths []string
			for _, u := range got.Unreadable {
				paths = append(paths, strings.TrimPrefix(u.Path, root+"/"))
			}
			if !reflect.DeepEqual(paths, tc.want) {
				t.Fatalf("unreadable %v, want %v (%+v)", paths, tc.want, got.Unreadable)
			}
			if len(tc.want) > 0 && got.Intercept != nil {
				t.Fatalf("intercepts %v with a file it could not read", got.Intercept)
			}
			if len(tc.want) == 0 && !reflect.DeepEqual(got.Intercept, []string{"repo.example"}) {
				t.Fatalf("intercepts %v, want [repo.example]", got.Intercept)
			}
		})
	}
}

// A root-only auth.conf, auth.conf.d and .repo with a username (chmod
// 000) read by another user, as the daemon reads them as user warren:
// permission denied, for real. As root, Scan runs in a copy of this test
// binary as user nobody; as any other user, here.
func TestScanPermissionDenied(t *testing.T) {
	root := worldReadableDir(t)
	writeTree(t, root, map[string]string{
		"etc/apt/sources.list":                "deb https://repo.example/debian stable main\ndeb https://private.example/debian stable main\n",
		"etc/apt/auth.conf":                   "machine private.example login me password secret\n",
		"etc/apt/auth.conf.d/vendor.conf":     "machine vendor.example login me password secret\n",
		"etc/yum.repos.d/private.repo":        "[private]\nbaseurl=https://rpm.private.example/el9\nusername=me\n",
		"etc/yum.repos.d/public.repo":         "[public]\nbaseurl=https://rpm.public.example/el9\n",
		"etc/apt/sources.list.d/public.list":  "deb https://public.example/debian stable main\n",
		"etc/apt/sources.list.d/private.list": "deb https://me:secret@inline.example/debian stable main\n",
	})
	locked := []string{"etc/apt/auth.conf", "etc/apt/auth.conf.d", "etc/yum.repos.d/private.repo", "etc/apt/sources.list.d/private.list"}
	for _, p := range locked {
		if err := os.Chmod(filepath.Join(root, p), 0); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, p := range locked {
			os.Chmod(filepath.Join(root, p), 0o755)
		}
	})

	var got report
	if os.Geteuid() != 0 {
		got = reportOf(Scan(root))
	} else {
		got = scanAsNobody(t, root)
	}
	want := []unreadableReport{
		{Path: "etc/apt/sources.list.d/private.list", Permission: true},
		{Path: "etc/apt/auth.conf", Permission: true},
		{Path: "etc/apt/auth.conf.d", Dir: true, Permission: true},
		{Path: "etc/yum.repos.d/private.repo", Permission: true},
	}
	for i := range got.Unreadable {
		u := &got.Unreadable[i]
		if !strings.Contains(u.Err, "permission denied") || !strings.Contains(u.Err, u.Path) {
			t.Errorf("the error for %s: %q", u.Path, u.Err)
		}
		u.Path, u.Err = strings.TrimPrefix(u.Path, root+"/"), ""
	}
	if !reflect.DeepEqual(got.Unreadable, want) {
		t.Fatalf("unreadable\n%+v\nwant\n%+v", got.Unreadable, want)
	}
	if got.Intercept != nil {
		t.Fatalf("intercepts %v although credentials could not be read", got.Intercept)
	}
}

// worldReadableDir is a temporary directory other users may enter (a
// test's TempDir is 0700).
func worldReadableDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "repohosts-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// scanAsNobody runs Scan(root) in a copy of this test binary as user
// nobody (the binary's own directory is root's alone).
func scanAsNobody(t *testing.T, root string) report {
	t.Helper()
	uid, gid := 65534, 65534 // nobody's ids, when there is no entry
	if u, err := user.Lookup("nobody"); err == nil {
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(worldReadableDir(t), "repohosts.test")
	copyFile(t, self, bin, 0o755)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "REPOHOSTS_SCAN="+root)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("Scan as nobody: %v\n%s", err, out)
	}
	var r report
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("Scan as nobody said %q: %v", out, err)
	}
	return r
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
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
