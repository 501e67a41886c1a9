package hub

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestTokens(t *testing.T) {
	tok := NewTokens([]string{"alpha", "", "beta"})
	for _, tt := range []struct {
		name   string
		header string
		value  string
		want   error
	}{
		{"none", "", "", ErrNoToken},
		{"bearer in Proxy-Authorization", "Proxy-Authorization", "Bearer beta", nil},
		{"bearer in Authorization", "Authorization", "bearer alpha", nil},
		{"wrong bearer", "Proxy-Authorization", "Bearer gamma", ErrBadToken},
		{"prefix of a token", "Proxy-Authorization", "Bearer alph", ErrBadToken},
		{"basic proxy credentials (apt)", "Proxy-Authorization", "Basic d2FycmVuOmFscGhh", nil}, // warren:alpha
		{"basic to the origin is not ours", "Authorization", "Basic d2FycmVuOmFscGhh", ErrNoToken},
		{"garbage", "Proxy-Authorization", "Basic !!!", ErrNoToken},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "http://x/", nil)
			if tt.header != "" {
				r.Header.Set(tt.header, tt.value)
			}
			if err := tok.Check(r); err != tt.want {
				t.Fatalf("Check = %v, want %v", err, tt.want)
			}
		})
	}
	if err := (Tokens{}).Check(httptest.NewRequest(http.MethodGet, "http://x/", nil)); err != nil {
		t.Fatalf("no tokens set: %v, want every request accepted", err)
	}
	// What proved the node goes; the origin's credential stays: a Basic
	// one, and a Bearer one that is no hub token (a private repository's).
	for _, tt := range []struct {
		auth string
		kept bool
	}{{"Basic abc", true}, {"Bearer an-origin-token", true}, {"Bearer alpha", false}} {
		h := http.Header{}
		h.Set("Proxy-Authorization", "Bearer alpha")
		h.Set("Authorization", tt.auth)
		tok.Strip(h)
		if h.Get("Proxy-Authorization") != "" || (h.Get("Authorization") != "") != tt.kept {
			t.Fatalf("Strip with Authorization %q left %v", tt.auth, h)
		}
	}
}

// A hub's settings may hold a token's SHA-256 instead of the token: the
// token is accepted, the sum itself is not.
func TestTokenSums(t *testing.T) {
	const token = "node-token-0123456789"
	sum := sha256.Sum256([]byte(token))
	given := SumPrefix + hex.EncodeToString(sum[:])
	toks := NewTokens([]string{given})
	sync := NewSyncTokens([]SyncToken{{Name: "s", Token: strings.ToUpper(given[:7]) + given[7:]}, {Name: "t", Token: given}})
	for _, tt := range []struct {
		bearer string
		ok     bool
	}{{token, true}, {given, false}, {"node-token-012345678", false}} {
		r := httptest.NewRequest(http.MethodGet, "http://x/", nil)
		r.Header.Set("Authorization", "Bearer "+tt.bearer)
		if err := toks.Check(r); (err == nil) != tt.ok {
			t.Errorf("hub token %q: %v, want accepted %v", tt.bearer, err, tt.ok)
		}
		if tok, err := sync.Check(r); (err == nil) != tt.ok || tt.ok && tok.Name != "t" {
			t.Errorf("sync token %q: %q %v, want accepted %v (as t: the prefix is lower-case)", tt.bearer, tok.Name, err, tt.ok)
		}
	}
}

func TestCheckTokens(t *testing.T) {
	sum := SumPrefix + strings.Repeat("0f", 32)
	for _, tt := range []struct {
		token          string
		accepted, sent string // "" where fine; else what the error says
	}{
		{"0123456789abcdef", "", ""},
		{"0123456789abcde", "15 characters; give at least 16 (make one with: openssl rand -hex 24)", "15 characters"},
		{"", "0 characters", "0 characters"},
		{sum, "", "give the token itself"},
		{SumPrefix + "0f", "64 characters", "give the token itself"},
		{SumPrefix + strings.Repeat("zz", 32), "in hex", "give the token itself"},
	} {
		for _, c := range []struct {
			name  string
			err   error
			wants string
		}{{"CheckAccepted", CheckAccepted(tt.token), tt.accepted}, {"CheckSent", CheckSent(tt.token), tt.sent}} {
			if (c.err == nil) != (c.wants == "") || c.err != nil && !strings.Contains(c.err.Error(), c.wants) {
				t.Errorf("%s(%q) = %v, want %q", c.name, tt.token, c.err, c.wants)
			}
		}
	}
}

