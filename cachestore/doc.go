// Package cachestore owns warren's bytes on disk: blobs named by their digest
// (blobs/<algo>/<aa>/<hex>), the Badger index beside them (URL -> digest
// facts learnt from repository metadata, the URL cache with its upstream
// validators, per-blob statistics), the fills that write new blobs while
// readers follow them, and recovery after a crash. It knows nothing of the
// network: callers hand it bytes and digests.
//
// The promise: no byte is stored under a digest it does not hash to, and a
// crash never leaves a blob that would be served wrong.
package cachestore
