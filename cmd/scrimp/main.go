// Command scrimp is a gossip-based, self-hosted load balancer. Every node
// runs this one binary, as a load balancer or as a backend, chosen by its
// configuration file.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/node"
	"github.com/scrimplb/scrimp/seed"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := newRootCmd().Execute(); err != nil {
		// errQuiet: the command already printed what went wrong.
		if !errors.Is(err, errQuiet) {
			fmt.Fprintln(os.Stderr, "scrimp:", err)
		}
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	var configPath, pidFile string
	root := &cobra.Command{
		Use:   "scrimp --config FILE",
		Short: "A gossip-based load balancer for your own servers",
		Long: `scrimp turns any cheap instance into a load balancer.

Every node runs this binary with a configuration file that names its role:
  lb       runs a proxy (nginx) and keeps its configuration in step with the
           live cluster: backends that join get traffic within a second,
           backends that leave or die are taken out.
  backend  runs beside your applications and advertises them to the cluster.

Nodes find each other through a seed provider and gossip (memberlist).`,
		Example: `  scrimp --config /etc/scrimp/lb.json
  scrimp validate --config /etc/scrimp/backend.json
  scrimp demo`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configPath == "" {
				return usageError(cmd, "--config FILE is required")
			}
			return runConfig(cmd.Context(), configPath, pidFile)
		},
	}
	root.Flags().StringVarP(&configPath, "config", "c", "", "configuration file (JSON)")
	root.Flags().StringVar(&pidFile, "pid-file", "", "write the process id here while running (for scrimp drain)")
	root.AddCommand(newValidateCmd(), newVersionCmd(), newDemoCmd(), newSeedsCmd(), newDrainCmd())
	root.AddCommand(newKeysCmd())
	root.AddCommand(newXDSBootstrapCmd())
	return root
}

// errQuiet marks an error whose message was already printed.
var errQuiet = errors.New("failed")

func usageError(cmd *cobra.Command, msg string) error {
	return fmt.Errorf("%s\nRun '%s --help' for usage", msg, cmd.CommandPath())
}

// runConfig runs one node until SIGTERM or SIGINT. A backend then drains;
// a second SIGTERM or SIGINT makes it stop waiting and leave at once.
func runConfig(ctx context.Context, path, pidFile string) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	logger := newLogger(os.Stderr, cfg.LogLevel).With("node", cfg.NodeName)
	// Subscribe before starting the node: a signal that arrives during
	// startup stops it rather than killing the process.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	n, err := node.Start(cfg, logger)
	if err != nil {
		return err
	}
	n.Notify = notify
	n.Version = version
	if pidFile != "" {
		if err := writePidFile(pidFile); err != nil {
			n.Close()
			return err
		}
		defer removePidFile(pidFile)
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go node.TrimStartupMemory(ctx, logger)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	done := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(done)
	wg.Go(func() {
		stopping := false
		for {
			select {
			case <-done:
				return
			case <-hup:
				if !stopping {
					n.Reload(path)
				}
			case sig := <-sigs:
				if !stopping {
					stopping = true
					logger.Info("signal received: shutting down; send it again to leave without draining", "signal", sig.String())
					stop()
					continue
				}
				logger.Warn("second signal: leaving at once", "signal", sig.String())
				n.Abort()
			}
		}
	})
	logger.Info("scrimp started", "version", version, "role", cfg.Role, "gossip", n.GossipAddr())
	return n.Run(ctx)
}

func newLogger(w *os.File, level string) *slog.Logger {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		lv = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lv}))
}

