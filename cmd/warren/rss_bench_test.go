package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// BenchmarkDaemonRSS starts the real binary, makes it learn a repository
// and serve a 20 MB artifact (one fill, ten hits), then reports the
// daemon's resident memory: the idle-RSS goal is under 40 MB.
func BenchmarkDaemonRSS(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("reads /proc")
	}
	deb := bytes.Repeat([]byte("warren"), 20<<20/6)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(deb)))
		w.Write(deb)
	}))
	defer up.Close()
	proxyURL, cmd, _ := startWarren(b, "--cache-dir", b.TempDir(), "--log-level", "info")
	pu, _ := url.Parse(proxyURL)
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}}
	defer client.CloseIdleConnections()
	for b.Loop() {
		for range 11 {
			resp, err := client.Get(up.URL + "/pool/x.deb")
			if err != nil {
				b.Fatal(err)
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if n != int64(len(deb)) {
				b.Fatalf("got %d bytes", n)
			}
		}
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			b.ReportMetric(kb/1024, "MB-daemon-RSS")
		}
	}
}
