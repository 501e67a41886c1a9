package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/warren-cache/warren/cachestore"
)

// The CLI commands that read and manage the cache and the daemon's state
// through the admin API, and how they print it.

func adminCommands() []*cli.Command {
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "print JSON for scripts"}
	// What these commands use: the config file (for the cache and a hub's
	// lists) and the cache directory. The daemon's other settings are
	// still read (a flag given by habit, WARREN_* in the environment),
	// but their flags are not listed: serve has them.
	flags := append(commandFlags("config", "cache-dir"), jsonFlag)
	usageErr := func(_ *cli.Context, err error, _ bool) error { return usageError{err} }
	withCfg := func(f func(c *cli.Context, cfg settings) error) cli.ActionFunc {
		return func(c *cli.Context) error {
			cfg, err := loadConfig(c)
			if err != nil {
				return usageError{err}
			}
			return f(c, cfg)
		}
	}
	return []*cli.Command{
		{Name: "status", Usage: "what the daemon has done: requests, hits, bytes by source, peers", Flags: flags, OnUsageError: usageErr,
			Action: withCfg(func(c *cli.Context, cfg settings) error { return printStatus(c, cfg) })},
		{Name: "peers", Usage: "the peers this daemon knows", Flags: flags, OnUsageError: usageErr,
			Action: withCfg(func(c *cli.Context, cfg settings) error { return printPeers(c, cfg) })},
		preloadCommands(flags, usageErr, withCfg),
		replicateCommands(flags, usageErr, withCfg),
		// The CA's commands print no JSON; init reads https_intercept.
		caCommands(commandFlags("config", "cache-dir"), usageErr, withCfg),
		{Name: "cache", Usage: "inspect and manage the cache", Subcommands: []*cli.Command{
			{Name: "ls", Usage: "list blobs", OnUsageError: usageErr,
				Flags:  append(slices.Clip(flags), &cli.StringFlag{Name: "sort", Value: "last-used", Usage: "size, hits, last-used, added or digest"}),
				Action: withCfg(func(c *cli.Context, cfg settings) error { return printLs(c, cfg) })},
			{Name: "stat", Usage: "cache use against its limits", Flags: flags, OnUsageError: usageErr,
				Action: withCfg(func(c *cli.Context, cfg settings) error {
					return printJSONOrTable(c, cfg, http.MethodGet, "/cache/stat")
				})},
			{Name: "show", Usage: "one blob, by digest or URL", ArgsUsage: "<digest|url>", Flags: flags, OnUsageError: usageErr,
				Action: withCfg(func(c *cli.Context, cfg settings) error {
					q, err := oneArg(c)
					if err != nil {
						return err
					}
					return printJSONOrTable(c, cfg, http.MethodGet, "/cache/show?q="+q)
				})},
			{Name: "rm", Usage: "remove one blob, by digest or URL", ArgsUsage: "<digest|url>", Flags: flags, OnUsageError: usageErr,
				Action: withCfg(func(c *cli.Context, cfg settings) error {
					q, err := oneArg(c)
					if err != nil {
						return err
					}
					return printJSONOrTable(c, cfg, http.MethodPost, "/cache/rm?q="+q)
				})},
			{Name: "gc", Usage: "evict now, to the limits", Flags: flags, OnUsageError: usageErr,
				Action: withCfg(func(c *cli.Context, cfg settings) error {
					return printJSONOrTable(c, cfg, http.MethodPost, "/cache/gc")
				})},
			{Name: "verify", Usage: "rehash every blob; report and remove the bad", Flags: flags, OnUsageError: usageErr,
				Action: withCfg(func(c *cli.Context, cfg settings) error { return runVerify(c, cfg) })},
		}},
	}
}

// oneArg is the digest or URL a command takes. Flags must come first:
// urfave/cli stops reading flags at the first argument.
func oneArg(c *cli.Context) (string, error) {
	if c.NArg() != 1 {
		return "", usageError{fmt.Errorf("%s takes one digest (or its first digits) or URL, after the flags: warren cache %s [--cache-dir DIR] <digest|url> (got %q)",
			c.Command.Name, c.Command.Name, c.Args().Slice())}
	}
	return url.QueryEscape(c.Args().First()), nil
}

func printJSONOrTable(c *cli.Context, cfg settings, method, path string) error {
	var v map[string]any
	if err := call(c.Context, cfg, method, path, &v); err != nil {
		return err
	}
	if c.Bool("json") {
		return json.NewEncoder(c.App.Writer).Encode(v)
	}
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%v\n", k, human(k, v[k]))
	}
	return tw.Flush()
}

// human prints byte counts as sizes.
func human(key string, v any) any {
	if f, ok := v.(float64); ok && (strings.Contains(key, "bytes") || key == "size" || key == "cache_max" || key == "free_for_cache") {
		return humanSize(int64(f))
	}
	if f, ok := v.(float64); ok {
		return int64(f)
	}
	return v
}

