package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// buildRPMRepo makes two small rpms with rpmbuild (one named like
// libstdc++, as real repositories have) and a repository with
// createrepo_c; it returns the repository root and each rpm's sha256.
func buildRPMRepo(t *testing.T, base string) (string, map[string]string) {
	t.Helper()
	return buildRPMRepoSized(t, base, 256<<10, 256<<10)
}

// buildRPMRepoSized is buildRPMRepo with each rpm's payload size.
func buildRPMRepoSized(t *testing.T, base string, sizes ...int) (string, map[string]string) {
	t.Helper()
	top := filepath.Join(base, "rpmbuild")
	repo := filepath.Join(base, "rpmrepo")
	os.MkdirAll(filepath.Join(repo, "Packages"), 0o755)
	sums := map[string]string{}
	for i, name := range []string{"warren-e2e-hello", "libwarren++-e2e"} {
		payload := filepath.Join(base, name+".bin")
		r := rand.New(rand.NewPCG(uint64(i+10), 7))
		b := make([]byte, sizes[i])
		for j := range b {
			b[j] = byte(r.UintN(256))
		}
		os.WriteFile(payload, b, 0o644)
		spec := filepath.Join(base, name+".spec")
		os.WriteFile(spec, []byte(fmt.Sprintf(`Name: %s
Version: 1.0
Release: 1
Summary: warren end-to-end test package
License: MIT
BuildArch: noarch
AutoReqProv: no
%%description
warren end-to-end test package.
%%install
mkdir -p %%{buildroot}/usr/share/%s
cp %s %%{buildroot}/usr/share/%s/payload.bin
%%files
/usr/share/%s/payload.bin
`, name, name, payload, name, name)), 0o644)
		run(t, base, nil, "rpmbuild", "--define", "_topdir "+top, "--define", "__gpg /usr/bin/gpg", "--nodeps", "-bb", spec)
		rpmFile := filepath.Join(top, "RPMS", "noarch", name+"-1.0-1.noarch.rpm")
		dst := filepath.Join(repo, "Packages", filepath.Base(rpmFile))
		if err := os.Rename(rpmFile, dst); err != nil {
			t.Fatal(err)
		}
		sums["/Packages/"+filepath.Base(rpmFile)] = sha256File(t, dst)
	}
	run(t, base, nil, "createrepo_c", repo)
	return repo, sums
}

// dnfClient is dnf with private state: config, repos, cache and installroot
// are all under dir, so the host's dnf state is never touched.
func dnfRun(t *testing.T, base, name, repoURL, proxyURL string, args ...string) string {
	t.Helper()
	return dnfIn(t, "", base, name, repoURL, proxyURL, args...)
}

// dnfIn is dnfRun in a network namespace ("": this one).
func dnfIn(t *testing.T, netns, base, name, repoURL, proxyURL string, args ...string) string {
	t.Helper()
	return newDnfClient(base, name, repoURL).run(t, netns, proxyURL, args...)
}

// dnfClient is one dnf client's files: dnf.conf, repos.d/e2e.repo (so a
// test may change them, as warren dnf-setup does, before dnf runs).
type dnfClient struct{ dir, conf, reposDir string }

