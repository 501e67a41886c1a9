package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// realSizePackages writes a Packages file shaped like Debian's main
// (64,000 paragraphs with the usual fields and free-text descriptions, some
// 45 MB) and its xz form (about 9 MB), and returns the .xz path.
func realSizePackages(b *testing.B, dir string) string {
	b.Helper()
	plain := filepath.Join(dir, "Packages")
	if err := os.WriteFile(plain, debianShapedPackages(64000), 0o644); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command("xz", "-6", "-k", "-T1", plain).CombinedOutput(); err != nil {
		b.Fatalf("xz: %v %s", err, out)
	}
	return plain + ".xz"
}

// debianShapedPackages is a Packages file of n paragraphs shaped like
// Debian's (the usual fields, free-text descriptions), the same every time.
func debianShapedPackages(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields("the a of and to in is for with on library tool files data support package this that runtime development server client module plugin documentation python perl rust go java shared utilities interface network system")
	var buf bytes.Buffer
	for i := range n {
		name := fmt.Sprintf("pkg%d-%s", i, words[r.IntN(len(words))])
		ver := fmt.Sprintf("%d.%d.%d-%d+deb12u%d", r.IntN(9), r.IntN(30), r.IntN(99), r.IntN(5), r.IntN(3))
		var sum [32]byte
		for j := range sum {
			sum[j] = byte(r.Uint32())
		}
		fmt.Fprintf(&buf, "Package: %s\nSource: %s\nVersion: %s\nInstalled-Size: %d\nMaintainer: Debian Maintainers <maint%d@lists.debian.org>\nArchitecture: amd64\nDepends: libc6 (>= 2.34), lib%s%d (>= %s)\nDescription: %s\n",
			name, name, ver, r.IntN(100000), r.IntN(500), words[r.IntN(len(words))], r.IntN(9), ver, words[r.IntN(len(words))])
		for range 3 + r.IntN(5) {
			buf.WriteString(" ")
			for range 8 + r.IntN(6) {
				buf.WriteString(words[r.IntN(len(words))] + " ")
			}
			buf.WriteString("\n")
		}
		fmt.Fprintf(&buf, "Homepage: https://example.org/%s\nSection: misc\nPriority: optional\nFilename: pool/main/%c/%s/%s_%s_amd64.deb\nSize: %d\nMD5sum: %x\nSHA256: %x\n\n",
			name, name[0], name, name, ver, 1000+r.IntN(5<<20), sum[:16], sum)
	}
	return buf.Bytes()
}

// archiveShaped serves what apt update fetches from a Debian-shaped
// archive, from dir: three suites (bookworm with a real-size
// Packages.xz, bookworm-updates and bookworm-security with smaller
// ones), each InRelease listing its Packages.xz among a thousand other
// index files (every architecture's and component's, as Debian's do). It
// returns the server and the paths apt asks for, InReleases first.
func archiveShaped(b *testing.B, dir string) (*httptest.Server, []string) {
	b.Helper()
	xzPath := realSizePackages(b, dir)
	big, err := os.ReadFile(xzPath)
	if err != nil {
		b.Fatal(err)
	}
	files := map[string][]byte{}
	var inReleases, packages []string
	for _, suite := range []struct {
		name string
		xz   []byte
	}{{"bookworm", big}, {"bookworm-updates", smallPackagesXZ(b, dir, "updates", 120)}, {"bookworm-security", smallPackagesXZ(b, dir, "security", 3000)}} {
		base := "/debian/dists/" + suite.name
		sum := sha256.Sum256(suite.xz)
		var rel strings.Builder
		fmt.Fprintf(&rel, "Origin: Debian\nSuite: %s\nCodename: %s\nSHA256:\n %x %d main/binary-amd64/Packages.xz\n", suite.name, suite.name, sum, len(suite.xz))
		for _, comp := range []string{"main", "contrib", "non-free", "non-free-firmware"} {
			for _, arch := range []string{"all", "amd64", "arm64", "armel", "armhf", "i386", "mips64el", "mipsel", "ppc64el", "s390x"} {
				for _, f := range []string{"Packages", "Packages.gz", "Packages.xz", "Release", "Contents-" + arch + ".gz"} {
					if comp == "main" && arch == "amd64" && f == "Packages.xz" {
						continue
					}
					h := sha256.Sum256([]byte(suite.name + comp + arch + f))
					fmt.Fprintf(&rel, " %x %d %s/binary-%s/%s\n", h, 1000+len(f)*int(arch[0]), comp, arch, f)
				}
				for _, f := range []string{"Translation-en", "Translation-en.bz2", "Translation-de.bz2", "Translation-fr.bz2"} {
					h := sha256.Sum256([]byte(suite.name + comp + arch + "i18n" + f))
					fmt.Fprintf(&rel, " %x %d %s/i18n/%s\n", h, 5000+len(f), comp, f)
				}
			}
		}
		files[base+"/InRelease"] = []byte(rel.String())
		files[base+"/main/binary-amd64/Packages.xz"] = suite.xz
		inReleases = append(inReleases, base+"/InRelease")
		packages = append(packages, base+"/main/binary-amd64/Packages.xz")
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	}))
	return up, append(inReleases, packages...)
}

