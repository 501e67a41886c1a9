package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// peerRepo is a tiny apt repository (Release, Packages, one .deb) on a
// counting upstream; the .deb's handler can be replaced.
type peerRepo struct {
	up   *countingServer
	deb  []byte
	path string // the .deb's path
}

func newPeerRepo(t *testing.T, size int) *peerRepo {
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(99, 1))
	deb := make([]byte, size)
	for i := range deb {
		deb[i] = byte(r.UintN(256))
	}
	sum := sha256.Sum256(deb)
	pkgs := fmt.Sprintf("Package: big\nVersion: 1\nArchitecture: all\nFilename: pool/main/big_1_all.deb\nSize: %d\nSHA256: %s\n\n", len(deb), hex.EncodeToString(sum[:]))
	psum := sha256.Sum256([]byte(pkgs))
	rel := fmt.Sprintf("Suite: stable\nSHA256:\n %s %d main/binary-amd64/Packages\n", hex.EncodeToString(psum[:]), len(pkgs))
	for p, b := range map[string][]byte{
		"dists/stable/Release":                    []byte(rel),
		"dists/stable/main/binary-amd64/Packages": []byte(pkgs),
		"pool/main/big_1_all.deb":                 deb,
	} {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
		os.WriteFile(filepath.Join(dir, p), b, 0o644)
	}
	return &peerRepo{up: serveDir(t, dir), deb: deb, path: "/pool/main/big_1_all.deb"}
}

// node is one warren binary and an HTTP client that uses it as its proxy.
type node struct {
	addr   string
	url    string
	cmd    *exec.Cmd
	logs   *syncBuffer
	client *http.Client
}

// startNodes runs n warren binaries on loopback with static discovery, each
// listing all the others; extra[i] are more flags for node i.
func startNodes(t *testing.T, n int, extra func(i int) []string) []*node {
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = freeLoopbackPort(t)
	}
	nodes := make([]*node, n)
	var wg sync.WaitGroup
	for i := range nodes {
		args := []string{"--cache-dir", t.TempDir(), "--discovery", "static", "--log-level", "debug",
			"--query-timeout", "150ms", "--election-window", "300ms", "--heartbeat", "100ms"}
		for j, a := range addrs {
			if j != i {
				args = append(args, "--peer", a)
			}
		}
		if extra != nil {
			args = append(args, extra(i)...)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			u, cmd, logs := startWarrenAt(t, addrs[i], args...)
			pu, _ := url.Parse(u)
			tr := &http.Transport{Proxy: http.ProxyURL(pu), DisableCompression: true}
			t.Cleanup(tr.CloseIdleConnections)
			nodes[i] = &node{addr: addrs[i], url: u, cmd: cmd, logs: logs, client: &http.Client{Transport: tr}}
		}()
	}
	wg.Wait()
	return nodes
}

func (n *node) get(t *testing.T, u string) ([]byte, error) {
	resp, err := n.client.Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return b, err
}

// learn has the node fetch the repository's metadata, as apt update does.
func (n *node) learn(t *testing.T, repo *peerRepo) {
	t.Helper()
	for _, p := range []string{"/dists/stable/Release", "/dists/stable/main/binary-amd64/Packages"} {
		if _, err := n.get(t, repo.up.URL+p); err != nil {
			t.Fatalf("%s: GET %s: %v", n.addr, p, err)
		}
	}
}

// fetchEach has every node get the .deb at once; when all are done the
// channel gives each node's error (wrong bytes count as one).
func fetchEach(t *testing.T, nodes []*node, repo *peerRepo) <-chan []error {
	done := make(chan []error, 1)
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := n.get(t, repo.up.URL+repo.path)
			if err == nil && !bytes.Equal(b, repo.deb) {
				err = fmt.Errorf("wrong bytes (%d)", len(b))
			}
			errs[i] = err
		}()
	}
	go func() { wg.Wait(); done <- errs }()
	return done
}

// fetchAll has every node get the .deb at once and checks the bytes.
func fetchAll(t *testing.T, nodes []*node, repo *peerRepo) {
	t.Helper()
	for i, err := range <-fetchEach(t, nodes, repo) {
		if err != nil {
			t.Fatalf("node %d (%s): %v", i, nodes[i].addr, err)
		}
	}
}

