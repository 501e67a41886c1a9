package repohosts

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strings"
)

// apt's auth.conf, read as apt 2.6 reads it (apt_auth.conf(5);
// apt-pkg/contrib/netrc.cc): a stream of tokens separated by spaces, tabs
// and newlines, in which "machine" starts an entry and "login" and
// "password" take the token after them; every other token is ignored.
// Fields may come in any order and on any number of lines. There is no
// comment syntax: a "#" is an unknown token like any other, so a line
// "# machine old.example login me password x" is an entry apt uses.

// AuthEntry is one machine entry of an auth.conf.
type AuthEntry struct {
	Machine string // the token as written: [scheme://]host[:port][/path]
	Scheme  string // "" when none is written: apt then uses it for https only
	Host    string // lower case; brackets of an IPv6 address removed
	Port    string // "" matches every port
	Path    string // "" or the path prefix it is limited to
	Login   string
	// Password says a password is given; its value is never kept.
	Password bool
}

// ErrTooLarge is a configuration file larger than warren reads.
var ErrTooLarge = fmt.Errorf("larger than %d bytes", maxFile)

// ParseAuthConf reads an auth.conf (or an auth.conf.d file) whole, at most
// maxFile bytes. An entry whose machine names no host is dropped: apt
// matches no URL with it.
func ParseAuthConf(r io.Reader) ([]AuthEntry, error) {
	sc := bufio.NewScanner(&boundedReader{r: r, left: maxFile})
	sc.Buffer(make([]byte, 0, 4<<10), maxFile+1)
	sc.Split(scanAuthTokens)
	var out []AuthEntry
	cur := -1 // the entry login and password go to; none before a machine
	const (
		keyword = iota
		wantMachine
		wantLogin
		wantPassword
	)
	state := keyword
	for sc.Scan() {
		tok := sc.Text()
		if tok == "" {
			continue
		}
		switch state {
		case keyword:
			switch {
			case tok == "machine":
				state = wantMachine
			case cur < 0: // apt ignores the rest outside an entry
			case tok == "login":
				state = wantLogin
			case tok == "password":
				state = wantPassword
			}
		case wantMachine:
			state, cur = keyword, -1
			if e := authEntry(tok); e.Host != "" {
				out = append(out, e)
				cur = len(out) - 1
			}
		case wantLogin, wantPassword:
			if state == wantLogin {
				out[cur].Login = tok
			} else {
				out[cur].Password = true
			}
			state = keyword
			// apt reads the file once per URL. For a URL this entry does
			// not match, it skips to the next "machine" token, even one
			// written as a login or password, and takes the token after
			// it as a machine: so does this parser, for every host apt
			// may send a credential to.
			if tok == "machine" {
				state = wantMachine
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("parse auth.conf: %w", err)
	}
	return out, nil
}

// authEntry splits a machine token as apt matches it:
// [scheme://]host[:port][/path].
func authEntry(m string) AuthEntry {
	e := AuthEntry{Machine: m}
	rest := m
	if scheme, after, ok := strings.Cut(m, "://"); ok {
		e.Scheme, rest = strings.ToLower(scheme), after
	}
	hostPort := rest
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		hostPort, e.Path = rest[:i], rest[i:]
	}
	switch {
	case strings.HasPrefix(hostPort, "["): // [v6]:port
		host, port, _ := strings.Cut(hostPort[1:], "]")
		e.Host, e.Port = host, strings.TrimPrefix(port, ":")
	case strings.Count(hostPort, ":") == 1:
		e.Host, e.Port, _ = strings.Cut(hostPort, ":")
	default: // a name, or an IPv6 address without brackets
		e.Host = hostPort
	}
	e.Host = strings.ToLower(e.Host)
	return e
}

// scanAuthTokens splits at spaces, tabs and newlines, as apt does; apt
// drops the carriage returns at a line's end, not those within it.
func scanAuthTokens(data []byte, atEOF bool) (int, []byte, error) {
	for i, c := range data {
		switch c {
		case ' ', '\t':
			return i + 1, data[:i], nil
		case '\n':
			return i + 1, bytes.TrimRight(data[:i], "\r"), nil
		}
	}
	if atEOF && len(data) > 0 {
		return len(data), bytes.TrimRight(data, "\r"), nil
	}
	return 0, nil, nil
}

// boundedReader fails once more than left bytes are read: a file cut
// short could hide an entry, so it is an error, never a partial read.
type boundedReader struct {
	r    io.Reader
	left int64
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, ErrTooLarge
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return 0, ErrTooLarge
	}
	return n, err
}
