package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/scrimplb/scrimp/backend"
	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/cluster"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/generator"
	"github.com/scrimplb/scrimp/lb"
	"github.com/scrimplb/scrimp/proxy"
	"github.com/scrimplb/scrimp/seed"
)

// node is one running scrimp node, wired from its configuration.
type node struct {
	cfg     *config.Config
	log     *slog.Logger
	role    catalog.Role
	seeds   seed.Provider
	cluster *cluster.Cluster
	lb      *lb.LB    // load balancers only
	proxy   io.Closer // load balancers only
	backend *backend.Backend
	// metricsLn is the metrics-addr listener, nil when it is not set.
	metricsLn net.Listener
}

// checkConfig reports every problem with cfg: its own validation, and what
// the plugins it names (seed provider, generator) say of their sections, so
// `scrimp validate` catches everything startup would.
func checkConfig(cfg *config.Config) error {
	var errs []error
	if ps := cfg.Validate(); len(ps) > 0 {
		errs = append(errs, ps)
	}
	errs = append(errs, checkPlugins(cfg)...)
	if cfg.Backend != nil {
		if ps := backend.CheckDir(cfg.Backend.ApplicationConfigDir, cfg.Backend.Applications); len(ps) > 0 {
			errs = append(errs, ps)
		}
	}
	return errors.Join(errs...)
}

// checkPlugins builds the plugins cfg names and reports their problems:
// the seed provider, the proxy kind (proxy.Resolve) and its generator.
func checkPlugins(cfg *config.Config) []error {
	var errs []error
	if cfg.Seed.Provider != "" {
		p, err := seed.New(cfg.Seed, seed.Env{DefaultPort: cfg.Cluster.BindPort})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", cfg.File, err))
		} else if c, ok := p.(seed.Closer); ok {
			c.Close()
		}
	}
	if cfg.LB != nil && cfg.LB.Generator != "" {
		setup, ps := proxy.Resolve(cfg)
		if len(ps) > 0 {
			errs = append(errs, ps)
		}
		// An unknown kind has no generator to build.
		if setup.Kind.Generator != "" {
			if _, err := generator.New(setup.Kind.Generator, cfg.LB.GeneratorOptions); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", cfg.File, err))
			}
		}
	}
	return errs
}

// startNode validates cfg, builds the node's parts and joins gossip (as a
// cluster of one until Maintain finds peers). Nothing runs in the
// background until run.
func startNode(cfg *config.Config, logger *slog.Logger) (*node, error) {
	if err := checkConfig(cfg); err != nil {
		return nil, err
	}
	role, _ := catalog.ParseRole(cfg.Role)
	n := &node{cfg: cfg, log: logger, role: role}
	seeds, err := seed.New(cfg.Seed, seed.Env{Logger: logger.With("component", "seed"), DefaultPort: cfg.Cluster.BindPort})
	if err != nil {
		return nil, err
	}
	n.seeds = seeds

	cc := cluster.Config{
		NodeName:      cfg.NodeName,
		BindAddr:      cfg.Cluster.BindAddr,
		BindPort:      cfg.Cluster.BindPort,
		AdvertiseAddr: cfg.Cluster.AdvertiseAddr,
		AdvertisePort: cfg.Cluster.AdvertisePort,
		Profile:       cfg.Cluster.Profile,
		Role:          role,
		Logger:        logger.With("component", "cluster"),
	}
	if role == catalog.RoleBackend {
		b, err := backend.New(cfg.Backend, backend.Options{ConfigFile: cfg.File,
			Timeout: cfg.Cluster.LeaveTimeout.Duration, Logger: logger.With("component", "backend")})
		if err != nil {
			n.close()
			return nil, err
		}
		n.backend = b
		cc.Applications = b.Applications()
	}
	cl, err := cluster.New(cc)
	if err != nil {
		n.close()
		return nil, err
	}
	n.cluster = cl

	switch role {
	case catalog.RoleLB:
		if err := n.buildLB(); err != nil {
			n.close()
			return nil, err
		}
	}
	if err := n.listenMetrics(); err != nil {
		n.close()
		return nil, err
	}
	return n, nil
}

