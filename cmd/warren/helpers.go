package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/warren-cache/warren/mdns"
)

// Commands the packages install around the daemon: apt's proxy auto-detect
// helper and dnf's proxy line.

func helperCommands() []*cli.Command {
	usageErr := func(_ *cli.Context, err error, _ bool) error { return usageError{err} }
	return []*cli.Command{
		{
			Name:      "apt-proxy-detect",
			Usage:     "print the proxy apt should use for URI: the local warren, a warren on the LAN, or DIRECT",
			ArgsUsage: "<URI>",
			Flags: append(commandFlags("config", "listen", "discovery", "peer", "interfaces"),
				&cli.DurationFlag{Name: "timeout", Value: 500 * time.Millisecond, Usage: "how long a warren may take to answer"}),
			OnUsageError: usageErr,
			Action: func(c *cli.Context) error {
				cfg, err := loadConfig(c)
				if err != nil {
					return usageError{err}
				}
				fmt.Fprintln(c.App.Writer, aptProxy(c.Context, cfg, c.Args().First(), c.Duration("timeout")))
				return nil
			},
		},
		{
			Name:         "apt-setup",
			Usage:        "make apt trust the site CA for the intercepted https hosts and ask warren's helper for their proxy (--undo takes it out again)",
			OnUsageError: usageErr,
			Flags: append(commandFlags("config", "cache-dir", "listen", "https-intercept"),
				&cli.BoolFlag{Name: "undo", Usage: "remove what apt-setup wrote"},
				&cli.BoolFlag{Name: "refresh", Usage: "rewrite only the CA bundle (after the system's CAs changed), if apt-setup was run"},
				&cli.StringFlag{Name: "apt-conf-dir", Value: defaultAptDir, Usage: "apt's configuration directory"},
				&cli.StringFlag{Name: "bundle", Value: defaultBundle, Usage: "the CA bundle written: the system's CAs and the site CA"},
				&cli.StringFlag{Name: "system-cas", Usage: "the system's CAs, copied into the bundle (default: the first there is of " + strings.Join(systemCAFiles, ", ") + ")"},
				&cli.StringFlag{Name: "helper", Value: defaultHelper, Usage: "apt's proxy auto-detect helper"}),
			Action: func(c *cli.Context) error {
				cfg, err := loadConfig(c)
				if err != nil {
					return usageError{err}
				}
				return aptSetup(c, cfg)
			},
		},
		{
			Name:         "dnf-setup",
			Usage:        "add this warren as dnf's proxy (--https: and trust the site CA, beside the system's CAs, in every repository; --undo takes it out again); the repo files stay as shipped",
			OnUsageError: usageErr,
			Flags: append(commandFlags("config", "cache-dir", "listen", "https-intercept"),
				&cli.BoolFlag{Name: "undo", Usage: "remove the lines warren added"},
				&cli.BoolFlag{Name: "refresh", Usage: "write the bundle dnf.conf names again, from the system's CAs now and the site CA (run when the system's CAs change: update-ca-trust)"},
				&cli.StringFlag{Name: "dnf-conf", Usage: "dnf's config (default /etc/dnf/dnf.conf, else /etc/yum.conf)"},
				&cli.BoolFlag{Name: "https", Usage: "also set sslcacert (the system's CAs and the site CA) in dnf.conf's [main], which every repository inherits"},
				&cli.StringFlag{Name: "repos-dir", Value: "/etc/yum.repos.d", Usage: "dnf's repository files (what an older dnf-setup --https added there is taken out)"},
				&cli.StringFlag{Name: "bundle", Value: defaultBundle, Usage: "the CA bundle written: the system's CAs and the site CA"},
				&cli.StringFlag{Name: "system-cas", Usage: "the system's CAs, copied into the bundle (default: the first there is of " + strings.Join(systemCAFiles, ", ") + ")"}),
			Action: func(c *cli.Context) error {
				cfg, err := loadConfig(c)
				if err != nil {
					return usageError{err}
				}
				// dnf's config is read and its change planned before
				// anything is written: one warren cannot read or must
				// not change leaves every file as it was.
				path, err := dnfConfPath(c.String("dnf-conf"))
				if err != nil {
					return err
				}
				lines, err := readDnfConf(path)
				if err != nil {
					return err
				}
				if c.Bool("refresh") {
					return dnfRefresh(c, cfg, path, lines)
				}
				cacert := ""
				if c.Bool("https") && !c.Bool("undo") {
					cacert = c.String("bundle")
				}
				out, msg, err := dnfEdit(path, lines, "http://127.0.0.1:"+listenPort(cfg.Listen), cacert, c.Bool("undo"))
				if err != nil {
					return err
				}
				switch {
				case c.Bool("undo"):
					if _, err := dnfRepoUndo(c.String("repos-dir")); err != nil {
						return err
					}
				case cacert != "":
					if err := dnfHTTPSBundle(c, cfg, cacert); err != nil {
						return err
					}
				}
				if out != nil {
					if err := writeLines(path, out); err != nil {
						return err
					}
				}
				fmt.Fprintln(c.App.Writer, msg)
				return nil
			},
		},
	}
}

