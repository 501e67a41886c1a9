package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A damaged index never stops the daemon: a truncated table file, the
// daemon started again, and it serves; the blob it had is adopted again
// (rehashed) and, once the metadata is fetched again, is a hit.
func TestDaemonSurvivesDamagedIndex(t *testing.T) {
	repo := newPeerRepo(t, 1<<20)
	dir := t.TempDir()
	u, cmd, logs := startWarren(t, "--cache-dir", dir, "--log-level", "debug")
	n := &node{url: u, cmd: cmd, logs: logs, client: proxyClient(t, u)}
	n.learn(t, repo)
	if _, err := n.get(t, repo.up.URL+repo.path); err != nil {
		t.Fatal(err)
	}
	logs.waitFor(t, "msg=stored url="+repo.up.URL+repo.path, 10*time.Second)
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()
	tables, _ := filepath.Glob(filepath.Join(dir, "index", "*.sst"))
	if len(tables) == 0 {
		t.Fatal("no index table to damage: the test proves nothing")
	}
	for _, p := range tables {
		st, _ := os.Stat(p)
		os.Truncate(p, st.Size()/2)
	}

	u, cmd, logs = startWarren(t, "--cache-dir", dir, "--log-level", "debug")
	n = &node{url: u, cmd: cmd, logs: logs, client: proxyClient(t, u)}
	if !strings.Contains(logs.String(), "the cache index is damaged") {
		t.Fatalf("the daemon did not say the index was damaged:\n%s", tail(logs.String(), 20))
	}
	n.learn(t, repo)
	got, err := n.get(t, repo.up.URL+repo.path)
	if err != nil || !bytes.Equal(got, repo.deb) {
		t.Fatalf("after the rebuild: %d bytes, %v", len(got), err)
	}
	if c := repo.up.count(repo.path); c != 1 {
		t.Fatalf("upstream GETs of the artifact %d, want 1: the adopted blob was not served", c)
	}
}

// A full cache disk never takes the daemon down: on a real tmpfs filled to
// its last few hundred KB, it goes on serving what it has, passes new
// files through from upstream, and starts again on the full disk.
func TestDaemonOnAFullDisk(t *testing.T) {
	requireRoot(t, "mounting a tmpfs")
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=128m", "warren-full", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	cache := filepath.Join(dir, "cache")
	repo := newPeerRepo(t, 1<<20)
	big := serveDir(t, bigSuites(t, 20000, "big1", "big2"))
	start := func() *node {
		u, cmd, logs := startWarren(t, "--cache-dir", cache, "--log-level", "debug", "--disk-min-free", "1MB", "--index-ttl", "0s")
		return &node{url: u, cmd: cmd, logs: logs, client: proxyClient(t, u)}
	}
	n := start()
	n.learn(t, repo)
	if _, err := n.get(t, repo.up.URL+repo.path); err != nil {
		t.Fatal(err)
	}
	n.logs.waitFor(t, "msg=stored url="+repo.up.URL+repo.path, 10*time.Second)
	// Megabytes of learnt hashes in the index's memtable: shutting down
	// must flush them.
	learnSuite(t, n, big.URL, "big1")
	n.logs.waitFor(t, "big1/main/binary-amd64/Packages count=20000", 30*time.Second)
	// Fill the disk to its last few hundred KB.
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	leave := int64(300 << 10)
	fillKB := (int64(st.Bavail)*st.Bsize - leave) / 1024
	if out, err := exec.Command("dd", "if=/dev/zero", "of="+filepath.Join(dir, "filler"), "bs=1k", "count="+strconv.FormatInt(fillKB, 10)).CombinedOutput(); err != nil {
		t.Fatalf("fill the disk: %v %s", err, out)
	}

	check := func(n *node) {
		t.Helper()
		got, err := n.get(t, repo.up.URL+repo.path) // stored: a hit
		if err != nil || !bytes.Equal(got, repo.deb) {
			t.Fatalf("the stored artifact on a full disk: %d bytes, %v", len(got), err)
		}
		rel, err := n.get(t, repo.up.URL+"/dists/stable/Release") // revalidated or passed through
		if err != nil || len(rel) == 0 {
			t.Fatalf("the index on a full disk: %v", err)
		}
		if resp, err := http.Get(n.url + "/_warren/stats"); err != nil {
			t.Fatalf("the daemon is down on a full disk: %v", err)
		} else {
			resp.Body.Close()
		}
	}
	check(n)
	// Another index with no room for it: passed through, not stored.
	learnSuite(t, n, big.URL, "big2")
	check(n)
	n.cmd.Process.Signal(os.Interrupt)
	if err := n.cmd.Wait(); err != nil {
		t.Fatalf("the daemon did not stop cleanly on a full disk: %v\n%s", err, tail(n.logs.String(), 20))
	}
	check(start()) // and it starts again on the full disk
	if c := repo.up.count(repo.path); c != 1 {
		t.Fatalf("upstream GETs of the stored artifact %d, want 1", c)
	}
}

