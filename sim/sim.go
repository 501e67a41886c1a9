// Package sim runs a site of many warren nodes in one process: each node is
// the real thing (cachestore, peering, the fill engine behind the proxy,
// its blob server), behind one real hub, over an in-memory network
// (network.go) whose subnets broadcast only inside themselves and whose
// links have rates. It is the instrument for scale: real processes in
// network namespaces stop at about 20 on a small machine, the simulator
// goes to 1,000.
package sim

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/hub"
	"github.com/warren-cache/warren/peering"
	"github.com/warren-cache/warren/proxy"
)

// Config is one simulation.
type Config struct {
	Nodes     int // on the site's subnets, spread evenly
	Subnets   int
	Artifacts int           // each wanted by every node
	Size      int64         // of each artifact
	Spread    time.Duration // each node asks for each artifact at a random moment within it
	NodeNIC   float64       // bytes/s, each way, of each node's network card
	WAN       float64       // bytes/s, each way, of each subnet's link to the hub
	Origin    float64       // bytes/s of the origin's link to the hub
	Slots     int           // upload slots of each node
	Dir       string        // where the nodes' caches go ("": a temporary directory)
	Seed      uint64
	// Delay bounds each node's scheduling delay, heavy-tailed (see
	// Network.Delay); Loss is the share of datagrams lost. Both 0: a LAN
	// of idle machines.
	Delay time.Duration
	Loss  float64
	// Strangers: the nodes of a subnet do not know each other (no
	// broadcast, mDNS blocked, no static peers), so only the hub can tell
	// one of a peer that receives what it wants.
	Strangers bool
	// Progress, when set, is told what the simulation is doing.
	Progress func(format string, args ...any)
}

// Defaults fills what c leaves zero with `make sim`'s site.
func (c Config) Defaults() Config {
	c.Nodes = cmp.Or(c.Nodes, 1000)
	c.Subnets = cmp.Or(c.Subnets, 20)
	c.Artifacts = cmp.Or(c.Artifacts, 3)
	c.Size = cmp.Or(c.Size, 1<<20)
	c.Spread = cmp.Or(c.Spread, 60*time.Second)
	c.NodeNIC = cmp.Or(c.NodeNIC, 100e6/8)
	c.WAN = cmp.Or(c.WAN, 8e6/8)
	c.Origin = cmp.Or(c.Origin, 8e6/8)
	c.Slots = cmp.Or(c.Slots, peering.DefaultUploadSlots)
	c.Seed = cmp.Or(c.Seed, 1)
	if c.Progress == nil {
		c.Progress = func(string, ...any) {}
	}
	return c
}

// ArtifactReport is what happened to one artifact.
type ArtifactReport struct {
	Path       string
	OriginGETs int // the hub's fetches from the origin: the WAN
	// OriginTook is how long the hub's fetch from the origin took: no
	// client of the hub can have the artifact sooner.
	OriginTook time.Duration
	HubGETs    int // the nodes' fetches at the hub
	HubWaits   int // the hub's "busy, retry later" answers
	// SubnetGETs and SubnetBytes are, per subnet, the fetches at the hub
	// and the bytes of the artifact the hub sent over the subnet's link
	// to it (each subnet is a site, the link its WAN).
	SubnetGETs  map[int]int
	SubnetBytes map[int]int64
	Failed      int             // clients that did not get it whole
	Times       []time.Duration // each client's, from its request to its last byte
}

// Report is a simulation's figures.
type Report struct {
	Config    Config
	Artifacts []ArtifactReport
	// Lone is one node's download of an artifact of the same size through
	// the cold hub, alone on the network: the yardstick.
	Lone time.Duration
	// MaxUploads is the most concurrent uploads any node served.
	MaxUploads int
	// Datagrams each node sent, from its start to the end.
	DatagramsMedian, DatagramsMax int64
	Took                          time.Duration
}

const (
	hubAddr    = "10.250.0.1"
	originAddr = "10.250.0.2"
	port       = 3142
)