// A managed HAProxy takes slot changes through its runtime API; the load
// balancer finds that out by asserting the interface.
var _ lb.RuntimeProxy = (*proxy.ManagedHAProxy)(nil)

// buildLB builds the load balancer's generator and proxy runner from the
// proxy kind lb.generator names; checkConfig has resolved it already.
func (n *node) buildLB() error {
	c := n.cfg.LB
	setup, ps := proxy.Resolve(n.cfg)
	if len(ps) > 0 {
		return ps
	}
	gen, err := generator.New(setup.Kind.Generator, c.GeneratorOptions)
	if err != nil {
		return err
	}
	in := generator.Input{ListenAddr: c.ListenAddr}
	for _, t := range c.TLS {
		in.TLS = append(in.TLS, generator.TLSCert{Domains: t.Domains, Cert: t.Certificate, Key: t.Key})
	}
	var p lb.Proxy
	switch c.Mode {
	case "managed":
		m, err := setup.Kind.NewManaged(setup.Binary, c.StateDir, c.CommandTimeout.Duration, n.log)
		if err != nil {
			return err
		}
		in.Standalone, in.StateDir = true, m.Dir()
		p, n.proxy = m, m
	default:
		e := &proxy.External{Target: setup.Target, Check: setup.Check, Reload: setup.Reload,
			Timeout: c.CommandTimeout.Duration, Logger: n.log}
		p, n.proxy = e, e
	}
	n.lb = lb.New(lb.Config{
		Members:     n.cluster,
		Generator:   gen,
		Input:       in,
		Proxy:       p,
		Timing:      lb.Timing{Quiet: c.QuietPeriod.Duration, MaxWait: c.MaxWait.Duration},
		Resync:      c.ResyncInterval.Duration,
		RetainEmpty: c.RetainEmpty.Duration,
		OnApplied:   n.cluster.Acknowledge,
		Checks: lb.CheckConfig{Disabled: c.Checks.Disabled, Interval: c.Checks.Interval.Duration,
			Timeout: c.Checks.Timeout.Duration, Fall: c.Checks.Fall, Rise: c.Checks.Rise},
		Guard: lb.GuardConfig{Disabled: c.MassLossGuard.Disabled, Share: c.MassLossGuard.Share,
			Min: c.MassLossGuard.Min, Window: c.MassLossGuard.Window.Duration, Grace: c.MassLossGuard.Grace.Duration},
		Logger: n.log.With("component", "lb"),
	})
	return nil
}

// run keeps the node joined and, on a load balancer, the proxy configured,
// until ctx is done. Then it stops its loops, leaves the cluster (peers see
// it gone at once rather than after failure detection) and stops the
// proxy. It owns every goroutine it starts.
func (n *node) run(ctx context.Context) error {
	var wg sync.WaitGroup
	// The loops outlive ctx: a backend keeps advertising while it drains,
	// after the signal and before it leaves.
	loopCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	c := n.cfg.Cluster
	wg.Go(func() {
		n.cluster.Maintain(loopCtx, n.seeds, cluster.JoinOptions{
			StartAlone:     n.role == catalog.RoleLB,
			BackoffMin:     c.JoinBackoffMin.Duration,
			BackoffMax:     c.JoinBackoffMax.Duration,
			RejoinInterval: c.RejoinInterval.Duration,
		})
	})
	if n.lb != nil {
		wg.Go(func() { n.lb.Run(loopCtx) })
	}
	if n.backend != nil {
		wg.Go(func() { n.backend.Run(loopCtx, n.cluster) })
	}
	if n.metricsLn != nil {
		wg.Go(func() { n.serveMetrics(loopCtx) })
	}
	// Load balancers advertise themselves where the provider allows it (an
	// S3 object, a program), so backends can find them without a fixed
	// address list. RunPublisher withdraws the record when loopCtx ends.
	if pub, ok := n.seeds.(seed.Publisher); ok && n.role == catalog.RoleLB {
		period, jitter := 30*time.Second, 5*time.Second
		if s, ok := pub.(seed.Scheduled); ok {
			period, jitter = s.PublishSchedule()
		}
		wg.Go(func() {
			seed.RunPublisher(loopCtx, pub, n.cluster.LocalAddr, period, jitter, n.log.With("component", "seed"))
		})
	}
	notify("READY=1")
	<-ctx.Done()
	notify("STOPPING=1")
	if n.backend != nil {
		n.drain()
	}
	n.log.Info("shutting down: leaving the cluster")
	stop()
	wg.Wait()
	return n.close()
}

