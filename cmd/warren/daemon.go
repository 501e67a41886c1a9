package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/chocolatey/feedserver"
	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/hub"
	"github.com/warren-cache/warren/hub/replicate"
	"github.com/warren-cache/warren/internal/statefile"
	"github.com/warren-cache/warren/internal/taskgroup"
	"github.com/warren-cache/warren/mdns"
	"github.com/warren-cache/warren/peering"
	"github.com/warren-cache/warren/proxy"
	"github.com/warren-cache/warren/status"
	"github.com/warren-cache/warren/trust"
)

// daemon is every part of a running warren, wired.
type daemon struct {
	cfg        settings
	log        *slog.Logger
	store      *cachestore.Store
	door       *door.Door
	proxy      *proxy.Server
	feeds      *feedserver.Server  // nil without chocolatey feeds
	role       *hub.Role           // a hub's; nil otherwise
	replServer *replicate.Server   // a hub's serving side; nil otherwise
	node       *peering.Node       // nil with discovery off
	blobs      *peering.BlobServer // nil when passive or discovery off
	hubs       []*hub.Parent       // the site's hubs, in failover order
	preload    *preloader          // a hub with a preload list; nil otherwise
	replicate  *replicator         // a hub; nil otherwise
	intercept  *interception       // the site CA's https hosts; nil when none
	trust      *tls.Config         // what https hubs are verified with
	serverCert *serverCert         // a hub's https certificate; nil: plain http only
	peerTLS    *nodeTLS            // a node's certificate for mutual TLS with its peers; nil: peer_tls off
	warnings   []string            // risks the settings run, for the page and warren status
	ln         net.Listener
	id         peering.NodeID
	started    time.Time
	// history is the page's last day of bytes, kept in the index.
	history *status.History
	// handlers are the HTTP requests being served.
	handlers taskgroup.Group
}

// startEnrolment bounds what getting a node certificate from the hubs
// may add to a start: past it the node starts without one, and its
// renewal loop tries again every minute or so.
const startEnrolment = 30 * time.Second

