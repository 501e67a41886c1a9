package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/warren-cache/warren/cachestore"
)

// serveGuarded serves px behind its guarded listener on loopback.
func serveGuarded(t *testing.T, px *Server, lim ConnLimits) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveGuardedOn(t, px, ln, lim)
	return ln.Addr().String()
}

// serveGuardedOn serves px on ln as the daemon does: behind the guarded
// listener, its connections reachable from handlers (ConnContext).
func serveGuardedOn(t *testing.T, px *Server, ln net.Listener, lim ConnLimits) {
	srv := &http.Server{Handler: px, ConnContext: ConnContext}
	go srv.Serve(px.Listen(ln, lim))
	t.Cleanup(func() { srv.Close() })
}

// storedHit is a harness whose upstream's one package, of size bytes, is
// hash-known and stored: the next GET of it is a hit.
func storedHit(t *testing.T, size int) (*upstream, *harness) {
	t.Helper()
	up := newUpstream(t, size)
	h := newHarness(t, up)
	h.learn()
	h.mustGet(up.debURL, 200)
	h.settle()
	return up, h
}

// tinyWindowDialer dials with a 4 KB receive buffer: a client the server
// must wait on, its socket full again and again.
func tinyWindowDialer() *net.Dialer {
	return &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) {
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
	}}
}

// readStatus reads the status line the server sends on c, sending nothing.
func readStatus(t *testing.T, c net.Conn) int {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// A client outside allow_clients is answered 403 on accept, before it has
// sent a byte: its request head is never read into memory.
func TestOutsiderRefusedOnAccept(t *testing.T) {
	up := newUpstream(t, 10)
	h := newHarness(t, up, func(c *testConfig, _ *cachestore.Config) {
		c.AllowClients = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	})
	addr := serveGuarded(t, h.px, ConnLimits{})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if code := readStatus(t, c); code != http.StatusForbidden {
		t.Fatalf("outsider: %d before sending anything, want 403", code)
	}
}

// Past its connection cap a client gets 503 at once; a closed connection
// gives its place back.
func TestPerClientConnectionCap(t *testing.T) {
	up := newUpstream(t, 10)
	h := newHarness(t, up)
	addr := serveGuarded(t, h.px, ConnLimits{PerClient: 3, Total: 100})
	var open []net.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	get := func(c net.Conn) int {
		io.WriteString(c, "GET /_warren/stats HTTP/1.1\r\nHost: x\r\n\r\n")
		return readStatus(t, c)
	}
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
		if code := get(c); code != 200 { // accepted and served: it counts
			t.Fatalf("connection within the cap: %d", code)
		}
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if code := readStatus(t, c); code != http.StatusServiceUnavailable {
		t.Fatalf("fourth connection: %d, want 503", code)
	}
	open[0].Close()
	// The server sees the close when it next reads: wait for the place to
	// come back, with a deadline.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET /_warren/stats HTTP/1.1\r\nHost: x\r\n\r\n")
		code := readStatus(t, c)
		c.Close()
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a closed connection never gave its place back: %d", code)
		}
		if !strings.Contains(http.StatusText(code), "Unavailable") {
			t.Fatalf("unexpected %d", code)
		}
	}
}

// The total cap holds across clients.
func TestTotalConnectionCap(t *testing.T) {
	up := newUpstream(t, 10)
	h := newHarness(t, up)
	addr := serveGuarded(t, h.px, ConnLimits{PerClient: 10, Total: 2})
	a, _ := net.Dial("tcp", addr)
	defer a.Close()
	b, _ := net.Dial("tcp", addr)
	defer b.Close()
	for _, c := range []net.Conn{a, b} {
		io.WriteString(c, "GET /_warren/stats HTTP/1.1\r\nHost: x\r\n\r\n")
		if code := readStatus(t, c); code != 200 {
			t.Fatalf("within the total: %d", code)
		}
	}
	c, _ := net.Dial("tcp", addr)
	defer c.Close()
	if code := readStatus(t, c); code != http.StatusServiceUnavailable {
		t.Fatalf("past the total: %d, want 503", code)
	}
}