// Run builds the site, lets every node ask for every artifact, and
// reports.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg = cfg.Defaults()
	began := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	dir := cfg.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "warren-sim-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	var stop []func()
	defer func() {
		cancel()
		for i := len(stop) - 1; i >= 0; i-- {
			stop[i]()
		}
	}()
	discard := slog.New(slog.DiscardHandler)
	if path := os.Getenv("WARREN_SIM_LOG"); path != "" {
		// Every node's log in one file, each line naming its node.
		f, err := os.Create(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		discard = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	nw := NewNetwork(time.Millisecond)

	origin := newOrigin(cfg)
	oh := nw.AddHost(netip.MustParseAddr(originAddr), -1, cfg.Origin, nil, nil)
	stop = append(stop, serve(oh, origin))

	hh := nw.AddHost(netip.MustParseAddr(hubAddr), -1, 1e9/8, nil, nil)
	hubStore, err := cachestore.Open(cachestore.Config{Dir: filepath.Join(dir, "hub"), Logger: discard})
	if err != nil {
		return nil, fmt.Errorf("hub's cache: %w", err)
	}
	stop = append(stop, func() { hubStore.Close() })
	runStore(ctx, hubStore, &stop)
	hubDoor, err := door.New(door.Config{KeepGenerations: door.DefaultKeepGenerations, Dial: hh.Dial, Logger: discard}, hubStore)
	if err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	stop = append(stop, func() { hubDoor.Close() })
	hubSrv, err := proxy.New(proxy.Config{
		Door:         hubDoor,
		AllowClients: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		Role:         hub.NewRole(hub.RoleConfig{ID: "sim-hub", Mode: hub.Fetch, Queue: hub.NewQueue(hub.DefaultMaxRequesters, hub.DefaultRetryDelay), Logger: discard}),
		Logger:       discard,
	})
	if err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	stop = append(stop, func() { hubSrv.Close() })
	hubGETs, hubWaits := &counter{m: map[string]int{}}, &counter{m: map[string]int{}}
	hubBySubnet := &subnetCounter{gets: map[subnetKey]int{}, bytes: map[subnetKey]int64{}}
	stop = append(stop, serve(hh, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		hubSrv.ServeHTTP(sw, r)
		switch {
		case r.Method != http.MethodGet:
		case sw.status == http.StatusServiceUnavailable: // told to wait, or which peer has it
			hubWaits.add(r.URL.Path)
		default:
			hubGETs.add(r.URL.Path)
			hubBySubnet.add(r.RemoteAddr, r.URL.Path, sw.n)
		}
	})))

	// The yardstick: one node alone, through the cold hub.
	cfg.Progress("one lone download of %d bytes through the cold hub", cfg.Size)
	loneNode, err := startNode(ctx, nw, cfg, dir, -1, 0, discard, &stop)
	if err != nil {
		return nil, err
	}
	if err := loneNode.update(ctx); err != nil {
		return nil, fmt.Errorf("lone node's update: %w", err)
	}
	lone, err := loneNode.get(ctx, origin.lone, cfg.Size)
	if err != nil {
		return nil, fmt.Errorf("lone download: %w", err)
	}
	// From here on, slow nodes and lost datagrams (the yardstick is an
	// idle machine's).
	nw.Delay, nw.Loss = cfg.Delay, cfg.Loss

	cfg.Progress("starting %d nodes in %d subnets", cfg.Nodes, cfg.Subnets)
	nodes := make([]*node, cfg.Nodes)
	for i := range nodes {
		if nodes[i], err = startNode(ctx, nw, cfg, dir, i%cfg.Subnets, i/cfg.Subnets, discard, &stop); err != nil {
			return nil, err
		}
	}
	// Membership, as mDNS would give it: each node knows up to its table's
	// size of its own subnet.
	r := mrand.New(mrand.NewPCG(cfg.Seed, 2))
	bySubnet := map[int][]*node{}
	for _, n := range nodes {
		bySubnet[n.host.Subnet] = append(bySubnet[n.host.Subnet], n)
	}
	for _, n := range nodes {
		if cfg.Strangers {
			break
		}
		mates := slices.Clone(bySubnet[n.host.Subnet])
		r.Shuffle(len(mates), func(a, b int) { mates[a], mates[b] = mates[b], mates[a] })
		known := 0
		for _, m := range mates {
			if m != n && known < peering.DefaultMaxPeers {
				n.peers.Table().Seen(peering.Peer{ID: m.id, Addr: m.host.Addr, Port: port, Priority: peering.DefaultPriority})
				known++
			}
		}
	}
	cfg.Progress("every node updates its indexes (apt update) through the hub")
	if err := forEach(ctx, nodes, 64, func(n *node) error { return n.update(ctx) }); err != nil {
		return nil, err
	}
	for _, n := range nodes {
		n.host.Sent.Store(0)
	}

	cfg.Progress("every node asks for each of %d artifacts at a random moment within %s", cfg.Artifacts, cfg.Spread)
	type result struct {
		took time.Duration
		err  error
	}
	results := make([][]result, cfg.Artifacts)
	for a := range results {
		results[a] = make([]result, len(nodes))
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i, n := range nodes {
		for a := range cfg.Artifacts {
			at := time.Duration(r.Int64N(int64(cfg.Spread)))
			wg.Add(1)
			go func() {
				defer wg.Done()
				select {
				case <-time.After(time.Until(start.Add(at))):
				case <-ctx.Done():
					results[a][i] = result{err: ctx.Err()}
					return
				}
				took, err := n.get(ctx, origin.paths[a], cfg.Size)
				results[a][i] = result{took, err}
			}()
		}
	}
	var done atomic.Bool
	go func() { // progress, every 10 s
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for !done.Load() {
			select {
			case <-t.C:
				cfg.Progress("%s simulated", time.Since(start).Round(time.Second))
			case <-ctx.Done():
				return
			}
		}
	}()
	wg.Wait()
	done.Store(true)

	rep := &Report{Config: cfg, Lone: lone}
	for a := range cfg.Artifacts {
		ar := ArtifactReport{Path: origin.paths[a], OriginGETs: origin.gets.get(origin.paths[a]),
			HubGETs: hubGETs.get(origin.paths[a]), HubWaits: hubWaits.get(origin.paths[a])}
		ar.SubnetGETs, ar.SubnetBytes = hubBySubnet.of(origin.paths[a], cfg.Subnets)
		origin.mu.Lock()
		ar.OriginTook = origin.took[origin.paths[a]]
		origin.mu.Unlock()
		for _, res := range results[a] {
			if res.err != nil {
				ar.Failed++
				continue
			}
			ar.Times = append(ar.Times, res.took)
		}
		slices.Sort(ar.Times)
		rep.Artifacts = append(rep.Artifacts, ar)
	}
	var sent []int64
	for _, n := range nodes {
		_, peak, _, _ := n.blobs.Stats()
		rep.MaxUploads = max(rep.MaxUploads, int(peak))
		sent = append(sent, n.host.Sent.Load())
	}
	slices.Sort(sent)
	rep.DatagramsMedian, rep.DatagramsMax = sent[len(sent)/2], sent[len(sent)-1]
	rep.Took = time.Since(began)
	return rep, nil
}

