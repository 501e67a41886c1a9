package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warren-cache/warren/peering"
)

// forgedPeer is a hostile LAN host: it speaks warren's datagrams (it
// answers every hello, and every query with "has it, ready", once under
// each of its node ids) and serves /v1/blobs/ with the behaviour a test
// chooses. UDP and HTTP share one port number, as on a real node. On
// 127.0.0.1 it is this machine; on another loopback address (127.0.0.2)
// the victim takes it for any LAN host.
type forgedPeer struct {
	addr  string
	blobs atomic.Int64 // blob requests served
}

// forgerSetup is how a forged peer presents itself.
type forgerSetup struct {
	host string
	ids  int
	// downloading: it answers a want with "downloading" heartbeats, every
	// 300ms from then on, instead of "have".
	downloading bool
}

func startForger(t *testing.T, how forgerSetup, blob http.HandlerFunc) *forgedPeer {
	t.Helper()
	ln, err := net.Listen("tcp", how.host+":0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	pc, err := net.ListenPacket("udp4", ln.Addr().String())
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	fp := &forgedPeer{addr: ln.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fp.blobs.Add(1)
		blob(w, r)
	})}
	go srv.Serve(ln)
	self := make([]peering.NodeID, how.ids)
	for i := range self {
		rand.Read(self[i][:])
	}
	done, stop := make(chan struct{}), make(chan struct{})
	var beats sync.WaitGroup
	send := func(reply peering.Message, to net.Addr) {
		reply.HTTPPort, reply.Priority, reply.FreeBytes, reply.Sent = uint16(port), 1000, 1<<40, time.Now().UnixMilli()
		var nonce [8]byte
		rand.Read(nonce[:])
		reply.Nonce = binary.BigEndian.Uint64(nonce[:])
		if b, err := peering.Encode(reply, nil); err == nil {
			pc.WriteTo(b, to)
		}
	}
	go func() {
		defer close(done)
		buf := make([]byte, peering.MaxDatagram+1)
		for {
			n, src, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			m, err := peering.Decode(buf[:n], nil)
			if err != nil {
				continue
			}
			for _, id := range self {
				reply := peering.Message{From: id}
				switch m.Type {
				case peering.MsgHello:
					reply.Type = peering.MsgHello
				case peering.MsgQuery:
					reply.Type, reply.ReqID, reply.Digest, reply.Has, reply.Ready, reply.FreeSlots = peering.MsgAnswer, m.ReqID, m.Digest, true, true, 2
				case peering.MsgWant:
					if how.downloading {
						beats.Add(1)
						go func() {
							defer beats.Done()
							tick := time.NewTicker(300 * time.Millisecond)
							defer tick.Stop()
							for done := int64(1); ; done++ {
								send(peering.Message{From: id, Type: peering.MsgDownloading, Digest: m.Digest, Done: done, Total: -1}, src)
								select {
								case <-stop:
									return
								case <-tick.C:
								}
							}
						}()
						continue
					}
					reply.Type, reply.Digest = peering.MsgHave, m.Digest
				default:
					continue
				}
				send(reply, src)
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		pc.Close()
		<-done
		beats.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		srv.Close()
	})
	return fp
}

