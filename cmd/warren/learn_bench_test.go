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
