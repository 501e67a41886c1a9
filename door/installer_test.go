package door

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/fill"
)

// gatedStore holds a learn's facts at PutKnown until the test opens the
// gate, when any of them is one holds names: a learn that takes its time
// (after a package's script is read, in the midst of an index's parse).
type gatedStore struct {
	*cachestore.Store
	holds   func(key string) bool
	once    sync.Once
	entered chan struct{}
	gate    chan struct{}
}

func (g *gatedStore) PutKnown(facts map[string]cachestore.Known) error {
	for k := range facts {
		if g.holds(k) {
			g.once.Do(func() { close(g.entered) })
			<-g.gate
			break
		}
	}
	return g.Store.PutKnown(facts)
}

// testNupkg is a package whose install script downloads installer from
// rawURL.
func testNupkg(t *testing.T, rawURL string, installer []byte) []byte {
	t.Helper()
	sum := sha256.Sum256(installer)
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range []struct{ name, body string }{
		{"tool.nuspec", `<?xml version="1.0"?><package><metadata><id>tool</id><version>1.0.0</version></metadata></package>`},
		{"tools/chocolateyInstall.ps1", "Install-ChocolateyPackage -PackageName tool -Url '" + rawURL + "' -Checksum '" + hex.EncodeToString(sum[:]) + "' -ChecksumType sha256\n"},
	} {
		w, err := zw.Create(f.name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(f.body))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// A package's learn holds up the requests its script may concern, and
// only those: once its script is read, a request for a URL it does not
// name goes on at once (it waited learnWaitMax, for every URL no
// repository lists), while one for the installer it names still waits
// for the installer's hash.
func TestPackageLearnHoldsOnlyWhatItNames(t *testing.T) {
	store, err := cachestore.Open(cachestore.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	isInstaller := func(k string) bool { return strings.HasPrefix(k, installerPrefix) }
	gs := &gatedStore{Store: store, holds: isInstaller, entered: make(chan struct{}), gate: make(chan struct{})}
	d, err := New(Config{}, gs)
	if err != nil {
		t.Fatal(err)
	}
	opened := false
	open := func() {
		if !opened {
			opened = true
			close(gs.gate)
		}
	}
	t.Cleanup(func() { open(); d.Close(); store.Close() })

	installer := []byte("the installer's bytes")
	const installerURL = "https://vendor.example/dl/tool-setup.exe"
	nupkg := testNupkg(t, installerURL, installer)
	sum := sha512.Sum512(nupkg)
	p := Plan{URL: "https://feed.example/api/v2/package/tool/1.0.0", Key: "https://feed.example/api/v2/package/tool/1.0.0",
		Kind: "nupkg", Eco: EcoChocolatey, Digest: cachestore.Digest{Algo: "sha512", Hex: hex.EncodeToString(sum[:])},
		Size: int64(len(nupkg)), Meta: MetaNupkg, MetaName: "tool.1.0.0.nupkg"}
	if _, err := d.Fetch(t.Context(), p, Asker{}, FetchOptions{Sources: []fill.Source{&heldSource{body: nupkg}}}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gs.entered: // read its script; recording what it teaches
	case <-time.After(10 * time.Second):
		t.Fatal("the package's learn did not get to record its facts")
	}

	plan := func(raw string) <-chan Plan {
		ch := make(chan Plan, 1)
		go func() {
			u, _ := url.Parse(raw)
			ch <- d.Plan(context.Background(), u, Credential{})
		}()
		return ch
	}
	select {
	case <-plan("https://other.example/unrelated.bin"):
	case <-time.After(learnWaitMax / 3):
		t.Fatal("a request for a URL the package does not name waited for its learn")
	}
	named := plan(installerURL)
	open()
	select {
	case got := <-named:
		if want := (cachestore.Digest{Algo: "sha256", Hex: hex.EncodeToString(func() []byte { s := sha256.Sum256(installer); return s[:] }())}); got.Digest != want {
			t.Errorf("the installer's plan: digest %v, want %v (it did not wait for the learn)", got.Digest, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the installer's plan did not come")
	}
}
