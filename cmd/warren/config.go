package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"

	"github.com/warren-cache/warren/chocolatey"
	"github.com/warren-cache/warren/chocolatey/feedserver"
	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/fill"
	"github.com/warren-cache/warren/hub"
	"github.com/warren-cache/warren/internal/siteca"
	"github.com/warren-cache/warren/peering"
	"github.com/warren-cache/warren/proxy"
	"github.com/warren-cache/warren/trust"
)

const defaultConfigFile = "/etc/warren/warren.yaml"

// config is every setting, by its config-file key. Precedence: flag, then
// WARREN_* environment variable, then the file, then the default.
type config struct {
	Listen       string   `yaml:"listen"`
	CacheDir     string   `yaml:"cache_dir"`
	LogLevel     string   `yaml:"log_level"`
	AllowClients []string `yaml:"allow_clients"`
	// AllowUpstream are networks upstream may be in although loopback,
	// link-local or this machine's own (refused otherwise).
	AllowUpstream []string `yaml:"allow_upstream"`
	ConnectPorts  []int    `yaml:"connect_ports"`
	// HTTPSIntercept is which https hosts warren answers CONNECTs to
	// itself, with the site CA: auto (apt's and dnf's https hosts without
	// credentials), off, or a list of hosts (ca.go); one of them may be
	// written as a plain scalar.
	HTTPSIntercept stringList `yaml:"https_intercept"`
	// MirrorLists is which of dnf's lists of mirrors (metalink=,
	// mirrorlist=) warren trusts to make mirror groups: auto (those the
	// repo files in signatures.yum_repos_dir name), URL prefixes (a hub's
	// or a site server's, for machines whose repo files it lacks), both,
	// or off (only those a hub answers in the site's order).
	MirrorLists stringList `yaml:"mirror_lists"`
	// MaxConnections and MaxClientConnections cap open connections, in all
	// and per client address (503 beyond).
	MaxConnections       int `yaml:"max_connections"`
	MaxClientConnections int `yaml:"max_client_connections"`
	// MemoryLimit is the daemon's soft memory limit, as GOMEMLIMIT sets
	// it (memlimit.go): a size, or 0 or off for none. GOMEMLIMIT wins.
	MemoryLimit  string   `yaml:"memory_limit"`
	IndexTTL     duration `yaml:"index_ttl"`
	NegativeTTL  duration `yaml:"negative_ttl"`
	DiskMinFree  string   `yaml:"disk_min_free"`
	CacheMax     string   `yaml:"cache_max"`      // "200GB" or "30%" of the cache's disk; "0": no limit
	CacheMinDays float64  `yaml:"cache_min_days"` // newer blobs are never evicted
	CacheMaxDays float64  `yaml:"cache_max_days"` // blobs unused this long are evicted; 0: never

	// Peers on the LAN.
	Discovery          string   `yaml:"discovery"` // mdns, static, both, off
	Peers              []string `yaml:"peers"`     // host:port, static discovery
	Interfaces         []string `yaml:"interfaces"`
	Role               string   `yaml:"role"` // peer, passive, hub
	Priority           int32    `yaml:"priority"`
	UploadSlots        int      `yaml:"upload_slots"`
	UploadRate         string   `yaml:"upload_rate"` // bytes/s, e.g. 10MB; 0 = unlimited
	PeerRetries        int      `yaml:"peer_retries"`
	MaxPeers           int      `yaml:"max_peers"`
	SpaceAwareElection bool     `yaml:"space_aware_election"`
	GroupSecret        string   `yaml:"group_secret"`
	QueryTimeout       duration `yaml:"query_timeout"`
	ElectionWindow     duration `yaml:"election_window"`
	Heartbeat          duration `yaml:"heartbeat"`
	// ShareMinSize: smaller artifacts go upstream at once; peers are their fallback.
	ShareMinSize string `yaml:"share_min_size"`

	// The site's hubs, as a node uses them.
	Hubs     []string `yaml:"hubs"`      // URLs, tried in order
	HubToken string   `yaml:"hub_token"` // sent to them as a Bearer token
	// HubTokenFile names a file holding hub_token instead, so that the
	// config file need not hold it.
	HubTokenFile string `yaml:"hub_token_file"`
	HubOnly      bool   `yaml:"hub_only"` // never the origin directly
	// HubRequireTLS refuses a token that would go to a hub (hubs,
	// replicate_from) over plain http (sitetls.go).
	HubRequireTLS bool `yaml:"hub_require_tls"`
	// The certificate this warren serves https with on its port (beside
	// plain http): a hub's for its nodes and other hubs. TLSCert and
	// TLSKey are an operator's own files; without them a hub takes
	// <cache_dir>/tls/hub.{crt,key} (warren ca issue --host) or, holding
	// the site CA, makes one for TLSHosts (default: this machine's name).
	TLSCert  string   `yaml:"tls_cert"`
	TLSKey   string   `yaml:"tls_key"`
	TLSHosts []string `yaml:"tls_hosts"`
	// PeerTLS: blob transfers between peers over mutual TLS with node
	// certificates from the site CA: auto (when the site CA's certificate
	// is here), on, off.
	PeerTLS string `yaml:"peer_tls"`
	// A hub (role hub).
	HubMode              string   `yaml:"hub_mode"`   // fetch, fetch-and-preload, preload
	HubTokens            []string `yaml:"hub_tokens"` // required of nodes when set
	MaxRequesters        int      `yaml:"max_requesters"`
	RetryDelay           duration `yaml:"retry_delay"`
	KeepIndexGenerations int      `yaml:"keep_index_generations"`
	// What a hub holds before anyone asks (preload.go).
	Preload        hub.PreloadList `yaml:"preload"`
	PreloadUpdates bool            `yaml:"preload_updates"`
	// PreloadRecommends follows Recommends as apt does by default
	// (APT::Install-Recommends).
	PreloadRecommends bool   `yaml:"preload_recommends"`
	PreloadSchedule   string `yaml:"preload_schedule"` // HH:MM-HH:MM daily, "" on demand only
	PreloadRate       string `yaml:"preload_rate"`     // bytes/s from upstream, 0 no cap
	// Replication between hubs (replicate.go): what this hub serves to
	// others, and what it pulls from others.
	Replication struct {
		Tokens []hub.SyncToken `yaml:"tokens"`
	} `yaml:"replication"`
	ReplicateFrom     []hub.ReplicateFrom `yaml:"replicate_from"`
	ReplicateSchedule duration            `yaml:"replicate_schedule"` // every; 0 on demand only
	ReplicateDeletes  bool                `yaml:"replicate_deletes"`

	// VerifySignatures: auto checks repositories' signatures with the
	// keys Signatures names (apt's and dnf's, and more) before anything
	// is learnt from their metadata; off checks none.
	VerifySignatures string `yaml:"verify_signatures"`
	Signatures       struct {
		// AptDir is apt's configuration: sources with Signed-By,
		// trusted.gpg and trusted.gpg.d.
		AptDir string `yaml:"apt_dir"`
		// YumReposDir holds dnf's .repo files (repo_gpgcheck, gpgkey).
		YumReposDir string `yaml:"yum_repos_dir"`
		// Keys are more repositories and the keyrings that sign them.
		Keys []trust.RepoKeyring `yaml:"keys"`
	} `yaml:"signatures"`

	// The fill engine.
	StallTimeout duration `yaml:"stall_timeout"`
	// ScrubRate is bytes/s for the background rehash of stored blobs; 0 off.
	ScrubRate string `yaml:"scrub_rate"`

	Chocolatey struct {
		// Upstream is the default feed's NuGet v2 URL, served at /chocolatey/api/v2/.
		Upstream string `yaml:"upstream"`
		// Feeds are more named feeds, served at /chocolatey/<name>/api/v2/.
		Feeds map[string]string `yaml:"feeds"`
		// QueryTTL is how long a feed answer is kept, by kind of call
		// (service, metadata, package, filter, find, search, updates, other).
		QueryTTL map[string]duration `yaml:"query_ttl"`
		// UpstreamRate is each feed's upstream request budget: "auto"
		// (15/min on the community repository, no limit elsewhere), "0"
		// (no limit), or e.g. "15/min".
		UpstreamRate string `yaml:"upstream_rate"`
		// Internalize, on a hub, is the hub's URL as its clients reach
		// it (http://hub.example:3142/): its feeds serve packages whose
		// install scripts download their installers from it; "": off.
		Internalize string `yaml:"internalize"`
	} `yaml:"chocolatey"`
}

