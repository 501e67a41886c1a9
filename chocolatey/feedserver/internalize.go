package feedserver

import (
	"context"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/chocolatey"
	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/hub"
)

// Internalization (chocolatey.internalize, a hub's). Chocolatey's own
// answer to installers downloaded from vendors at install time is the
// paid Package Internalizer; a hub does the same for its site: the
// package it serves at /chocolatey/… is rewritten so that its install
// script downloads each installer from the hub
// (InstallersPrefix<sha256>/<hint>/<file name>), the checksums left as
// they were,
// so choco checks the very bytes the package named. https vendor URLs
// need no interception this way. Feed answers carry the rewritten
// package's hash and size: an entry whose package is rewritten already
// (or, in an answer of one or two entries, such as the one choco reads
// before it downloads, rewritten as it is served) gets them; any other
// entry links to the package as upstream has it, with upstream's hash, at
// OriginalPrefix, where the feeds are served unchanged for the machines
// that must not get rewritten packages. A package with nothing warren can
// rewrite is served as it is at both.
//
// The installers are the door's (package door's installer.go): verified
// against the script's checksum, held by digest, fetched from the vendor
// once for the site. A preload or replication run fetches those of the
// packages it brings, in its window.

// OriginalPrefix is where an internalizing hub serves its feeds with the
// packages as upstream has them.
const OriginalPrefix = "/chocolatey-original/"

// InstallersPrefix is where a hub serves the installers its rewritten
// packages download: InstallersPrefix<hex digest>/<hint>/<file name>, the
// hint naming the vendor URL the package gave (door.InstallerHint), or
// InstallersPrefix<hex digest>/<file name> (as older hubs wrote it).
const InstallersPrefix = "/_warren/installers/"

// maxInternalizeBytes bounds a package read whole to be rewritten: a
// package larger carries its installer inside (nothing to rewrite).
const maxInternalizeBytes = 64 << 20

// internalizeOnDemand: answers with at most this many entries (one
// version's entry, the latest-version filter) have their packages
// rewritten as they are served.
const internalizeOnDemand = 2

// internalizeTimeout bounds one package's rewrite, its download included.
const internalizeTimeout = 10 * time.Minute

const internalKind = "nupkg-internalized"

// internalKey keys what a package's rewrite made: by this hub's URL (the
// rewrite names it) and the original's digest.
func internalKey(base string, orig cachestore.Digest) string {
	return "chocolatey-internal:" + base + "#" + orig.String()
}

// internalForm is a package's rewritten form: its digest (SHA512, as
// feeds give it) and size. same: nothing to rewrite, served as it is.
type internalForm struct {
	d    cachestore.Digest
	size int64
	same bool
}

// formOf is the rewritten form of a package (orig: its digest), if it was
// made and is held; build makes it when not (fetching the package).
func (s *Server) formOf(ctx context.Context, rt chocoRoute, id, version string, orig cachestore.Digest, build bool) (internalForm, bool) {
	key := internalKey(s.cfg.Internalize, orig)
	if k, err := s.store.Known(key); err == nil {
		f := internalForm{d: k.Digest, size: k.Size, same: k.Digest == orig}
		if f.same || s.door.Holds(f.d) {
			return f, true
		}
	}
	if !build {
		return internalForm{}, false
	}
	ch := s.internalFlight.DoChan(key, func() (any, error) {
		// The hub's work, shared by whoever asks: no client's context.
		wctx, cancel := context.WithTimeout(s.ctx, internalizeTimeout)
		defer cancel()
		p := s.packagePlan(wctx, rt, id, version)
		if p.Digest != orig {
			return nil, fmt.Errorf("the feed's hash of %s %s is %s, its entry says %s", id, version, p.Digest, orig)
		}
		if _, err := s.door.Fetch(wctx, *p, door.Asker{UA: "warren (internalize)"}, door.FetchOptions{}); err != nil {
			return nil, err
		}
		return s.rewriteHeld(wctx, orig)
	})
	select {
	case <-ctx.Done():
		return internalForm{}, false // the rewrite goes on for the next asker
	case res := <-ch:
		if res.Err != nil {
			s.log.Warn("could not rewrite a package to download its installers from this hub; its feed entries link to the original",
				slog.String("package", id+" "+version), slog.Any("err", res.Err))
			return internalForm{}, false
		}
		return res.Val.(internalForm), true
	}
}

