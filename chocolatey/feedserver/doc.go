// Package feedserver is warren's NuGet v2 pull-through feed for Chocolatey
// (/chocolatey/api/v2/ and /chocolatey/<name>/api/v2/), beside the feed's
// parser (package chocolatey): every OData call choco makes is answered
// from one upstream answer per site, kept through the door and learnt from
// (each package's PackageHash), within each upstream's request budget,
// with the links rewritten to point here; the last good answer is served
// when upstream cannot be asked. Package downloads are the front's
// request story's: this package only says their plan. On a hub with
// chocolatey.internalize it serves packages rewritten to download their
// installers from the hub, the originals beside them (internalize.go).
package feedserver