// bigSuites writes suites of n made-up packages each (Release and
// Packages), for an index with real work to do.
func bigSuites(t *testing.T, n int, suites ...string) string {
	dir := t.TempDir()
	for _, suite := range suites {
		var pkgs strings.Builder
		for i := range n {
			sum := sha256.Sum256([]byte(fmt.Sprintf("%s-%d", suite, i)))
			fmt.Fprintf(&pkgs, "Package: %s-p%d\nFilename: pool/main/p/%s-p%d_1.0-1+b1_amd64.deb\nSize: %d\nSHA256: %x\n\n", suite, i, suite, i, 1000+i, sum)
		}
		psum := sha256.Sum256([]byte(pkgs.String()))
		rel := fmt.Sprintf("Suite: %s\nSHA256:\n %x %d main/binary-amd64/Packages\n", suite, psum, pkgs.Len())
		os.MkdirAll(filepath.Join(dir, "dists", suite, "main", "binary-amd64"), 0o755)
		os.WriteFile(filepath.Join(dir, "dists", suite, "Release"), []byte(rel), 0o644)
		os.WriteFile(filepath.Join(dir, "dists", suite, "main", "binary-amd64", "Packages"), []byte(pkgs.String()), 0o644)
	}
	return dir
}

// learnSuite has n fetch a suite's Release and Packages, as apt update.
func learnSuite(t *testing.T, n *node, base, suite string) {
	t.Helper()
	for _, p := range []string{"/dists/" + suite + "/Release", "/dists/" + suite + "/main/binary-amd64/Packages"} {
		if _, err := n.get(t, base+p); err != nil {
			t.Fatalf("GET %s: %v", p, err)
		}
	}
}

// A restart on a small cache file system that another process filled: a
// 16 or 32 MB tmpfs (too small for the index's reserve), a 20 MB artifact
// asked for (passed through), the daemon stopped, the disk filled to its
// last 256 KB with 40 small files, and a start. It must serve (the index
// opened read-only, or as it can), never die of a SIGBUS in the index's
// log replay.
func TestDaemonRestartsOnASmallFullDisk(t *testing.T) {
	requireRoot(t, "mounting a tmpfs")
	repo := newPeerRepo(t, 20<<20)
	for _, size := range []string{"16m", "32m"} {
		t.Run(size, func(t *testing.T) {
			dir := t.TempDir()
			if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "warren-small", dir).CombinedOutput(); err != nil {
				t.Fatalf("mount tmpfs: %v %s", err, out)
			}
			t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
			cache := filepath.Join(dir, "cache")
			start := func() *node {
				u, cmd, logs := startWarren(t, "--cache-dir", cache, "--log-level", "debug")
				return &node{url: u, cmd: cmd, logs: logs, client: proxyClient(t, u)}
			}
			n := start()
			n.learn(t, repo)
			if got, err := n.get(t, repo.up.URL+repo.path); err != nil || !bytes.Equal(got, repo.deb) {
				t.Fatalf("the artifact on a small disk: %d bytes, %v", len(got), err)
			}
			n.cmd.Process.Signal(os.Interrupt)
			if err := n.cmd.Wait(); err != nil {
				t.Fatalf("the daemon did not stop cleanly: %v\n%s", err, tail(n.logs.String(), 20))
			}
			var st syscall.Statfs_t
			if err := syscall.Statfs(dir, &st); err != nil {
				t.Fatal(err)
			}
			const small, count, leave = 4 << 10, 40, 256 << 10
			fill := int64(st.Bavail)*st.Bsize - leave - count*small
			if fill > 0 {
				fillUp(t, filepath.Join(dir, "filler"), fill)
			}
			for i := range count {
				os.WriteFile(filepath.Join(dir, fmt.Sprintf("small%d", i)), make([]byte, small), 0o644)
			}
			n = start()
			if got, err := n.get(t, repo.up.URL+repo.path); err != nil || !bytes.Equal(got, repo.deb) {
				t.Fatalf("after a restart on the full disk: %d bytes, %v\n%s", len(got), err, tail(n.logs.String(), 20))
			}
			n.cmd.Process.Signal(os.Interrupt)
			if err := n.cmd.Wait(); err != nil {
				t.Fatalf("the daemon did not stop cleanly on the full disk: %v\n%s", err, tail(n.logs.String(), 30))
			}
		})
	}
}

// fillUp writes a file of n bytes (allocated, not sparse) at path.
func fillUp(t *testing.T, path string, n int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, n); err != nil {
		t.Fatalf("fill the disk: %v", err)
	}
}
