// Command warren is the LAN peer-to-peer caching proxy for package managers.
// main only wires: it reads the settings, builds the parts and runs them.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/warren-cache/warren/cachestore"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := newApp().RunContext(ctx, os.Args)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "warren:", err)
		// A usage mistake, or a cache this user may not use (files a run
		// as root left): for the admin to mend, a restart will not.
		var ue usageError
		var pe *cachestore.PermissionError
		if errors.As(err, &ue) || errors.As(err, &pe) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// usageError is a mistake in how warren was called or configured: exit 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }
