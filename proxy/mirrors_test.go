package proxy

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/hub"
	"github.com/warren-cache/warren/rpm"
)

// A mirror group: one rpm repository on three mirrors (each its own
// server and path), and a list server answering a metalink and a plain
// mirror list of them, as MirrorManager and AlmaLinux's servers do.
type mirrorSite struct {
	mirrors []*upstream
	bases   []string // each mirror's base URL, with its slash
	lists   *upstream
	repomd  []byte
	primary []byte
	rpm     []byte
	// paths relative to a base
	primaryRel, rpmRel string
}

func newMirrorSite(t *testing.T, rpmSize int) *mirrorSite {
	t.Helper()
	m := &mirrorSite{rpm: randomBytes(rpmSize, 21), lists: newUpstream(t, 10)}
	m.rpmRel = "Packages/h/hello-1.0-1.noarch.rpm"
	primary := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="1">
<package type="rpm"><name>hello</name><arch>noarch</arch>
  <checksum type="sha256" pkgid="YES">%s</checksum>
  <size package="%d" installed="1" archive="1"/>
  <location href="%s"/>
</package>
</metadata>
`, sha256hex(m.rpm), len(m.rpm), m.rpmRel)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(primary))
	zw.Close()
	m.primary = gz.Bytes()
	psum := sha256hex(m.primary)
	m.primaryRel = "repodata/" + psum + "-primary.xml.gz"
	m.repomd = []byte(fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo">
  <revision>2</revision>
  <data type="primary">
    <checksum type="sha256">%s</checksum>
    <location href="%s"/>
    <size>%d</size>
  </data>
</repomd>
`, psum, m.primaryRel, len(m.primary)))
	for i, dir := range []string{"/pub/fedora/updates/40/x86_64/", "/fedora/updates/40/x86_64/", "/linux/updates/40/x86_64/"} {
		u := newUpstream(t, 10)
		m.mirrors = append(m.mirrors, u)
		m.bases = append(m.bases, u.URL+dir)
		u.mu.Lock()
		u.files[dir+"repodata/repomd.xml"] = m.repomd
		u.files[dir+m.primaryRel] = m.primary
		u.files[dir+m.rpmRel] = m.rpm
		u.mu.Unlock()
		_ = i
	}
	m.setLists(m.repomd, nil)
	return m
}

// setLists has the list server answer a metalink naming repomd.xml's
// current bytes (and alternates) and a mirror list, each listing the
// mirrors in the given order of preference.
func (m *mirrorSite) setLists(current []byte, alternates [][]byte, order ...int) {
	if len(order) == 0 {
		order = []int{0, 1, 2}
	}
	version := func(b []byte) string {
		return fmt.Sprintf("<size>%d</size><verification><hash type=\"md5\">%s</hash><hash type=\"sha256\">%s</hash></verification>",
			len(b), strings.Repeat("0", 32), sha256hex(b))
	}
	var ml strings.Builder
	ml.WriteString(`<?xml version="1.0" encoding="utf-8"?>
<metalink version="3.0" xmlns="http://www.metalinker.org/" type="dynamic" generator="mirrormanager" xmlns:mm0="http://fedorahosted.org/mirrormanager">
 <files>
  <file name="repomd.xml">
   <mm0:timestamp>1796558402</mm0:timestamp>
   ` + version(current) + `
   <mm0:alternates>`)
	for _, a := range alternates {
		ml.WriteString("<mm0:alternate><mm0:timestamp>1</mm0:timestamp>" + version(a) + "</mm0:alternate>")
	}
	ml.WriteString("</mm0:alternates>\n   <resources maxconnections=\"1\">\n")
	var plain strings.Builder
	for n, i := range order {
		fmt.Fprintf(&ml, "    <url protocol=\"http\" type=\"http\" location=\"DE\" preference=\"%d\">%srepodata/repomd.xml</url>\n", 100-n, m.bases[i])
		fmt.Fprintf(&plain, "%s\n", m.bases[i])
	}
	ml.WriteString("   </resources>\n  </file>\n </files>\n</metalink>\n")
	m.lists.mu.Lock()
	m.lists.files["/metalink"] = []byte(ml.String())
	m.lists.files["/mirrorlist/40/updates"] = []byte(plain.String())
	m.lists.modAt = m.lists.modAt.Add(time.Hour) // a new list: not "not modified"
	m.lists.mu.Unlock()
}

