// Package proxy is warren's HTTP front. apt (and later dnf and choco) talk to
// it as an HTTP proxy, or apt-cacher-ng style with the upstream host in the
// path. It classifies each URL, serves hits from the store, runs one fill
// per digest (or per URL) on a context no client owns, verifies what
// upstream sends against the hashes learnt from repository metadata, and
// records those hashes as the metadata passes through. CONNECT tunnels and
// requests it does not cache go through elazarl/goproxy.
//
// handler.go tells the story of one request from top to bottom.
package proxy