// A forged peer that answers every query "has it" and then sends too many
// bytes, wrong bytes, trickles, or stalls: each time the client gets the
// exact artifact (the next source, upstream, sends it), within the stall
// timeout plus the transfer, and the peer is blamed.
func TestForgedPeer(t *testing.T) {
	repo := newPeerRepo(t, 1<<20)
	wrong := make([]byte, len(repo.deb))
	rand.Read(wrong)
	// The overrun is made before any handler runs: built inside one (300 MB
	// under -race on a slow machine) it took longer than the stall timeout,
	// the watchdog ended the probe first, and nothing was blamed.
	extra := bytes.Repeat([]byte("x"), 1<<20)
	for _, tt := range []struct {
		name        string
		downloading bool // the forger says it is downloading, with heartbeats
		blob        http.HandlerFunc
		blame       string // what the victim's log must say of the peer
		upstream    int    // GETs of the artifact upstream
	}{
		// The right bytes and 300 MB more: cut at the size, the bytes
		// taken verify, and upstream is not needed.
		{"too many bytes", false, func(w http.ResponseWriter, r *http.Request) {
			w.Write(repo.deb)
			for range 300 {
				if _, err := w.Write(extra); err != nil {
					return
				}
			}
		}, "more bytes than the expected size", 0},
		{"wrong bytes", false, func(w http.ResponseWriter, r *http.Request) {
			w.Write(wrong)
		}, "digest mismatch", 1},
		{"trickle", false, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(repo.deb)))
			for i := range repo.deb {
				if _, err := w.Write(repo.deb[i : i+1]); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(200 * time.Millisecond):
				}
			}
		}, "too little progress", 1},
		{"stall after the headers", false, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(repo.deb)))
			w.Write(repo.deb[:1000])
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}, "too little progress", 1},
		// 40 KiB/s passes the stall rule (32 KiB a period); a peer that
		// holds the blob must average far more, so it is left at the
		// first period, not after the 25 s the whole MiB would take.
		{"steady just above the stall rule", false, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(repo.deb)))
			for off := 0; off < len(repo.deb); off += 4 << 10 {
				if _, err := w.Write(repo.deb[off:min(off+4<<10, len(repo.deb))]); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
		}, "bytes/s it must average", 1},
		// "Has it", then busy to every request while it heartbeats that it
		// is downloading: a 503 is no failure, so this held the fill for
		// MaxWait (10 minutes). Busy for the stall timeout is a failed try.
		{"always busy", true, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "busy", http.StatusServiceUnavailable)
		}, "busy to every request", 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			forged := startForger(t, forgerSetup{host: "127.0.0.1", ids: 1, downloading: tt.downloading}, tt.blob)
			victim, took, upstream := fetchBesideForger(t, forged, repo)
			logs := victim.logs
			if forged.blobs.Load() == 0 {
				t.Fatal("the forged peer was never asked: the test proves nothing")
			}
			if upstream != tt.upstream {
				t.Fatalf("upstream GETs of the artifact %d, want %d", upstream, tt.upstream)
			}
			logs.waitFor(t, tt.blame, 10*time.Second)
			// Wrong bytes are blamed; a slow peer is left for a while (too
			// slow is no lie: the slowness may be this machine's).
			if !strings.Contains(logs.String(), "peer blamed") && !strings.Contains(logs.String(), "peer transfer failed") && !strings.Contains(logs.String(), "peer too slow") {
				t.Fatal("the victim's log blames no peer")
			}
			if !bytes.Contains([]byte(logs.String()), []byte(tt.blame)) {
				t.Fatalf("the victim's log does not say %q", tt.blame)
			}
			t.Logf("exact artifact in %s", took.Round(time.Millisecond))
		})
	}
}

// fetchBesideForger runs a warren whose one static peer is the forger,
// has it learn repo's metadata and fetch its artifact, and checks that the
// client got the exact bytes. It returns the warren, how long the fetch
// took and how many times upstream was asked for the artifact.
func fetchBesideForger(t *testing.T, forger *forgedPeer, repo *peerRepo) (*node, time.Duration, int) {
	t.Helper()
	u, cmd, logs := startWarren(t, "--cache-dir", t.TempDir(), "--discovery", "static", "--peer", forger.addr,
		"--stall-timeout", "1s", "--log-level", "debug")
	victim := &node{url: u, cmd: cmd, logs: logs, client: proxyClient(t, u)}
	logs.waitFor(t, `msg="peer joined the table"`, 10*time.Second)
	victim.learn(t, repo)
	before := repo.up.count(repo.path)
	start := time.Now()
	// No forger may hold a fill past the stall rule (1s here) for each of
	// the few sources; a minute is that many times over, and far below the
	// ten minutes an always-busy downloader held it for before.
	victim.client.Timeout = time.Minute
	got, err := victim.get(t, repo.up.URL+repo.path)
	took := time.Since(start)
	if err != nil || !bytes.Equal(got, repo.deb) {
		t.Fatalf("client got %d bytes (exact: %v), err %v", len(got), bytes.Equal(got, repo.deb), err)
	}
	return victim, took, repo.up.count(repo.path) - before
}