func (m *mirrorSite) metalinkURL() string {
	return m.lists.URL + "/metalink?repo=updates-released-f40&arch=x86_64"
}
func (m *mirrorSite) mirrorlistURL() string {
	return m.lists.URL + "/mirrorlist/40/updates"
}

// path is the upstream path of rel on mirror i, for its GET counts.
func (m *mirrorSite) path(i int, rel string) string {
	return strings.TrimPrefix(m.bases[i], m.mirrors[i].URL) + rel
}

// gets counts the GETs of rel over every mirror.
func (m *mirrorSite) gets(rel string) int {
	n := 0
	for i, u := range m.mirrors {
		n += u.count(m.path(i, rel))
	}
	return n
}

// listed reads a list warren answered: its mirrors' bases in order.
func listed(t *testing.T, body []byte) *rpm.MirrorList {
	t.Helper()
	l, err := rpm.ParseMirrorList(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("warren's answer is no list of mirrors: %v\n%s", err, body)
	}
	return l
}

// A metalink is an index file: kept by URL (a hit within index_ttl),
// answered in the site's order with its hashes as they were, learnt (each
// mirror's repomd.xml hash-known), revalidated, and served stale with the
// list server down. (Before, it was passed through and never kept: the
// list server down, dnf got 502.)
func TestMetalinkIsAnIndexFile(t *testing.T) {
	site := newMirrorSite(t, 1000)
	// The list server prefers mirror 2, then 0, then 1.
	site.setLists(site.repomd, nil, 2, 0, 1)
	var logs logBuffer
	h := newHarness(t, site.lists, loggingTo(&logs))
	resp, body := h.mustGet(site.metalinkURL(), 200)
	if resp.Header.Get(door.HeaderMirrors) != "site" {
		t.Fatalf("the metalink came back without the site's order: %v", resp.Header)
	}
	l := listed(t, body)
	if l.Mirrors[0].Base != site.bases[2] || len(l.Mirrors) != 3 {
		t.Fatalf("the site's first mirror is %s, want the list's most preferred (all cacheable, none held yet): %s", l.Mirrors[0].Base, site.bases[2])
	}
	if h0, _ := l.Repomd[0].Hash(); h0.Hex != sha256hex(site.repomd) || !bytes.Contains(body, []byte(`<hash type="md5">`+strings.Repeat("0", 32))) {
		t.Fatalf("the metalink's hashes changed: %+v", l.Repomd)
	}
	// Learnt: repomd.xml is hash-known under every mirror.
	for _, base := range site.bases {
		k, err := h.known(base + "repodata/repomd.xml")
		if err != nil || k.Digest.Hex != sha256hex(site.repomd) {
			t.Fatalf("%srepodata/repomd.xml not learnt from the metalink: %+v %v", base, k, err)
		}
	}
	resp, again := h.mustGet(site.metalinkURL(), 200)
	if !strings.HasPrefix(resp.Header.Get("X-Cache"), "HIT") || !bytes.Equal(again, body) {
		t.Fatalf("the metalink again within index_ttl: %s, the same answer %v", resp.Header.Get("X-Cache"), bytes.Equal(again, body))
	}
	if n := site.lists.count("/metalink"); n != 1 {
		t.Fatalf("the list server was asked %d times, want once", n)
	}
	// The list server prefers another mirror now (MirrorManager shuffles
	// for every request): the site's first mirror stays first.
	site.setLists(site.repomd, nil, 1, 0, 2)
	h.clock.advance(time.Minute)
	_, body = h.mustGet(site.metalinkURL(), 200)
	if got := listed(t, body).Mirrors[0].Base; got != site.bases[2] {
		t.Fatalf("the site's first mirror moved to %s when the list server reordered", got)
	}
	// The list server goes away: the metalink is served stale, with the
	// log line apt's stale InRelease gets.
	h.clock.advance(time.Minute)
	site.lists.Close()
	_, stale := h.mustGet(site.metalinkURL(), 200)
	if !bytes.Equal(stale, body) {
		t.Fatalf("the stale metalink differs:\n%s", stale)
	}
	if !strings.Contains(logs.String(), "serving the last good copy (offline mode)") {
		t.Fatal("no offline-mode line in the log")
	}
}

