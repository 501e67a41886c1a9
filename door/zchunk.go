package door

import (
	"log/slog"
	"net/url"
	"strings"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/rpm"
)

// Fedora's dnf reads zchunk metadata: it fetches primary.xml.zck, never
// primary.xml.gz, and warren does not read zchunk. The repomd.xml that
// lists the one lists the other, with its hash: once a client has asked
// for a repository's primary.xml.zck, warren fetches that generation's
// plain primary.xml itself, through the door (verified, learnt, shared
// like any index file), so that the packages are hash-known there as on
// any repository: one more index file over the WAN per generation, for
// packages shared with the LAN and verified.

// learnBesideZchunk starts, once per repomd.xml, the fetch of the plain
// primary.xml its repository's repomd.xml lists beside p's zchunk one.
func (s *Door) learnBesideZchunk(p Plan) {
	if p.Kind != rpm.KindMetadata.String() || !strings.HasSuffix(p.MetaName, "primary.xml.zck") && !strings.HasSuffix(p.Key, "primary.xml.zck") || p.Cred.Private() {
		return
	}
	ku, err := url.Parse(p.Key)
	if err != nil {
		return
	}
	scope := newScope(ku, rpm.RepoBase(ku.EscapedPath()))
	repomd := Plan{Key: string(scope) + "repodata/repomd.xml", Meta: MetaRepomd}
	var d cachestore.Digest
	if c, err := s.store.Cached(repomd.Key); err == nil {
		d = c.Digest
	} else if k, err := s.store.Known(repomd.Key); err == nil {
		d = k.Digest // a metalink's: hash-known
	}
	if d.IsZero() {
		return
	}
	if _, tried := s.besideZck.Get(d); tried {
		return
	}
	s.besideZck.Add(d, struct{}{})
	b, err := s.store.ReadBlob(d)
	if err != nil {
		return
	}
	defer b.Close()
	files, err := listing(repomd, scope, b.File)
	if err != nil {
		return
	}
	l, ok := files["primary"]
	if !ok {
		return
	}
	pp := Plan{URL: l.url, Key: l.url, Kind: rpm.KindMetadata.String(), Eco: EcoRPM, Digest: l.k.Digest, Size: l.k.Size,
		Meta: MetaPrimary, MetaName: l.name, Group: p.Group, groupBase: p.groupBase}
	if s.Holds(pp.Digest) {
		s.learnIfNew(pp, pp.Digest)
		return
	}
	s.fills.Go(func() {
		if _, err := s.Fetch(s.ctx, pp, Asker{UA: "warren (primary.xml beside primary.xml.zck)"}, FetchOptions{}); err != nil {
			s.log.Warn("could not fetch the plain primary.xml beside a zchunk one; this repository's packages are cached by URL only",
				slog.String("url", pp.ShownURL()), slog.Any("err", err))
			return
		}
		s.log.Info("fetched the plain primary.xml beside the zchunk one dnf reads, to learn its packages' hashes", slog.String("url", pp.ShownURL()))
	})
}
