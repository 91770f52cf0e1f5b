package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/internal/loopback"
	"github.com/scrimplb/scrimp/node"
)

// demoOptions configures `scrimp demo`.
type demoOptions struct {
	backends int
	duration time.Duration
	nginx    string
	stateDir string
}

func newDemoCmd() *cobra.Command {
	o := demoOptions{}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a load balancer and three backends on loopback",
		Long: `Run a whole scrimp cluster in one process on loopback, no cloud account
needed: a load balancer with its own nginx on 127.0.0.1 and backends on
127.0.0.2, 127.0.0.3, ..., each with a tiny HTTP app that answers with its
node name. The first line printed is the address to send requests to; then
one line per membership change and per nginx reload. Stop it with Ctrl-C.`,
		Example: `  scrimp demo
  scrimp demo --duration 30s --backends 5`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if o.duration > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, o.duration)
				defer cancel()
			}
			return runDemo(ctx, cmd.OutOrStdout(), o, nil)
		},
	}
	cmd.Flags().IntVar(&o.backends, "backends", 3, "number of backends (1-200)")
	cmd.Flags().DurationVar(&o.duration, "duration", 0, "stop after this long (default: until Ctrl-C)")
	cmd.Flags().StringVar(&o.nginx, "nginx", "nginx", "nginx binary")
	cmd.Flags().StringVar(&o.stateDir, "state-dir", "", "directory for nginx's files (default: a temporary directory)")
	return cmd
}

// runDemo runs the demo cluster until ctx is done. ready, if not nil,
// receives the URL to send requests to once the first line is printed.
func runDemo(ctx context.Context, out io.Writer, o demoOptions, ready chan<- string) error {
	if o.backends < 1 || o.backends > 200 {
		return fmt.Errorf("--backends %d: want 1 to 200", o.backends)
	}
	if _, err := exec.LookPath(o.nginx); err != nil {
		return fmt.Errorf("nginx not found (%v): install it, e.g. `apt-get install -y nginx` on Debian/Ubuntu (make demo does this when run as root)", err)
	}
	stateDir := o.stateDir
	if stateDir == "" {
		dir, err := os.MkdirTemp("", "scrimp-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		stateDir = dir
	}
	const lbIP = "127.0.0.1"
	listenPort, err := loopback.FreePort(lbIP)
	if err != nil {
		return err
	}
	url := fmt.Sprintf("http://%s:%d", lbIP, listenPort)
	fmt.Fprintf(out, "serving on %s\n", url)

	w := &syncWriter{w: out}
	lbLog := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
	quiet := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))

	lbCfg, err := node.LocalConfig("lb", lbIP, nil)
	if err != nil {
		return err
	}
	lbCfg.LB = &config.LB{}
	*lbCfg.LB = config.DefaultLB()
	lbCfg.LB.StateDir, lbCfg.LB.ListenAddr, lbCfg.LB.ProxyBinary = stateDir, lbIP, o.nginx
	demoSocket(lbCfg, stateDir)

	// Backends stop first, so the load balancer sees each one leave, as
	// it would in a rolling shutdown; then the load balancer.
	var wg, lbWG sync.WaitGroup
	errs := make(chan error, o.backends+1)
	runCtx, cancel := context.WithCancel(ctx)
	lbCtx, cancelLB := context.WithCancel(context.WithoutCancel(ctx))
	stopAll := func() {
		cancel()
		wg.Wait()
		cancelLB()
		lbWG.Wait()
	}
	defer stopAll()
	start := func(cfg *config.Config, logger *slog.Logger, ctx context.Context, wg *sync.WaitGroup) (*node.Node, error) {
		n, err := node.StartLocal(cfg, logger.With("node", cfg.NodeName))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.NodeName, err)
		}
		wg.Go(func() {
			if err := n.Run(ctx); err != nil {
				errs <- fmt.Errorf("%s: %w", cfg.NodeName, err)
			}
		})
		return n, nil
	}
	lbNode, err := start(lbCfg, lbLog, lbCtx, &lbWG)
	if err != nil {
		return err
	}
	seedAddr := lbNode.GossipAddr()

	for i := 1; i <= o.backends; i++ {
		name := fmt.Sprintf("backend-%d", i)
		ip := fmt.Sprintf("127.0.0.%d", i+1)
		appPort, err := loopback.ServeApp(runCtx, &wg, ip, name)
		if err != nil {
			return err
		}
		cfg, err := node.LocalConfig(name, ip, []string{seedAddr})
		if err != nil {
			return err
		}
		bc := config.DefaultBackend()
		// On Ctrl-C each backend drains as in production, briefly.
		bc.DrainTimeout, bc.DrainGrace = config.D(3*time.Second), config.D(100*time.Millisecond)
		bc.Applications = []config.Application{{Application: catalog.Application{
			Name: "demo", ListenPort: listenPort, ApplicationPort: appPort, Protocol: catalog.ProtocolHTTP,
		}}}
		cfg.Backend = &bc
		demoSocket(cfg, stateDir)
		if _, err := start(cfg, quiet, runCtx, &wg); err != nil {
			return err
		}
	}
	if ready != nil {
		ready <- url
	}
	select {
	case <-ctx.Done():
	case err := <-errs:
		return err
	}
	stopAll()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// demoSocket puts a demo node's admin socket in the state directory, one
// per node; a state directory too long for a socket path keeps
// LocalConfig's.
func demoSocket(cfg *config.Config, stateDir string) {
	if p := filepath.Join(stateDir, "admin-"+cfg.NodeName+".sock"); len(p) <= config.MaxAdminSocket && filepath.IsAbs(p) {
		cfg.AdminSocket = p
	}
}

// syncWriter serialises log lines from several nodes onto one writer.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
