package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// mirror_lists auto trusts the lists the repo files name, read again as
// they change; the prefixes mirror_lists names are trusted beside them;
// off trusts none (only a hub's). The same policy comes back until the
// repo files change.
func TestListTrustFromRepoFiles(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "fedora.repo"), []byte("[updates]\nmetalink=https://mirrors.fedora.example/metalink?repo=updates-released-f$releasever&arch=$basearch\n[local]\nbaseurl=http://local.example/el9/\n"), 0o644)
	logs := &syncBuffer{}
	cfg := settings{config: defaults()}
	cfg.Signatures.YumReposDir = dir
	cfg.MirrorLists = []string{"auto", "https://hub-lists.example/"}
	lt := newListTrust(cfg, slog.New(slog.NewTextHandler(logs, nil)))
	p := lt.Policy()
	for key, want := range map[string]bool{
		"https://mirrors.fedora.example/metalink?repo=updates-released-f40&arch=x86_64": true,
		"https://hub-lists.example/mirrorlist/9/baseos":                                 true,
		"https://mirrors.almalinux.example/mirrorlist/9/baseos":                         false,
	} {
		if p.Trusts(key) != want {
			t.Errorf("Trusts(%s) = %v, want %v", key, !want, want)
		}
	}
	if !p.Plain("http://local.example/el9/") {
		t.Error("a repo file's baseurl is not kept out of groups")
	}
	if lt.Policy() != p {
		t.Error("the same repo files gave another policy")
	}
	os.WriteFile(filepath.Join(dir, "alma.repo"), []byte("[baseos]\nmirrorlist=https://mirrors.almalinux.example/mirrorlist/$releasever/baseos\n"), 0o644)
	lt.mu.Lock()
	lt.scanned = time.Time{} // 30 s on
	lt.mu.Unlock()
	if p2 := lt.Policy(); p2 == p || !p2.Trusts("https://mirrors.almalinux.example/mirrorlist/9/baseos") {
		t.Error("a repo file added is not read")
	}
	if n := strings.Count(logs.String(), "lists of mirrors trusted to make mirror groups"); n != 2 {
		t.Errorf("%d log lines of the trusted lists, want one a change:\n%s", n, logs)
	}
	cfg.MirrorLists = []string{"off"}
	if newListTrust(cfg, slog.New(slog.DiscardHandler)) != nil {
		t.Error("mirror_lists off trusts something")
	}
}
