package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/urfave/cli/v2"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/proxy"
)

// The admin API: what `warren status`, `peers` and `cache ...` ask. The
// daemon serves it on a unix socket in the cache directory (mode 0660:
// root and the warren group); with no daemon running, the CLI opens the
// cache itself and calls the same handler in process.

const adminSocket = "admin.sock"

type adminAPI struct {
	store *cachestore.Store
	d     *daemon // nil when the CLI runs it without a daemon
}

// blobRow is the index's BlobInfo with its digest spelt out and the URLs
// that name it.
type blobRow struct {
	cachestore.BlobInfo
	Digest string   `json:"digest"`
	URLs   []string `json:"urls"`
}

type peerRow struct {
	ID        string    `json:"id"`
	Address   string    `json:"address"`
	Priority  int32     `json:"priority"`
	Role      string    `json:"role"`
	Ready     bool      `json:"ready"`
	FreeBytes uint64    `json:"free_bytes"`
	LastSeen  time.Time `json:"last_seen"`
}

func (a *adminAPI) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", a.status)
	mux.HandleFunc("GET /peers", a.peers)
	mux.HandleFunc("GET /cache", a.ls)
	mux.HandleFunc("GET /cache/stat", a.stat)
	mux.HandleFunc("GET /cache/show", a.show)
	mux.HandleFunc("POST /cache/rm", a.rm)
	mux.HandleFunc("POST /cache/gc", a.gc)
	mux.HandleFunc("POST /cache/verify", a.verify)
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func (a *adminAPI) status(w http.ResponseWriter, r *http.Request) {
	used, blobs, _ := a.store.Usage()
	out := map[string]any{"running": a.d != nil, "cache_dir": a.store.Dir(), "cache_bytes": used, "cache_max": a.store.MaxBytes(), "blobs": blobs}
	if a.d != nil {
		for k, v := range a.d.proxy.Snapshot() {
			out[k] = v
		}
		for k, v := range a.d.status().Figures() {
			out[k] = v
		}
		out["uptime"] = time.Since(a.d.started).Round(time.Second).String()
		out["bytes_saved"] = out["bytes_cache"].(int64) + out["bytes_peers"].(int64)
	}
	writeJSON(w, out)
}

func (a *adminAPI) peers(w http.ResponseWriter, r *http.Request) {
	rows := []peerRow{}
	if a.d != nil && a.d.node != nil {
		for _, p := range a.d.node.Table().Peers() {
			role := "peer"
			if p.Passive {
				role = "passive"
			}
			rows = append(rows, peerRow{ID: p.ID.String(), Address: p.AddrPort().String(), Priority: p.Priority, Role: role,
				Ready: !p.Passive && !time.Now().Before(p.BadUntil), FreeBytes: p.FreeBytes, LastSeen: p.LastSeen})
		}
	}
	writeJSON(w, rows)
}

func (a *adminAPI) rows() ([]blobRow, error) {
	infos, err := a.store.Blobs()
	if err != nil {
		return nil, err
	}
	urls, err := a.store.URLs()
	if err != nil {
		return nil, err
	}
	rows := make([]blobRow, 0, len(infos))
	for _, bi := range infos {
		u := urls[bi.Digest]
		slices.Sort(u)
		rows = append(rows, blobRow{BlobInfo: bi, Digest: bi.Digest.String(), URLs: u})
	}
	return rows, nil
}

func (a *adminAPI) ls(w http.ResponseWriter, r *http.Request) {
	rows, err := a.rows()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	by := map[string]func(a, b blobRow) int{
		"size":      func(a, b blobRow) int { return cmpDesc(a.Size, b.Size) },
		"hits":      func(a, b blobRow) int { return cmpDesc(a.Hits, b.Hits) },
		"last-used": func(a, b blobRow) int { return b.LastUsed.Compare(a.LastUsed) },
		"added":     func(a, b blobRow) int { return b.Added.Compare(a.Added) },
		"digest":    func(a, b blobRow) int { return strings.Compare(a.Digest, b.Digest) },
	}
	sort := r.URL.Query().Get("sort")
	if sort == "" {
		sort = "last-used"
	}
	f, ok := by[sort]
	if !ok {
		http.Error(w, fmt.Sprintf("sort %q: want size, hits, last-used, added or digest", sort), http.StatusBadRequest)
		return
	}
	slices.SortStableFunc(rows, f)
	writeJSON(w, rows)
}