// node is one simulated warren: its store, its peering node and blob
// server, its proxy with the hub as its only upstream.
type node struct {
	id    peering.NodeID
	host  *Host
	store *cachestore.Store
	peers *peering.Node
	blobs *peering.BlobServer
	proxy *proxy.Server
}

func startNode(ctx context.Context, nw *Network, cfg Config, dir string, subnet, index int, log *slog.Logger, stop *[]func()) (*node, error) {
	var addr netip.Addr
	var toHub, fromHub *Link
	if subnet < 0 { // the lone node: a subnet of its own
		addr = netip.MustParseAddr("10.249.0.1")
		subnet = 249
	} else {
		addr = netip.AddrFrom4([4]byte{10, byte(subnet), byte(index / 250), byte(index%250 + 1)})
	}
	nw.mu.Lock()
	if mates := nw.bySubnet[subnet]; len(mates) > 0 {
		toHub, fromHub = mates[0].toHub, mates[0].fromHub
	}
	nw.mu.Unlock()
	if toHub == nil {
		toHub, fromHub = NewLink(cfg.WAN), NewLink(cfg.WAN)
	}
	h := nw.AddHost(addr, subnet, cfg.NodeNIC, toHub, fromHub)
	n := &node{host: h}
	var err error
	rand.Read(n.id[:])
	log = log.With(slog.String("node", addr.String()), slog.String("id", n.id.String()))
	// A node's index here stays a few hundred keys small: no compactions
	// (a thousand stores' compactors cost a fifth of the CPU).
	if n.store, err = cachestore.Open(cachestore.Config{Dir: filepath.Join(dir, addr.String()), Compactors: -1, Logger: log}); err != nil {
		return nil, fmt.Errorf("node %s's cache: %w", addr, err)
	}
	*stop = append(*stop, func() { n.store.Close() })
	runStore(ctx, n.store, stop)
	n.blobs = peering.NewBlobServer(n.store, peering.BlobConfig{Slots: cfg.Slots, Logger: log})
	broadcast := []netip.AddrPort{netip.AddrPortFrom(Broadcast(subnet), port)}
	if cfg.Strangers {
		broadcast = nil
	}
	n.peers, err = peering.Listen(peering.Config{
		ID: n.id, Priority: peering.DefaultPriority, Port: port, Conn: h.PacketConn(port),
		Broadcast: broadcast,
		LANs:      []netip.Prefix{netip.PrefixFrom(addr, 16).Masked()},
		FreeBytes: func() uint64 { return uint64(n.store.Free()) },
		Has:       n.store.Holds,
		Blobs:     n.blobs,
		Client: &http.Client{Transport: &http.Transport{DialContext: h.Dial, MaxIdleConnsPerHost: 4,
			ResponseHeaderTimeout: 15 * time.Second, DisableCompression: true}},
		Logger: log,
	})
	if err != nil {
		return nil, err
	}
	pctx, pcancel := context.WithCancel(ctx)
	pdone := make(chan struct{})
	go func() { defer close(pdone); n.peers.Run(pctx) }()
	*stop = append(*stop, func() { pcancel(); <-pdone })
	self := hub.Self{Node: n.id.String(), LAN: netip.PrefixFrom(addr, 16).Masked(), Peer: netip.AddrPortFrom(addr, port)}
	parent, err := hub.NewParent(hub.ParentConfig{URL: "http://" + hubAddr + ":3142", Self: self, Dial: h.Dial, Logger: log})
	if err != nil {
		return nil, err
	}
	d, err := door.New(door.Config{Peers: n.peers, Hubs: []door.Hub{parent}, HubOnly: true, Logger: log}, n.store)
	if err != nil {
		return nil, err
	}
	*stop = append(*stop, func() { d.Close() })
	n.proxy, err = proxy.New(proxy.Config{
		Door:         d,
		AllowClients: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")},
		HubOnly:      true, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	*stop = append(*stop, func() { n.proxy.Close() })
	*stop = append(*stop, serve(h, n.proxy.WithBlobs(peering.BlobPathPrefix, n.blobs)))
	return n, nil
}

// update is apt update on the node's machine: the indexes, through it.
func (n *node) update(ctx context.Context) error {
	for _, p := range []string{"/dists/sim/Release", "/dists/sim/main/binary-amd64/Packages"} {
		if _, err := n.get(ctx, p, -1); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
}

// get is a client on the node's machine asking it for the origin's path;
// it returns how long the whole answer took.
func (n *node) get(ctx context.Context, path string, size int64) (time.Duration, error) {
	u := "http://" + originAddr + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	req.RequestURI = u
	req.RemoteAddr = "127.0.0.1:40000"
	w := &sink{h: http.Header{}}
	begin := time.Now()
	broken := serveCatching(n.proxy, w, req)
	took := time.Since(begin)
	switch {
	case broken:
		return took, fmt.Errorf("node %s broke the connection after %d bytes of %s", n.host.Addr, w.n, path)
	case w.status != 0 && w.status != http.StatusOK:
		return took, fmt.Errorf("node %s: %s for %s", n.host.Addr, http.StatusText(w.status), path)
	case size >= 0 && w.n != size:
		return took, fmt.Errorf("node %s: %d of %d bytes of %s", n.host.Addr, w.n, size, path)
	}
	return took, nil
}

// serveCatching serves req; true when the handler broke the connection
// (http.ErrAbortHandler: a failure after the body began).
func serveCatching(h http.Handler, w http.ResponseWriter, req *http.Request) (broken bool) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				panic(v)
			}
			broken = true
		}
	}()
	h.ServeHTTP(w, req)
	return false
}