// settings is a config checked and parsed: what the parts are built from.
// The config it came from is kept as written (parse never changes it).
type settings struct {
	config
	logLevel      slog.Level
	allowClients  []netip.Prefix
	chocoRate     *feedserver.Rate // nil: auto
	chocoTTL      map[chocolatey.QueryKind]time.Duration
	allowUpstream []netip.Prefix
	diskMinFree   sizeOrPercent
	memoryLimit   int64 // bytes; 0: none
	cacheMax      sizeOrPercent
	uploadRate    int64
	shareMinSize  int64
	scrubRate     int64
	peers         []netip.AddrPort
	hubMode       hub.Mode
	preloadRate   int64
	// hubToken is hub_token, or what hub_token_file holds; replicateFrom
	// is replicate_from with each token_file read into its token.
	hubToken      string
	replicateFrom []hub.ReplicateFrom
}

const defaultChocolateyUpstream = "https://community.chocolatey.org/api/v2/"

func defaults() config {
	cfg := config{
		Listen:         ":3142",
		CacheDir:       "/var/cache/warren",
		LogLevel:       "info",
		ConnectPorts:   []int{proxy.DefaultConnectPort},
		HTTPSIntercept: []string{"auto"},
		MirrorLists:    []string{"auto"},

		MaxConnections:       proxy.DefaultMaxConns,
		MaxClientConnections: proxy.DefaultMaxClientConn,
		MemoryLimit:          "16MiB", // minMemoryLimit: why, in memlimit.go
		IndexTTL:             duration{proxy.DefaultIndexTTL},
		NegativeTTL:          duration{proxy.DefaultNegativeTTL},
		DiskMinFree:          "1GB",
		CacheMax:             "30%",

		PeerTLS:            "auto",
		Discovery:          "mdns",
		Role:               "peer",
		Priority:           peering.DefaultPriority,
		UploadSlots:        peering.DefaultUploadSlots,
		UploadRate:         "0",
		PeerRetries:        peering.DefaultPeerRetries,
		MaxPeers:           peering.DefaultMaxPeers,
		SpaceAwareElection: true,
		QueryTimeout:       duration{peering.DefaultQueryTimeout},
		ElectionWindow:     duration{peering.DefaultElectionWindow},
		Heartbeat:          duration{peering.DefaultHeartbeat},
		ShareMinSize:       strings.ReplaceAll(humanize.IBytes(proxy.DefaultShareMinSize), " ", ""), // 256KiB
		StallTimeout:       duration{fill.DefaultStallTimeout},

		HubMode:              string(hub.DefaultMode),
		MaxRequesters:        hub.DefaultMaxRequesters,
		RetryDelay:           duration{hub.DefaultRetryDelay},
		KeepIndexGenerations: door.DefaultKeepGenerations,
		PreloadUpdates:       true,
		PreloadRecommends:    true,
		PreloadSchedule:      "02:00-04:00",
		PreloadRate:          "0",
		ReplicateSchedule:    duration{time.Hour},
		ScrubRate:            "20MB",
		VerifySignatures:     "auto",
	}
	cfg.Signatures.AptDir = "/etc/apt"
	cfg.Signatures.YumReposDir = "/etc/yum.repos.d"
	cfg.Chocolatey.Upstream = defaultChocolateyUpstream
	cfg.Chocolatey.UpstreamRate = "auto"
	return cfg
}

// defaultOf prints the default of the setting with YAML key key ("a.b"
// for nested ones) as the config file spells it: the one place flags'
// help, the shipped warren.yaml and the README take defaults from (a
// test holds the last two to it). "" when it has none to print.
func defaultOf(key string) string {
	v := reflect.ValueOf(defaults())
	for _, part := range strings.Split(key, ".") {
		t, found := v.Type(), false
		for i := range t.NumField() {
			if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); tag == part {
				v, found = v.Field(i), true
				break
			}
		}
		if !found {
			panic("defaultOf: no setting " + key) // a typo in a flag's help: caught by every test
		}
	}
	if (v.Kind() == reflect.Slice || v.Kind() == reflect.Map) && v.Len() == 0 {
		return ""
	}
	switch x := v.Interface().(type) {
	case duration:
		return x.String()
	case []int:
		if len(x) == 0 {
			return ""
		}
		return strings.Trim(strings.Join(strings.Fields(fmt.Sprint(x)), ", "), "[]")
	case []string:
		return strings.Join(x, ", ")
	case stringList:
		return strings.Join(x, ", ")
	case map[string]string, map[string]duration:
		return ""
	default:
		return fmt.Sprint(x)
	}
}

// withDefault is a flag's help ending in its setting's default.
func withDefault(help, key string) string {
	if d := defaultOf(key); d != "" {
		return help + " (default " + d + ")"
	}
	return help
}

