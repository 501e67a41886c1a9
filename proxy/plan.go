package proxy

import (
	"context"
	"net/url"
	"path"
	"strings"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/debian"
	"github.com/warren-cache/warren/rpm"
)

// plan is what the URL says about how to serve it.
type plan struct {
	url  string // upstream URL, as the client spelt it
	key  string // the canonical form of url: its key in the index
	kind string // what the ecosystem calls it, for the log
	eco  string // EcoDebian, EcoRPM, EcoChocolatey or "other", for the day's chart
	// passThrough: never cache (mirror lists, metalinks).
	passThrough bool
	// digest is set when metadata (or the by-hash path) says what the bytes
	// must hash to: the blob is filled by digest and verified.
	digest cachestore.Digest
	size   int64 // -1 when unknown
	// meta is the metadata to parse as the bytes pass (metaRelease,
	// metaPackages, ...); metaName is its name as the repository knows it (which
	// says its compression).
	meta     string
	metaName string
	// cred is the request's credential for its origin: a private plan's
	// keys and blobs are its scope's alone (private.go).
	cred credential
}

// fillKey names p's one flight: by digest when the metadata gave one (a
// blob is the same whatever URL names it), else by URL.
func (p plan) fillKey() string {
	if !p.digest.IsZero() {
		if p.cred.private() {
			// Its own flight: the bytes come with its credential, and
			// no one else may follow them (the key says no secret).
			return cachestore.FillKey(p.digest) + "#" + p.cred.scope
		}
		return cachestore.FillKey(p.digest)
	}
	return "url:" + p.key // the key carries the scope
}

const (
	metaRelease  = "release"
	metaPackages = "packages"
	metaSources  = "sources"
	metaRepomd   = "repomd"
	metaPrimary  = "primary"
)

// plan says how to serve u (its userinfo already taken into cred).
func (s *Server) plan(ctx context.Context, u *url.URL, cred credential) plan {
	p := plan{url: u.String(), key: scopedKey(u, cred.scope), kind: "other", eco: "other", size: -1, cred: cred}
	if k := debian.Classify(u.Path); k != debian.KindOther {
		p.eco = EcoDebian
		s.planDebian(ctx, &p, u, k)
	} else if k := rpm.Classify(u.Host, u.Path); k != rpm.KindOther {
		p.eco = EcoRPM
		s.planRPM(ctx, &p, u, k)
	}
	return p
}

func (s *Server) planDebian(ctx context.Context, p *plan, u *url.URL, k debian.Kind) {
	p.kind = k.String()
	switch k {
	case debian.KindByHash:
		p.digest = cachestore.Digest{Algo: "sha256", Hex: debian.ByHashDigest(u.Path)}
		s.learning.wait(ctx, p.key, nil)
		if known, err := s.store.Known(p.key); err == nil && known.Digest == p.digest {
			p.size = known.Size
			p.meta, p.metaName = debianIndexMeta(known.Name), known.Name
		}
	case debian.KindPackage, debian.KindSource:
		s.useKnown(ctx, p)
	case debian.KindRelease:
		p.meta, p.metaName = metaRelease, path.Base(u.Path)
	case debian.KindIndex:
		p.meta, p.metaName = debianIndexMeta(u.Path), path.Base(u.Path)
		// The Release it came with names its hash: filled by digest, it
		// is verified, found in the store under any name (by-hash), and a
		// hub serves the generation this client's Release lists.
		s.useKnown(ctx, p)
	}
}

// debianIndexMeta says which parser an index file needs: metaPackages or
// metaSources, or "" for one that names no artifacts (Translation, ...).
func debianIndexMeta(name string) string {
	switch {
	case debian.IsPackagesIndex(name):
		return metaPackages
	case debian.IsSourcesIndex(name):
		return metaSources
	}
	return ""
}

func (s *Server) planRPM(ctx context.Context, p *plan, u *url.URL, k rpm.Kind) {
	p.kind = k.String()
	switch k {
	case rpm.KindPackage:
		s.useKnown(ctx, p)
	case rpm.KindRepomd:
		p.meta, p.metaName = metaRepomd, path.Base(u.Path)
	case rpm.KindMetadata:
		// Named by their checksum, listed in repomd.xml: immutable once known.
		s.useKnown(ctx, p)
		if rpm.IsPrimary(u.Path) {
			p.meta, p.metaName = metaPrimary, path.Base(u.Path)
		}
	case rpm.KindMirrorList:
		p.passThrough = true
	}
}

// useKnown takes the digest metadata recorded for the URL, if any, after
// any learn in progress of the URL's repository.
func (s *Server) useKnown(ctx context.Context, p *plan) {
	s.learning.wait(ctx, p.key, nil)
	if k, err := s.store.Known(p.key); err == nil {
		p.digest, p.size = k.Digest, k.Size
	}
}

func contentType(p plan) string {
	switch {
	case p.kind == debian.KindPackage.String():
		return "application/vnd.debian.binary-package"
	case p.kind == rpm.KindPackage.String():
		return "application/x-rpm"
	case strings.HasSuffix(p.url, ".gz"):
		return "application/gzip"
	case strings.HasSuffix(p.url, ".xz"):
		return "application/x-xz"
	case strings.HasSuffix(p.url, ".xml"):
		return "text/xml"
	case p.kind != "other":
		return "text/plain; charset=utf-8"
	}
	return "application/octet-stream"
}