// statusWriter keeps the status a handler answered and the body's length.
type statusWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

// ReadFrom counts what a handler sends with io.Copy (a verified blob's
// rest is sent that way).
func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := io.Copy(struct{ io.Writer }{w.ResponseWriter}, r)
	w.n += n
	return n, err
}

// subnetKey is one artifact's path at one subnet.
type subnetKey struct {
	subnet int
	path   string
}

// subnetCounter counts the hub's answers and their bytes by subnet.
type subnetCounter struct {
	mu    sync.Mutex // guards gets and bytes
	gets  map[subnetKey]int
	bytes map[subnetKey]int64
}

func (c *subnetCounter) add(remote, path string, n int64) {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil || !ap.Addr().Is4() {
		return
	}
	k := subnetKey{int(ap.Addr().As4()[1]), path}
	c.mu.Lock()
	c.gets[k]++
	c.bytes[k] += n
	c.mu.Unlock()
}

// of is path's fetches and bytes by subnet, for the site's subnets.
func (c *subnetCounter) of(path string, subnets int) (map[int]int, map[int]int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	gets, bytes := map[int]int{}, map[int]int64{}
	for s := range subnets {
		gets[s], bytes[s] = c.gets[subnetKey{s, path}], c.bytes[subnetKey{s, path}]
	}
	return gets, bytes
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// sink is a client that reads the whole answer and keeps its length.
type sink struct {
	h      http.Header
	status int
	n      int64
}

func (s *sink) Header() http.Header { return s.h }

// Flush, SetWriteDeadline and SetReadDeadline are what http.ResponseController
// asks of a client's connection.
func (s *sink) Flush()                           {}
func (s *sink) SetWriteDeadline(time.Time) error { return nil }
func (s *sink) SetReadDeadline(time.Time) error  { return nil }
func (s *sink) EnableFullDuplex() error          { return nil }
func (s *sink) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
}
func (s *sink) Write(b []byte) (int, error) {
	s.WriteHeader(http.StatusOK)
	s.n += int64(len(b))
	return len(b), nil
}