// commandFlags are the setting flags a command other than serve and
// config check lists (the ones it uses, by name). The rest are still
// parsed, hidden: a daemon flag given by habit, or its WARREN_*
// variable, is read as before, but --help lists what the command uses.
func commandFlags(visible ...string) []cli.Flag {
	all := settingFlags()
	for _, f := range all {
		if !slices.Contains(visible, f.Names()[0]) {
			hide(f)
		}
	}
	return all
}

// hide keeps f out of --help.
func hide(f cli.Flag) {
	switch f := f.(type) {
	case *cli.StringFlag:
		f.Hidden = true
	case *cli.StringSliceFlag:
		f.Hidden = true
	case *cli.IntFlag:
		f.Hidden = true
	case *cli.IntSliceFlag:
		f.Hidden = true
	case *cli.BoolFlag:
		f.Hidden = true
	case *cli.DurationFlag:
		f.Hidden = true
	case *cli.Float64Flag:
		f.Hidden = true
	default:
		panic(fmt.Sprintf("commandFlags: cannot hide a %T", f))
	}
}

func settingFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Usage: "YAML config file (default " + defaultConfigFile + " if it exists)", EnvVars: []string{"WARREN_CONFIG"}},
		&cli.StringFlag{Name: "listen", Usage: withDefault("address:port to serve on", "listen"), EnvVars: []string{"WARREN_LISTEN"}},
		&cli.StringFlag{Name: "cache-dir", Usage: withDefault("where blobs and the index live", "cache_dir"), EnvVars: []string{"WARREN_CACHE_DIR"}},
		&cli.StringFlag{Name: "log-level", Usage: withDefault("debug, info, warn or error", "log_level"), EnvVars: []string{"WARREN_LOG_LEVEL"}},
		&cli.StringSliceFlag{Name: "allow-upstream", Usage: "CIDR upstream may be in although it is loopback, link-local or this machine's own address (refused by default), repeatable", EnvVars: []string{"WARREN_ALLOW_UPSTREAM"}},
		&cli.StringSliceFlag{Name: "allow-client", Usage: "CIDR allowed to use the proxy, repeatable (default: loopback and this machine's subnets)", EnvVars: []string{"WARREN_ALLOW_CLIENTS"}},
		&cli.IntFlag{Name: "max-connections", Usage: "connections open at once, 503 beyond", DefaultText: defaultOf("max_connections"), EnvVars: []string{"WARREN_MAX_CONNECTIONS"}},
		&cli.IntFlag{Name: "max-client-connections", Usage: "connections one client (address; IPv6: its /64) may hold open, 503 beyond", DefaultText: defaultOf("max_client_connections"), EnvVars: []string{"WARREN_MAX_CLIENT_CONNECTIONS"}},
		&cli.StringFlag{Name: "memory-limit", Usage: withDefault("the daemon's soft memory limit, as GOMEMLIMIT sets it (GOMEMLIMIT wins when set): a size such as 48MiB, or off for none", "memory_limit"), EnvVars: []string{"WARREN_MEMORY_LIMIT"}},
		&cli.StringSliceFlag{Name: "https-intercept", Usage: withDefault("https hosts whose CONNECTs warren answers with the site CA (warren ca init): auto (apt's and dnf's https sources without credentials), off, or host names, repeatable", "https_intercept"), EnvVars: []string{"WARREN_HTTPS_INTERCEPT"}},
		&cli.StringSliceFlag{Name: "mirror-lists", Usage: withDefault("dnf's lists of mirrors (metalink=, mirrorlist=) trusted to make mirror groups: auto (those the repo files in signatures.yum_repos_dir name), URL prefixes, repeatable, or off (only those a hub answers in the site's order)", "mirror_lists"), EnvVars: []string{"WARREN_MIRROR_LISTS"}},
		&cli.IntSliceFlag{Name: "connect-port", Usage: withDefault("port CONNECT may tunnel to, repeatable", "connect_ports"), EnvVars: []string{"WARREN_CONNECT_PORTS"}},
		&cli.StringFlag{Name: "index-ttl", Usage: withDefault("how long Release/Packages are served before asking upstream again", "index_ttl"), EnvVars: []string{"WARREN_INDEX_TTL"}},
		&cli.StringFlag{Name: "negative-ttl", Usage: withDefault("how long an upstream 404 is remembered, 0 for not at all", "negative_ttl"), EnvVars: []string{"WARREN_NEGATIVE_TTL"}},
		&cli.StringFlag{Name: "chocolatey-upstream", Usage: withDefault("NuGet v2 feed behind /chocolatey/api/v2/", "chocolatey.upstream"), EnvVars: []string{"WARREN_CHOCOLATEY_UPSTREAM"}},
		&cli.StringFlag{Name: "chocolatey-upstream-rate", Usage: withDefault("each feed's upstream request budget: auto (15/min on the community repository, no limit elsewhere), 0 (no limit) or e.g. 15/min", "chocolatey.upstream_rate"), EnvVars: []string{"WARREN_CHOCOLATEY_UPSTREAM_RATE"}},
		&cli.StringFlag{Name: "discovery", Usage: withDefault("how peers are found: mdns, static (only --peer), both, off", "discovery"), EnvVars: []string{"WARREN_DISCOVERY"}},
		&cli.StringSliceFlag{Name: "peer", Usage: "a peer's host:port, repeatable (static discovery)", EnvVars: []string{"WARREN_PEERS"}},
		&cli.StringSliceFlag{Name: "interfaces", Usage: "interfaces that announce and listen for peers, repeatable (default: all up, non-loopback)", EnvVars: []string{"WARREN_INTERFACES"}},
		&cli.StringFlag{Name: "role", Usage: withDefault("peer (uses and serves peers), passive (uses peers, never serves) or hub (a site's distribution server, which nodes use with --hub)", "role"), EnvVars: []string{"WARREN_ROLE"}},
		&cli.StringSliceFlag{Name: "hub", Usage: "URL of a site hub (http://host:port), asked after the LAN's peers and before the origin; repeatable, tried in order", EnvVars: []string{"WARREN_HUBS"}},
		&cli.StringFlag{Name: "hub-token", Usage: "token sent to the hubs (one of their hub_tokens); at least 16 characters. A flag is seen by every user in ps: prefer --hub-token-file or the config file", EnvVars: []string{"WARREN_HUB_TOKEN"}},
		&cli.StringFlag{Name: "hub-token-file", Usage: "a file holding the token sent to the hubs, instead of --hub-token (not readable by others)", EnvVars: []string{"WARREN_HUB_TOKEN_FILE"}},
		&cli.BoolFlag{Name: "hub-only", Usage: "never go to the origin directly: only through the hubs", EnvVars: []string{"WARREN_HUB_ONLY"}},
		&cli.BoolFlag{Name: "hub-require-tls", Usage: "refuse to send a token (hub_token, replicate_from's) to a hub over plain http: only https:// hubs", EnvVars: []string{"WARREN_HUB_REQUIRE_TLS"}},
		&cli.StringFlag{Name: "tls-cert", Usage: "a certificate (PEM, with its chain) a hub serves https with on its port, beside plain http (default: <cache_dir>/tls/hub.crt, or one the site CA makes)", EnvVars: []string{"WARREN_TLS_CERT"}},
		&cli.StringFlag{Name: "tls-key", Usage: "the key of --tls-cert (PEM, not readable by others)", EnvVars: []string{"WARREN_TLS_KEY"}},
		&cli.StringSliceFlag{Name: "tls-host", Usage: "a name nodes reach this hub by, for the certificate the site CA makes it (default: this machine's host name), repeatable", EnvVars: []string{"WARREN_TLS_HOSTS"}},
		&cli.StringFlag{Name: "peer-tls", Usage: withDefault("blob transfers between peers over mutual TLS with site CA node certificates: auto (when the site CA is here), on, off", "peer_tls"), EnvVars: []string{"WARREN_PEER_TLS"}},
		&cli.StringFlag{Name: "hub-mode", Usage: withDefault("a hub's mode: fetch, fetch-and-preload or preload (serve only what it holds)", "hub_mode"), EnvVars: []string{"WARREN_HUB_MODE"}},
		&cli.StringSliceFlag{Name: "hub-tokens", Usage: "a token a hub requires of its nodes (at least 16 characters, or sha256:<hex> of it), repeatable (default: none, allow_clients alone)", EnvVars: []string{"WARREN_HUB_TOKENS"}},
		&cli.IntFlag{Name: "max-requesters", Usage: "a hub's requesters streaming one artifact while it fetches it; the rest are told to retry", DefaultText: defaultOf("max_requesters"), EnvVars: []string{"WARREN_MAX_REQUESTERS"}},
		&cli.StringFlag{Name: "retry-delay", Usage: withDefault("how long a hub tells the requesters beyond max_requesters to wait", "retry_delay"), EnvVars: []string{"WARREN_RETRY_DELAY"}},
		&cli.StringFlag{Name: "preload-schedule", Usage: withDefault("the daily window a hub preloads in, HH:MM-HH:MM; empty: on demand only", "preload_schedule"), EnvVars: []string{"WARREN_PRELOAD_SCHEDULE"}},
		&cli.StringFlag{Name: "preload-rate", Usage: withDefault("bytes/s a preload run may take from upstream, e.g. 5MB; 0 no cap", "preload_rate"), EnvVars: []string{"WARREN_PRELOAD_RATE"}},
		&cli.StringFlag{Name: "replicate-schedule", Usage: withDefault("how often a hub pulls from its replicate_from hubs; 0: on demand only (warren replicate run)", "replicate_schedule"), EnvVars: []string{"WARREN_REPLICATE_SCHEDULE"}},
		&cli.BoolFlag{Name: "replicate-deletes", Usage: "apply the deletions of the hubs this one pulls from (default: replication only adds)", EnvVars: []string{"WARREN_REPLICATE_DELETES"}},
		&cli.IntFlag{Name: "keep-index-generations", Usage: "generations of index files a hub keeps servable", DefaultText: defaultOf("keep_index_generations"), EnvVars: []string{"WARREN_KEEP_INDEX_GENERATIONS"}},
		&cli.IntFlag{Name: "priority", Usage: "election and peer-choice weight", DefaultText: defaultOf("priority"), EnvVars: []string{"WARREN_PRIORITY"}},
		&cli.IntFlag{Name: "upload-slots", Usage: "uploads to peers at once", DefaultText: defaultOf("upload_slots"), EnvVars: []string{"WARREN_UPLOAD_SLOTS"}},
		&cli.StringFlag{Name: "upload-rate", Usage: withDefault("bytes/s shared by all uploads, e.g. 10MB; 0 unlimited", "upload_rate"), EnvVars: []string{"WARREN_UPLOAD_RATE"}},
		&cli.StringFlag{Name: "query-timeout", Usage: withDefault("how long to wait for peers' \"has it\" answers", "query_timeout"), EnvVars: []string{"WARREN_QUERY_TIMEOUT"}},
		&cli.StringFlag{Name: "election-window", Usage: withDefault("how long wants are collected before electing a downloader", "election_window"), EnvVars: []string{"WARREN_ELECTION_WINDOW"}},
		&cli.StringFlag{Name: "heartbeat", Usage: withDefault("interval of the elected downloader's heartbeats", "heartbeat"), EnvVars: []string{"WARREN_HEARTBEAT"}},
		&cli.StringFlag{Name: "share-min-size", Usage: withDefault("artifacts smaller than this go upstream at once, peers only as a fallback; 0 asks peers first for all", "share_min_size"), EnvVars: []string{"WARREN_SHARE_MIN_SIZE"}},
		&cli.StringFlag{Name: "scrub-rate", Usage: withDefault("bytes/s for rehashing stored blobs in the background to find bit rot, e.g. 20MB; 0 off", "scrub_rate"), EnvVars: []string{"WARREN_SCRUB_RATE"}},
		&cli.StringFlag{Name: "verify-signatures", Usage: withDefault("check repositories' signatures before learning from their metadata: auto (the keys apt and dnf trust, and signatures.keys) or off", "verify_signatures"), EnvVars: []string{"WARREN_VERIFY_SIGNATURES"}},
		&cli.StringFlag{Name: "stall-timeout", Usage: withDefault("a fill source that makes too little progress this long is left for the next one", "stall_timeout"), EnvVars: []string{"WARREN_STALL_TIMEOUT"}},
		&cli.StringFlag{Name: "group-secret", Usage: "shared secret: peer messages carry an HMAC, blob requests a token", EnvVars: []string{"WARREN_GROUP_SECRET"}},
		&cli.StringFlag{Name: "cache-max", Usage: withDefault("most the cache may hold, e.g. 200GB or 30% of its disk; 0 for no limit", "cache_max"), EnvVars: []string{"WARREN_CACHE_MAX"}},
		&cli.StringFlag{Name: "disk-min-free", Usage: withDefault("free space fills must leave, e.g. 5GB or 10%", "disk_min_free"), EnvVars: []string{"WARREN_DISK_MIN_FREE"}},
	}
}