// rewriteHeld rewrites the held package orig and keeps what it made.
func (s *Server) rewriteHeld(ctx context.Context, orig cachestore.Digest) (internalForm, error) {
	key := internalKey(s.cfg.Internalize, orig)
	b, err := s.store.ReadBlob(orig)
	if err != nil {
		return internalForm{}, fmt.Errorf("read the package back: %w", err)
	}
	body, err := io.ReadAll(io.LimitReader(b.File, maxInternalizeBytes+1))
	b.Close()
	if err != nil {
		return internalForm{}, fmt.Errorf("read the package back: %w", err)
	}
	form := internalForm{d: orig, size: int64(len(body)), same: true}
	out, done, err := chocolatey.Internalize(body, func(in chocolatey.Installer) (string, bool) {
		return s.installerURL(in), true
	})
	switch {
	case len(body) > maxInternalizeBytes, errors.Is(err, chocolatey.ErrNothingToRewrite):
		// Served as it is: nothing to rewrite.
	case err != nil:
		return internalForm{}, err
	default:
		sum := sha512.Sum512(out)
		form = internalForm{d: cachestore.Digest{Algo: "sha512", Hex: hex.EncodeToString(sum[:])}, size: int64(len(out))}
		if err := s.door.KeepBlob(ctx, key, internalKind, out, form.d); err != nil {
			return internalForm{}, err
		}
		s.log.Info("package rewritten to download its installers from this hub", slog.String("original", orig.String()),
			slog.String("rewritten", form.d.String()), slog.Int("installers", len(done)))
	}
	if err := s.door.LearnFacts(map[string]cachestore.Known{key: {Digest: form.d, Size: form.size, Source: orig.String()}}); err != nil {
		return internalForm{}, err
	}
	return form, nil
}

// installerURL is where a rewritten script downloads an installer: this
// hub, by its checksum and the hint of the vendor URL the script named,
// with the vendor's file name (choco names the file it saves by it).
func (s *Server) installerURL(in chocolatey.Installer) string {
	return strings.TrimSuffix(s.cfg.Internalize, "/") + InstallersPrefix + in.Checksum + "/" + door.InstallerHint(in.URL) + "/" + installerFileName(in.URL)
}

// installerFileName is the vendor URL's last path segment, in safe bytes.
func installerFileName(raw string) string {
	name := "installer"
	if u, err := url.Parse(raw); err == nil {
		if b := path.Base(u.Path); b != "/" && b != "." && b != "" {
			name = b
		}
	}
	var b strings.Builder
	for _, c := range []byte(name) {
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._+-", c) >= 0 {
			b.WriteByte(c)
		} else {
			b.WriteByte('_')
		}
		if b.Len() == 100 {
			break
		}
	}
	return b.String()
}

// internalizeAnswer gives a feed answer's entries the rewritten packages'
// hashes and sizes, or links them to the originals.
func (s *Server) internalizeAnswer(ctx context.Context, rt chocoRoute, body []byte) []byte {
	feed, err := chocolatey.ParseFeed(strings.NewReader(string(body)))
	if err != nil {
		return body
	}
	onDemand := len(feed.Entries) <= internalizeOnDemand
	out, err := chocolatey.EditEntries(body, func(e chocolatey.Entry) (chocolatey.EntryEdit, bool) {
		if e.HashHex == "" {
			return chocolatey.EntryEdit{}, false // no hash: served as it is at either path
		}
		orig := cachestore.Digest{Algo: e.HashAlgo, Hex: e.HashHex}
		f, ok := s.formOf(ctx, rt, e.ID, e.Version, orig, onDemand)
		switch {
		case ok && f.same:
			return chocolatey.EntryEdit{}, false
		case ok:
			raw, _ := hex.DecodeString(f.d.Hex)
			return chocolatey.EntryEdit{HashB64: base64.StdEncoding.EncodeToString(raw), Size: f.size}, true
		}
		return chocolatey.EntryEdit{ContentSrc: rt.originalBase + "package/" + e.ID + "/" + e.Version}, true
	})
	if err != nil {
		// Every download to the originals, with upstream's hashes.
		s.log.Warn("feed answer not internalized; its entries link to the original packages", slog.Any("err", err))
		return []byte(strings.ReplaceAll(string(body), rt.ourBase+"package/", rt.originalBase+"package/"))
	}
	return out
}

// internalPlan is how an internalizing feed serves a package download:
// its rewritten form (made now if need be); false: the original.
func (s *Server) internalPlan(ctx context.Context, rt chocoRoute, id, version string) (door.Plan, bool) {
	key := chocoKey(rt.feed, id, version)
	k, err := s.store.Known(key)
	if errors.Is(err, cachestore.ErrNotFound) {
		s.learnPackage(ctx, rt, id, version)
		k, err = s.store.Known(key)
	}
	if err != nil {
		return door.Plan{}, false
	}
	f, ok := s.formOf(ctx, rt, id, version, k.Digest, true)
	if !ok || f.same {
		return door.Plan{}, false
	}
	ik := internalKey(s.cfg.Internalize, k.Digest)
	return door.Plan{URL: ik, Key: ik, Kind: internalKind, Eco: door.EcoChocolatey, Digest: f.d, Size: f.size}, true
}

