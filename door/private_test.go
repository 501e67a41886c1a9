package door

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/warren-cache/warren/cachestore"
)

// recordingHub is a site hub that is down and remembers what it was sent.
type recordingHub struct {
	mu   sync.Mutex // guards auth
	auth []string
}

func (h *recordingHub) Name() string { return "hub.lan" }
func (h *recordingHub) Do(req *http.Request) (*http.Response, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.auth = append(h.auth, req.Header.Get("Authorization"))
	return nil, errors.New("hub down")
}
func (h *recordingHub) Received(int64) {}

func doorWith(t *testing.T, cfg Config) *Door {
	t.Helper()
	store, err := cachestore.Open(cachestore.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(cfg, store)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(); store.Close() })
	return d
}

// A private request that is no fill (a HEAD, a mirror list, a full
// disk's pass-through) goes to its origin alone, as its fills do: the
// site's hubs never see the origin's credential unless hub_only.
func TestPrivatePassThroughSkipsHubs(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer origin.Close()
	for _, hubOnly := range []bool{false, true} {
		h := &recordingHub{}
		d := doorWith(t, Config{Hubs: []Hub{h}, HubOnly: hubOnly})
		u, _ := url.Parse(strings.Replace(origin.URL, "http://", "http://alice:s3cretpw@", 1) + "/private/pool/a.deb")
		p := d.Plan(t.Context(), u, d.CredentialOf(http.Header{}, u))
		r := httptest.NewRequest(http.MethodHead, origin.URL+"/private/pool/a.deb", nil)
		if resp, err := d.PassThrough(r, p); err == nil {
			resp.Body.Close()
		}
		h.mu.Lock()
		asked := len(h.auth)
		h.mu.Unlock()
		if !hubOnly && asked > 0 {
			t.Errorf("hub_only off: the hub was sent the private request (Authorization %q)", h.auth[0])
		}
		if hubOnly && asked == 0 {
			t.Error("hub_only on: the private request did not go to the hub, the site's one way out")
		}
	}
}

// The URL every log line shows keeps a user name and hides a password;
// a token given as the user name (https://TOKEN:@host/, https://TOKEN@host/)
// is hidden whole.
func TestShownURL(t *testing.T) {
	d := doorWith(t, Config{})
	for _, tt := range []struct{ raw, want string }{
		{"http://alice:s3cretpw@deb.example/r/InRelease", "http://alice:***@deb.example/r/InRelease"},
		{"http://Tk0123456789secret:@deb.example/r/InRelease", "http://***@deb.example/r/InRelease"},
		{"http://Tk0123456789secret@deb.example/r/InRelease", "http://***@deb.example/r/InRelease"},
		{"http://deb.example/r/InRelease", "http://deb.example/r/InRelease"},
	} {
		u, _ := url.Parse(tt.raw)
		p := d.Plan(t.Context(), u, d.CredentialOf(http.Header{}, u))
		if got := p.ShownURL(); got != tt.want {
			t.Errorf("%s shown as %s, want %s", tt.raw, got, tt.want)
		}
	}
}

// An upstream error names the URL without its password.
func TestUpstreamErrorsHidePasswords(t *testing.T) {
	for _, err := range []error{
		&UpstreamStatusError{Status: "404 Not Found", URL: "http://alice:s3cret-pass@feed.example/api/v2/package/x/1"},
		&UpstreamFetchError{URL: "http://alice:s3cret-pass@feed.example/api/v2/", Err: errors.New(`Get "http://alice:s3cret-pass@feed.example/api/v2/": dial tcp: refused`)},
	} {
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%T shows the password: %s", err, err)
		}
	}
}
