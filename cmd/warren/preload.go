package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
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

	"github.com/warren-cache/warren/hub"
	"github.com/warren-cache/warren/hub/preload"
)

// Preloading, as the daemon runs it: in the preload_schedule window and on
// demand (`warren preload run`), one run at a time, its log and the
// packages seen held kept in the cache directory (preload.json).

// preloader is the daemon's preloading.
type preloader struct {
	d      *daemon
	runner *preload.Runner
	window hub.Window
	now    func() time.Time

	running sync.Mutex // held by the run in progress
	mu      sync.Mutex // guards state and totals
	state   hub.PreloadState
	totals  preloadTotals // since start, for /metrics
}

// preloadTotals are counters over the runs since the daemon started.
type preloadTotals struct {
	runs, artifacts, bytes, failures int64
}

func newPreloader(d *daemon) (*preloader, error) {
	w, err := hub.ParseWindow(d.cfg.PreloadSchedule)
	if err != nil {
		return nil, err
	}
	st, err := hub.LoadPreloadState(d.cfg.CacheDir)
	if err != nil {
		d.log.Warn("preload state", slog.Any("err", err))
	}
	var feeds preload.Feeds // an untyped nil without feeds
	if d.feeds != nil {
		feeds = d.feeds
	}
	runner := preload.NewRunner(d.door, feeds, d.log.With(slog.String("component", "preload")), nil)
	return &preloader{d: d, runner: runner, window: w, now: time.Now, state: st}, nil
}

// errPreloadRunning refuses a second run while one is going.
var errPreloadRunning = errors.New("a preload run is already going (see warren preload status)")

// run runs the list once. stop, when set, ends it between artifacts.
func (p *preloader) run(ctx context.Context, trigger string, dryRun bool, stop func() string, progress func(done, total int, bytes int64)) (hub.PreloadRun, error) {
	if !p.running.TryLock() {
		return hub.PreloadRun{}, errPreloadRunning
	}
	defer p.running.Unlock()
	p.mu.Lock()
	held := make(map[string]bool, len(p.state.Held))
	for k := range p.state.Held {
		held[k] = true
	}
	p.mu.Unlock()
	cfg := p.d.cfg
	run, err := p.runner.Run(ctx, preload.Options{List: cfg.Preload, Updates: cfg.PreloadUpdates, Recommends: cfg.PreloadRecommends, DryRun: dryRun,
		Rate: cfg.preloadRate, Stop: stop, Progress: progress, Held: held})
	if err != nil {
		return run, err
	}
	run.Trigger = trigger
	if p.d.role != nil {
		run.MissingSuites = p.d.role.MissingSuites()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.state.Runs = append(p.state.Runs, run)
	if !dryRun {
		p.state.Held = held
		p.totals.runs++
		p.totals.artifacts += int64(run.Fetched)
		p.totals.bytes += run.FetchedB
		p.totals.failures += int64(len(run.Failures))
	}
	if err := p.state.Save(cfg.CacheDir); err != nil {
		p.d.log.Warn("could not save the preload log", slog.Any("err", err))
	}
	return run, nil
}

// collectors are the preload figures for /metrics.
func (p *preloader) collectors() []prometheus.Collector {
	total := func(f func(preloadTotals) int64) func() float64 {
		return func() float64 {
			p.mu.Lock()
			defer p.mu.Unlock()
			return float64(f(p.totals))
		}
	}
	last := func(f func(hub.PreloadRun) time.Time) func() float64 {
		return func() float64 {
			p.mu.Lock()
			defer p.mu.Unlock()
			for i := len(p.state.Runs) - 1; i >= 0; i-- {
				if !p.state.Runs[i].DryRun {
					return float64(f(p.state.Runs[i]).Unix())
				}
			}
			return 0
		}
	}
	return []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "warren_preload_runs_total", Help: "Preload runs (not dry) since start."},
			total(func(t preloadTotals) int64 { return t.runs })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "warren_preload_fetched_artifacts_total", Help: "Artifacts preload runs fetched."},
			total(func(t preloadTotals) int64 { return t.artifacts })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "warren_preload_fetched_bytes_total", Help: "Bytes of the artifacts preload runs fetched."},
			total(func(t preloadTotals) int64 { return t.bytes })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "warren_preload_failures_total", Help: "Artifacts or indexes preload runs could not fetch."},
			total(func(t preloadTotals) int64 { return t.failures })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "warren_preload_last_start_timestamp_seconds", Help: "When the last preload run began (Unix time; 0: none yet)."},
			last(func(r hub.PreloadRun) time.Time { return r.Start })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "warren_preload_last_end_timestamp_seconds", Help: "When the last preload run ended (Unix time; 0: none yet)."},
			last(func(r hub.PreloadRun) time.Time { return r.End })),
	}
}

