package trust

import (
	"bytes"
	"os"
	"testing"
	"time"
)

// FuzzParseSources: apt's and dnf's files, whatever they hold, give
// bounded lists; and a Keys built from what they name finds no repository
// for a URL that is not http(s).
func FuzzParseSources(f *testing.F) {
	f.Add([]byte("deb [signed-by=/a.gpg] http://deb.example.org/debian bookworm main\n"))
	f.Add([]byte("Types: deb\nURIs: http://a/ http://b/\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n x\nEnabled: yes\n\n"))
	f.Add([]byte("[r]\nbaseurl=http://a/\n  http://b/\nrepo_gpgcheck=1\ngpgkey=file:///k\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, parse := range []func() (int, error){
			func() (int, error) { s, err := ParseSourcesList(bytes.NewReader(data), "f"); return len(s), err },
			func() (int, error) { s, err := ParseDeb822Sources(bytes.NewReader(data), "f"); return len(s), err },
			func() (int, error) { s, err := ParseRepoFile(bytes.NewReader(data), "f"); return len(s), err },
		} {
			if n, _ := parse(); n > maxConfigEntries {
				t.Fatalf("%d entries: past the bound", n)
			}
		}
		if u, ok := normalize(string(data), true); ok && !bytes.HasPrefix([]byte(u), []byte("http")) {
			t.Fatalf("normalized %q to %q", data, u)
		}
	})
}

// FuzzCheckInline: no input verifies against Debian's keys but what they
// signed, and none makes the check panic.
func FuzzCheckInline(f *testing.F) {
	real, err := os.ReadFile("testdata/bookworm-updates.InRelease")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(real)
	f.Add([]byte("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nx\n-----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n"))
	keys, _ := Load(Config{Keys: []RepoKeyring{{URL: "http://deb.debian.org/debian", Keyring: "testdata/debian-archive-bookworm-automatic.gpg"}}})
	r, _ := keys.For("http://deb.debian.org/debian/dists/bookworm-updates/InRelease")
	at := time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := r.CheckInline(data, at)
		if err != nil {
			return
		}
		// What verified must be the real file's signed text, but for
		// what the signature does not cover (line ends, trailing space:
		// RFC 4880's text signatures).
		want, _ := r.CheckInline(real, at)
		if !bytes.Equal(canon(s.Text), canon(want.Text)) {
			t.Fatalf("a file that is not Debian's verified: %q", s.Text[:min(len(s.Text), 80)])
		}
	})
}

func canon(b []byte) []byte {
	lines := bytes.Split(b, []byte("\n"))
	for i, l := range lines {
		lines[i] = bytes.TrimRight(l, " \t\r")
	}
	return bytes.TrimRight(bytes.Join(lines, []byte("\n")), "\n")
}