func TestQueue(t *testing.T) {
	q := NewQueue(2, time.Minute)
	// Requesters that say nothing of their LAN (apt, an older node), all
	// from one /24: two stream, the rest wait.
	plain := Requester{LAN: "192.0.2.0/24"}
	a := q.Enter("k", plain)
	b := q.Enter("k", plain)
	c := q.Enter("k", plain)
	d := q.Enter("k", plain)
	if !a.OK || !b.OK || c.OK || c.Position != 1 || d.Position != 2 || c.Streaming != 2 {
		t.Fatalf("third and fourth requesters: %+v %+v", c, d)
	}
	if e := q.Enter("other", plain); !e.OK {
		t.Fatal("another artifact's transfer is queued behind this one")
	}
	// The first of another LAN streams whatever max_requesters says: its
	// peers cannot give it the artifact.
	first := q.Enter("k", Requester{LAN: "10.1.0.0/16", Peer: netip.MustParseAddrPort("10.1.0.7:3142"), Hints: true})
	if !first.OK {
		t.Fatalf("the first requester of a LAN was told to wait: %+v", first)
	}
	// A later node of that LAN is told which peer receives it, with no
	// place in the queue; one that takes no hints waits.
	next := q.Enter("k", Requester{LAN: "10.1.0.0/16", Peer: netip.MustParseAddrPort("10.1.0.8:3142"), Hints: true})
	if next.OK || len(next.Peers) != 1 || next.Peers[0] != netip.MustParseAddrPort("10.1.0.7:3142") || next.Position != 0 {
		t.Fatalf("a node of a LAN that receives it: %+v, want told 10.1.0.7:3142", next)
	}
	if other := q.Enter("k", Requester{LAN: "10.1.0.0/16"}); other.OK || len(other.Peers) != 0 || other.Position != 3 {
		t.Fatalf("a requester of that LAN that takes no hints: %+v, want number 3 to wait", other)
	}
	first.Leave()
	// Its streaming peer done while others still stream it, the LAN's
	// next node is told the peers that have it or receive it.
	if again := q.Enter("k", Requester{LAN: "10.1.0.0/16", Hints: true}); again.OK || len(again.Peers) != 2 {
		t.Fatalf("after the LAN's streaming peer left: %+v, want told its 2 peers", again)
	}
	a.Leave()
	a.Leave() // twice: counted once
	b.Leave()
	if e := q.Enter("k", plain); !e.OK {
		t.Fatal("a slot freed was not given to the next requester")
	}
	if q.Peak() != 3 {
		t.Fatalf("peak %d, want 3", q.Peak())
	}
	// k's first transfer ended as its last streamer left: the last
	// requester began another.
	if streaming, waiting := q.Totals(); streaming != 2 || waiting != 0 {
		t.Fatalf("totals: %d streaming, %d waiting; want 2 and 0", streaming, waiting)
	}
	ts, refused := q.Stats()
	if refused != 3 || len(ts) != 2 || q.Hinted() != 2 {
		t.Fatalf("stats: %+v refused %d hinted %d", ts, refused, q.Hinted())
	}
}

