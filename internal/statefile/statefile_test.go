package statefile

import (
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
)

func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestWrite(t *testing.T) {
	// The mode asked for, whatever the umask (the daemon runs with 0027,
	// an operator's shell often 0022 or 0077). Process-wide: this
	// package's tests do not run in parallel.
	old := syscall.Umask(0o077)
	t.Cleanup(func() { syscall.Umask(old) })
	tests := []struct {
		name   string
		before []byte // nil: no file yet
		perm   os.FileMode
	}{
		{"new key", nil, 0o600},
		{"new state", nil, 0o640},
		{"replaces", []byte("old and longer than the new one"), 0o644},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "state.json")
			if tt.before != nil {
				os.WriteFile(path, tt.before, 0o600)
			}
			if err := Write(path, []byte(`{"new":1}`), tt.perm); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != `{"new":1}` {
				t.Fatalf("read back %q, %v", got, err)
			}
			if st, _ := os.Stat(path); st.Mode().Perm() != tt.perm {
				t.Errorf("mode %v, want %v", st.Mode().Perm(), tt.perm)
			}
			if n := names(t, dir); !slices.Equal(n, []string{"state.json"}) {
				t.Errorf("the directory holds %v, want the file alone", n)
			}
		})
	}
}

// A write that fails leaves the old file as it was and no temp file.
func TestWriteFails(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	if err := os.Mkdir(path, 0o755); err != nil { // rename onto a directory fails
		t.Fatal(err)
	}
	if err := Write(path, []byte("x"), 0o600); err == nil {
		t.Fatal("no error writing over a directory")
	}
	if n := names(t, dir); !slices.Equal(n, []string{"state.json"}) {
		t.Errorf("the directory holds %v after a failed write, want only what was there", n)
	}
	if err := Write(filepath.Join(dir, "no-such-dir", "f"), []byte("x"), 0o600); err == nil {
		t.Fatal("no error writing into a missing directory")
	}
}
