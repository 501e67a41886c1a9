package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// archiveDeb is one package of the real-shaped archive.
type archiveDeb struct {
	name, version string
	size          int
	host          int    // 0: the main mirror, 1: the security host
	suite         string // under dists/
	pool          string // its Filename, literally as Packages lists it
	sha256        string
}

// realShapedDebs are package names with '+', '~' and an epoch's ':' in the
// file name (as a third-party archive may have), in three suites on two
// hosts, of sizes on both sides of share_min_size.
func realShapedDebs() []*archiveDeb {
	return []*archiveDeb{
		{name: "libwarren++6", version: "12.2.0-14", size: 300 << 10, suite: "stable"},
		{name: "warren-tilde", version: "1.9.13p3-1~deb12u1", size: 8 << 10, suite: "stable"},
		{name: "warren-epoch", version: "1:5.4.1-0.2", size: 64 << 10, suite: "stable"},
		{name: "warren-plain", version: "2.10-3", size: 2 << 20, suite: "stable"},
		{name: "warren-upd", version: "3.0.0-1+deb12u1", size: 16 << 10, suite: "stable-updates"},
		{name: "libwarren-ssl3", version: "3.0.15-1~deb12u1+deb12u2", size: 512 << 10, host: 1, suite: "stable-security"},
		{name: "warren-sec+x", version: "1.0-1+deb12u1", size: 4 << 10, host: 1, suite: "stable-security"},
	}
}

// buildArchive lays out two hosts as Debian's: the main mirror with stable
// and stable-updates, the security host with stable-security, holding debs;
// Release lists MD5Sum and SHA256 with Acquire-By-Hash and by-hash copies of
// every index; all of it signed.
func buildArchive(t testing.TB, base string, debs []*archiveDeb) (roots [2]string, keyring string) {
	t.Helper()
	roots = [2]string{filepath.Join(base, "mirror"), filepath.Join(base, "security")}
	keyring = filepath.Join(base, "archive-keyring.gpg")
	arch := strings.TrimSpace(run(t, base, nil, "dpkg", "--print-architecture"))
	for i, d := range debs {
		pkg := filepath.Join(base, "build", d.name)
		os.MkdirAll(filepath.Join(pkg, "DEBIAN"), 0o755)
		os.MkdirAll(filepath.Join(pkg, "usr", "share", d.name), 0o755)
		control := fmt.Sprintf("Package: %s\nVersion: %s\nArchitecture: all\nMaintainer: warren tests <tests@warren.invalid>\nDescription: real-shaped archive payload\n", d.name, d.version)
		os.WriteFile(filepath.Join(pkg, "DEBIAN", "control"), []byte(control), 0o644)
		os.WriteFile(filepath.Join(pkg, "usr", "share", d.name, "payload.bin"), randomPayload(d.size, uint64(100+i)), 0o644)
		dir := "pool/main/" + d.name[:1]
		if strings.HasPrefix(d.name, "lib") {
			dir = "pool/main/" + d.name[:4]
		}
		if d.host == 1 {
			dir = "pool/updates/main/" + d.name[:1]
		}
		// Debian drops the epoch from file names; a third-party archive
		// may keep it, so this one does: apt then asks for %3a.
		d.pool = fmt.Sprintf("%s/%s/%s_%s_all.deb", dir, d.name, d.name, d.version)
		out := filepath.Join(roots[d.host], d.pool)
		os.MkdirAll(filepath.Dir(out), 0o755)
		run(t, base, nil, "dpkg-deb", "--root-owner-group", "-Znone", "--build", pkg, out)
		b, _ := os.ReadFile(out)
		sum := sha256.Sum256(b)
		d.sha256 = hex.EncodeToString(sum[:])
	}
	gnupg := filepath.Join(base, "gnupg")
	os.MkdirAll(gnupg, 0o700)
	env := []string{"GNUPGHOME=" + gnupg}
	t.Setenv("GNUPGHOME", gnupg)
	t.Cleanup(func() { run(t, base, nil, "gpgconf", "--kill", "gpg-agent") })
	run(t, base, env, "gpg", "--batch", "--passphrase", "", "--quick-gen-key", "warren archive <archive@warren.invalid>", "ed25519", "sign", "never")
	run(t, base, env, "gpg", "--batch", "--yes", "--output", keyring, "--export", "archive@warren.invalid")
	type hostSuite struct {
		host  int
		suite string
	}
	var suites []hostSuite
	for _, d := range debs {
		if hs := (hostSuite{d.host, d.suite}); !slices.Contains(suites, hs) {
			suites = append(suites, hs)
		}
	}
	for _, s := range suites {
		root := roots[s.host]
		bin := filepath.Join(root, "dists", s.suite, "main", "binary-"+arch)
		os.MkdirAll(bin, 0o755)
		// Only this suite's packages: a scratch tree of links.
		scratch := filepath.Join(base, "scan-"+s.suite)
		for _, d := range debs {
			if d.suite == s.suite {
				os.MkdirAll(filepath.Join(scratch, filepath.Dir(d.pool)), 0o755)
				os.Symlink(filepath.Join(root, d.pool), filepath.Join(scratch, d.pool))
			}
		}
		pkgs := run(t, scratch, nil, "apt-ftparchive", "packages", "pool")
		os.WriteFile(filepath.Join(bin, "Packages"), []byte(pkgs), 0o644)
		run(t, bin, nil, "sh", "-c", "gzip -9nk Packages && xz -k Packages")
		// Debian's Release lists MD5Sum and SHA256 only (apt takes the
		// strongest listed, by hash), and not the by-hash copies.
		rel := run(t, root, nil, "apt-ftparchive", "-o", "APT::FTPArchive::SHA512=false", "-o", "APT::FTPArchive::SHA1=false",
			"-o", "APT::FTPArchive::Release::Suite="+s.suite, "-o", "APT::FTPArchive::Release::Codename="+s.suite,
			"-o", "APT::FTPArchive::Release::Architectures="+arch, "-o", "APT::FTPArchive::Release::Components=main",
			"release", "dists/"+s.suite)
		rel = strings.Replace(rel, "Date:", "Acquire-By-Hash: yes\nDate:", 1)
		dists := filepath.Join(root, "dists", s.suite)
		os.WriteFile(filepath.Join(dists, "Release"), []byte(rel), 0o644)
		run(t, dists, env, "gpg", "--batch", "--yes", "--clearsign", "-o", "InRelease", "Release")
		// by-hash copies of every index, as the real archive has.
		byHash := filepath.Join(bin, "by-hash", "SHA256")
		os.MkdirAll(byHash, 0o755)
		for _, f := range []string{"Packages", "Packages.gz", "Packages.xz"} {
			b, _ := os.ReadFile(filepath.Join(bin, f))
			sum := sha256.Sum256(b)
			os.WriteFile(filepath.Join(byHash, hex.EncodeToString(sum[:])), b, 0o644)
		}
	}
	return roots, keyring
}