// newDaemon builds the parts and binds the ports; Run serves. ctx cuts
// short what a start may wait on (enrolment with a hub).
func newDaemon(ctx context.Context, cfg settings, log *slog.Logger) (_ *daemon, err error) {
	scfg, err := storeConfig(cfg, log)
	if err != nil {
		return nil, err
	}
	d := &daemon{cfg: cfg, log: log, started: time.Now()}
	defer func() {
		if err != nil {
			d.close() // d, not the result: a failed return sets that to nil
		}
	}()
	if d.store, err = cachestore.Open(scfg); err != nil {
		return nil, err
	}
	if d.id, err = nodeID(cfg.CacheDir); err != nil {
		return nil, err
	}
	d.ln, err = net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	// The parts, each over the door: the door (the one way bytes enter
	// the store), the site role, replication, preloading, the feeds,
	// interception; the front (proxy) last, routing to them.
	feeds, budgets, err := feedserver.NewBudgets(cfg.chocolateyFeeds(), cfg.chocoRate, log)
	if err != nil {
		return nil, err
	}
	var front *proxy.Server // the chart's counts reach it once it is built
	history := func(eco string, served, wan int64) {
		if front != nil {
			front.History(eco, served, wan)
		}
	}
	dcfg := door.Config{
		AllowUpstream: cfg.allowUpstream,
		IndexTTL:      cfg.IndexTTL.Duration,
		NegativeTTL:   cfg.NegativeTTL.Duration,
		StallTimeout:  cfg.StallTimeout.Duration,
		ShareMinSize:  cfg.shareMinSize, // 0: peers first for every size
		HubOnly:       cfg.HubOnly,
		Transport:     budgets.Wrap,
		WAN:           func(eco string, n int64) { history(eco, 0, n) },
		// A mirror group's https mirrors are cacheable when warren
		// answers their CONNECTs (interception, built below).
		Intercepts: func(host string) bool { return d.intercept != nil && d.intercept.Intercepts(host) },
		Logger:     log,
	}
	if lt := newListTrust(cfg, log); lt != nil {
		dcfg.Lists = lt.Policy
	}
	if cfg.VerifySignatures == "auto" {
		keys, warnings := trust.Load(trust.Config{AptDir: cfg.Signatures.AptDir, YumReposDir: cfg.Signatures.YumReposDir, Keys: cfg.Signatures.Keys})
		for _, w := range warnings {
			log.Warn("repository keys: a problem reading them", slog.String("problem", w))
		}
		log.Info("repository signatures are checked before metadata is learnt; repositories without a known key are learnt from unchecked",
			slog.Int("repositories_with_keys", keys.Len()), slog.String("apt_dir", cfg.Signatures.AptDir), slog.String("yum_repos_dir", cfg.Signatures.YumReposDir))
		dcfg.Keys = keys
	}
	pcfg := proxy.Config{
		AllowClients: cfg.allowClients,
		ConnectPorts: cfg.ConnectPorts,
		HubOnly:      cfg.HubOnly,
		Logger:       log,
	}
	if d.trust, err = siteTrust(cfg); err != nil {
		return nil, err
	}
	for _, clear := range cfg.tokensInClear() {
		d.warnings = append(d.warnings, clear+": "+clearTokenRisk)
		log.Warn(clear + ": " + clearTokenRisk)
	}
	self := hub.Self{Node: d.id.String()}
	if cfg.Role != "hub" && cfg.Discovery != "off" {
		// The hubs hear which LAN this node is on, and, unless passive,
		// where its peers take blobs from it: a hub that streams an
		// artifact to this LAN already names the peers receiving it.
		listen, _ := netip.AddrFromSlice(d.ln.Addr().(*net.TCPAddr).IP)
		if lan, addr, ok := lanOf(cfg.Interfaces, listen.Unmap()); ok {
			self.LAN = lan
			if cfg.Role != "passive" {
				self.Peer = netip.AddrPortFrom(addr, uint16(d.ln.Addr().(*net.TCPAddr).Port))
			}
		}
	}
	for _, u := range cfg.Hubs {
		h, err := hub.NewParent(hub.ParentConfig{URL: u, Token: cfg.hubToken, TLS: d.trust, Self: self, Logger: log.With(slog.String("component", "hub"))})
		if err != nil {
			return nil, err
		}
		d.hubs = append(d.hubs, h)
		dcfg.Hubs = append(dcfg.Hubs, h)
	}
	pcfg.Hubs = dcfg.Hubs
	var role *hub.Role
	switch {
	case cfg.Role == "hub":
		// A hub serves its nodes through its door (tokens, the queue),
		// never as a LAN peer beside them.
		if d.serverCert, err = hubServerCert(cfg, log); err != nil {
			return nil, err
		}
		if d.serverCert == nil && (len(cfg.HubTokens) > 0 || len(cfg.Replication.Tokens) > 0) {
			w := "this hub serves plain http only, so the tokens its nodes and pulling hubs send cross the network in clear: give it a certificate (warren ca issue --host, or tls_cert and tls_key) and have them use its https:// URL"
			d.warnings = append(d.warnings, w)
			log.Warn(w)
		}
		role = hub.NewRole(hub.RoleConfig{ID: d.id.String(), Mode: cfg.hubMode, Tokens: hub.NewTokens(cfg.HubTokens),
			Queue: hub.NewQueue(cfg.MaxRequesters, cfg.RetryDelay.Duration), Preload: cfg.Preload, SignNode: signNode(cfg), Logger: log})
		d.role = role
		pcfg.Role = role
		dcfg.KeepGenerations = cfg.KeepIndexGenerations
		dcfg.PreloadOnly = !cfg.hubMode.OnDemand()
		dcfg.Record = replicate.Record(d.store, log)
		if cfg.Discovery != "off" {
			log.Info("a hub takes no part in LAN peering: nodes use it with --hub; discovery is off", slog.String("discovery", cfg.Discovery))
		}
	case cfg.Discovery != "off":
		ectx, cancel := context.WithTimeout(ctx, startEnrolment)
		d.peerTLS, err = newNodeTLS(ectx, cfg, d.id.String(), d.hubs, log)
		cancel()
		if err != nil {
			return nil, err
		}
		if err := d.startPeering(); err != nil {
			return nil, err
		}
		dcfg.Peers = d.node
	}
	if d.door, err = door.New(dcfg, d.store); err != nil {
		return nil, err
	}
	if len(feeds) > 0 {
		fcfg := feedserver.Config{Feeds: feeds, QueryTTL: cfg.chocoTTL, Logger: log,
			Served: func(eco string, n int64) { history(eco, n, 0) }, WAN: func(eco string, n int64) { history(eco, 0, n) }}
		if role != nil {
			fcfg.PreloadOnly, fcfg.Unheld = !cfg.hubMode.OnDemand(), role.Unheld
			fcfg.Internalize = cfg.Chocolatey.Internalize
		}
		d.feeds = feedserver.New(fcfg, d.door, d.store, budgets)
		pcfg.Feeds = d.feeds
		pcfg.Budgets = d.feeds.BudgetStats
	}
	if role != nil {
		d.replicate = newReplicator(d)
		d.replServer = replicate.NewServer(replicate.ServerConfig{ID: d.id.String(), Chain: d.replicate.chain,
			Tokens: hub.NewSyncTokens(cfg.Replication.Tokens), Authenticate: role.Authenticate, Refuse: role.Refuse,
			Store: d.store, Logger: log})
		pcfg.Replication = d.replServer
	}
	if role != nil && !cfg.Preload.Empty() {
		// Its figures go into the front's /metrics.
		if d.preload, err = newPreloader(d); err != nil {
			return nil, err
		}
	}
	if d.intercept, err = newInterception(cfg, log); err != nil {
		return nil, fmt.Errorf("https interception: %w (https_intercept: off turns it off)", err)
	}
	if d.intercept != nil {
		d.intercept.mirrors = d.door.MirrorHosts
		pcfg.Intercept = d.intercept
		for _, h := range d.hubs {
			if !h.TLS() {
				// What a client fetched over https would cross the site in
				// clear between this node and its hub.
				w := "https repositories this node intercepts are fetched through " + h.Name() + " over plain http: use the hub's https:// URL"
				d.warnings = append(d.warnings, w)
				log.Warn(w)
			}
		}
	}
	pcfg.Door = d.door
	pcfg.Status = d.status
	pcfg.Collectors = d.collectors()
	if role != nil {
		pcfg.HubStatus = &status.HubRole{Mode: role.Mode(), Queue: role.Queue(), Refusals: role.Refusals, MissingSuites: role.MissingSuites,
			Tokens: len(cfg.HubTokens) > 0, Clients: role.Clients}
		if len(cfg.Replication.Tokens) > 0 {
			pcfg.HubStatus.Pullers = d.replServer.Pullers
		}
		if len(cfg.ReplicateFrom) > 0 {
			pcfg.Replicated = d.replicate.bytes
		}
	}
	d.history = new(status.History)
	if b, err := d.store.State(historyState); err == nil {
		if err := d.history.Restore(b, time.Now()); err != nil {
			log.Warn("the status page's chart starts afresh", slog.Any("err", err))
		}
	}
	pcfg.History = d.history
	if d.feeds != nil {
		pcfg.Collectors = append(pcfg.Collectors, d.feeds.Collectors()...)
	}
	if front, err = proxy.New(pcfg); err != nil {
		return nil, err
	}
	d.proxy = front
	return d, nil
}

