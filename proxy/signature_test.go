package proxy

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/hub"
	"github.com/warren-cache/warren/hub/preload"
	"github.com/warren-cache/warren/hub/replicate"
	"github.com/warren-cache/warren/trust"
)

// signer is a repository publisher's throwaway key, made and used by the
// real gpg in a GNUPGHOME of the test's own.
type signer struct {
	t     testing.TB
	home  string
	email string
}

func newSigner(t testing.TB, email string) *signer {
	t.Helper()
	if _, err := exec.LookPath("gpg"); err != nil {
		if os.Getenv("WARREN_E2E") == "1" {
			t.Fatal("gpg not found; `make test` installs gnupg")
		}
		t.Skip("gpg not installed")
	}
	s := &signer{t: t, home: t.TempDir(), email: email}
	t.Cleanup(func() {
		cmd := exec.Command("gpgconf", "--kill", "gpg-agent")
		cmd.Env = append(os.Environ(), "GNUPGHOME="+s.home)
		cmd.Run()
	})
	s.gpg(nil, "--quick-gen-key", "warren test <"+email+">", "ed25519", "sign", "never")
	return s
}

func (s *signer) gpg(stdin []byte, args ...string) []byte {
	s.t.Helper()
	cmd := exec.Command("gpg", append([]string{"--batch", "--yes", "--passphrase", "", "--pinentry-mode", "loopback"}, args...)...)
	cmd.Env = append(os.Environ(), "GNUPGHOME="+s.home)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		s.t.Fatalf("gpg %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.Bytes()
}

func (s *signer) keyring() string {
	p := filepath.Join(s.t.TempDir(), "key.gpg")
	if err := os.WriteFile(p, s.gpg(nil, "--export", s.email), 0o644); err != nil {
		s.t.Fatal(err)
	}
	return p
}

func (s *signer) clearsign(b []byte) []byte {
	return s.gpg(b, "--local-user", s.email, "--clearsign")
}

func (s *signer) detach(b []byte) []byte {
	return s.gpg(b, "--local-user", s.email, "--detach-sign", "--armor")
}

// withKeys makes repo (a base URL) signed by the keyring, as the
// configuration's signatures.keys would.
func withKeys(t testing.TB, repo, keyring string) harnessOpt {
	return func(c *testConfig, _ *cachestore.Config) {
		keys, warnings := trust.Load(trust.Config{Keys: []trust.RepoKeyring{{URL: repo, Keyring: keyring}}})
		if len(warnings) > 0 {
			t.Fatalf("keys: %q", warnings)
		}
		c.Keys = keys
	}
}

// signRelease replaces the upstream's InRelease by the same Release
// clearsigned with s's key (extra fields added first).
func signRelease(up *upstream, s *signer, extra string) {
	up.mu.Lock()
	rel := up.files[releasePath]
	up.mu.Unlock()
	if i := bytes.Index(rel, []byte("-----BEGIN PGP SIGNED MESSAGE-----")); i >= 0 {
		panic("signRelease: already signed")
	}
	rel = append([]byte(extra), rel...)
	signed := s.clearsign(rel)
	up.mu.Lock()
	up.files[releasePath] = signed
	up.modAt = up.modAt.Add(time.Hour) // a new generation: not a 304
	up.mu.Unlock()
}

// stateOf is the door's signature state of the upstream's suite.
func stateOf(h *harness, suite string) door.SignatureState {
	for _, st := range h.door.SignatureStates() {
		if st.Repository == suite {
			return st
		}
	}
	return door.SignatureState{}
}

// A node with the repository's key: a signed InRelease is learnt from; a
// hostile mirror's InRelease, re-signed with another key and listing new
// hashes, is passed to the client unchanged (apt decides) but teaches
// nothing: the forged index files it lists are not learnt, and the
// forged package is refused against what the signed generation said.
func TestSignedInReleaseOnANode(t *testing.T) {
	publisher, mirror := newSigner(t, "publisher@warren.invalid"), newSigner(t, "mirror@warren.invalid")
	up := newUpstream(t, 1000)
	signRelease(up, publisher, "")
	h := newHarness(t, up, withKeys(t, up.URL+"/debian/", publisher.keyring()))
	h.clock.ns.Store(time.Now().UnixNano()) // the keys' own time
	h.learn()
	suite := up.URL + "/debian/dists/stable/"
	verified := stateOf(h, suite)
	good := h.mustGetKnown(up.debURL)

	forged := randomBytes(1000, 99)
	up.setRepo(forged)
	signRelease(up, mirror, "")
	h.clock.advance(time.Minute)
	_, body := h.mustGet(up.URL+releasePath, 200)
	up.mu.Lock()
	served := bytes.Equal(body, up.files[releasePath])
	byHash := "/debian/dists/stable/main/binary-amd64/by-hash/SHA256/" + sha256hex(up.files[packagesPath])
	up.mu.Unlock()
	if !served {
		t.Fatal("the client did not get the mirror's InRelease as it was")
	}
	h.mustGet(up.URL+byHash, 200) // what apt asks next: served, as apt checks it
	if k := h.mustGetKnown(up.debURL); k.Digest != good.Digest {
		t.Fatalf("the forged generation was learnt: the package's hash is now %s, was %s", k.Digest, good.Digest)
	}
	resp, err := h.client.Get(up.debURL)
	if err == nil {
		b, _ := ioReadAll(resp)
		if resp.StatusCode == 200 && bytes.Equal(b, forged) {
			t.Fatal("the forged package was served")
		}
	}
	if verified.State != door.SigVerified || verified.Signer == "" {
		t.Fatalf("the signed suite: %+v, want verified", verified)
	}
	if st := stateOf(h, suite); st.State != door.SigFailed || !strings.Contains(st.Reason, "not trusted") {
		t.Fatalf("the forged suite: %+v, want failed, signed by a key not trusted", st)
	}
}

// mustGetKnown is what warren learnt of rawURL, which must be something.
func (h *harness) mustGetKnown(rawURL string) cachestore.Known {
	h.t.Helper()
	k, err := h.known(rawURL)
	if err != nil {
		h.t.Fatalf("nothing learnt of %s: %v", rawURL, err)
	}
	return k
}

// A Release without InRelease is checked with its Release.gpg, which
// warren fetches itself when the Release arrives (apt asks for it after).
func TestReleaseWithDetachedSignature(t *testing.T) {
	publisher, other := newSigner(t, "publisher@warren.invalid"), newSigner(t, "other@warren.invalid")
	for _, tt := range []struct {
		name   string
		by     *signer
		learnt bool
	}{{"its key", publisher, true}, {"another key", other, false}} {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t, 1000)
			up.mu.Lock()
			rel := up.files[releasePath]
			delete(up.files, releasePath)
			up.files["/debian/dists/stable/Release"] = rel
			up.files["/debian/dists/stable/Release.gpg"] = tt.by.detach(rel)
			up.mu.Unlock()
			h := newHarness(t, up, withKeys(t, up.URL+"/debian/", publisher.keyring()))
			h.clock.ns.Store(time.Now().UnixNano())
			h.mustGet(up.URL+"/debian/dists/stable/Release", 200)
			h.mustGet(up.URL+packagesPath, 200)
			_, err := h.known(up.debURL)
			if (err == nil) != tt.learnt {
				t.Fatalf("the package's hash learnt: %v, want %v", err == nil, tt.learnt)
			}
			if up.count("/debian/dists/stable/Release.gpg") != 1 {
				t.Fatalf("Release.gpg fetched %d times, want once", up.count("/debian/dists/stable/Release.gpg"))
			}
		})
	}
}