// origin is the repository: an apt archive of the artifacts (each nodes
// wants) and one more for the lone download.
type origin struct {
	files map[string][]byte
	paths []string
	lone  string
	gets  *counter

	mu   sync.Mutex               // guards took
	took map[string]time.Duration // the longest transfer of each path
}

func newOrigin(cfg Config) *origin {
	o := &origin{files: map[string][]byte{}, gets: &counter{m: map[string]int{}}, took: map[string]time.Duration{}}
	r := mrand.New(mrand.NewPCG(cfg.Seed, 1))
	var pkgs strings.Builder
	add := func(name string) string {
		p := "/pool/main/" + name[:1] + "/" + name + "_1.0-1+sim1_all.deb"
		body := make([]byte, cfg.Size)
		for i := range body {
			body[i] = byte(r.UintN(256))
		}
		o.files[p] = body
		sum := sha256.Sum256(body)
		fmt.Fprintf(&pkgs, "Package: %s\nVersion: 1.0-1+sim1\nArchitecture: all\nFilename: %s\nSize: %d\nSHA256: %s\n\n",
			name, p[1:], cfg.Size, hex.EncodeToString(sum[:]))
		return p
	}
	for a := range cfg.Artifacts {
		o.paths = append(o.paths, add(fmt.Sprintf("artifact%d", a)))
	}
	o.lone = add("lone")
	ps := sha256.Sum256([]byte(pkgs.String()))
	o.files["/dists/sim/main/binary-amd64/Packages"] = []byte(pkgs.String())
	o.files["/dists/sim/Release"] = fmt.Appendf(nil, "Suite: sim\nCodename: sim\nSHA256:\n %s %d main/binary-amd64/Packages\n",
		hex.EncodeToString(ps[:]), pkgs.Len())
	return o
}

func (o *origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, ok := o.files[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if r.Method == http.MethodGet {
		o.gets.add(r.URL.Path)
	}
	began := time.Now()
	http.ServeContent(w, r, "", time.Unix(1700000000, 0), strings.NewReader(string(body)))
	if r.Method == http.MethodGet {
		o.mu.Lock()
		o.took[r.URL.Path] = max(o.took[r.URL.Path], time.Since(began))
		o.mu.Unlock()
	}
}

type counter struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *counter) add(k string) {
	c.mu.Lock()
	c.m[k]++
	c.mu.Unlock()
}