// The front takes the hub's role through its interface.
var _ proxy.Role = (*hub.Role)(nil)

// historyState names the page's last day of bytes in the index.
const historyState = "status-history"

// historySaveEvery is how often the day's bytes are written to the index
// (and once more as the daemon stops): a crash loses at most this much.
const historySaveEvery = time.Minute

// saveHistory keeps the page's last day of bytes in the index.
func (d *daemon) saveHistory() {
	b, err := d.history.Save()
	if err == nil {
		err = d.store.PutState(historyState, b)
	}
	if err != nil {
		d.log.Warn("could not keep the status page's chart in the index; a restart would start it afresh", slog.Any("err", err))
	}
}

// keepHistory saves the day's bytes every historySaveEvery until ctx ends.
func (d *daemon) keepHistory(ctx context.Context) {
	t := time.NewTicker(historySaveEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.saveHistory()
		}
	}
}

func (d *daemon) startPeering() error {
	cfg := d.cfg
	port := uint16(d.ln.Addr().(*net.TCPAddr).Port)
	passive := cfg.Role == "passive"
	var secret []byte
	if cfg.GroupSecret != "" {
		secret = []byte(cfg.GroupSecret)
	}
	if !passive {
		d.blobs = peering.NewBlobServer(d.store, peering.BlobConfig{Slots: cfg.UploadSlots, UploadRate: cfg.uploadRate, Secret: secret,
			RequireTLS: d.peerTLS != nil, Logger: d.log})
	}
	var peerTLS *tls.Config
	if d.peerTLS != nil {
		peerTLS = d.peerTLS.config().ClientConfig()
	}
	// Broadcasts and multicasts only reach a socket bound to the wildcard
	// address: the families HTTP listens on ([::] both, 0.0.0.0 IPv4
	// alone). With static discovery alone, bind where HTTP listens.
	tcp, _ := netip.AddrFromSlice(d.ln.Addr().(*net.TCPAddr).IP)
	udp := netip.AddrPortFrom(netip.IPv6Unspecified(), port)
	if tcp.Is4() || tcp.Is4In6() {
		udp = netip.AddrPortFrom(netip.IPv4Unspecified(), port)
	}
	var bcast []netip.AddrPort
	var lans []netip.Prefix
	if cfg.Discovery != "static" {
		b, l, err := broadcastAddrs(cfg.Interfaces, port, !udp.Addr().Is4())
		if err != nil {
			return err
		}
		bcast, lans = b, l
	} else if !tcp.IsUnspecified() {
		udp = netip.AddrPortFrom(tcp.Unmap(), port)
	}
	node, err := peering.Listen(peering.Config{
		ID: d.id, Priority: cfg.Priority, Passive: passive, Port: port,
		ListenUDP: udp, Broadcast: bcast, LANs: lans, Static: cfg.peers,
		MaxPeers: cfg.MaxPeers, PeerRetries: cfg.PeerRetries,
		// A peer busy to every request for as long as the stall rule allows
		// any source counts as a failed try.
		BusyLimit:    cfg.StallTimeout.Duration,
		QueryTimeout: cfg.QueryTimeout.Duration, ElectionWindow: cfg.ElectionWindow.Duration, Heartbeat: cfg.Heartbeat.Duration,
		SpaceAware: cfg.SpaceAwareElection, Secret: secret,
		FreeBytes: func() uint64 { return uint64(d.store.Free()) },
		Has:       d.store.Holds,
		Recheck:   d.store.Recheck,
		Blobs:     d.blobs,
		TLS:       peerTLS,
		Logger:    d.log.With(slog.String("component", "peering")),
	})
	d.node = node
	return err
}