// Within a group a fact learnt from one mirror's metadata holds for the
// same path on the others, and every mirror is a source of the same
// bytes: a client on another mirror costs the WAN nothing. (Before, each
// mirror was a repository of its own.)
func TestMirrorGroupSharesWhatItLearnt(t *testing.T) {
	for _, kind := range []string{"metalink", "mirrorlist"} {
		t.Run(kind, func(t *testing.T) {
			site := newMirrorSite(t, 200000)
			h := newHarness(t, site.lists)
			list := site.metalinkURL()
			if kind == "mirrorlist" {
				list = site.mirrorlistURL()
			}
			_, body := h.mustGet(list, 200)
			first := listed(t, body).Mirrors[0].Base
			h.mustGet(first+"repodata/repomd.xml", 200)
			h.mustGet(first+site.primaryRel, 200)
			// librepo spreads downloads over the mirrors: the rpm asked
			// of each one.
			for i, base := range site.bases {
				resp, got := h.mustGet(base+site.rpmRel, 200)
				if !bytes.Equal(got, site.rpm) {
					t.Fatalf("mirror %d's rpm: wrong bytes", i)
				}
				if i > 0 && !strings.HasPrefix(resp.Header.Get("X-Cache"), "HIT") {
					t.Fatalf("the rpm asked of mirror %d is no hit: %s", i, resp.Header.Get("X-Cache"))
				}
			}
			if n := site.gets(site.rpmRel); n != 1 {
				t.Fatalf("the mirrors sent the rpm %d times, want once", n)
			}
			if kind == "metalink" {
				// Each mirror's repomd.xml is the one the site holds.
				for _, base := range site.bases {
					h.mustGet(base+"repodata/repomd.xml", 200)
				}
				if n := site.gets("repodata/repomd.xml"); n != 1 {
					t.Fatalf("repomd.xml came %d times over the WAN, want once (the metalink names its hash)", n)
				}
			}
		})
	}
}

// A mirror serving a repomd.xml its metalink does not name (a stale
// mirror) is refused: the client gets the one the metalink names, from
// the next mirror, and never a byte of the stale one. An alternate (the
// previous push) is taken. (Before, the stale one was served and kept.)
func TestStaleMirrorRefused(t *testing.T) {
	site := newMirrorSite(t, 1000)
	previous := bytes.Replace(site.repomd, []byte("<revision>2"), []byte("<revision>1"), 1)
	stale := bytes.Replace(site.repomd, []byte("<revision>2"), []byte("<revision>0"), 1)
	site.setLists(site.repomd, [][]byte{previous})
	var logs logBuffer
	h := newHarness(t, site.lists, loggingTo(&logs))
	_, body := h.mustGet(site.metalinkURL(), 200)
	l := listed(t, body)
	firstIdx := -1
	for i, b := range site.bases {
		if b == l.Mirrors[0].Base {
			firstIdx = i
		}
	}
	u := site.mirrors[firstIdx]
	u.mu.Lock()
	u.files[site.path(firstIdx, "repodata/repomd.xml")] = stale
	u.mu.Unlock()
	_, got := h.mustGet(l.Mirrors[0].Base+"repodata/repomd.xml", 200)
	if !bytes.Equal(got, site.repomd) {
		t.Fatalf("the client got a repomd.xml the metalink does not name:\n%s", got)
	}
	if !strings.Contains(logs.String(), "not one its metalink names") {
		t.Fatal("the refusal is not in the log")
	}
	if g := h.door.MirrorGroups(); len(g) != 1 || g[0].Refused != 1 {
		t.Fatalf("the page's mirror groups: %+v, want one with one refusal", g)
	}
	// Mirrors that serve the previous push (an alternate): taken; mirrors
	// all stale: 502, nothing served.
	for _, tc := range []struct {
		serve  []byte
		status int
	}{{previous, 200}, {stale, 502}} {
		for i, u := range site.mirrors {
			u.mu.Lock()
			u.files[site.path(i, "repodata/repomd.xml")] = tc.serve
			u.mu.Unlock()
		}
		h2 := newHarness(t, site.lists)
		_, body := h2.mustGet(site.metalinkURL(), 200)
		_, got := h2.mustGet(listed(t, body).Mirrors[0].Base+"repodata/repomd.xml", tc.status)
		if tc.status == 200 && !bytes.Equal(got, previous) {
			t.Fatalf("the alternate: got\n%s", got)
		}
	}
}

