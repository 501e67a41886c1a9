package cachestore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain is also Open run as another user (access_test.go), when
// CACHESTORE_OPEN names the cache to open.
func TestMain(m *testing.M) {
	if dir := os.Getenv("CACHESTORE_OPEN"); dir != "" {
		os.Exit(openAndReport(dir))
	}
	goleak.VerifyTestMain(m)
}

func openStore(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func sha(b []byte) Digest {
	s := sha256.Sum256(b)
	return Digest{Algo: "sha256", Hex: hex.EncodeToString(s[:])}
}

// fill stores b under its digest through a fill, as the proxy does.
func fill(t *testing.T, s *Store, b []byte) Digest {
	t.Helper()
	f, leader := s.BeginFill("test:" + sha(b).String())
	if !leader {
		t.Fatal("not leader of a fresh fill")
	}
	if err := f.Start(FillInfo{Algo: "sha256", Size: int64(len(b))}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	d, err := f.Commit(sha(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDigest(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string
	}{
		{"sha256:" + strings.Repeat("a", 64), ""},
		{"SHA512:" + strings.Repeat("A", 128), ""},
		{"sha1:" + strings.Repeat("0", 40), ""},
		{"md5:" + strings.Repeat("0", 32), "not supported"},
		{"sha256:" + strings.Repeat("a", 63), "64 hex digits"},
		{"sha256:" + strings.Repeat("g", 64), "not lowercase hex"},
		{"nocolon", "want <algo>:<hex>"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseDigest(tt.in)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("ParseDigest(%q) err = %v, want %q", tt.in, err, tt.wantErr)
			}
		})
	}
}

func TestFillCommitAndOpen(t *testing.T) {
	s := openStore(t, t.TempDir())
	body := []byte("hello, warren")
	d := fill(t, s, body)
	f, bi, err := s.OpenBlob(d)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, _ := io.ReadAll(f)
	if !bytes.Equal(got, body) || bi.Size != int64(len(body)) || bi.Hits != 1 {
		t.Fatalf("got %q, info %+v", got, bi)
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "blobs", "sha256", d.Hex[:2], d.Hex)); err != nil {
		t.Fatalf("blob not at its content address: %v", err)
	}
}

func TestFillRejectsWrongBytes(t *testing.T) {
	tests := []struct {
		name     string
		wantSize int64
		want     Digest
		wantErr  error
	}{
		{"wrong digest", 5, sha([]byte("other")), ErrDigestMismatch},
		{"short body", 6, sha([]byte("hello")), ErrSizeMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t, t.TempDir())
			f, _ := s.BeginFill("k")
			if err := f.Start(FillInfo{Algo: "sha256", Size: tt.wantSize}); err != nil {
				t.Fatal(err)
			}
			r, err := f.NewReader(t.Context(), 0)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			f.Write([]byte("hello"))
			if _, err := f.Commit(tt.want, tt.wantSize); !errors.Is(err, tt.wantErr) {
				t.Fatalf("Commit err = %v, want %v", err, tt.wantErr)
			}
			got, err := io.ReadAll(r)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("reader err = %v, want %v", err, tt.wantErr)
			}
			if len(got) > 0 {
				t.Fatalf("reader passed on %q of a rejected blob", got)
			}
			if _, err := s.Stat(sha([]byte("hello"))); !errors.Is(err, ErrNotFound) {
				t.Fatalf("rejected bytes are indexed: %v", err)
			}
			if left, _ := os.ReadDir(filepath.Join(s.Dir(), "tmp")); len(left) != 0 {
				t.Fatalf("temp files left: %v", left)
			}
		})
	}
}

// A reader that hears a fill failed and asks again gets a fresh fill, never
// the dead one (the old order told readers first and left a window).
func TestAbortedFillIsGoneBeforeReadersHear(t *testing.T) {
	s := openStore(t, t.TempDir())
	for i := range 200 {
		key := fmt.Sprintf("k%d", i)
		f, _ := s.BeginFill(key)
		if err := f.Start(FillInfo{Algo: "sha256", Size: 10}); err != nil {
			t.Fatal(err)
		}
		r, err := f.NewReader(t.Context(), 0)
		if err != nil {
			t.Fatal(err)
		}
		leader := make(chan bool)
		go func() {
			defer r.Close()
			io.ReadAll(r) // blocks until the abort
			_, l := s.BeginFill(key)
			leader <- l
		}()
		f.Abort(errors.New("upstream broke off"))
		if !<-leader {
			t.Fatalf("try %d: a request after the failure joined the dead fill", i)
		}
		nf, _ := s.BeginFill(key)
		nf.Abort(errors.New("done"))
	}
}