// The nodes of a LAN told which peers receive an artifact are named to
// the LAN's later nodes in their turn, each first in one answer before
// any is first in two: the artifact spreads as a tree, rather than the
// whole LAN asking the one streaming peer, whose upload slots answer most
// of it "busy".
func TestQueueHintsSpread(t *testing.T) {
	q := NewQueue(DefaultMaxRequesters, time.Minute)
	lan := "10.1.0.0/16"
	at := func(i int) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, 0, byte(i)}), 3142)
	}
	if a := q.Enter("k", Requester{LAN: lan, Peer: at(1), Hints: true}); !a.OK {
		t.Fatalf("the LAN's first requester: %+v", a)
	}
	var firsts []netip.AddrPort
	for i := 2; i <= 6; i++ {
		a := q.Enter("k", Requester{LAN: lan, Peer: at(i), Hints: true})
		if a.OK || len(a.Peers) == 0 || len(a.Peers) > maxHinted || slices.Contains(a.Peers, at(i)) {
			t.Fatalf("requester %s: %+v, want told up to %d peers, not itself", at(i), a, maxHinted)
		}
		firsts = append(firsts, a.Peers[0])
	}
	want := []netip.AddrPort{at(1), at(2), at(3), at(4), at(5)}
	if !slices.Equal(firsts, want) {
		t.Fatalf("named first: %v, want %v", firsts, want)
	}
	// A node that serves no peer is told of them (the last relay first),
	// and named to none: the next answer begins the second round.
	if a := q.Enter("k", Requester{LAN: lan, Hints: true}); len(a.Peers) == 0 || a.Peers[0] != at(6) {
		t.Fatalf("a node that serves none: %+v, want told %s first", a, at(6))
	}
	if a := q.Enter("k", Requester{LAN: lan, Peer: at(7), Hints: true}); a.Peers[0] != at(1) {
		t.Fatalf("the second round: %v, want %s first", a.Peers, at(1))
	}
}

// Once a transfer has ended, the peers of a LAN that received it are
// named to the LAN's later nodes that ask the hub (they take it from
// them, and the LAN's link carries it once), not to another LAN's, nor to
// a node that says the peers named failed it; a new transfer forgets them.
func TestQueueHolders(t *testing.T) {
	q := NewQueue(DefaultMaxRequesters, time.Minute)
	lan := "10.1.0.0/16"
	at := func(i int) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, 0, byte(i)}), 3142)
	}
	first := q.Enter("k", Requester{LAN: lan, Peer: at(1), Hints: true})
	if relay := q.Enter("k", Requester{LAN: lan, Peer: at(2), Hints: true}); len(relay.Peers) != 1 {
		t.Fatalf("the LAN's second node: %+v", relay)
	}
	// Stored while others still stream it: the transfer names them.
	got := q.Holders("k", Requester{LAN: lan, Peer: at(3), Hints: true})
	if len(got) != 2 || got[0] != at(2) || got[1] != at(1) {
		t.Fatalf("while the transfer goes on: %v, want %s (named least) then %s", got, at(2), at(1))
	}
	first.Leave()
	if got := q.Holders("k", Requester{LAN: lan, Peer: at(4), Hints: true}); len(got) != 3 || got[0] != at(3) {
		t.Fatalf("after the transfer: %v, want the last one told first", got)
	}
	if got := q.Holders("k", Requester{LAN: lan, Peer: at(5), Hints: true}); len(got) != 4 || got[0] != at(4) {
		t.Fatalf("the next node: %v, want the last one told first", got)
	}
	if got := q.Holders("k", Requester{LAN: "10.2.0.0/16", Peer: netip.MustParseAddrPort("10.2.0.1:3142"), Hints: true}); got != nil {
		t.Fatalf("another LAN was told %v", got)
	}
	r := httptest.NewRequest(http.MethodGet, "http://x/", nil)
	r.RemoteAddr = "10.1.0.5:40000"
	r.Header.Set(HeaderLAN, lan)
	r.Header.Set(HeaderPeer, at(5).String())
	r.Header.Set(HeaderHinted, "tried")
	if got := q.Holders("k", RequesterOf(r)); got != nil {
		t.Fatalf("a node the named peers failed was told %v again", got)
	}
	q.Enter("k", Requester{LAN: "10.2.0.0/16", Hints: true})
	if got := q.Holders("k", Requester{LAN: lan, Peer: at(6), Hints: true}); len(got) != 0 {
		t.Fatalf("fetched again, the hub still names %v", got)
	}
	// A LAN's first node served the stored artifact is named to the next.
	if got := q.Holders("stored", Requester{LAN: lan, Peer: at(7), Hints: true}); got != nil {
		t.Fatalf("the LAN's first requester of a stored artifact was told %v", got)
	}
	if got := q.Holders("stored", Requester{LAN: lan, Peer: at(8), Hints: true}); len(got) != 1 || got[0] != at(7) {
		t.Fatalf("the LAN's second requester of a stored artifact: %v, want %s", got, at(7))
	}
}

