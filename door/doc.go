// Package door is the one way bytes enter the store. A request (or
// warren's own caller: preload, a hub's generations, replication, the
// Chocolatey feeds) gets a Plan for a URL: its repository and credential
// scope and the digest learnt metadata gives it (plan.go, canon.go,
// private.go); then the store, one flight per digest from the ordered
// sources (LAN peers, the site's hubs, the origin: fillrun.go, the only
// place the fill engine runs; origin.go), the verify, the learn of index
// files (metadata.go: Release, Packages, repomd.xml, primary, and a
// Chocolatey package's install script, installer.go), and the change feed.
// A repository with known keys has its top metadata's signature checked
// before anything is learnt from it (signatures.go, package trust); a hub
// stores none that fails, and hands its nodes only consistent generations
// (generations.go).
package door
