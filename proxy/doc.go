// Package proxy is warren's HTTP front, and only that: apt and dnf talk to
// it as an HTTP proxy, or apt-cacher-ng style with the upstream host in the
// path, and choco reaches the feeds under /chocolatey/ (an internalizing
// hub's originals under /chocolatey-original/, the installers its
// rewritten packages download under /_warren/installers/). It admits clients
// (allow_clients and connection caps on accept: listener.go), routes
// (server.go: its own pages, a hub's replication endpoints, the feeds,
// CONNECT tunnels and intercepted https, the cache), and tells the story
// of one request top to bottom (serve.go) through the door (package door,
// the one way bytes enter the store): the plan, the store, a remembered
// 404, one flight from the ordered sources, the stream, the tails. It
// writes the answer (respond.go), a small hit corked with its body sent by
// sendfile (cork.go), and serves without storing when the disk has no room
// (unstored.go, the door still verifying).
//
// It knows no role: a hub's policy reaches it through the small Role
// interface (package hub's Role), the feeds through Feeds (package
// feedserver), the page and metrics through package status.
package proxy