// What a request says of its LAN: declared (a node), behind a NAT, or
// not at all; a declared LAN no LAN has is not believed, nor a peer
// address that is not the request's own (another host of the LAN, one
// behind a NAT): the hub would name it to the LAN's next nodes.
func TestRequesterOf(t *testing.T) {
	tests := []struct {
		remote, lan, peer string
		want              Requester
	}{
		{"10.1.0.7:40000", "", "", Requester{LAN: "10.1.0.0/24"}},
		{"[fd00::7]:40000", "", "", Requester{LAN: "fd00::/64"}},
		{"10.1.0.7:40000", "10.1.0.0/16", "10.1.0.7:3142", Requester{LAN: "10.1.0.0/16", Peer: netip.MustParseAddrPort("10.1.0.7:3142"), Hints: true}},
		{"10.1.0.7:40000", "10.1.3.4/16", "", Requester{LAN: "10.1.0.0/16", Hints: true}},
		{"[::ffff:10.1.0.7]:40000", "10.1.0.0/16", "10.1.0.7:3142", Requester{LAN: "10.1.0.0/16", Peer: netip.MustParseAddrPort("10.1.0.7:3142"), Hints: true}},
		{"[fd00::7]:40000", "fd00::/64", "[fd00::7]:3142", Requester{LAN: "fd00::/64", Peer: netip.MustParseAddrPort("[fd00::7]:3142"), Hints: true}},
		{"203.0.113.9:40000", "192.168.1.0/24", "192.168.1.5:3142", Requester{LAN: "via 203.0.113.9", Hints: true}},
		{"203.0.113.9:40000", "192.168.7.0/24", "", Requester{LAN: "via 203.0.113.9", Hints: true}},
		{"10.1.0.7:40000", "10.1.0.0/16", "10.9.0.1:3142", Requester{LAN: "10.1.0.0/16", Hints: true}},
		{"10.1.0.66:40000", "10.1.0.0/24", "10.1.0.1:22", Requester{LAN: "10.1.0.0/24", Hints: true}},
		{"[fd00::66]:40000", "fd00::/64", "[fd00::1]:3142", Requester{LAN: "fd00::/64", Hints: true}},
		{"10.1.0.7:40000", "0.0.0.0/0", "10.1.0.7:3142", Requester{LAN: "10.1.0.0/24"}},
		{"10.1.0.7:40000", "10.0.0.0/8", "10.1.0.7:3142", Requester{LAN: "10.1.0.0/24"}},
		{"10.1.0.7:40000", "10.1.0.7/32", "10.1.0.7:3142", Requester{LAN: "10.1.0.0/24"}},
		{"[fd00::7]:40000", "fd99::/64", "", Requester{LAN: "via fd00::/64", Hints: true}},
		{"[fd00::8]:40000", "fd98::/64", "", Requester{LAN: "via fd00::/64", Hints: true}},
	}
	for _, tc := range tests {
		r := httptest.NewRequest(http.MethodGet, "http://x/", nil)
		r.RemoteAddr = tc.remote
		if tc.lan != "" {
			r.Header.Set(HeaderLAN, tc.lan)
		}
		if tc.peer != "" {
			r.Header.Set(HeaderPeer, tc.peer)
		}
		if got := RequesterOf(r); got != tc.want {
			t.Errorf("%s %q %q: %+v, want %+v", tc.remote, tc.lan, tc.peer, got, tc.want)
		}
	}
}

