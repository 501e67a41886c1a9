package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/warren-cache/warren/cachestore"
)

// The admin client: a call over the daemon's socket, or, with the daemon
// stopped, to the same API served in process on the cache opened here.

// adminCall does one admin request: over the daemon's socket when it runs,
// else in process on the cache opened here.
// adminCall asks the running daemon over its socket, or with the daemon
// stopped, answers in process from the cache itself. ctx ends the call
// (and what it started: a verify stops when the CLI is interrupted).
func adminCall(ctx context.Context, cfg settings, method, path string) (*http.Response, error) {
	sock := filepath.Join(cfg.CacheDir, adminSocket)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, "unix", sock)
	}}}
	req, _ := http.NewRequestWithContext(ctx, method, "http://warren"+path, nil)
	resp, err := hc.Do(req)
	if err == nil {
		return resp, nil
	}
	scfg, oerr := storeConfig(cfg, nil)
	if oerr != nil {
		return nil, oerr
	}
	store, oerr := cachestore.Open(scfg)
	if oerr != nil {
		// A socket this user may not use says a daemon runs; one left
		// behind (the daemon killed) must not hide the files a run as
		// root left, which Open names.
		var pe *cachestore.PermissionError
		if _, serr := os.Stat(sock); serr == nil && (!errors.As(oerr, &pe) || errors.Is(err, fs.ErrPermission)) {
			return nil, fmt.Errorf("the cache in %s is held by a running warren, but its admin socket %s does not answer (%v); are you root or in the warren group?", cfg.CacheDir, sock, err)
		}
		return nil, oerr
	}
	return inProcess(store, cfg.CacheDir, req)
}

// inProcess answers req from the admin API on a cache opened here, over
// an in-memory connection served by a real http.Server: the answer
// streams (verify's progress) exactly as over the daemon's socket. Closing
// the body stops the server and closes the cache.
func inProcess(store *cachestore.Store, dir string, req *http.Request) (*http.Response, error) {
	client, server := net.Pipe()
	srv := &http.Server{Handler: (&adminAPI{store: store}).handler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(&oneConn{conn: server, closed: make(chan struct{})})
	}()
	shut := func() error {
		srv.Close()
		<-served
		store.Close()
		return keepOwner(dir)
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) { return client, nil }}}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("admin request in process: %w", err), shut())
	}
	resp.Body = &closeAlso{ReadCloser: resp.Body, also: shut}
	return resp, nil
}

// oneConn is a listener that accepts one connection, then none until closed.
type oneConn struct {
	once   sync.Once
	conn   net.Conn
	closed chan struct{}
}

func (l *oneConn) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() { c = l.conn })
	if c != nil {
		return c, nil
	}
	<-l.closed
	return nil, net.ErrClosed
}

func (l *oneConn) Close() error {
	select {
	case <-l.closed:
	default:
		close(l.closed)
	}
	return nil
}

func (l *oneConn) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }

func (pipeAddr) String() string { return "in-process" }

// closeAlso runs also once the body is closed.
type closeAlso struct {
	io.ReadCloser
	also func() error
	once sync.Once
}

func (c *closeAlso) Close() error {
	err := c.ReadCloser.Close()
	c.once.Do(func() { err = errors.Join(err, c.also()) })
	return err
}

// keepOwner gives back to the cache directory's owner what a root CLI just
// created or changed in it: else the daemon (user warren) could not open
// its own index afterwards.
func keepOwner(dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok || sys.Uid == 0 {
		return nil
	}
	return filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if err := os.Lchown(p, int(sys.Uid), int(sys.Gid)); err != nil {
			return fmt.Errorf("give %s back to the cache's owner: %w", p, err)
		}
		return nil
	})
}

// call runs an admin request and decodes its JSON, or returns its error text.
func call(ctx context.Context, cfg settings, method, path string, v any) error {
	resp, err := adminCall(ctx, cfg, method, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return errors.New(strings.TrimSpace(string(b)))
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
