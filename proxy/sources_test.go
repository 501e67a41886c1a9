package proxy

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/warren-cache/warren/cachestore"
)

const (
	sourcesPath = "/debian/dists/stable/main/source/Sources.gz"
	dscPath     = "/debian/pool/main/h/hello/hello_1.0.dsc"
	tarPath     = "/debian/pool/main/h/hello/hello_1.0.tar.xz"
)

// addSources puts a source package (a .dsc and a tarball) into the
// repository, with a Sources.gz that Release lists beside Packages.gz.
func (u *upstream) addSources(dsc, tar []byte) {
	src := fmt.Sprintf("Package: hello\nBinary: hello\nVersion: 1.0\nFormat: 3.0 (native)\nDirectory: pool/main/h/hello\nFiles:\n 00000000000000000000000000000000 %d hello_1.0.dsc\nChecksums-Sha256:\n %s %d hello_1.0.dsc\n %s %d hello_1.0.tar.xz\nPackage-List:\n hello deb devel optional arch=any\n\n",
		len(dsc), sha256hex(dsc), len(dsc), sha256hex(tar), len(tar))
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(src))
	zw.Close()
	u.mu.Lock()
	defer u.mu.Unlock()
	u.files[dscPath], u.files[tarPath], u.files[sourcesPath] = dsc, tar, gz.Bytes()
	u.files[releasePath] = append(u.files[releasePath], fmt.Sprintf(" %s %d main/source/Sources.gz\n", sha256hex(gz.Bytes()), gz.Len())...)
}

// apt-get source: Sources gives each file's hash, so the .dsc and tarballs
// are stored by digest, served from the store and checked like .debs.
func TestSourcePackages(t *testing.T) {
	up := newUpstream(t, 4096)
	dsc := []byte("Format: 3.0 (native)\nSource: hello\nVersion: 1.0\n")
	tar := randomBytes(300000, 7)
	up.addSources(dsc, tar)
	h := newHarness(t, up)
	h.mustGet(up.URL+releasePath, 200)
	h.mustGet(up.URL+sourcesPath, 200)
	for path, body := range map[string][]byte{dscPath: dsc, tarPath: tar} {
		k, err := h.known(up.URL + path)
		if err != nil || k.Digest.Hex != sha256hex(body) || k.Size != int64(len(body)) {
			t.Fatalf("%s: hash not learnt from Sources: %+v, %v", path, k, err)
		}
		for i, want := range []string{"MISS", "HIT"} {
			resp, got := h.mustGet(up.URL+path, 200)
			if !bytes.Equal(got, body) || !strings.HasPrefix(resp.Header.Get("X-Cache"), want) {
				t.Fatalf("%s GET %d: %d bytes, X-Cache %q, want %s", path, i+1, len(got), resp.Header.Get("X-Cache"), want)
			}
		}
		if n := up.count(path); n != 1 {
			t.Fatalf("%s: upstream GETs %d, want 1", path, n)
		}
		if _, err := h.store.Stat(cachestore.Digest{Algo: "sha256", Hex: sha256hex(body)}); err != nil {
			t.Fatalf("%s not stored by digest: %v", path, err)
		}
	}
}

// A tarball that does not hash to what Sources says never reaches the
// client whole and is not stored.
func TestSourceWrongDigest(t *testing.T) {
	up := newUpstream(t, 4096)
	tar := randomBytes(100000, 8)
	up.addSources([]byte("dsc"), tar)
	h := newHarness(t, up)
	h.mustGet(up.URL+releasePath, 200)
	h.mustGet(up.URL+sourcesPath, 200)
	evil := bytes.Clone(tar)
	evil[0] ^= 0xff
	up.hook(tarPath, func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", up.modAt, bytes.NewReader(evil))
	})
	h.rejectsWrongBytes(up.URL+tarPath, evil, tar)
}
