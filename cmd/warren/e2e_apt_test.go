package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// aptRepo is a gpg-signed apt repository on disk.
type aptRepo struct {
	root    string
	keyring string
	debs    map[string]string // pool path -> sha256
	sources []string          // pool paths of the source package's files
}

// buildAptRepo makes a repository with a ~20 MB incompressible package, a
// small one and a native source package, signed with a throwaway key.
func buildAptRepo(t testing.TB, base string) aptRepo {
	t.Helper()
	repo := aptRepo{root: filepath.Join(base, "repo"), keyring: filepath.Join(base, "keyring.gpg"), debs: map[string]string{}}
	pool := filepath.Join(repo.root, "pool", "main")
	os.MkdirAll(pool, 0o755)
	repo.addDeb(t, base, "warren-e2e-big", "1.0", 20<<20, 1)
	repo.addDeb(t, base, "warren-e2e-small", "1.0", 4096, 2)
	// A native source package, for apt-get source.
	src := filepath.Join(base, "build", "warren-e2e-src-1.0")
	os.MkdirAll(filepath.Join(src, "debian", "source"), 0o755)
	for name, text := range map[string]string{
		"debian/source/format": "3.0 (native)\n",
		"debian/control":       "Source: warren-e2e-src\nSection: misc\nPriority: optional\nMaintainer: warren tests <tests@warren.invalid>\nStandards-Version: 4.6.2\n\nPackage: warren-e2e-src\nArchitecture: all\nDescription: warren end-to-end source package\n A source package for the apt-get source test.\n",
		"debian/changelog":     "warren-e2e-src (1.0) stable; urgency=medium\n\n  * Test package.\n\n -- warren tests <tests@warren.invalid>  Sun, 22 Nov 2026 00:00:00 +0000\n",
		"payload.bin":          string(randomPayload(1<<20, 7)),
	} {
		os.WriteFile(filepath.Join(src, name), []byte(text), 0o644)
	}
	run(t, filepath.Dir(src), nil, "dpkg-source", "-b", filepath.Base(src))
	for _, f := range []string{"warren-e2e-src_1.0.dsc", "warren-e2e-src_1.0.tar.xz"} {
		if err := os.Rename(filepath.Join(filepath.Dir(src), f), filepath.Join(pool, f)); err != nil {
			t.Fatalf("dpkg-source did not make %s: %v", f, err)
		}
		repo.sources = append(repo.sources, "pool/main/"+f)
	}
	srcIdx := filepath.Join(repo.root, "dists", "stable", "main", "source")
	os.MkdirAll(srcIdx, 0o755)
	// apt-ftparchive warns on stderr about overrides; only stdout is the index.
	run(t, repo.root, nil, "sh", "-c", "apt-ftparchive sources pool > dists/stable/main/source/Sources")
	run(t, srcIdx, nil, "sh", "-c", "gzip -9nk Sources && xz -k Sources")

	gnupg := filepath.Join(base, "gnupg")
	os.MkdirAll(gnupg, 0o700)
	t.Cleanup(func() { exec.Command("gpgconf", "--kill", "gpg-agent").Run() })
	t.Setenv("GNUPGHOME", gnupg) // for the cleanup above, and for sign
	run(t, base, []string{"GNUPGHOME=" + gnupg}, "gpg", "--batch", "--passphrase", "", "--quick-gen-key", "warren e2e <e2e@warren.invalid>", "ed25519", "sign", "never")
	repo.sign(t, base)
	run(t, base, []string{"GNUPGHOME=" + gnupg}, "gpg", "--batch", "--yes", "--output", repo.keyring, "--export", "e2e@warren.invalid")
	return repo
}

// addDeb builds a package of size incompressible bytes into the pool.
func (repo aptRepo) addDeb(t testing.TB, base, name, version string, size int, seed uint64) {
	t.Helper()
	pkg := filepath.Join(base, "build", name+"_"+version)
	os.MkdirAll(filepath.Join(pkg, "DEBIAN"), 0o755)
	os.MkdirAll(filepath.Join(pkg, "usr", "share", name), 0o755)
	control := fmt.Sprintf("Package: %s\nVersion: %s\nArchitecture: all\nMaintainer: warren tests <tests@warren.invalid>\nDescription: warren end-to-end test payload\n", name, version)
	os.WriteFile(filepath.Join(pkg, "DEBIAN", "control"), []byte(control), 0o644)
	os.WriteFile(filepath.Join(pkg, "usr", "share", name, "payload.bin"), randomPayload(size, seed), 0o644)
	deb := filepath.Join(repo.root, "pool", "main", name+"_"+version+"_all.deb")
	run(t, base, nil, "dpkg-deb", "--root-owner-group", "-Znone", "--build", pkg, deb)
	b, _ := os.ReadFile(deb)
	sum := sha256.Sum256(b)
	repo.debs["pool/main/"+name+"_"+version+"_all.deb"] = hex.EncodeToString(sum[:])
}

