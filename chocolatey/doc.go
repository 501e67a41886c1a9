// Package chocolatey knows NuGet v2 (OData/Atom) feeds as Chocolatey uses
// them: it parses a feed page into its packages (id, version, download URL,
// PackageHash) and validates ids and versions. It does no I/O; the proxy
// serves the feed and rewrites its links.
package chocolatey
