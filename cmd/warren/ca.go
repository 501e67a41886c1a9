package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/warren-cache/warren/internal/repohosts"
	"github.com/warren-cache/warren/internal/siteca"
	"github.com/warren-cache/warren/internal/statefile"
)

// HTTPS repositories: the site CA's commands (`warren ca ...`), which hosts
// are intercepted, and what apt and dnf are told to trust
// (`warren apt-setup`, `warren dnf-setup --https`).

// caDir is where the site CA lives: in the state (cache) directory.
func caDir(cfg settings) string { return filepath.Join(cfg.CacheDir, "ca") }

// Defaults of the files apt-setup and dnf-setup write and read.
const (
	defaultBundle = "/etc/warren/ca-bundle.crt"
	defaultAptDir = "/etc/apt/apt.conf.d"
	defaultHelper = "/usr/lib/warren/apt-proxy-detect"
	aptSnippet    = "31warren-https"
)

// systemCAFiles are where distributions keep the system's CAs, one file,
// as Go's crypto/x509 looks for them: Debian and Ubuntu; Fedora, RHEL and
// their rebuilds; their extracted bundle; openSUSE.
var systemCAFiles = []string{
	"/etc/ssl/certs/ca-certificates.crt",
	"/etc/pki/tls/certs/ca-bundle.crt",
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
	"/etc/ssl/ca-bundle.pem",
}

// systemCAs is the --system-cas given, else the first of systemCAFiles
// there is; with none, an error that names them and the flag.
func systemCAs(c *cli.Context) (string, error) {
	if p := c.String("system-cas"); p != "" {
		return p, nil
	}
	for _, p := range systemCAFiles {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			return p, nil // there (a file warren cannot read: its error names it)
		}
	}
	return "", fmt.Errorf("the system's CAs are in none of %s: name the file that holds them (PEM) with --system-cas", strings.Join(systemCAFiles, ", "))
}

// configRoot is where apt's and dnf's configuration is read from for the
// CLI's commands ("/"; a test's tree in tests).
var configRoot = "/"

