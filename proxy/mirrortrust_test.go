package proxy

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/hub"
)

// hostileList is a metalink an attacker serves from a host of its own at a
// path that looks like a list: it names the attacker's base and a real
// mirror's, with the hash of the attacker's repomd.xml, whose primary
// lists the real mirror's rpm path with the attacker's bytes; and an https
// host to intercept.
func hostileList(t *testing.T, site *mirrorSite) (evil *upstream, list []byte, primaryRel string) {
	t.Helper()
	evil = newUpstream(t, 10)
	evilRPM := []byte("#!/bin/sh evil payload, not signed")
	primary := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" packages="1">
<package type="rpm"><name>hello</name><arch>noarch</arch>
  <checksum type="sha256" pkgid="YES">%s</checksum>
  <size package="%d" installed="1" archive="1"/>
  <location href="%s"/>
</package>
</metadata>
`, sha256hex(evilRPM), len(evilRPM), site.rpmRel)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(primary))
	zw.Close()
	primaryRel = "repodata/" + sha256hex(gz.Bytes()) + "-primary.xml.gz"
	repomd := []byte(fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo"><revision>666</revision>
  <data type="primary"><checksum type="sha256">%s</checksum><location href="%s"/><size>%d</size></data>
</repomd>
`, sha256hex(gz.Bytes()), primaryRel, gz.Len()))
	list = []byte(fmt.Sprintf(`<?xml version="1.0" encoding="utf-8"?>
<metalink version="3.0" xmlns="http://www.metalinker.org/"><files><file name="repomd.xml"><size>%d</size>
 <verification><hash type="sha256">%s</hash></verification><resources>
  <url protocol="http" preference="100">%s/evil/repodata/repomd.xml</url>
  <url protocol="http" preference="99">%srepodata/repomd.xml</url>
  <url protocol="https" preference="98">https://accounts.example.org/repodata/repomd.xml</url>
 </resources></file></files></metalink>
`, len(repomd), sha256hex(repomd), evil.URL, site.bases[0]))
	evil.mu.Lock()
	evil.files["/metalink"] = list
	evil.files["/evil/repodata/repomd.xml"] = repomd
	evil.files["/evil/"+primaryRel] = gz.Bytes()
	evil.files["/evil/"+site.rpmRel] = evilRPM
	evil.mu.Unlock()
	return evil, list, primaryRel
}

// A list from a host no repo file, mirror_lists or hub names is an
// ordinary file: cached and served as it came, and nothing is learnt from
// it. (Before, any URL whose path looked like a list made a group on any
// host: a LAN client's list claimed a real mirror's base with its own
// repomd.xml hash, and warren served the attacker's repomd.xml and rpm
// under the real mirror's URL to a client using it with a plain baseurl=.)
func TestHostileListMakesNoGroup(t *testing.T) {
	for _, order := range []string{"hostile list first", "real list first"} {
		t.Run(order, func(t *testing.T) {
			site := newMirrorSite(t, 1000)
			evil, list, primaryRel := hostileList(t, site)
			h := newHarness(t, site.lists, site.repoFile())
			if order == "real list first" {
				h.mustGet(site.metalinkURL(), 200)
			}
			// Any LAN client asks for it, twice.
			type answer struct {
				mirrors string
				body    []byte
			}
			var answers []answer
			for range 2 {
				resp, got := h.mustGet(evil.URL+"/metalink", 200)
				answers = append(answers, answer{resp.Header.Get(door.HeaderMirrors), got})
			}
			// The victim: dnf with baseurl= the real mirror.
			_, got := h.mustGet(site.bases[0]+"repodata/repomd.xml", 200)
			if !bytes.Equal(got, site.repomd) {
				t.Fatalf("the victim's repomd.xml is the attacker's:\n%s", got)
			}
			h.get(site.bases[0] + primaryRel)
			if _, got = h.mustGet(site.bases[0]+site.rpmRel, 200); !bytes.Equal(got, site.rpm) {
				t.Fatalf("the victim's rpm is the attacker's: %q", got)
			}
			if hosts, _ := h.door.MirrorHosts(); slices.Contains(hosts, "accounts.example.org") {
				t.Fatalf("an untrusted list's https host may be intercepted: %v", hosts)
			}
			for _, g := range h.door.MirrorGroups() {
				if strings.HasPrefix(g.List, evil.URL) {
					t.Fatalf("the untrusted list made a group: %+v", g)
				}
			}
			for _, a := range answers {
				if !bytes.Equal(a.body, list) || a.mirrors != "" {
					t.Fatalf("the untrusted list was answered otherwise than it came (%s %q):\n%s", door.HeaderMirrors, a.mirrors, a.body)
				}
			}
			if n := evil.count("/metalink"); n != 1 {
				t.Fatalf("the untrusted list was fetched %d times, want once (an ordinary file, kept)", n)
			}
		})
	}
}