// The guarded listener's connections keep *net.TCPConn's ReadFrom, through
// which net/http sends a file's bytes with sendfile; a body read from a
// file arrives whole through it.
func TestGuardedConnKeepsSendfile(t *testing.T) {
	up := newUpstream(t, 10)
	h := newHarness(t, up)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gl := h.px.Listen(ln, ConnLimits{})
	defer gl.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := gl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	rf, ok := server.(io.ReaderFrom)
	if !ok {
		t.Fatalf("%T hides the TCP connection's ReadFrom: no sendfile for hits", server)
	}
	body := strings.Repeat("sendfile ", 100000)
	f, err := os.CreateTemp(t.TempDir(), "blob")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(body)
	f.Seek(0, io.SeekStart)
	defer f.Close()
	got := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(client)
		got <- string(b)
	}()
	if n, err := rf.ReadFrom(f); err != nil || n != int64(len(body)) {
		t.Fatalf("ReadFrom: %d bytes, %v", n, err)
	}
	server.Close()
	if b := <-got; b != body {
		t.Fatalf("the client got %d bytes, want the %d of the file", len(b), len(body))
	}
}

// countingListener counts the writes to the connections it accepts;
// raw, when set, lets them hand out their descriptor (syscall.Conn), as
// a TCP connection does.
type countingListener struct {
	net.Listener
	raw    bool
	writes atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	cc := &countingConn{Conn: c, writes: &l.writes}
	if l.raw {
		return &rawCountingConn{cc}, nil
	}
	return cc, nil
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

type rawCountingConn struct{ *countingConn }

func (c *rawCountingConn) SyscallConn() (syscall.RawConn, error) {
	return c.Conn.(syscall.Conn).SyscallConn()
}

// A small hit's body goes with sendfile behind its corked head: nothing
// of it passes through Write (it took two, head and body, through a pread
// copy). HEAD and errors leave in one write; ranges and bodies up to the
// kept descriptors' limit are whole and right, also to a client that
// reads slowly through a tiny window (the socket is full again and again),
// and on a connection without a descriptor.
func TestSmallHitGoesWithSendfileBehindItsHead(t *testing.T) {
	for _, tt := range []struct {
		name       string
		size       int
		method     string
		rng        string
		raw        bool
		slow       bool
		status     int
		wantWrites int64 // -1: not counted
	}{
		{"20 KB hit", 20 << 10, http.MethodGet, "", true, false, http.StatusOK, 0},
		{"empty blob", 0, http.MethodGet, "", true, false, http.StatusOK, -1},
		{"one byte", 1, http.MethodGet, "", true, false, http.StatusOK, -1},
		{"1 MiB hit", 1 << 20, http.MethodGet, "", true, false, http.StatusOK, 0},
		{"1 MiB hit, slow client", 1 << 20, http.MethodGet, "", true, true, http.StatusOK, 0},
		{"range of a small hit", 20 << 10, http.MethodGet, "bytes=100-5099", true, false, http.StatusPartialContent, 0},
		{"two ranges", 20 << 10, http.MethodGet, "bytes=0-9,100-199", true, false, http.StatusPartialContent, -1},
		{"range past the end", 20 << 10, http.MethodGet, "bytes=30000-", true, false, http.StatusRequestedRangeNotSatisfiable, 1},
		{"HEAD of a small hit", 20 << 10, http.MethodHead, "", true, false, http.StatusOK, 1},
		{"no descriptor", 20 << 10, http.MethodGet, "", false, false, http.StatusOK, -1},
		{"past the kept descriptors", 1<<20 + 1, http.MethodGet, "", true, false, http.StatusOK, -1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up, h := storedHit(t, tt.size)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			cl := &countingListener{Listener: ln, raw: tt.raw}
			serveGuardedOn(t, h.px, cl, ConnLimits{})
			pu, _ := url.Parse("http://" + ln.Addr().String())
			tr := &http.Transport{Proxy: http.ProxyURL(pu), DisableCompression: true}
			if tt.slow {
				tr.DialContext = tinyWindowDialer().DialContext
			}
			client := &http.Client{Transport: tr}
			defer client.CloseIdleConnections()
			get := func() (*http.Response, []byte) {
				req, _ := http.NewRequest(tt.method, up.debURL, nil)
				if tt.rng != "" {
					req.Header.Set("Range", tt.rng)
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var body []byte
				if tt.slow {
					buf := make([]byte, 512)
					for {
						n, err := resp.Body.Read(buf)
						body = append(body, buf[:n]...)
						if err == io.EOF {
							break
						}
						if err != nil {
							t.Fatal(err)
						}
					}
				} else if body, err = io.ReadAll(resp.Body); err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode != tt.status || resp.Header.Get("X-Cache") != "HIT from warren" {
					t.Fatalf("status %d, X-Cache %q; want %d and a hit", resp.StatusCode, resp.Header.Get("X-Cache"), tt.status)
				}
				return resp, body
			}
			get() // the blob's descriptor is kept from here on
			for range 3 {
				before := cl.writes.Load()
				resp, body := get()
				want := up.deb
				switch {
				case tt.status == http.StatusRequestedRangeNotSatisfiable:
					want = nil
				case tt.method == http.MethodHead:
					want = nil
				case tt.rng == "bytes=0-9,100-199":
					if !bytes.Contains(body, up.deb[:10]) || !bytes.Contains(body, up.deb[100:200]) {
						t.Fatalf("multipart answer lacks a range: %d bytes", len(body))
					}
					continue
				case tt.rng != "":
					want = up.deb[100:5100]
				}
				if want != nil && !bytes.Equal(body, want) {
					t.Fatalf("got %d bytes, not the %d wanted", len(body), len(want))
				}
				if tt.method == http.MethodHead && resp.ContentLength != int64(tt.size) {
					t.Fatalf("HEAD: Content-Length %d, want %d", resp.ContentLength, tt.size)
				}
				if n := cl.writes.Load() - before; tt.wantWrites >= 0 && n != tt.wantWrites {
					t.Fatalf("the answer took %d writes, want %d", n, tt.wantWrites)
				}
			}
		})
	}
}

// A client that goes away in the middle of a corked hit's sendfile costs
// the server that connection only: the next client gets the blob whole.
func TestCorkedHitClientGoneMidBody(t *testing.T) {
	up, h := storedHit(t, 1<<20)
	addr := serveGuarded(t, h.px, ConnLimits{})
	for range 3 {
		c, err := tinyWindowDialer().Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", up.debURL, strings.TrimPrefix(up.URL, "http://"))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, 4096)); err != nil {
			t.Fatalf("head and first bytes: %v", err)
		}
		c.Close() // with most of the body unsent
	}
	pu, _ := url.Parse("http://" + addr)
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}}
	defer client.CloseIdleConnections()
	resp, err := client.Get(up.debURL)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, up.deb) {
		t.Fatalf("after clients went away: %d, %d bytes, %v", resp.StatusCode, len(body), err)
	}
}

