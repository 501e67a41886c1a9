// Package door is the one way bytes enter warren's store. A request (or
// warren's own caller: preload, a hub's generations, replication, the
// Chocolatey feeds) gets a Plan for a URL: its repository and credential
// scope and the digest learnt metadata gives it (plan.go, canon.go,
// private.go); then the store, one flight per digest or URL from ordered
// sources (fillrun.go, the only place the fill engine runs: LAN peers, the
// site's hubs, the origin (origin.go), and the other mirrors of its mirror
// group); the verify, the learn of index files (metadata.go: Release,
// Packages, repomd.xml, primary, and a Chocolatey package's install
// script, installer.go), and the change feed. A list of mirrors (a
// metalink or a mirror list, mirrors.go) is an index file that makes its
// mirrors one repository scope. A repository with known keys has its top
// metadata's signature checked before anything is learnt from it
// (signatures.go, package trust); a hub stores none that fails, and hands
// its nodes only consistent generations (generations.go). None of its
// callers drives the fill engine itself.
package door