// Four nodes want the same artifact at once: the WAN carries it once.
func TestPeersFetchOnceForTheSite(t *testing.T) {
	repo := newPeerRepo(t, 8<<20)
	nodes := startNodes(t, 4, nil)
	for _, n := range nodes {
		n.learn(t, repo)
	}
	fetchAll(t, nodes, repo)
	if got := repo.up.count(repo.path); got != 1 {
		t.Fatalf("upstream served the artifact %d times, want 1", got)
	}
	// A latecomer takes it from a peer that has it.
	late := nodes[0]
	if _, err := late.get(t, repo.up.URL+repo.path); err != nil {
		t.Fatal(err)
	}
	if got := repo.up.count(repo.path); got != 1 {
		t.Fatalf("upstream count %d after a latecomer", got)
	}
}

// A peer whose copy is damaged (right size, wrong bytes): the requester
// verifies, aborts, never stores the bad bytes, drops that peer, and the
// next try gets the right bytes elsewhere.
func TestPeerWithBadCopyIsDropped(t *testing.T) {
	repo := newPeerRepo(t, 1<<20)
	nodes := startNodes(t, 2, nil)
	a, b := nodes[0], nodes[1]
	a.learn(t, repo)
	b.learn(t, repo)
	if _, err := a.get(t, repo.up.URL+repo.path); err != nil {
		t.Fatal(err)
	}
	// Damage a's blob in place, once it is stored (just after a's client
	// had its last byte).
	a.logs.waitFor(t, "msg=stored url="+repo.up.URL+repo.path, 10*time.Second)
	sum := sha256.Sum256(repo.deb)
	hx := hex.EncodeToString(sum[:])
	var blob string
	filepath.WalkDir(filepath.Join(a.cacheDir(t), "blobs"), func(p string, _ os.DirEntry, _ error) error {
		if filepath.Base(p) == hx {
			blob = p
		}
		return nil
	})
	if blob == "" {
		t.Fatal("a's blob not found")
	}
	bad := bytes.Clone(repo.deb)
	bad[len(bad)/2] ^= 0xff
	if err := os.WriteFile(blob, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	// b takes it from a, finds it wrong, and goes on from upstream: its
	// client gets the exact artifact at the first try (a peer's bytes are
	// held until they verify).
	body, err := b.get(t, repo.up.URL+repo.path)
	if err != nil || !bytes.Equal(body, repo.deb) {
		t.Fatalf("b's client: %d bytes (exact: %v), %v", len(body), bytes.Equal(body, repo.deb), err)
	}
	b.logs.waitFor(t, "peer blamed", 10*time.Second)
	// b told a, which rechecks its copy and drops it: the damage does not
	// spread to the next peer that asks.
	a.logs.waitFor(t, "a peer says the bytes we sent failed verification", 10*time.Second)
	a.logs.waitFor(t, `found_by="a recheck"`, 10*time.Second)
	if _, err := os.Stat(blob); !os.IsNotExist(err) {
		t.Fatalf("a's damaged blob is still on disk: %v", err)
	}
}

func (n *node) cacheDir(t *testing.T) string {
	for i, a := range n.cmd.Args {
		if a == "--cache-dir" {
			return n.cmd.Args[i+1]
		}
	}
	t.Fatal("no --cache-dir")
	return ""
}

// The elected downloader dies mid-transfer: the others notice its
// heartbeats stop, elect again, and all end with the right bytes.
func TestReElectionWhenDownloaderDies(t *testing.T) {
	repo := newPeerRepo(t, 4<<20)
	// Upstream sends the first request half the file, then stalls; later
	// requests get the file at once.
	var mu sync.Mutex
	first := true
	stalled := make(chan struct{})
	inner := repo.up.Config.Handler
	repo.up.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		stall := first && r.URL.Path == repo.path
		if stall {
			first = false
		}
		mu.Unlock()
		if !stall {
			inner.ServeHTTP(w, r)
			return
		}
		repo.up.mu.Lock()
		repo.up.gets[r.URL.Path]++
		repo.up.mu.Unlock()
		w.Header().Set("Content-Length", fmt.Sprint(len(repo.deb)))
		w.Write(repo.deb[:len(repo.deb)/2])
		w.(http.Flusher).Flush()
		close(stalled)
		<-r.Context().Done()
	})
	nodes := startNodes(t, 3, func(i int) []string {
		if i == 0 {
			return []string{"--priority", "1000"} // node 0 wins the first election
		}
		return nil
	})
	for _, n := range nodes {
		n.learn(t, repo)
	}
	// Node 0 asks first, finds nobody else after the file, and downloads it.
	go nodes[0].get(t, repo.up.URL+repo.path)
	select {
	case <-stalled:
	case <-time.After(30 * time.Second):
		t.Fatal("the elected downloader never reached upstream")
	}
	// The others follow its growing file; then it dies.
	done := fetchEach(t, nodes[1:], repo)
	for _, n := range nodes[1:] {
		n.logs.waitFor(t, `msg="fill source opened" from="peer `, 30*time.Second)
	}
	if err := nodes[0].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case errs := <-done:
		for i, err := range errs {
			if err != nil {
				t.Fatalf("node %d: %v", i+1, err)
			}
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the others never finished after the downloader died")
	}
	if got := repo.up.count(repo.path); got != 2 {
		t.Fatalf("upstream GETs %d, want 2 (the dead winner's, then the new winner's)", got)
	}
}