func newValidateCmd() *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "validate --config FILE",
		Short: "Check a configuration file and print every problem",
		Long: `Check a configuration file without starting anything. Every problem is
printed as FILE: json.path: reason. Exits 1 if there is any. What is allowed
but unsafe (gossip without a keyring) is printed as FILE: warning: json.path:
reason and does not change the exit status.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configPath == "" {
				return usageError(cmd, "--config FILE is required")
			}
			cfg, err := config.Load(configPath)
			var problems config.Problems
			if err != nil && !errors.As(err, &problems) {
				return err // unreadable: nothing more to check
			}
			// Plugins check their own sections even when the rest of the
			// file has problems, so one run shows everything.
			errs := append([]error{err}, node.CheckPlugins(cfg)...)
			errs = append(errs, node.CheckKeyring(cfg), node.CheckAdmin(cfg))
			// Bad application files fail the check although a backend
			// starts without them: their applications would not be served.
			errs = append(errs, node.CheckAppDir(cfg))
			if errors.Join(errs...) != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), errors.Join(errs...))
				return errQuiet
			}
			// Warnings do not fail the check: a loopback demo needs no key.
			for _, w := range node.Warnings(cfg) {
				fmt.Fprintf(cmd.ErrOrStderr(), "%s: warning: %s\n", configPath, w)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok (%s)\n", configPath, cfg.Role)
			return nil
		},
	}
	cmd.Flags().StringVarP(&configPath, "config", "c", "", "configuration file (JSON)")
	return cmd
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			goVersion := "unknown"
			if bi, ok := debug.ReadBuildInfo(); ok {
				goVersion = bi.GoVersion
			}
			fmt.Fprintf(cmd.OutOrStdout(), "scrimp %s (%s)\n", version, goVersion)
			return nil
		},
	}
}

func newSeedsCmd() *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "seeds --config FILE",
		Short: "Print the addresses the configured seed provider returns now",
		Long: `Ask the configured seed provider once and print each address it returns,
one per line: for debugging how a node would find its cluster.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configPath == "" {
				return usageError(cmd, "--config FILE is required")
			}
			cfg, err := config.Load(configPath)
			if err != nil {
				return err
			}
			logger := newLogger(os.Stderr, cfg.LogLevel)
			p, err := seed.New(cfg.Seed, seed.Env{Logger: logger, DefaultPort: cfg.Cluster.BindPort})
			if err != nil {
				return err
			}
			if c, ok := p.(seed.Closer); ok {
				defer c.Close()
			}
			addrs, err := p.Seeds(cmd.Context())
			if err != nil {
				return fmt.Errorf("seed %s: %w", cfg.Seed.Provider, err)
			}
			for _, a := range addrs {
				fmt.Fprintln(cmd.OutOrStdout(), a)
			}
			if len(addrs) == 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "seed %s: no addresses\n", cfg.Seed.Provider)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&configPath, "config", "c", "", "configuration file (JSON)")
	return cmd
}

func newDrainCmd() *cobra.Command {
	var pidFile string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "drain --pid-file FILE",
		Short: "Drain a running backend gracefully and wait until it has left",
		Long: `Ask the scrimp node whose pid is in FILE (started with --pid-file) to shut
down gracefully, and wait until it has exited. A backend first advertises all
its applications as draining, waits until every load balancer has reloaded
without it, serves in-flight requests for backend.drain-grace, then leaves
the cluster. This is what SIGTERM does (systemctl stop sends it too); a
second SIGTERM makes the node stop waiting and leave at once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if pidFile == "" {
				return usageError(cmd, "--pid-file FILE is required")
			}
			pid, err := readPidFile(pidFile)
			if err != nil {
				return err
			}
			// FindProcess holds a pidfd: if the pid is reused after the
			// check, the signal still goes to the process checked.
			proc, err := os.FindProcess(pid)
			if err != nil {
				return fmt.Errorf("process %d: %w", pid, err)
			}
			defer proc.Release()
			if err := checkScrimp(pid); err != nil {
				return err
			}
			if err := proc.Signal(syscall.SIGTERM); err != nil {
				return fmt.Errorf("signal process %d: %w", pid, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "draining process %d\n", pid)
			deadline := time.Now().Add(timeout)
			for syscall.Kill(pid, 0) == nil {
				if time.Now().After(deadline) {
					return fmt.Errorf("process %d still running after %s", pid, timeout)
				}
				time.Sleep(100 * time.Millisecond)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "process %d has drained and exited\n", pid)
			return nil
		},
	}
	cmd.Flags().StringVar(&pidFile, "pid-file", "", "the pid file the node was started with")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "how long to wait for the node to exit")
	return cmd
}

// notify sends a state line to systemd when run as a Type=notify service;
// it does nothing elsewhere.
func notify(state string) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return
	}
	defer conn.Close()
	conn.Write([]byte(state))
}