// A Release past its Valid-Until is not learnt (a mirror replaying an old,
// validly signed generation), and a repository with no key is learnt from
// as before, shown as such.
func TestValidUntilAndUnsigned(t *testing.T) {
	publisher := newSigner(t, "publisher@warren.invalid")
	up := newUpstream(t, 1000)
	signRelease(up, publisher, "Valid-Until: "+time.Now().Add(-time.Hour).UTC().Format(time.RFC1123)+"\n")
	h := newHarness(t, up, withKeys(t, up.URL+"/debian/", publisher.keyring()))
	h.clock.ns.Store(time.Now().UnixNano())
	h.mustGet(up.URL+releasePath, 200)
	h.mustGet(up.URL+packagesPath, 200)
	if _, err := h.known(up.debURL); err == nil {
		t.Fatal("an expired Release was learnt from")
	}
	if st := stateOf(h, up.URL+"/debian/dists/stable/"); st.State != door.SigFailed || !strings.Contains(st.Reason, "expired") {
		t.Fatalf("state %+v, want failed: expired", st)
	}

	plain := newUpstream(t, 1000)
	h2 := newHarness(t, plain, withKeys(t, up.URL+"/debian/", publisher.keyring()))
	h2.learn()
	if st := stateOf(h2, plain.URL+"/debian/dists/stable/"); st.State != door.SigNoKey {
		t.Fatalf("a repository with no key: %+v, want %q", st, door.SigNoKey)
	}
}