// storeConfig is the cache as the settings describe it: the daemon and the
// CLI (with no daemon running) open it the same way.
func storeConfig(cfg settings, log *slog.Logger) (cachestore.Config, error) {
	// The values were checked with the settings; what fails here is the
	// file system (no such directory, no permission): a runtime failure.
	minFree, err := cfg.diskMinFree.bytes(cfg.CacheDir)
	if err != nil {
		return cachestore.Config{}, err
	}
	maxBytes, err := cfg.cacheMax.bytes(cfg.CacheDir)
	if err != nil {
		return cachestore.Config{}, err
	}
	return cachestore.Config{Dir: cfg.CacheDir, MinFreeBytes: minFree, Logger: log, ScrubRate: cfg.scrubRate, DirsAhead: true,
		Limits: cachestore.Limits{
			MaxBytes: maxBytes,
			MinAge:   time.Duration(cfg.CacheMinDays * float64(24*time.Hour)),
			MaxAge:   time.Duration(cfg.CacheMaxDays * float64(24*time.Hour)),
		}}, nil
}

// status is what the status page, /_warren/stats and `warren status` show
// of the store, the peers and the uploads.
func (d *daemon) status() status.Status {
	used, blobs, _ := d.store.Usage()
	st := status.Status{NodeID: d.id.String(), CacheBytes: used, CacheMax: d.store.MaxBytes(), Blobs: blobs, UploadSlots: d.cfg.UploadSlots, Role: d.cfg.Role,
		Warnings: slices.Clone(d.warnings), Listen: d.Addr(), Families: listenFamilies(d.ln)}
	if d.serverCert != nil {
		st.HTTPSNames = d.serverCert.names()
	}
	for _, h := range d.hubs {
		st.Hubs = append(st.Hubs, h.Status())
	}
	if d.preload != nil {
		st.Preloading, st.PreloadSchedule, st.PreloadRuns = true, d.preload.window.String(), d.preload.runs()
	}
	if d.intercept != nil {
		st.HTTPSIntercept, st.SiteCA = d.intercept.current(), d.intercept.ca.Fingerprint()
	}
	if d.replicate != nil {
		st.ReplicationServes = len(d.cfg.Replication.Tokens) > 0
		if len(d.cfg.ReplicateFrom) > 0 {
			st.Replication, st.ReplicateSchedule = d.replicate.runs(), "on demand"
			if every := d.cfg.ReplicateSchedule.Duration; every > 0 {
				st.ReplicateSchedule = "every " + every.String()
			}
		}
	}
	if d.blobs != nil {
		st.Uploads, st.UploadsPeak, st.BytesUploaded, st.UploadsRefused = d.blobs.Stats()
	}
	if d.node != nil {
		st.DatagramsDropped = d.node.Dropped.Load()
		for _, p := range d.node.Table().Peers() {
			role := "peer"
			if p.Passive {
				role = "passive"
			}
			st.Peers = append(st.Peers, status.Peer{ID: p.ID.String(), Addr: p.AddrPort().String(), Family: status.Family(p.Addr), Role: role,
				TLS: d.peerLink(p.ID), Priority: p.Priority, FreeBytes: p.FreeBytes, LastSeen: p.LastSeen})
		}
		st.PeerTLS = "off"
		if d.peerTLS != nil {
			st.PeerTLS, st.PeerTLSRefused = "mutual TLS with node certificates from the site CA", d.peerTLS.refused.Load()
			if why := d.peerTLS.missing(); why != "" {
				st.PeerTLS = "on, but this node has no certificate"
				st.Warnings = append(st.Warnings, "peer_tls: this node has no certificate from the site CA, so its peers give it nothing and it serves them nothing: "+why)
			}
		}
	}
	if d.proxy != nil {
		st.KnownArtifacts = d.proxy.Door().KnownArtifacts()
	}
	for _, f := range d.store.Fills() {
		st.Transfers = append(st.Transfers, status.Transfer{What: hub.RedactScope(f.Key), Written: f.Written, Size: f.Size})
	}
	return st
}

