package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A request head past 64 KiB is answered 431: a client cannot make the
// daemon hold an unbounded head in memory.
func TestHugeHeaderRefused(t *testing.T) {
	u, _, _ := startWarren(t, "--cache-dir", t.TempDir())
	c, err := net.Dial("tcp", strings.TrimPrefix(u, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	head := "GET http://deb.example/x.deb HTTP/1.1\r\nHost: deb.example\r\nX-Pad: " + strings.Repeat("a", 100<<10) + "\r\n\r\n"
	go c.Write([]byte(head)) // the server may answer before reading it all
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a 100 KB request head: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("100 KB request head: %d, want 431", resp.StatusCode)
	}
}

// A default warren is no way into its own machine: a service listening
// only on loopback is refused (403, with the reason), not fetched, cached
// and shared. --allow-upstream opens it.
func TestLoopbackUpstreamRefused(t *testing.T) {
	var asked atomic.Int32
	secret := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		io.WriteString(w, "loopback only")
	}))
	defer secret.Close()
	// An allow_upstream that does not cover loopback keeps the default refusal.
	u, _, _ := startWarren(t, "--cache-dir", t.TempDir(), "--allow-upstream", "192.0.2.0/24")
	resp, err := proxyClient(t, u).Get(secret.URL + "/secret")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "loopback") || asked.Load() != 0 {
		t.Fatalf("GET %s/secret through a default warren: %d %q, %d requests behind; want 403 naming loopback, 0", secret.URL, resp.StatusCode, body, asked.Load())
	}

	u, _, _ = startWarren(t, "--cache-dir", t.TempDir(), "--allow-upstream", "127.0.0.1")
	resp, err = proxyClient(t, u).Get(secret.URL + "/secret")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || asked.Load() != 1 {
		t.Fatalf("with --allow-upstream 127.0.0.1: %d, %d requests behind; want 200, 1", resp.StatusCode, asked.Load())
	}
}

// Exits say what went wrong in one line, with no stack trace: 2 for a
// mistake in how warren was called, 1 for a failure at run time.
func TestExitCodes(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	notADir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notADir, []byte("x"), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown flag", []string{"serve", "--no-such-flag"}, 2, "no-such-flag"},
		{"bad value", []string{"serve", "--allow-upstream", "nowhere"}, 2, "allow_upstream"},
		{"port in use", []string{"serve", "--config", "/dev/null", "--discovery", "off", "--listen", busy.Addr().String(), "--cache-dir", t.TempDir()}, 1, "address already in use"},
		{"cache dir is a file", []string{"cache", "stat", "--config", "/dev/null", "--cache-dir", notADir}, 1, notADir},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(warrenBinary(t), tc.args...)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != tc.code {
				t.Fatalf("warren %s: %v, want exit %d\n%s", strings.Join(tc.args, " "), err, tc.code, out)
			}
			last := lastLine(string(out))
			if !strings.HasPrefix(last, "warren: ") || !strings.Contains(last, tc.want) || strings.Contains(string(out), "goroutine ") {
				t.Fatalf("warren %s: want one line naming %q and no stack trace, got:\n%s", strings.Join(tc.args, " "), tc.want, out)
			}
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