// A hub stores no InRelease that fails: its nodes (and clients) keep the
// previous generation, and its change feed never offers the forged one.
func TestHubRefusesForgedInRelease(t *testing.T) {
	publisher, mirror := newSigner(t, "publisher@warren.invalid"), newSigner(t, "mirror@warren.invalid")
	up := newUpstream(t, 1000)
	signRelease(up, publisher, "")
	h := newHarness(t, up, asHub(hub.FetchAndPreload, 5), withKeys(t, up.URL+"/debian/", publisher.keyring()))
	h.clock.ns.Store(time.Now().UnixNano())
	_, first := h.mustGet(up.URL+releasePath, 200)
	h.mustGet(up.URL+packagesPath, 200)
	up.setRepo(randomBytes(1000, 98))
	signRelease(up, mirror, "")
	up.mu.Lock()
	forged := up.files[releasePath]
	up.mu.Unlock()
	h.clock.advance(time.Minute)
	resp, body := h.mustGet(up.URL+releasePath, 200)
	if !bytes.Equal(body, first) || bytes.Equal(body, forged) {
		t.Fatalf("the hub handed out %d bytes (X-Cache %q), want the previous generation", len(body), resp.Header.Get("X-Cache"))
	}
	if _, err := h.store.Stat(cachestore.Digest{Algo: "sha256", Hex: sha256hex(forged)}); err == nil {
		t.Fatal("the hub stored the forged InRelease")
	}
	changes, _, err := h.store.Changes(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range changes {
		if c.Digest.Hex == sha256hex(forged) {
			t.Fatal("the forged InRelease is in the hub's change feed")
		}
	}
	if st := stateOf(h, up.URL+"/debian/dists/stable/"); st.State != door.SigFailed {
		t.Fatalf("state %+v, want failed", st)
	}
}

// repomd.xml is checked with its repomd.xml.asc.
func TestRepomdSignature(t *testing.T) {
	publisher, other := newSigner(t, "publisher@warren.invalid"), newSigner(t, "other@warren.invalid")
	for _, tt := range []struct {
		name   string
		by     *signer
		learnt bool
	}{{"its key", publisher, true}, {"another key", other, false}} {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t, 10)
			repomd, primary, _ := addRPMRepo(up, randomBytes(3000, 5))
			up.mu.Lock()
			up.files[repomd+".asc"] = tt.by.detach(up.files[repomd])
			up.mu.Unlock()
			h := newHarness(t, up, withKeys(t, up.URL+"/el9/os/", publisher.keyring()))
			h.clock.ns.Store(time.Now().UnixNano())
			h.mustGet(up.URL+repomd, 200)
			_, err := h.known(up.URL + primary)
			if (err == nil) != tt.learnt {
				t.Fatalf("primary's hash learnt: %v, want %v", err == nil, tt.learnt)
			}
		})
	}
}