func cmpDesc(a, b int64) int {
	switch {
	case a > b:
		return -1
	case a < b:
		return 1
	}
	return 0
}

func (a *adminAPI) stat(w http.ResponseWriter, r *http.Request) {
	used, n, err := a.store.Usage()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	known, err := proxy.CountKnown(a.store)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, map[string]any{"cache_dir": a.store.Dir(), "blobs": n, "bytes": used, "cache_max": a.store.MaxBytes(),
		"free_for_cache": a.store.Free(), "evictions": a.store.Evictions(),
		"known_artifacts": known[proxy.EcoDebian] + known[proxy.EcoRPM] + known[proxy.EcoChocolatey],
		"known_debian":    known[proxy.EcoDebian], "known_rpm": known[proxy.EcoRPM], "known_chocolatey": known[proxy.EcoChocolatey]})
}

// resolve turns "sha256:<hex>" or a URL into the blob's digest.
func (a *adminAPI) resolve(q string) (cachestore.Digest, error) {
	if q == "" {
		return cachestore.Digest{}, errors.New("give a digest (sha256:<hex>) or a URL")
	}
	if d, err := cachestore.ParseDigest(q); err == nil {
		return d, nil
	}
	key := proxy.CanonicalKey(q) // as apt or dnf would have asked for it
	if k, err := a.store.Known(key); err == nil {
		return k.Digest, nil
	}
	if c, err := a.store.Cached(key); err == nil {
		return c.Digest, nil
	}
	return cachestore.Digest{}, fmt.Errorf("%q is neither a digest nor a URL the cache knows", q)
}

// show looks up one blob by key, without a scan of the index: its record,
// the URL-cache entries that name it, and the URL it was asked by.
func (a *adminAPI) show(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query().Get("q")
	d, err := a.resolve(q)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	bi, err := a.store.Stat(d)
	if errors.Is(err, cachestore.ErrNotFound) {
		http.Error(w, fmt.Sprintf("%s is known but not stored", d), http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	urls, err := a.store.CachedURLs(d)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if strings.Contains(q, "://") { // asked by URL: that one names it too
		if key := proxy.CanonicalKey(q); !slices.Contains(urls, key) {
			urls = append(urls, key)
		}
	}
	slices.Sort(urls)
	writeJSON(w, blobRow{BlobInfo: bi, Digest: d.String(), URLs: urls})
}

func (a *adminAPI) rm(w http.ResponseWriter, r *http.Request) {
	d, err := a.resolve(r.URL.Query().Get("q"))
	if err == nil {
		err = a.store.Remove(d)
	}
	switch {
	case errors.Is(err, cachestore.ErrInUse):
		http.Error(w, err.Error(), http.StatusConflict)
	case err != nil:
		http.Error(w, err.Error(), http.StatusNotFound)
	default:
		writeJSON(w, map[string]string{"removed": d.String()})
	}
}

func (a *adminAPI) gc(w http.ResponseWriter, r *http.Request) {
	rep, err := a.store.Evict()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, rep)
}

// verify streams one JSON line per progress step, then the report.
func (a *adminAPI) verify(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	flush := http.NewResponseController(w)
	rep, err := a.store.Verify(r.Context(), func(done, total int) {
		enc.Encode(map[string]int{"done": done, "total": total})
		flush.Flush()
	})
	if err != nil {
		enc.Encode(map[string]string{"error": err.Error()})
		return
	}
	enc.Encode(map[string]any{"report": rep})
}

// serveAdmin listens on the cache directory's admin socket until ctx ends.
func (d *daemon) serveAdmin(ctx context.Context) error {
	path := filepath.Join(d.cfg.CacheDir, adminSocket)
	os.Remove(path) // a stale socket from a crash
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("admin socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return fmt.Errorf("admin socket %s: %w", path, err)
	}
	srv := &http.Server{Handler: d.tracked((&adminAPI{store: d.store, d: d}).handler()), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin socket: %w", err)
	}
	os.Remove(path)
	return nil
}

// adminCall does one admin request: over the daemon's socket when it runs,
// else in process on the cache opened here.
// adminCall asks the running daemon over its socket, or with the daemon
// stopped, answers in process from the cache itself. ctx ends the call
// (and what it started: a verify stops when the CLI is interrupted).
func adminCall(ctx context.Context, cfg config, method, path string) (*http.Response, error) {
	sock := filepath.Join(cfg.CacheDir, adminSocket)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, "unix", sock)
	}}}
	req, _ := http.NewRequestWithContext(ctx, method, "http://warren"+path, nil)
	resp, err := hc.Do(req)
	if err == nil {
		return resp, nil
	}
	scfg, oerr := storeConfig(cfg, nil)
	if oerr != nil {
		return nil, oerr
	}
	store, oerr := cachestore.Open(scfg)
	if oerr != nil {
		if _, serr := os.Stat(sock); serr == nil {
			return nil, fmt.Errorf("the cache in %s is held by a running warren, but its admin socket %s does not answer (%v); are you root or in the warren group?", cfg.CacheDir, sock, err)
		}
		return nil, oerr
	}
	return inProcess(store, cfg.CacheDir, req)
}

