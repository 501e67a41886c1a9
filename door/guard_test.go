package door

import (
	"net/netip"
	"testing"
	"time"
)

func TestDestGuardCheck(t *testing.T) {
	g := newDestGuard([]netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}, time.Now)
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1", false}, {"127.5.6.7", false}, {"::1", false}, {"::ffff:127.0.0.1", false},
		{"169.254.169.254", false}, {"fe80::1", false}, {"0.0.0.0", false}, {"::", false},
		{"224.0.0.251", false}, {"10.9.3.4", true}, {"192.0.2.10", true}, {"2001:db8::1", true},
		// IPv6: link-local with a zone, multicast, ULA (a LAN mirror) and
		// global addresses.
		{"fe80::1%eth0", false}, {"ff02::1", false}, {"ff05::2", false}, {"fd00:77::100", true}, {"2a01:4f8::1", true},
		// IPv4 carried in IPv6: judged as the IPv4 address too.
		{"64:ff9b::7f00:1", false}, {"64:ff9b::a9fe:a9fe", false}, {"64:ff9b::c000:20a", true},
		{"64:ff9b:1::7f00:1", false}, {"2002:7f00:1::1", false}, {"2002:c000:20a::1", true},
		{"::127.0.0.1", false}, {"::a9fe:a9fe", false},
		{"2001:0:4136:e378:8000:63bf:80ff:fffe", false}, // Teredo carrying 127.0.0.1
		{"2001:0:4136:e378:8000:63bf:3fff:fdf5", true},  // Teredo carrying 192.0.2.10
		// allow_upstream covers the IPv4 address however it is carried.
		{"64:ff9b::a09:304", true}, {"::ffff:10.9.3.4", true},
	} {
		err := g.check("x:80", netip.MustParseAddr(tc.addr))
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v, want allowed=%v", tc.addr, err, tc.ok)
		}
	}
}

// The refusal of an IPv4 address carried in IPv6 says both.
func TestDestGuardEmbeddedSaysWhy(t *testing.T) {
	g := newDestGuard(nil, time.Now)
	err := g.check("[64:ff9b::7f00:1]:80", netip.MustParseAddr("64:ff9b::7f00:1"))
	if err == nil || err.Error() != "upstream [64:ff9b::7f00:1]:80 is 64:ff9b::7f00:1, a NAT64 address of 127.0.0.1, a loopback address: warren does not fetch from it (to allow it, add it to allow_upstream, e.g. --allow-upstream 64:ff9b::7f00:1/128)" {
		t.Fatalf("%v", err)
	}
}