func humanSize(n int64) string { return humanize.Bytes(uint64(max(n, 0))) }

func printStatus(c *cli.Context, cfg settings) error {
	return printJSONOrTable(c, cfg, http.MethodGet, "/status")
}

func printPeers(c *cli.Context, cfg settings) error {
	return printRows(c, cfg, "/peers", "ID\tADDRESS\tPRIORITY\tROLE\tREADY\tFREE\tLAST SEEN\tLINK", func(p peerRow) string {
		seen := time.Since(p.LastSeen).Round(time.Second).String() + " ago"
		if p.LastSeen.IsZero() {
			seen = "never"
		}
		if p.Role == "hub" {
			// A hub: reachable or not, and what came from it.
			state := fmt.Sprintf("%v\t%s received", p.Ready, humanSize(p.Received))
			if p.Error != "" && !p.Ready {
				seen += " (" + p.Error + ")"
			}
			return fmt.Sprintf("%s\t%s\t-\thub\t%s\t%s\t%s", p.ID, p.Address, state, seen, p.Link)
		}
		return fmt.Sprintf("%s\t%s\t%d\t%s\t%v\t%s\t%s\t%s", p.ID, p.Address, p.Priority, p.Role, p.Ready, humanSize(int64(p.FreeBytes)), seen, p.Link)
	})
}

func printLs(c *cli.Context, cfg settings) error {
	return printRows(c, cfg, "/cache?sort="+url.QueryEscape(c.String("sort")), "DIGEST\tSIZE\tLAST USED\tHITS\tURL", func(r blobRow) string {
		u := ""
		if len(r.URLs) > 0 {
			u = r.URLs[0]
			if len(r.URLs) > 1 {
				u += fmt.Sprintf(" (+%d)", len(r.URLs)-1)
			}
		}
		d := r.Digest
		if len(d) > 19 {
			d = d[:19] // algo:12 hex digits, as git shortens: cache show takes it
		}
		return fmt.Sprintf("%s\t%s\t%s\t%d\t%s", d, humanSize(r.Size), r.LastUsed.Local().Format("2006-01-02 15:04"), r.Hits, u)
	})
}

// printRows gets a list from the admin API and prints it as JSON (--json)
// or as a table with header, one line per row.
func printRows[T any](c *cli.Context, cfg settings, path, header string, line func(T) string) error {
	var rows []T
	if err := call(c.Context, cfg, http.MethodGet, path, &rows); err != nil {
		return err
	}
	if c.Bool("json") {
		return json.NewEncoder(c.App.Writer).Encode(rows)
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, line(r))
	}
	return tw.Flush()
}

// runVerify shows progress on a terminal while the blobs are rehashed.
func runVerify(c *cli.Context, cfg settings) error {
	resp, err := adminCall(c.Context, cfg, http.MethodPost, "/cache/verify")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	tty := isTerminal(os.Stderr)
	// A decoder, not a line scanner: the report of a badly damaged cache
	// lists every bad blob on one line, longer than any line buffer.
	dec := json.NewDecoder(resp.Body)
	for {
		var ev struct {
			Done, Total int
			Error       string
			Report      *cachestore.VerifyReport
		}
		if err := dec.Decode(&ev); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return fmt.Errorf("verify: reading the report: %w", err)
		}
		switch {
		case ev.Error != "":
			return errors.New(ev.Error)
		case ev.Report != nil:
			if tty {
				fmt.Fprintln(os.Stderr)
			}
			if c.Bool("json") {
				if err := json.NewEncoder(c.App.Writer).Encode(ev.Report); err != nil || len(ev.Report.Bad) == 0 {
					return err
				}
				return fmt.Errorf("verify: %d bad blobs removed", len(ev.Report.Bad))
			}
			if len(ev.Report.Bad) == 0 {
				fmt.Fprintf(c.App.Writer, "verified %d blobs; all good\n", ev.Report.Checked)
				return nil
			}
			fmt.Fprintf(c.App.Writer, "verified %d blobs; %d bad, removed:\n", ev.Report.Checked, len(ev.Report.Bad))
			for _, b := range ev.Report.Bad {
				fmt.Fprintf(c.App.Writer, "  bad: %s\n", b)
			}
			return fmt.Errorf("verify: %d blobs did not match their digest and were removed (a disk or memory fault?); they are fetched again when asked for", len(ev.Report.Bad))
		case tty:
			fmt.Fprintf(os.Stderr, "\rverifying %d/%d", ev.Done, ev.Total)
		}
	}
	return errors.New("verify: the daemon ended the report early")
}

// isTerminal says whether f is a terminal: a character device that
// answers a terminal's ioctl (/dev/null is a character device too).
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