// TestAptRealShapedArchive: a second fresh apt client gets every .deb of a
// real-shaped archive from the cache, each one served by the digest that
// Packages gave (checked per file), and upstream sees each .deb once.
func TestAptRealShapedArchive(t *testing.T) {
	requireTools(t, "apt-get", "apt-ftparchive", "dpkg-deb", "gpg", "xz", "gzip")
	base := t.TempDir()
	debs := realShapedDebs()
	roots, keyring := buildArchive(t, base, debs)
	ups := [2]*countingServer{serveDir(t, roots[0]), serveDir(t, roots[1])}
	proxyURL, _, logs := startWarren(t, "--cache-dir", filepath.Join(base, "cache"))
	sources := fmt.Sprintf("deb [signed-by=%[1]s] %[2]s/ stable main\ndeb [signed-by=%[1]s] %[2]s/ stable-updates main\ndeb [signed-by=%[1]s] %[3]s/ stable-security main",
		keyring, ups[0].URL, ups[1].URL)
	var names []string
	for _, d := range debs {
		names = append(names, d.name)
	}
	for i, name := range []string{"client1", "client2"} {
		c := newAptClient(t, base, name, sources, proxyURL)
		c.run("update")
		c.run(append([]string{"install", "-y", "--download-only"}, names...)...)
		for _, d := range debs {
			got := sha256File(t, filepath.Join(c.dir, "cache", "archives", aptArchiveName(d)))
			if got != d.sha256 {
				t.Fatalf("%s %s: sha256 %s, want %s", name, d.pool, got, d.sha256)
			}
			if n := ups[d.host].count("/" + d.pool); n != 1 {
				t.Fatalf("after %s, upstream GETs of %s = %d, want 1", name, d.pool, n)
			}
			if i == 1 {
				// apt escapes '+' and '~' (versions differ on an epoch's ':').
				if !hasHitLine(logs.String(), ups[d.host].URL+"/"+d.pool, "package") {
					t.Errorf("%s: warren's log has no hash-known hit for it", d.pool)
				}
			}
		}
	}
	// apt took the indexes by hash, and warren learnt them that way.
	for _, up := range ups {
		up.mu.Lock()
		byHash := 0
		for p := range up.gets {
			if strings.Contains(p, "/by-hash/SHA256/") {
				byHash++
			}
		}
		up.mu.Unlock()
		if byHash == 0 {
			t.Errorf("%s: apt fetched no index by hash; the fixture does not exercise by-hash", up.URL)
		}
	}
}

