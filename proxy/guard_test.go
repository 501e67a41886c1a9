package proxy

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/warren-cache/warren/cachestore"
)

// With the default policy, nothing on warren's own loopback or link can be
// reached through it: not by address, not by a name that resolves there,
// not apt-cacher-ng style, not by CONNECT. Each is a 403 that says why, and
// the service behind never sees a request.
func TestUpstreamDestinationRefused(t *testing.T) {
	up := newUpstream(t, 10)
	up.files["/secret"] = []byte("loopback only")
	h := newHarness(t, up, func(c *testConfig, _ *cachestore.Config) { c.AllowUpstream = nil })
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(up.URL, "http://"))
	for _, u := range []string{
		up.URL + "/secret",                             // a literal loopback address
		"http://localhost:" + port + "/secret",         // a name that resolves to loopback
		"http://[::1]:" + port + "/secret",             // IPv6 loopback
		"http://169.254.169.254/latest/meta-data",      // cloud metadata: link-local
		"http://0.0.0.0:" + port + "/secret",           // unspecified
		h.front.URL + "/127.0.0.1:" + port + "/secret", // apt-cacher-ng style
	} {
		resp, body, err := h.get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "allow_upstream") {
			t.Errorf("GET %s: %d %q, want 403 naming allow_upstream", u, resp.StatusCode, body)
		}
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs { // this machine's own addresses
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
				h.mustGet("http://"+ipn.IP.String()+":"+port+"/secret", 403)
			}
		}
	}
	if n := up.count("/secret"); n != 0 {
		t.Fatalf("the loopback service was asked %d times", n)
	}

	// CONNECT, on an allowed port, to a loopback address.
	c, err := net.Dial("tcp", strings.TrimPrefix(h.front.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("CONNECT 127.0.0.1:443: %d, want 403", resp.StatusCode)
	}
}

// allow_upstream opens exactly what it lists.
func TestUpstreamDestinationAllowed(t *testing.T) {
	up := newUpstream(t, 10)
	up.files["/secret"] = []byte("loopback only")
	h := newHarness(t, up, func(c *testConfig, _ *cachestore.Config) {
		c.AllowUpstream = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	h.mustGet(up.URL+"/secret", 200)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(up.URL, "http://"))
	h.mustGet("http://[::1]:"+port+"/secret", 403)
}
