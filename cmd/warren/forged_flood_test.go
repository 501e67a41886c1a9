package main

import (
	"crypto/rand"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/peering"
)

// A LAN host answers everything "has it" under forty node ids. The victim
// keeps it to two table entries, asks it once at most, and after that one
// stalled try takes the artifact from upstream: the client gets the exact file.
// The forger's other id is not asked: blame went to its address.
func TestForgedHasFlood(t *testing.T) {
	repo := newPeerRepo(t, 1<<20)
	// Its blob server stalls after the headers.
	forger := startForger(t, forgerSetup{host: "127.0.0.2", ids: 40}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1048576")
		w.Write([]byte("x"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	victim, took, upstream := fetchBesideForger(t, forger, repo)
	// The origin resumes after the forger's one byte; the mix fails
	// verification, the forger is blamed and the origin sends it whole.
	if upstream < 1 || upstream > 2 {
		t.Fatalf("upstream GETs of the artifact %d, want 1 or 2", upstream)
	}
	// Once at most: its first failure marks its address, and its other
	// id is skipped. (Its answers may also have been over its rate.)
	if n := forger.blobs.Load(); n != 1 {
		t.Fatalf("the forger was asked for blobs %d times, want once (then skipped by address)", n)
	}
	stats := nodeStats(t, victim)
	if peers, ok := stats["peers"]; !ok || peers > 2 {
		t.Fatalf("the forger holds %v entries of the victim's peer table, want at most 2", stats["peers"])
	}
	t.Logf("exact artifact in %s; forger asked %d times; %v peers in the table", took.Round(time.Millisecond), forger.blobs.Load(), stats["peers"])
}

// In a group with a secret, a datagram captured on the LAN and sent again
// from another host is dropped: the peer it names stays where it is, and
// the victim never fetches from the replayer. (Before protocol v2 the
// replayed hello moved the peer's address to the replayer.)
func TestReplayedSignedDatagram(t *testing.T) {
	secret := []byte("site secret")
	member, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer member.Close()
	replayer, err := net.ListenPacket("udp4", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer replayer.Close()
	dir := t.TempDir()
	u, _, logs := startWarren(t, "--cache-dir", dir, "--discovery", "static", "--peer", member.LocalAddr().String(),
		"--group-secret", string(secret), "--log-level", "debug")
	victim := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(strings.TrimPrefix(u, "http://")))
	memberPort := uint16(member.LocalAddr().(*net.UDPAddr).Port)
	var b peering.NodeID
	rand.Read(b[:])
	signed := func(m peering.Message) []byte {
		m.Sent = time.Now().UnixMilli()
		var nonce [8]byte
		rand.Read(nonce[:])
		for _, x := range nonce {
			m.Nonce = m.Nonce<<8 | uint64(x)
		}
		out, err := peering.Encode(m, secret)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	hello := signed(peering.Message{Type: peering.MsgHello, From: b, HTTPPort: memberPort, Priority: 100})
	member.WriteTo(hello, victim)
	logs.waitFor(t, `msg="peer joined the table"`, 10*time.Second)

	// The capture, sent again from another host, then a fresh signed
	// question from a third member on that host: the victim reads its
	// socket in order, so once the answer is back the replay was handled.
	replayer.WriteTo(hello, victim)
	var c peering.NodeID
	rand.Read(c[:])
	replayer.WriteTo(signed(peering.Message{Type: peering.MsgQuery, From: c, ReqID: 77, Digest: cachestore.Digest{Algo: "sha256", Hex: strings.Repeat("ab", 32)},
		HTTPPort: uint16(replayer.LocalAddr().(*net.UDPAddr).Port)}), victim)
	replayer.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, peering.MaxDatagram)
	for {
		n, _, err := replayer.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no answer to the fresh question: %v", err)
		}
		if m, err := peering.Decode(buf[:n], secret); err == nil && m.Type == peering.MsgAnswer && m.ReqID == 77 {
			break
		}
	}
	out, err := runApp(t, "peers", "--cache-dir", dir, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rows []peerRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("peers --json: %v\n%s", err, out)
	}
	for _, r := range rows {
		if r.ID == b.String() && !strings.HasPrefix(r.Address, "127.0.0.1:") {
			t.Fatalf("the replayed hello moved the member to %s", r.Address)
		}
	}
	if !strings.Contains(logs.String(), "replayed or stale datagram") {
		t.Fatal("the victim's log does not say it dropped the replay")
	}
}