func TestBusyRoundTrip(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteBusy(rec, Busy{Position: 3, RetryAfter: 1500 * time.Millisecond, Done: 10, Total: 100, Requesters: 5})
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "2" || !strings.Contains(rec.Body.String(), `"position":3`) {
		t.Fatalf("busy answer: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	b := parseBusy("h", rec.Header())
	if b.Position != 3 || b.RetryAfter != 1500*time.Millisecond || b.Done != 10 || b.Total != 100 || len(b.Peers) != 0 {
		t.Fatalf("parsed %+v (Retry-After in whole seconds for other clients, the wait to the millisecond for nodes)", b)
	}
	// Only Retry-After (another hub, a proxy between): whole seconds.
	rec.Header().Del(HeaderRetryAfterMs)
	if b := parseBusy("h", rec.Header()); b.RetryAfter != 2*time.Second {
		t.Fatalf("without the milliseconds: %s, want 2s", b.RetryAfter)
	}
	// Milliseconds longer than Retry-After are not believed.
	rec.Header().Set(HeaderRetryAfterMs, "90000")
	if b := parseBusy("h", rec.Header()); b.RetryAfter != 2*time.Second {
		t.Fatalf("milliseconds beyond Retry-After: %s, want 2s", b.RetryAfter)
	}
	// Told which LAN peers receive it.
	rec = httptest.NewRecorder()
	peers := []netip.AddrPort{netip.MustParseAddrPort("10.1.0.7:3142"), netip.MustParseAddrPort("[fd00::7]:3142")}
	WriteBusy(rec, Busy{Peers: peers, RetryAfter: time.Second, Done: 10, Total: 100, Requesters: 1})
	if b := parseBusy("h", rec.Header()); !slices.Equal(b.Peers, peers) || !strings.Contains(rec.Body.String(), "10.1.0.7:3142") {
		t.Fatalf("told peers: %+v, body %s", b, rec.Body)
	}
	h := http.Header{}
	h.Set("Retry-After", "999999")
	if b := parseBusy("h", h); b.RetryAfter > 10*time.Minute {
		t.Fatalf("a hub can park a node for %s", b.RetryAfter)
	}
}

func TestParseURL(t *testing.T) {
	for in, want := range map[string]string{"http://hub": "http://hub:3142", "http://10.0.0.5:8080/": "http://10.0.0.5:8080",
		"https://hub": "https://hub:3142", "https://hub.example:3143": "https://hub.example:3143",
		"http://[fd00:77::2]": "http://[fd00:77::2]:3142", "https://[fd00:77::2]:3143/": "https://[fd00:77::2]:3143",
		"http://[fe80::1%25eth0]:3142": "http://[fe80::1%25eth0]:3142"} {
		u, err := ParseURL(in)
		if err != nil || u.String() != want {
			t.Errorf("ParseURL(%q) = %v, %v; want %s", in, u, err, want)
		}
	}
	for bad, why := range map[string]string{"ftp://hub": "want http", "hub:3142": "want http", "http://hub/x": "want http",
		"http://hub?x=1": "want http", "": "want http",
		"http://fd00:77::2:3142":         "goes in brackets",
		"https://warren:tok@fd00::2":     "goes in brackets",
		"http://[fe80::1%eth0]:3142":     "written %25: [fe80::1%25eth0]",
		"http://warren:s3cret@hub/x?y=1": "warren:***@hub"} {
		if _, err := ParseURL(bad); err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("ParseURL(%q): %v, want an error saying %q", bad, err, why)
		}
	}
}

// A hub that refuses connections is asked again at once (it may be back
// from a restart); one that times out is skipped for a while.
func TestParentDown(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	addr := srv.URL
	srv.Close() // refused from now on
	p, err := NewParent(ParentConfig{URL: addr})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		req, _ := http.NewRequest(http.MethodGet, "http://origin.example/x", nil)
		_, err := p.Do(req)
		var ue *UnreachableError
		if !errors.As(err, &ue) || errors.Is(err, errSkipped) {
			t.Fatalf("a refused connection: %v, want it asked (and unreachable) every time", err)
		}
	}
	if st := p.Status(); st.Reachable || st.Failures != 2 || st.LastError == "" {
		t.Fatalf("status after two refusals: %+v", st)
	}
	p.failed(context.DeadlineExceeded)
	req, _ := http.NewRequest(http.MethodGet, "http://origin.example/x", nil)
	if _, err := p.Do(req); !errors.Is(err, errSkipped) {
		t.Fatalf("a hub that timed out was asked again at once: %v", err)
	}
}