// wantedHosts are the hosts https_intercept names: apt's and dnf's https
// hosts without credentials (auto, read under root), or the list. With
// auto, a file warren cannot read may give any host a credential: then no
// host is wanted, and the error (an unreadableConfig) says what to do.
func wantedHosts(cfg settings, root string) ([]string, error) {
	switch {
	case len(cfg.HTTPSIntercept) == 1 && cfg.HTTPSIntercept[0] == "off":
		return nil, nil
	case len(cfg.HTTPSIntercept) == 1 && cfg.HTTPSIntercept[0] == "auto":
		found := repohosts.Scan(root)
		if len(found.Unreadable) > 0 {
			return nil, unreadableConfig(found.Unreadable)
		}
		return found.Intercept(), nil
	}
	out := make([]string, 0, len(cfg.HTTPSIntercept))
	for _, h := range cfg.HTTPSIntercept {
		out = append(out, strings.ToLower(h))
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// unreadableConfig is apt's or dnf's configuration that warren could not
// read: typically a root-only auth.conf while the daemon runs as user
// warren. Its text names each file and the fix.
type unreadableConfig []repohosts.Unreadable

func (u unreadableConfig) Error() string {
	group := strconv.Itoa(os.Getgid())
	if g, err := user.LookupGroupId(group); err == nil {
		group = g.Name
	}
	var what, fix []string
	for _, f := range u {
		what = append(what, fmt.Sprintf("%s (%v)", f.Path, f.Err))
		mode := "0640"
		if f.Dir {
			mode = "0750"
		}
		if errors.Is(f.Err, fs.ErrPermission) {
			fix = append(fix, fmt.Sprintf("let group %s read it: chgrp %[1]s %s; chmod %s %[2]s", group, f.Path, mode))
		} else {
			fix = append(fix, "mend or remove "+f.Path)
		}
	}
	return fmt.Sprintf("https_intercept auto intercepts nothing: warren cannot read %s, which may hold credentials for any host; %s, or name the hosts to intercept in https_intercept",
		strings.Join(what, ", "), strings.Join(fix, "; "))
}

// interception is the daemon's intercept.Certs: the wanted hosts the
// site CA may sign for, the auto list read again at most every 30 s (a
// repository added to apt's sources is picked up without a restart), and
// the https mirrors of the lists of mirrors warren read (at once when they
// change) that the CA's constraints name: naming a distribution's mirror
// domains there is the operator's leave to cache them.
type interception struct {
	ca   *siteca.CA
	cfg  settings
	root string
	log  *slog.Logger
	// mirrors are the https hosts of the mirror groups and their
	// version (the door's MirrorHosts); nil: none.
	mirrors func() ([]string, uint64)

	mu             sync.Mutex
	hosts          []string
	hostSet        map[string]bool // hosts, for Intercepts
	scanned        time.Time
	mirrorsVersion uint64
	lastOutside    []string // warned of once, until the list changes
	lastMirrorsOut []string // likewise, of the mirrors
	lastUnreadable string   // likewise: the configuration warren could not read
}

func (in *interception) current() []string {
	hosts, _ := in.currentSet()
	return hosts
}

// currentSet is current, and its hosts as a set; the same until the auto
// list's rescan or the mirrors change (a CONNECT asks each time).
func (in *interception) currentSet() ([]string, map[string]bool) {
	var (
		mirrors []string
		version uint64
	)
	if in.mirrors != nil {
		mirrors, version = in.mirrors()
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if time.Since(in.scanned) < 30*time.Second && in.hosts != nil && version == in.mirrorsVersion {
		return in.hosts, in.hostSet
	}
	var hosts, outside []string
	wanted, err := wantedHosts(in.cfg, in.root)
	if why := errText(err); why != in.lastUnreadable {
		if err != nil {
			in.log.Warn("apt's or dnf's configuration cannot be read", slog.Any("err", err))
		} else {
			in.log.Info("apt's and dnf's configuration can be read again: https_intercept auto intercepts its hosts")
		}
		in.lastUnreadable = why
	}
	for _, h := range wanted {
		if in.ca.Permits(h) {
			hosts = append(hosts, h)
		} else {
			outside = append(outside, h)
		}
	}
	if len(outside) > 0 && !slices.Equal(outside, in.lastOutside) {
		in.log.Warn("https hosts outside the site CA's name constraints stay tunnels: make a new CA that names them (warren ca init --force, then warren apt-setup)",
			slog.Any("hosts", outside))
	}
	var mirrorsOut []string
	for _, h := range mirrors {
		switch {
		case slices.Contains(hosts, h):
		case in.ca.Permits(h):
			hosts = append(hosts, h)
		default:
			mirrorsOut = append(mirrorsOut, h)
		}
	}
	if len(mirrorsOut) > 0 && !slices.Equal(mirrorsOut, in.lastMirrorsOut) {
		in.log.Warn("https mirrors of the lists of mirrors dnf uses stay tunnels, and what dnf fetches from them is not cached: the site CA's name constraints do not name them; make a CA that names their domains (warren ca init --force --host <domain> ..., then warren dnf-setup --https), or let the list put the http mirrors first",
			slog.Any("hosts", mirrorsOut))
	}
	in.hosts, in.scanned = append([]string{}, hosts...), time.Now()
	in.hostSet = make(map[string]bool, len(hosts))
	for _, h := range hosts {
		in.hostSet[h] = true
	}
	in.lastOutside, in.mirrorsVersion, in.lastMirrorsOut = outside, version, mirrorsOut
	return in.hosts, in.hostSet
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Intercepts says whether CONNECTs to host are answered by warren.
func (in *interception) Intercepts(host string) bool {
	_, set := in.currentSet()
	return set[strings.ToLower(host)]
}

// Leaf is the site CA's certificate for host.
func (in *interception) Leaf(host string) (*tls.Certificate, error) { return in.ca.Leaf(host) }

// newInterception loads the site CA for the daemon; nil when there is
// none or https_intercept is off.
func newInterception(cfg settings, log *slog.Logger) (*interception, error) {
	if len(cfg.HTTPSIntercept) == 1 && cfg.HTTPSIntercept[0] == "off" {
		return nil, nil
	}
	ca, err := siteca.Load(caDir(cfg))
	if errors.Is(err, siteca.ErrNoKey) {
		log.Info("the site CA's certificate is here without its key: hubs and peers are verified with it, and no https host is intercepted (that needs the key: warren ca install of what warren ca export wrote)")
		return nil, nil
	}
	if errors.Is(err, siteca.ErrNoCA) {
		if !(len(cfg.HTTPSIntercept) == 1 && cfg.HTTPSIntercept[0] == "auto") {
			log.Warn("https_intercept names hosts, but there is no site CA: they stay tunnels until `warren ca init` makes one", slog.Any("hosts", cfg.HTTPSIntercept))
		}
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	in := &interception{ca: ca, cfg: cfg, root: "/", log: log}
	log.Info("https repositories intercepted with the site CA", slog.String("fingerprint", ca.Fingerprint()),
		slog.Any("hosts", in.current()), slog.Any("ca_permits", ca.Hosts()), slog.Time("ca_not_after", ca.Cert.NotAfter))
	return in, nil
}

func caCommands(flags []cli.Flag, usageErr cli.OnUsageErrorFunc, withCfg func(func(*cli.Context, settings) error) cli.ActionFunc) *cli.Command {
	return &cli.Command{Name: "ca", Usage: "the site CA that lets warren cache https repositories", Subcommands: []*cli.Command{
		{Name: "init", Usage: "make the site CA for the https hosts (https_intercept) and the hubs' names (--hub-host; --force replaces one: a rotation)", OnUsageError: usageErr,
			Flags: append(commandFlags("config", "cache-dir", "https-intercept"),
				&cli.BoolFlag{Name: "force", Usage: "replace the CA there is (nodes need the new one, and apt-setup again)"},
				&cli.StringSliceFlag{Name: "host", Usage: "an https host the CA may sign for, repeatable (default: what https_intercept names now)"},
				&cli.StringSliceFlag{Name: "hub-host", Usage: "a name the site's hubs are reached by, which the CA may sign https certificates for (warren ca issue --host), repeatable"}),
			Action: withCfg(caInit)},
		{Name: "install", Usage: "take the site CA made on the hub (the file warren ca export wrote: its certificate and key, or with --cert its certificate alone, to trust the site's hubs and peers without intercepting)", ArgsUsage: "FILE", OnUsageError: usageErr,
			Flags: flags, Action: withCfg(caInstall)},
		{Name: "export", Usage: "write the site CA's certificate and private key, for warren ca install on the site's nodes: --out FILE makes FILE mode 0600 (never over an existing file); without it the export goes to standard output only when that is a pipe or a file, never to a terminal; --cert writes the certificate alone (public)", OnUsageError: usageErr,
			Flags: append(slices.Clip(flags), &cli.StringFlag{Name: "out", Usage: "the file to write, created mode 0600; it must not exist"},
				&cli.BoolFlag{Name: "cert", Usage: "the certificate alone, no key: what a node needs to verify its hubs and peers"}),
			Action: withCfg(caExport)},
		{Name: "issue", Usage: "issue a certificate with the site CA: --host NAME for a hub's https (written to <cache_dir>/tls/hub.{crt,key}, where the hub takes it), or --node for a node's mutual TLS with its peers (<cache_dir>/tls/node.{crt,key})", OnUsageError: usageErr,
			Flags: append(slices.Clip(flags),
				&cli.StringSliceFlag{Name: "host", Usage: "a name nodes reach the hub by (its hubs URL's host), repeatable; the CA must permit it (ca init --hub-host)"},
				&cli.BoolFlag{Name: "node", Usage: "a node certificate, for peers"},
				&cli.StringFlag{Name: "id", Usage: "with --node: the node's id, as warren status shows it (default: this machine's)"},
				&cli.StringFlag{Name: "out", Usage: "write PREFIX.crt and PREFIX.key (mode 0600) instead, to copy to the machine (its <cache_dir>/tls/)"}),
			Action: withCfg(caIssue)},
		{Name: "show", Usage: "the site CA's fingerprint, hosts and lifetime", OnUsageError: usageErr,
			Flags: flags, Action: withCfg(caShow)},
	}}
}

func caInit(c *cli.Context, cfg settings) error {
	dir := caDir(cfg)
	if old, err := siteca.Load(dir); err == nil && !c.Bool("force") {
		return fmt.Errorf("a site CA exists (%s, fingerprint %s); --force replaces it (a rotation: install the new one on the nodes and run warren apt-setup again)", dir, old.Fingerprint())
	}
	hosts := c.StringSlice("host")
	if len(hosts) == 0 {
		var err error
		if hosts, err = wantedHosts(cfg, configRoot); err != nil {
			return fmt.Errorf("%w (or give them with --host)", err)
		}
	}
	hosts = append(hosts, c.StringSlice("hub-host")...)
	ca, err := siteca.Init(dir, hosts, time.Now())
	if err != nil {
		return err
	}
	if err := keepOwner(cfg.CacheDir); err != nil {
		return err
	}
	printCA(c, ca, dir)
	fmt.Fprintln(c.App.Writer, "next: restart warren (systemctl restart warren), then warren apt-setup (and warren dnf-setup --https) so apt and dnf trust it for these hosts")
	return nil
}

func caInstall(c *cli.Context, cfg settings) error {
	if c.NArg() != 1 {
		return usageError{errors.New("warren ca install FILE: FILE is what warren ca export wrote on the hub")}
	}
	dir := caDir(cfg)
	ca, err := siteca.Install(dir, c.Args().First())
	if err != nil {
		return err
	}
	if err := keepOwner(cfg.CacheDir); err != nil {
		return err
	}
	printCA(c, ca, dir)
	return nil
}

func caExport(c *cli.Context, cfg settings) error {
	ca, err := siteca.Load(caDir(cfg))
	if errors.Is(err, siteca.ErrNoKey) && c.Bool("cert") {
		ca, err = loadCertOnly(cfg)
	}
	if err != nil {
		return fmt.Errorf("%w in %s: warren ca init makes one", err, caDir(cfg))
	}
	b, err := ca.Export()
	if err != nil {
		return err
	}
	if c.Bool("cert") {
		// Public: a node that must trust its hubs and peers but not sign.
		if out := c.String("out"); out != "" {
			if err := statefile.Write(out, siteca.CertPEM(ca.Cert), 0o644); err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "wrote the site CA's certificate to %s: on each node, warren ca install %s\n", out, out)
			return nil
		}
		_, err = c.App.Writer.Write(siteca.CertPEM(ca.Cert))
		return err
	}
	if out := c.String("out"); out != "" {
		if err := writeSecret(out, b); err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "wrote the site CA's certificate and private key to %s (mode 0600): on each node, warren ca install %s; then delete the copies\n", out, out)
		return nil
	}
	// A private key on a screen is in the scrollback, a screen recording,
	// the shoulder behind: to a terminal, refuse; a pipe (ssh to a node)
	// or a redirect is the operator's choice.
	if f, ok := c.App.Writer.(*os.File); ok && isTerminal(f) {
		return usageError{errors.New("ca export: the export holds the site CA's private key and standard output is a terminal: write it with --out FILE (mode 0600), or pipe it")}
	}
	_, err = c.App.Writer.Write(b)
	return err
}

// writeSecret creates path, mode 0600 whatever the umask, with b: never
// over an existing file (nor through a symlink planted there).
func writeSecret(path string, b []byte) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w (it must not exist)", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(path)
		}
	}()
	// A umask can only narrow the create's mode; a strict one (0277) would
	// leave the owner unable to read it.
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(b); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// loadCertOnly is the site CA as a machine holding its certificate alone
// knows it.
func loadCertOnly(cfg settings) (*siteca.CA, error) {
	c, _, err := siteca.LoadCert(caDir(cfg))
	if err != nil {
		return nil, err
	}
	return &siteca.CA{Cert: c}, nil
}

// caIssue issues a hub's https certificate or a node's.
func caIssue(c *cli.Context, cfg settings) error {
	hosts, node := c.StringSlice("host"), c.Bool("node")
	if (len(hosts) > 0) == node {
		return usageError{errors.New("ca issue: give --host NAME (a hub's https certificate) or --node (a node's, for peers)")}
	}
	ca, err := siteca.Load(caDir(cfg))
	if err != nil {
		return fmt.Errorf("%w in %s: ca issue runs where the site CA's key is (the hub that made it: warren ca init)", err, caDir(cfg))
	}
	key, err := siteca.NewKey()
	if err != nil {
		return err
	}
	var cert *x509.Certificate
	prefix := c.String("out")
	if node {
		id := c.String("id")
		if id == "" {
			nid, err := nodeID(cfg.CacheDir)
			if err != nil {
				return err
			}
			id = nid.String()
		}
		if cert, err = ca.IssueNode(id, &key.PublicKey, siteca.NodeLifetime); err != nil {
			return err
		}
		// The hub's enrolment takes this key for this id from now on:
		// by hand, the CA's holder may give a node that lost its key a
		// new one.
		replaced, err := siteca.OpenEnrolled(caDir(cfg)).Bind(id, &key.PublicKey, true, time.Now())
		if err != nil {
			return err
		}
		if replaced {
			fmt.Fprintf(c.App.Writer, "node %s was enrolled with another key: this certificate's key replaces it (enrolment with the hub takes only this one now)\n", id)
		}
		if prefix == "" {
			prefix = filepath.Join(tlsDir(cfg), "node")
		}
	} else {
		if cert, err = ca.IssueServer(hosts, &key.PublicKey, siteca.ServerLifetime); err != nil {
			return err
		}
		if prefix == "" {
			prefix = filepath.Join(tlsDir(cfg), "hub")
		}
	}
	if err := siteca.WriteKeyPair(prefix, []*x509.Certificate{cert, ca.Cert}, key); err != nil {
		return err
	}
	if err := keepOwner(cfg.CacheDir); err != nil {
		return err
	}
	what := "hub https for " + strings.Join(cert.DNSNames, ", ")
	if node {
		id, _ := siteca.NodeOf(cert)
		what = "node " + id + ", for mutual TLS with its peers"
	}
	fmt.Fprintf(c.App.Writer, "issued a certificate (%s), valid until %s: %s.crt, key %s.key (mode 0600)\n",
		what, cert.NotAfter.Format("2006-01-02"), prefix, prefix)
	if c.String("out") != "" {
		name := "hub"
		if node {
			name = "node"
		}
		fmt.Fprintf(c.App.Writer, "copy both to that machine's %s/ as %s.crt and %s.key (the key mode 0600, owned by warren), then restart warren there\n", tlsDir(cfg), name, name)
	} else {
		fmt.Fprintln(c.App.Writer, "restart warren to use it")
	}
	return nil
}

func caShow(c *cli.Context, cfg settings) error {
	ca, err := siteca.Load(caDir(cfg))
	if errors.Is(err, siteca.ErrNoKey) {
		if ca, err = loadCertOnly(cfg); err == nil {
			printCA(c, ca, caDir(cfg))
			fmt.Fprintln(c.App.Writer, "this machine holds the certificate alone: it trusts the site's hubs and peers, intercepts nothing, signs nothing")
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("%w in %s: warren ca init makes one", err, caDir(cfg))
	}
	printCA(c, ca, caDir(cfg))
	var live []string
	wanted, err := wantedHosts(cfg, configRoot)
	for _, h := range wanted {
		if ca.Permits(h) {
			live = append(live, h)
		}
	}
	fmt.Fprintf(c.App.Writer, "intercepted now (https_intercept %s): %s\n", strings.Join(cfg.HTTPSIntercept, ","), orNone(live))
	if err != nil {
		fmt.Fprintln(c.App.Writer, err)
	}
	return nil
}

func printCA(c *cli.Context, ca *siteca.CA, dir string) {
	fmt.Fprintf(c.App.Writer, "site CA: %s\nfingerprint (SHA-256): %s\nmay sign for: %s (and no IP address)\nvalid until: %s\n",
		filepath.Join(dir, siteca.CertFile), ca.Fingerprint(), strings.Join(ca.Hosts(), ", "), ca.Cert.NotAfter.Format("2006-01-02"))
}

func orNone(list []string) string {
	if len(list) == 0 {
		return "none"
	}
	return strings.Join(list, ", ")
}

// trustedHosts are the hosts apt and dnf are told to trust the site CA
// for: those https_intercept names that the CA may sign for. An
// unreadableConfig comes with the CA's certificate.
func trustedHosts(cfg settings) ([]string, []byte, error) {
	cert, certPEM, err := siteca.LoadCert(caDir(cfg))
	if err != nil {
		return nil, nil, fmt.Errorf("the site CA in %s: %w: warren ca init (or ca install) first", caDir(cfg), err)
	}
	wanted, err := wantedHosts(cfg, configRoot)
	if err != nil {
		return nil, certPEM, err
	}
	var hosts []string
	for _, h := range wanted {
		if siteca.Permits(cert, h) {
			hosts = append(hosts, h)
		}
	}
	return hosts, certPEM, nil
}

// writeBundle writes the system's CAs and the site CA into one file: a
// host told to trust it still verifies a direct connection (warren down).
func writeBundle(path, systemCAs string, siteCA []byte) error {
	sys, err := os.ReadFile(systemCAs)
	if err != nil {
		return fmt.Errorf("read the system's CAs: %w (--system-cas names them)", err)
	}
	b := append(append(sys, "\n# warren site CA (warren apt-setup)\n"...), siteCA...)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return statefile.Write(path, b, 0o644)
}

// aptSetup writes (or with undo removes) apt's trust of the site CA for
// the intercepted hosts, and the https proxy helper.
func aptSetup(c *cli.Context, cfg settings) error {
	snippet := filepath.Join(c.String("apt-conf-dir"), aptSnippet)
	bundle := c.String("bundle")
	w := c.App.Writer
	if c.Bool("undo") {
		removed := false
		for _, p := range []string{snippet, bundle} {
			if err := os.Remove(p); err == nil {
				removed = true
			} else if !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		if !removed {
			fmt.Fprintf(w, "nothing of warren apt-setup in %s: nothing to undo\n", snippet)
			return nil
		}
		fmt.Fprintf(w, "removed %s and %s: apt trusts only the system's CAs again\n", snippet, bundle)
		return nil
	}
	hosts, caPEM, err := trustedHosts(cfg)
	var unread unreadableConfig
	if errors.As(err, &unread) && c.Bool("refresh") {
		err = nil // the bundle needs no hosts
	}
	if err != nil {
		return err
	}
	if c.Bool("refresh") {
		if _, err := os.Stat(snippet); err != nil {
			fmt.Fprintf(w, "%s is not there (warren apt-setup was not run): nothing to refresh\n", snippet)
			return nil
		}
		sys, err := systemCAs(c)
		if err != nil {
			return err
		}
		if err := writeBundle(bundle, sys, caPEM); err != nil {
			return err
		}
		fmt.Fprintf(w, "refreshed %s from %s and the site CA\n", bundle, sys)
		return nil
	}
	if len(hosts) == 0 {
		return errors.New("no https host to set up: https_intercept names none that the site CA may sign for (warren ca show)")
	}
	sys, err := systemCAs(c)
	if err != nil {
		return err
	}
	if err := writeBundle(bundle, sys, caPEM); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("// Written by warren apt-setup; warren apt-setup --undo removes it.\n")
	b.WriteString("// apt asks warren's helper which proxy to use for https as for http (warren\n")
	b.WriteString("// when it runs and intercepts the host, else DIRECT), and trusts warren's site\n")
	b.WriteString("// CA, beside the system's CAs, for these hosts only.\n")
	fmt.Fprintf(&b, "Acquire::https::Proxy-Auto-Detect %q;\n", c.String("helper"))
	for _, h := range hosts {
		fmt.Fprintf(&b, "Acquire::https::%s::CaInfo %q;\n", h, bundle)
	}
	if err := os.MkdirAll(filepath.Dir(snippet), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(snippet, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", snippet, err)
	}
	fmt.Fprintf(w, "apt trusts the site CA for %s (%s, %s); undo with: warren apt-setup --undo\n", strings.Join(hosts, ", "), snippet, bundle)
	return nil
}

// dnfRepoUndo removes the sslcacert lines an older warren dnf-setup
// --https put in the repo files of dir (it now sets dnf.conf's [main]:
// no repo file is edited).
func dnfRepoUndo(dir string) (int, error) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.repo"))
	changed := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return changed, err
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if out := withoutDnfMarked(lines); !slices.Equal(out, lines) {
			if err := writeLines(f, out); err != nil {
				return changed, err
			}
			changed++
		}
	}
	return changed, nil
}

// dnfHTTPSBundle writes the bundle dnf is told to trust (the system's
// CAs and the site CA) at bundle; dnfSetup names it in [main]
// (sslcacert), which every repository inherits unless it sets its own:
// the repo files stay as the distribution shipped them, metalink= and
// mirrorlist= ones with their mirrors included. dnf then trusts the site
// CA for every https host of every repository: no per-host trust as
// apt's, only the CA's name constraints confine it. Configuration warren
// cannot read stops it, as apt-setup stops: the hosts it would intercept
// are not known.
func dnfHTTPSBundle(c *cli.Context, cfg settings, bundle string) error {
	hosts, caPEM, err := trustedHosts(cfg)
	if err != nil {
		return err
	}
	sys, err := systemCAs(c)
	if err != nil {
		return err
	}
	if err := writeBundle(bundle, sys, caPEM); err != nil {
		return err
	}
	if n, err := dnfRepoUndo(c.String("repos-dir")); err != nil {
		return err
	} else if n > 0 {
		fmt.Fprintf(c.App.Writer, "removed the per-repo sslcacert of an older warren dnf-setup from %d repo files (dnf.conf's [main] names it now)\n", n)
	}
	fmt.Fprintf(c.App.Writer, "dnf trusts the site CA (%s, beside the system's CAs) for every https host of every repository (the CA may sign only for %s); intercepted now: %s, and the https mirrors of the trusted lists warren reads that the CA names\n",
		bundle, strings.Join(caHosts(caPEM), ", "), orNone(hosts))
	return nil
}

// caHosts are the hosts the site CA's certificate (PEM) may sign for.
func caHosts(certPEM []byte) []string {
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return nil
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil
	}
	return cert.PermittedDNSDomains
}

// dnfRefresh writes again the bundle dnf's config (dnfConf, its lines)
// names as sslcacert where dnf-setup --https put it (warren's marker),
// from the system's CAs now and the site CA: run when the system's CAs
// change.
func dnfRefresh(c *cli.Context, cfg settings, dnfConf string, lines []string) error {
	w := c.App.Writer
	bundle := dnfMarkedCACert(lines)
	if bundle == "" {
		fmt.Fprintf(w, "%s names no bundle of warren dnf-setup --https: nothing to refresh\n", dnfConf)
		return nil
	}
	_, caPEM, err := siteca.LoadCert(caDir(cfg))
	if err != nil {
		return fmt.Errorf("the site CA in %s: %w: warren ca init (or ca install) first", caDir(cfg), err)
	}
	sys, err := systemCAs(c)
	if err != nil {
		return err
	}
	if err := writeBundle(bundle, sys, caPEM); err != nil {
		return err
	}
	fmt.Fprintf(w, "refreshed %s (named in %s) from %s and the site CA\n", bundle, dnfConf, sys)
	return nil
}
