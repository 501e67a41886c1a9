// Package peering is warren on the LAN: the peer table, the UDP messages
// ("who has sha256:X and is ready?", want, downloading, have, bad-blob), the
// election of one downloader per artifact, the LAN as one source of the
// fill engine (source.go: which peer to take a blob from, or "fetch it
// yourself"), and blob transfer between peers over HTTP
// (/v1/blobs/<algo>/<hex>) with upload slots, write deadlines and a shared
// rate limit. It knows blobs by digest only, never package formats. How the
// bytes arrive and whether they are right is the fill engine's business:
// every byte a peer sends is held from clients until the blob verifies.
package peering