// sign writes the binary indexes and a Release for what the pool holds,
// and signs it with the key in $GNUPGHOME (InRelease, Release.gpg).
func (repo aptRepo) sign(t testing.TB, base string) {
	t.Helper()
	arch := strings.TrimSpace(run(t, base, nil, "dpkg", "--print-architecture"))
	bin := filepath.Join(repo.root, "dists", "stable", "main", "binary-"+arch)
	os.MkdirAll(bin, 0o755)
	os.Remove(filepath.Join(bin, "Packages.gz"))
	os.Remove(filepath.Join(bin, "Packages.xz"))
	pkgs := run(t, repo.root, nil, "apt-ftparchive", "packages", "pool")
	os.WriteFile(filepath.Join(bin, "Packages"), []byte(pkgs), 0o644)
	run(t, bin, nil, "sh", "-c", "gzip -9nk Packages && xz -k Packages")
	rel := run(t, repo.root, nil, "apt-ftparchive",
		"-o", "APT::FTPArchive::Release::Suite=stable", "-o", "APT::FTPArchive::Release::Codename=stable",
		"-o", "APT::FTPArchive::Release::Architectures="+arch, "-o", "APT::FTPArchive::Release::Components=main",
		"release", "dists/stable")
	os.WriteFile(filepath.Join(repo.root, "dists", "stable", "Release"), []byte(rel), 0o644)
	dists := filepath.Join(repo.root, "dists", "stable")
	run(t, dists, nil, "gpg", "--batch", "--yes", "--clearsign", "-o", "InRelease", "Release")
	run(t, dists, nil, "gpg", "--batch", "--yes", "--armor", "--detach-sign", "-o", "Release.gpg", "Release")
}

// randomPayload is incompressible and the same for a given seed.
func randomPayload(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 42))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.UintN(256))
	}
	return b
}

// aptClient is apt-get with private state: the system's apt is never touched.
type aptClient struct {
	t    testing.TB
	dir  string
	env  []string
	opts []string
	// in, when set, is the network namespace apt-get runs in.
	in string
}

