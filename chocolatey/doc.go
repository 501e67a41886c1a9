// Package chocolatey knows NuGet v2 (OData/Atom) feeds as Chocolatey uses
// them: it parses a feed page into its packages (id, version, download URL,
// PackageHash), validates ids and versions, and puts each OData call in a
// normal form with its kind (service document, one version's entry, a
// search, ...), so that calls asking the same thing share one answer. It
// does no I/O; the proxy serves the feed, keeps its answers and rewrites
// their links.
package chocolatey