func newDnfClient(base, name, repoURL string) dnfClient {
	dir := filepath.Join(base, name)
	for _, d := range []string{"repos.d", "cache", "root", "dl"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	c := dnfClient{dir: dir, conf: filepath.Join(dir, "dnf.conf"), reposDir: filepath.Join(dir, "repos.d")}
	os.WriteFile(c.conf, []byte("[main]\ngpgcheck=0\nkeepcache=0\ninstall_weak_deps=0\n"), 0o644)
	os.WriteFile(filepath.Join(c.reposDir, "e2e.repo"), []byte(fmt.Sprintf(
		"[warren-e2e]\nname=warren e2e\nbaseurl=%s/\nenabled=1\ngpgcheck=0\nrepo_gpgcheck=0\nmetadata_expire=0\n", repoURL)), 0o644)
	return c
}

// run runs dnf in netns ("": this one); proxyURL "" leaves dnf.conf's proxy.
func (c dnfClient) run(t *testing.T, netns, proxyURL string, args ...string) string {
	t.Helper()
	full := []string{
		"-c", c.conf, "--installroot=" + filepath.Join(c.dir, "root"), "--releasever=12",
		"--setopt=reposdir=" + c.reposDir,
		"--setopt=cachedir=" + filepath.Join(c.dir, "cache"),
		"--disableplugin=local,generate_completion_cache", "-y",
	}
	if proxyURL != "" {
		full = append(full, "--setopt=proxy="+proxyURL)
	}
	if netns != "" {
		return run(t, c.dir, nil, "ip", append([]string{"netns", "exec", netns, "dnf"}, append(full, args...)...)...)
	}
	return run(t, c.dir, nil, "dnf", append(full, args...)...)
}

// TestDnfThroughWarren drives the real dnf through the real warren binary:
// a second client with fresh state gets both rpms from the cache.
func TestDnfThroughWarren(t *testing.T) {
	requireTools(t, "dnf", "createrepo_c", "rpmbuild")
	base := t.TempDir()
	t.Setenv("GNUPGHOME", filepath.Join(base, "gnupg"))
	t.Cleanup(func() { run(t, base, nil, "gpgconf", "--kill", "gpg-agent") })
	repo, sums := buildRPMRepo(t, base)
	up := serveDir(t, repo)
	proxyURL, _, logs := startWarren(t, "--cache-dir", filepath.Join(base, "cache"), "--log-level", "debug")

	for _, client := range []string{"dnf1", "dnf2"} {
		dl := filepath.Join(base, client, "dl")
		dnfRun(t, base, client, up.URL, proxyURL, "download", "--destdir="+dl, "warren-e2e-hello", "libwarren++-e2e")
		for path, sum := range sums {
			if got := sha256File(t, filepath.Join(dl, filepath.Base(path))); got != sum {
				t.Fatalf("%s %s: sha256 %s, want %s", client, path, got, sum)
			}
			if n := up.count(path); n != 1 {
				t.Fatalf("after %s, upstream GETs of %s = %d, want 1", client, path, n)
			}
		}
	}
	// Per file: the second client's copy came from the cache, by the digest
	// primary.xml gave (whatever escaping of '+' librepo chose).
	for path := range sums {
		if !hasHitLine(logs.String(), up.URL+path, "rpm-package") {
			t.Fatalf("warren's log has no hash-known hit for %s", path)
		}
	}
}

// TestDnfThroughHub drives the real dnf through a node that may use only
// its hub: repomd.xml, primary and both rpms come through the hub, and a
// second node's client costs upstream nothing.
func TestDnfThroughHub(t *testing.T) {
	requireTools(t, "dnf", "createrepo_c", "rpmbuild")
	base := t.TempDir()
	t.Setenv("GNUPGHOME", filepath.Join(base, "gnupg"))
	t.Cleanup(func() { run(t, base, nil, "gpgconf", "--kill", "gpg-agent") })
	repo, sums := buildRPMRepo(t, base)
	up := serveDir(t, repo)
	hubURL, _, _ := startWarren(t, "--role", "hub", "--cache-dir", filepath.Join(base, "hub"), "--hub-tokens", "tok-0123456789abcdef")
	for i, client := range []string{"dnf1", "dnf2"} {
		node, _, logs := startWarren(t, "--cache-dir", filepath.Join(base, fmt.Sprintf("node%d", i)), "--hub", hubURL,
			"--hub-token", "tok-0123456789abcdef", "--hub-only", "--log-level", "debug")
		dl := filepath.Join(base, client, "dl")
		dnfRun(t, base, client, up.URL, node, "download", "--destdir="+dl, "warren-e2e-hello", "libwarren++-e2e")
		for path, sum := range sums {
			if got := sha256File(t, filepath.Join(dl, filepath.Base(path))); got != sum {
				t.Fatalf("%s %s: sha256 %s, want %s", client, path, got, sum)
			}
			if n := up.count(path); n != 1 {
				t.Fatalf("after %s, upstream GETs of %s = %d, want 1 for the site", client, path, n)
			}
			// The node verified it by the digest primary.xml gave.
			if !strings.Contains(logs.String(), "hash_known=true") {
				t.Fatalf("%s's node learnt no hash from the metadata the hub passed on", client)
			}
		}
	}
	if n := up.count("/repodata/repomd.xml"); n < 1 {
		t.Fatal("repomd.xml never reached upstream: the test proves nothing")
	}
}
