package proxy

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"
)

// zchunk metadata (Fedora's primary.xml.zck): librepo first asks for the
// file's header (one range), then for the chunks it lacks, many ranges in
// one request. Debian's librepo is built without zchunk, so these are the
// requests it sends, made by hand: on a miss, while the fill is in
// progress (before, the whole file came back as 200, which zchunk's
// downloader cannot take), and on a hit; upstream sends the file once.
func TestZchunkMultiRange(t *testing.T) {
	up := newUpstream(t, 10)
	zck := randomBytes(600000, 31)
	zck[0] = 0 // "\0ZCK1", zchunk's lead
	copy(zck[1:], "ZCK1")
	zckPath := "/f40/repodata/" + sha256hex(zck) + "-primary.xml.zck"
	repomd := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo">
  <data type="primary_zck">
    <checksum type="sha256">%s</checksum>
    <header-checksum type="sha256">%s</header-checksum>
    <location href="repodata/%s-primary.xml.zck"/>
    <size>%d</size>
    <header-size>200</header-size>
  </data>
</repomd>
`, sha256hex(zck), sha256hex(zck[:200]), sha256hex(zck), len(zck))
	gate, reached := make(chan struct{}), make(chan struct{})
	up.mu.Lock()
	up.files["/f40/repodata/repomd.xml"] = []byte(repomd)
	up.mu.Unlock()
	// The mirror sends the first 300 kB at once, the rest when let go:
	// the multi-range request of the miss asks for ranges on both sides.
	up.hook(zckPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(zck)))
		w.Write(zck[:300000])
		w.(http.Flusher).Flush()
		close(reached)
		<-gate
		w.Write(zck[300000:])
	})
	h := newHarness(t, up)
	h.mustGet(up.URL+"/f40/repodata/repomd.xml", 200)
	if k, err := h.known(up.URL + zckPath); err != nil || k.Digest.Hex != sha256hex(zck) {
		t.Fatalf("the zck file is not hash-known: %+v %v", k, err)
	}
	many := make([]string, 0, 300)
	for i := range 300 {
		many = append(many, fmt.Sprintf("%d-%d", i*1900, i*1900+99))
	}
	for _, tc := range []struct {
		name, ranges string
		during       bool // asked while the fill is in progress
	}{
		{"the header, a miss", "0-199", true},
		{"chunks, a miss", "200-1199,250000-259999,599000-599999", true},
		{"chunks, a hit", "1200-1299,400000-400009,0-9", false},
		{"300 chunks, a hit", strings.Join(many, ","), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.during {
				select {
				case <-reached:
				default:
					go h.get(up.URL + zckPath) // starts the fill; wait for its first bytes
					<-reached
				}
			}
			if !tc.during {
				// The miss's fill stored: the next ask is a hit.
				h.settle()
				if err := h.store.Idle(t.Context()); err != nil {
					t.Fatal(err)
				}
			}
			req, _ := http.NewRequest(http.MethodGet, up.URL+zckPath, nil)
			req.Header.Set("Range", "bytes="+tc.ranges)
			// The head comes with the first range's first byte: the
			// answer is the fill's, whose end is not there yet.
			resp, err := h.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if want := map[bool]string{true: "MISS", false: "HIT"}[tc.during]; !strings.HasPrefix(resp.Header.Get("X-Cache"), want) {
				t.Fatalf("X-Cache %q, want %s", resp.Header.Get("X-Cache"), want)
			}
			if tc.during && strings.Contains(tc.ranges, ",") {
				close(gate) // the rest of the file: the last range can be sent
			}
			if resp.StatusCode != http.StatusPartialContent {
				t.Fatalf("status %d, want 206", resp.StatusCode)
			}
			specs := strings.Split(tc.ranges, ",")
			if len(specs) == 1 {
				body, _ := io.ReadAll(resp.Body)
				if !bytes.Equal(body, zck[:200]) {
					t.Fatal("the header's range holds other bytes")
				}
				return
			}
			mt, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
			if mt != "multipart/byteranges" {
				t.Fatalf("Content-Type %q, want multipart/byteranges", resp.Header.Get("Content-Type"))
			}
			mr := multipart.NewReader(resp.Body, params["boundary"])
			for i, spec := range specs {
				part, err := mr.NextPart()
				if err != nil {
					t.Fatalf("part %d: %v", i, err)
				}
				var a, b int
				fmt.Sscanf(spec, "%d-%d", &a, &b)
				if cr := part.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes %d-%d/%d", a, b, len(zck)) {
					t.Fatalf("part %d: Content-Range %q", i, cr)
				}
				body, _ := io.ReadAll(part)
				if !bytes.Equal(body, zck[a:b+1]) {
					t.Fatalf("part %d holds other bytes", i)
				}
			}
			if _, err := mr.NextPart(); err != io.EOF {
				t.Fatalf("more parts than ranges: %v", err)
			}
		})
	}
	h.settle()
	if n := up.count(zckPath); n != 1 {
		t.Fatalf("upstream sent the zck file %d times, want once", n)
	}
}

// A client that reads only zchunk metadata (Fedora's dnf asks for
// primary.xml.zck, never primary.xml.gz): warren fetches the plain
// primary.xml the same repomd.xml lists, once, and learns the packages'
// hashes from it. (Before, that repository's packages stayed cached by
// URL only: never verified, never shared with peers.)
func TestZchunkClientStillHashKnown(t *testing.T) {
	up := newUpstream(t, 10)
	rpmBody := randomBytes(50000, 33)
	repomdPath, primaryPath, rpmPath := addRPMRepo(up, rpmBody)
	zck := append([]byte("\x00ZCK1"), randomBytes(5000, 34)...)
	zckPath := "/el9/os/repodata/" + sha256hex(zck) + "-primary.xml.zck"
	up.mu.Lock()
	up.files[zckPath] = zck
	up.files[repomdPath] = bytes.Replace(up.files[repomdPath], []byte("</repomd>"), []byte(fmt.Sprintf(`  <data type="primary_zck">
    <checksum type="sha256">%s</checksum>
    <location href="repodata/%s-primary.xml.zck"/>
    <size>%d</size>
  </data>
</repomd>`, sha256hex(zck), sha256hex(zck), len(zck))), 1)
	up.mu.Unlock()
	h := newHarness(t, up)
	h.mustGet(up.URL+repomdPath, 200)
	h.mustGet(up.URL+zckPath, 200)
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if k, err := h.known(up.URL + rpmPath); err == nil && k.Digest.Hex == sha512hex(rpmBody) {
			break
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatal("the rpm never became hash-known: the plain primary.xml was not fetched beside the zchunk one")
		}
	}
	h.mustGet(up.URL+zckPath, 200) // again: nothing more fetched
	h.settle()
	if n := up.count(primaryPath); n != 1 {
		t.Fatalf("primary.xml.gz fetched %d times, want once", n)
	}
}