func ioReadAll(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// Replication and preload check signatures as a fetch does: a source hub
// without the keys holds a mirror's re-signed generation; a hub with them
// pulls the signed generation and refuses the forged one (its nodes keep
// the signed one), and its preload run refuses it from the mirror.
func TestSignaturesReplicationAndPreload(t *testing.T) {
	publisher, mirror := newSigner(t, "publisher@warren.invalid"), newSigner(t, "mirror@warren.invalid")
	up := newUpstream(t, 10)
	good := aptPkg{"app", "1.0", "", randomBytes(20000, 71)}
	up.setArchive([]aptPkg{good})
	signRelease(up, publisher, "")
	list := hub.PreloadList{Apt: []hub.AptPreload{{URL: up.URL + "/debian", Suites: []string{"stable"}, Components: []string{"main"},
		Architectures: []string{"amd64"}, Packages: []string{"app"}}}}
	// The source hub has no keys: it learns and offers whatever comes.
	main := newHarness(t, up, asSyncHub("main", hub.FetchAndPreload, hub.SyncToken{Name: "all", Token: allToken}))
	main.clock.ns.Store(time.Now().UnixNano())
	if run, err := main.preload(t.Context(), preload.Options{List: list}); err != nil || run.Fetched != 1 {
		t.Fatalf("the source hub's preload: %+v %v", run, err)
	}
	up.mu.Lock()
	signedGen := bytes.Clone(up.files[releasePath])
	up.mu.Unlock()
	sec := newHarness(t, up, asSyncHub("secondary", hub.FetchAndPreload), withKeys(t, up.URL+"/debian/", publisher.keyring()))
	sec.clock.ns.Store(time.Now().UnixNano())
	if r := sec.pull(t.Context(), main, allToken, hub.Repos{}, 0, false); !r.OK() {
		t.Fatalf("pulling the signed generation: %+v", r)
	}

	evil := aptPkg{"app", "1.1", "", randomBytes(20000, 72)}
	up.setArchive([]aptPkg{evil})
	signRelease(up, mirror, "")
	main.clock.advance(time.Minute)
	if run, err := main.preload(t.Context(), preload.Options{List: list}); err != nil || run.Fetched != 1 {
		t.Fatalf("the source hub took the mirror's generation: %+v %v", run, err)
	}
	r := sec.pull(t.Context(), main, allToken, hub.Repos{}, 0, false)
	if r.OK() || !strings.Contains(strings.Join(r.Failures, "\n"), "signature") {
		t.Fatalf("pulling the mirror's generation: %+v, want it refused for its signature", r)
	}
	key, _ := door.CanonicalString(up.URL + releasePath)
	if c, err := sec.store.Cached(key); err != nil || c.Digest.Hex != sha256hex(signedGen) {
		t.Fatalf("the pulling hub's InRelease is %+v %v, want the signed generation", c, err)
	}
	if k := sec.mustGetKnown(up.URL + good.path()); k.Digest.Hex != sha256hex(good.body) {
		t.Fatal("the pulling hub learnt the mirror's generation")
	}
	if _, err := sec.known(up.URL + evil.path()); err == nil {
		t.Fatal("the pulling hub learnt the mirror's package")
	}
	// Its own preload from the mirror refuses the generation, and takes
	// none of what it lists.
	sec.clock.advance(time.Minute)
	run, err := sec.preload(t.Context(), preload.Options{List: list})
	if err != nil || run.Fetched != 0 || !strings.Contains(strings.Join(run.Failures, "\n"), "signature") {
		t.Fatalf("preloading the mirror's generation: %+v %v, want it refused", run, err)
	}
	changes, _, err := sec.store.Changes(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range changes {
		if c.Key == key && c.Digest.Hex != sha256hex(signedGen) {
			t.Fatal("the pulling hub offers the mirror's InRelease in its own change feed")
		}
	}
}

// A check that verified is remembered for the same bytes, read as the same
// kind of file, in the same repository only: bytes /debian/'s key signed
// do not pass as /other/'s InRelease (another key), an InRelease's bytes
// served as a Release still need their Release.gpg, and a remembered
// check says so on the page as a new one would.
func TestVerifiedChecksStayInTheirRepository(t *testing.T) {
	publisher, internal, mirror := newSigner(t, "publisher@warren.invalid"), newSigner(t, "internal@warren.invalid"), newSigner(t, "mirror@warren.invalid")
	setup := func(t *testing.T) (*upstream, *harness) {
		up := newUpstream(t, 1000)
		signRelease(up, publisher, "")
		up.mu.Lock()
		for _, p := range []string{releasePath, packagesPath, debPath} {
			up.files["/other/"+strings.TrimPrefix(p, "/debian/")] = up.files[p]
		}
		up.mu.Unlock()
		keys := func(c *testConfig, _ *cachestore.Config) {
			k, w := trust.Load(trust.Config{Keys: []trust.RepoKeyring{
				{URL: up.URL + "/debian/", Keyring: publisher.keyring()},
				{URL: up.URL + "/other/", Keyring: internal.keyring()},
			}})
			if len(w) > 0 {
				t.Fatal(w)
			}
			c.Keys = k
		}
		h := newHarness(t, up, keys)
		h.clock.ns.Store(time.Now().UnixNano())
		h.learn() // /debian/'s InRelease verified with /debian/'s key
		return up, h
	}
	t.Run("another repository's InRelease", func(t *testing.T) {
		up, h := setup(t)
		h.mustGet(up.URL+"/other/dists/stable/InRelease", 200)
		h.mustGet(up.URL+"/other/dists/stable/main/binary-amd64/Packages.gz", 200)
		if _, err := h.known(up.URL + "/other/pool/main/h/hello/hello_1.0_amd64.deb"); err == nil {
			t.Error("/other/ learnt from an InRelease /other/'s key did not sign")
		}
		if st := stateOf(h, up.URL+"/other/dists/stable/"); st.State != door.SigFailed {
			t.Errorf("/other/: %+v, want failed", st)
		}
	})
	t.Run("an InRelease's bytes as a Release", func(t *testing.T) {
		up, h := setup(t)
		up.mu.Lock()
		up.files["/debian/dists/stable/Release"] = up.files[releasePath] // and no Release.gpg
		up.mu.Unlock()
		h.mustGet(up.URL+"/debian/dists/stable/Release", 200)
		h.known(up.URL + "/debian/dists/stable/Release") // its learn (and check) done
		st := stateOf(h, up.URL+"/debian/dists/stable/")
		if st.State != door.SigFailed || !strings.Contains(st.Reason, "Release.gpg") {
			t.Errorf("a Release with no Release.gpg: %+v, want failed for want of it", st)
		}
	})
	t.Run("a remembered check is shown", func(t *testing.T) {
		up, h := setup(t)
		suite := up.URL + "/debian/dists/stable/"
		serve := func(b []byte) {
			up.mu.Lock()
			up.files[releasePath] = b
			up.modAt = up.modAt.Add(time.Hour)
			up.mu.Unlock()
			h.clock.advance(time.Minute) // past index_ttl: fetched again
			h.mustGet(up.URL+releasePath, 200)
			h.known(suite + "InRelease") // its learn (and check) done
		}
		up.mu.Lock()
		good := up.files[releasePath]
		up.mu.Unlock()
		serve(mirror.clearsign([]byte("Origin: test\nSuite: stable\n")))
		if st := stateOf(h, suite); st.State != door.SigFailed {
			t.Fatalf("a mirror's InRelease: %+v, want failed", st)
		}
		serve(good) // the bytes checked first, again
		if st := stateOf(h, suite); st.State != door.SigVerified || st.Signer == "" {
			t.Errorf("the publisher's InRelease again: %+v, want verified, by its key", st)
		}
	})
}

// A hub checks a repomd.xml whatever planned its digest: one a metalink
// names the hash of (a mirror group) is stored, handed out and preloaded
// from only when its repomd.xml.asc verifies, as one planned by its URL.
func TestHubChecksMetalinkRepomd(t *testing.T) {
	publisher, mirror := newSigner(t, "publisher@warren.invalid"), newSigner(t, "mirror@warren.invalid")
	for _, tt := range []struct {
		name   string
		by     *signer
		stored bool
	}{{"its key", publisher, true}, {"a mirror's key", mirror, false}} {
		t.Run(tt.name, func(t *testing.T) {
			site := newMirrorSite(t, 1000)
			for i, u := range site.mirrors {
				u.mu.Lock()
				u.files[site.path(i, "repodata/repomd.xml.asc")] = tt.by.detach(site.repomd)
				u.mu.Unlock()
			}
			keys := func(c *testConfig, _ *cachestore.Config) {
				var rk []trust.RepoKeyring
				for _, b := range site.bases {
					rk = append(rk, trust.RepoKeyring{URL: b, Keyring: publisher.keyring()})
				}
				k, w := trust.Load(trust.Config{Keys: rk})
				if len(w) > 0 {
					t.Fatal(w)
				}
				c.Keys = k
			}
			h := newHarness(t, site.lists, asHub(hub.FetchAndPreload, 5), keys)
			h.clock.ns.Store(time.Now().UnixNano())
			_, body := h.mustGet(site.metalinkURL(), 200)
			base := listed(t, body).Mirrors[0].Base
			resp, got, err := h.get(base + "repodata/repomd.xml")
			if err != nil {
				t.Fatal(err)
			}
			_, serr := h.store.Stat(cachestore.Digest{Algo: "sha256", Hex: sha256hex(site.repomd)})
			if stored := serr == nil; stored != tt.stored {
				t.Errorf("repomd.xml stored: %v, want %v", stored, tt.stored)
			}
			if served := resp.StatusCode == 200 && bytes.Equal(got, site.repomd); served != tt.stored {
				t.Errorf("repomd.xml handed out (%d): %v, want %v", resp.StatusCode, served, tt.stored)
			}
			run, err := h.preload(t.Context(), preload.Options{List: hub.PreloadList{RPM: []hub.RPMPreload{{BaseURL: base, Packages: []string{"hello"}}}}})
			if took := run.Fetched > 0; took != tt.stored {
				t.Errorf("preload took %d packages (failures %q, %v); want some: %v", run.Fetched, run.Failures, err, tt.stored)
			}
		})
	}
}

// A preload run acts on what the door's check passed, not on the bytes it
// holds: a warren that keeps a Release failing its check (a node passes it
// to its clients) preloads nothing that Release lists.
func TestPreloadReadsOnlyVerifiedReleases(t *testing.T) {
	publisher, mirror := newSigner(t, "publisher@warren.invalid"), newSigner(t, "mirror@warren.invalid")
	for _, tt := range []struct {
		name    string
		by      *signer
		fetched int
	}{{"its key", publisher, 1}, {"a mirror's key", mirror, 0}} {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t, 10)
			up.setArchive([]aptPkg{{"app", "1.0", "", randomBytes(20000, 73)}})
			signRelease(up, tt.by, "")
			h := newHarness(t, up, withKeys(t, up.URL+"/debian/", publisher.keyring()))
			h.clock.ns.Store(time.Now().UnixNano())
			list := hub.PreloadList{Apt: []hub.AptPreload{{URL: up.URL + "/debian", Suites: []string{"stable"}, Components: []string{"main"},
				Architectures: []string{"amd64"}, Packages: []string{"app"}}}}
			run, err := h.preload(t.Context(), preload.Options{List: list})
			if run.Fetched != tt.fetched {
				t.Errorf("preload took %d packages (failures %q, %v), want %d", run.Fetched, run.Failures, err, tt.fetched)
			}
		})
	}
}

