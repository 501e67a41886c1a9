// Package fill is warren's fill engine: one verified fill of a blob over an
// ordered list of sources (LAN peers, a hub, the origin mirror), each behind
// one small interface that opens the blob at an offset.
//
// The engine alone owns the policy that every source needs: resume at the
// offset already written, the stall watchdog (too little progress for
// StallTimeout on any source moves on to the next), the byte cap (no byte
// past the expected size is accepted; a source that sends more is cut and
// blamed), hashing and verification, blame of the sources whose bytes were
// wrong, and the walk to the next source. Its promise: a fill commits only
// bytes that hash to the expected digest at exactly the expected size, and
// no source can hold it forever.
//
// It sits between the proxy (which asks for a fill and serves its readers)
// and cachestore (which holds the growing file and renames it into place).
package fill
