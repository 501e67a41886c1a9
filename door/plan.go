package door

import (
	"context"
	"net/url"
	"path"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/debian"
	"github.com/warren-cache/warren/rpm"
)

// Plan is what a URL says about how to fetch, keep and serve it.
type Plan struct {
	URL  string // upstream URL, as the client spelt it (never with a password)
	Key  string // the canonical form of URL (in its credential's scope): its key in the index
	Kind string // what the ecosystem calls it, for the log
	Eco  string // EcoDebian, EcoRPM, EcoChocolatey or "other", for the day's chart
	// Digest is set when metadata (or the by-hash path) says what the
	// bytes must hash to: the blob is filled by digest and verified.
	Digest cachestore.Digest
	Size   int64 // -1 when unknown
	// Meta is the metadata to learn from once stored (MetaRelease,
	// MetaPackages, ...); MetaName is its name as the repository knows
	// it (which says its compression).
	Meta     string
	MetaName string
	// Also are other digests the bytes may have (a metalink's alternates
	// of repomd.xml: the previous push, still valid); sizes the sizes of
	// Digest and Also when the metalink gives every one (Size is then
	// -1: which version comes is not known).
	Also  []cachestore.Digest
	sizes []int64
	// Group is the key of the list of mirrors whose group the URL's
	// mirror belongs to (mirrors.go), groupBase that mirror's base.
	Group     string
	groupBase string
	// Cred is the request's credential for its origin: a private plan's
	// keys and blobs are its scope's alone (private.go).
	Cred Credential
	// Unconfirmed: Digest is what a package's install script says the
	// URL serves, and the URL's own origin has not confirmed it yet
	// (installer.go): filled from the hubs (not told the digest) and the
	// origin alone, in a flight of the URL's own, never from the store or
	// the LAN by digest. Its verified fill confirms it.
	Unconfirmed bool
}

// fillKey names p's one flight: by digest when the metadata gave one (a
// blob is the same whatever URL names it), else by URL.
func (p Plan) FillKey() string {
	if p.Unconfirmed {
		return unconfirmedFillKey(p)
	}
	if !p.Digest.IsZero() {
		if p.Cred.Private() {
			// Its own flight: the bytes come with its credential, and
			// no one else may follow them (the key says no secret).
			return cachestore.FillKey(p.Digest) + "#" + p.Cred.scope
		}
		return cachestore.FillKey(p.Digest)
	}
	return "url:" + p.Key // the key carries the scope
}

// listHashed says whether p is a repomd.xml its mirror group's metalink
// gives the hash of (mirrors.go).
func (p Plan) listHashed() bool {
	return p.Meta == MetaRepomd && p.Group != "" && !p.Digest.IsZero()
}

// Artifact says whether p is a hash-known artifact (a package, an
// installer), not an index file.
func (p Plan) Artifact() bool {
	return !p.Digest.IsZero() && (p.Meta == "" || p.Meta == MetaNupkg)
}

const (
	MetaRelease  = "release"
	MetaPackages = "packages"
	MetaSources  = "sources"
	MetaRepomd   = "repomd"
	MetaPrimary  = "primary"
	MetaMirrors  = "mirrors"
)

// plan says how to serve u (its userinfo already taken into cred).
func (s *Door) plan(ctx context.Context, u *url.URL, cred Credential) Plan {
	p := Plan{URL: u.String(), Key: scopedKey(u, cred.scope), Kind: "other", Eco: "other", Size: -1, Cred: cred}
	if k := debian.Classify(u.Path); k != debian.KindOther {
		p.Eco = EcoDebian
		s.planDebian(ctx, &p, u, k)
	} else if k := rpm.Classify(u.Host, u.Path); k != rpm.KindOther {
		p.Eco = EcoRPM
		s.planRPM(ctx, &p, u, k)
	} else if !cred.Private() {
		s.planInstaller(ctx, &p)
	}
	return p
}