// startPassivePair runs a passive node and an ordinary one, both having
// fetched the repository's metadata.
func startPassivePair(t *testing.T, repo *peerRepo) (passive, active *node) {
	nodes := startNodes(t, 2, func(i int) []string {
		if i == 0 {
			return []string{"--role", "passive"}
		}
		return nil
	})
	passive, active = nodes[0], nodes[1]
	passive.learn(t, repo)
	active.learn(t, repo)
	return passive, active
}

// A passive node takes from peers but never serves: the others never get
// bytes from it.
func TestPassiveNodeNeverServes(t *testing.T) {
	repo := newPeerRepo(t, 1<<20)
	passive, active := startPassivePair(t, repo)
	if _, err := passive.get(t, repo.up.URL+repo.path); err != nil {
		t.Fatal(err)
	}
	if _, err := active.get(t, repo.up.URL+repo.path); err != nil {
		t.Fatal(err)
	}
	// Both fetched from upstream: the passive node's copy is not offered.
	if got := repo.up.count(repo.path); got != 2 {
		t.Fatalf("upstream GETs %d, want 2", got)
	}
	// Nor is it served when asked for directly: the passive node holds the
	// blob (stored), yet its blob endpoint does not give it out.
	passive.logs.waitFor(t, "msg=stored url="+repo.up.URL+repo.path, 10*time.Second)
	sum := sha256.Sum256(repo.deb)
	resp, err := http.Get(passive.url + "/v1/blobs/sha256/" + hex.EncodeToString(sum[:]))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusServiceUnavailable || bytes.Equal(body, repo.deb) {
		t.Fatalf("passive node's blob endpoint answered %d with %d bytes", resp.StatusCode, len(body))
	}
	// The active node does serve what it holds: the check above can fail.
	resp, err = http.Get(active.url + "/v1/blobs/sha256/" + hex.EncodeToString(sum[:]))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, repo.deb) {
		t.Fatalf("the active node's blob endpoint answered %d with %d bytes", resp.StatusCode, len(body))
	}
}

// A passive node still takes what its peers have.
func TestPassiveNodeUsesPeers(t *testing.T) {
	repo := newPeerRepo(t, 1<<20)
	passive, active := startPassivePair(t, repo)
	if _, err := active.get(t, repo.up.URL+repo.path); err != nil {
		t.Fatal(err)
	}
	b, err := passive.get(t, repo.up.URL+repo.path)
	if err != nil || !bytes.Equal(b, repo.deb) {
		t.Fatalf("passive: %d bytes, %v", len(b), err)
	}
	if got := repo.up.count(repo.path); got != 1 {
		t.Fatalf("upstream GETs %d, want 1 (the passive node takes from its peer)", got)
	}
}

