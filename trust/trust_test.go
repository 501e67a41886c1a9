package trust

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// gpgKey is a throwaway key in a GNUPGHOME of the test's own, made and
// used by the real gpg, as a repository's publisher makes them.
type gpgKey struct {
	t     testing.TB
	home  string
	email string
}

func newGPGKey(t testing.TB, email, expire string) *gpgKey {
	t.Helper()
	if _, err := exec.LookPath("gpg"); err != nil {
		if os.Getenv("WARREN_E2E") == "1" {
			t.Fatal("gpg not found; `make test` installs gnupg")
		}
		t.Skip("gpg not installed")
	}
	k := &gpgKey{t: t, home: t.TempDir(), email: email}
	t.Cleanup(func() {
		cmd := exec.Command("gpgconf", "--kill", "gpg-agent")
		cmd.Env = append(os.Environ(), "GNUPGHOME="+k.home)
		cmd.Run()
	})
	k.gpg(nil, "--quick-gen-key", "warren test <"+email+">", "ed25519", "sign", expire)
	return k
}

func (k *gpgKey) gpg(stdin []byte, args ...string) []byte {
	k.t.Helper()
	cmd := exec.Command("gpg", append([]string{"--batch", "--yes", "--passphrase", "", "--pinentry-mode", "loopback"}, args...)...)
	cmd.Env = append(os.Environ(), "GNUPGHOME="+k.home)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		k.t.Fatalf("gpg %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.Bytes()
}

// keyring writes the public key, armored or binary, and returns its path.
func (k *gpgKey) keyring(armored bool) string {
	args := []string{"--export"}
	name := "key.gpg"
	if armored {
		args, name = []string{"--armor", "--export"}, "key.asc"
	}
	p := filepath.Join(k.t.TempDir(), name)
	if err := os.WriteFile(p, k.gpg(nil, append(args, k.email)...), 0o644); err != nil {
		k.t.Fatal(err)
	}
	return p
}

func (k *gpgKey) clearsign(text string) []byte {
	return k.gpg([]byte(text), "--local-user", k.email, "--clearsign")
}

func (k *gpgKey) detach(text string, armored bool) []byte {
	args := []string{"--local-user", k.email, "--detach-sign"}
	if armored {
		args = append(args, "--armor")
	}
	return k.gpg([]byte(text), args...)
}

// repoFor loads one repository's keys from a keyring file.
func repoFor(t testing.TB, keyring string) *Repo {
	t.Helper()
	keys, warnings := Load(Config{Keys: []RepoKeyring{{URL: "http://deb.example.org/debian", Keyring: keyring}}})
	if len(warnings) > 0 {
		t.Fatalf("warnings: %q", warnings)
	}
	r, ok := keys.For("http://deb.example.org/debian/dists/stable/InRelease")
	if !ok {
		t.Fatal("the repository has no keys")
	}
	return r
}

const release = "Origin: Example\nSuite: stable\nCodename: stable\nDate: Sun, 22 Nov 2026 00:00:00 UTC\nSHA256:\n " + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" + " 1234 main/binary-amd64/Packages\n"

func TestCheckInline(t *testing.T) {
	good := newGPGKey(t, "good@warren.invalid", "never")
	other := newGPGKey(t, "other@warren.invalid", "never")
	expiring := newGPGKey(t, "soon@warren.invalid", "1d")
	signed := good.clearsign(release)
	// After the keys and signatures were made: a signature from the
	// future does not verify.
	now := time.Now().Add(time.Minute)
	tests := []struct {
		name    string
		keyring string
		data    []byte
		at      time.Time
		want    error
	}{
		{"its key, binary keyring", good.keyring(false), signed, now, nil},
		{"its key, armored keyring", good.keyring(true), signed, now, nil},
		{"another key", other.keyring(false), signed, now, ErrUnknownSigner},
		{"re-signed with another key", good.keyring(false), other.clearsign(release), now, ErrUnknownSigner},
		{"text changed", good.keyring(false), bytes.Replace(signed, []byte("0123456789abcdef"), []byte("fedcba9876543210"), 1), now, ErrBadSignature},
		{"a line added", good.keyring(false), bytes.Replace(signed, []byte("Suite: stable\n"), []byte("Suite: stable\nAcquire-By-Hash: yes\n"), 1), now, ErrBadSignature},
		{"data after it", good.keyring(false), append(bytes.Clone(signed), "Origin: Evil\n"...), now, ErrBadSignature},
		{"data before it", good.keyring(false), append([]byte("SHA256:\n x 1 y\n"), signed...), now, ErrNotSigned},
		{"not signed", good.keyring(false), []byte(release), now, ErrNotSigned},
		{"its key expired", expiring.keyring(false), expiring.clearsign(release), now.Add(72 * time.Hour), ErrBadSignature},
		{"before it expired", expiring.keyring(false), expiring.clearsign(release), now, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := repoFor(t, tt.keyring).CheckInline(tt.data, tt.at)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if err == nil && (string(s.Text) != release || s.Signer == "") {
				t.Fatalf("signed text %q by %q, want the Release as written", s.Text, s.Signer)
			}
		})
	}
}