func TestWindow(t *testing.T) {
	day := time.Date(2026, 12, 3, 0, 0, 0, 0, time.Local)
	at := func(h, m int) time.Time { return day.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute) }
	for _, tt := range []struct {
		window string
		t      time.Time
		open   bool
		end    time.Time
	}{
		{"02:00-04:00", at(1, 59), false, time.Time{}},
		{"02:00-04:00", at(2, 0), true, at(4, 0)},
		{"02:00-04:00", at(3, 59), true, at(4, 0)},
		{"02:00-04:00", at(4, 0), false, time.Time{}},
		{"22:30-05:00", at(23, 0), true, at(29, 0)}, // past midnight: ends tomorrow
		{"22:30-05:00", at(4, 0), true, at(5, 0)},
		{"22:30-05:00", at(12, 0), false, time.Time{}},
		{"", at(3, 0), false, time.Time{}},
	} {
		w, err := ParseWindow(tt.window)
		if err != nil {
			t.Fatal(err)
		}
		open, end := w.Open(tt.t)
		if open != tt.open || !end.Equal(tt.end) {
			t.Errorf("%q at %s: open %v until %s, want %v until %s", tt.window, tt.t.Format("15:04"), open, end, tt.open, tt.end)
		}
		if w.String() != tt.window {
			t.Errorf("%q prints as %q", tt.window, w.String())
		}
	}
	for _, bad := range []string{"nightly", "25:00-02:00", "02:00-02:00", "2-4", "02:00"} {
		if _, err := ParseWindow(bad); err == nil {
			t.Errorf("ParseWindow(%q) accepted", bad)
		}
	}
}

func TestClosureAndState(t *testing.T) {
	deps := map[string][]string{"app": {"libfoo", "missing"}, "libfoo": {"libc"}, "libc": {}, "other": {}}
	got := Closure([]string{"app"}, func(n string) ([]string, bool) { d, ok := deps[n]; return d, ok })
	if strings.Join(got, ",") != "app,libc,libfoo" {
		t.Fatalf("Closure = %v", got)
	}
	dir := t.TempDir()
	st, err := LoadPreloadState(dir)
	if err != nil || len(st.Runs) != 0 {
		t.Fatalf("no state yet: %+v %v", st, err)
	}
	for i := range maxRuns + 5 {
		st.Runs = append(st.Runs, PreloadRun{Fetched: i})
	}
	st.Held["apt:app"] = true
	if err := st.Save(dir); err != nil {
		t.Fatal(err)
	}
	back, err := LoadPreloadState(dir)
	if err != nil || len(back.Runs) != maxRuns || back.Runs[maxRuns-1].Fetched != maxRuns+4 || !back.Held["apt:app"] {
		t.Fatalf("state after a save: %d runs, %v", len(back.Runs), err)
	}
	os.WriteFile(filepath.Join(dir, "preload.json"), []byte("{broken"), 0o640)
	if st, err := LoadPreloadState(dir); err == nil || st.Held == nil {
		t.Fatal("a damaged state file is not reported, or leaves no usable state")
	}
}