// The peer blob endpoint obeys allow_clients like the proxy does.
func TestBlobEndpointObeysAllowClients(t *testing.T) {
	u, _, _ := startWarren(t, "--cache-dir", t.TempDir(), "--discovery", "static", "--peer", "127.0.0.1:9",
		"--allow-client", "10.0.0.0/8")
	resp, err := http.Get(u + "/v1/blobs/sha256/" + strings.Repeat("0", 64))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "allow_clients") {
		t.Fatalf("blob request from outside allow_clients: %d %s", resp.StatusCode, body)
	}
}

// A peer dies mid-upload: the fill keeps what it sent and upstream sends
// only the rest (a Range request); the client gets the exact artifact, and
// the figures say where the bytes came from.
func TestPeerDiesMidUploadUpstreamSendsTheRest(t *testing.T) {
	repo := newPeerRepo(t, 4<<20)
	var mu sync.Mutex
	var ranges []string // Range headers of the .deb's GETs
	inner := repo.up.Config.Handler
	repo.up.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == repo.path {
			mu.Lock()
			ranges = append(ranges, r.Header.Get("Range"))
			mu.Unlock()
		}
		inner.ServeHTTP(w, r)
	})
	nodes := startNodes(t, 2, func(i int) []string {
		if i == 0 {
			return []string{"--upload-rate", "1MB"} // slow enough to die mid-way
		}
		return nil
	})
	a, b := nodes[0], nodes[1]
	a.learn(t, repo)
	b.learn(t, repo)
	if _, err := a.get(t, repo.up.URL+repo.path); err != nil {
		t.Fatal(err)
	}
	before := nodeStats(t, b)

	type result struct {
		body []byte
		err  error
	}
	got := make(chan result, 1)
	go func() {
		b, err := b.get(t, repo.up.URL+repo.path)
		got <- result{b, err}
	}()
	// Once b receives a's bytes (held from b's client until the blob
	// verifies), a dies mid-upload.
	b.logs.waitFor(t, `msg="fill receiving" from="peer `, 30*time.Second)
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var res result
	select {
	case res = <-got:
	case <-time.After(60 * time.Second):
		t.Fatal("the client never finished after the peer died")
	}
	if res.err != nil || !bytes.Equal(res.body, repo.deb) {
		t.Fatalf("after the peer died: %d bytes (exact: %v), %v", len(res.body), bytes.Equal(res.body, repo.deb), res.err)
	}
	mu.Lock()
	rs := append([]string(nil), ranges...)
	mu.Unlock()
	if len(rs) != 2 || rs[0] != "" || !strings.HasPrefix(rs[1], "bytes=") || rs[1] == "bytes=0-" {
		t.Fatalf("upstream .deb requests' Range headers %q, want a's whole GET then b's resume from where the peer stopped", rs)
	}
	after := nodeStats(t, b)
	fromPeers := after["bytes_peers"] - before["bytes_peers"]
	fromUp := after["bytes_upstream"] - before["bytes_upstream"]
	if fromPeers <= 0 || fromPeers+fromUp != float64(len(repo.deb)) {
		t.Fatalf("b counts %.0f bytes from peers and %.0f from upstream; want some from peers, %d in all",
			fromPeers, fromUp, len(repo.deb))
	}
	t.Logf("from the dying peer %.0f bytes, then upstream %.0f (%s)", fromPeers, fromUp, rs[1])
}

// nodeStats reads a node's /_warren/stats figures.
func nodeStats(t *testing.T, n *node) map[string]float64 {
	t.Helper()
	resp, err := http.Get(n.url + "/_warren/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var raw map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for k, v := range raw {
		if f, ok := v.(float64); ok {
			out[k] = f
		}
	}
	return out
}

