package debian

import (
	"path"
	"strings"
)

// Kind says what an apt URL names, which decides how warren caches it.
type Kind int

const (
	// KindOther is anything apt may fetch that warren does not understand; it is
	// cached by URL and revalidated.
	KindOther Kind = iota
	// KindRelease is InRelease or Release: the signed root of a suite, always
	// revalidated, parsed for the hashes of the index files.
	KindRelease
	// KindReleaseSignature is Release.gpg, revalidated like Release.
	KindReleaseSignature
	// KindIndex is a file under dists/ that Release lists (Packages, Sources,
	// Translation, Contents, ...), fetched by its name and revalidated.
	KindIndex
	// KindByHash is dists/.../by-hash/SHA256/<hex>: immutable, named by its digest.
	KindByHash
	// KindPackage is a .deb, .udeb or .ddeb in the pool, whose hash Packages gives.
	KindPackage
	// KindSource is a source package's file outside dists/ (.dsc, the
	// tarballs, a diff, an upstream signature), whose hash Sources gives.
	KindSource
)

func (k Kind) String() string {
	switch k {
	case KindRelease:
		return "release"
	case KindReleaseSignature:
		return "release-signature"
	case KindIndex:
		return "index"
	case KindByHash:
		return "by-hash"
	case KindPackage:
		return "package"
	case KindSource:
		return "source"
	default:
		return "other"
	}
}

// Classify tells what the URL path p names. It looks only at the path.
func Classify(p string) Kind {
	base := path.Base(p)
	switch {
	case strings.HasSuffix(base, ".deb"), strings.HasSuffix(base, ".udeb"), strings.HasSuffix(base, ".ddeb"):
		return KindPackage
	case ByHashDigest(p) != "":
		return KindByHash
	}
	if !strings.Contains(p, "/dists/") {
		// Flat repositories keep Release and Packages beside the debs.
		switch base {
		case "InRelease", "Release":
			return KindRelease
		case "Release.gpg":
			return KindReleaseSignature
		}
		if IsPackagesIndex(p) || IsSourcesIndex(p) {
			return KindIndex
		}
		if isSourceFile(base) {
			return KindSource
		}
		return KindOther
	}
	switch base {
	case "InRelease", "Release":
		return KindRelease
	case "Release.gpg":
		return KindReleaseSignature
	}
	return KindIndex
}

// ByHashDigest returns the lowercase SHA256 hex a by-hash URL path names, or
// "" when p is not a SHA256 by-hash path.
func ByHashDigest(p string) string {
	dir, hex := path.Split(p)
	if !strings.HasSuffix(dir, "/by-hash/SHA256/") || !isSHA256Hex(hex) {
		return ""
	}
	return strings.ToLower(hex)
}

// IsPackagesIndex reports whether p names a binary Packages index, plain or
// compressed, whose entries give .deb hashes.
func IsPackagesIndex(p string) bool {
	switch path.Base(p) {
	case "Packages", "Packages.gz", "Packages.xz", "Packages.bz2", "Packages.zst":
		return true
	}
	return false
}

// IsSourcesIndex reports whether p names a Sources index, plain or
// compressed, whose entries give the hashes of source packages' files.
func IsSourcesIndex(p string) bool {
	switch path.Base(p) {
	case "Sources", "Sources.gz", "Sources.xz", "Sources.bz2", "Sources.zst":
		return true
	}
	return false
}

// isSourceFile reports whether base is named like a file of a Debian source
// package: <source>_<version> then .dsc, .diff.gz, a tarball, or a
// tarball's .asc signature.
func isSourceFile(base string) bool {
	if !strings.Contains(base, "_") {
		return false
	}
	base = strings.TrimSuffix(base, ".asc")
	if strings.HasSuffix(base, ".dsc") || strings.HasSuffix(base, ".diff.gz") {
		return true
	}
	for _, z := range []string{".tar", ".tar.gz", ".tar.xz", ".tar.bz2", ".tar.lzma", ".tar.zst"} {
		if strings.HasSuffix(base, z) {
			return true
		}
	}
	return false
}

// RepoRoot returns the archive root of an index URL path: the part before
// "dists/", against which Packages' Filename fields are resolved. For a
// flat repository (no dists/) it is the directory holding the index.
func RepoRoot(p string) string {
	if i := strings.LastIndex(p, "/dists/"); i >= 0 {
		return p[:i+1]
	}
	dir, _ := path.Split(p)
	return dir
}

// SuiteDir returns the directory holding Release for a path under dists/,
// which Release's file names are relative to.
func SuiteDir(releasePath string) string {
	dir, _ := path.Split(releasePath)
	return dir
}

func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}
