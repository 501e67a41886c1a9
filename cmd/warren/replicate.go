package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/hub"
	"github.com/warren-cache/warren/hub/replicate"
)

// Replication, as the daemon runs it: a pull from each replicate_from hub
// every replicate_schedule and on demand (`warren replicate run`), one
// run at a time; cursors, the chain of hubs and the run log kept in the
// cache directory (replication.json).

type replicator struct {
	d      *daemon
	self   string
	http   *http.Client
	puller *replicate.Puller

	running sync.Mutex // held by the run in progress
	mu      sync.Mutex // guards state and totals
	state   hub.ReplicateState
	totals  replicateTotals
}

type replicateTotals struct {
	runs, failed, entries, blobs, bytes int64
}

func newReplicator(d *daemon) *replicator {
	st, err := hub.LoadReplicateState(d.cfg.CacheDir)
	if err != nil {
		d.log.Warn("replication state", slog.Any("err", err))
	}
	// Each pull is bounded by the fill engine's stall rule; a feed page
	// by this timeout.
	return &replicator{d: d, self: d.id.String(), state: st, puller: replicate.NewPuller(d.door, d.store, d.id.String(), d.log.With(slog.String("component", "replicate")), nil), http: &http.Client{Transport: &http.Transport{
		Proxy: nil, ResponseHeaderTimeout: 60 * time.Second, IdleConnTimeout: 90 * time.Second, MaxIdleConnsPerHost: 4,
		// An https source is verified against the site CA and the system's roots.
		TLSClientConfig: d.trust, TLSHandshakeTimeout: 10 * time.Second,
	}}}
}

// chain is this hub's id and those of the hubs it pulls from.
func (r *replicator) chain() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state.Chain(r.self)
}

// errReplicateRunning refuses a second run while one is going.
var errReplicateRunning = errors.New("a replication run is already going (see warren replicate status)")

// run pulls from each source (only the one named by from, when set).
func (r *replicator) run(ctx context.Context, trigger, from string, progress func(name string, done, total int, bytes int64)) ([]hub.ReplicateRun, error) {
	if !r.running.TryLock() {
		return nil, errReplicateRunning
	}
	defer r.running.Unlock()
	cfg := r.d.cfg
	if len(cfg.ReplicateFrom) == 0 {
		return nil, errors.New("this hub has no replicate_from entries: add the hubs to pull from (name, url, token) to its config")
	}
	var runs []hub.ReplicateRun
	for _, src := range cfg.replicateFrom { // with token_file read
		if from != "" && src.Name != from {
			continue
		}
		r.mu.Lock()
		// replication.json keeps the URL without its password (a state file
		// is no place for one); one kept whole by an older warren is the
		// same hub.
		shown := hub.RedactURLs(src.URL)
		ss := r.state.Sources[src.Name]
		if ss == nil || ss.URL != shown && ss.URL != src.URL {
			ss = &hub.SourceState{} // a new hub under this name: from the start
			r.state.Sources[src.Name] = ss
		}
		ss.URL = shown
		from := *ss
		r.mu.Unlock()
		o := replicate.Options{
			Client:  hub.FeedClient{From: src, Self: r.self, HTTP: r.http},
			From:    from,
			Deletes: cfg.ReplicateDeletes,
			Package: r.d.preparePackage,
			Saved: func(st hub.SourceState) {
				r.mu.Lock()
				defer r.mu.Unlock()
				url := ss.URL
				*ss = st
				ss.URL = url
				if err := r.state.Save(cfg.CacheDir); err != nil {
					r.d.log.Warn("could not save the replication cursor", slog.Any("err", err))
				}
			},
		}
		if progress != nil {
			o.Progress = func(done, total int, bytes int64) { progress(src.Name, done, total, bytes) }
		}
		run := redactRun(r.puller.Run(ctx, o))
		run.Trigger = trigger
		if !run.OK() {
			r.d.log.Warn("replication run failed", slog.String("from", src.Name), slog.String("error", run.Error), slog.Any("failures", run.Failures))
		}
		r.mu.Lock()
		r.state.Runs = append(r.state.Runs, run)
		r.totals.runs++
		if !run.OK() {
			r.totals.failed++
		}
		r.totals.entries += int64(run.Entries)
		r.totals.blobs += int64(run.Blobs)
		r.totals.bytes += run.Bytes
		if err := r.state.Save(cfg.CacheDir); err != nil {
			r.d.log.Warn("could not save the replication log", slog.Any("err", err))
		}
		r.mu.Unlock()
		runs = append(runs, run)
	}
	if from != "" && len(runs) == 0 {
		return nil, fmt.Errorf("no replicate_from entry is named %q", from)
	}
	return runs, nil
}

