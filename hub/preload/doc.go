// Package preload is a hub's preloading: it fetches what its preload list
// names before anyone asks (BAADS's fetch-and-preload and preload modes),
// through the door as a request would (verified, stored by digest, index
// files learnt): the index files first, then each artifact not held yet,
// resolved as apt and dnf would resolve them (the newest version in
// dpkg's or rpm's order across the suites a machine uses, dependencies,
// and apt's Recommends). What is held already is never fetched again, so a
// run cut short (the window closed, a restart) resumes where it stopped.
package preload