func TestCheckDetached(t *testing.T) {
	good := newGPGKey(t, "good@warren.invalid", "never")
	other := newGPGKey(t, "other@warren.invalid", "never")
	ring := good.keyring(false)
	now := time.Now().Add(time.Minute)
	for _, armored := range []bool{true, false} {
		sig := good.detach(release, armored)
		if _, err := repoFor(t, ring).CheckDetached([]byte(release), sig, now); err != nil {
			t.Fatalf("armored %v: %v", armored, err)
		}
		if _, err := repoFor(t, ring).CheckDetached([]byte(release+"\n"), sig, now); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("armored %v, changed: %v", armored, err)
		}
	}
	if _, err := repoFor(t, ring).CheckDetached([]byte(release), other.detach(release, true), now); !errors.Is(err, ErrUnknownSigner) {
		t.Fatalf("another key: %v", err)
	}
	if _, err := repoFor(t, ring).CheckDetached([]byte(release), nil, now); !errors.Is(err, ErrNotSigned) {
		t.Fatalf("no signature: %v", err)
	}
	if _, err := repoFor(t, ring).CheckDetached([]byte(release), []byte("-----BEGIN PGP SIGNATURE-----\n\nnot base64\n-----END PGP SIGNATURE-----\n"), now); err == nil {
		t.Fatal("a malformed signature verified")
	}
}

// A real Debian InRelease with Debian's real keys: several signatures,
// one by a key of the keyring is enough (as apt reads it).
func TestRealDebianInRelease(t *testing.T) {
	data, err := os.ReadFile("testdata/bookworm-updates.InRelease")
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC) // its Date
	s, err := repoFor(t, "testdata/debian-archive-bookworm-automatic.gpg").CheckInline(data, at)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(s.Text, []byte("Origin: Debian\n")) || bytes.Contains(s.Text, []byte("PGP")) {
		t.Fatalf("signed text starts %q", s.Text[:40])
	}
	if _, err := repoFor(t, "testdata/debian-archive-trixie-stable.gpg").CheckInline(data, at); !errors.Is(err, ErrUnknownSigner) {
		t.Fatalf("with trixie's key alone: %v, want an unknown signer", err)
	}
}