// Which list a base belongs to: never one a repo file names as a
// baseurl=, the first trusted list that names it, except that a metalink
// takes it from a plain list and a newer answer of the same list (dnf's
// countme=1 aside) from the older. A base's group shows in its
// repomd.xml's plan: hash-known from a metalink, not from a plain list.
func TestWhichListABaseBelongsTo(t *testing.T) {
	site := newMirrorSite(t, 1000)
	newer := bytes.Replace(site.repomd, []byte("<revision>2"), []byte("<revision>3"), 1)
	other := newUpstream(t, 10) // another trusted list server, naming the same mirrors with another hash
	other.mu.Lock()
	other.files["/metalink"] = bytes.ReplaceAll(site.lists.files["/metalink"], []byte(sha256hex(site.repomd)), []byte(sha256hex(newer)))
	other.mu.Unlock()
	planned := func(h *harness, i int) string {
		return h.door.Plan(t.Context(), mustURL(site.bases[i]+"repodata/repomd.xml"), door.Credential{}).Digest.Hex
	}
	for _, tc := range []struct {
		name  string
		bases []string // baseurl= of the repo files
		steps func(h *harness)
		want  []string // each base's repomd.xml digest planned
	}{
		{"a repo file's baseurl is in no group", []string{site.bases[0]}, func(h *harness) {
			h.mustGet(site.metalinkURL(), 200)
		}, []string{"", sha256hex(site.repomd), sha256hex(site.repomd)}},
		{"a metalink takes a base from a plain list", nil, func(h *harness) {
			h.mustGet(site.mirrorlistURL(), 200)
			h.mustGet(site.metalinkURL(), 200)
		}, []string{sha256hex(site.repomd), sha256hex(site.repomd), sha256hex(site.repomd)}},
		{"a plain list takes no base from a metalink", nil, func(h *harness) {
			h.mustGet(site.metalinkURL(), 200)
			h.mustGet(site.mirrorlistURL(), 200)
		}, []string{sha256hex(site.repomd), sha256hex(site.repomd), sha256hex(site.repomd)}},
		{"another list takes no base", nil, func(h *harness) {
			h.mustGet(site.metalinkURL(), 200)
			h.mustGet(other.URL+"/metalink", 200)
		}, []string{sha256hex(site.repomd), sha256hex(site.repomd), sha256hex(site.repomd)}},
		{"a newer answer of the same list does", nil, func(h *harness) {
			h.mustGet(site.metalinkURL(), 200)
			site.setLists(newer, nil)
			h.mustGet(site.metalinkURL()+"&countme=1", 200)
			site.setLists(site.repomd, nil)
		}, []string{sha256hex(newer), sha256hex(newer), sha256hex(newer)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, site.lists, trustingLists([]string{site.metalinkURL(), site.mirrorlistURL()}, tc.bases, []string{other.URL + "/metalink"}))
			tc.steps(h)
			for i, want := range tc.want {
				if got := planned(h, i); got != want {
					t.Errorf("mirror %d's repomd.xml plans as %q, want %q", i, got, want)
				}
			}
		})
	}
}

// A node trusts a list its hub answered in the site's order, and only
// such a list: one its hub does not trust comes back as it came, and the
// node makes no group of it either.
func TestNodeTrustsWhatItsHubTrusts(t *testing.T) {
	for _, trusted := range []bool{true, false} {
		t.Run(fmt.Sprintf("the hub trusts it: %v", trusted), func(t *testing.T) {
			site := newMirrorSite(t, 1000)
			opts := []harnessOpt{asHub(hub.FetchAndPreload, 5)}
			if trusted {
				opts = append(opts, site.repoFile())
			}
			hubH := newHarness(t, site.lists, opts...)
			node := newHarness(t, site.lists, usingHubs(t, true, "", hubH.front.URL))
			resp, body := node.mustGet(site.metalinkURL(), 200)
			if got := resp.Header.Get(door.HeaderMirrors) != ""; got != trusted {
				t.Fatalf("the node's answer marked as the site's order: %v, want %v", got, trusted)
			}
			l := listed(t, body)
			want := ""
			if trusted {
				want = sha256hex(site.repomd)
			}
			for _, m := range l.Mirrors {
				if got := node.door.Plan(t.Context(), mustURL(m.Base+"repodata/repomd.xml"), door.Credential{}).Digest.Hex; got != want {
					t.Fatalf("the node plans %srepodata/repomd.xml as %q, want %q", m.Base, got, want)
				}
			}
		})
	}
}

