package hub

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The state files are written like blobs (internal/statefile): mode 0640,
// and a save that fails leaves what was there and no temp file beside it.
func TestStateFilesSaved(t *testing.T) {
	tests := []struct {
		file string
		save func(dir string) error
	}{
		{"preload.json", func(dir string) error {
			st := PreloadState{Held: map[string]bool{"apt:x": true}}
			return st.Save(dir)
		}},
		{"replication.json", func(dir string) error {
			st := ReplicateState{Sources: map[string]*SourceState{"main": {Cursor: 7}}}
			return st.Save(dir)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			dir := t.TempDir()
			ls := func() []string {
				ents, _ := os.ReadDir(dir)
				var out []string
				for _, e := range ents {
					out = append(out, e.Name())
				}
				return out
			}
			path := filepath.Join(dir, tt.file)
			os.Mkdir(path, 0o755) // where the file should go: the rename fails
			if err := tt.save(dir); err == nil {
				t.Fatal("a save over a directory did not fail")
			}
			if got := ls(); !slices.Equal(got, []string{tt.file}) {
				t.Fatalf("after a failed save the directory holds %v", got)
			}
			os.Remove(path)
			if err := tt.save(dir); err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o640 {
				t.Fatalf("saved: %v, mode %v, want 0640", err, fi.Mode().Perm())
			}
			if got := ls(); !slices.Equal(got, []string{tt.file}) {
				t.Fatalf("after a save the directory holds %v", got)
			}
		})
	}
}
