package chocolatey

import (
	"archive/zip"
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/warren-cache/warren/internal/xmlbound"
)

// A .nupkg is a zip (an OPC package): its .nuspec at the root names the
// package, and tools/chocolateyInstall.ps1 is what choco runs.

// Limits: a package holds a handful of files to a few thousand; its
// nuspec is a few KB. archive/zip builds every entry of the central
// directory before anyone can count them (a few hundred bytes of memory
// for each 46 bytes of directory), reading the directory to its end
// whatever its end record says: what it may read while it opens a
// package is bounded (maxDirectoryBytes), and a package whose directory
// is longer is refused.
const (
	maxPackageFiles   = 1 << 16
	maxNuspecBytes    = 1 << 20
	maxDirectoryBytes = 4 << 20
)

// Package is what warren reads of a .nupkg.
type Package struct {
	ID, Version string
	// ScriptPath is the install script's name in the zip, Script its
	// text; both empty when the package has none.
	ScriptPath string
	Script     []byte
}

// ReadPackage reads a package's nuspec and install script.
func ReadPackage(r io.ReaderAt, size int64) (*Package, error) {
	zr, err := openZip(r, size)
	if err != nil {
		return nil, fmt.Errorf("read package: %w", err)
	}
	return readPackage(zr)
}

// errDirectoryTooLarge refuses a package whose central directory is
// longer than maxDirectoryBytes.
var errDirectoryTooLarge = fmt.Errorf("its zip directory is larger than %d bytes: more files than a package holds", maxDirectoryBytes)

// openZip opens a zip, reading at most maxDirectoryBytes (and the end
// record) to do so: its entries are read as usual afterwards.
func openZip(r io.ReaderAt, size int64) (*zip.Reader, error) {
	br := &budgetReader{r: r, left: maxDirectoryBytes + 66<<10}
	zr, err := zip.NewReader(br, size)
	br.mu.Lock()
	br.left = -1 // opened: the entries' reads are not counted
	br.mu.Unlock()
	return zr, err
}

// budgetReader fails its reads once left bytes were read (-1: never).
type budgetReader struct {
	r    io.ReaderAt
	mu   sync.Mutex // guards left
	left int64
}

func (b *budgetReader) ReadAt(p []byte, off int64) (int, error) {
	b.mu.Lock()
	left := b.left
	b.mu.Unlock()
	if left < 0 {
		return b.r.ReadAt(p, off)
	}
	if left == 0 {
		return 0, errDirectoryTooLarge
	}
	short := int64(len(p)) > left
	if short {
		p = p[:left]
	}
	n, err := b.r.ReadAt(p, off)
	b.mu.Lock()
	if b.left >= 0 {
		b.left = max(0, b.left-int64(n))
	}
	b.mu.Unlock()
	if err == nil && short {
		err = errDirectoryTooLarge
	}
	return n, err
}

