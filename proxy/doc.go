// Package proxy is warren's HTTP front. apt (and later dnf and choco) talk to
// it as an HTTP proxy, or apt-cacher-ng style with the upstream host in the
// path. It classifies each URL and keys it in one canonical form, serves
// hits from the store, and hands misses to the fill engine (package fill):
// one fill per digest (or per URL) on a context no client owns, over the
// LAN's peers, the site's hubs and the origin as sources, verified against the hashes learnt
// from repository metadata. Metadata is learnt from its verified blob once
// stored (metadata.go). CONNECT tunnels and requests it does not cache go
// through elazarl/goproxy.
//
// It also owns who may talk to it and whom it talks to: allow_clients and
// connection caps on accept (listener.go), upstream destinations that are
// never this machine or its link (guard.go), and the Chocolatey feeds'
// kept answers and upstream request budgets (chocolatey.go, budget.go).
//
// serve.go tells the story of one request from top to bottom (serve);
// plan.go says what a URL must hash to, fillrun.go runs the one flight
// over its ordered sources, origin.go is the origin (or a hub) as a
// source, respond.go writes the answer, unstored.go serves when the disk
// has no room. In the hub role, hubrole.go applies package hub's policy
// (tokens, mode, the max-requesters queue) at the story's steps, and
// generations.go keeps the metadata it hands nodes consistent.
package proxy