// Every node receiving an artifact passes it on: five nodes with one
// upload slot each want it at once while upstream trickles it. The
// elected downloader can feed one of them; the other three must take it
// from nodes that are themselves still receiving it. They all hold bytes
// from peers before upstream has sent half, each is verified whole in the
// end, upstream is asked once, and no node ever ran more uploads than its
// slot.
func TestReceiversServeWhileReceiving(t *testing.T) {
	repo := newPeerRepo(t, 4<<20)
	release := make(chan struct{})
	var trickledAll atomic.Bool
	inner := repo.up.Config.Handler
	repo.up.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != repo.path {
			inner.ServeHTTP(w, r)
			return
		}
		repo.up.mu.Lock()
		repo.up.gets[r.URL.Path]++
		repo.up.mu.Unlock()
		w.Header().Set("Content-Length", strconv.Itoa(len(repo.deb)))
		// 16 KiB every 100 ms (25 s for the whole, well above the stall
		// rule) until the test has seen what it waits for; then the rest.
		const chunk = 16 << 10
		released := false
		for off := 0; off < len(repo.deb); off += chunk {
			if _, err := w.Write(repo.deb[off:min(off+chunk, len(repo.deb))]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			if !released {
				select {
				case <-release:
					released = true
				case <-time.After(100 * time.Millisecond):
				case <-r.Context().Done():
					return
				}
			}
		}
		if !released {
			trickledAll.Store(true)
		}
	})
	const n = 5
	nodes := startNodes(t, n, func(int) []string { return []string{"--upload-slots", "1"} })
	for _, nd := range nodes {
		nd.learn(t, repo)
	}
	done := fetchEach(t, nodes, repo)
	// Every node but the downloader holds bytes from a peer while upstream
	// is still sending.
	waitUntil(t, "every node but the downloader to receive from a peer", 60*time.Second, func() bool {
		receiving := 0
		for _, nd := range nodes {
			if nodeStats(t, nd)["bytes_peers"] > 0 {
				receiving++
			}
		}
		return receiving == n-1
	})
	if trickledAll.Load() {
		t.Fatal("the nodes got bytes from peers only once upstream had sent the whole: nobody passed on what it was receiving")
	}
	close(release)
	for i, err := range <-done {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	if got := repo.up.count(repo.path); got != 1 {
		t.Fatalf("upstream served the artifact %d times, want 1", got)
	}
	relays := 0
	for i, nd := range nodes {
		s := nodeStats(t, nd)
		if s["uploads_peak"] > 1 {
			t.Fatalf("node %d ran %v uploads at once with one upload slot", i, s["uploads_peak"])
		}
		if s["bytes_peers"] > 0 && s["bytes_uploaded"] > 0 {
			relays++
		}
	}
	if relays == 0 {
		t.Fatal("no node that received from a peer uploaded to another")
	}
	t.Logf("%d nodes relayed what they were receiving", relays)
}

// A fill whose every source failed asks the LAN again before it answers
// an error: B asks first (nobody has the artifact, so it fetches it
// itself), and while B's upstream hangs, A gets the artifact from
// upstream on its own (below share_min_size: upstream first). Then every
// upstream request of B's fails, as a crowded link's "no route to host"
// would; B's client still gets the artifact, from A.
func TestFillAsksTheLANAgainBeforeFailing(t *testing.T) {
	repo := newPeerRepo(t, 1<<20)
	var mu sync.Mutex
	debGets := 0
	aStored := make(chan struct{})
	bAsked := make(chan struct{})
	inner := repo.up.Config.Handler
	repo.up.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != repo.path {
			inner.ServeHTTP(w, r)
			return
		}
		mu.Lock()
		debGets++
		nth := debGets
		mu.Unlock()
		if nth == 2 { // A's
			inner.ServeHTTP(w, r)
			return
		}
		if nth == 1 { // B's first: hangs until A holds the artifact
			close(bAsked)
			select {
			case <-aStored:
			case <-r.Context().Done():
			}
		}
		// Then B's every try dies without an answer.
		if c, _, err := w.(http.Hijacker).Hijack(); err == nil {
			c.Close()
		}
	})
	nodes := startNodes(t, 2, func(i int) []string {
		if i == 0 {
			return []string{"--share-min-size", "2MB"}
		}
		return nil
	})
	a, b := nodes[0], nodes[1]
	a.learn(t, repo)
	b.learn(t, repo)
	got := make(chan error, 1)
	go func() {
		body, err := b.get(t, repo.up.URL+repo.path)
		if err == nil && !bytes.Equal(body, repo.deb) {
			err = fmt.Errorf("wrong bytes (%d)", len(body))
		}
		got <- err
	}()
	select {
	case <-bAsked:
	case <-time.After(30 * time.Second):
		t.Fatal("B never asked upstream for the artifact")
	}
	body, err := a.get(t, repo.up.URL+repo.path)
	if err != nil || !bytes.Equal(body, repo.deb) {
		t.Fatalf("A: %v (%d bytes)", err, len(body))
	}
	a.logs.waitFor(t, `msg=stored url=`+repo.up.URL+repo.path, 30*time.Second)
	close(aStored)
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("B's client, with upstream failing and A holding the artifact: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("B's client never got an answer")
	}
	b.logs.waitFor(t, "every source failed; asking the peers again", 5*time.Second)
	if s := nodeStats(t, b); s["bytes_peers"] != float64(len(repo.deb)) {
		t.Fatalf("B took %.0f bytes from peers, want the whole %d from A", s["bytes_peers"], len(repo.deb))
	}
}

