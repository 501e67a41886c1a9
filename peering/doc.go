// Package peering is warren on the LAN: the peer table, the UDP messages
// ("who has sha256:X and is ready?", want, downloading, have), the election
// of one downloader per artifact, and blob transfer between peers over HTTP
// (/v1/blobs/<algo>/<hex>) with upload slots and a shared rate limit. It
// knows blobs by digest only, never package formats. Every byte a peer sends
// is verified by the fill it lands in, against the digest the metadata gave.
package peering