// peerLink is how blobs go with peer id: "mutual TLS", "refused: why"
// (its last transfer over TLS failed on TLS), "TLS" (not asked yet), or
// "plain http" with peer_tls off.
func (d *daemon) peerLink(id peering.NodeID) string {
	if !d.node.TLS() {
		return "plain http"
	}
	if st, ok := d.node.PeerTLS(id); ok {
		return st.String()
	}
	return "TLS (nothing asked yet)"
}

// collectors are the store's and the peers' figures for /metrics.
func (d *daemon) collectors() []prometheus.Collector {
	cs := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "warren_cache_bytes", Help: "Bytes of blobs in the cache."},
			func() float64 { used, _, _ := d.store.Usage(); return float64(used) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "warren_evictions_total", Help: "Blobs evicted."},
			func() float64 { return float64(d.store.Evictions()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "warren_scrub_bytes_total", Help: "Bytes of stored blobs rehashed by the scrub and rechecks."},
			func() float64 { return float64(d.store.Scrubbed().Bytes) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "warren_scrub_bad_total", Help: "Stored blobs found not to match their digest, and removed."},
			func() float64 { return float64(d.store.Scrubbed().Bad) }),
	}
	if d.node != nil {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "warren_peers", Help: "Peers in the table."},
			func() float64 { return float64(len(d.node.Table().Peers())) }))
		for _, fam := range []string{"IPv4", "IPv6"} {
			cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "warren_peers_by_family", Help: "Peers in the table, by the address family they are reached over.",
				ConstLabels: prometheus.Labels{"family": strings.ToLower(fam)}},
				func() float64 {
					n := 0
					for _, p := range d.node.Table().Peers() {
						if status.Family(p.Addr) == fam {
							n++
						}
					}
					return float64(n)
				}))
		}
	}
	if d.blobs != nil {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "warren_peer_uploads_in_progress", Help: "Uploads to peers running now."},
			func() float64 { a, _, _, _ := d.blobs.Stats(); return float64(a) }))
	}
	if d.preload != nil {
		cs = append(cs, d.preload.collectors()...)
	}
	if d.replicate != nil {
		cs = append(cs, d.replicate.collectors()...)
	}
	return cs
}