func (s *Door) planDebian(ctx context.Context, p *Plan, u *url.URL, k debian.Kind) {
	p.Kind = k.String()
	switch k {
	case debian.KindByHash:
		p.Digest = cachestore.Digest{Algo: "sha256", Hex: debian.ByHashDigest(u.Path)}
		s.learning.waitTop(ctx, p.Key, nil)
		if known, err := s.store.Known(p.Key); err == nil && known.Digest == p.Digest {
			p.Size = known.Size
			p.Meta, p.MetaName = debianIndexMeta(known.Name), known.Name
		}
	case debian.KindPackage, debian.KindSource:
		s.useKnown(ctx, p, false)
	case debian.KindRelease:
		p.Meta, p.MetaName = MetaRelease, path.Base(u.Path)
	case debian.KindIndex:
		p.Meta, p.MetaName = debianIndexMeta(u.Path), path.Base(u.Path)
		// The Release it came with names its hash: filled by digest, it
		// is verified, found in the store under any name (by-hash), and a
		// hub serves the generation this client's Release lists.
		s.useKnown(ctx, p, true)
	}
}

// debianIndexMeta says which parser an index file needs: MetaPackages or
// MetaSources, or "" for one that names no artifacts (Translation, ...).
func debianIndexMeta(name string) string {
	switch {
	case debian.IsPackagesIndex(name):
		return MetaPackages
	case debian.IsSourcesIndex(name):
		return MetaSources
	}
	return ""
}

func (s *Door) planRPM(ctx context.Context, p *Plan, u *url.URL, k rpm.Kind) {
	p.Kind = k.String()
	if k != rpm.KindMirrorList && !p.Cred.Private() {
		if g, base := s.groupOf(p.Key); g != nil {
			p.Group, p.groupBase = g.list, base
		}
	}
	switch k {
	case rpm.KindPackage:
		s.useKnown(ctx, p, false)
	case rpm.KindRepomd:
		p.Meta, p.MetaName = MetaRepomd, path.Base(u.Path)
		if p.Group != "" && p.Key == p.groupBase+"repodata/repomd.xml" {
			// A metalink's hash (mirrors.go): from any mirror, only
			// a repomd.xml the list names is taken.
			if g := s.groupNamed(p.Group); g != nil && len(g.repomd) > 0 {
				p.Digest, p.Size, p.Also = g.repomd[0], g.l.Repomd[0].Size, g.repomd[1:]
				if len(p.Also) > 0 {
					p.Size = -1 // an alternate's size differs
					for _, v := range g.l.Repomd {
						if v.Size < 0 {
							p.sizes = nil
							break
						}
						p.sizes = append(p.sizes, v.Size)
					}
				}
			}
		}
	case rpm.KindMetadata:
		// Named by their checksum, listed in repomd.xml: immutable once known.
		s.useKnown(ctx, p, true)
		if rpm.IsPrimary(u.Path) {
			p.Meta, p.MetaName = MetaPrimary, path.Base(u.Path)
		}
	case rpm.KindMirrorList:
		// An index file of its own (mirrors.go), read when it may be
		// trusted (listtrust.go): a list a repo file or mirror_lists
		// names, or one a hub may answer in the site's order. Any other
		// is an ordinary file, as is a private one (kept for its scope).
		if !p.Cred.Private() && (len(s.cfg.Hubs) > 0 || s.cfg.Lists != nil && s.cfg.Lists().Trusts(p.Key)) {
			p.Meta, p.MetaName = MetaMirrors, path.Base(u.Path)
		}
	}
}

// useKnown takes the digest metadata recorded for the URL, if any, after
// any learn in progress of the URL's repository that may name it: for an
// index file (index set), only its top file's.
func (s *Door) useKnown(ctx context.Context, p *Plan, index bool) {
	wait := s.learning.wait
	if index {
		wait = s.learning.waitTop
	}
	wait(ctx, p.Key, nil)
	if k, err := s.store.Known(p.Key); err == nil {
		p.Digest, p.Size = k.Digest, k.Size
		return
	}
	if p.Group != "" {
		// The same path on another mirror of its group.
		if k, ok := s.groupFact(ctx, p, wait); ok {
			p.Digest, p.Size = k.Digest, k.Size
		}
	}
}