func listenPort(listen string) string {
	_, port, err := net.SplitHostPort(listen)
	if err != nil || port == "" || port == "0" {
		return "3142"
	}
	return port
}

// aptProxy answers for one URI. An https URI goes through the local
// warren when it intercepts that host (it caches what is inside); any
// other is DIRECT: a tunnel would cache nothing.
func aptProxy(ctx context.Context, cfg settings, uri string, timeout time.Duration) string {
	local := "http://127.0.0.1:" + listenPort(cfg.Listen)
	if strings.HasPrefix(uri, "https://") {
		u, err := url.Parse(uri)
		if err == nil && slices.Contains(interceptedBy(ctx, local, timeout), strings.ToLower(u.Hostname())) {
			return local
		}
		return "DIRECT"
	}
	if answers(ctx, local, timeout) {
		return local
	}
	for _, p := range cfg.peers {
		if u := "http://" + p.String(); answers(ctx, u, timeout) {
			return u
		}
	}
	if cfg.Discovery == "mdns" || cfg.Discovery == "both" {
		if u := bestOnLAN(ctx, cfg, timeout); u != "" && answers(ctx, u, timeout) {
			return u
		}
	}
	return "DIRECT"
}

// interceptedBy is the https hosts the warren at base answers itself
// (none when it does not answer within timeout).
func interceptedBy(ctx context.Context, base string, timeout time.Duration) []string {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/_warren/stats", nil)
	if err != nil {
		return nil
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var st struct {
		HTTPSIntercept string `json:"https_intercept"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st) != nil || st.HTTPSIntercept == "" {
		return nil
	}
	return strings.Split(st.HTTPSIntercept, ",")
}

// answers reports whether a warren answers at base within timeout.
func answers(ctx context.Context, base string, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/_warren/stats", nil)
	if err != nil {
		return false
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// bestOnLAN browses mDNS briefly for warrens and returns the one with the
// highest priority that serves (not passive).
func bestOnLAN(ctx context.Context, cfg settings, wait time.Duration) string {
	ctx, cancel := context.WithTimeout(ctx, 2*wait)
	defer cancel()
	var best mdns.Found
	found := false
	mdns.Browse(ctx, mdns.Config{}, func(f mdns.Found) {
		if !f.Passive && (!found || f.Priority > best.Priority) {
			best, found = f, true
		}
	})
	a, ok := reachable(best.Addrs)
	if !found || !ok {
		return ""
	}
	u := url.URL{Scheme: "http", Host: netip.AddrPortFrom(a, best.Port).String()} // [v6]:port, a zone as %25
	return u.String()
}

// dnfMarker is a line of its own before each line warren adds to dnf's
// files: dnf reads no comment after a value (it is part of the value).
const dnfMarker = "# added by warren dnf-setup (the next line)"

// dnfLegacyMarker ended the lines earlier versions added (which dnf could
// not read); undo and setup take them out too.
const dnfLegacyMarker = " # added by warren dnf-setup"

// withoutDnfMarked is lines without warren's: each marker with the line
// after it, and legacy marked lines.
func withoutDnfMarked(lines []string) []string {
	var kept []string
	for i := 0; i < len(lines); i++ {
		switch {
		case lines[i] == dnfMarker:
			i++ // and the line it marks
		case strings.HasSuffix(lines[i], dnfLegacyMarker):
		default:
			kept = append(kept, lines[i])
		}
	}
	return kept
}

// dnfMarkedCACert is the sslcacert warren put in dnf's config, "" when
// none.
func dnfMarkedCACert(lines []string) string {
	for i := 0; i+1 < len(lines); i++ {
		if lines[i] == dnfMarker {
			if v, ok := strings.CutPrefix(strings.TrimSpace(lines[i+1]), "sslcacert="); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return ""
}

// dnfConfFiles are where dnf's config is looked for when --dnf-conf
// names none: dnf's, else yum's.
var dnfConfFiles = []string{"/etc/dnf/dnf.conf", "/etc/yum.conf"}

// dnfConfPath is the --dnf-conf given, else the first of dnfConfFiles
// there is; with none, an error that names them and the flag.
func dnfConfPath(given string) (string, error) {
	if given != "" {
		return given, nil
	}
	for _, p := range dnfConfFiles {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			return p, nil // there (a file warren cannot read: its error names it)
		}
	}
	return "", fmt.Errorf("dnf's config is in none of %s: is dnf installed? name its config with --dnf-conf", strings.Join(dnfConfFiles, ", "))
}

// readDnfConf is the lines of dnf's config at path. One that is not there
// or that warren cannot read is an error saying what to do: dnf-setup
// never writes a config of its own (dnf would read warren's lines and
// none of the distribution's).
func readDnfConf(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("dnf's config %s is not there: is dnf installed? name its config with --dnf-conf", path)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("read dnf's config %s: %w: run warren dnf-setup as root", path, err)
	case err != nil:
		return nil, fmt.Errorf("read dnf's config %s: %w: mend it, or name dnf's config with --dnf-conf", path, err)
	}
	if len(b) == 0 {
		return nil, nil
	}
	return strings.Split(strings.TrimRight(string(b), "\n"), "\n"), nil
}

// dnfSetup puts "proxy=URL" in the [main] section of dnf's config, or with
// undo takes out what it put there. Running it twice changes nothing.
func dnfSetup(path, proxy, cacert string, undo bool) (string, error) {
	lines, err := readDnfConf(path)
	if err != nil {
		return "", err
	}
	out, msg, err := dnfEdit(path, lines, proxy, cacert, undo)
	if err != nil || out == nil {
		return msg, err
	}
	return msg, writeLines(path, out)
}

// dnfEdit is lines, dnf's config at path, with warren's proxy line (and
// sslcacert line when cacert is given) in [main], or with undo without
// them, and what to tell the user; out is nil when nothing changes. It
// writes nothing: an error leaves every file as it was.
func dnfEdit(path string, lines []string, proxy, cacert string, undo bool) (out []string, msg string, err error) {
	kept := withoutDnfMarked(lines)
	if undo {
		if len(kept) == len(lines) {
			return nil, fmt.Sprintf("%s has no proxy line from warren; nothing to undo", path), nil
		}
		return kept, fmt.Sprintf("removed warren's proxy line from %s", path), nil
	}
	section := ""
	for _, l := range kept {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "[") {
			section = t
		}
		k, _, _ := strings.Cut(t, "=")
		switch k = strings.TrimSpace(k); {
		case k == "proxy":
			return nil, "", fmt.Errorf("%s already sets a proxy (%q); take it out first, warren does not override it", path, t)
		case k == "sslcacert" && cacert != "" && section == "[main]":
			return nil, "", fmt.Errorf("%s already sets sslcacert in [main] (%q); take it out first, or add the site CA to that file", path, t)
		}
	}
	add := []string{dnfMarker, "proxy=" + proxy}
	if cacert != "" {
		add = append(add, dnfMarker, "sslcacert="+cacert)
	}
	inserted := false
	for _, l := range kept {
		out = append(out, l)
		if strings.TrimSpace(l) == "[main]" && !inserted {
			out = append(out, add...)
			inserted = true
		}
	}
	if !inserted {
		out = append(append([]string{"[main]"}, add...), out...)
	}
	return out, fmt.Sprintf("dnf now uses %s (in %s); undo with: warren dnf-setup --undo --dnf-conf %s", proxy, path, path), nil
}

func writeLines(path string, lines []string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := path + ".warren-tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
