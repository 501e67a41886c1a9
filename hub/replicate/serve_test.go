package replicate

import (
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/hub"
)

// The change feed names its log, and a cursor that is no place in it (the
// last number there is, which wrapped to the log's start; past its end)
// is refused, not read from the start.
func TestServeCursorsAreBounded(t *testing.T) {
	store, err := cachestore.Open(cachestore.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for i := range 3 {
		if _, err := store.RecordChange(cachestore.Change{Key: "http://deb.example/debian/pool/p" + strconv.Itoa(i) + ".deb", Digest: digest([]byte{byte(i)}), Size: 1}); err != nil {
			t.Fatal(err)
		}
	}
	const token = "a-sync-token-of-16+"
	srv := httptest.NewServer(NewServer(ServerConfig{ID: "src", Tokens: hub.NewSyncTokens([]hub.SyncToken{{Name: "t", Token: token}}), Store: store}))
	defer srv.Close()
	get := func(after string) (int, hub.Page) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+hub.ChangesPath+"?after="+after, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var p hub.Page
		json.NewDecoder(resp.Body).Decode(&p)
		return resp.StatusCode, p
	}
	code, p := get("0")
	id, _ := store.ChangeLogID()
	if code != 200 || p.Log == "" || p.Log != id || p.Last != 3 {
		t.Fatalf("the first page: %d %+v; want the log named %q", code, p, id)
	}
	for _, after := range []string{"4", strconv.FormatUint(math.MaxUint64, 10)} {
		if code, p := get(after); code != http.StatusBadRequest || len(p.Entries) != 0 {
			t.Fatalf("after=%s: %d with %d entries; want 400", after, code, len(p.Entries))
		}
	}
	if c, _, err := store.Changes(math.MaxUint64, 10); err != nil || len(c) != 0 {
		t.Fatalf("Changes after the last number: %d entries, %v; want none (not the log's start)", len(c), err)
	}
}