// rogueMirror makes mirror i of the site serve its own repomd.xml and
// primary, which list the rpm's path with other bytes.
func rogueMirror(site *mirrorSite, i int) (primaryRel string, rogueRPM []byte) {
	rogueRPM = []byte("rogue bytes")
	primary := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" packages="1">
<package type="rpm"><name>hello</name><arch>noarch</arch>
  <checksum type="sha256" pkgid="YES">%s</checksum>
  <size package="%d" installed="1" archive="1"/>
  <location href="%s"/>
</package>
</metadata>
`, sha256hex(rogueRPM), len(rogueRPM), site.rpmRel)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(primary))
	zw.Close()
	primaryRel = "repodata/" + sha256hex(gz.Bytes()) + "-primary.xml.gz"
	repomd := []byte(fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo"><revision>9</revision>
  <data type="primary"><checksum type="sha256">%s</checksum><location href="%s"/><size>%d</size></data>
</repomd>
`, sha256hex(gz.Bytes()), primaryRel, gz.Len()))
	u := site.mirrors[i]
	u.mu.Lock()
	u.files[site.path(i, "repodata/repomd.xml")] = repomd
	u.files[site.path(i, primaryRel)] = gz.Bytes()
	u.files[site.path(i, site.rpmRel)] = rogueRPM
	u.mu.Unlock()
	return primaryRel, rogueRPM
}

// One rogue mirror of a group decides nothing of another mirror's files:
// in a plain mirror list (AlmaLinux's, Rocky's: no hash) no mirror's
// metadata holds for another; in a metalink's group only metadata its
// hash anchors does, and the rogue's, learnt before its list made it a
// member, is not. (Before, whatever any mirror's primary said held for
// the same path on every mirror: a client whose metadata came from an
// honest mirror got the rogue's bytes under another honest mirror's URL.)
func TestRogueMirrorDecidesNothing(t *testing.T) {
	const rogue, honest = 0, 2 // the list names the rogue first
	for _, kind := range []string{"mirrorlist", "metalink"} {
		t.Run(kind, func(t *testing.T) {
			site := newMirrorSite(t, 1000)
			primaryRel, _ := rogueMirror(site, rogue)
			h := newHarness(t, site.lists, site.repoFile())
			list := site.mirrorlistURL()
			if kind == "metalink" {
				// The rogue's metadata passes through before any list
				// names it; then the metalink, and the honest metadata
				// from another mirror.
				h.mustGet(site.bases[rogue]+"repodata/repomd.xml", 200)
				h.mustGet(site.bases[rogue]+primaryRel, 200)
				h.known(site.bases[rogue] + site.rpmRel) // learns done
				list = site.metalinkURL()
				h.mustGet(list, 200)
				h.mustGet(site.bases[honest]+"repodata/repomd.xml", 200)
				h.mustGet(site.bases[honest]+site.primaryRel, 200)
			} else {
				// Anyone on the LAN, or a machine whose dnf used the
				// rogue mirror.
				h.mustGet(list, 200)
				h.mustGet(site.bases[rogue]+"repodata/repomd.xml", 200)
				h.mustGet(site.bases[rogue]+primaryRel, 200)
			}
			h.known(site.bases[rogue] + site.rpmRel) // learns done
			// The victim's package download from mirror 1, an honest one.
			p := h.door.Plan(t.Context(), mustURL(site.bases[1]+site.rpmRel), door.Credential{})
			if !p.Digest.IsZero() && p.Digest.Hex != sha256hex(site.rpm) {
				t.Fatalf("honest mirror 1's rpm plans as the rogue's digest %s", p.Digest)
			}
			if _, got := h.mustGet(site.bases[1]+site.rpmRel, 200); !bytes.Equal(got, site.rpm) {
				t.Fatalf("honest mirror 1's rpm URL served the rogue mirror's bytes: %q", got)
			}
		})
	}
}