// ServeInstaller answers a request under InstallersPrefix with the plan of
// the installer its digest names (the front serves it), or answers itself
// (nil) when there is none.
func (s *Server) ServeInstaller(w http.ResponseWriter, r *http.Request) *door.Plan {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "warren: installers are read-only (GET and HEAD)", http.StatusMethodNotAllowed)
		return nil
	}
	if s.cfg.Internalize == "" {
		http.Error(w, "warren: this warren internalizes no Chocolatey packages (chocolatey.internalize)", http.StatusNotFound)
		return nil
	}
	hexd, name, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, InstallersPrefix), "/")
	hint := ""
	if h, rest, ok := strings.Cut(name, "/"); ok {
		hint, name = h, rest
	}
	algo := map[int]string{64: "sha256", 128: "sha512"}[len(hexd)]
	d := cachestore.Digest{Algo: algo, Hex: hexd}
	if algo == "" || d.Validate() != nil || name == "" || strings.Contains(name, "/") || !validHint(hint) {
		http.Error(w, "warren: want "+InstallersPrefix+"<sha256 or sha512, lower-case hex>/<hint, 16 hex digits>/<file name>", http.StatusBadRequest)
		return nil
	}
	p, ok := s.door.InstallerPlan(r.Context(), d, hint)
	if !ok {
		http.Error(w, "warren: no package this hub learnt downloads an installer with checksum "+d.String(), http.StatusNotFound)
		return nil
	}
	return &p
}

// validHint says whether h is an installer URL's hint (or none).
func validHint(h string) bool {
	if h == "" {
		return true
	}
	if len(h) != 16 {
		return false
	}
	_, err := hex.DecodeString(h)
	return err == nil && strings.ToLower(h) == h
}

// Prepare readies a package a hub preloaded (orig, from the feed at
// feedURL): when internalizing, its rewritten form, and the installers
// its script downloads, fetched as a request's are (verified, held by
// digest). who speaks for the run upstream (its rate).
func (s *Server) Prepare(ctx context.Context, feedURL string, e chocolatey.Entry, who door.Asker) error {
	if s.cfg.Internalize == "" || e.HashHex == "" {
		return nil
	}
	orig := cachestore.Digest{Algo: e.HashAlgo, Hex: e.HashHex}
	rt, ok := s.routeOf(feedURL)
	if !ok {
		return fmt.Errorf("feed %s is not one this warren serves", hub.RedactURLs(feedURL))
	}
	// Held (the run fetched it), it is learnt now if it never was: its
	// installers' facts.
	if p := s.packagePlan(ctx, rt, e.ID, e.Version); p.Digest == orig {
		if _, err := s.door.Fetch(ctx, *p, who, door.FetchOptions{}); err != nil {
			return err
		}
	}
	if _, ok := s.formOf(ctx, rt, e.ID, e.Version, orig, true); !ok {
		return fmt.Errorf("%s %s: not rewritten (the log says why)", e.ID, e.Version)
	}
	return s.fetchInstallers(ctx, orig, who)
}

// PrepareHeld readies a held package replication brought (its blob d):
// its rewritten form and its installers, when internalizing.
func (s *Server) PrepareHeld(ctx context.Context, d cachestore.Digest, who door.Asker) error {
	if s.cfg.Internalize == "" {
		return nil
	}
	if _, err := s.rewriteHeld(ctx, d); err != nil {
		return err
	}
	return s.fetchInstallers(ctx, d, who)
}

// fetchInstallers brings in the installers the held package orig's
// script downloads.
func (s *Server) fetchInstallers(ctx context.Context, orig cachestore.Digest, who door.Asker) error {
	b, err := s.store.ReadBlob(orig)
	if err != nil {
		return err
	}
	st, err := b.File.Stat()
	if err != nil {
		b.Close()
		return err
	}
	pkg, err := chocolatey.ReadPackage(b.File, st.Size())
	b.Close()
	if err != nil {
		return err
	}
	sc, err := pkg.Installers()
	if err != nil {
		return err
	}
	var errs []error
	for _, in := range sc.Installers {
		d := cachestore.Digest{Algo: in.ChecksumType, Hex: in.Checksum}
		if s.door.Holds(d) {
			continue
		}
		p, ok := s.door.InstallerPlan(ctx, d, door.InstallerHint(in.URL))
		if !ok {
			errs = append(errs, fmt.Errorf("%s %s: installer %s not learnt", pkg.ID, pkg.Version, in.URL))
			continue
		}
		if _, err := s.door.Fetch(ctx, p, who, door.FetchOptions{}); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: installer: %w", pkg.ID, pkg.Version, err))
		}
	}
	return errors.Join(errs...)
}

// routeOf is the feed served for an upstream base URL.
func (s *Server) routeOf(feedURL string) (chocoRoute, bool) {
	for name, up := range s.cfg.Feeds {
		if strings.EqualFold(up, feedURL) {
			return chocoRoute{feed: name, upstream: up}, true
		}
	}
	return chocoRoute{}, false
}
