// Package tlstrace tells, of an https request that failed, whether the
// server cut its TLS handshake short without a word (closed or reset the
// connection): what a warren's listener does to a TLS client it turns
// away before reading a request (allow_clients, the connection caps).
// Without it the client's error is a bare "EOF", which says nothing.
package tlstrace

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http/httptrace"
	"sync"
	"syscall"
)

// ErrCutShort is a TLS handshake the server ended by closing (or
// resetting) the connection.
var ErrCutShort = errors.New("the server closed the connection in the TLS handshake")

// Watch watches the TLS handshakes of the requests made with its context.
type Watch struct {
	mu  sync.Mutex // guards err
	err error      // the last handshake's failure
}

// With returns ctx with a watch on its requests' TLS handshakes.
func With(ctx context.Context) (context.Context, *Watch) {
	w := &Watch{}
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		TLSHandshakeDone: func(_ tls.ConnectionState, err error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			w.err = err
		},
	}), w
}

// Explain wraps err, a request's failure, with ErrCutShort when the
// request's TLS handshake ended in the server's close or reset.
func (w *Watch) Explain(err error) error {
	if err == nil {
		return nil
	}
	w.mu.Lock()
	herr := w.err
	w.mu.Unlock()
	if herr != nil && (errors.Is(herr, io.EOF) || errors.Is(herr, io.ErrUnexpectedEOF) || errors.Is(herr, syscall.ECONNRESET)) {
		return fmt.Errorf("%w: %w", ErrCutShort, err)
	}
	return err
}
