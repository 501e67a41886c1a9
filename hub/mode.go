package hub

import "fmt"

// Mode is what a hub fetches (hub_mode).
type Mode string

// The modes, after CapaInstaller's distribution server.
const (
	// Fetch fetches what nodes ask for.
	Fetch Mode = "fetch"
	// FetchAndPreload fetches what nodes ask for and what the preload
	// list names (the default).
	FetchAndPreload Mode = "fetch-and-preload"
	// Preload serves only what it holds; anything else is refused
	// without a byte over the WAN (sites whose WAN is open only at night).
	Preload Mode = "preload"
)

// DefaultMode is a hub's mode unless hub_mode says otherwise.
const DefaultMode = FetchAndPreload

// ParseMode reads hub_mode.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case Fetch, FetchAndPreload, Preload:
		return m, nil
	}
	return "", fmt.Errorf("hub_mode %q: want fetch, fetch-and-preload or preload", s)
}

// OnDemand says whether the hub fetches, on a node's request, what it
// does not hold.
func (m Mode) OnDemand() bool { return m != Preload }
