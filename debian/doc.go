// Package debian knows apt repositories: it classifies the URLs apt asks for and
// parses Release/InRelease, Packages and Sources files, streaming, into the
// URL -> SHA256 facts the proxy records, and orders package versions as dpkg
// does. It does no I/O of its own: every parser is a pure function over an
// io.Reader or a string.
package debian