// runs is the run log, newest last.
func (p *preloader) runs() []hub.PreloadRun {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]hub.PreloadRun(nil), p.state.Runs...)
}

// loop runs the list in each occurrence of the window until it is done or
// the window closes; a run stopped by the window's end (or a restart)
// goes on in the next one, fetching only what is still missing.
func (p *preloader) loop(ctx context.Context) {
	var doneUntil time.Time // the end of the occurrence whose run finished
	for {
		if open, end := p.window.Open(p.now()); open && !end.Equal(doneUntil) {
			stop := func() string {
				if !p.now().Before(end) {
					return "the preload_schedule window " + p.window.String() + " closed"
				}
				return ""
			}
			run, err := p.run(ctx, "schedule", false, stop, nil)
			switch {
			case err != nil && !errors.Is(err, errPreloadRunning):
				p.d.log.Warn("scheduled preload failed", slog.Any("err", err))
			case err == nil && run.Stopped == "":
				doneUntil = end
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Minute):
		}
	}
}

// preloadRun streams a run's progress as JSON lines, then the run.
func (a *adminAPI) preloadRun(w http.ResponseWriter, r *http.Request) {
	if a.d == nil || a.d.preload == nil {
		http.Error(w, "preloading runs in the daemon of a hub with a preload list (role hub, preload in the config): none here", http.StatusConflict)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	flush := http.NewResponseController(w)
	run, err := a.d.preload.run(r.Context(), "demand", r.URL.Query().Get("dry_run") == "1", nil, func(done, total int, bytes int64) {
		enc.Encode(map[string]int64{"done": int64(done), "total": int64(total), "bytes": bytes})
		flush.Flush()
	})
	if err != nil {
		enc.Encode(map[string]string{"error": err.Error()})
		return
	}
	enc.Encode(map[string]any{"run": run})
}

func (a *adminAPI) preloadStatus(w http.ResponseWriter, r *http.Request) {
	if a.d == nil || a.d.preload == nil {
		http.Error(w, "preloading runs in the daemon of a hub with a preload list (role hub, preload in the config): none here", http.StatusConflict)
		return
	}
	writeJSON(w, map[string]any{"schedule": a.d.preload.window.String(), "runs": a.d.preload.runs()})
}

func preloadCommands(flags []cli.Flag, usageErr cli.OnUsageErrorFunc, withCfg func(func(*cli.Context, settings) error) cli.ActionFunc) *cli.Command {
	return &cli.Command{Name: "preload", Usage: "fetch what the hub's preload list names, now, or see the runs", Subcommands: []*cli.Command{
		{Name: "run", Usage: "run the preload list now (--dry-run: count what would be fetched)", OnUsageError: usageErr,
			Flags:  append(slices.Clip(flags), &cli.BoolFlag{Name: "dry-run", Usage: "fetch only the index files; print the artifacts and bytes that would be fetched"}),
			Action: withCfg(runPreload)},
		{Name: "status", Usage: "the preload schedule and the last runs", Flags: flags, OnUsageError: usageErr,
			Action: withCfg(printPreloadStatus)},
	}}
}

func runPreload(c *cli.Context, cfg settings) error {
	path := "/preload/run"
	if c.Bool("dry-run") {
		path += "?dry_run=1"
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
			Done, Total, Bytes int64
			Error              string
			Run                *hub.PreloadRun
		}
		if err := dec.Decode(&ev); errors.Is(err, io.EOF) {
			return errors.New("preload: the daemon ended the run's report early")
		} else if err != nil {
			return fmt.Errorf("preload: reading the report: %w", err)
		}
		switch {
		case ev.Error != "":
			return errors.New(ev.Error)
		case ev.Run != nil:
			if tty {
				fmt.Fprintln(os.Stderr)
			}
			if c.Bool("json") {
				return json.NewEncoder(c.App.Writer).Encode(ev.Run)
			}
			printRun(c.App.Writer, *ev.Run)
			if len(ev.Run.Failures) > 0 {
				return fmt.Errorf("preload: %d failures (above)", len(ev.Run.Failures))
			}
			return nil
		case tty && !c.Bool("dry-run"):
			fmt.Fprintf(os.Stderr, "\r%s %d/%d artifacts, %s", bar(ev.Done, ev.Total), ev.Done, ev.Total, humanize.Bytes(uint64(ev.Bytes)))
		}
	}
}

