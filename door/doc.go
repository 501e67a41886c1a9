// Package door is the one way bytes enter warren's store. A URL becomes a
// plan (plan.go: its repository and credential scope, the digest its
// metadata names); the store is looked up; one flight per digest or URL
// fills it from ordered sources (fillrun.go, the only place the fill
// engine runs: LAN peers, the site's hubs, the origin, and the other
// mirrors of its mirror group); what it stores is verified, learnt from
// when it is an index file (metadata.go), and recorded in the change
// feed. A list of mirrors (a metalink or a mirror list, mirrors.go) is an
// index file that makes its mirrors one repository scope. The HTTP front,
// preload, a hub's generations, replication and the Chocolatey feeds are
// its callers; none drives the fill engine itself.
package door