// A requester told to wait is told the transfer's expected end at its
// pace so far, within a second and the retry delay; an unknown pace gets
// a few seconds.
func TestEstimateWait(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, c := range []struct {
		name        string
		began       time.Time
		now         time.Time
		done, total int64
		want        time.Duration
	}{
		{"a quarter in 2s: 6s more", t0, t0.Add(2 * time.Second), 25, 100, 6 * time.Second},
		{"nearly done: the rest's time, under a second", t0, t0.Add(10 * time.Second), 95, 100, 10 * time.Second * 5 / 95},
		{"all but done: at least minWait", t0, t0.Add(10 * time.Second), 999, 1000, minWait},
		{"slow: at most the retry delay", t0, t0.Add(time.Minute), 1, 100, 90 * time.Second},
		{"no byte yet", t0, t0.Add(time.Second), 0, 100, unknownPaceWait},
		{"size unknown", t0, t0.Add(time.Second), 50, -1, unknownPaceWait},
		{"no transfer known", time.Time{}, t0, 50, 100, unknownPaceWait},
	} {
		if got := estimateWait(c.began, c.now, c.done, c.total, 90*time.Second); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

// A hubs entry may carry credentials (http://warren:TOKEN@hub:3142): the
// hub's name in logs, errors and the status page shows no password.
func TestParentNameRedacted(t *testing.T) {
	p, err := NewParent(ParentConfig{URL: "http://warren:hub-pass-0123456789@hub.example:3142"})
	if err != nil {
		t.Fatal(err)
	}
	if got, st := p.Name(), p.Status(); got != "http://warren:***@hub.example:3142" || st.URL != got {
		t.Fatalf("Name() = %q, Status().URL = %q", got, st.URL)
	}
	if _, err := NewParent(ParentConfig{URL: "http://warren:hub-pass-0123456789@hub.example:3142/x"}); err == nil || strings.Contains(err.Error(), "hub-pass") {
		t.Fatalf("a bad hub URL: %v", err)
	}
}

// A client that declares a new LAN with every request, from one address
// outside them all, is one LAN's requester, not the first of fifty: it
// gets no more streams than max_requesters lets one LAN have.
func TestDeclaredLANsDoNotMultiplyStreams(t *testing.T) {
	q := NewQueue(1, time.Minute)
	streaming := 0
	for i := range 50 {
		r := httptest.NewRequest(http.MethodGet, "http://deb.example/x.deb", nil)
		r.RemoteAddr = "198.51.100.7:40000"
		r.Header.Set(HeaderLAN, fmt.Sprintf("10.%d.0.0/16", i))
		if a := q.Enter("k", RequesterOf(r)); a.OK {
			streaming++
		}
	}
	if streaming > 1 {
		t.Fatalf("max_requesters 1, one client address: %d streams admitted by varying %s", streaming, HeaderLAN)
	}
}

// What requesters declare is theirs to choose: a new port with every
// request during a transfer, a new LAN with every request for a stored
// artifact. The lists the hub keeps of them stay bounded. (Before, 20,000
// requests from one address left 19,998 relays, sorted on every answer
// under the queue's lock, and 20,000 LANs of one artifact kept for 10
// minutes.)
func TestQueueListsBounded(t *testing.T) {
	q := NewQueue(1, time.Minute)
	first := q.Enter("k", Requester{LAN: "10.1.0.0/24", Peer: netip.MustParseAddrPort("10.1.0.1:3142"), Hints: true})
	if !first.OK {
		t.Fatal("the LAN's first requester was not admitted")
	}
	for port := range 5000 {
		q.Enter("k", Requester{LAN: "10.1.0.0/24", Peer: netip.AddrPortFrom(netip.MustParseAddr("10.1.0.66"), uint16(1000+port)), Hints: true})
	}
	q.mu.Lock()
	relays := len(q.byKey["k"].relays["10.1.0.0/24"])
	q.mu.Unlock()
	if relays > maxHeldPerLAN {
		t.Fatalf("5000 requests from one address left %d relays of one LAN, want at most %d", relays, maxHeldPerLAN)
	}
	first.Leave()
	for i := range 500 {
		q.Holders("k", Requester{LAN: fmt.Sprintf("10.%d.0.0/16", i%250) + strings.Repeat(" ", i/250), Peer: netip.MustParseAddrPort("10.1.0.66:3142"), Hints: true})
	}
	q.mu.Lock()
	lans := len(q.held["k"].byLAN)
	q.mu.Unlock()
	if lans > maxLANsPerArtifact {
		t.Fatalf("500 requests naming new LANs left %d LANs kept for one artifact, want at most %d", lans, maxLANsPerArtifact)
	}
}