func readPackage(zr *zip.Reader) (*Package, error) {
	if len(zr.File) > maxPackageFiles {
		return nil, fmt.Errorf("package of %d files: more than %d", len(zr.File), maxPackageFiles)
	}
	pkg := &Package{}
	var nuspec *zip.File
	for _, f := range zr.File {
		name := strings.ReplaceAll(f.Name, `\`, "/")
		switch {
		case !strings.Contains(name, "/") && strings.HasSuffix(strings.ToLower(name), ".nuspec"):
			nuspec = f
		case strings.EqualFold(name, "tools/chocolateyInstall.ps1"):
			b, err := readEntry(f, maxScriptBytes)
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", f.Name, err)
			}
			pkg.ScriptPath, pkg.Script = f.Name, b
		}
	}
	if nuspec == nil {
		return nil, errors.New("package has no .nuspec at its root")
	}
	b, err := readEntry(nuspec, maxNuspecBytes)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", nuspec.Name, err)
	}
	if pkg.ID, pkg.Version, err = parseNuspec(b); err != nil {
		return nil, fmt.Errorf("%s: %w", nuspec.Name, err)
	}
	return pkg, nil
}

// readEntry reads a zip entry of at most limit bytes, whatever its header
// claims.
func readEntry(f *zip.File, limit int) ([]byte, error) {
	rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return b, nil
}

// parseNuspec reads a nuspec's id and version.
func parseNuspec(b []byte) (id, version string, err error) {
	var doc struct {
		Metadata struct {
			ID      string `xml:"id"`
			Version string `xml:"version"`
		} `xml:"metadata"`
	}
	dec := xml.NewDecoder(xmlbound.NewReader(bytes.NewReader(b), 0, 0))
	dec.CharsetReader = func(label string, in io.Reader) (io.Reader, error) {
		if strings.EqualFold(label, "utf-8") {
			return in, nil
		}
		return nil, fmt.Errorf("encoding %q is not supported", clip(label))
	}
	if err := dec.Decode(&doc); err != nil {
		return "", "", fmt.Errorf("nuspec xml: %w", err)
	}
	id, version = strings.TrimSpace(doc.Metadata.ID), strings.TrimSpace(doc.Metadata.Version)
	if !ValidID(id) || !ValidVersion(version) {
		return "", "", fmt.Errorf("nuspec names %q %q, not a package id and version", clip(id), clip(version))
	}
	return id, version, nil
}

// Installers reads the downloads a package's install script makes, with
// the environment choco gives it.
func (p *Package) Installers() (*Script, error) {
	if p.Script == nil {
		return &Script{}, nil
	}
	return ParseInstallScript(bytes.NewReader(p.Script), Env{PackageName: p.ID, PackageVersion: p.Version})
}

// ErrNothingToRewrite says a package has no download whose URL can be
// rewritten: it is served as it is.
var ErrNothingToRewrite = errors.New("the install script names no download warren can rewrite")

// Internalize rewrites a package so that its install script downloads
// from where to says (a hub's copy) instead of the vendor; the checksums
// stay as they are, so choco checks the same bytes. Each download's URL
// literal is replaced by a quoted one; a download whose URL is built from
// several pieces, or that to refuses, stays the vendor's. Every other file
// is copied byte for byte, but a package signature (.signature.p7s), which
// the rewrite makes false. It returns the new package and the downloads
// rewritten. The same package and answers give the same bytes.
func Internalize(nupkg []byte, to func(Installer) (string, bool)) ([]byte, []Installer, error) {
	zr, err := openZip(bytes.NewReader(nupkg), int64(len(nupkg)))
	if err != nil {
		return nil, nil, fmt.Errorf("read package: %w", err)
	}
	pkg, err := readPackage(zr)
	if err != nil {
		return nil, nil, err
	}
	sc, err := pkg.Installers()
	if err != nil {
		return nil, nil, err
	}
	repl := map[Span]string{}
	// poisoned are literals that feed downloads which must differ (or one
	// that to refuses): not rewritten, whatever other downloads of them say.
	poisoned := map[Span]bool{}
	var done []Installer
	for _, in := range sc.Installers {
		if in.URLSpan.IsZero() || poisoned[in.URLSpan] {
			continue
		}
		u, ok := to(in)
		if prev, seen := repl[in.URLSpan]; !ok || seen && prev != u {
			// One literal, two downloads that must differ: not rewritten.
			poisoned[in.URLSpan] = true
			delete(repl, in.URLSpan)
			continue
		}
		repl[in.URLSpan] = u
		done = append(done, in)
	}
	done = slices.DeleteFunc(done, func(in Installer) bool { return poisoned[in.URLSpan] })
	if len(repl) == 0 {
		return nil, nil, ErrNothingToRewrite
	}
	script, err := RewriteScript(pkg.Script, repl)
	if err != nil {
		return nil, nil, err
	}
	var out bytes.Buffer
	zw := zip.NewWriter(&out)
	for _, f := range zr.File {
		switch {
		case strings.EqualFold(f.Name, ".signature.p7s"):
			continue
		case f.Name == pkg.ScriptPath:
			fh := f.FileHeader
			// The writer computes the sizes and checksum; the old
			// extra fields (a zip64 record) would say the old ones.
			fh.CRC32, fh.CompressedSize64, fh.UncompressedSize64, fh.Extra = 0, 0, 0, nil
			fh.Method = zip.Deflate
			w, err := zw.CreateHeader(&fh)
			if err != nil {
				return nil, nil, fmt.Errorf("rewrite %s: %w", f.Name, err)
			}
			if _, err := w.Write(script); err != nil {
				return nil, nil, fmt.Errorf("rewrite %s: %w", f.Name, err)
			}
		default:
			if err := zw.Copy(f); err != nil {
				return nil, nil, fmt.Errorf("copy %s: %w", f.Name, err)
			}
		}
	}
	if err := zw.Close(); err != nil {
		return nil, nil, fmt.Errorf("write package: %w", err)
	}
	return out.Bytes(), done, nil
}

// RewriteScript replaces each span of src with a single-quoted literal of
// its new text. The spans must not overlap.
func RewriteScript(src []byte, repl map[Span]string) ([]byte, error) {
	spans := make([]Span, 0, len(repl))
	for sp := range repl {
		if sp.Start < 0 || sp.End > len(src) || sp.Start >= sp.End {
			return nil, fmt.Errorf("span %d-%d is outside the script", sp.Start, sp.End)
		}
		spans = append(spans, sp)
	}
	slices.SortFunc(spans, func(a, b Span) int { return a.Start - b.Start })
	var b bytes.Buffer
	at := 0
	for _, sp := range spans {
		if sp.Start < at {
			return nil, fmt.Errorf("spans overlap at %d", sp.Start)
		}
		b.Write(src[at:sp.Start])
		b.WriteString("'" + strings.ReplaceAll(repl[sp], "'", "''") + "'")
		at = sp.End
	}
	b.Write(src[at:])
	return b.Bytes(), nil
}