func TestLoad(t *testing.T) {
	a := newGPGKey(t, "a@warren.invalid", "never")
	b := newGPGKey(t, "b@warren.invalid", "never")
	g := newGPGKey(t, "global@warren.invalid", "never")
	apt := t.TempDir()
	for _, d := range []string{"sources.list.d", "trusted.gpg.d"} {
		os.MkdirAll(filepath.Join(apt, d), 0o755)
	}
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(name, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	copyFile := func(from, to string) {
		t.Helper()
		data, _ := os.ReadFile(from)
		write(to, string(data))
	}
	copyFile(g.keyring(true), filepath.Join(apt, "trusted.gpg.d", "global.asc"))
	armoredB, _ := os.ReadFile(b.keyring(true))
	inline := strings.ReplaceAll(strings.TrimSpace(string(armoredB)), "\n\n", "\n.\n")
	inline = strings.ReplaceAll(inline, "\n", "\n ")
	write(filepath.Join(apt, "sources.list"), "# a comment\n"+
		"deb [arch=amd64 signed-by="+a.keyring(false)+"] http://deb.example.org/debian bookworm main\n"+
		"deb http://global.example.org/debian bookworm main\n"+
		"deb [ trusted=yes ] http://unsigned.example.org/repo ./\n"+
		"deb [signed-by=/nonexistent/key.gpg] http://broken.example.org/debian bookworm main\n"+
		"deb cdrom:[Debian]/ bookworm main\n")
	write(filepath.Join(apt, "sources.list.d", "inline.sources"), "Types: deb\nURIs: http://inline.example.org/debian-security\nSuites: bookworm-security\nComponents: main\nSigned-By:\n "+inline+"\n\nTypes: deb\nURIs: http://off.example.org/debian\nSuites: x\nEnabled: no\nSigned-By: "+a.keyring(false)+"\n")
	yum := t.TempDir()
	write(filepath.Join(yum, "example.repo"), "[example]\nname=Example\nbaseurl=http://rpm.example.org/el9/x86_64/\nrepo_gpgcheck=1\ngpgkey=file://"+a.keyring(true)+"\n\n[nocheck]\nbaseurl=http://rpm.example.org/nocheck/\ngpgkey=file://"+a.keyring(true)+"\n\n[vars]\nbaseurl=http://rpm.example.org/$releasever/\nrepo_gpgcheck=1\ngpgkey=file://"+a.keyring(true)+"\n")
	keys, warnings := Load(Config{AptDir: apt, YumReposDir: yum,
		Keys: []RepoKeyring{{URL: "http://deb.example.org/debian/extra", Keyring: b.keyring(false)}}})
	if len(warnings) != 2 || !strings.Contains(strings.Join(warnings, "\n"), "/nonexistent/key.gpg") || !strings.Contains(strings.Join(warnings, "\n"), "$releasever") {
		t.Fatalf("warnings %q: want the keyring that is not there and the baseurl with variables", warnings)
	}
	signedRelease := map[*gpgKey][]byte{a: a.clearsign(release), b: b.clearsign(release), g: g.clearsign(release)}
	tests := []struct {
		url     string
		has     bool
		signer  *gpgKey // the key that verifies, nil: none does
		problem bool
	}{
		{"http://deb.example.org/debian/dists/bookworm/InRelease", true, a, false},
		{"http://DEB.example.org:80/debian/dists/bookworm/InRelease", true, a, false},
		{"http://deb.example.org/debian/extra/dists/x/InRelease", true, b, false}, // the longer base wins
		{"http://deb.example.org/debian-security/dists/x/InRelease", false, nil, false},
		{"http://global.example.org/debian/dists/bookworm/InRelease", true, g, false},
		{"http://inline.example.org/debian-security/dists/bookworm-security/InRelease", true, b, false},
		{"http://unsigned.example.org/repo/InRelease", false, nil, false},
		{"http://off.example.org/debian/dists/x/InRelease", false, nil, false},
		{"http://broken.example.org/debian/dists/bookworm/InRelease", true, nil, true},
		{"http://rpm.example.org/el9/x86_64/repodata/repomd.xml", true, a, false},
		{"http://rpm.example.org/nocheck/repodata/repomd.xml", false, nil, false},
		{"https://deb.example.org/debian/dists/bookworm/InRelease", false, nil, false},
	}
	for _, tt := range tests {
		r, ok := keys.For(tt.url)
		if ok != tt.has {
			t.Errorf("%s: has keys %v, want %v", tt.url, ok, tt.has)
			continue
		}
		if !ok {
			continue
		}
		if (r.Problem() != "") != tt.problem {
			t.Errorf("%s: problem %q", tt.url, r.Problem())
		}
		for k, data := range signedRelease {
			_, err := r.CheckInline(data, time.Now())
			if (err == nil) != (k == tt.signer) {
				t.Errorf("%s: signed by %s: %v", tt.url, k.email, err)
			}
		}
	}
}

// fingerprints are the key's primary fingerprint and its subkeys', as gpg
// lists them.
func (k *gpgKey) fingerprints() []string {
	var out []string
	for _, line := range strings.Split(string(k.gpg(nil, "--with-colons", "--fingerprint", "--with-subkey-fingerprints", k.email)), "\n") {
		if f := strings.Split(line, ":"); f[0] == "fpr" && len(f) > 9 {
			out = append(out, f[9])
		}
	}
	return out
}

// Signed-By as apt 2.6 reads it (sources.list(5), apt's gpgv method):
// fingerprints select keys from the keyrings named beside them (or from
// trusted.gpg.d when none is); a primary key's fingerprint takes its
// subkeys too, FPR! that very key alone, a subkey's fingerprint that
// subkey alone; a short key id, or a keyring that cannot be read, fails
// the source. Each row was checked against apt-get update of apt 2.6.2
// with the same keys and sources.
func TestSignedByAsApt(t *testing.T) {
	a, b := newGPGKey(t, "a@warren.invalid", "never"), newGPGKey(t, "b@warren.invalid", "never")
	A := a.fingerprints()[0]
	a.gpg(nil, "--quick-add-key", A, "ed25519", "sign", "never")
	fprs := a.fingerprints()
	if len(fprs) != 2 {
		t.Fatalf("key a has %d fingerprints, want a primary and a subkey", len(fprs))
	}
	S, B := fprs[1], b.fingerprints()[0]
	dir := t.TempDir()
	ringA, ringB := filepath.Join(dir, "a.gpg"), filepath.Join(dir, "b.gpg")
	both := filepath.Join(dir, "both.gpg")
	os.WriteFile(ringA, a.gpg(nil, "--export", a.email), 0o644)
	os.WriteFile(ringB, b.gpg(nil, "--export", b.email), 0o644)
	os.WriteFile(both, append(a.gpg(nil, "--export", a.email), b.gpg(nil, "--export", b.email)...), 0o644)
	signed := map[string][]byte{
		"primary": a.gpg([]byte(release), "--local-user", A+"!", "--clearsign"),
		"subkey":  a.gpg([]byte(release), "--local-user", S+"!", "--clearsign"),
		"b":       b.clearsign(release),
	}
	tests := []struct {
		signedBy string // as a one-line source's option: commas
		accepts  []string
		problem  bool // the source fails, closed
	}{
		{signedBy: A, accepts: []string{"primary", "subkey"}},
		{signedBy: strings.ToLower(A), accepts: []string{"primary", "subkey"}},
		{signedBy: A + "!", accepts: []string{"primary"}},
		{signedBy: S, accepts: []string{"subkey"}},
		{signedBy: S + "!", accepts: []string{"subkey"}},
		{signedBy: B, accepts: []string{"b"}},
		{signedBy: A + "," + B, accepts: []string{"primary", "subkey", "b"}},
		{signedBy: both, accepts: []string{"primary", "subkey", "b"}},
		{signedBy: both + "," + A, accepts: []string{"primary", "subkey"}},
		{signedBy: both + "," + A + "!", accepts: []string{"primary"}},
		{signedBy: both + "," + B, accepts: []string{"b"}},
		{signedBy: ringA + "," + ringB, accepts: []string{"primary", "subkey", "b"}},
		{signedBy: ringB + "," + A, problem: true},                              // A is not in b.gpg
		{signedBy: A[24:], problem: true},                                       // a long key id, not a fingerprint
		{signedBy: ringA + "," + A[24:], problem: true},                         // the same beside a keyring
		{signedBy: filepath.Join(dir, "none.gpg") + "," + ringA, problem: true}, // apt fails on the keyring it cannot read
	}
	for _, tt := range tests {
		name := strings.NewReplacer(A, "A", S, "S", B, "B", strings.ToLower(A), "a", A[24:], "A-id", dir+"/", "").Replace(tt.signedBy)
		for _, form := range []string{"one-line", "deb822"} {
			t.Run(name+"/"+form, func(t *testing.T) {
				apt := filepath.Join(t.TempDir(), "apt")
				os.MkdirAll(filepath.Join(apt, "trusted.gpg.d"), 0o755)
				os.MkdirAll(filepath.Join(apt, "sources.list.d"), 0o755)
				os.WriteFile(filepath.Join(apt, "trusted.gpg.d", "a.gpg"), a.gpg(nil, "--export", a.email), 0o644)
				os.WriteFile(filepath.Join(apt, "trusted.gpg.d", "b.gpg"), b.gpg(nil, "--export", b.email), 0o644)
				if form == "one-line" {
					os.WriteFile(filepath.Join(apt, "sources.list.d", "x.list"), []byte("deb [signed-by="+tt.signedBy+"] http://repo.example/debian stable main\n"), 0o644)
				} else {
					os.WriteFile(filepath.Join(apt, "sources.list.d", "x.sources"), []byte("Types: deb\nURIs: http://repo.example/debian\nSuites: stable\nComponents: main\nSigned-By: "+strings.ReplaceAll(tt.signedBy, ",", " ")+"\n"), 0o644)
				}
				keys, _ := Load(Config{AptDir: apt})
				repo, ok := keys.For("http://repo.example/debian/dists/stable/InRelease")
				if !ok {
					t.Fatal("no keys for the repository")
				}
				if got := repo.Problem() != ""; got != tt.problem {
					t.Fatalf("problem %q, want one: %v", repo.Problem(), tt.problem)
				}
				for _, who := range []string{"primary", "subkey", "b"} {
					s, err := repo.CheckInline(signed[who], time.Now().Add(time.Minute))
					if want := slices.Contains(tt.accepts, who); (err == nil) != want {
						t.Errorf("signed by %s: accepted %v (%v), want %v", who, err == nil, err, want)
						continue
					}
					if err != nil {
						continue
					}
					wantSigner, wantPrimary := map[string]string{"primary": A, "subkey": S, "b": B}[who], map[string]string{"primary": A, "subkey": A, "b": B}[who]
					if s.Signer != wantSigner || s.Primary != wantPrimary {
						t.Errorf("signed by %s: reported signer %s (primary %s), want %s (%s)", who, s.Signer, s.Primary, wantSigner, wantPrimary)
					}
				}
			})
		}
	}
}
