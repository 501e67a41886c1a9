package door

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/warren-cache/warren/debian"
)

func TestDecompress(t *testing.T) {
	want, err := os.ReadFile("testdata/Packages")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"Packages", "Packages.gz", "Packages.xz", "Packages.bz2"} {
		t.Run(name, func(t *testing.T) {
			f, err := os.Open("testdata/" + name)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			r, err := decompress(name, f, maxIndexBytes)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			got, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("decompressed %d bytes, err %v; want the plain file", len(got), err)
			}
		})
	}
}

func TestDecompressCorrupt(t *testing.T) {
	for _, name := range []string{"Packages.gz", "Packages.xz"} {
		if _, err := decompress(name, strings.NewReader("not compressed at all"), maxIndexBytes); err == nil {
			t.Errorf("%s: no error for a corrupt stream", name)
		}
	}
}

func TestDecompressLimit(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(make([]byte, 1<<20))
	zw.Close()
	for _, tt := range []struct {
		limit   int64
		wantErr bool
	}{{1 << 20, false}, {1<<20 - 1, true}} {
		r, err := decompress("Packages.gz", bytes.NewReader(gz.Bytes()), tt.limit)
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, r)
		if tt.wantErr != errors.Is(err, errTooLarge) {
			t.Errorf("limit %d: read %d bytes, err %v", tt.limit, n, err)
		}
	}
}

// FuzzDecompressPackages feeds compressed garbage through the decompressors
// and the Packages parser: errors are fine, panics and hangs are not.
func FuzzDecompressPackages(f *testing.F) {
	for _, name := range []string{"Packages.gz", "Packages.xz", "Packages.bz2"} {
		if b, err := os.ReadFile("testdata/" + name); err == nil {
			f.Add(name, b)
		}
	}
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		r, err := decompress(name, bytes.NewReader(data), 4<<20) // small, to keep fuzzing fast
		if err != nil {
			return
		}
		defer r.Close()
		_ = debian.ParsePackages(r, func(debian.Package) error { return nil })
	})
}

// The system's xz, as learns use it: a whole stream decodes, a truncated
// or garbage one is an error (never a silently short index).
func TestSystemXZ(t *testing.T) {
	dec := findDecoders()
	if dec.xz == "" {
		if os.Getenv("WARREN_E2E") == "1" {
			t.Fatal("xz not found; `make test` installs it")
		}
		t.Skip("xz not installed")
	}
	dir := t.TempDir()
	want := bytes.Repeat([]byte("Package: x\nFilename: pool/x.deb\n\n"), 20000)
	plain := filepath.Join(dir, "Packages")
	os.WriteFile(plain, want, 0o644)
	if out, err := exec.Command(dec.xz, "-k", plain).CombinedOutput(); err != nil {
		t.Fatalf("xz: %v %s", err, out)
	}
	whole, _ := os.ReadFile(plain + ".xz")
	for name, body := range map[string][]byte{"whole": whole, "truncated": whole[:len(whole)/2], "garbage": []byte("not xz at all")} {
		p := filepath.Join(dir, name+".xz")
		os.WriteFile(p, body, 0o644)
		f, _ := os.Open(p)
		rc, err := dec.open(t.Context(), "Packages.xz", f, maxIndexBytes)
		var got []byte
		if err == nil {
			got, err = io.ReadAll(rc)
			rc.Close()
		}
		f.Close()
		switch {
		case name == "whole" && (err != nil || !bytes.Equal(got, want)):
			t.Errorf("whole stream: %d bytes, err %v", len(got), err)
		case name != "whole" && err == nil:
			t.Errorf("%s stream read as %d bytes with no error: a short index would pass as whole", name, len(got))
		}
	}
}
