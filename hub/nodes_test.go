package hub

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// The hub's list of nodes: a row is a node id and the address it comes
// from, the least recently seen go first, and one address holds a few
// rows at most. (Before, rows were keyed by the id a client sends alone:
// a client giving another node's id took that node's row, and one cycling
// through 1024 ids flushed the whole list.)
func TestClientRows(t *testing.T) {
	var c clients
	now := time.Unix(1_800_000_000, 0)
	req := func(remote, node string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "http://deb.example/x.deb", nil)
		r.RemoteAddr = remote
		if node != "" {
			r.Header.Set(HeaderNode, node)
		}
		return r
	}
	const honest = "0123456789abcdef0123456789abcdef"
	c.served(req("10.1.0.7:40000", honest), now, "hit", 100)
	c.served(req("10.1.0.8:40000", ""), now, "miss", 10)
	// Another host gives the honest node's id: a row of its own.
	now = now.Add(time.Second)
	c.served(req("10.1.0.66:40000", honest), now, "miss", 5)
	rows := map[string]Client{}
	for _, cl := range c.list() {
		rows[cl.Node+"@"+cl.Addr] = cl
	}
	if cl := rows[honest+"@10.1.0.7"]; cl.Requests != 1 || cl.Bytes != 100 || len(rows) != 3 {
		t.Fatalf("a client giving another's id took its row: %+v", rows)
	}
	// One address cycles through ids: it replaces its own rows only.
	for i := range 2 * maxClients {
		now = now.Add(time.Millisecond)
		c.served(req("10.1.0.66:40000", fmt.Sprintf("%032x", i)), now, "miss", 1)
	}
	rows = map[string]Client{}
	for _, cl := range c.list() {
		rows[cl.Node+"@"+cl.Addr] = cl
	}
	if _, ok := rows[honest+"@10.1.0.7"]; !ok {
		t.Fatal("one address cycling through ids pushed the honest node out of the list")
	}
	if _, ok := rows["@10.1.0.8"]; !ok {
		t.Fatal("one address cycling through ids pushed a plain client out of the list")
	}
	if len(rows) != 2+maxRowsPerAddr {
		t.Fatalf("%d rows, want the two others and %d of the cycling address", len(rows), maxRowsPerAddr)
	}
	// Many addresses: the least recently seen go.
	for i := range maxClients {
		now = now.Add(time.Millisecond)
		c.served(req(fmt.Sprintf("10.2.%d.%d:40000", i/250, i%250+1), ""), now, "miss", 1)
	}
	list := c.list()
	if len(list) != maxClients {
		t.Fatalf("%d rows, want at most %d", len(list), maxClients)
	}
	c.served(req("10.1.0.7:40000", honest), now.Add(time.Second), "hit", 1)
	if list = c.list(); list[0].Node != honest || list[0].Addr != "10.1.0.7" || list[0].Requests != 1 {
		t.Fatalf("the node seen last, after its row was dropped: %+v", list[0])
	}
}
