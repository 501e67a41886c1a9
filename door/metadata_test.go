package door

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/fill"
)

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// indexRepo is a repository as a learn test needs it: its top file, the
// index whose learn the test holds up, the sibling indexes that top file
// names, and an artifact the held index lists.
type indexRepo struct {
	top      string // URL of the Release or repomd.xml
	topBody  []byte
	held     string // URL of the index whose learn is held
	heldBody []byte
	siblings map[string]string // URL of another index file -> the sha256 its top file names
	artifact string            // URL of a file the held index lists
	holds    func(key string) bool
}

// debianRepo: a Release naming main's and non-free's Packages (by-hash
// too); main's lists pool/main/a/a_1.0_all.deb.
func debianRepo(t *testing.T) indexRepo {
	const base = "http://deb.example/debian/"
	mainPkgs := fmt.Appendf(nil, "Package: a\nVersion: 1.0\nArchitecture: all\nFilename: pool/main/a/a_1.0_all.deb\nSize: 3\nSHA256: %s\n\n", sha256Hex([]byte("aaa")))
	nonFree := fmt.Appendf(nil, "Package: b\nVersion: 1.0\nArchitecture: all\nFilename: pool/non-free/b/b_1.0_all.deb\nSize: 3\nSHA256: %s\n\n", sha256Hex([]byte("bbb")))
	release := fmt.Appendf(nil, "Origin: test\nSuite: stable\nAcquire-By-Hash: yes\nSHA256:\n %s %d main/binary-amd64/Packages\n %s %d non-free/binary-amd64/Packages\n",
		sha256Hex(mainPkgs), len(mainPkgs), sha256Hex(nonFree), len(nonFree))
	return indexRepo{
		top: base + "dists/stable/Release", topBody: release,
		held: base + "dists/stable/main/binary-amd64/Packages", heldBody: mainPkgs,
		siblings: map[string]string{
			base + "dists/stable/non-free/binary-amd64/Packages":                             sha256Hex(nonFree),
			base + "dists/stable/non-free/binary-amd64/by-hash/SHA256/" + sha256Hex(nonFree): sha256Hex(nonFree),
		},
		artifact: base + "pool/main/a/a_1.0_all.deb",
		holds:    func(k string) bool { return strings.Contains(k, "/pool/") },
	}
}

// rpmRepo: a repomd.xml naming primary.xml and filelists.xml; primary
// lists Packages/a-1.0-1.noarch.rpm.
func rpmRepo(t *testing.T) indexRepo {
	const base = "http://rpm.example/repo/"
	primary := gzipped(t, fmt.Appendf(nil, `<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" packages="1">
<package type="rpm"><name>a</name><arch>noarch</arch><version epoch="0" ver="1.0" rel="1"/>
<checksum type="sha256" pkgid="YES">%s</checksum><size package="3"/><location href="Packages/a-1.0-1.noarch.rpm"/></package>
</metadata>
`, sha256Hex([]byte("aaa"))))
	filelists := gzipped(t, []byte(`<?xml version="1.0" encoding="UTF-8"?><filelists packages="0"/>`))
	primaryHref := "repodata/" + sha256Hex(primary) + "-primary.xml.gz"
	filelistsHref := "repodata/" + sha256Hex(filelists) + "-filelists.xml.gz"
	data := func(typ, href string, b []byte) string {
		return fmt.Sprintf(`<data type="%s"><checksum type="sha256">%s</checksum><location href="%s"/><size>%d</size></data>`, typ, sha256Hex(b), href, len(b))
	}
	repomd := []byte(`<?xml version="1.0" encoding="UTF-8"?><repomd xmlns="http://linux.duke.edu/metadata/repo">` +
		data("primary", primaryHref, primary) + data("filelists", filelistsHref, filelists) + `</repomd>`)
	return indexRepo{
		top: base + "repodata/repomd.xml", topBody: repomd,
		held: base + primaryHref, heldBody: primary,
		siblings: map[string]string{base + filelistsHref: sha256Hex(filelists)},
		artifact: base + "Packages/a-1.0-1.noarch.rpm",
		holds:    func(k string) bool { return strings.Contains(k, "/Packages/") },
	}
}

// A request for an index file waits only for the learns that can name its
// hash (its Release's, its repomd.xml's), never for a sibling index's:
// apt asks for the next Packages file as soon as it has one, and a cold
// node held that request for the whole parse of the one before (seconds,
// for Debian's main; twice over, a node and then its hub). A request for
// a package still waits for the learn of the index that lists it.
func TestIndexRequestDoesNotWaitForASiblingsLearn(t *testing.T) {
	for _, tc := range []struct {
		name string
		repo func(*testing.T) indexRepo
	}{
		{"debian", debianRepo},
		{"rpm", rpmRepo},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo := tc.repo(t)
			store, err := cachestore.Open(cachestore.Config{Dir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			gs := &gatedStore{Store: store, holds: repo.holds, entered: make(chan struct{}), gate: make(chan struct{})}
			d, err := New(Config{}, gs)
			if err != nil {
				t.Fatal(err)
			}
			opened := false
			open := func() {
				if !opened {
					opened = true
					close(gs.gate)
				}
			}
			t.Cleanup(func() { open(); d.Close(); store.Close() })

			plan := func(raw string) Plan {
				u, err := url.Parse(raw)
				if err != nil {
					t.Fatal(err)
				}
				return d.Plan(context.Background(), u, Credential{})
			}
			fetch := func(raw string, body []byte) {
				if _, err := d.Fetch(t.Context(), plan(raw), Asker{}, FetchOptions{Sources: []fill.Source{&heldSource{body: body}}}); err != nil {
					t.Fatalf("fetch %s: %v", raw, err)
				}
			}
			// The top file, learnt: its index files' hashes are known.
			fetch(repo.top, repo.topBody)
			if k, err := d.Learnt(t.Context(), repo.held); err != nil || k.Digest.Hex != sha256Hex(repo.heldBody) {
				t.Fatalf("after its top file, %s is known as %+v (%v)", repo.held, k, err)
			}
			// One index, its learn held in the midst of recording.
			fetch(repo.held, repo.heldBody)
			select {
			case <-gs.entered:
			case <-time.After(10 * time.Second):
				t.Fatal("the index's learn did not get to record its facts")
			}

			planned := func(raw string) <-chan Plan {
				ch := make(chan Plan, 1)
				go func() { ch <- plan(raw) }()
				return ch
			}
			artifact := planned(repo.artifact)
			for raw, want := range repo.siblings {
				select {
				case p := <-planned(raw):
					if p.Digest.Hex != want {
						t.Errorf("%s planned with digest %v, want sha256:%s (its top file's)", raw, p.Digest, want)
					}
				case <-time.After(learnWaitMax / 3):
					t.Fatalf("a request for %s waited for the learn of %s, which cannot name its hash", raw, repo.held)
				}
			}
			// The package's request waits for the index that lists it: it
			// cannot come while that learn is held (for up to learnWaitMax).
			select {
			case p := <-artifact:
				t.Fatalf("%s planned (digest %v) while the index that lists it was still being learnt", repo.artifact, p.Digest)
			case <-time.After(200 * time.Millisecond):
			}
			open()
			select {
			case p := <-artifact:
				if want := sha256Hex([]byte("aaa")); p.Digest.Hex != want {
					t.Errorf("%s planned with digest %v, want sha256:%s: it did not wait for the index that lists it", repo.artifact, p.Digest, want)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("the plan of %s did not come", repo.artifact)
			}
		})
	}
}