// redactRun is a run as kept and shown: its errors come from many layers,
// and none may show a source's password.
func redactRun(run hub.ReplicateRun) hub.ReplicateRun {
	run.Error = hub.RedactURLs(run.Error)
	run.Failures = slices.Clone(run.Failures)
	for i, f := range run.Failures {
		run.Failures[i] = hub.RedactURLs(f)
	}
	return run
}

// runs is the run log, newest last.
func (r *replicator) runs() []hub.ReplicateRun {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.state.Runs)
}

// loop pulls every replicate_schedule, the first time at start.
func (r *replicator) loop(ctx context.Context) {
	every := r.d.cfg.ReplicateSchedule.Duration
	if every <= 0 || len(r.d.cfg.ReplicateFrom) == 0 {
		return
	}
	for {
		if _, err := r.run(ctx, "schedule", "", nil); err != nil && !errors.Is(err, errReplicateRunning) {
			r.d.log.Warn("scheduled replication failed", slog.Any("err", err))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// lastOf is each source's newest run.
func lastOf(runs []hub.ReplicateRun) map[string]hub.ReplicateRun {
	out := map[string]hub.ReplicateRun{}
	for _, run := range runs {
		out[run.From] = run
	}
	return out
}

// bytes is what replication runs pulled from other hubs since start.
func (r *replicator) bytes() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.totals.bytes
}

// collectors are the replication figures for /metrics.
func (r *replicator) collectors() []prometheus.Collector {
	total := func(f func(replicateTotals) int64) func() float64 {
		return func() float64 {
			r.mu.Lock()
			defer r.mu.Unlock()
			return float64(f(r.totals))
		}
	}
	cs := []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "warren_replication_runs_total", Help: "Replication runs since start (one per source hub)."},
			total(func(t replicateTotals) int64 { return t.runs })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "warren_replication_failed_runs_total", Help: "Replication runs with an error or failures."},
			total(func(t replicateTotals) int64 { return t.failed })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "warren_replication_entries_total", Help: "Change feed entries read by replication runs."},
			total(func(t replicateTotals) int64 { return t.entries })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "warren_replication_blobs_total", Help: "Blobs replication runs fetched (each verified before it was stored)."},
			total(func(t replicateTotals) int64 { return t.blobs })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "warren_replication_bytes_total", Help: "Bytes replication runs fetched."},
			total(func(t replicateTotals) int64 { return t.bytes })),
	}
	for _, src := range r.d.cfg.ReplicateFrom {
		name := src.Name
		last := func(f func(hub.ReplicateRun) float64) func() float64 {
			return func() float64 {
				run, ok := lastOf(r.runs())[name]
				if !ok {
					return 0
				}
				return f(run)
			}
		}
		labels := prometheus.Labels{"from": name}
		cs = append(cs,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "warren_replication_lag_entries", ConstLabels: labels,
				Help: "Change feed entries of the source not yet pulled, as of the last run (cursor distance)."},
				last(func(run hub.ReplicateRun) float64 { return float64(run.Last - min(run.Last, run.CursorOut)) })),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "warren_replication_source_newest_timestamp_seconds", ConstLabels: labels,
				Help: "When the source's newest change was made, as of the last run (Unix time; the lag's age is now minus this)."},
				last(func(run hub.ReplicateRun) float64 { return float64(max(run.LastAt.Unix(), 0)) })),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "warren_replication_last_end_timestamp_seconds", ConstLabels: labels,
				Help: "When the last run from this source ended (Unix time; 0: none yet)."},
				last(func(run hub.ReplicateRun) float64 { return float64(run.End.Unix()) })),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "warren_replication_last_run_ok", ConstLabels: labels,
				Help: "1 when the last run from this source did all it set out to, 0 when it failed (see warren replicate log)."},
				last(func(run hub.ReplicateRun) float64 {
					if run.OK() {
						return 1
					}
					return 0
				})),
		)
	}
	return cs
}