// A mirror that stalls mid-file: the fill goes on from the next mirror of
// the group at the offset it reached. (Before, the stalled mirror was
// tried again three times and the fill failed.)
func TestMirrorStallGoesOnFromTheNext(t *testing.T) {
	site := newMirrorSite(t, 3<<20)
	h := newHarness(t, site.lists, func(c *testConfig, _ *cachestore.Config) { c.StallTimeout = time.Second })
	_, body := h.mustGet(site.metalinkURL(), 200)
	first := listed(t, body).Mirrors[0].Base
	h.mustGet(first+"repodata/repomd.xml", 200)
	h.mustGet(first+site.primaryRel, 200)
	var idx int
	for i, b := range site.bases {
		if b == first {
			idx = i
		}
	}
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	var once sync.Once
	site.mirrors[idx].hook(site.path(idx, site.rpmRel), func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(site.rpm)))
		w.Write(site.rpm[:1<<20])
		w.(http.Flusher).Flush()
		once.Do(func() {})
		select { // stalls
		case <-release:
		case <-r.Context().Done():
		}
	})
	var ranges []string
	var mu sync.Mutex
	for i, u := range site.mirrors {
		if i == idx {
			continue
		}
		path := site.path(i, site.rpmRel)
		u.hook(path, func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			ranges = append(ranges, r.Header.Get("Range"))
			mu.Unlock()
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(site.rpm))
		})
	}
	_, got := h.mustGet(first+site.rpmRel, 200)
	if !bytes.Equal(got, site.rpm) {
		t.Fatal("the client got wrong bytes")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ranges) != 1 || !strings.HasPrefix(ranges[0], "bytes=") {
		t.Fatalf("the next mirror was asked %q, want one request resuming at an offset", ranges)
	}
}

// A plain mirror list: kept, answered in the site's order (the mirror it
// put first stays first; after a restart, a mirror whose repomd.xml the
// site holds), served stale.
func TestMirrorlistIsAnIndexFile(t *testing.T) {
	site := newMirrorSite(t, 1000)
	h := newHarness(t, site.lists)
	_, body := h.mustGet(site.mirrorlistURL(), 200)
	l := listed(t, body)
	if l.Metalink || len(l.Mirrors) != 3 {
		t.Fatalf("%+v", l)
	}
	// The list server's next answer prefers another mirror: the site's
	// stays first.
	site.setLists(site.repomd, nil, 2, 1, 0)
	h.clock.advance(time.Minute)
	_, again := h.mustGet(site.mirrorlistURL(), 200)
	if got := listed(t, again).Mirrors[0].Base; got != l.Mirrors[0].Base {
		t.Fatalf("first mirror %s after the list server reordered, want %s still", got, l.Mirrors[0].Base)
	}
	// The site used the last one, then warren restarted: the one whose
	// metadata it holds comes first.
	last := listed(t, again).Mirrors[2].Base
	h.mustGet(last+"repodata/repomd.xml", 200)
	h.stop()
	h.start()
	h.clock.advance(time.Minute)
	_, body = h.mustGet(site.mirrorlistURL(), 200)
	if got := listed(t, body).Mirrors[0].Base; got != last {
		t.Fatalf("first mirror %s, want %s (the one whose metadata the site holds)", got, last)
	}
	site.lists.Close()
	h.clock.advance(time.Minute)
	_, stale := h.mustGet(site.mirrorlistURL(), 200)
	if !bytes.Equal(stale, body) {
		t.Fatalf("stale answer differs:\n%s\n%s", stale, body)
	}
}