// aptArchiveName is the name apt gives a downloaded package in
// Dir::Cache::archives: the epoch's ':' becomes %3a.
func aptArchiveName(d *archiveDeb) string {
	return fmt.Sprintf("%s_%s_all.deb", d.name, strings.Replace(d.version, ":", "%3a", 1))
}

// BenchmarkColdAptInstall is a cold `apt-get install --download-only` of 100
// small packages (names with '+' and '~'): apt-get update then install,
// straight from the repository and through a fresh warren with peering on
// and no peer up. Goal: warren's time within 1.2 times the direct one.
func BenchmarkColdAptInstall(b *testing.B) {
	requireTools(b, "apt-get", "apt-ftparchive", "dpkg-deb", "gpg", "xz", "gzip")
	base := b.TempDir()
	var debs []*archiveDeb
	var names []string
	for i := range 100 {
		d := &archiveDeb{name: fmt.Sprintf("libsmall%d++", i), version: fmt.Sprintf("1.%d-1~deb12u1+b1", i), size: 2<<10 + i*97, suite: "stable"}
		debs = append(debs, d)
		names = append(names, d.name)
	}
	roots, keyring := buildArchive(b, base, debs)
	up := serveDir(b, roots[0])
	sources := fmt.Sprintf("deb [signed-by=%s] %s/ stable main", keyring, up.URL)
	// Each round is cold on both sides: fresh apt state, a fresh warren
	// with a fresh cache (peering on, as by default, but nobody answers:
	// the static peer is a port where nothing listens). The order
	// alternates; the figures are the medians of the rounds.
	const rounds = 7
	var direct, warren [2][]float64 // update, install: seconds per round
	run := func(via, name string) [2]float64 {
		c := newAptClient(b, base, name, sources, via)
		start := time.Now()
		c.run("update")
		mid := time.Now()
		c.run(append([]string{"install", "-y", "--download-only"}, names...)...)
		return [2]float64{mid.Sub(start).Seconds(), time.Since(mid).Seconds()}
	}
	for b.Loop() {
		for r := range rounds {
			proxyURL, cmd, _ := startWarren(b, "--cache-dir", filepath.Join(base, fmt.Sprintf("cache%d", r)), "--discovery", "static", "--peer", freeLoopbackPort(b))
			var d, w [2]float64
			if r%2 == 0 {
				d, w = run("", fmt.Sprintf("direct%d", r)), run(proxyURL, fmt.Sprintf("warren%d", r))
			} else {
				w, d = run(proxyURL, fmt.Sprintf("warren%d", r)), run("", fmt.Sprintf("direct%d", r))
			}
			cmd.Process.Signal(os.Interrupt)
			cmd.Wait()
			for i := range 2 {
				direct[i], warren[i] = append(direct[i], d[i]), append(warren[i], w[i])
			}
		}
	}
	median := func(v []float64) float64 { v = slices.Clone(v); slices.Sort(v); return v[len(v)/2] }
	b.ReportMetric(median(direct[1]), "s-install-direct")
	b.ReportMetric(median(warren[1]), "s-install-warren")
	b.ReportMetric(median(warren[1])/median(direct[1]), "ratio-install")
	b.ReportMetric(median(warren[0])/median(direct[0]), "ratio-update")
}
