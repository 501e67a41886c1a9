package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fileServer is serveDir over a directory of its own, which put fills
// (before or after the server starts).
type fileServer struct {
	*countingServer
	dir string
}

func newFileServer(t *testing.T) *fileServer {
	dir := t.TempDir()
	return &fileServer{countingServer: serveDir(t, dir), dir: dir}
}

func (fs *fileServer) put(t *testing.T, path string, b []byte) {
	t.Helper()
	p := filepath.Join(fs.dir, filepath.FromSlash(path))
	if strings.HasSuffix(path, "/") {
		p = filepath.Join(p, "index.html") // what http.FileServer answers for a directory
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func hexSum256(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// getBody fetches u through warren and returns the body.
func getBody(t *testing.T, c *http.Client, u string) (int, []byte) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// Cross-origin poisoning: a client fetches, through warren, metadata from
// a server it controls that lists its payload under ANOTHER host's URL
// (rpm xml:base, an apt Filename that resolves elsewhere, a feed entry),
// and the payload itself. A later request for the real mirror's URL must
// get the mirror's bytes, from the mirror: facts count only inside the
// repository that listed them, and blobs are shared by digest only after
// the asker's own repository listed that digest.
func TestCrossOriginPoisoning(t *testing.T) {
	good := bytes.Repeat([]byte("the real package "), 4000)
	payload := bytes.Repeat([]byte("the attacker's payload "), 3000)

	t.Run("rpm xml:base", func(t *testing.T) {
		mirror, evil := newFileServer(t), newFileServer(t)
		target := "/el9/os/Packages/h/hello-1.0-1.noarch.rpm"
		mirror.put(t, target, good)
		evil.put(t, "/repo/Packages/p/payload-1.0-1.noarch.rpm", payload)
		primary := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="2">
<package type="rpm"><name>hello</name><arch>noarch</arch>
  <checksum type="sha256" pkgid="YES">%[1]s</checksum><size package="%[2]d" installed="1" archive="1"/>
  <location xml:base="%[3]s/el9/os/" href="Packages/h/hello-1.0-1.noarch.rpm"/>
</package>
<package type="rpm"><name>payload</name><arch>noarch</arch>
  <checksum type="sha256" pkgid="YES">%[1]s</checksum><size package="%[2]d" installed="1" archive="1"/>
  <location href="Packages/p/payload-1.0-1.noarch.rpm"/>
</package>
</metadata>
`, hexSum256(payload), len(payload), mirror.URL)
		gz := gzipped([]byte(primary))
		psum := hexSum256(gz)
		evil.put(t, "/repo/repodata/"+psum+"-primary.xml.gz", gz)
		evil.put(t, "/repo/repodata/repomd.xml", []byte(fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo"><revision>1</revision>
  <data type="primary"><checksum type="sha256">%s</checksum><location href="repodata/%s-primary.xml.gz"/><size>%d</size></data>
</repomd>
`, psum, psum, len(gz))))
		u, _, _ := startWarren(t, "--cache-dir", t.TempDir())
		c := proxyClient(t, u)
		for _, p := range []string{"/repo/repodata/repomd.xml", "/repo/repodata/" + psum + "-primary.xml.gz", "/repo/Packages/p/payload-1.0-1.noarch.rpm"} {
			if code, _ := getBody(t, c, evil.URL+p); code != 200 {
				t.Fatalf("%s: %d", p, code)
			}
		}
		code, body := getBody(t, c, mirror.URL+target)
		if code != 200 || !bytes.Equal(body, good) || mirror.count(target) != 1 {
			t.Fatalf("the mirror's URL: %d, real bytes %v, payload %v, mirror asked %d times", code, bytes.Equal(body, good), bytes.Equal(body, payload), mirror.count(target))
		}
	})

	for _, filename := range []string{"//%s/debian/pool/main/h/hello/hello_1.0_all.deb", "../../%s/debian/pool/main/h/hello/hello_1.0_all.deb"} {
		t.Run("apt Filename "+strings.SplitN(filename, "%", 2)[0], func(t *testing.T) {
			mirror, evil := newFileServer(t), newFileServer(t)
			target := "/debian/pool/main/h/hello/hello_1.0_all.deb"
			mirror.put(t, target, good)
			evil.put(t, "/debian/pool/main/p/payload/payload_1.0_all.deb", payload)
			host := strings.TrimPrefix(mirror.URL, "http://")
			// The payload first: it is learnt whatever warren makes of the
			// line after it.
			pkgs := fmt.Sprintf("Package: payload\nVersion: 1.0\nArchitecture: all\nFilename: pool/main/p/payload/payload_1.0_all.deb\nSize: %d\nSHA256: %s\n\n"+
				"Package: hello\nVersion: 1.0\nArchitecture: all\nFilename: %s\nSize: %d\nSHA256: %s\n\n",
				len(payload), hexSum256(payload), fmt.Sprintf(filename, host), len(payload), hexSum256(payload))
			evil.put(t, "/debian/dists/stable/main/binary-all/Packages", []byte(pkgs))
			evil.put(t, "/debian/dists/stable/Release", []byte(fmt.Sprintf("Suite: stable\nSHA256:\n %s %d main/binary-all/Packages\n", hexSum256([]byte(pkgs)), len(pkgs))))
			u, _, logs := startWarren(t, "--cache-dir", t.TempDir())
			c := proxyClient(t, u)
			for _, p := range []string{"/debian/dists/stable/Release", "/debian/dists/stable/main/binary-all/Packages", "/debian/pool/main/p/payload/payload_1.0_all.deb"} {
				if code, _ := getBody(t, c, evil.URL+p); code != 200 {
					t.Fatalf("%s: %d", p, code)
				}
			}
			code, body := getBody(t, c, mirror.URL+target)
			if code != 200 || !bytes.Equal(body, good) || mirror.count(target) != 1 {
				t.Fatalf("the mirror's URL: %d, real bytes %v, payload %v, mirror asked %d times", code, bytes.Equal(body, good), bytes.Equal(body, payload), mirror.count(target))
			}
			// The line teaches nothing: refused as malformed, or as a file
			// outside the repository.
			if l := logs.String(); !strings.Contains(l, "outside its own repository") && !strings.Contains(l, "malformed repository metadata") {
				t.Fatal("the log does not say the foreign Filename taught nothing")
			}
		})
	}

	t.Run("chocolatey feed", func(t *testing.T) {
		legit, evil := newFileServer(t), newFileServer(t)
		entry := func(base string, body []byte) string {
			sum := sha512.Sum512(body)
			return fmt.Sprintf(`<?xml version="1.0" encoding="utf-8"?>
<entry xml:base="%[1]s" xmlns="http://www.w3.org/2005/Atom" xmlns:d="http://schemas.microsoft.com/ado/2007/08/dataservices" xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata">
  <id>%[1]sPackages(Id='tool',Version='2.0.0')</id>
  <content type="application/zip" src="%[1]spackage/tool/2.0.0" />
  <m:properties><d:Id>tool</d:Id><d:Version>2.0.0</d:Version>
    <d:PackageHash>%[2]s</d:PackageHash><d:PackageHashAlgorithm>SHA512</d:PackageHashAlgorithm><d:PackageSize m:type="Edm.Int64">%[3]d</d:PackageSize>
  </m:properties>
</entry>`, base, base64.StdEncoding.EncodeToString(sum[:]), len(body))
		}
		legit.put(t, "/api/v2/Packages(Id='tool',Version='2.0.0')", []byte(entry(legit.URL+"/api/v2/", good)))
		legit.put(t, "/api/v2/package/tool/2.0.0", good)
		evil.put(t, "/api/v2/Packages(Id='tool',Version='2.0.0')", []byte(entry(evil.URL+"/api/v2/", payload)))
		evil.put(t, "/api/v2/package/tool/2.0.0", payload)
		cfgFile := filepath.Join(t.TempDir(), "warren.yaml")
		os.WriteFile(cfgFile, []byte(fmt.Sprintf("chocolatey:\n  upstream: %s/api/v2/\n  feeds:\n    evil: %s/api/v2/\n", legit.URL, evil.URL)), 0o644)
		u, _, _ := startWarren(t, "--config", cfgFile, "--cache-dir", t.TempDir())
		c := &http.Client{}
		for _, p := range []string{"/chocolatey/evil/api/v2/Packages(Id='tool',Version='2.0.0')", "/chocolatey/evil/api/v2/package/tool/2.0.0"} {
			if code, _ := getBody(t, c, u+p); code != 200 {
				t.Fatalf("%s: %d", p, code)
			}
		}
		code, body := getBody(t, c, u+"/chocolatey/api/v2/package/tool/2.0.0")
		if code != 200 || !bytes.Equal(body, good) || legit.count("/api/v2/package/tool/2.0.0") != 1 {
			t.Fatalf("the default feed's package: %d, real bytes %v, payload %v, legit feed asked %d times", code, bytes.Equal(body, good), bytes.Equal(body, payload), legit.count("/api/v2/package/tool/2.0.0"))
		}
	})
}