// mdnsConfig describes this node to mDNS, on the chosen interfaces.
func (d *daemon) mdnsConfig() (mdns.Config, error) {
	c := mdns.Config{ID: d.id.String(), Port: d.ln.Addr().(*net.TCPAddr).Port, Priority: d.cfg.Priority,
		Passive: d.cfg.Role == "passive", FreeBytes: uint64(d.store.Free()), Logger: d.log.With(slog.String("component", "mdns"))}
	for _, name := range d.cfg.Interfaces {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			return c, fmt.Errorf("interfaces: %q: %w", name, err)
		}
		c.Interfaces = append(c.Interfaces, *ifc)
	}
	return c, nil
}

// runMDNS keeps mDNS discovery going until ctx ends. Discovery is
// optional: when it cannot start (no multicast interface, no address yet:
// a machine at boot, an isolated host), warren logs it, serves without it,
// and tries again now and then.
func (d *daemon) runMDNS(ctx context.Context) error {
	for {
		err := d.runMDNSOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		retry := 30*time.Second + time.Duration(mrand.Int64N(int64(10*time.Second)))
		d.log.Warn("peer discovery by mDNS is not running; serving without it and trying again",
			slog.Any("err", err), slog.Duration("retry_in", retry))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry):
		}
	}
}

// runMDNSOnce announces this node (unless passive) and feeds what it finds
// into the peer table until ctx ends or mDNS fails.
func (d *daemon) runMDNSOnce(ctx context.Context) error {
	mc, err := d.mdnsConfig()
	if err != nil {
		return err
	}
	// Hellos keep peers (peering's greet); a table emptied by an outage
	// that outlived them is filled again by browsing soon.
	mc.Lonely = func() bool { return len(d.node.Table().Peers()) == 0 }
	if !mc.Passive {
		a, err := mdns.Announce(mc)
		if err != nil {
			return err
		}
		defer a.Close()
	}
	return mdns.Browse(ctx, mc, func(f mdns.Found) {
		id, err := peering.ParseNodeID(f.ID)
		if err != nil || id == d.id {
			return
		}
		if a, ok := reachable(f.Addrs); ok {
			d.node.Discovered(peering.Peer{ID: id, Addr: a, Port: f.Port, Priority: f.Priority, Passive: f.Passive})
		}
	})
}