// bar is a text progress bar.
func bar(done, total int64) string {
	const width = 30
	n := width
	if total > 0 {
		n = int(done * width / total)
	}
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "]"
}

func printRun(w io.Writer, r hub.PreloadRun) {
	if r.DryRun {
		fmt.Fprintf(w, "the list names %d artifacts; %d are not held: %s would be fetched\n", r.Wanted, r.Missing, humanize.Bytes(uint64(r.Bytes)))
	} else {
		fmt.Fprintf(w, "the list names %d artifacts; %d were not held; fetched %d (%s) in %s\n", r.Wanted, r.Missing, r.Fetched,
			humanize.Bytes(uint64(r.FetchedB)), r.End.Sub(r.Start).Round(time.Millisecond))
	}
	if r.Stopped != "" {
		fmt.Fprintf(w, "stopped early: %s; the next run goes on from here\n", r.Stopped)
	}
	for _, f := range r.Failures {
		fmt.Fprintf(w, "  failed: %s\n", f)
	}
	if len(r.MissingSuites) > 0 {
		fmt.Fprintf(w, "suites clients asked for that the preload list lacks (refused; add them to preload.apt):\n")
		for _, k := range slices.Sorted(maps.Keys(r.MissingSuites)) {
			fmt.Fprintf(w, "  %s (asked %d times)\n", k, r.MissingSuites[k])
		}
	}
}

func printPreloadStatus(c *cli.Context, cfg settings) error {
	var st struct {
		Schedule string           `json:"schedule"`
		Runs     []hub.PreloadRun `json:"runs"`
	}
	if err := call(c.Context, cfg, http.MethodGet, "/preload/status", &st); err != nil {
		return err
	}
	if c.Bool("json") {
		return json.NewEncoder(c.App.Writer).Encode(st)
	}
	sched := st.Schedule
	if sched == "" {
		sched = "none (on demand only)"
	}
	fmt.Fprintf(c.App.Writer, "schedule: %s\n", sched)
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "START\tTOOK\tTRIGGER\tWANTED\tMISSING\tFETCHED\tBYTES\tFAILURES\tSTOPPED")
	for _, r := range st.Runs {
		kind := r.Trigger
		if r.DryRun {
			kind += " (dry run)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%d\t%s\n", r.Start.Local().Format("2006-01-02 15:04"), r.End.Sub(r.Start).Round(time.Second),
			kind, r.Wanted, r.Missing, r.Fetched, humanize.Bytes(uint64(r.FetchedB)), len(r.Failures), r.Stopped)
	}
	return tw.Flush()
}