// A hub with the keys that pulls from one without them applies the index
// files and packages of a repository with keys only once a verified
// Release lists them: a mirror's forged generation (its InRelease refused)
// leaves nothing stored or offered in its change feed, its files kept
// aside until a newer verified Release, pulled next, leaves them out and
// its own are applied.
func TestPullerAppliesOnlyWhatAVerifiedReleaseLists(t *testing.T) {
	publisher, mirror := newSigner(t, "publisher@warren.invalid"), newSigner(t, "mirror@warren.invalid")
	up := newUpstream(t, 10)
	list := hub.PreloadList{Apt: []hub.AptPreload{{URL: up.URL + "/debian", Suites: []string{"stable"}, Components: []string{"main"},
		Architectures: []string{"amd64"}, Packages: []string{"app"}}}}
	main := newHarness(t, up, asSyncHub("main", hub.FetchAndPreload, hub.SyncToken{Name: "all", Token: allToken}))
	main.clock.ns.Store(time.Now().UnixNano())
	sec := newHarness(t, up, asSyncHub("secondary", hub.FetchAndPreload), withKeys(t, up.URL+"/debian/", publisher.keyring()))
	sec.clock.ns.Store(time.Now().UnixNano())
	var state hub.SourceState
	pull := func() hub.ReplicateRun {
		// The pulling hub's clock is the real one's now: a Release signed
		// a second after the harness's clock was set is from its future,
		// and the check refuses it (openpgp: "signature expired").
		sec.clock.ns.Store(time.Now().UnixNano())
		c := hub.FeedClient{From: hub.ReplicateFrom{Name: "src", URL: main.front.URL, Token: allToken}, Self: sec.role.ID(), HTTP: &http.Client{}}
		return sec.puller().Run(t.Context(), replicate.Options{Client: c, From: state, Saved: func(s hub.SourceState) { state = s }})
	}
	generation := func(p aptPkg, by *signer) {
		up.setArchive([]aptPkg{p})
		signRelease(up, by, "")
		main.clock.advance(time.Minute)
		if run, err := main.preload(t.Context(), preload.Options{List: list}); err != nil || run.Fetched != 1 {
			t.Fatalf("the source hub's preload: %+v %v", run, err)
		}
		// The change feed records a fill after its last byte is
		// released, so the preload may return first: pull once it is in.
		for deadline := time.After(10 * time.Second); ; {
			select {
			case d := <-main.recorded:
				if d.Hex != sha256hex(p.body) {
					continue
				}
			case <-deadline:
				t.Fatalf("the source hub's change feed did not record %s within 10s of its preload", p.path())
			}
			break
		}
	}
	offered := func(after uint64, p aptPkg) bool {
		changes, _, err := sec.store.Changes(after, 100000)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range changes {
			if c.Digest.Hex == sha256hex(p.body) || strings.HasSuffix(c.Key, p.path()) {
				return true
			}
		}
		return false
	}

	good := aptPkg{"app", "1.0", "", randomBytes(20000, 71)}
	generation(good, publisher)
	if r := pull(); !r.OK() || r.Unverified != 0 || !offered(0, good) {
		t.Fatalf("the signed generation: %+v; offered on: %v", r, offered(0, good))
	}
	_, cursor, _ := sec.store.Changes(0, 100000)

	evil := aptPkg{"app", "1.1", "", randomBytes(20000, 72)}
	generation(evil, mirror)
	r := pull()
	if r.OK() || r.Unverified == 0 {
		t.Errorf("the forged generation: %+v, want its InRelease refused and its files kept aside", r)
	}
	if offered(cursor, evil) {
		t.Error("the forged generation's package is offered in the pulling hub's change feed")
	}
	if sec.door.Holds(cachestore.Digest{Algo: "sha256", Hex: sha256hex(evil.body)}) {
		t.Error("the forged generation's package is stored")
	}
	if len(state.Retry) == 0 {
		t.Error("the forged generation's files were not kept to try again")
	}

	newer := aptPkg{"app", "1.2", "", randomBytes(20000, 73)}
	generation(newer, publisher)
	r = pull()
	if !offered(cursor, newer) {
		t.Errorf("the next signed generation was not applied: %+v", r)
	}
	if offered(cursor, evil) || len(state.Retry) != 0 {
		t.Errorf("after a newer verified Release: forged package offered %v, %d entries still kept (%+v)", offered(cursor, evil), len(state.Retry), r)
	}
}

// Valid-Until is honoured in a Release warren's parser refuses: a
// mirror replaying an old, validly signed generation gains nothing from
// a line the parser does not read.
func TestValidUntilOfAMalformedRelease(t *testing.T) {
	publisher := newSigner(t, "publisher@warren.invalid")
	for _, tt := range []struct {
		name, extra string
		want        string
	}{
		{"expired", "Valid-Until: " + time.Now().Add(-time.Hour).UTC().Format(time.RFC1123) + "\nnot a field\n", door.SigFailed},
		{"valid", "Valid-Until: " + time.Now().Add(time.Hour).UTC().Format(time.RFC1123) + "\nnot a field\n", door.SigVerified},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t, 1000)
			signRelease(up, publisher, tt.extra)
			h := newHarness(t, up, withKeys(t, up.URL+"/debian/", publisher.keyring()))
			h.clock.ns.Store(time.Now().UnixNano())
			h.mustGet(up.URL+releasePath, 200)
			h.known(up.URL + releasePath) // its learn (and check) done
			if st := stateOf(h, up.URL+"/debian/dists/stable/"); st.State != tt.want {
				t.Errorf("state %+v, want %s", st, tt.want)
			}
		})
	}
}