// replicateRun streams a run's progress as JSON lines, then the runs.
func (a *adminAPI) replicateRun(w http.ResponseWriter, r *http.Request) {
	if !a.replicating(w) {
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	flush := http.NewResponseController(w)
	runs, err := a.d.replicate.run(r.Context(), "demand", r.URL.Query().Get("from"), func(name string, done, total int, bytes int64) {
		enc.Encode(map[string]any{"from": name, "done": done, "total": total, "bytes": bytes})
		flush.Flush()
	})
	if err != nil {
		enc.Encode(map[string]string{"error": err.Error()})
		return
	}
	enc.Encode(map[string]any{"runs": runs})
}

// replicateStatus is each source's state, and the run log.
func (a *adminAPI) replicateStatus(w http.ResponseWriter, r *http.Request) {
	if !a.replicating(w) {
		return
	}
	rp := a.d.replicate
	rp.mu.Lock()
	sources := []replicaSourceStatus{}
	for _, src := range a.d.cfg.ReplicateFrom {
		st := replicaSourceStatus{Name: src.Name, URL: hub.RedactURLs(src.URL)}
		if ss := rp.state.Sources[src.Name]; ss != nil {
			st.Cursor, st.Chain = ss.Cursor, ss.Chain
		}
		sources = append(sources, st)
	}
	runs := slices.Clone(rp.state.Runs)
	rp.mu.Unlock()
	every := "on demand only"
	if d := a.d.cfg.ReplicateSchedule.Duration; d > 0 {
		every = "every " + d.String()
	}
	writeJSON(w, replicaStatus{Schedule: every, Deletes: a.d.cfg.ReplicateDeletes, Sources: sources, Runs: runs})
}

// replicating answers, when there is no replication here, why.
func (a *adminAPI) replicating(w http.ResponseWriter) bool {
	switch {
	case a.d == nil:
		http.Error(w, "replication runs in the warren daemon, which is not running on this cache: start it (systemctl start warren)", http.StatusConflict)
	case a.d.replicate == nil:
		http.Error(w, "replication is between hubs: this warren is not one (role hub, replicate_from)", http.StatusConflict)
	default:
		return true
	}
	return false
}

type replicaSourceStatus struct {
	Name   string   `json:"name"`
	URL    string   `json:"url"`
	Cursor uint64   `json:"cursor"`
	Chain  []string `json:"chain,omitempty"`
}

type replicaStatus struct {
	Schedule string                `json:"schedule"`
	Deletes  bool                  `json:"deletes"`
	Sources  []replicaSourceStatus `json:"sources"`
	Runs     []hub.ReplicateRun    `json:"runs"`
}

func replicateCommands(flags []cli.Flag, usageErr cli.OnUsageErrorFunc, withCfg func(func(*cli.Context, settings) error) cli.ActionFunc) *cli.Command {
	return &cli.Command{Name: "replicate", Usage: "pull from the hubs in replicate_from now, or see the runs", Subcommands: []*cli.Command{
		{Name: "run", Usage: "pull from every replicate_from hub now (--from NAME: that one)", OnUsageError: usageErr,
			Flags:  append(slices.Clip(flags), &cli.StringFlag{Name: "from", Usage: "the name of one replicate_from entry"}),
			Action: withCfg(runReplicate)},
		{Name: "status", Usage: "each source hub: cursor, last run, lag", Flags: flags, OnUsageError: usageErr,
			Action: withCfg(printReplicateStatus)},
		{Name: "log", Usage: "the last runs, successful ones included, with their failures", Flags: flags, OnUsageError: usageErr,
			Action: withCfg(printReplicateLog)},
	}}
}

func runReplicate(c *cli.Context, cfg settings) error {
	path := "/replicate/run"
	if from := c.String("from"); from != "" {
		path += "?from=" + from
	}
	resp, err := adminCall(c.Context, cfg, http.MethodPost, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return errors.New(strings.TrimSpace(string(b)))
	}
	tty := isTerminal(os.Stderr)
	dec := json.NewDecoder(resp.Body)
	for {
		var ev struct {
			From               string
			Done, Total, Bytes int64
			Error              string
			Runs               []hub.ReplicateRun
		}
		if err := dec.Decode(&ev); errors.Is(err, io.EOF) {
			return errors.New("replicate: the daemon ended the run's report early")
		} else if err != nil {
			return fmt.Errorf("replicate: reading the report: %w", err)
		}
		switch {
		case ev.Error != "":
			return errors.New(ev.Error)
		case ev.Runs != nil:
			if tty {
				fmt.Fprintln(os.Stderr)
			}
			if c.Bool("json") {
				return json.NewEncoder(c.App.Writer).Encode(ev.Runs)
			}
			failed := 0
			for _, run := range ev.Runs {
				printReplicateRun(c.App.Writer, run)
				if !run.OK() {
					failed++
				}
			}
			if failed > 0 {
				return fmt.Errorf("replicate: %d of %d runs failed (above)", failed, len(ev.Runs))
			}
			return nil
		case tty:
			fmt.Fprintf(os.Stderr, "\r%s %s: %d/%d entries, %s", bar(ev.Done, ev.Total), ev.From, ev.Done, ev.Total, humanize.Bytes(uint64(ev.Bytes)))
		}
	}
}

func printReplicateRun(w io.Writer, r hub.ReplicateRun) {
	fmt.Fprintf(w, "from %s: cursor %d -> %d (source at %d): %d entries, fetched %d blobs (%s), deleted %d, skipped %d, in %s\n",
		r.From, r.CursorIn, r.CursorOut, r.Last, r.Entries, r.Blobs, humanize.Bytes(uint64(r.Bytes)), r.Deleted, r.Skipped,
		r.End.Sub(r.Start).Round(time.Millisecond))
	if r.Error != "" {
		fmt.Fprintf(w, "  error: %s\n", r.Error)
	}
	for _, f := range r.Failures {
		fmt.Fprintf(w, "  failed: %s\n", f)
	}
}

func printReplicateStatus(c *cli.Context, cfg settings) error {
	var st replicaStatus
	if err := call(c.Context, cfg, http.MethodGet, "/replicate/status", &st); err != nil {
		return err
	}
	if c.Bool("json") {
		return json.NewEncoder(c.App.Writer).Encode(st)
	}
	fmt.Fprintf(c.App.Writer, "schedule: %s; deletions %s\n", st.Schedule, map[bool]string{true: "applied", false: "not applied (replicate_deletes: false)"}[st.Deletes])
	last := lastOf(st.Runs)
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tURL\tCURSOR\tLAG\tLAST RUN\tRESULT")
	for _, s := range st.Sources {
		run, ok := last[s.Name]
		when, result, lag := "never", "", "?"
		if ok {
			when = run.End.Local().Format("2006-01-02 15:04:05")
			result = "ok"
			if !run.OK() {
				result = "failed: " + firstFailure(run)
			}
			lag = fmt.Sprintf("%d entries", run.Last-min(run.Last, s.Cursor))
			if !run.LastAt.IsZero() && run.Last > s.Cursor {
				lag += ", newest " + humanize.Time(run.LastAt)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", s.Name, s.URL, s.Cursor, lag, when, result)
	}
	return tw.Flush()
}

func firstFailure(r hub.ReplicateRun) string {
	if r.Error != "" {
		return r.Error
	}
	if len(r.Failures) > 0 {
		return fmt.Sprintf("%s (and %d more)", r.Failures[0], len(r.Failures)-1)
	}
	return ""
}

func printReplicateLog(c *cli.Context, cfg settings) error {
	var st replicaStatus
	if err := call(c.Context, cfg, http.MethodGet, "/replicate/status", &st); err != nil {
		return err
	}
	if c.Bool("json") {
		return json.NewEncoder(c.App.Writer).Encode(st.Runs)
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "START\tEND\tFROM\tTRIGGER\tCURSOR\tENTRIES\tBLOBS\tBYTES\tRESULT")
	for _, r := range st.Runs {
		result := "ok"
		if !r.OK() {
			result = "failed: " + firstFailure(r)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d->%d\t%d\t%d\t%s\t%s\n", r.Start.Local().Format("2006-01-02 15:04:05"), r.End.Local().Format("15:04:05"),
			r.From, r.Trigger, r.CursorIn, r.CursorOut, r.Entries, r.Blobs, humanize.Bytes(uint64(r.Bytes)), result)
	}
	return tw.Flush()
}

// preparePackage readies a Chocolatey package a replication run holds: on
// an internalizing hub, its rewritten form and its installers.
func (d *daemon) preparePackage(ctx context.Context, dg cachestore.Digest) error {
	if d.feeds == nil {
		return nil
	}
	return d.feeds.PrepareHeld(ctx, dg, door.Asker{UA: "warren-replicate"})
}