// inProcess answers req from the admin API on a cache opened here, over
// an in-memory connection served by a real http.Server: the answer
// streams (verify's progress) exactly as over the daemon's socket. Closing
// the body stops the server and closes the cache.
func inProcess(store *cachestore.Store, dir string, req *http.Request) (*http.Response, error) {
	client, server := net.Pipe()
	srv := &http.Server{Handler: (&adminAPI{store: store}).handler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(&oneConn{conn: server, closed: make(chan struct{})})
	}()
	shut := func() error {
		srv.Close()
		<-served
		store.Close()
		return keepOwner(dir)
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) { return client, nil }}}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("admin request in process: %w", err), shut())
	}
	resp.Body = &closeAlso{ReadCloser: resp.Body, also: shut}
	return resp, nil
}

// oneConn is a listener that accepts one connection, then none until closed.
type oneConn struct {
	once   sync.Once
	conn   net.Conn
	closed chan struct{}
}

func (l *oneConn) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() { c = l.conn })
	if c != nil {
		return c, nil
	}
	<-l.closed
	return nil, net.ErrClosed
}

func (l *oneConn) Close() error {
	select {
	case <-l.closed:
	default:
		close(l.closed)
	}
	return nil
}

func (l *oneConn) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "in-process" }

// closeAlso runs also once the body is closed.
type closeAlso struct {
	io.ReadCloser
	also func() error
	once sync.Once
}

func (c *closeAlso) Close() error {
	err := c.ReadCloser.Close()
	c.once.Do(func() { err = errors.Join(err, c.also()) })
	return err
}

// keepOwner gives back to the cache directory's owner what a root CLI just
// created or changed in it: else the daemon (user warren) could not open
// its own index afterwards.
func keepOwner(dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok || sys.Uid == 0 {
		return nil
	}
	return filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if err := os.Lchown(p, int(sys.Uid), int(sys.Gid)); err != nil {
			return fmt.Errorf("give %s back to the cache's owner: %w", p, err)
		}
		return nil
	})
}