// loadConfig merges defaults, the config file, environment and flags, and
// checks every value.
func loadConfig(c *cli.Context) (settings, error) {
	cfg := defaults()
	path, explicit := c.String("config"), c.IsSet("config")
	if !explicit {
		path = defaultConfigFile
	}
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := decodeYAML(b, &cfg); err != nil {
			return settings{config: cfg}, redactedError{fmt.Errorf("config file %s: %w", path, err)}
		}
	case explicit || !errors.Is(err, fs.ErrNotExist):
		return settings{config: cfg}, fmt.Errorf("read config file: %w", err)
	}
	str := func(flag string, dst *string) {
		if c.IsSet(flag) {
			*dst = c.String(flag)
		}
	}
	str("listen", &cfg.Listen)
	str("cache-dir", &cfg.CacheDir)
	str("log-level", &cfg.LogLevel)
	str("memory-limit", &cfg.MemoryLimit)
	str("disk-min-free", &cfg.DiskMinFree)
	str("cache-max", &cfg.CacheMax)
	str("chocolatey-upstream", &cfg.Chocolatey.Upstream)
	str("chocolatey-upstream-rate", &cfg.Chocolatey.UpstreamRate)
	str("discovery", &cfg.Discovery)
	str("role", &cfg.Role)
	str("hub-token", &cfg.HubToken)
	str("hub-token-file", &cfg.HubTokenFile)
	str("hub-mode", &cfg.HubMode)
	if c.IsSet("preload-schedule") {
		cfg.PreloadSchedule = c.String("preload-schedule")
	}
	str("preload-rate", &cfg.PreloadRate)
	if c.IsSet("hub") {
		cfg.Hubs = c.StringSlice("hub")
	}
	if c.IsSet("hub-tokens") {
		cfg.HubTokens = c.StringSlice("hub-tokens")
	}
	if c.IsSet("hub-only") {
		cfg.HubOnly = c.Bool("hub-only")
	}
	if c.IsSet("hub-require-tls") {
		cfg.HubRequireTLS = c.Bool("hub-require-tls")
	}
	str("tls-cert", &cfg.TLSCert)
	str("tls-key", &cfg.TLSKey)
	if c.IsSet("tls-host") {
		cfg.TLSHosts = c.StringSlice("tls-host")
	}
	str("peer-tls", &cfg.PeerTLS)
	if c.IsSet("max-requesters") {
		cfg.MaxRequesters = c.Int("max-requesters")
	}
	if c.IsSet("replicate-deletes") {
		cfg.ReplicateDeletes = c.Bool("replicate-deletes")
	}
	if c.IsSet("keep-index-generations") {
		cfg.KeepIndexGenerations = c.Int("keep-index-generations")
	}
	str("upload-rate", &cfg.UploadRate)
	str("group-secret", &cfg.GroupSecret)
	str("share-min-size", &cfg.ShareMinSize)
	str("scrub-rate", &cfg.ScrubRate)
	str("verify-signatures", &cfg.VerifySignatures)
	if c.IsSet("peer") {
		cfg.Peers = c.StringSlice("peer")
	}
	if c.IsSet("interfaces") {
		cfg.Interfaces = c.StringSlice("interfaces")
	}
	if c.IsSet("priority") {
		cfg.Priority = int32(c.Int("priority"))
	}
	if c.IsSet("max-connections") {
		cfg.MaxConnections = c.Int("max-connections")
	}
	if c.IsSet("max-client-connections") {
		cfg.MaxClientConnections = c.Int("max-client-connections")
	}
	if c.IsSet("upload-slots") {
		cfg.UploadSlots = c.Int("upload-slots")
	}
	if c.IsSet("allow-upstream") {
		cfg.AllowUpstream = c.StringSlice("allow-upstream")
	}
	if c.IsSet("allow-client") {
		cfg.AllowClients = c.StringSlice("allow-client")
	}
	if c.IsSet("https-intercept") {
		cfg.HTTPSIntercept = c.StringSlice("https-intercept")
	}
	if c.IsSet("mirror-lists") {
		cfg.MirrorLists = c.StringSlice("mirror-lists")
	}
	if c.IsSet("connect-port") {
		cfg.ConnectPorts = c.IntSlice("connect-port")
	}
	for flag, dst := range map[string]*duration{"index-ttl": &cfg.IndexTTL, "negative-ttl": &cfg.NegativeTTL,
		"query-timeout": &cfg.QueryTimeout, "election-window": &cfg.ElectionWindow, "heartbeat": &cfg.Heartbeat,
		"stall-timeout": &cfg.StallTimeout, "retry-delay": &cfg.RetryDelay, "replicate-schedule": &cfg.ReplicateSchedule} {
		if c.IsSet(flag) {
			d, err := time.ParseDuration(c.String(flag))
			if err != nil {
				return settings{config: cfg}, fmt.Errorf("--%s %q: want a duration such as 5s or 2m", flag, c.String(flag))
			}
			dst.Duration = d
		}
	}
	return cfg.parse()
}