// reachable is the first of a peer's addresses in a family this machine
// has an address of (not loopback): a dual-stack peer's IPv4 address from
// a machine with IPv4, its IPv6 one from an IPv6-only machine.
func reachable(addrs []netip.Addr) (netip.Addr, bool) {
	var has4, has6 bool
	if ifas, err := net.InterfaceAddrs(); err == nil {
		for _, ia := range ifas {
			if ipn, ok := ia.(*net.IPNet); ok && !ipn.IP.IsLoopback() {
				if ipn.IP.To4() != nil {
					has4 = true
				} else {
					has6 = true
				}
			}
		}
	}
	for _, a := range addrs {
		if a.Is4() && has4 || a.Is6() && has6 {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// nodeID reads the node's id from the cache directory, making one the
// first time: it stays the same across restarts.
func nodeID(dir string) (peering.NodeID, error) {
	path := filepath.Join(dir, "node-id")
	b, err := os.ReadFile(path)
	if err == nil {
		return peering.ParseNodeID(strings.TrimSpace(string(b)))
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return peering.NodeID{}, fmt.Errorf("read node id: %w", err)
	}
	var id peering.NodeID
	_, _ = rand.Read(id[:])
	if err := statefile.Write(path, []byte(hex.EncodeToString(id[:])+"\n"), 0o640); err != nil {
		return id, fmt.Errorf("write node id: %w", err)
	}
	return id, nil
}

// broadcastAddrs are where the LAN hears a node's queries and wants: the
// IPv4 subnet broadcast address of each chosen interface (default: all
// up, non-loopback), and with v6 the IPv6 multicast group on each of them
// that has an IPv6 address and can multicast; and the IPv4 networks.
func broadcastAddrs(names []string, port uint16, v6 bool) ([]netip.AddrPort, []netip.Prefix, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, nil, fmt.Errorf("list interfaces: %w", err)
	}
	var out []netip.AddrPort
	var lans []netip.Prefix
	for _, ifc := range ifs {
		if len(names) > 0 && !contains(names, ifc.Name) {
			continue
		}
		if ifc.Flags&net.FlagUp == 0 || len(names) == 0 && ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		has6 := false
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			if ipn.IP.To4() == nil {
				has6 = true
				continue
			}
			if ifc.Flags&net.FlagBroadcast == 0 {
				continue
			}
			ip, mask := ipn.IP.To4(), ipn.Mask
			b := make(net.IP, 4)
			for i := range b {
				b[i] = ip[i] | ^mask[len(mask)-4+i]
			}
			ba, _ := netip.AddrFromSlice(b)
			out = append(out, netip.AddrPortFrom(ba, port))
			if a, ok := netip.AddrFromSlice(ip); ok {
				bits, _ := mask.Size()
				if len(mask) == net.IPv6len {
					bits -= 96 // an IPv4 mask in 16 bytes
				}
				lans = append(lans, netip.PrefixFrom(a, bits).Masked())
			}
		}
		if v6 && has6 && ifc.Flags&net.FlagMulticast != 0 {
			out = append(out, peering.MulticastOn(ifc.Name, port))
		}
	}
	for _, n := range names {
		if _, err := net.InterfaceByName(n); err != nil {
			return nil, nil, fmt.Errorf("interfaces: %q: %w", n, err)
		}
	}
	return out, lans, nil
}

// lanOf is the IPv4 address peers reach this node at, and its network:
// listen itself when warren listens on one address (none when that is
// loopback: no LAN peer reaches it), else the first on the chosen
// interfaces (as broadcastAddrs picks them).
func lanOf(names []string, listen netip.Addr) (netip.Prefix, netip.Addr, bool) {
	if listen.IsLoopback() {
		return netip.Prefix{}, netip.Addr{}, false
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return netip.Prefix{}, netip.Addr{}, false
	}
	for _, ifc := range ifs {
		if len(names) > 0 && !contains(names, ifc.Name) {
			continue
		}
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagBroadcast == 0 || len(names) == 0 && ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || ipn.IP.To4() == nil {
				continue
			}
			addr, _ := netip.AddrFromSlice(ipn.IP.To4())
			if listen.IsValid() && !listen.IsUnspecified() && addr != listen {
				continue
			}
			bits, _ := ipn.Mask.Size()
			if len(ipn.Mask) == net.IPv6len {
				bits -= 96 // an IPv4 mask in 16 bytes
			}
			return netip.PrefixFrom(addr, bits).Masked(), addr, true
		}
	}
	return netip.Prefix{}, netip.Addr{}, false
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

// listenFamilies says which families ln takes connections of.
func listenFamilies(ln net.Listener) string {
	tcp, ok := ln.Addr().(*net.TCPAddr)
	if !ok {
		return ""
	}
	a, _ := netip.AddrFromSlice(tcp.IP)
	switch {
	case a.Is4() || a.Is4In6():
		return "IPv4"
	case a.IsUnspecified():
		return "IPv4 and IPv6"
	}
	return "IPv6"
}

// Addr is where the daemon serves HTTP.
func (d *daemon) Addr() string { return d.ln.Addr().String() }

// handler routes peers' blob requests to the blob server and everything
// else to the proxy. Only non-proxy requests can be blob requests: an
// absolute-URI proxy request may have any path.
// Every request runs as a task of d.handlers, so that shutdown can wait
// for the last one before it closes the store under it.
func (d *daemon) handler() http.Handler {
	route := http.Handler(d.proxy)
	if d.blobs != nil {
		route = d.proxy.WithBlobs(peering.BlobPathPrefix, d.blobs)
	}
	return d.tracked(route)
}

// tracked runs each request of h as a task of d.handlers; one that comes
// once shutdown has begun gets 503.
func (d *daemon) tracked(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !d.handlers.Do(func() { h.ServeHTTP(w, r) }) {
			w.Header().Set("Retry-After", "5")
			http.Error(w, "warren: shutting down", http.StatusServiceUnavailable)
		}
	})
}