// The last byte is held back until Commit: a reader cannot finish a blob
// that is not yet verified.
func TestFillReaderHoldsBackLastByte(t *testing.T) {
	s := openStore(t, t.TempDir())
	body := []byte("abcdef")
	f, _ := s.BeginFill("k")
	if err := f.Start(FillInfo{Algo: "sha256", Size: 6}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(body); err != nil {
		t.Fatal(err)
	}
	r, err := f.NewReader(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, 10)
	n, err := r.Read(buf)
	if err != nil || n != 5 {
		t.Fatalf("read before commit = %d, %v; want 5 bytes", n, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	r2, _ := f.NewReader(ctx, 5)
	if _, err := r2.Read(buf); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("last byte came before commit: err = %v", err)
	}
	r2.Close()
	if _, err := f.Commit(sha(body), 6); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(r)
	if err != nil || string(rest) != "f" {
		t.Fatalf("after commit: %q, %v", rest, err)
	}
}

func TestFillFollowers(t *testing.T) {
	s := openStore(t, t.TempDir())
	body := bytes.Repeat([]byte("0123456789"), 100000)
	f, leader := s.BeginFill("k")
	if !leader {
		t.Fatal("not leader")
	}
	if _, leader2 := s.BeginFill("k"); leader2 {
		t.Fatal("second BeginFill for the same key became leader")
	}
	var wg sync.WaitGroup
	results := make([][]byte, 8)
	errs := make([]error, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := f.NewReader(t.Context(), 0)
			if err != nil {
				errs[i] = err
				return
			}
			defer r.Close()
			results[i], errs[i] = io.ReadAll(r)
		}()
	}
	if err := f.Start(FillInfo{Algo: "sha256", Size: int64(len(body))}); err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(body); off += 4096 {
		end := min(off+4096, len(body))
		if _, err := f.Write(body[off:end]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.Commit(sha(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i := range results {
		if errs[i] != nil || !bytes.Equal(results[i], body) {
			t.Fatalf("follower %d: %d bytes, err %v", i, len(results[i]), errs[i])
		}
	}
	// A reader that arrives after the commit reads the final file.
	r, err := f.NewReader(t.Context(), 10)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r)
	r.Close()
	if !bytes.Equal(got, body[10:]) {
		t.Fatalf("late reader got %d bytes", len(got))
	}
}

func TestRoomRefusesBelowMinFree(t *testing.T) {
	s, err := Open(Config{Dir: t.TempDir(), MinFreeBytes: 1 << 62})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f, _ := s.BeginFill("k")
	if err := f.Start(FillInfo{Algo: "sha256", Size: 10}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Start err = %v, want ErrNoSpace", err)
	}
	if _, err := f.NewReader(t.Context(), 0); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("reader err = %v, want ErrNoSpace", err)
	}
}

func TestRecover(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	good := fill(t, s, []byte("good blob"))
	gone := fill(t, s, []byte("blob whose file vanishes"))
	grown := fill(t, s, []byte("blob whose file changes size"))
	if err := s.PutCached("http://x/gone", Cached{Digest: gone, Size: 24}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutCached("http://x/good", Cached{Digest: good, Size: 9}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// What a crash can leave: a temp file, a blob renamed but never indexed;
	// and what an operator can do: delete or damage blob files.
	os.WriteFile(filepath.Join(dir, "tmp", "fill-123"), []byte("partial"), 0o600)
	orphanBody := []byte("renamed but not indexed")
	orphan := sha(orphanBody)
	os.MkdirAll(filepath.Join(dir, "blobs", "sha256", orphan.Hex[:2]), 0o750)
	os.WriteFile(filepath.Join(dir, "blobs", "sha256", orphan.Hex[:2], orphan.Hex), orphanBody, 0o600)
	os.Remove(filepath.Join(dir, "blobs", "sha256", gone.Hex[:2], gone.Hex))
	os.WriteFile(filepath.Join(dir, "blobs", "sha256", grown.Hex[:2], grown.Hex), []byte("x"), 0o600)

	s = openStore(t, dir)
	if left, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Errorf("temp files survived recovery: %v", left)
	}
	for _, d := range []Digest{gone, grown} {
		if _, err := s.Stat(d); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s still indexed: %v", d, err)
		}
		if _, _, err := s.OpenBlob(d); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s served after recovery: %v", d, err)
		}
	}
	if _, err := s.Cached("http://x/gone"); !errors.Is(err, ErrNotFound) {
		t.Errorf("url cache entry of a missing blob survived: %v", err)
	}
	if _, err := s.Cached("http://x/good"); err != nil {
		t.Errorf("good url cache entry lost: %v", err)
	}
	for _, d := range []Digest{good, orphan} {
		f, _, err := s.OpenBlob(d)
		if err != nil {
			t.Errorf("%s not served after recovery: %v", d, err)
			continue
		}
		f.Close()
	}
}

// A blob whose file changes size while the daemon runs is not served.
func TestOpenBlobSizeCheck(t *testing.T) {
	s := openStore(t, t.TempDir())
	d := fill(t, s, []byte("twelve bytes"))
	os.WriteFile(s.blobPath(d), []byte("short"), 0o600)
	if _, _, err := s.OpenBlob(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("OpenBlob err = %v, want ErrNotFound", err)
	}
}

func TestKnownRoundTrip(t *testing.T) {
	s := openStore(t, t.TempDir())
	d := sha([]byte("x"))
	if err := s.PutKnown(map[string]Known{"http://h/p.deb": {Digest: d, Size: 1}}); err != nil {
		t.Fatal(err)
	}
	k, err := s.Known("http://h/p.deb")
	if err != nil || k.Digest != d || k.Size != 1 {
		t.Fatalf("Known = %+v, %v", k, err)
	}
	if _, err := s.Known("http://h/other.deb"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown url err = %v", err)
	}
	if err := s.PutKnown(map[string]Known{"http://h/bad": {Digest: Digest{Algo: "md5", Hex: "00"}}}); err == nil {
		t.Fatal("PutKnown accepted an md5 digest")
	}
}

func TestSecondOpenFailsClearly(t *testing.T) {
	dir := t.TempDir()
	openStore(t, dir)
	if _, err := Open(Config{Dir: dir}); err == nil || !strings.Contains(err.Error(), "another warren") {
		t.Fatalf("second Open err = %v", err)
	}
}

// The usage totals change in one place, with the index entries: 1,000
// concurrent pairs of a reader opening a blob and a remover taking it away
// end with the true totals, never a negative count.
func TestUsageCannotDrift(t *testing.T) {
	s, err := Open(Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var ds []Digest
	for i := range 20 {
		ds = append(ds, fill(t, s, []byte(fmt.Sprintf("blob %d %s", i, strings.Repeat("x", i*100)))))
	}
	var wg sync.WaitGroup
	for i := range 1000 {
		d := ds[i%len(ds)]
		wg.Add(2)
		go func() {
			defer wg.Done()
			if b, _, err := s.OpenBlob(d); err == nil {
				b.Close()
			}
		}()
		go func() {
			defer wg.Done()
			_ = s.Remove(d)
		}()
	}
	wg.Wait()
	infos, err := s.Blobs()
	if err != nil {
		t.Fatal(err)
	}
	var want int64
	for _, bi := range infos {
		want += bi.Size
	}
	used, n, _ := s.Usage()
	if used != want || n != len(infos) {
		t.Fatalf("usage %d bytes in %d blobs, the index holds %d bytes in %d", used, n, want, len(infos))
	}
}

// Removing a blob removes the URL-cache entries that name it, so the URL
// is fetched again rather than revalidated into nothing.
func TestRemoveDropsURLEntries(t *testing.T) {
	s, err := Open(Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d := fill(t, s, []byte("InRelease bytes"))
	const u = "http://deb.example/debian/dists/stable/InRelease"
	if err := s.PutCached(u, Cached{Digest: d, Size: 15}); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(d); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Cached(u); !errors.Is(err, ErrNotFound) {
		t.Fatalf("URL entry after its blob was removed: %v, want ErrNotFound", err)
	}
}

// Facts round-trip through the compact form, and JSON facts of earlier
// versions still read.
func TestKnownEncoding(t *testing.T) {
	for _, k := range []Known{
		{Digest: sha([]byte("a")), Size: 12345, Name: "main/binary-amd64/Packages.xz"},
		{Digest: Digest{Algo: "sha512", Hex: strings.Repeat("ab", 64)}, Size: -1, Source: "https://example.org/x.nupkg"},
		{Digest: Digest{Algo: "sha1", Hex: strings.Repeat("01", 20)}, Size: 0},
		{Digest: sha([]byte("b")), Size: 9, Lister: 77, Learnt: 1700000000, Depth: 31},
	} {
		b, err := encodeKnown(k)
		if err != nil {
			t.Fatal(err)
		}
		var got Known
		if err := decodeKnown(b, &got); err != nil || got != k {
			t.Fatalf("round trip of %+v: %+v, %v", k, got, err)
		}
	}
	var old Known
	if err := decodeKnown([]byte(`{"digest":{"Algo":"sha256","Hex":"`+strings.Repeat("0", 64)+`"},"size":7}`), &old); err != nil || old.Size != 7 {
		t.Fatalf("JSON fact: %+v %v", old, err)
	}
	for _, bad := range [][]byte{nil, {1}, {1, 9}, {1, 1, 0}, {2, 1}} {
		if err := decodeKnown(bad, &old); err == nil {
			t.Fatalf("decodeKnown(%v) accepted a malformed record", bad)
		}
	}
}

// Where repository scopes nest, the deeper one's fact stands whichever is
// learnt first; an equal or deeper one replaces it.
func TestKnownDeeperScopeStands(t *testing.T) {
	s := openStore(t, t.TempDir())
	const u = "http://h/debian/pool/a.deb"
	// Scopes http://h/debian/ (16 bytes) and http://h/ (9).
	deep, shallow := Known{Digest: sha([]byte("right")), Size: 5, Depth: 16}, Known{Digest: sha([]byte("wrong")), Size: 5, Depth: 9}
	for _, step := range []struct {
		put  Known
		want Known
	}{{shallow, shallow}, {deep, deep}, {shallow, deep}, {deep, deep}} {
		if err := s.PutKnown(map[string]Known{u: step.put}); err != nil {
			t.Fatal(err)
		}
		got, err := s.Known(u)
		if err != nil || got.Digest != step.want.Digest {
			t.Fatalf("after putting depth %d: %+v %v, want the fact of depth %d", step.put.Depth, got, err, step.want.Depth)
		}
	}
}

func FuzzDecodeKnown(f *testing.F) {
	b, _ := encodeKnown(Known{Digest: sha([]byte("x")), Size: 5, Name: "n"})
	f.Add(b)
	f.Add([]byte(`{"digest":{"Algo":"sha256"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var k Known
		if decodeKnown(b, &k) != nil || b[0] == '{' {
			return
		}
		again, err := encodeKnown(k)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", k, err)
		}
		var k2 Known
		if err := decodeKnown(again, &k2); err != nil || k2 != k {
			t.Fatalf("%+v re-encoded decodes as %+v, %v", k, k2, err)
		}
	})
}

// Badger's cache monitor repeats itself every minute; those lines go to
// debug, one line each, and other warnings stay warnings.
func TestBadgerPeriodicWarningsQuiet(t *testing.T) {
	var buf bytes.Buffer
	l := badgerLogger{slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	l.Warningf("%s might be too small. Metrics: %s\n", "Block cache", "hit: 1 miss: 9\nmore")
	l.Warningf("%s might be too small. Metrics: %s\n", "Index cache", "x")
	l.Warningf("Cache life expectancy (in seconds): %+v\n", "\n -- Histogram: \nMin value: 0")
	if buf.Len() != 0 {
		t.Fatalf("periodic cache notes logged at info or above: %q", buf.String())
	}
	l.Warningf("While running doCompact: %v", "disk error")
	if !strings.Contains(buf.String(), "level=WARN") {
		t.Fatalf("a real warning was not logged: %q", buf.String())
	}
}

// damageIndex closes nothing; it damages a closed store's index files.
func damageIndex(t *testing.T, dir, how string) {
	t.Helper()
	idx := filepath.Join(dir, "index")
	entries, _ := os.ReadDir(idx)
	switch how {
	case "truncated table":
		n := 0
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".sst") {
				p := filepath.Join(idx, e.Name())
				st, _ := os.Stat(p)
				if err := os.Truncate(p, st.Size()/2); err != nil {
					t.Fatal(err)
				}
				n++
			}
		}
		if n == 0 {
			t.Fatal("no table file to damage: the test proves nothing")
		}
	case "lost MANIFEST":
		if err := os.Remove(filepath.Join(idx, "MANIFEST")); err != nil {
			t.Fatal(err)
		}
	}
}

// A damaged or lost index never stops the store: it is moved aside, the
// blobs are adopted again (each rehashed; a bad one is removed), and the
// learnt hashes are gone until metadata is fetched again.
func TestDamagedIndexRebuilt(t *testing.T) {
	for _, how := range []string{"truncated table", "lost MANIFEST"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(Config{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			good := fill(t, s, []byte(strings.Repeat("good blob ", 1000)))
			bad := fill(t, s, []byte(strings.Repeat("bit rot ", 1000)))
			facts := map[string]Known{}
			for i := range 5000 { // enough to be flushed into a table
				facts[fmt.Sprintf("http://deb.example/debian/pool/p%d.deb", i)] = Known{Digest: good, Size: 10000}
			}
			if err := s.PutKnown(facts); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			damageIndex(t, dir, how)
			badPath := filepath.Join(dir, "blobs", "sha256", bad.Hex[:2], bad.Hex)
			b, _ := os.ReadFile(badPath)
			b[10] ^= 0xff
			os.WriteFile(badPath, b, 0o600)

			s, err = Open(Config{Dir: dir})
			if err != nil {
				t.Fatalf("open after damage: %v", err)
			}
			defer s.Close()
			if _, err := s.Stat(good); err != nil {
				t.Fatalf("the good blob was not adopted: %v", err)
			}
			if _, err := s.Stat(bad); !errors.Is(err, ErrNotFound) {
				t.Fatalf("the damaged blob was adopted: %v", err)
			}
			if _, err := os.Stat(badPath); !os.IsNotExist(err) {
				t.Fatalf("the damaged blob file is still there: %v", err)
			}
			if used, n, _ := s.Usage(); n != 1 || used != 10000 {
				t.Fatalf("usage %d bytes in %d blobs, want 10000 in 1", used, n)
			}
			aside, _ := filepath.Glob(filepath.Join(dir, "index.damaged-*"))
			if len(aside) != 1 {
				t.Fatalf("damaged index kept aside: %v", aside)
			}
			// Usable: it learns and stores again.
			if err := s.PutKnown(map[string]Known{"http://x/y.deb": {Digest: good, Size: 10000}}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Another process holding the index is not damage: the open fails with a
// clear error, and nothing is moved.
func TestLockedIndexIsNotDamage(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Open(Config{Dir: dir}); !errors.Is(err, errIndexLocked) {
		t.Fatalf("second open: %v, want errIndexLocked", err)
	}
	if aside, _ := filepath.Glob(filepath.Join(dir, "index.damaged-*")); len(aside) != 0 {
		t.Fatalf("a locked index was moved aside: %v", aside)
	}
}

// verify stops when its context ends (an interrupted `cache verify`).
func TestVerifyStopsWithItsContext(t *testing.T) {
	s, err := Open(Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 3 {
		fill(t, s, []byte(fmt.Sprintf("blob %d", i)))
	}
	ctx, cancel := context.WithCancel(t.Context())
	rep, err := s.Verify(ctx, func(done, total int) {
		if done == 1 {
			cancel() // interrupted after the first blob
		}
	})
	if !errors.Is(err, context.Canceled) || rep.Checked != 1 {
		t.Fatalf("verify after an interrupt: checked %d, err %v; want 1 and context.Canceled", rep.Checked, err)
	}
}

// errorLog is a slog handler that passes each error message to a channel:
// the event a test waits on.
type errorLog chan string

func (e errorLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }
func (e errorLog) Handle(_ context.Context, r slog.Record) error {
	select {
	case e <- r.Message:
	default:
	}
	return nil
}
func (e errorLog) WithAttrs([]slog.Attr) slog.Handler { return e }
func (e errorLog) WithGroup(string) slog.Handler      { return e }

// A flipped byte in a stored blob is found, by the background scrub or by
// a recheck (a peer's report), and the blob removed; good blobs stay.
func TestScrubFindsBitRot(t *testing.T) {
	for _, tt := range []struct {
		name    string
		rate    int64
		recheck bool
	}{{"background scrub", 1 << 30, false}, {"recheck with the scrub off", 0, true}} {
		t.Run(tt.name, func(t *testing.T) {
			errs := make(errorLog, 8)
			s, err := Open(Config{Dir: t.TempDir(), ScrubRate: tt.rate, Logger: slog.New(errs)})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			good := fill(t, s, []byte(strings.Repeat("good ", 2000)))
			bad := fill(t, s, []byte(strings.Repeat("rots ", 2000)))
			p := filepath.Join(s.Dir(), "blobs", "sha256", bad.Hex[:2], bad.Hex)
			b, _ := os.ReadFile(p)
			b[5000] ^= 1
			os.WriteFile(p, b, 0o600)
			ctx, cancel := context.WithCancel(t.Context())
			ran := make(chan struct{})
			go func() { defer close(ran); s.Run(ctx) }()
			defer func() { cancel(); <-ran }()
			if tt.recheck {
				s.Recheck(bad)
			}
			select {
			case msg := <-errs:
				if !strings.Contains(msg, "does not match its digest") {
					t.Fatalf("logged %q", msg)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the damaged blob was not found")
			}
			if _, err := s.Stat(bad); !errors.Is(err, ErrNotFound) {
				t.Fatalf("the damaged blob is still indexed: %v", err)
			}
			if _, err := s.Stat(good); err != nil {
				t.Fatalf("a good blob went: %v", err)
			}
			if st := s.Scrubbed(); st.Bad != 1 {
				t.Fatalf("scrub figures %+v, want 1 bad", st)
			}
		})
	}
}

// A nearly full disk stops index writes before Badger could fault on a
// mapped page: facts and URL entries are refused with ErrNoSpace, fills
// pass through (no Room), and stored blobs are still served.
func TestIndexKeepsHeadroom(t *testing.T) {
	s, err := Open(Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d := fill(t, s, []byte("stored before the disk filled up"))
	s.statFree = func() int64 { return 1 << 20 } // 1 MiB left
	if err := s.PutKnown(map[string]Known{"http://x/a.deb": {Digest: d, Size: 31}}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("PutKnown on a full disk: %v, want ErrNoSpace", err)
	}
	if err := s.PutCached("http://x/InRelease", Cached{Digest: d, Size: 31}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("PutCached on a full disk: %v, want ErrNoSpace", err)
	}
	if err := s.Room(0); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Room on a full disk: %v, want ErrNoSpace", err)
	}
	b, _, err := s.OpenBlob(d)
	if err != nil {
		t.Fatalf("a stored blob is not served on a full disk: %v", err)
	}
	b.Close()
	s.statFree = nil
	if err := s.PutKnown(map[string]Known{"http://x/a.deb": {Digest: d, Size: 31}}); err != nil {
		t.Fatalf("PutKnown with room again: %v", err)
	}
}

// A fact the latest learn of its metadata file no longer lists is dropped;
// so is every fact of a file not learnt for maxIdle; facts with no lister
// (a feed answer) stay.
func TestSweepKnown(t *testing.T) {
	s, err := Open(Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d := sha([]byte("x"))
	pkgs, old := ListerID("http://deb.example/debian/dists/stable/main/binary-amd64/Packages"), ListerID("http://gone.example/Packages")
	put := func(lister uint64, at int64, urls ...string) {
		facts := map[string]Known{}
		for _, u := range urls {
			facts[u] = Known{Digest: d, Size: 1, Lister: lister, Learnt: at}
		}
		if err := s.PutKnown(facts); err != nil {
			t.Fatal(err)
		}
		if err := s.Learnt(lister, at, Digest{}); err != nil {
			t.Fatal(err)
		}
	}
	day := int64(24 * 3600)
	put(old, 1000, "http://gone.example/pool/g.deb")
	put(pkgs, 100*day, "http://deb.example/pool/a.deb", "http://deb.example/pool/removed.deb")
	put(pkgs, 101*day, "http://deb.example/pool/a.deb", "http://deb.example/pool/new.deb")
	if err := s.PutKnown(map[string]Known{"chocolatey:feed:x/1.0": {Digest: d, Size: 1}}); err != nil {
		t.Fatal(err)
	}
	// Read before the sweep, as requests do: what the sweep drops must
	// not outlive it in memory.
	for _, u := range []string{"http://deb.example/pool/removed.deb", "http://gone.example/pool/g.deb"} {
		if _, err := s.Known(u); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.SweepKnown(t.Context(), 101*day, 30*24*time.Hour)
	if err != nil || n != 2 {
		t.Fatalf("swept %d (%v), want 2", n, err)
	}
	for u, want := range map[string]bool{
		"http://deb.example/pool/a.deb": true, "http://deb.example/pool/new.deb": true, "chocolatey:feed:x/1.0": true,
		"http://deb.example/pool/removed.deb": false, "http://gone.example/pool/g.deb": false,
	} {
		if _, err := s.Known(u); (err == nil) != want {
			t.Errorf("%s kept = %v, want %v (%v)", u, err == nil, want, err)
		}
	}
}

// A scrub pass walks the index a batch at a time and still reaches every
// blob: more blobs than one batch, the last one damaged.
func TestScrubPassReachesEveryBlob(t *testing.T) {
	errs := make(errorLog, 8)
	s, err := Open(Config{Dir: t.TempDir(), ScrubRate: 1 << 30, Logger: slog.New(errs)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var last Digest
	for i := range scrubBatch + 10 {
		d := fill(t, s, []byte(fmt.Sprintf("blob %d", i)))
		if d.String() > last.String() {
			last = d // the last in index order
		}
	}
	p := filepath.Join(s.Dir(), "blobs", "sha256", last.Hex[:2], last.Hex)
	b, _ := os.ReadFile(p)
	b[0] ^= 1
	os.WriteFile(p, b, 0o600)
	ctx, cancel := context.WithCancel(t.Context())
	ran := make(chan struct{})
	go func() { defer close(ran); s.Run(ctx) }()
	defer func() { cancel(); <-ran }()
	select {
	case <-errs:
	case <-time.After(20 * time.Second):
		t.Fatal("the damaged blob, last in the index, was not reached")
	}
	if _, err := s.Stat(last); !errors.Is(err, ErrNotFound) {
		t.Fatalf("damaged blob still indexed: %v", err)
	}
	if st := s.Scrubbed(); st.Checked < int64(scrubBatch) {
		t.Fatalf("scrubbed %d blobs, want all %d", st.Checked, scrubBatch+10)
	}
}

// Facts are kept decoded in memory; a fact written while readers race it
// is what every read after the write returns.
func TestKnownAfterPutWhileReadersRace(t *testing.T) {
	s := openStore(t, t.TempDir())
	const u = "http://deb.example/debian/pool/main/a/a_1.0-1+b1_all.deb"
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					s.Known(u)
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	for i := range 300 {
		d := sha([]byte(fmt.Sprint(i)))
		if err := s.PutKnown(map[string]Known{u: {Digest: d, Size: int64(i)}}); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Known(u); err != nil || got.Digest != d {
			t.Fatalf("write %d: read back %v (%v), want %s", i, got.Digest, err, d)
		}
	}
}

// A running store makes the directories blobs go in ahead of the fills: a
// new directory costs what a new file does, and a fresh cache paid it on
// most of its first misses. Fills still make one that went missing.
func TestRunningStoreMakesBlobDirectoriesAhead(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir, DirsAhead: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(t.Context())
	ran := make(chan struct{})
	go func() { defer close(ran); s.Run(ctx) }()
	defer func() { cancel(); <-ran }()
	select {
	case <-s.dirsMade:
	case <-time.After(20 * time.Second):
		t.Fatal("the blob directories not made within 20s of Run")
	}
	for i := range 256 {
		if fi, err := os.Stat(filepath.Join(dir, "blobs", "sha256", fmt.Sprintf("%02x", i))); err != nil || !fi.IsDir() {
			t.Fatalf("blob directory %02x: %v", i, err)
		}
	}
	// One removed behind the store's back is made again by the fill that
	// needs it.
	body := []byte("a blob whose directory went missing")
	d := sha(body)
	if err := os.Remove(filepath.Dir(s.blobPath(d))); err != nil {
		t.Fatal(err)
	}
	if got := fill(t, s, body); got != d {
		t.Fatalf("filled %s, want %s", got, d)
	}
}

// A reader hands over its file for the rest (sendfile) only once the fill
// is verified, positioned where the reader is; never while bytes are
// coming, nor to a reader that must hear its bytes were thrown away.
func TestFillReaderRest(t *testing.T) {
	s := openStore(t, t.TempDir())
	body := []byte("0123456789abcdefghij")
	f, _ := s.BeginFill("rest")
	if err := f.Start(FillInfo{Algo: "sha256", Size: int64(len(body))}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(body[:10]); err != nil {
		t.Fatal(err)
	}
	rd, err := f.NewReader(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	head := make([]byte, 4)
	if _, err := io.ReadFull(rd, head); err != nil {
		t.Fatal(err)
	}
	if _, ok := rd.Rest(); ok {
		t.Fatal("Rest handed over the file while the fill was still growing")
	}
	if _, err := f.Write(body[10:]); err != nil {
		t.Fatal(err)
	}
	if _, ok := rd.Rest(); ok {
		t.Fatal("Rest handed over the file before the fill verified")
	}
	if _, err := f.Commit(sha(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
	file, ok := rd.Rest()
	if !ok {
		t.Fatal("Rest refused a verified fill")
	}
	rest, err := io.ReadAll(file)
	if err != nil || string(head)+string(rest) != string(body) {
		t.Fatalf("read %q then %q (%v), want %q", head, rest, err, body)
	}

	// A reader that took bytes of a generation thrown away is not handed
	// the new one.
	f2, _ := s.BeginFill("rest-restarted")
	if err := f2.Start(FillInfo{Algo: "sha256", Size: int64(len(body))}); err != nil {
		t.Fatal(err)
	}
	f2.Write([]byte("wrong bytes"))
	rd2, err := f2.NewReader(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rd2.Close()
	if _, err := rd2.Read(make([]byte, 3)); err != nil {
		t.Fatal(err)
	}
	if err := f2.Restart(); err != nil {
		t.Fatal(err)
	}
	f2.Write(body)
	if _, err := f2.Commit(sha(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
	if _, ok := rd2.Rest(); ok {
		t.Fatal("Rest handed the new bytes to a reader that took the thrown-away ones")
	}
	if _, err := rd2.Read(make([]byte, 3)); !errors.Is(err, ErrRestarted) {
		t.Fatalf("Read after the restart: %v, want ErrRestarted", err)
	}
}

// The learnt URLs of a digest are found by a scan of the facts (the index
// keeps no digest to URL key for them), which reads at most the number of
// facts it is given and says when it stopped short. (Before, cache show
// read every fact of the index, and said it did no scan.)
func TestKnownURLsBoundedScan(t *testing.T) {
	s, err := Open(Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d := Digest{Algo: "sha256", Hex: strings.Repeat("cd", 32)}
	facts := map[string]Known{"http://deb.example/z/named.deb": {Digest: d, Size: 1}}
	for i := range 20 {
		facts[fmt.Sprintf("http://deb.example/a/p%02d.deb", i)] = Known{Digest: Digest{Algo: "sha256", Hex: fmt.Sprintf("%064x", i)}, Size: 1}
	}
	if err := s.PutKnown(facts); err != nil {
		t.Fatal(err)
	}
	if urls, complete, err := s.KnownURLs(d, 50, 10); err != nil || complete || len(urls) != 0 {
		t.Fatalf("a scan of 10 facts of 21: %v, complete %v, %v; want nothing found and not complete", urls, complete, err)
	}
	if urls, complete, err := s.KnownURLs(d, 50, 100); err != nil || !complete || len(urls) != 1 || urls[0] != "http://deb.example/z/named.deb" {
		t.Fatalf("a scan of every fact: %v, complete %v, %v; want the one URL, complete", urls, complete, err)
	}
}

// Wait returns at once when Read would (bytes there, the end, a failed
// fill) and blocks otherwise: the readers of its context, already ended,
// tell which it did.
func TestFillReaderWait(t *testing.T) {
	s := openStore(t, t.TempDir())
	body := []byte("abcdef")
	done, cancel := context.WithCancel(t.Context())
	cancel()
	wait := func(f *Fill, off int64) error {
		t.Helper()
		r, err := f.NewReader(t.Context(), off)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		r.ctx = done // a Wait that blocks returns context.Canceled
		return r.Wait()
	}
	f, _ := s.BeginFill("k")
	if err := f.Start(FillInfo{Algo: "sha256", Size: 6}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := wait(f, 0); err != nil {
		t.Errorf("Wait with 5 bytes to read = %v; want nil at once", err)
	}
	if err := wait(f, 5); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait for the held last byte = %v; want it to block", err)
	}
	if _, err := f.Commit(sha(body), 6); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{5, 6} {
		if err := wait(f, off); err != nil {
			t.Errorf("Wait at %d of a committed fill = %v; want nil at once", off, err)
		}
	}

	g, _ := s.BeginFill("k2")
	if err := g.Start(FillInfo{Algo: "sha256", Size: 6}); err != nil {
		t.Fatal(err)
	}
	r, err := g.NewReader(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	g.Abort(errors.New("upstream went away"))
	if err := r.Wait(); err != nil {
		t.Errorf("Wait on a failed fill = %v; want nil, Read to say why", err)
	}
	if _, err := r.Read(make([]byte, 6)); err == nil {
		t.Error("Read of a failed fill gave no error")
	}
}
