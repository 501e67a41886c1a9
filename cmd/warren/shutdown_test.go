package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The daemon stops under load (run with -race): clients are mid-body on
// fills upstream holds open and new requests keep coming while it stops.
// Run returns, every handler and fill has ended before the store closed,
// and no client is left hanging.
func TestShutdownUnderLoad(t *testing.T) {
	body := make([]byte, 1<<20)
	reached := make(chan struct{}, 64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		select {
		case reached <- struct{}{}:
		default:
		}
		<-r.Context().Done() // held until the daemon gives up on it
	}))
	defer srv.Close()
	up := srv.URL
	raw := defaults()
	raw.Listen, raw.CacheDir, raw.Discovery = "127.0.0.1:0", t.TempDir(), "off"
	raw.AllowUpstream = []string{"127.0.0.0/8"}
	cfg, err := raw.parse()
	if err != nil {
		t.Fatal(err)
	}
	d, err := newDaemon(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	ran := make(chan error, 1)
	go func() { ran <- d.Run(ctx) }()
	pu, _ := url.Parse("http://" + d.Addr())
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}}
	defer client.CloseIdleConnections()

	var wg sync.WaitGroup
	var requests atomic.Int64
	quit := make(chan struct{})
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				select {
				case <-quit:
					return
				default:
				}
				requests.Add(1)
				resp, err := client.Get(up + "/pool/f" + strconv.Itoa(i) + "_" + strconv.Itoa(j) + ".bin")
				if err != nil {
					continue // refused or cut: the daemon is stopping
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	for range 8 {
		select {
		case <-reached:
		case <-time.After(30 * time.Second):
			t.Fatal("no fill reached upstream within 30s")
		}
	}
	stop()
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the daemon did not stop within 60s of its context ending")
	}
	if d.handlers.Go(func() {}) {
		t.Fatal("the daemon still takes requests after Run returned")
	}
	close(quit)
	clientsDone := make(chan struct{})
	go func() { wg.Wait(); close(clientsDone) }()
	select {
	case <-clientsDone:
	case <-time.After(30 * time.Second):
		t.Fatal("clients still hanging 30s after the daemon stopped")
	}
	t.Logf("%d requests during the run", requests.Load())
}