func decodeYAML(b []byte, cfg *config) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)                                              // a misspelt key is an error, not a silent default
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) { // io.EOF: an empty file
		// yaml quotes the start of a value it cannot take, and a value
		// may be a token: the line and the type say enough.
		return errors.New(yamlValue.ReplaceAllString(err.Error(), "$1 (a value not shown)"))
	}
	return nil
}

// yamlValue is a value as yaml's errors quote it (!!str `s3cr...`).
var yamlValue = regexp.MustCompile("(!!\\w+) `[^`]*`")

// parse checks every value and parses those the parts need in another
// form; an error says which setting is wrong and what it wants.
func (cfg config) parse() (settings, error) {
	s := settings{config: cfg}
	check := func() error {
		if cfg.Listen == "" {
			return errors.New("listen: empty address")
		}
		if cfg.CacheDir == "" {
			return errors.New("cache_dir: empty path")
		}
		if err := s.logLevel.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
			return fmt.Errorf("log_level %q: want debug, info, warn or error", cfg.LogLevel)
		}
		var err error
		if s.allowClients, err = parsePrefixes("allow_clients", cfg.AllowClients); err != nil {
			return err
		}
		if s.allowUpstream, err = parsePrefixes("allow_upstream", cfg.AllowUpstream); err != nil {
			return err
		}
		for _, p := range cfg.ConnectPorts {
			if p < 1 || p > 65535 {
				return fmt.Errorf("connect_ports: %d is not a TCP port", p)
			}
		}
		if cfg.IndexTTL.Duration < 0 || cfg.NegativeTTL.Duration < 0 {
			return errors.New("index_ttl and negative_ttl must not be negative")
		}
		v, err := parseSizeOrPercent(cfg.DiskMinFree)
		if err != nil {
			return fmt.Errorf("disk_min_free: %w", err)
		}
		s.diskMinFree = v
		if v, err = parseSizeOrPercent(cfg.CacheMax); err != nil {
			return fmt.Errorf("cache_max: %w", err)
		}
		s.cacheMax = v
		if cfg.CacheMinDays < 0 || cfg.CacheMaxDays < 0 || cfg.CacheMaxDays > 0 && cfg.CacheMaxDays < cfg.CacheMinDays {
			return errors.New("cache_min_days and cache_max_days must not be negative, and cache_max_days (if set) not below cache_min_days")
		}
		switch cfg.Discovery {
		case "mdns", "static", "both", "off":
		default:
			return fmt.Errorf("discovery %q: want mdns, static, both or off", cfg.Discovery)
		}
		switch cfg.Role {
		case "peer", "passive", "hub":
		default:
			return fmt.Errorf("role %q: want peer, passive or hub", cfg.Role)
		}
		if s.hubMode, err = hub.ParseMode(cfg.HubMode); err != nil {
			return err
		}
		for _, h := range cfg.Hubs {
			u, err := hub.ParseURL(h)
			if err != nil {
				return fmt.Errorf("hubs: %w", err)
			}
			if cfg.Role == "hub" && sameListener(u.Host, cfg.Listen) {
				return fmt.Errorf("hubs: %s is this hub itself (listen %s): a hub chain must not include itself", h, cfg.Listen)
			}
		}
		if err := cfg.checkTLS(); err != nil {
			return err
		}
		if cfg.HubOnly && len(cfg.Hubs) == 0 {
			return errors.New("hub_only needs at least one hub (--hub URL): with none, nothing could be fetched")
		}
		if cfg.MaxRequesters < 1 || cfg.KeepIndexGenerations < 1 {
			return errors.New("max_requesters and keep_index_generations must be at least 1")
		}
		if cfg.RetryDelay.Duration <= 0 {
			return errors.New("retry_delay must be positive, e.g. 90s")
		}
		if err := cfg.Preload.Check(); err != nil {
			return err
		}
		if !cfg.Preload.Empty() && (cfg.Role != "hub" || s.hubMode == hub.Fetch) {
			return errors.New("preload is what a hub holds before anyone asks: set role hub with hub_mode fetch-and-preload or preload")
		}
		if _, err := hub.ParseWindow(cfg.PreloadSchedule); err != nil {
			return err
		}
		if cfg.PreloadRate == "0" || cfg.PreloadRate == "" {
			s.preloadRate = 0
		} else if n, err := humanize.ParseBytes(cfg.PreloadRate); err != nil {
			return fmt.Errorf("preload_rate %q: want bytes per second such as 5MB, or 0 for no cap", cfg.PreloadRate)
		} else {
			s.preloadRate = int64(n)
		}
		if err := checkIntercept(cfg.HTTPSIntercept); err != nil {
			return err
		}
		if err := checkMirrorLists(cfg.MirrorLists); err != nil {
			return err
		}
		if err := cfg.checkReplication(); err != nil {
			return err
		}
		if len(cfg.HubTokens) > 0 && cfg.Role != "hub" {
			return errors.New("hub_tokens are what a hub requires of its nodes: set them with role hub (a node sends hub_token)")
		}
		for i, t := range cfg.HubTokens {
			if err := hub.CheckAccepted(t); err != nil {
				return fmt.Errorf("hub_tokens[%d]: %w", i, err)
			}
		}
		if s.hubToken, err = cfg.hubTokenOf(); err != nil {
			return err
		}
		if s.replicateFrom, err = cfg.replicateFromOf(); err != nil {
			return err
		}
		if clear := s.tokensInClear(); cfg.HubRequireTLS && len(clear) > 0 {
			return fmt.Errorf("hub_require_tls: %s; use the hub's https:// URL (its certificate from the site CA: warren ca issue --host), or unset hub_require_tls", strings.Join(clear, "; "))
		}
		if s.memoryLimit, err = parseMemoryLimit(cfg.MemoryLimit); err != nil {
			return err
		}
		if cfg.MaxConnections < 1 || cfg.MaxClientConnections < 1 {
			return errors.New("max_connections and max_client_connections must be at least 1")
		}
		if cfg.UploadSlots < 1 || cfg.MaxPeers < 1 || cfg.PeerRetries < 1 {
			return errors.New("upload_slots, max_peers and peer_retries must be at least 1")
		}
		if cfg.UploadRate == "0" || cfg.UploadRate == "" {
			s.uploadRate = 0
		} else {
			n, err := humanize.ParseBytes(cfg.UploadRate)
			if err != nil {
				return fmt.Errorf("upload_rate %q: want bytes per second such as 10MB, or 0 for unlimited", cfg.UploadRate)
			}
			s.uploadRate = int64(n)
		}
		s.peers = nil
		for _, p := range cfg.Peers {
			ap, err := resolvePeer(p)
			if err != nil {
				return fmt.Errorf("peers: %w", err)
			}
			s.peers = append(s.peers, ap)
		}
		if cfg.Discovery == "static" && len(s.peers) == 0 {
			return errors.New("discovery static needs at least one --peer host:port")
		}
		if cfg.QueryTimeout.Duration <= 0 || cfg.ElectionWindow.Duration <= 0 || cfg.Heartbeat.Duration <= 0 || cfg.StallTimeout.Duration <= 0 {
			return errors.New("query_timeout, election_window, heartbeat and stall_timeout must be positive")
		}
		if cfg.ScrubRate == "0" || cfg.ScrubRate == "" {
			s.scrubRate = 0
		} else if n, err := humanize.ParseBytes(cfg.ScrubRate); err != nil {
			return fmt.Errorf("scrub_rate %q: want bytes per second such as 20MB, or 0 to turn the scrub off", cfg.ScrubRate)
		} else {
			s.scrubRate = int64(n)
		}
		if n, err := humanize.ParseBytes(cfg.ShareMinSize); err != nil {
			return fmt.Errorf("share_min_size %q: want a size such as 256KiB, or 0 to ask peers first for every artifact", cfg.ShareMinSize)
		} else {
			s.shareMinSize = int64(n)
		}
		switch cfg.VerifySignatures {
		case "auto", "off":
		default:
			return fmt.Errorf("verify_signatures %q: want auto or off", cfg.VerifySignatures)
		}
		for i, k := range cfg.Signatures.Keys {
			if u, err := url.Parse(k.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("signatures.keys[%d]: url %q: want the repository's http(s) base URL", i, k.URL)
			}
			if k.Keyring == "" {
				return fmt.Errorf("signatures.keys[%d] (%s): no keyring: name the file holding the repository's keys", i, k.URL)
			}
		}
		if v := cfg.Chocolatey.Internalize; v != "" {
			u, err := url.Parse(v)
			if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.User != nil {
				return fmt.Errorf("chocolatey.internalize %q: want this hub's URL as its clients reach it, such as http://hub.example:3142/", v)
			}
			if cfg.Role != "hub" {
				return errors.New("chocolatey.internalize is a hub's: set role hub (its clients download the installers from it)")
			}
		}
		s.chocoRate = nil
		if r := cfg.Chocolatey.UpstreamRate; r != "auto" && r != "" {
			rate, err := feedserver.ParseRate(r)
			if err != nil {
				return fmt.Errorf("chocolatey.upstream_rate %w", err)
			}
			s.chocoRate = &rate
		}
		s.chocoTTL = map[chocolatey.QueryKind]time.Duration{}
		for k, d := range cfg.Chocolatey.QueryTTL {
			if !slices.Contains(chocolatey.QueryKinds, chocolatey.QueryKind(k)) {
				return fmt.Errorf("chocolatey.query_ttl: %q is not a kind of feed call; use %v", k, chocolatey.QueryKinds)
			}
			if d.Duration < 0 {
				return fmt.Errorf("chocolatey.query_ttl.%s: must not be negative", k)
			}
			s.chocoTTL[chocolatey.QueryKind(k)] = d.Duration
		}
		for name, u := range cfg.chocolateyFeeds() {
			pu, err := url.Parse(u)
			if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
				if name == "" {
					return fmt.Errorf("chocolatey.upstream %q: want an http(s) URL such as %s", u, defaultChocolateyUpstream)
				}
				return fmt.Errorf("chocolatey.feeds.%s %q: want an http(s) URL", name, u)
			}
			if name != "" && !chocolatey.ValidID(name) {
				return fmt.Errorf("chocolatey.feeds: feed name %q: use letters, digits, '.', '-', '_'", name)
			}
		}
		return nil
	}
	if err := check(); err != nil {
		return s, redactedError{err}
	}
	return s, nil
}

