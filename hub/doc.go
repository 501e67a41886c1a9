// Package hub is the site distribution server: the policy a warren in the
// hub role applies to the nodes that use it (tokens, the fetch /
// fetch-and-preload / preload modes, the max-requesters queue), what it
// preloads and when (the preload list, its checks and dependency closure,
// the daily window, the run log and the packages seen held), and the
// node's side of the same protocol (Parent: a hub as an upstream of the
// fill engine, tried after the LAN's peers and before the origin).
//
// The protocol is plain HTTP proxying: a node sends the hub the upstream
// URL it wants as a proxy request, with its token, the digest it expects
// (X-Warren-Digest) and its Via chain. The hub answers as the origin would,
// or refuses in a way a node can tell from upstream's own answers
// (X-Warren-Refused: a reason). It never re-signs anything: nodes learn
// hashes from the upstream metadata the hub passes on.
package hub
