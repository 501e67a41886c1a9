// Package rpm knows dnf/yum repositories: it classifies their URLs and
// parses repomd.xml and primary.xml, streaming, into the URL -> digest
// facts the proxy records. Like the other ecosystem packages it does no I/O:
// every parser is a pure function over an io.Reader.
package rpm
