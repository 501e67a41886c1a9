package door

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/url"
	"path"
	"slices"
	"strings"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/chocolatey"
)

// Chocolatey installers. Most community packages are wrappers whose
// install script downloads the real installer from its vendor, with a
// checksum in the script. When a .nupkg is stored with the digest its
// feed's PackageHash gave (and only then: a package kept by URL teaches
// nothing), its script is read as a Packages file is (package chocolatey)
// and each download it names is learnt: its URL -> the script's SHA256 or
// SHA512.
//
// The rule, since the vendor's host publishes no metadata of its own and
// a fact's repository scope cannot apply:
//
//   - The checksum comes from a package the feed's PackageHash verified:
//     the same check choco makes on that download, made for it earlier.
//   - The fact names one exact URL (no directory below it), under a
//     prefix of its own (installerPrefix): no package can change what a
//     repository's metadata says of a URL, and a URL that one lists is
//     planned by that metadata alone.
//   - The package learnt last names the checksum: vendors replace the file
//     behind a stable URL, and the newest package says what it is now.
//   - A digest names bytes, not a URL: every URL a package names for it
//     is kept (another package naming the same checksum adds its URL, it
//     takes none away), and a hub's /_warren/installers/<digest>/ path is
//     served from any blob of that digest it holds, else fetched from a URL
//     whose origin confirmed the digest first (installerURLs).
//   - The vendor's origin has the last word: until the URL's own origin
//     (or a hub, which applies the same rule) has delivered bytes with that
//     digest to this warren, the URL is filled from its hubs (not told the
//     digest) and its origin alone, never from the store or the LAN by
//     digest (Plan.Unconfirmed). A package cannot make warren serve, for
//     another vendor's URL, bytes that URL never served: the worst it can
//     do is a checksum that fails, refused as any mismatch. Once the origin
//     confirmed it (the URL's copy recorded at that digest), the installer
//     is a hash-known artifact like a .deb: store, peers, hubs.

// MetaNupkg is a Chocolatey package whose install script teaches where its
// installers come from.
const MetaNupkg = "nupkg"

// installerPrefix keys what packages' scripts teach: installerPrefix+URL
// (the canonical URL) -> the checksum; installerPrefix+"digest:"+digest+
// " "+URL -> a URL a package says serves it, one key per URL (a hub's
// /_warren/installers/ path names only the digest).
const installerPrefix = "installer:"

// installerScope is the scope a package's learn registers: an installer
// request waits for the learns of packages in progress (choco runs the
// script as soon as it has the package).
const installerScope = repoScope(installerPrefix)

func installerKey(canonical string) string { return installerPrefix + canonical }

func installerDigestKey(d cachestore.Digest) string { return installerPrefix + "digest:" + d.String() }

// installerURLKey keys one URL a package names for digest d.
func installerURLKey(d cachestore.Digest, canonical string) string {
	return installerDigestKey(d) + " " + canonical
}

// maxInstallerURLs bounds the URLs of one digest a plan looks at.
const maxInstallerURLs = 64

// planInstaller takes the checksum a package's script gave for p's URL,
// if any (p is no repository's file).
func (s *Door) planInstaller(ctx context.Context, p *Plan) {
	key := installerKey(p.Key)
	s.learning.wait(ctx, key, nil)
	k, err := s.store.Known(key)
	if err != nil {
		return
	}
	s.asInstaller(p, k.Digest)
}

// asInstaller makes p an installer's plan at digest d, unconfirmed unless
// the URL's own copy was d.
func (s *Door) asInstaller(p *Plan, d cachestore.Digest) {
	p.Digest, p.Size, p.Meta, p.MetaName = d, -1, "", ""
	p.Kind, p.Eco = "installer", EcoChocolatey
	c, err := s.store.Cached(p.Key)
	p.Unconfirmed = err != nil || c.Digest != d
}

// confirmed says whether p may be served by digest: not an installer its
// origin has not confirmed, unless it did since p was planned.
func (s *Door) confirmed(p Plan) bool {
	if !p.Unconfirmed {
		return true
	}
	c, err := s.store.Cached(p.Key)
	return err == nil && c.Digest == p.Digest
}

// unconfirmedFillKey names the flight of an installer's URL that its
// origin has not confirmed: the URL's and the digest's, apart from a fill
// of the URL kept by URL (planned before the package was learnt), which
// verifies nothing.
func unconfirmedFillKey(p Plan) string { return installerPrefix + p.Key + "#" + p.Digest.String() }

