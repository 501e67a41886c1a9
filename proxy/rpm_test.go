package proxy

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// addRPMRepo puts an RPM repository on the upstream: repomd.xml lists a
// primary.xml.gz (sha256, named by its checksum) that lists one package by
// sha512.
func addRPMRepo(up *upstream, rpmBody []byte) (repomdPath, primaryPath, rpmPath string) {
	rpmPath = "/el9/os/Packages/h/hello-1.0-1.noarch.rpm"
	primary := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="1">
<package type="rpm"><name>hello</name><arch>noarch</arch>
  <checksum type="sha512" pkgid="YES">%s</checksum>
  <size package="%d" installed="1" archive="1"/>
  <location href="Packages/h/hello-1.0-1.noarch.rpm"/>
</package>
</metadata>
`, sha512hex(rpmBody), len(rpmBody))
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(primary))
	zw.Close()
	psum := sha256hex(gz.Bytes())
	primaryPath = "/el9/os/repodata/" + psum + "-primary.xml.gz"
	repomd := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo">
  <revision>1</revision>
  <data type="primary">
    <checksum type="sha256">%s</checksum>
    <location href="repodata/%s-primary.xml.gz"/>
    <size>%d</size>
  </data>
</repomd>
`, psum, psum, gz.Len())
	repomdPath = "/el9/os/repodata/repomd.xml"
	up.mu.Lock()
	defer up.mu.Unlock()
	up.files[repomdPath] = []byte(repomd)
	up.files[primaryPath] = gz.Bytes()
	up.files[rpmPath] = rpmBody
	return repomdPath, primaryPath, rpmPath
}

func TestRPMRepository(t *testing.T) {
	up := newUpstream(t, 10)
	rpmBody := randomBytes(300000, 7)
	repomd, primary, rpmPath := addRPMRepo(up, rpmBody)
	h := newHarness(t, up)

	h.mustGet(up.URL+repomd, 200)
	k, err := h.known(up.URL + primary)
	if err != nil || k.Digest.Algo != "sha256" || k.Name != "primary" {
		t.Fatalf("primary not learnt from repomd.xml: %+v, %v", k, err)
	}
	resp, _ := h.mustGet(up.URL+primary, 200)
	if !strings.HasPrefix(resp.Header.Get("X-Cache"), "MISS") {
		t.Fatalf("primary X-Cache %q", resp.Header.Get("X-Cache"))
	}
	k, err = h.known(up.URL + rpmPath)
	if err != nil || k.Digest.Algo != "sha512" || k.Size != int64(len(rpmBody)) {
		t.Fatalf("rpm not learnt from primary.xml: %+v, %v", k, err)
	}
	for i, want := range []string{"MISS", "HIT"} {
		resp, body := h.mustGet(up.URL+rpmPath, 200)
		if !bytes.Equal(body, rpmBody) || !strings.HasPrefix(resp.Header.Get("X-Cache"), want) {
			t.Fatalf("rpm GET %d: %d bytes, X-Cache %q", i, len(body), resp.Header.Get("X-Cache"))
		}
	}
	if n := up.count(rpmPath); n != 1 {
		t.Fatalf("upstream GETs of the rpm: %d, want 1", n)
	}
	// Stored under its sha512, as the metadata names it.
	if _, err := os.Stat(filepath.Join(h.dir, "blobs", "sha512", k.Digest.Hex[:2], k.Digest.Hex)); err != nil {
		t.Fatalf("rpm not stored by sha512: %v", err)
	}
	// The metadata named by its checksum is immutable: never revalidated.
	h.clock.advance(time.Hour)
	h.mustGet(up.URL+primary, 200)
	if n := up.count(primary); n != 1 {
		t.Fatalf("primary fetched %d times, want 1", n)
	}
}

func TestRPMWrongDigest(t *testing.T) {
	up := newUpstream(t, 10)
	rpmBody := randomBytes(100000, 8)
	repomd, primary, rpmPath := addRPMRepo(up, rpmBody)
	h := newHarness(t, up)
	h.mustGet(up.URL+repomd, 200)
	h.mustGet(up.URL+primary, 200)
	up.mu.Lock()
	bad := bytes.Clone(rpmBody)
	bad[0] ^= 1
	up.files[rpmPath] = bad
	up.mu.Unlock()
	h.rejectsWrongBytes(up.URL+rpmPath, bad, rpmBody)
}