// allow_clients with IPv6 ranges: a link-local client is judged without
// its zone, and a v4-mapped one (a dual-stack socket's) as the IPv4
// address it is.
func TestAllowClientsIPv6(t *testing.T) {
	up := newUpstream(t, 10)
	h := newHarness(t, up, func(c *testConfig, _ *cachestore.Config) {
		c.AllowClients = []netip.Prefix{netip.MustParsePrefix("fd00:77::/64"), netip.MustParsePrefix("fe80::/64"), netip.MustParsePrefix("10.0.0.0/8")}
	})
	for addr, ok := range map[string]bool{
		"fd00:77::11": true, "fd00:78::11": false, "fe80::5%eth0": true, "fe80:0:0:1::5%eth0": false,
		"10.1.2.3": true, "192.0.2.1": false, "::1": false,
	} {
		a := netip.MustParseAddr(addr)
		if err := h.px.clientAllowed(a); (err == nil) != ok {
			t.Errorf("%s: allowed %v, want %v (%v)", addr, err == nil, ok, err)
		}
	}
	// Over a real dual-stack socket: a client from ::ffff:127.0.0.1 is
	// 127.0.0.1, outside these networks, and refused on accept.
	ln, err := net.Listen("tcp", "[::]:0")
	if err != nil {
		t.Skipf("no dual-stack socket here: %v", err)
	}
	serveGuardedOn(t, h.px, ln, ConnLimits{})
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	c, err := net.Dial("tcp4", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if got := readStatus(t, c); got != http.StatusForbidden {
		t.Fatalf("a v4-mapped client outside allow_clients got %d, want 403", got)
	}
}

// addrListener hands out the connections put on conns, each from the
// remote address it claims (a LAN of many client addresses, here).
type addrListener struct{ conns chan net.Conn }

func (l addrListener) Accept() (net.Conn, error) {
	c, ok := <-l.conns
	if !ok {
		return nil, net.ErrClosed
	}
	return c, nil
}
func (l addrListener) Close() error   { return nil }
func (l addrListener) Addr() net.Addr { return &net.TCPAddr{} }

type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

// The cap per client counts an IPv6 client by its /64: one host may hold
// a whole /64 (SLAAC privacy addresses, as many as it likes), so counted
// by address it could take every place under the total cap. IPv4 clients
// and link-local ones (every host on a link shares fe80::/64) count by
// address.
func TestPerClientCapCountsIPv6By64(t *testing.T) {
	up := newUpstream(t, 10)
	h := newHarness(t, up, func(c *testConfig, _ *cachestore.Config) {
		c.AllowClients = []netip.Prefix{netip.MustParsePrefix("fd00:77::/48"), netip.MustParsePrefix("fe80::/64"), netip.MustParsePrefix("10.0.0.0/8")}
	})
	for _, tt := range []struct {
		name    string
		clients []string
		want    []string // admitted, in order
	}{
		{"one /64's addresses share one client's cap", []string{"fd00:77::1", "fd00:77::2", "fd00:77::3", "fd00:77::4", "fd00:77::5", "fd00:77:0:1::1"},
			[]string{"fd00:77::1", "fd00:77::2", "fd00:77::3", "fd00:77:0:1::1"}},
		{"one IPv6 address", []string{"fd00:77::9", "fd00:77::9", "fd00:77::9", "fd00:77::9"}, []string{"fd00:77::9", "fd00:77::9", "fd00:77::9"}},
		{"link-local hosts count apart", []string{"fe80::1%eth0", "fe80::2%eth0", "fe80::3%eth0", "fe80::4%eth0"}, []string{"fe80::1%eth0", "fe80::2%eth0", "fe80::3%eth0", "fe80::4%eth0"}},
		{"IPv4 clients count by address", []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.1", "10.0.0.1", "10.0.0.1"},
			[]string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.1", "10.0.0.1"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ch := make(chan net.Conn, len(tt.clients))
			for _, a := range tt.clients {
				server, client := net.Pipe()
				t.Cleanup(func() { client.Close() })
				ch <- addrConn{Conn: server, remote: net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(a), 40000))}
			}
			close(ch)
			ln := h.px.Listen(addrListener{ch}, ConnLimits{PerClient: 3, Total: 100})
			var got []string
			for {
				c, err := ln.Accept()
				if err != nil {
					break
				}
				t.Cleanup(func() { c.Close() })
				got = append(got, c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().String())
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("admitted %v, want %v", got, tt.want)
			}
		})
	}
}
