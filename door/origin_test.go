package door

import (
	"bytes"
	"io"
	"testing"

	"golang.org/x/time/rate"
)

// preload_rate: a paced body hands out no more than the limiter's burst
// per read and takes a token per byte, so a run's WAN bytes follow the
// rate (the limiter's own clock does the waiting).
func TestPacedBody(t *testing.T) {
	body := bytes.Repeat([]byte("warren paced body "), 6000)
	lim := rate.NewLimiter(rate.Inf, 4<<10)
	p := &paced{ReadCloser: io.NopCloser(bytes.NewReader(body)), ctx: t.Context(), lim: lim}
	buf := make([]byte, 64<<10)
	var got []byte
	for {
		n, err := p.Read(buf)
		if n > 4<<10 {
			t.Fatalf("a read of %d bytes, above the burst of %d", n, 4<<10)
		}
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, body) {
		t.Fatal("the paced body changed the bytes")
	}
	// A finite rate: the tokens a read takes are the bytes it gave.
	slow := rate.NewLimiter(1, 1<<10)
	p = &paced{ReadCloser: io.NopCloser(bytes.NewReader(body)), ctx: t.Context(), lim: slow}
	if n, err := p.Read(buf); err != nil || n != 1<<10 || slow.Tokens() > 0.5 {
		t.Fatalf("one read at 1 B/s: %d bytes, %v, %.1f tokens left; want the burst, all tokens taken", n, err, slow.Tokens())
	}
}