// smallPackagesXZ is a Packages.xz of n entries, named name.
func smallPackagesXZ(b *testing.B, dir, name string, n int) []byte {
	b.Helper()
	var buf bytes.Buffer
	for i := range n {
		fmt.Fprintf(&buf, "Package: %s%d\nVersion: 1.%d+deb12u1\nArchitecture: amd64\nDescription: a %s update\nFilename: pool/main/u/%s%d/%s%d_1.%d+deb12u1_amd64.deb\nSize: %d\nSHA256: %x\n\n",
			name, i, i, name, name, i, name, i, i, 1000+i, sha256.Sum256([]byte(fmt.Sprint(name, i))))
	}
	p := filepath.Join(dir, name+"-Packages")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command("xz", "-6", "-k", "-T1", p).CombinedOutput(); err != nil {
		b.Fatalf("xz: %v %s", err, out)
	}
	xz, err := os.ReadFile(p + ".xz")
	if err != nil {
		b.Fatal(err)
	}
	return xz
}

// reportPeakRSS reports a process's peak resident memory (VmHWM) as name.
func reportPeakRSS(b *testing.B, pid int, name string) float64 {
	b.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			b.ReportMetric(kb/1024, name)
			return kb / 1024
		}
	}
	b.Fatalf("no VmHWM for %d", pid)
	return 0
}

