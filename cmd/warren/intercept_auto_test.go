package main

import (
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warren-cache/warren/internal/repohosts"
	"github.com/warren-cache/warren/internal/siteca"
)

// https_intercept auto with apt's configuration warren cannot read (here
// an auth.conf that is a directory, which even root cannot read; a real
// permission denied is internal/repohosts' TestScanPermissionDenied):
// nothing is intercepted, and the warning naming the file is logged once
// per change, not at every rescan.
func TestAutoInterceptsNothingWithUnreadableConfig(t *testing.T) {
	root := t.TempDir()
	authConf := filepath.Join(root, "etc", "apt", "auth.conf")
	os.MkdirAll(authConf, 0o755)
	os.WriteFile(filepath.Join(root, "etc", "apt", "sources.list"), []byte("deb https://repo.example/debian stable main\n"), 0o644)
	ca, err := siteca.Init(filepath.Join(t.TempDir(), "ca"), []string{"repo.example"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	in := &interception{ca: ca, root: root, log: slog.New(slog.NewTextHandler(logs, nil))}
	in.cfg.HTTPSIntercept = []string{"auto"}
	rescan := func() bool { // as when 30 s have passed since the last scan
		in.mu.Lock()
		in.scanned = time.Time{}
		in.mu.Unlock()
		return in.Intercepts("repo.example")
	}
	warnings := func() int { return strings.Count(logs.String(), "level=WARN") }

	for range 2 {
		if rescan() {
			t.Fatal("repo.example is intercepted although auth.conf could not be read")
		}
	}
	if n := warnings(); n != 1 || !strings.Contains(logs.String(), authConf) || !strings.Contains(logs.String(), "https_intercept auto intercepts nothing") {
		t.Fatalf("%d warnings, want one naming %s:\n%s", n, authConf, logs)
	}

	os.Remove(authConf)
	os.WriteFile(authConf, []byte("machine other.example login me password x\n"), 0o600)
	for range 2 {
		if !rescan() {
			t.Fatalf("repo.example is not intercepted once auth.conf can be read:\n%s", logs)
		}
	}
	if n := strings.Count(logs.String(), "can be read again"); n != 1 {
		t.Fatalf("%d notes that it can be read again, want 1:\n%s", n, logs)
	}

	os.Remove(authConf)
	os.MkdirAll(authConf, 0o755)
	if rescan() {
		t.Fatal("repo.example is intercepted although auth.conf could not be read again")
	}
	if n := warnings(); n != 2 {
		t.Fatalf("%d warnings after it broke again, want 2:\n%s", n, logs)
	}
}

// The warning's fix for a file and a directory the daemon's user may not
// read, and for a file that is broken otherwise.
func TestUnreadableConfigSaysTheFix(t *testing.T) {
	group := strconv.Itoa(os.Getgid())
	if g, err := user.LookupGroupId(group); err == nil {
		group = g.Name
	}
	denied := func(p string) error { return &fs.PathError{Op: "open", Path: p, Err: syscall.EACCES} }
	err := unreadableConfig{
		{Path: "/etc/apt/auth.conf", Err: denied("/etc/apt/auth.conf")},
		{Path: "/etc/apt/auth.conf.d", Dir: true, Err: denied("/etc/apt/auth.conf.d")},
		{Path: "/etc/yum.repos.d/big.repo", Err: repohosts.ErrTooLarge},
	}
	for _, want := range []string{
		"https_intercept auto intercepts nothing: warren cannot read /etc/apt/auth.conf (open /etc/apt/auth.conf: permission denied), ",
		"let group " + group + " read it: chgrp " + group + " /etc/apt/auth.conf; chmod 0640 /etc/apt/auth.conf;",
		"chgrp " + group + " /etc/apt/auth.conf.d; chmod 0750 /etc/apt/auth.conf.d;",
		"mend or remove /etc/yum.repos.d/big.repo, or name the hosts to intercept in https_intercept",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the message lacks %q:\n%s", want, err)
		}
	}
}

// A mirror group's https mirrors are intercepted as soon as warren has
// read their list, when the site CA's constraints name them (here a
// domain, as an operator names a distribution's mirror domains); the
// others stay tunnels, and the log says which and what to do, once.
// (Before, only the hosts of the repo files were: the list server.)
func TestMirrorHostsIntercepted(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc", "yum.repos.d"), 0o755)
	os.WriteFile(filepath.Join(root, "etc", "yum.repos.d", "fedora.repo"),
		[]byte("[updates]\nmetalink=https://mirrors.fedora.example/metalink?repo=updates-released-f40&arch=$basearch\n"), 0o644)
	ca, err := siteca.Init(filepath.Join(t.TempDir(), "ca"), []string{"mirrors.fedora.example", "mirror.example"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	var mirrors []string
	in := &interception{ca: ca, root: root, log: slog.New(slog.NewTextHandler(logs, nil)), mirrors: func() []string { return mirrors }}
	in.cfg.HTTPSIntercept = []string{"auto"}
	if !in.Intercepts("mirrors.fedora.example") || in.Intercepts("fr.mirror.example") {
		t.Fatal("before any list: the list host alone")
	}
	mirrors = []string{"fr.mirror.example", "ftp.elsewhere.example"}
	for range 2 {
		if !in.Intercepts("fr.mirror.example") || in.Intercepts("ftp.elsewhere.example") || !in.Intercepts("mirrors.fedora.example") {
			t.Fatalf("once the list is read: %v", in.current())
		}
	}
	if n := strings.Count(logs.String(), "https mirrors of the lists of mirrors dnf uses stay tunnels"); n != 1 || !strings.Contains(logs.String(), "ftp.elsewhere.example") {
		t.Fatalf("%d warnings of the mirrors outside the CA, want one naming ftp.elsewhere.example:\n%s", n, logs)
	}
	// A list of hosts in https_intercept: the mirrors the CA names too.
	in.cfg.HTTPSIntercept = []string{"mirrors.fedora.example"}
	in.mu.Lock()
	in.scanned = time.Time{}
	in.mu.Unlock()
	if !in.Intercepts("fr.mirror.example") || in.Intercepts("ftp.elsewhere.example") {
		t.Fatal("with https_intercept naming its hosts, the mirrors the CA names are not intercepted")
	}
}
