package replicate

import (
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
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

// A source hub rebuilt (a fresh index: its change log starts again,
// shorter than the puller's cursor) is read again from its start: the
// puller names its log, and the source answers another log from 0.
func TestPullFromARebuiltSource(t *testing.T) {
	const token = "a-sync-token-of-16+"
	open := func() *cachestore.Store {
		st, err := cachestore.Open(cachestore.Config{Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	put := func(st *cachestore.Store, key string, body []byte) {
		d := digest(body)
		f, _ := st.BeginFill(cachestore.FillKey(d))
		if err := f.Start(cachestore.FillInfo{Algo: "sha256", Size: int64(len(body))}); err != nil {
			t.Fatal(err)
		}
		f.Write(body)
		if _, err := f.Commit(d, int64(len(body))); err != nil {
			t.Fatal(err)
		}
		if _, err := st.RecordChange(cachestore.Change{Key: key, Digest: d, Size: int64(len(body))}); err != nil {
			t.Fatal(err)
		}
	}
	var cur atomic.Pointer[Server]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { cur.Load().ServeHTTP(w, r) }))
	defer srv.Close()
	serve := func(st *cachestore.Store) {
		cur.Store(NewServer(ServerConfig{ID: "src", Tokens: hub.NewSyncTokens([]hub.SyncToken{{Name: "t", Token: token}}), Store: st}))
	}
	a := open()
	for i := range 5 {
		put(a, srv.URL+"/debian/pool/main/p/p"+strconv.Itoa(i)+".deb", []byte("package "+strconv.Itoa(i)))
	}
	serve(a)
	f := &forged{Server: srv}
	s := newSpoke(t)
	if run := s.pull(t, f, hub.Repos{}); !run.OK() || s.state.Cursor != 5 {
		t.Fatalf("the first pull: %+v, state %+v", run, s.state)
	}
	b := open() // rebuilt: two files stored since
	put(b, srv.URL+"/debian/pool/main/q/q0.deb", []byte("new 0"))
	put(b, srv.URL+"/debian/pool/main/q/q1.deb", []byte("new 1"))
	serve(b)
	run := s.pull(t, f, hub.Repos{})
	if !run.OK() || !run.Restarted || s.state.Cursor != 2 {
		t.Fatalf("the pull after the rebuild: %+v, state %+v; want it restarted and at 2", run, s.state)
	}
	for _, body := range []string{"new 0", "new 1"} {
		if !s.door.Holds(digest([]byte(body))) {
			t.Fatalf("%q of the rebuilt source did not arrive", body)
		}
	}
}

// The pullers a source hub lists are the most recently seen: past
// maxPullers, the least recently seen go. (Before, the list stopped at
// 256 and never forgot one: a hub that began pulling later was never
// shown.)
func TestPullersForgetTheLeastRecentlySeen(t *testing.T) {
	s := NewServer(ServerConfig{ID: "src"})
	pull := func(id string, n int64) {
		r := httptest.NewRequest(http.MethodGet, "http://src"+hub.ChangesPath, nil)
		r.RemoteAddr = "192.0.2.7:40000"
		r.Header.Set(hub.HeaderHubID, id)
		s.puller(r, hub.SyncToken{Name: "t"}, nil, n)
	}
	for i := range maxPullers {
		pull("hub-"+strconv.Itoa(i), 1)
	}
	pull("hub-0", 1) // seen again: now the most recent
	pull("late", 5)
	byHub := map[string]hub.PullerStatus{}
	for _, p := range s.Pullers() {
		byHub[p.Hub] = p
	}
	if len(byHub) != maxPullers {
		t.Fatalf("%d pullers listed, want %d", len(byHub), maxPullers)
	}
	if p, ok := byHub["late"]; !ok || p.Bytes != 5 {
		t.Fatal("a hub that began pulling once the list was full is not listed")
	}
	if p, ok := byHub["hub-0"]; !ok || p.Bytes != 2 {
		t.Fatalf("a puller seen again lately was dropped or reset: %+v", p)
	}
	if _, ok := byHub["hub-1"]; ok {
		t.Fatal("the least recently seen puller is still listed")
	}
}
