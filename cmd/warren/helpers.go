package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
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
				&cli.StringFlag{Name: "system-cas", Value: defaultSystemCAs, Usage: "the system's CAs, copied into the bundle"},
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
				&cli.StringFlag{Name: "dnf-conf", Usage: "dnf's config (default /etc/dnf/dnf.conf, else /etc/yum.conf)"},
				&cli.BoolFlag{Name: "https", Usage: "also set sslcacert (the system's CAs and the site CA) in dnf.conf's [main], which every repository inherits"},
				&cli.StringFlag{Name: "repos-dir", Value: "/etc/yum.repos.d", Usage: "dnf's repository files (what an older dnf-setup --https added there is taken out)"},
				&cli.StringFlag{Name: "bundle", Value: defaultBundle, Usage: "the CA bundle written: the system's CAs and the site CA"},
				&cli.StringFlag{Name: "system-cas", Value: defaultSystemCAs, Usage: "the system's CAs, copied into the bundle"}),
			Action: func(c *cli.Context) error {
				cfg, err := loadConfig(c)
				if err != nil {
					return usageError{err}
				}
				cacert := ""
				switch {
				case c.Bool("undo"):
					if _, err := dnfRepoUndo(c.String("repos-dir")); err != nil {
						return err
					}
				case c.Bool("https"):
					if cacert, err = dnfHTTPSBundle(c, cfg); err != nil {
						return err
					}
				}
				path := c.String("dnf-conf")
				if path == "" {
					path = "/etc/dnf/dnf.conf"
					if _, err := os.Stat(path); err != nil {
						if _, yerr := os.Stat("/etc/yum.conf"); yerr == nil {
							path = "/etc/yum.conf"
						}
					}
				}
				msg, err := dnfSetup(path, "http://127.0.0.1:"+listenPort(cfg.Listen), cacert, c.Bool("undo"))
				if err != nil {
					return err
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

// dnfSetup puts "proxy=URL" in the [main] section of dnf's config, or with
// undo takes out what it put there. Running it twice changes nothing.
func dnfSetup(path, proxy, cacert string, undo bool) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	var lines []string
	if len(b) > 0 {
		lines = strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	}
	kept := withoutDnfMarked(lines)
	if undo {
		if len(kept) == len(lines) {
			return fmt.Sprintf("%s has no proxy line from warren; nothing to undo", path), nil
		}
		return fmt.Sprintf("removed warren's proxy line from %s", path), writeLines(path, kept)
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
			return "", fmt.Errorf("%s already sets a proxy (%q); take it out first, warren does not override it", path, t)
		case k == "sslcacert" && cacert != "" && section == "[main]":
			return "", fmt.Errorf("%s already sets sslcacert in [main] (%q); take it out first, or add the site CA to that file", path, t)
		}
	}
	add := []string{dnfMarker, "proxy=" + proxy}
	if cacert != "" {
		add = append(add, dnfMarker, "sslcacert="+cacert)
	}
	out, inserted := []string{}, false
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
	if err := writeLines(path, out); err != nil {
		return "", err
	}
	return fmt.Sprintf("dnf now uses %s (in %s); undo with: warren dnf-setup --undo", proxy, path), nil
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