func adminCommands() []*cli.Command {
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "print JSON for scripts"}
	flags := append(settingFlags(), jsonFlag)
	usageErr := func(_ *cli.Context, err error, _ bool) error { return usageError{err} }
	withCfg := func(f func(c *cli.Context, cfg config) error) cli.ActionFunc {
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
			Action: withCfg(func(c *cli.Context, cfg config) error { return printStatus(c, cfg) })},
		{Name: "peers", Usage: "the peers this daemon knows", Flags: flags, OnUsageError: usageErr,
			Action: withCfg(func(c *cli.Context, cfg config) error { return printPeers(c, cfg) })},
		{Name: "cache", Usage: "inspect and manage the cache", Subcommands: []*cli.Command{
			{Name: "ls", Usage: "list blobs", OnUsageError: usageErr,
				Flags:  append(flags, &cli.StringFlag{Name: "sort", Value: "last-used", Usage: "size, hits, last-used, added or digest"}),
				Action: withCfg(func(c *cli.Context, cfg config) error { return printLs(c, cfg) })},
			{Name: "stat", Usage: "cache use against its limits", Flags: flags, OnUsageError: usageErr,
				Action: withCfg(func(c *cli.Context, cfg config) error { return printJSONOrTable(c, cfg, http.MethodGet, "/cache/stat") })},
			{Name: "show", Usage: "one blob, by digest or URL", ArgsUsage: "<digest|url>", Flags: flags, OnUsageError: usageErr,
				Action: withCfg(func(c *cli.Context, cfg config) error {
					q, err := oneArg(c)
					if err != nil {
						return err
					}
					return printJSONOrTable(c, cfg, http.MethodGet, "/cache/show?q="+q)
				})},
			{Name: "rm", Usage: "remove one blob, by digest or URL", ArgsUsage: "<digest|url>", Flags: flags, OnUsageError: usageErr,
				Action: withCfg(func(c *cli.Context, cfg config) error {
					q, err := oneArg(c)
					if err != nil {
						return err
					}
					return printJSONOrTable(c, cfg, http.MethodPost, "/cache/rm?q="+q)
				})},
			{Name: "gc", Usage: "evict now, to the limits", Flags: flags, OnUsageError: usageErr,
				Action: withCfg(func(c *cli.Context, cfg config) error { return printJSONOrTable(c, cfg, http.MethodPost, "/cache/gc") })},
			{Name: "verify", Usage: "rehash every blob; report and remove the bad", Flags: flags, OnUsageError: usageErr,
				Action: withCfg(func(c *cli.Context, cfg config) error { return runVerify(c, cfg) })},
		}},
	}
}

// oneArg is the digest or URL a command takes. Flags must come first:
// urfave/cli stops reading flags at the first argument.
func oneArg(c *cli.Context) (string, error) {
	if c.NArg() != 1 {
		return "", usageError{fmt.Errorf("%s takes one digest or URL, after the flags: warren cache %s [--cache-dir DIR] <digest|url> (got %q)",
			c.Command.Name, c.Command.Name, c.Args().Slice())}
	}
	return url.QueryEscape(c.Args().First()), nil
}

// call runs an admin request and decodes its JSON, or returns its error text.
func call(ctx context.Context, cfg config, method, path string, v any) error {
	resp, err := adminCall(ctx, cfg, method, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return errors.New(strings.TrimSpace(string(b)))
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func printJSONOrTable(c *cli.Context, cfg config, method, path string) error {
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

func printStatus(c *cli.Context, cfg config) error {
	return printJSONOrTable(c, cfg, http.MethodGet, "/status")
}

func printPeers(c *cli.Context, cfg config) error {
	return printRows(c, cfg, "/peers", "ID\tADDRESS\tPRIORITY\tROLE\tREADY\tFREE\tLAST SEEN", func(p peerRow) string {
		return fmt.Sprintf("%s\t%s\t%d\t%s\t%v\t%s\t%s ago", p.ID, p.Address, p.Priority, p.Role, p.Ready, humanSize(int64(p.FreeBytes)), time.Since(p.LastSeen).Round(time.Second))
	})
}

func printLs(c *cli.Context, cfg config) error {
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
			d = d[:19] // algo:12 hex digits, as git shortens
		}
		return fmt.Sprintf("%s\t%s\t%s\t%d\t%s", d, humanSize(r.Size), r.LastUsed.Local().Format("2006-01-02 15:04"), r.Hits, u)
	})
}

// printRows gets a list from the admin API and prints it as JSON (--json)
// or as a table with header, one line per row.
func printRows[T any](c *cli.Context, cfg config, path, header string, line func(T) string) error {
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
func runVerify(c *cli.Context, cfg config) error {
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

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
