// Package cachestore owns warren's bytes on disk: blobs named by their digest
// (blobs/<algo>/<aa>/<hex>), the Badger index beside them (URL -> digest
// facts learnt from repository metadata, the URL cache with its upstream
// validators, per-blob statistics), the fills that write new blobs while
// readers follow them, and the care of all that: recovery after a crash, a
// damaged index rebuilt from the blobs (index.go; files it may not use are
// no damage, access.go), the scrub and rechecks that find bit rot
// (scrub.go), the sweep of facts no metadata lists (sweep.go), and the
// headroom and reserve that keep a full disk from killing the process
// (reserve.go). It knows nothing of the network:
// callers hand it bytes and digests.
//
// The promise: no byte is stored under a digest it does not hash to, and
// neither a crash, a damaged index nor a full disk leaves a blob that would
// be served wrong.
package cachestore
