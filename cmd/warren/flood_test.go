package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A host outside allow_clients floods warren with 800 connections, each
// sending a 1 MB request head slowly, from a network namespace of the
// test's own (a veth pair to this one). warren refuses each on accept with
// 403 and reads none of it: its peak RSS stays under 100 MB, a client
// allowed in is served throughout, and RSS is back near idle after.
func TestOutsiderFlood(t *testing.T) {
	requireRoot(t, "a network namespace")
	requireTools(t, "ip")
	const conns = 800
	tag := fmt.Sprintf("wfl%d", os.Getpid()%100000)
	ns := tag + "-ns"
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	sh("ip", "netns", "add", ns)
	t.Cleanup(func() {
		exec.Command("ip", "link", "del", tag+"a").Run()
		exec.Command("ip", "netns", "del", ns).Run()
	})
	sh("ip", "link", "add", tag+"a", "type", "veth", "peer", "name", tag+"b")
	sh("ip", "link", "set", tag+"b", "netns", ns)
	sh("ip", "addr", "add", "10.231.7.1/30", "dev", tag+"a")
	sh("ip", "link", "set", tag+"a", "up")
	sh("ip", "-n", ns, "addr", "add", "10.231.7.2/30", "dev", tag+"b")
	sh("ip", "-n", ns, "link", "set", tag+"b", "up")
	sh("ip", "-n", ns, "link", "set", "lo", "up")

	// warren in this namespace, on the veth address; only loopback may use it.
	port := strings.TrimPrefix(freeLoopbackPort(t), "127.0.0.1:")
	u, cmd, logs := startWarrenAt(t, "10.231.7.1:"+port, "--cache-dir", t.TempDir(), "--allow-client", "127.0.0.0/8", "--allow-client", "10.231.7.1/32")
	pid := cmd.Process.Pid
	idle := rssKB(t, pid, "VmRSS")

	flood := exec.Command("ip", "netns", "exec", ns, os.Args[0])
	flood.Env = append(os.Environ(), "WARREN_FLOOD_TARGET=10.231.7.1:"+port, "WARREN_FLOOD_CONNS="+strconv.Itoa(conns))
	var out []byte
	done := make(chan error, 1)
	go func() {
		var err error
		out, err = flood.CombinedOutput()
		done <- err
	}()

	// An allowed client is served while the flood runs.
	client := &http.Client{Timeout: 10 * time.Second}
	served := 0
	for running := true; running; {
		resp, err := client.Get(u + "/_warren/stats")
		if err != nil {
			t.Fatalf("an allowed client was not served during the flood: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("an allowed client got %d during the flood", resp.StatusCode)
		}
		served++
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("flood helper: %v\n%s", err, out)
			}
			running = false
		case <-time.After(10 * time.Millisecond):
		}
	}
	report := string(out)
	t.Logf("%s", strings.TrimSpace(report))
	if !strings.Contains(report, fmt.Sprintf("flood: %d connections", conns)) || strings.Contains(report, " other=") && !strings.Contains(report, " other=0") {
		t.Fatalf("the flood was not refused as it should be (403 on accept, nothing read):\n%s", report)
	}
	peak := rssKB(t, pid, "VmHWM")
	// RSS after: the daemon gives back what the flood cost (the Go
	// scavenger returns freed pages within minutes; what matters is that
	// the flood cost little).
	after := rssKB(t, pid, "VmRSS")
	t.Logf("RSS idle %d KB, peak %d KB, after %d KB; %d requests of an allowed client served during the flood", idle, peak, after, served)
	if peak > 100<<10 {
		t.Fatalf("peak RSS %d KB under the flood, want under 100 MB", peak)
	}
	if after > idle+30<<10 {
		t.Fatalf("RSS %d KB after the flood, %d KB before", after, idle)
	}
	if !strings.Contains(logs.String(), "refused connection") {
		t.Fatalf("no log line says connections were refused")
	}
}

// rssKB reads a field (VmRSS, VmHWM) of /proc/pid/status, in KB.
func rssKB(t *testing.T, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// TestMain runs the test binary as the flooding host when
// TestOutsiderFlood starts it inside its namespace (WARREN_FLOOD_TARGET
// set), and as the tests otherwise.
func TestMain(m *testing.M) {
	if target := os.Getenv("WARREN_FLOOD_TARGET"); target != "" {
		os.Exit(floodHost(target))
	}
	os.Exit(m.Run())
}

// floodHost is the flooding host. Each connection sends a 1 MB request
// head in 16 KB pieces, 20 ms apart, and reads what comes back; it prints
// the tally and fails (exit 1) on any answer but a refusal.
func floodHost(target string) int {
	n, _ := strconv.Atoi(os.Getenv("WARREN_FLOOD_CONNS"))
	var forbidden, reset, other atomic.Int32
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", target, 10*time.Second)
			if err != nil {
				reset.Add(1) // refused or reset while connecting
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(60 * time.Second))
			go func() {
				io.WriteString(c, "GET http://deb.example/x.deb HTTP/1.1\r\nHost: deb.example\r\nX-Pad: ")
				piece := []byte(strings.Repeat("a", 16<<10))
				pace := time.NewTicker(20 * time.Millisecond) // the slow sender the test is about
				defer pace.Stop()
				for range 64 {
					if _, err := c.Write(piece); err != nil {
						return
					}
					<-pace.C
				}
			}()
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			switch {
			case err == nil && resp.StatusCode == http.StatusForbidden:
				forbidden.Add(1)
			case err != nil && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "reset")):
				reset.Add(1) // refused before the answer could be read
			default:
				other.Add(1)
				if err == nil {
					fmt.Printf("unexpected answer %d\n", resp.StatusCode)
				} else {
					fmt.Printf("unexpected error %v\n", err)
				}
			}
		}()
	}
	wg.Wait()
	fmt.Printf("flood: %d connections: 403=%d reset=%d other=%d\n", n, forbidden.Load(), reset.Load(), other.Load())
	if other.Load() > 0 || forbidden.Load()+reset.Load() != int32(n) {
		return 1
	}
	return 0
}