// A node its LAN follows, told by the hub to wait (max_requesters), asks
// the LAN after the wait only who has the artifact or receives it, and
// goes back to the hub: it does not hold a new election among the peers
// that wait for it (B, of higher priority, follows A and would win it,
// and each would wait on the other for heartbeats that never come).
func TestBusyHubDownloaderDoesNotElectItsFollowers(t *testing.T) {
	repo := newPeerRepo(t, 1<<20)
	release := make(chan struct{})
	inner := repo.up.Config.Handler
	repo.up.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != repo.path {
			inner.ServeHTTP(w, r)
			return
		}
		// Half, then the rest once released: the hub stays busy with it.
		w.Header().Set("Content-Length", strconv.Itoa(len(repo.deb)))
		w.Write(repo.deb[:len(repo.deb)/2])
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		w.Write(repo.deb[len(repo.deb)/2:])
	})
	var once sync.Once
	releaseOnce := func() { once.Do(func() { close(release) }) }
	defer releaseOnce()
	hubURL, _, hubLogs := startWarren(t, "--role", "hub", "--cache-dir", t.TempDir(), "--max-requesters", "1", "--log-level", "debug")
	nodes := startNodes(t, 2, func(i int) []string {
		return []string{"--hub", hubURL, "--hub-only", "--priority", []string{"100", "1000"}[i]}
	})
	a, b := nodes[0], nodes[1]
	a.learn(t, repo)
	b.learn(t, repo)

	// X takes the hub's one streaming place.
	pu, _ := url.Parse(hubURL)
	x := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}}
	xDone := make(chan error, 1)
	go func() {
		resp, err := x.Get(repo.up.URL + repo.path)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		xDone <- err
	}()
	// The hub's third fill from the origin (after the Release and the
	// Packages): X's.
	hubLogs.waitForCount(t, `msg="fill source opened" from="origin`, 3, 30*time.Second)

	got := make(chan error, 2)
	fetch := func(n *node) {
		body, err := n.get(t, repo.up.URL+repo.path)
		if err == nil && !bytes.Equal(body, repo.deb) {
			err = fmt.Errorf("%s: wrong bytes (%d)", n.addr, len(body))
		}
		got <- err
	}
	go fetch(a) // alone: every peer says no, so A fetches it, from the hub
	a.logs.waitFor(t, "hub busy with this artifact; asking the LAN again after the delay", 30*time.Second)
	go fetch(b) // B wants it too, and asks A, the LAN's downloader
	b.logs.waitFor(t, "asking a peer for the blob", 30*time.Second)
	// A's wait ends; it asks the LAN and goes back to the hub, still busy.
	a.logs.waitForCount(t, "hub busy with this artifact; asking the LAN again after the delay", 2, 30*time.Second)
	if strings.Contains(a.logs.String(), "waiting for the elected downloader") {
		t.Fatal("A, told to wait by the hub, elected a new downloader among the peers that follow it")
	}
	releaseOnce()
	for range 2 {
		select {
		case err := <-got:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("a node's client never got its answer")
		}
	}
	if err := <-xDone; err != nil {
		t.Fatalf("X: %v", err)
	}
}
