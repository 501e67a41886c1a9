// Package replicate is hub-to-hub replication (ProGet's hub and spoke):
// the serving side answers another hub's pulls from this hub's change log
// (the change feed, paged by cursor, and blobs by digest, read-only, each
// sync token seeing only its repositories), and the pulling side reads a
// source hub's feed from its cursor and brings what it names in through
// the door (package door), each blob verified against its digest and
// every index file learnt as one fetched from the origin, so that a site
// holds it before anyone asks and installs from it, plain apt and dnf
// clients too, with the WAN down.
//
// A source is trusted for nothing it cannot prove: each entry must be in
// the puller's repositories; times are never taken past now; a page that
// does not advance ends the run; a rebuilt source (another change log) is
// read again from its start; a blob that fails verification is not asked
// of that source again in the run; an entry that failed is tried again by
// the next run. In a repository with keys, a Release or repomd.xml is
// applied only when its signature verifies, and an index file or package
// only once verified metadata lists it at its digest.
package replicate