// sameListener says whether a hub's host:port is this warren's own listen
// address, as far as the settings tell (a loopback or unspecified listen
// host with the same port).
func sameListener(hubHost, listen string) bool {
	hh, hp, err := net.SplitHostPort(hubHost)
	if err != nil {
		return false
	}
	lh, lp, err := net.SplitHostPort(listen)
	if err != nil || hp != lp {
		return false
	}
	if hh == lh {
		return true
	}
	a, err := netip.ParseAddr(hh)
	return err == nil && a.IsLoopback() && (lh == "" || lh == "0.0.0.0" || lh == "::")
}

// resolvePeer turns host:port into an address: [fd00::5]:3142 or
// 10.0.0.5:3142, or a name (its first address, as the resolver orders
// them: RFC 6724, the families this machine can reach first).
func resolvePeer(s string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if strings.Count(s, ":") >= 2 && !strings.HasPrefix(s, "[") {
			return netip.AddrPort{}, fmt.Errorf("%q: an IPv6 address and its port are written [address]:port, e.g. [fd00::5]:3142", s)
		}
		return netip.AddrPort{}, fmt.Errorf("%q: want host:port, e.g. 10.0.0.5:3142 or [fd00::5]:3142", s)
	}
	pn, err := strconv.ParseUint(port, 10, 16)
	if err != nil || pn == 0 {
		return netip.AddrPort{}, fmt.Errorf("%q: %q is not a port", s, port)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if err := needsZone(a); err != nil {
			return netip.AddrPort{}, fmt.Errorf("%q: %w", s, err)
		}
		return netip.AddrPortFrom(a.Unmap(), uint16(pn)), nil
	}
	addrs, err := net.DefaultResolver.LookupNetIP(context.Background(), "ip", host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: cannot resolve %s: %w", s, host, err)
	}
	if len(addrs) == 0 {
		return netip.AddrPort{}, fmt.Errorf("%q: %s has no address", s, host)
	}
	if err := needsZone(addrs[0]); err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: %s resolves to %s: %w", s, host, addrs[0], err)
	}
	return netip.AddrPortFrom(addrs[0].Unmap(), uint16(pn)), nil
}

