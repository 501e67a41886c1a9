package cachestore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
)

// readHit opens d for a hit and reads it whole through Content.
func readHit(t *testing.T, s *Store, d Digest) []byte {
	t.Helper()
	b, _, err := s.OpenHit(d, "")
	if err != nil {
		t.Fatalf("OpenHit: %v", err)
	}
	defer b.Close()
	got, err := io.ReadAll(b.Content())
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// A small blob's hits share one descriptor, each reading at its own
// offset, concurrently; a big one is opened per hit (for sendfile).
func TestHotDescriptorShared(t *testing.T) {
	s := openStore(t, t.TempDir())
	body := bytes.Repeat([]byte("hot "), 5000)
	d := fill(t, s, body)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, _, err := s.OpenHit(d, "")
			if err != nil {
				errs <- err
				return
			}
			defer b.Close()
			// Two halves, with a seek between, as a Range request does.
			r := b.Content()
			if _, err := r.Seek(int64(len(body)/2), io.SeekStart); err != nil {
				errs <- err
				return
			}
			got, err := io.ReadAll(r)
			if err == nil && !bytes.Equal(got, body[len(body)/2:]) {
				err = fmt.Errorf("read %d wrong bytes", len(got))
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := len(s.hot.m); n != 1 {
		t.Fatalf("%d shared descriptors, want 1", n)
	}
	if hf := s.hot.m[d]; hf.refs != 0 {
		t.Fatalf("descriptor still has %d readers after every Close", hf.refs)
	}
	big := fill(t, s, bytes.Repeat([]byte("b"), hotMaxSize+1))
	b, _, err := s.OpenHit(big, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Content().(*os.File); !ok {
		t.Fatalf("a blob over %d bytes is read through %T, want its own *os.File", hotMaxSize, b.Content())
	}
	b.Close()
}

// A shared descriptor never outlives its blob's truth: a blob cut short
// on disk is dropped, not served short; a dropped blob is not found, and
// the readers it had finish reading.
func TestHotDescriptorFollowsTheDisk(t *testing.T) {
	s := openStore(t, t.TempDir())
	body := bytes.Repeat([]byte("twenty bytes, twice "), 2)
	d := fill(t, s, body)
	readHit(t, s, d) // now shared
	if err := os.Truncate(s.blobPath(d), 5); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.OpenHit(d, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("OpenHit of a blob cut short on disk: %v, want ErrNotFound", err)
	}

	d2 := fill(t, s, []byte("another small blob"))
	readHit(t, s, d2)
	open, _, err := s.OpenHit(d2, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.dropBlob(d2); err != nil {
		t.Fatal(err)
	}
	if len(s.hot.m) != 0 {
		t.Fatalf("%d descriptors kept for dropped blobs", len(s.hot.m))
	}
	if got, err := io.ReadAll(open.Content()); err != nil || string(got) != "another small blob" {
		t.Fatalf("a reader open before the drop read %q, %v", got, err)
	}
	open.Close()
	if _, _, err := s.OpenHit(d2, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("OpenHit after the drop: %v, want ErrNotFound", err)
	}
}

// The descriptors kept are bounded, least recently used going first.
func TestHotDescriptorsBounded(t *testing.T) {
	s := openStore(t, t.TempDir())
	var first Digest
	for i := range hotMaxFiles + 20 {
		d := fill(t, s, []byte(fmt.Sprintf("small blob %d", i)))
		if i == 0 {
			first = d
		}
		readHit(t, s, d)
	}
	if n := len(s.hot.m); n != hotMaxFiles {
		t.Fatalf("%d descriptors kept, want at most %d", n, hotMaxFiles)
	}
	if s.hot.m[first] != nil {
		t.Fatal("the least recently used descriptor was kept")
	}
}

// A descriptor opened before its blob was forgotten (dropped, stored
// again in another scope: made public, made private) is not kept: the
// record read with it no longer holds, and a later hit would be answered
// with the old privacy.
func TestHotDescriptorForgottenWhileOpened(t *testing.T) {
	var h hotFiles
	d := Digest{Algo: "sha256", Hex: "ab" + string(bytes.Repeat([]byte("0"), 62))}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	stamp := h.stamp(d)
	h.forget(d) // the blob was stored again meanwhile
	if hf := h.put(d, f, BlobInfo{Digest: d, Scopes: []string{"pold"}}, stamp); hf != nil {
		t.Fatal("a descriptor opened before its blob was forgotten was kept, with its out-of-date record")
	}
	f.Close()
	g, _ := os.Open(os.DevNull)
	if hf := h.put(d, g, BlobInfo{Digest: d}, h.stamp(d)); hf == nil {
		t.Fatal("a descriptor opened after the forget was not kept")
	}
	h.closeAll()
}
