package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/warren-cache/warren/internal/logsink"
)

func newApp() *cli.App {
	return &cli.App{
		Name:    "warren",
		Usage:   "LAN peer-to-peer caching proxy for apt, dnf and Chocolatey",
		Version: version,
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return usageError{fmt.Errorf("%w (see 'warren --help')", err)}
		},
		Commands: append(append([]*cli.Command{serveCommand(), configCommand()}, adminCommands()...), helperCommands()...),
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
				out, err := cfg.printable()
				if err != nil {
					return fmt.Errorf("print config: %w", err)
				}
				_, err = c.App.Writer.Write(out)
				return err
			},
		}},
	}
}

func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// serve runs the daemon until ctx ends.
func serve(ctx context.Context, cfg settings) error {
	limit, from := applyMemoryLimit(cfg.memoryLimit, os.Getenv)
	// A line per request, written in batches off the requests' path.
	sink := logsink.New(os.Stderr)
	defer sink.Close()
	log := newLogger(sink, cfg.logLevel)
	log.Info("memory limit", slog.String("limit", memoryLimitString(limit)), slog.String("from", from))
	d, err := newDaemon(ctx, cfg, log)
	if err != nil {
		return err
	}
	return d.Run(ctx)
}
