package mdns

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// inNetns runs f on a thread of its own in a new network namespace, set
// up by the shell commands given (run by ip's and sysctl's kind, from that
// thread, so inside it). The thread is never given back: it ends with f.
func inNetns(t *testing.T, setup []string, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread leaves with its namespace
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		for _, sh := range setup {
			if out, err := exec.Command("sh", "-c", sh).CombinedOutput(); err != nil {
				t.Errorf("%s: %v %s", sh, err, out)
				done <- err
				return
			}
		}
		done <- f()
	}()
	return <-done
}

// On a machine whose interfaces carry IPv4 but cannot join the IPv6 mDNS
// group (IPv6 off, or here links whose MTU is below IPv6's 1,280),
// browsing leaks no socket: zeroconf's resolver for both families kept
// the IPv4 one it opened when the IPv6 join failed, one a browse round.
func TestBrowseLeaksNoSocketOnAnIPv4OnlyMachine(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("WARREN_E2E") == "1" {
			t.Fatal("the mDNS socket leak test needs root (a network namespace): run `make test` as root")
		}
		t.Skip("SKIP: the mDNS socket leak test needs root (a network namespace)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("the mDNS socket leak test needs ip (iproute2): %v", err)
	}
	setup := []string{
		"ip link set lo up",
		"ip link add d0 type veth peer name d1",
		"ip link set d0 mtu 1200 up",
		"ip link set d1 mtu 1200 up",
		"ip addr add 10.9.0.1/24 dev d0",
	}
	err := inNetns(t, setup, func() error {
		cfg := Config{ID: "00112233445566778899aabbccddeeff", Port: 3142}
		before := openFDs(t)
		const rounds = 10
		for range rounds {
			if err := browseRound(t.Context(), cfg, 20*time.Millisecond, func(Found) {}); err != nil {
				t.Errorf("browse: %v", err)
				return err
			}
		}
		// zeroconf closes a round's sockets as its loop sees the round's
		// end, just after browseRound returns: wait for that, with a
		// deadline.
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for openFDs(t) > before {
			select {
			case <-ctx.Done():
				t.Errorf("%d descriptors open after %d browse rounds, %d before: a socket leaked each round", openFDs(t), rounds, before)
				return nil
			case <-tick.C:
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
