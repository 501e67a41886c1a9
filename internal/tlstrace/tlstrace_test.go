package tlstrace

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

// A server that closes in the handshake is told apart from one that
// answers, and from one that does not listen.
func TestExplain(t *testing.T) {
	closer, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	go func() {
		for {
			c, err := closer.Accept()
			if err != nil {
				return
			}
			c.Read(make([]byte, 1)) // the ClientHello's first byte
			c.Close()
		}
	}()
	tlsSrv := httptest.NewTLSServer(http.NotFoundHandler())
	defer tlsSrv.Close()
	gone, _ := net.Listen("tcp", "127.0.0.1:0")
	goneAddr := gone.Addr().String()
	gone.Close()
	for _, tt := range []struct {
		name   string
		url    string
		client *http.Client
		cut    bool
	}{
		{"closed in the handshake", "https://" + closer.Addr().String() + "/", &http.Client{}, true},
		{"a certificate not trusted", tlsSrv.URL, &http.Client{}, false},
		{"answered", tlsSrv.URL, tlsSrv.Client(), false},
		{"nothing listening", "https://" + goneAddr + "/", &http.Client{}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, w := With(t.Context())
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, tt.url, nil)
			resp, err := tt.client.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			err = w.Explain(err)
			if got := errors.Is(err, ErrCutShort); got != tt.cut {
				t.Fatalf("cut short: %v, want %v (%v)", got, tt.cut, err)
			}
		})
	}
}
