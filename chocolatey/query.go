package chocolatey

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// QueryKind is what a NuGet v2 OData call asks for; it decides how long
// its answer may be kept.
type QueryKind string

// The kinds of feed calls choco and NuGet make.
const (
	KindService  QueryKind = "service"  // the service document (api/v2/)
	KindMetadata QueryKind = "metadata" // $metadata
	KindPackage  QueryKind = "package"  // Packages(Id='x',Version='y'): one version's entry, immutable
	KindFilter   QueryKind = "filter"   // Packages()?$filter=...: latest-version lookups
	KindFind     QueryKind = "find"     // FindPackagesById(): a package's versions
	KindSearch   QueryKind = "search"   // Search()
	KindUpdates  QueryKind = "updates"  // GetUpdates(): choco upgrade / outdated
	KindOther    QueryKind = "other"    // anything else the feed answers
	// KindDownload is a package download (package/<id>/<version>), which is
	// not a query: it is kept by its hash, not by this cache.
	KindDownload QueryKind = "download"
)

// QueryKinds lists the kinds a query can be, for settings and figures.
var QueryKinds = []QueryKind{KindService, KindMetadata, KindPackage, KindFilter, KindFind, KindSearch, KindUpdates, KindOther}

var rePackageEntry = regexp.MustCompile(`^packages\(id='[^']*',version='[^']*'\)$`)

// maxQueryLen bounds a call's path and query: OData calls are short, and
// the normalised form becomes a cache key.
const maxQueryLen = 8 << 10

// NormalizeQuery gives the canonical form of an OData call, so that calls
// that ask the same thing share one upstream answer: rest is what follows
// api/v2/ (as sent, escaped), rawQuery the query string. The path is
// unescaped and lower-cased (NuGet servers route without regard to case;
// ids are case-insensitive), and the query parameters are unescaped and
// sorted by name, each name's values in their order. Nothing a client
// sends besides path and query (session ids, its user agent) is part of
// it.
func NormalizeQuery(rest, rawQuery string) (key string, kind QueryKind, err error) {
	if len(rest)+len(rawQuery) > maxQueryLen {
		return "", "", fmt.Errorf("feed call of %d bytes: longer than %d", len(rest)+len(rawQuery), maxQueryLen)
	}
	p, err := url.PathUnescape(rest)
	if err != nil {
		return "", "", fmt.Errorf("feed call path %q: %w", rest, err)
	}
	p = asciiLower(strings.TrimRight(p, "/"))
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return "", "", fmt.Errorf("feed call query %q: %w", rawQuery, err)
	}
	names := make([]string, 0, len(q))
	for k := range q {
		names = append(names, k)
	}
	slices.Sort(names)
	var b strings.Builder
	b.WriteString(url.PathEscape(p)) // escaped again: a '?' of the path stays apart from the query
	sep := byte('?')
	for _, k := range names {
		for _, v := range q[k] {
			b.WriteByte(sep)
			sep = '&'
			b.WriteString(url.QueryEscape(k))
			b.WriteByte('=')
			b.WriteString(url.QueryEscape(v))
		}
	}
	return b.String(), classify(p), nil
}

func classify(p string) QueryKind {
	switch {
	case p == "":
		return KindService
	case p == "$metadata":
		return KindMetadata
	case rePackageEntry.MatchString(p):
		return KindPackage
	case p == "packages()" || p == "packages" || p == "packages()/$count":
		return KindFilter
	case p == "findpackagesbyid()" || p == "findpackagesbyid()/$count":
		return KindFind
	case p == "search()" || p == "search()/$count":
		return KindSearch
	case p == "getupdates()" || p == "getupdates()/$count":
		return KindUpdates
	}
	return KindOther
}

// asciiLower lower-cases ASCII letters only: ToLower would turn bytes that
// are not UTF-8 into three-byte replacement characters.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