// InstallerPlan is the plan of the installer packages' scripts name by
// digest d (a hub's /_warren/installers/<hex>/<name>), at d. A blob of d
// held here is served as it is, whichever URL brought it: its bytes are
// what the digest names. Else it is fetched from one of the URLs packages
// name for d (installerURLs: one whose origin confirmed d first, then
// the one hint names, InstallerHint of the URL the asking package
// names). false: no package learnt names d.
func (s *Door) InstallerPlan(ctx context.Context, d cachestore.Digest, hint string) (Plan, bool) {
	s.learning.wait(ctx, installerDigestKey(d), nil)
	held := s.Holds(d)
	for _, raw := range s.installerURLs(d, hint) {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			continue
		}
		p := s.plan(ctx, u, Credential{})
		if p.Eco == EcoDebian || p.Eco == EcoRPM {
			continue // a repository lists the URL: its metadata alone plans it
		}
		if p.Digest != d || p.Kind != "installer" {
			// The URL's newest package names another file now: d is
			// still what an older package checks, fetched from that URL
			// and verified against d.
			s.asInstaller(&p, d)
		}
		if held {
			// Bytes of d, verified when they were stored: what the path
			// asks for, whoever's URL brought them.
			p.Unconfirmed = false
		}
		return p, true
	}
	return Plan{}, false
}

// InstallerHint names an installer's URL in a hub's rewritten package
// (InstallerPlan): the first 8 bytes of the SHA256 of its canonical form,
// in hex. Another package that names the same checksum with a URL of its
// own cannot make the hub fetch the rewritten package's installer from
// that URL instead.
func InstallerHint(rawURL string) string {
	key, ok := CanonicalString(rawURL)
	if !ok {
		key = rawURL
	}
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:8])
}

// installerURLs are the URLs packages name for digest d, the best first:
// those whose origin confirmed d (their copy is d), then the one hint
// names, then the others as they were first learnt; last, those upstream
// answered 404 for lately.
func (s *Door) installerURLs(d cachestore.Digest, hint string) []string {
	type cand struct {
		url, key  string
		confirmed bool
		learnt    int64
	}
	var cands []cand
	add := func(k cachestore.Known) {
		key, ok := CanonicalString(k.Source)
		if !ok || k.Digest != d || len(cands) >= maxInstallerURLs || slices.ContainsFunc(cands, func(c cand) bool { return c.key == key }) {
			return
		}
		c, err := s.store.Cached(key)
		cands = append(cands, cand{url: k.Source, key: key, confirmed: err == nil && c.Digest == d, learnt: k.Learnt})
	}
	_ = s.store.KnownPrefix(installerDigestKey(d)+" ", func(_ string, k cachestore.Known) { add(k) })
	if k, err := s.store.Known(installerDigestKey(d)); err == nil {
		add(k) // as an older warren kept it: one URL per digest
	}
	rank := func(c cand) int {
		switch {
		case s.negative(c.key):
			return 3
		case c.confirmed:
			return 0
		case hint != "" && InstallerHint(c.key) == hint:
			return 1
		}
		return 2
	}
	slices.SortStableFunc(cands, func(a, b cand) int {
		if r := cmp.Compare(rank(a), rank(b)); r != 0 {
			return r
		}
		return cmp.Compare(a.learnt, b.learnt)
	})
	out := make([]string, len(cands))
	for i, c := range cands {
		out[i] = c.url
	}
	return out
}

// nupkgFact is one fact a package's script teaches: key -> k; waitKey is
// what a request that may need it waits on (learning.wait).
type nupkgFact struct {
	key, waitKey string
	inScope      bool
	k            cachestore.Known
}

// readNupkg reads stored package p (blob d)'s install script: what its
// downloads must hash to. What it read before an error is kept.
func (s *Door) readNupkg(p Plan, d cachestore.Digest) ([]nupkgFact, error) {
	b, err := s.store.ReadBlob(d)
	if err != nil {
		return nil, fmt.Errorf("read package %s back: %w", p.ShownURL(), err)
	}
	defer b.Close()
	st, err := b.File.Stat()
	if err != nil {
		return nil, err
	}
	pkg, err := chocolatey.ReadPackage(b.File, st.Size())
	if err != nil {
		return nil, err
	}
	sc, err := pkg.Installers()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", pkg.ID, pkg.Version, err)
	}
	if len(sc.Skipped) > 0 {
		s.log.Debug("package's install script names downloads warren cannot learn (they are cached by URL)",
			slog.String("package", pkg.ID+" "+pkg.Version), slog.Int("count", len(sc.Skipped)), slog.String("first", sc.Skipped[0]))
	}
	var out []nupkgFact
	for _, in := range sc.Installers {
		key, ok := CanonicalString(in.URL)
		d := cachestore.Digest{Algo: in.ChecksumType, Hex: in.Checksum}
		k := cachestore.Known{Digest: d, Size: -1, Name: path.Base(in.URL), Source: in.URL}
		out = append(out,
			nupkgFact{key: installerKey(key), waitKey: installerKey(key), inScope: ok, k: k},
			nupkgFact{key: installerURLKey(d, key), waitKey: installerDigestKey(d), inScope: ok, k: k})
	}
	return out, nil
}

// isInstallerFact says whether an index key is an installer's URL fact
// (not its digest's), for the known-artifacts count.
func isInstallerFact(key string) bool {
	return strings.HasPrefix(key, installerPrefix+"http")
}
