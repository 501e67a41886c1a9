package proxy

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"path"
	"strings"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/debian"
	"github.com/warren-cache/warren/rpm"
)

// metaParser parses repository metadata as its bytes pass through a fill:
// the fill writes to a pipe, a goroutine it owns decompresses and parses.
type metaParser struct {
	pw     *io.PipeWriter
	done   chan struct{}
	broken bool // the parser stopped early; the fill goes on without it
	facts  map[string]cachestore.Known
	err    error
}

var errFillEnded = errors.New("fill ended before the metadata was complete")

func (s *Server) startParser(p plan) *metaParser {
	pr, pw := io.Pipe()
	mp := &metaParser{pw: pw, done: make(chan struct{}), facts: map[string]cachestore.Known{}}
	go func() {
		defer close(mp.done)
		mp.err = parseMeta(p, pr, mp.facts)
		// Unblock the fill's writes if the parser stopped early.
		pr.CloseWithError(errors.Join(mp.err, errFillEnded))
	}()
	return mp
}

func (mp *metaParser) write(b []byte) {
	if mp.broken {
		return
	}
	if _, err := mp.pw.Write(b); err != nil {
		mp.broken = true
	}
}

// finish ends the input and returns the parser's verdict.
func (mp *metaParser) finish() error {
	mp.pw.Close()
	<-mp.done
	return mp.err
}

// abort stops the parser if finish was not called; otherwise a no-op.
func (mp *metaParser) abort() {
	mp.pw.CloseWithError(errFillEnded)
	<-mp.done
}

// parseMeta turns one metadata file into URL -> digest facts.
func parseMeta(p plan, r io.Reader, facts map[string]cachestore.Known) error {
	u, err := url.Parse(p.url)
	if err != nil {
		return fmt.Errorf("parse url %q: %w", p.url, err)
	}
	origin := u.Scheme + "://" + u.Host
	switch p.meta {
	case metaRelease:
		rel, err := debian.ParseRelease(r)
		if err != nil {
			return err
		}
		dir := origin + debian.SuiteDir(u.Path)
		for _, e := range rel.Files {
			k := cachestore.Known{Digest: cachestore.Digest{Algo: "sha256", Hex: e.SHA256}, Size: e.Size, Name: e.Path}
			facts[dir+e.Path] = k
			if rel.AcquireByHash {
				facts[dir+path.Join(path.Dir(e.Path), "by-hash/SHA256", e.SHA256)] = k
			}
		}
		return nil
	case metaPackages, metaSources:
		zr, err := decompress(p.metaName, r, maxIndexBytes)
		if err != nil {
			return err
		}
		defer zr.Close()
		root := origin + debian.RepoRoot(u.Path)
		parse := debian.ParsePackages
		if p.meta == metaSources {
			parse = debian.ParseSources
		}
		return parse(zr, func(pkg debian.Package) error {
			facts[root+pkg.Filename] = cachestore.Known{Digest: cachestore.Digest{Algo: "sha256", Hex: pkg.SHA256}, Size: pkg.Size}
			return nil
		})
	case metaRepomd:
		data, err := rpm.ParseRepomd(r)
		if err != nil {
			return err
		}
		base := origin + rpm.RepoBase(u.Path)
		for _, d := range data {
			facts[base+d.Href] = cachestore.Known{Digest: cachestore.Digest{Algo: d.Checksum.Algo, Hex: d.Checksum.Hex}, Size: d.Size, Name: d.Type}
		}
		return nil
	case metaPrimary:
		zr, err := decompress(p.metaName, r, maxIndexBytes)
		if err != nil {
			return err
		}
		defer zr.Close()
		root := origin + rpm.RepoBase(u.Path)
		return rpm.ParsePrimary(zr, func(pkg rpm.Package) error {
			base := root
			if pkg.Base != "" {
				base = strings.TrimSuffix(pkg.Base, "/") + "/"
			}
			facts[base+pkg.Href] = cachestore.Known{Digest: cachestore.Digest{Algo: pkg.Checksum.Algo, Hex: pkg.Checksum.Hex}, Size: pkg.Size}
			return nil
		})
	}
	return fmt.Errorf("no parser for metadata kind %q", p.meta)
}

// recordFacts writes what a metadata file said, if the file is the one its
// own parent metadata names (a Packages file must hash to what Release says)
// and it parsed cleanly. A malformed file is logged and recorded not at all.
func (s *Server) recordFacts(p plan, got cachestore.Digest, parseErr error, facts map[string]cachestore.Known) {
	if parseErr != nil {
		s.log.Warn("malformed repository metadata; its hashes are not recorded and its artifacts are cached by URL only",
			slog.String("url", p.url), slog.Any("err", parseErr))
		return
	}
	// An index fetched by URL must be the one its parent metadata names.
	if p.digest.IsZero() {
		if k, err := s.store.Known(p.url); err == nil && k.Digest.Algo == got.Algo && k.Digest != got {
			s.log.Warn("index does not match its Release (mirror mid-sync?); its hashes are not recorded",
				slog.String("url", p.url), slog.String("release_says", k.Digest.String()), slog.String("actual", got.String()))
			return
		}
	}
	if err := s.store.PutKnown(facts); err != nil {
		s.log.Error("could not record repository hashes", slog.String("url", p.url), slog.Any("err", err))
		return
	}
	s.log.Debug("recorded repository hashes", slog.String("url", p.url), slog.Int("count", len(facts)))
}
