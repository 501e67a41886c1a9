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
	} {
		err := g.check("x:80", netip.MustParseAddr(tc.addr))
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v, want allowed=%v", tc.addr, err, tc.ok)
		}
	}
}
