// Package rpm knows dnf/yum repositories: it classifies their URLs and
// parses repomd.xml and primary.xml, streaming, into the URL -> digest
// facts the proxy records, and the lists of mirrors a repository's
// metalink= or mirrorlist= URL answers (mirrors.go: the mirrors, and a
// metalink's hashes of repomd.xml), which it can also write back in
// another order. Like the other ecosystem packages it does no I/O: every
// parser is a pure function over an io.Reader.
package rpm