// needsZone refuses an IPv6 link-local address without its zone: the
// same fe80:: address may be on every link, so the kernel cannot send to
// one without knowing the interface (each datagram would fail, EINVAL).
func needsZone(a netip.Addr) error {
	if a.Is6() && !a.Is4In6() && (a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast()) && a.Zone() == "" {
		return fmt.Errorf("%s is link-local: name its interface, e.g. [%s%%eth0]:3142", a, a)
	}
	return nil
}

// chocolateyFeeds is the default feed ("") and the named ones.
func (cfg *config) chocolateyFeeds() map[string]string {
	feeds := map[string]string{"": cfg.Chocolatey.Upstream}
	for name, u := range cfg.Chocolatey.Feeds {
		feeds[name] = u
	}
	return feeds
}

// duration reads and writes "5s" in YAML.
type duration struct{ time.Duration }

func (d duration) MarshalYAML() (any, error) { return d.String(), nil }

func (d *duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration such as 5s or 2m", n.Line, n.Value)
	}
	d.Duration = v
	return nil
}

// stringList reads a YAML list, or one scalar as a list of one: the
// shipped warren.yaml shows "https_intercept: auto", and an operator
// uncommenting it must not get a type error.
type stringList []string

func (l *stringList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*l = nil // "key:" with no value: none, which the check refuses
		if n.Tag != "!!null" {
			*l = stringList{n.Value}
		}
		return nil
	}
	var list []string
	if err := n.Decode(&list); err != nil {
		return err
	}
	*l = list
	return nil
}

// sizeOrPercent is "5GB" or "10%" (of the file system holding the cache).
type sizeOrPercent struct {
	bytes_  int64
	percent float64
}

func parseSizeOrPercent(s string) (sizeOrPercent, error) {
	s = strings.TrimSpace(s)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(p, 64)
		if err != nil || f < 0 || f > 100 {
			return sizeOrPercent{}, fmt.Errorf("%q: want a percentage from 0%% to 100%%", s)
		}
		return sizeOrPercent{percent: f}, nil
	}
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return sizeOrPercent{}, fmt.Errorf("%q: want a size such as 5GB or 500MiB, or a percentage such as 10%%", s)
	}
	return sizeOrPercent{bytes_: int64(n)}, nil
}