// BenchmarkSiteLearning is the real archive's learning at a site: a hub
// and a node behind it, the node running apt update through the hub (the
// three suites' InReleases, then their Packages.xz at once, as apt asks
// for them), the hub learning what it passes on too, and reports each
// daemon's peak RSS (goal: at most 48 MB each). Each daemon runs with the
// memory_limit it ships with.
func BenchmarkSiteLearning(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("reads /proc")
	}
	requireTools(b, "xz")
	up, paths := archiveShaped(b, b.TempDir())
	defer up.Close()
	hubURL, hubCmd, hubLogs := startWarren(b, "--role", "hub", "--hub-mode", "fetch", "--cache-dir", b.TempDir(), "--log-level", "debug")
	nodeURL, nodeCmd, nodeLogs := startWarren(b, "--cache-dir", b.TempDir(), "--hub", hubURL, "--log-level", "debug")
	pu, _ := url.Parse(nodeURL)
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}}
	defer client.CloseIdleConnections()
	get := func(p string) {
		resp, err := client.Get(up.URL + p)
		if err != nil {
			b.Error(err)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for b.Loop() {
		for _, group := range [][]string{paths[:3], paths[3:]} {
			var wg sync.WaitGroup
			for _, p := range group {
				wg.Add(1)
				go func() { defer wg.Done(); get(p) }()
			}
			wg.Wait()
		}
		for _, logs := range []*syncBuffer{hubLogs, nodeLogs} {
			logs.waitFor(b, "bookworm/main/binary-amd64/Packages.xz count=64000", 120*time.Second)
			logs.waitFor(b, "bookworm-security/main/binary-amd64/Packages.xz count=3000", 120*time.Second)
		}
	}
	reportPeakRSS(b, hubCmd.Process.Pid, "MB-hub-peak-RSS")
	reportPeakRSS(b, nodeCmd.Process.Pid, "MB-node-peak-RSS")
}

// BenchmarkIndexLearning has the real daemon learn a real-size Packages.xz
// and reports: the time from the first byte requested to the last fact
// recorded, as a ratio to `xz -dc` of the same file (goal: at most 2), and
// the daemon's peak RSS (goal: at most 48 MB).
func BenchmarkIndexLearning(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("reads /proc")
	}
	requireTools(b, "xz")
	dir := b.TempDir()
	if d := os.Getenv("WARREN_BENCH_KEEP"); d != "" {
		dir = d // keep the generated index for profiling
	}
	xzPath := realSizePackages(b, dir)
	xzBytes, _ := os.ReadFile(xzPath)
	sum := sha256.Sum256(xzBytes)
	release := fmt.Sprintf("Origin: Debian\nSuite: stable\nCodename: bookworm\nSHA256:\n %x %d main/binary-amd64/Packages.xz\n", sum, len(xzBytes))
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/debian/dists/bookworm/InRelease":
			io.WriteString(w, release)
		case "/debian/dists/bookworm/main/binary-amd64/Packages.xz":
			w.Header().Set("Content-Length", strconv.Itoa(len(xzBytes)))
			w.Write(xzBytes)
		default:
			http.NotFound(w, r)
		}
	}))
	defer up.Close()

	start := time.Now()
	if err := exec.Command("sh", "-c", "xz -dc "+xzPath+" > /dev/null").Run(); err != nil {
		b.Fatal(err)
	}
	xzTime := time.Since(start)

	proxyURL, cmd, logs := startWarren(b, "--cache-dir", b.TempDir(), "--log-level", "debug")
	pu, _ := url.Parse(proxyURL)
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}}
	defer client.CloseIdleConnections()
	get := func(p string) {
		resp, err := client.Get(up.URL + p)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	get("/debian/dists/bookworm/InRelease")
	logs.waitFor(b, "InRelease count=1", 10*time.Second)
	var took time.Duration
	for b.Loop() {
		start := time.Now()
		get("/debian/dists/bookworm/main/binary-amd64/Packages.xz")
		logs.waitFor(b, "Packages.xz count=64000", 60*time.Second)
		took = time.Since(start)
	}
	m := regexp.MustCompile(`Packages.xz count=64000 took=(\S+)`).FindStringSubmatch(logs.String())
	if m == nil {
		b.Fatal("no learn line in the log")
	}
	learn, _ := time.ParseDuration(m[1])
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmHWM:":
			b.ReportMetric(kb/1024, "MB-daemon-peak-RSS")
		case "RssAnon:":
			b.ReportMetric(kb/1024, "MB-anon-after")
		case "RssFile:":
			b.ReportMetric(kb/1024, "MB-file-after")
		}
	}
	if os.Getenv("WARREN_BENCH_SMAPS") != "" {
		sm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", cmd.Process.Pid))
		var name string
		for _, line := range strings.Split(string(sm), "\n") {
			f := strings.Fields(line)
			if len(f) >= 5 && strings.Contains(f[0], "-") {
				name = ""
				if len(f) >= 6 {
					name = f[5]
				}
			}
			if len(f) >= 2 && f[0] == "Rss:" && f[1] != "0" {
				b.Logf("%8s kB %s", f[1], name)
			}
		}
	}
	b.ReportMetric(float64(len(xzBytes))/(1<<20), "MB-xz")
	b.ReportMetric(xzTime.Seconds(), "s-xz-dc")
	b.ReportMetric(learn.Seconds(), "s-learn")
	b.ReportMetric(took.Seconds(), "s-fetch+learn")
	b.ReportMetric(took.Seconds()/xzTime.Seconds(), "ratio-to-xz-dc")
}