func newAptClient(t testing.TB, base, name, sourcesLine, proxyURL string) *aptClient {
	dir := filepath.Join(base, name)
	for _, d := range []string{"apt.conf.d", "preferences.d", "trusted.gpg.d", "state/lists/partial", "cache/archives/partial", "log", "dl"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	conf := filepath.Join(dir, "apt.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("Dir::Etc::Main \"/dev/null\";\nDir::Etc::Parts %q;\n", filepath.Join(dir, "apt.conf.d"))), 0o644)
	os.WriteFile(filepath.Join(dir, "sources.list"), []byte(sourcesLine+"\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "status"), nil, 0o644)
	c := &aptClient{t: t, dir: dir, env: []string{"APT_CONFIG=" + conf}}
	c.opts = []string{
		"-o", "Dir::Etc::SourceList=" + filepath.Join(dir, "sources.list"),
		"-o", "Dir::Etc::SourceParts=-",
		"-o", "Dir::Etc::Preferences=" + filepath.Join(dir, "preferences"),
		"-o", "Dir::Etc::PreferencesParts=" + filepath.Join(dir, "preferences.d"),
		"-o", "Dir::Etc::Trusted=" + filepath.Join(dir, "trusted.gpg"),
		"-o", "Dir::Etc::TrustedParts=" + filepath.Join(dir, "trusted.gpg.d"),
		"-o", "Dir::State=" + filepath.Join(dir, "state"),
		"-o", "Dir::State::status=" + filepath.Join(dir, "status"),
		"-o", "Dir::Cache=" + filepath.Join(dir, "cache"),
		"-o", "Dir::Log=" + filepath.Join(dir, "log"),
		"-o", "APT::Sandbox::User=root",
		"-o", "Acquire::Languages=none",
		"-o", "Acquire::Retries=0",
	}
	if proxyURL != "" {
		c.opts = append(c.opts, "-o", "Acquire::http::Proxy="+proxyURL)
	}
	return c
}

func (c *aptClient) run(args ...string) string {
	c.t.Helper()
	out, err := c.try(args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// try runs apt-get and returns its error with its output; any goroutine
// may call it.
func (c *aptClient) try(args ...string) (string, error) {
	name, full := "apt-get", append(slices.Clone(c.opts), args...)
	if c.in != "" {
		name, full = "ip", append([]string{"netns", "exec", c.in, "apt-get"}, full...)
	}
	cmd := exec.Command(name, full...)
	cmd.Dir = filepath.Join(c.dir, "dl")
	cmd.Env = append(os.Environ(), c.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("apt-get %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// TestAptThroughWarren drives the real apt-get through the real warren
// binary: the second client, with fresh state, gets every .deb from the
// cache and upstream sees no second GET of any .deb.
func TestAptThroughWarren(t *testing.T) {
	requireTools(t, "apt-get", "apt-ftparchive", "dpkg-deb", "gpg", "xz", "gzip")
	base := t.TempDir()
	repo := buildAptRepo(t, base)
	up := serveDir(t, repo.root)
	proxyURL, _, logs := startWarren(t, "--cache-dir", filepath.Join(base, "cache"), "--log-level", "debug")
	sources := fmt.Sprintf("deb [signed-by=%[1]s] %[2]s/ stable main\ndeb-src [signed-by=%[1]s] %[2]s/ stable main", repo.keyring, up.URL)

	// First machine: update, then download both packages.
	first := newAptClient(t, base, "client1", sources, proxyURL)
	first.run("update")
	first.run("download", "warren-e2e-big", "warren-e2e-small")
	first.run("source", "--download-only", "warren-e2e-src")
	for pool, sum := range repo.debs {
		if got := sha256File(t, filepath.Join(first.dir, "dl", filepath.Base(pool))); got != sum {
			t.Fatalf("client1 %s: sha256 %s, want %s", pool, got, sum)
		}
		if n := up.count("/" + pool); n != 1 {
			t.Fatalf("after client1, upstream GETs of %s = %d, want 1", pool, n)
		}
	}

	// Second machine, fresh state: update, install (download-only) and download.
	second := newAptClient(t, base, "client2", sources, proxyURL)
	second.run("update")
	second.run("install", "-y", "--download-only", "warren-e2e-big")
	second.run("download", "warren-e2e-small")
	second.run("source", "--download-only", "warren-e2e-src")
	checks := map[string]string{
		filepath.Join(second.dir, "cache", "archives", "warren-e2e-big_1.0_all.deb"): repo.debs["pool/main/warren-e2e-big_1.0_all.deb"],
		filepath.Join(second.dir, "dl", "warren-e2e-small_1.0_all.deb"):              repo.debs["pool/main/warren-e2e-small_1.0_all.deb"],
	}
	for path, sum := range checks {
		if got := sha256File(t, path); got != sum {
			t.Fatalf("client2 %s: sha256 %s, want %s", path, got, sum)
		}
	}
	for pool := range repo.debs {
		if n := up.count("/" + pool); n != 1 {
			t.Fatalf("after client2, upstream GETs of %s = %d, want still 1 (a cache hit)", pool, n)
		}
		// Served by the digest learnt from Packages, not merely by URL.
		hit := fmt.Sprintf("url=%s/%s kind=package hash_known=true outcome=hit", up.URL, pool)
		if !strings.Contains(logs.String(), hit) {
			t.Fatalf("warren's log has no line with %q", hit)
		}
	}
	// apt-get source: the .dsc and tarball too, by the digests Sources gives.
	for _, pool := range repo.sources {
		want := sha256File(t, filepath.Join(repo.root, pool))
		for _, c := range []*aptClient{first, second} {
			if got := sha256File(t, filepath.Join(c.dir, "dl", filepath.Base(pool))); got != want {
				t.Fatalf("%s %s: sha256 %s, want %s", filepath.Base(c.dir), pool, got, want)
			}
		}
		if n := up.count("/" + pool); n != 1 {
			t.Fatalf("after client2, upstream GETs of %s = %d, want 1", pool, n)
		}
		hit := fmt.Sprintf("url=%s/%s kind=source hash_known=true outcome=hit", up.URL, pool)
		if !strings.Contains(logs.String(), hit) {
			t.Fatalf("warren's log has no line with %q", hit)
		}
	}
}

// TestAptWithoutWarrenBaseline checks the test's own repository with apt
// and no proxy, so a failure above is warren's and not the fixture's.
func TestAptWithoutWarrenBaseline(t *testing.T) {
	requireTools(t, "apt-get", "apt-ftparchive", "dpkg-deb", "gpg", "xz", "gzip")
	base := t.TempDir()
	repo := buildAptRepo(t, base)
	up := serveDir(t, repo.root)
	c := newAptClient(t, base, "direct", fmt.Sprintf("deb [signed-by=%s] %s/ stable main", repo.keyring, up.URL), "")
	c.run("update")
	c.run("download", "warren-e2e-small")
	if n := up.count("/pool/main/warren-e2e-small_1.0_all.deb"); n != 1 {
		t.Fatalf("direct apt-get download: upstream GETs %d, want 1", n)
	}
}