// The mirrors down and the site holding only the previous push's
// repomd.xml, which the new metalink still names as an alternate: that
// one is served (dnf takes it), with the offline-mode line.
func TestMetalinkAlternateServedOffline(t *testing.T) {
	site := newMirrorSite(t, 1000)
	previous := site.repomd
	current := bytes.Replace(previous, []byte("<revision>2"), []byte("<revision>3"), 1)
	var logs logBuffer
	h := newHarness(t, site.lists, loggingTo(&logs))
	_, body := h.mustGet(site.metalinkURL(), 200)
	first := listed(t, body).Mirrors[0].Base
	h.mustGet(first+"repodata/repomd.xml", 200)
	// A new push: the site holds none of it, and the mirrors go away.
	site.setLists(current, [][]byte{previous})
	for _, u := range site.mirrors {
		u.Close()
	}
	h.clock.advance(time.Minute)
	h.mustGet(site.metalinkURL(), 200)
	_, got := h.mustGet(first+"repodata/repomd.xml", 200)
	if !bytes.Equal(got, previous) {
		t.Fatalf("served\n%s\nwant the previous push's repomd.xml", got)
	}
	if !strings.Contains(logs.String(), "the previous repomd.xml its metalink still names") {
		t.Fatal("no offline-mode line for the alternate")
	}
}

// A hub decides for its nodes: a node answers a list in the order its hub
// gave it, not its own. (Here the hub puts first the mirror whose
// metadata it holds since before its restart; the node, which holds
// nothing, would order the list otherwise.)
func TestNodeKeepsItsHubsOrder(t *testing.T) {
	site := newMirrorSite(t, 1000)
	hubH := newHarness(t, site.lists, asHub(hub.FetchAndPreload, 5))
	_, body := hubH.mustGet(site.mirrorlistURL(), 200)
	own := listed(t, body).Mirrors[0].Base // what a warren with no history puts first
	last := listed(t, body).Mirrors[2].Base
	hubH.mustGet(last+"repodata/repomd.xml", 200)
	hubH.stop()
	hubH.start()
	hubH.clock.advance(time.Minute)
	node := newHarness(t, site.lists, usingHubs(t, true, "", hubH.front.URL))
	resp, body := node.mustGet(site.mirrorlistURL(), 200)
	if got := listed(t, body).Mirrors[0].Base; got != last || got == own {
		t.Fatalf("the node's first mirror %s, want its hub's %s (its own would be %s)", got, last, own)
	}
	if resp.Header.Get(door.HeaderMirrors) != "site" {
		t.Fatal("the node's answer is not marked as the site's order")
	}
	// What the node learnt from it: the group, shared facts included.
	node.mustGet(last+"repodata/repomd.xml", 200)
	node.mustGet(last+site.primaryRel, 200)
	node.known(last + site.rpmRel) // the learns done
	if p := node.door.Plan(t.Context(), mustURL(own+site.rpmRel), door.Credential{}); p.Digest.Hex != sha256hex(site.rpm) {
		t.Fatalf("the node's group does not share what it learnt: the rpm on another mirror plans as %+v", p)
	}
}
