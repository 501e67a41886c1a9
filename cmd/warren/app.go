package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"
	"gopkg.in/yaml.v3"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/proxy"
)

func newApp() *cli.App {
	return &cli.App{
		Name:    "warren",
		Usage:   "LAN peer-to-peer caching proxy for apt, dnf and Chocolatey",
		Version: version,
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return usageError{fmt.Errorf("%w (see 'warren --help')", err)}
		},
		Commands: []*cli.Command{serveCommand(), configCommand()},
		CommandNotFound: func(c *cli.Context, name string) {
			// urfave only prints here; the error comes from Action below.
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usageError{fmt.Errorf("unknown command %q (see 'warren --help')", c.Args().First())}
			}
			return cli.ShowAppHelp(c)
		},
	}
}

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run the caching proxy",
		Flags: settingFlags(),
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return usageError{fmt.Errorf("serve: %w (see 'warren serve --help')", err)}
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usageError{fmt.Errorf("serve takes no arguments, got %q", c.Args().Slice())}
			}
			cfg, err := loadConfig(c)
			if err != nil {
				return usageError{err}
			}
			return serve(c.Context, cfg)
		},
	}
}

func configCommand() *cli.Command {
	return &cli.Command{
		Name:  "config",
		Usage: "inspect warren's settings",
		Subcommands: []*cli.Command{{
			Name:  "check",
			Usage: "check the settings (file, WARREN_* environment, flags) and print the result",
			Flags: settingFlags(),
			OnUsageError: func(_ *cli.Context, err error, _ bool) error {
				return usageError{fmt.Errorf("config check: %w (see 'warren config check --help')", err)}
			},
			Action: func(c *cli.Context) error {
				cfg, err := loadConfig(c)
				if err != nil {
					return usageError{err}
				}
				out, err := yaml.Marshal(cfg)
				if err != nil {
					return fmt.Errorf("print config: %w", err)
				}
				_, err = c.App.Writer.Write(out)
				return err
			},
		}},
	}
}

func newLogger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// serve runs the daemon until ctx ends, then drains for up to 10 seconds.
func serve(ctx context.Context, cfg config) error {
	log := newLogger(cfg.logLevel)
	minFree, err := cfg.diskMinFree.bytes(cfg.CacheDir)
	if err != nil {
		return usageError{err}
	}
	store, err := cachestore.Open(cachestore.Config{Dir: cfg.CacheDir, MinFreeBytes: minFree, Logger: log})
	if err != nil {
		return err
	}
	defer store.Close()
	px, err := proxy.New(proxy.Config{
		AllowClients:    cfg.allowClients,
		ConnectPorts:    cfg.ConnectPorts,
		IndexTTL:        cfg.IndexTTL.Duration,
		NegativeTTL:     cfg.NegativeTTL.Duration,
		ChocolateyFeeds: cfg.chocolateyFeeds(),
		Logger:          log,
	}, store)
	if err != nil {
		return err
	}
	defer px.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	srv := &http.Server{
		Handler:           px,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	log.Info("warren serving", slog.String("listen", ln.Addr().String()), slog.String("cache_dir", cfg.CacheDir),
		slog.String("version", version))

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve http: %w", err)
		}
		return nil
	})
	g.Go(func() error { return store.Run(gctx) })
	g.Go(func() error {
		<-gctx.Done()
		log.Info("warren stopping")
		sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
		return nil
	})
	return g.Wait()
}