func (c *counter) get(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k]
}

// serve runs an HTTP server on the host's stream port; the func stops it.
func serve(h *Host, handler http.Handler) func() {
	srv := &http.Server{Handler: handler}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(h.Listener()); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			fmt.Fprintf(os.Stderr, "sim: %s: %v\n", h.Addr, err)
		}
	}()
	return func() { srv.Close(); <-done }
}

// runStore runs the store's background work until the simulation ends.
func runStore(ctx context.Context, s *cachestore.Store, stop *[]func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	*stop = append(*stop, func() { cancel(); <-done })
}

// forEach runs f on every node, at most par at once; the first error ends
// it.
func forEach(ctx context.Context, nodes []*node, par int, f func(*node) error) error {
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for _, n := range nodes {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := f(n); err != nil {
				mu.Lock()
				first = cmp.Or(first, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

// Print writes the report as `make sim` shows it.
func (rep *Report) Print(w io.Writer) {
	c := rep.Config
	fmt.Fprintf(w, "warren simulation: %d nodes in %d subnets behind one hub; %d artifacts of %d KiB, each wanted by every node within %s\n",
		c.Nodes, c.Subnets, c.Artifacts, c.Size>>10, c.Spread)
	fmt.Fprintf(w, "  links: node %.0f Mbit/s, each subnet's WAN to the hub %.0f Mbit/s, hub to origin %.0f Mbit/s; %d upload slots a node\n",
		c.NodeNIC*8/1e6, c.WAN*8/1e6, c.Origin*8/1e6, c.Slots)
	if c.Delay > 0 || c.Loss > 0 {
		fmt.Fprintf(w, "  slow nodes: scheduling delay 0-%s, heavy-tailed; %.1f%% of datagrams lost\n", c.Delay, 100*c.Loss)
	} else {
		fmt.Fprintf(w, "  idle nodes: no scheduling delay, no datagram lost\n")
	}
	if c.Strangers {
		fmt.Fprintf(w, "  strangers: the nodes of a subnet do not know each other (no broadcast, no membership)\n")
	}
	fmt.Fprintf(w, "  one lone download through the cold hub: %s\n", rep.Lone.Round(time.Millisecond))
	for _, a := range rep.Artifacts {
		q := func(p float64) time.Duration {
			if len(a.Times) == 0 {
				return 0
			}
			return a.Times[min(len(a.Times)-1, int(p*float64(len(a.Times))))]
		}
		ratio := func(d time.Duration) float64 { return float64(d) / float64(rep.Lone) }
		maxGETs, maxBytes, sumBytes := 0, int64(0), int64(0)
		for s, n := range a.SubnetGETs {
			maxGETs = max(maxGETs, n)
			maxBytes = max(maxBytes, a.SubnetBytes[s])
			sumBytes += a.SubnetBytes[s]
		}
		perSubnet := float64(sumBytes) / float64(max(len(a.SubnetBytes), 1)) / float64(c.Size)
		fmt.Fprintf(w, "  %s: origin fetches %d (the hub's took %s, %.2fx lone); fetches at the hub %d (%d answered busy or with a peer); per subnet (its WAN): fetches at most %d, bytes %.2fx the artifact on average, %.2fx at most; failed %d; completion p50 %s (%.2fx lone), p90 %s (%.2fx), p99 %s (%.2fx), max %s (%.2fx)\n",
			filepath.Base(a.Path), a.OriginGETs, a.OriginTook.Round(time.Millisecond), ratio(a.OriginTook), a.HubGETs, a.HubWaits, maxGETs, perSubnet, float64(maxBytes)/float64(c.Size), a.Failed,
			q(0.5).Round(time.Millisecond), ratio(q(0.5)), q(0.9).Round(time.Millisecond), ratio(q(0.9)),
			q(0.99).Round(time.Millisecond), ratio(q(0.99)), q(1).Round(time.Millisecond), ratio(q(1)))
	}
	fmt.Fprintf(w, "  most concurrent uploads of any node: %d (slots %d); datagrams sent per node: median %d, max %d\n",
		rep.MaxUploads, c.Slots, rep.DatagramsMedian, rep.DatagramsMax)
	fmt.Fprintf(w, "  the simulation took %s\n", rep.Took.Round(time.Second))
}