// bytes resolves a percentage against the file system holding dir.
func (v sizeOrPercent) bytes(dir string) (int64, error) {
	if v.percent == 0 {
		return v.bytes_, nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return 0, fmt.Errorf("create cache directory %s: %w", dir, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("size of the file system holding %s: %w", dir, err)
	}
	return int64(float64(int64(st.Blocks)*st.Bsize) * v.percent / 100), nil
}

// parsePrefixes reads CIDRs or bare addresses (a host prefix).
func parsePrefixes(key string, in []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range in {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("%s %q: want a CIDR such as 10.0.0.0/8 or an address", key, s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// checkReplication says what is wrong with the replication settings.
func (cfg config) checkReplication() error {
	if (len(cfg.Replication.Tokens) > 0 || len(cfg.ReplicateFrom) > 0) && cfg.Role != "hub" {
		return errors.New("replication is between hubs: replication.tokens and replicate_from need role hub")
	}
	names := map[string]bool{}
	for i, t := range cfg.Replication.Tokens {
		where := fmt.Sprintf("replication.tokens[%d]", i)
		switch {
		case t.Name == "":
			return fmt.Errorf("%s: no name: name each token (the logs say which one was used)", where)
		case hub.CheckAccepted(t.Token) != nil:
			return fmt.Errorf("%s (%s): %w", where, t.Name, hub.CheckAccepted(t.Token))
		case names["t:"+t.Name]:
			return fmt.Errorf("%s: the name %q is used twice", where, t.Name)
		}
		names["t:"+t.Name] = true
		if err := t.Repositories.Check(where + ".repositories"); err != nil {
			return err
		}
	}
	for i, f := range cfg.ReplicateFrom {
		if err := f.Check(i); err != nil {
			return err
		}
		if names["f:"+f.Name] {
			return fmt.Errorf("replicate_from[%d]: the name %q is used twice", i, f.Name)
		}
		names["f:"+f.Name] = true
		if u, err := url.Parse(f.URL); err == nil && sameListener(u.Host, cfg.Listen) {
			return fmt.Errorf("replicate_from[%d] (%s): %s is this hub itself (listen %s): a hub cannot pull from itself", i, f.Name, f.URL, cfg.Listen)
		}
	}
	if cfg.ReplicateSchedule.Duration < 0 {
		return errors.New("replicate_schedule must be 0 (on demand only) or a positive interval such as 1h")
	}
	return nil
}

// printable is the config as `warren config check` prints it: as written
// (what the file would say), but every secret shown by its last
// characters and every URL without its password.
func (cfg config) printable() ([]byte, error) {
	var doc yaml.Node
	if err := doc.Encode(cfg); err != nil {
		return nil, err
	}
	redactNode(&doc, false)
	return yaml.Marshal(&doc)
}

// secretKeys are the keys, at any depth, whose values are secrets.
var secretKeys = map[string]bool{"hub_token": true, "hub_tokens": true, "token": true, "group_secret": true}

// redactNode redacts n's scalars: tokens under secretKeys, URLs' passwords
// everywhere (hubs, replicate_from, chocolatey feeds, preload lists).
func redactNode(n *yaml.Node, secret bool) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			redactNode(n.Content[i+1], secretKeys[n.Content[i].Value])
		}
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			redactNode(c, secret)
		}
	case yaml.ScalarNode:
		if secret {
			n.Value = hub.RedactToken(n.Value)
		} else {
			n.Value = hub.RedactURLs(n.Value)
		}
	}
}

// redactedError is a settings error as shown: some quote the URL they
// refuse, never with its password.
type redactedError struct{ err error }

func (e redactedError) Error() string { return hub.RedactURLs(e.err.Error()) }
func (e redactedError) Unwrap() error { return e.err }

// hubTokenOf is the token sent to the hubs: hub_token, or what
// hub_token_file holds.
func (cfg config) hubTokenOf() (string, error) {
	tok := cfg.HubToken
	switch {
	case tok != "" && cfg.HubTokenFile != "":
		return "", errors.New("hub_token and hub_token_file both set: give the token one way")
	case cfg.HubTokenFile != "":
		var err error
		if tok, err = readTokenFile("hub_token_file", cfg.HubTokenFile); err != nil {
			return "", err
		}
	case tok == "":
		return "", nil
	}
	if err := hub.CheckSent(tok); err != nil {
		return "", fmt.Errorf("hub_token: %w", err)
	}
	return tok, nil
}

// replicateFromOf is replicate_from with each token_file read, and every
// token checked.
func (cfg config) replicateFromOf() ([]hub.ReplicateFrom, error) {
	out := slices.Clone(cfg.ReplicateFrom)
	for i := range out {
		f := &out[i]
		where := fmt.Sprintf("replicate_from[%d] (%s)", i, f.Name)
		if f.TokenFile != "" && f.Token == "" {
			tok, err := readTokenFile(where+".token_file", f.TokenFile)
			if err != nil {
				return nil, err
			}
			f.Token, f.TokenFile = tok, ""
		}
		if f.Token == "" {
			continue // Check says what is missing
		}
		if err := hub.CheckSent(f.Token); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
	}
	return out, nil
}

// maxTokenFile bounds what a token file may hold.
const maxTokenFile = 4 << 10

// readTokenFile reads the token a file holds: one line. The file must
// not be readable by everyone on the machine (the daemon reads it as user
// warren: root:warren 0640 does).
func readTokenFile(key, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", key, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("%s: %w", key, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s: %s is not a regular file", key, path)
	}
	if perm := fi.Mode().Perm(); perm&0o007 != 0 {
		return "", fmt.Errorf("%s: %s is readable or writable by every user (mode %04o): chmod o-rwx %s (the daemon reads it through its group: chgrp warren %s)", key, path, perm, path, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
	if err != nil {
		return "", fmt.Errorf("%s: read %s: %w", key, path, err)
	}
	tok := strings.TrimSpace(string(b))
	switch {
	case len(b) > maxTokenFile:
		return "", fmt.Errorf("%s: %s is over %d bytes: it should hold one token", key, path, maxTokenFile)
	case tok == "":
		return "", fmt.Errorf("%s: %s is empty: put the token in it (%s)", key, path, "openssl rand -hex 24")
	case strings.ContainsAny(tok, "\r\n"):
		return "", fmt.Errorf("%s: %s holds more than one line: it should hold one token", key, path)
	}
	return tok, nil
}

// checkMirrorLists says what is wrong with mirror_lists.
func checkMirrorLists(list []string) error {
	if len(list) == 0 {
		return errors.New("mirror_lists: want auto, off, or URL prefixes of the lists of mirrors to trust (auto may go with them)")
	}
	for _, l := range list {
		switch {
		case l == "off" && len(list) > 1:
			return errors.New("mirror_lists: off stands alone")
		case l == "off", l == "auto":
		default:
			if _, err := door.NewListPolicy(nil, nil, []string{l}); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkIntercept says what is wrong with https_intercept.
func checkIntercept(list []string) error {
	if len(list) == 1 && (list[0] == "auto" || list[0] == "off") {
		return nil
	}
	if len(list) == 0 {
		return errors.New("https_intercept: want auto, off, or the https hosts to intercept")
	}
	for _, h := range list {
		if h == "auto" || h == "off" {
			return fmt.Errorf("https_intercept: %s stands alone; or give host names only", h)
		}
		if err := siteca.ValidHost(h); err != nil {
			return fmt.Errorf("https_intercept: %w", err)
		}
	}
	return nil
}