// Run serves until ctx ends, then drains for up to 10 seconds and closes.
func (d *daemon) Run(ctx context.Context) error {
	defer d.close()
	srv := &http.Server{
		Handler: d.handler(),
		// A client's request head is small: a slow or huge one costs
		// little and is answered (431 beyond the cap) or cut.
		ReadHeaderTimeout: proxy.ReadHeaderTimeout,
		MaxHeaderBytes:    proxy.MaxHeaderBytes,
		IdleTimeout:       120 * time.Second,
		ConnContext:       proxy.ConnContext,
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelDebug),
	}
	attrs := []any{slog.String("listen", d.Addr()), slog.String("cache_dir", d.cfg.CacheDir),
		slog.String("discovery", d.cfg.Discovery), slog.String("version", version)}
	if d.node != nil {
		attrs = append(attrs, slog.String("node", d.id.String()), slog.String("udp", d.node.Addr().String()))
	}
	var serverTLS *tls.Config
	switch {
	case d.serverCert != nil:
		serverTLS = d.serverCert.config()
		attrs = append(attrs, slog.String("https", d.serverCert.what), slog.Any("https_names", d.serverCert.names()))
	case d.peerTLS != nil && d.blobs != nil:
		// Peers' blob requests over mutual TLS, on the one port.
		serverTLS = d.peerTLS.config().ServerConfig()
		attrs = append(attrs, slog.Bool("peer_tls", true))
	}
	// The admin socket listens before "serving" is said: a CLI run right
	// after must not find a crashed run's stale socket instead.
	adminLn, err := d.listenAdmin()
	if err != nil {
		return err
	}
	d.log.Info("warren serving", attrs...)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		ln := d.proxy.Listen(d.ln, proxy.ConnLimits{PerClient: d.cfg.MaxClientConnections, Total: d.cfg.MaxConnections})
		if serverTLS != nil {
			ln = proxy.WithTLS(ln, serverTLS) // https beside plain http, on the one port
		}
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve http: %w", err)
		}
		return nil
	})
	g.Go(func() error { return d.store.Run(gctx) })
	g.Go(func() error { d.keepHistory(gctx); return nil })
	g.Go(func() error { return d.serveAdmin(gctx, adminLn) })
	if d.node != nil {
		g.Go(func() error { return d.node.Run(gctx) })
	}
	if d.node != nil && (d.cfg.Discovery == "mdns" || d.cfg.Discovery == "both") {
		g.Go(func() error { return d.runMDNS(gctx) })
	}
	if len(d.hubs) > 0 {
		g.Go(func() error { d.probeHubs(gctx); return nil })
	}
	if d.peerTLS != nil {
		g.Go(func() error { d.peerTLS.loop(gctx); return nil })
	}
	if d.preload != nil {
		g.Go(func() error { d.preload.loop(gctx); return nil })
	}
	if d.replicate != nil {
		g.Go(func() error { d.replicate.loop(gctx); return nil })
	}
	g.Go(func() error {
		<-gctx.Done()
		d.log.Info("warren stopping")
		sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			// Past the drain: cut the connections, which cancels the
			// requests' contexts, and wait below for their handlers.
			d.log.Warn("requests still running after the drain; cutting them", slog.Any("err", err))
			srv.Close()
		}
		// No handler outlives this: d.close may close the store.
		d.handlers.Close()
		return nil
	})
	return g.Wait()
}

// probeHubs asks each hub who it is now and then, so that its state on
// the status page is true without traffic, and a refused token shows
// before a client's request fails on it.
func (d *daemon) probeHubs(ctx context.Context) {
	for {
		for _, h := range d.hubs {
			pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			info, err := h.Probe(pctx)
			cancel()
			if err == nil && info.ID == d.id.String() {
				d.log.Error("a hub in the hubs setting is this warren itself: a hub chain must not include itself", slog.String("hub", h.Name()))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(hubProbeInterval + time.Duration(mrand.Int64N(int64(hubProbeInterval/4)))):
		}
	}
}

// hubProbeInterval is how often the hubs are asked who they are.
const hubProbeInterval = 30 * time.Second

func (d *daemon) close() {
	for _, h := range d.hubs {
		h.CloseIdleConnections()
	}
	if d.proxy != nil {
		d.proxy.Close()
	}
	if d.feeds != nil {
		d.feeds.Close()
	}
	if d.door != nil {
		d.door.Close() // its fills and learns, before the store closes
	}
	if d.ln != nil {
		d.ln.Close()
	}
	if d.store != nil {
		if d.history != nil {
			d.saveHistory()
		}
		d.store.Close()
	}
}
