// Package chocolatey knows NuGet v2 (OData/Atom) feeds and packages as
// Chocolatey uses them: it parses a feed page into its packages (id,
// version, download URL, PackageHash), validates ids and versions, and
// puts each OData call in a normal form with its kind (service document,
// one version's entry, a search, ...), so that calls asking the same thing
// share one answer. It reads a .nupkg's nuspec and install script, and the
// script's downloads with their checksums (script.go: the little
// PowerShell community packages use to name them), and rewrites a package
// so that its script downloads from a hub (Internalize). It does no I/O;
// the feed server serves the feed, and the door learns what a package's
// script names.
package chocolatey