// reload handles SIGHUP: a backend re-reads its main configuration's
// backend section and its application directory (only the directory if the
// file no longer loads); a load balancer renders again from the full
// membership. Other settings need a restart.
func (n *node) reload(path string) {
	cfg, err := config.Load(path)
	if err != nil {
		n.log.Error("SIGHUP: configuration not reloaded", "err", err)
		if n.backend != nil {
			n.backend.Rescan()
		}
		return
	}
	switch {
	case n.backend != nil:
		if err := n.backend.Reload(cfg.Backend); err != nil {
			n.log.Error("SIGHUP: backend section not reloaded", "err", err)
			n.backend.Rescan()
			return
		}
		n.log.Info("SIGHUP: reloaded the backend section and the application directory")
	case n.lb != nil:
		n.lb.Resync()
		n.log.Info("SIGHUP: re-rendering; changed lb settings take effect after a restart")
	}
}

// drainRebroadcast is how often a draining backend gossips its beacon
// again while a load balancer has not acknowledged it.
const drainRebroadcast = 250 * time.Millisecond

// drain takes a backend out of rotation without losing a request: it
// advertises every application as draining, waits until every load
// balancer acknowledges that its proxy runs a configuration without this
// node (or drain-timeout passes), then keeps serving for drain-grace so
// requests already in flight finish.
func (n *node) drain() {
	b := n.cfg.Backend
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), b.DrainTimeout.Duration)
	defer cancel()
	if err := n.backend.Drain(ctx); err != nil {
		n.log.Warn("could not advertise draining; leaving without waiting", "err", err)
		return
	}
	n.log.Info("draining: waiting for the load balancers to stop routing here")
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	lastBroadcast := time.Now()
	for pending := n.cluster.Unacknowledged(); len(pending) > 0; pending = n.cluster.Unacknowledged() {
		select {
		case <-ctx.Done():
			n.log.Warn("drain timeout: load balancers did not acknowledge", "pending", pending, "timeout", b.DrainTimeout.Duration)
			return
		case <-tick.C:
		}
		if time.Since(lastBroadcast) >= drainRebroadcast {
			// Gossip may not have reached every load balancer yet: a
			// round that misses one is common in small clusters.
			n.cluster.Rebroadcast()
			lastBroadcast = time.Now()
		}
	}
	n.log.Info("drained: every load balancer acknowledged; serving in-flight requests",
		"took", time.Since(start).Round(time.Millisecond), "grace", b.DrainGrace.Duration)
	time.Sleep(b.DrainGrace.Duration)
}

// close leaves the cluster and stops the proxy; safe on a partly built node.
func (n *node) close() error {
	var errs []error
	if n.metricsLn != nil {
		// Closed already when run served it; this covers a node that
		// never ran.
		if err := n.metricsLn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if n.cluster != nil {
		errs = append(errs, n.cluster.Close(n.cfg.Cluster.LeaveTimeout.Duration))
	}
	if n.proxy != nil {
		errs = append(errs, n.proxy.Close())
	}
	if c, ok := n.seeds.(seed.Closer); ok {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}
