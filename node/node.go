// Package node wires one scrimp node from its configuration: the gossip
// cluster, the seed provider, and either the load balancer loop with its
// proxy or the backend with its drain on shutdown, plus the metrics
// endpoint. The scrimp command runs one node per process; the bench and
// the tests run several in one process, each on its own loopback address.
package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/scrimplb/scrimp/acme"
	"github.com/scrimplb/scrimp/admin"
	"github.com/scrimplb/scrimp/backend"
	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/cluster"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/generator"
	"github.com/scrimplb/scrimp/keyring"
	"github.com/scrimplb/scrimp/lb"
	"github.com/scrimplb/scrimp/proxy"
	"github.com/scrimplb/scrimp/seed"
)

// Node is one running scrimp node, wired from its configuration. Its
// accessors are safe for concurrent use while Run runs.
type Node struct {
	// Notify, if set before Run, is told the node's state as systemd's
	// sd_notify lines: "READY=1" once the node is of use (a backend sees a
	// load balancer; a load balancer's proxy runs its first configuration),
	// "STOPPING=1" when Run's context ends, never READY after it. It is
	// called from Run's goroutines, one call at a time, and must not block.
	Notify func(state string)
	// Version, if set before Run, is the version the status shows.
	Version string

	cfg     *config.Config
	log     *slog.Logger
	role    catalog.Role
	seeds   seed.Provider
	seedLog *seedRecorder // seeds, as the join loop asks them (status.go)
	started time.Time
	cluster *cluster.Cluster
	lb      *lb.LB    // load balancers only
	proxy   io.Closer // load balancers only
	backend *backend.Backend
	// metricsLn is the metrics-addr listener, nil when it is not set.
	metricsLn net.Listener
	// metrics is the node's registry (metrics.go); metricsToken, if set,
	// is the bearer token its endpoint requires.
	metrics      *metrics
	metricsToken []byte
	// admin serves admin-socket; nil when it is not set.
	admin *admin.Server
	// xds serves the membership to proxyless gRPC clients; nil when
	// xds.listen-addr is not set (node/xds.go).
	xds *xdsFeed
	// acme keeps certificates of lb.acme; nil without it (node/acme.go).
	acme *acme.Manager

	// abort ends a drain at once (Abort); abortCtx is its context.
	abortCtx context.Context
	abort    context.CancelFunc

	// ready is closed (readyOnce) when a load balancer's proxy first runs
	// a configuration; a backend's readiness is its cluster's (awaitReady).
	ready     chan struct{}
	readyOnce sync.Once

	mu      sync.Mutex
	drained *backend.DrainOutcome // set when a backend's drain is over
	// stopping is set, under mu, when STOPPING=1 has been sent: READY=1
	// must not follow it.
	stopping bool

	closeOnce sync.Once
	closeErr  error
}

// ErrNotLB is returned by the load balancer accessors of a backend.
var ErrNotLB = errors.New("node: not a load balancer")

// Check reports every problem with cfg: its own validation, what the
// plugins it names (seed provider, generator) say of their sections, and
// the backend's application directory, so that `scrimp validate` catches
// everything startup would, and the bad application files startup skips.
func Check(cfg *config.Config) error {
	return errors.Join(checkStart(cfg), CheckAppDir(cfg))
}

// CheckAppDir reports the problems of a backend's application directory
// (backend.CheckDir): bad files, which a starting or running backend
// reports and skips, and names defined twice.
func CheckAppDir(cfg *config.Config) error {
	if cfg == nil || cfg.Backend == nil {
		return nil
	}
	if ps := backend.CheckDir(cfg.Backend.ApplicationConfigDir, cfg.Backend.Applications); len(ps) > 0 {
		return ps
	}
	return nil
}

// checkStart reports the problems that stop a node from starting: all of
// Check's but the application directory's, whose bad files the backend
// skips so that one bad file cannot keep the healthy applications down.
func checkStart(cfg *config.Config) error {
	var errs []error
	if ps := cfg.Validate(); len(ps) > 0 {
		errs = append(errs, ps)
	}
	errs = append(errs, CheckPlugins(cfg)...)
	if _, err := loadKeys(cfg); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, CheckAdmin(cfg))
	if _, err := readMetricsToken(cfg); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// loadKeys reads cluster.keyring-file; nil keys when none is set.
func loadKeys(cfg *config.Config) (keyring.Keys, error) {
	if cfg.Cluster.KeyringFile == "" {
		return nil, nil
	}
	keys, err := keyring.Load(cfg.Cluster.KeyringFile)
	if err != nil {
		return nil, fmt.Errorf("%s: cluster.keyring-file: %w", cfg.File, err)
	}
	return keys, nil
}

// CheckPlugins builds the plugins cfg names and reports their problems:
// the seed provider, the proxy kind (proxy.Resolve) and its generator. It
// works on a configuration whose own validation failed, so one run of
// `scrimp validate` shows everything.
func CheckPlugins(cfg *config.Config) []error {
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

// Start validates cfg, builds the node's parts and joins gossip (as a
// cluster of one until Run's join loop finds peers). Nothing runs in the
// background until Run; a node that never runs must be closed with Close.
func Start(cfg *config.Config, logger *slog.Logger) (*Node, error) {
	if err := checkStart(cfg); err != nil {
		return nil, err
	}
	keys, err := loadKeys(cfg)
	if err != nil {
		return nil, err
	}
	if keys == nil && !isLoopback(cfg.Cluster.BindAddr) {
		logger.Warn("gossip is not encrypted: anyone who reaches the gossip port can join; set cluster.keyring-file (scrimp keys generate) and cluster.label",
			"bind-addr", cfg.Cluster.BindAddr)
	}
	if keys != nil && (!cfg.Cluster.GossipVerifyIncoming || !cfg.Cluster.GossipVerifyOutgoing) {
		logger.Warn("gossip encryption is not enforced: plaintext gossip is still accepted or sent; finish the transition (docs/security.md)",
			"gossip-verify-incoming", cfg.Cluster.GossipVerifyIncoming, "gossip-verify-outgoing", cfg.Cluster.GossipVerifyOutgoing)
	}
	role, _ := catalog.ParseRole(cfg.Role)
	abortCtx, abort := context.WithCancel(context.Background())
	n := &Node{cfg: cfg, log: logger, role: role, abortCtx: abortCtx, abort: abort, started: time.Now(), ready: make(chan struct{})}
	seeds, err := seed.New(cfg.Seed, seed.Env{Logger: logger.With("component", "seed"), DefaultPort: cfg.Cluster.BindPort,
		Keys: keys, NodeName: cfg.NodeName})
	if err != nil {
		return nil, err
	}
	n.seeds, n.seedLog = seeds, &seedRecorder{p: seeds}

	cc := cluster.Config{
		NodeName:      cfg.NodeName,
		BindAddr:      cfg.Cluster.BindAddr,
		BindPort:      cfg.Cluster.BindPort,
		AdvertiseAddr: cfg.Cluster.AdvertiseAddr,
		AdvertisePort: cfg.Cluster.AdvertisePort,
		Profile:       cfg.Cluster.Profile,
		Role:          role,
		Keys:          keys,
		Label:         cfg.Cluster.Label,
		SaveKeys:      keysChanged(cfg.Cluster.KeyringFile, seeds),
		Logger:        logger.With("component", "cluster"),
		AllowedCIDRs:  cfg.Cluster.AllowedCIDRs,
		// Only for the plaintext-to-encrypted transition (docs/security.md).
		AcceptPlaintext: !cfg.Cluster.GossipVerifyIncoming,
		SendPlaintext:   !cfg.Cluster.GossipVerifyOutgoing,
	}
	if role == catalog.RoleBackend {
		b, err := backend.New(cfg.Backend, backend.Options{ConfigFile: cfg.File,
			Timeout: cfg.Cluster.LeaveTimeout.Duration, Logger: logger.With("component", "backend")})
		if err != nil {
			n.Close()
			return nil, err
		}
		n.backend = b
		cc.Applications = b.Applications()
	}
	cl, err := cluster.New(cc)
	if err != nil {
		n.Close()
		return nil, err
	}
	n.cluster = cl

	// Metrics first: the load balancer keeps members off its port.
	if err := n.listenMetrics(); err != nil {
		n.Close()
		return nil, err
	}
	if err := n.buildXDS(); err != nil {
		n.Close()
		return nil, err
	}
	switch role {
	case catalog.RoleLB:
		if err := n.buildLB(); err != nil {
			n.Close()
			return nil, err
		}
	}
	if err := n.startAdmin(); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// A managed HAProxy takes slot changes through its runtime API; the load
// balancer finds that out by asserting the interface.
var _ lb.RuntimeProxy = (*proxy.ManagedHAProxy)(nil)

// A managed nginx takes membership changes through its lua balancer
// when the generator renders one (see generator.NginxBalancerLua).
var _ lb.RuntimeProxy = (*proxy.ManagedNginx)(nil)

// buildLB builds the load balancer's generator and proxy runner from the
// proxy kind lb.generator names; Check has resolved it already.
func (n *Node) buildLB() error {
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
		// The runner says whether its proxy starts as root and needs
		// its workers to drop privileges (HAProxy's does).
		if r, ok := m.(interface{ AsRoot() bool }); ok {
			in.AsRoot = r.AsRoot()
		}
		// The runner finds out whether its nginx has the lua balancer's
		// modules (I/O, which the generator does not do).
		if r, ok := m.(interface{ LuaBalancer() bool }); ok {
			in.NginxLua = r.LuaBalancer()
		}
		p, n.proxy = m, m
	default:
		e := &proxy.External{Target: setup.Target, Check: setup.Check, Reload: setup.Reload,
			Timeout: c.CommandTimeout.Duration, Logger: n.log}
		p, n.proxy = e, e
	}
	keySuffix := ".key"
	if setup.Kind.Generator == "haproxy" && c.Mode != "managed" {
		keySuffix = ".crt.key" // HAProxy reads CERT.key in an include fragment
	}
	if n.acme, err = n.buildACME(keySuffix); err != nil {
		return err
	}
	var certs lb.CertSource
	if n.acme != nil {
		certs = n.acme
	}
	n.lb = lb.New(lb.Config{
		Certs:       certs,
		Members:     n.members(),
		Generator:   gen,
		Input:       in,
		Proxy:       p,
		Timing:      lb.Timing{Quiet: c.QuietPeriod.Duration, MaxWait: c.MaxWait.Duration},
		Resync:      c.ResyncInterval.Duration,
		RetainEmpty: c.RetainEmpty.Duration,
		OnApplied: func(snap catalog.Snapshot) {
			n.cluster.Acknowledge(snap)
			n.acmeDomains(snap)
			n.readyOnce.Do(func() { close(n.ready) })
		},
		OnOutcome: n.observeOutcome,
		Checks: lb.CheckConfig{Disabled: c.Checks.Disabled, Interval: c.Checks.Interval.Duration,
			Timeout: c.Checks.Timeout.Duration, Fall: c.Checks.Fall, Rise: c.Checks.Rise,
			HoldInterval: c.Checks.HoldInterval.Duration, NoHold: c.Checks.NoHold},
		Guard: lb.GuardConfig{Disabled: c.MassLossGuard.Disabled, Share: c.MassLossGuard.Share,
			Min: c.MassLossGuard.Min, Window: c.MassLossGuard.Window.Duration, Grace: c.MassLossGuard.Grace.Duration},
		Admission:   admissionPolicy(n.cfg, n.metricsPort(), n.log),
		ReloadLimit: lb.ReloadLimit{PerMinute: c.Limits.ReloadsPerMinute},
		Logger:      n.log.With("component", "lb"),
	})
	return nil
}

// Run keeps the node joined and, on a load balancer, the proxy configured,
// until ctx is done. Then a backend drains (backend.RunDrain; Abort cuts
// the drain short), the node stops its loops, leaves the cluster (peers see
// it gone at once rather than after failure detection) and stops the
// proxy. It owns every goroutine it starts and returns when all have
// ended; call it once.
func (n *Node) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	// The loops outlive ctx: a backend keeps advertising while it drains,
	// after the signal and before it leaves.
	loopCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	c := n.cfg.Cluster
	wg.Go(func() {
		n.cluster.Maintain(loopCtx, countedSeeds{n.seedLog, n.metrics}, cluster.JoinOptions{
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
	if n.xds != nil {
		wg.Go(func() { n.xds.run(loopCtx) })
	}
	if n.acme != nil {
		wg.Go(func() { n.runACME(loopCtx) })
	}
	if n.metricsLn != nil {
		wg.Go(func() { n.serveMetrics(loopCtx) })
	}
	if n.admin != nil {
		wg.Go(func() { n.serveAdmin(loopCtx) })
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
			seed.RunPublisher(loopCtx, n.metrics.seedPublisher(pub), n.cluster.LocalAddr, period, jitter, n.log.With("component", "seed"))
		})
	}
	wg.Go(func() {
		if n.awaitReady(loopCtx) {
			n.mu.Lock()
			if !n.stopping {
				n.notify("READY=1")
			}
			n.mu.Unlock()
		}
	})
	<-ctx.Done()
	n.mu.Lock()
	n.stopping = true
	n.notify("STOPPING=1")
	n.mu.Unlock()
	if n.backend != nil {
		b := n.cfg.Backend
		out := backend.RunDrain(n.abortCtx, n.backend, n.cluster, backend.DrainOptions{
			Timeout: b.DrainTimeout.Duration, Grace: b.DrainGrace.Duration, Logger: n.log})
		n.mu.Lock()
		n.drained = &out
		n.mu.Unlock()
	}
	n.log.Info("shutting down: leaving the cluster")
	stop()
	wg.Wait()
	return n.Close()
}

// readyPoll is how often a backend looks for a load balancer in its
// membership until it finds one (reading a snapshot is cheap).
const readyPoll = 100 * time.Millisecond

// awaitReady blocks until the node is of use, and reports false if ctx
// ends first. A load balancer is ready once its proxy runs a configuration
// (the first OnApplied): it has formed or joined its cluster in Start and
// serves what it knows. A backend is ready once it sees a load balancer,
// that is, once it has joined; until then it keeps retrying its seeds.
func (n *Node) awaitReady(ctx context.Context) bool {
	if n.lb != nil {
		select {
		case <-n.ready:
			return true
		case <-ctx.Done():
			return false
		}
	}
	t := time.NewTicker(readyPoll)
	defer t.Stop()
	for {
		self := n.cluster.LocalName()
		for _, m := range n.cluster.Snapshot().Nodes {
			if m.Name != self && m.Role == catalog.RoleLB {
				return true
			}
		}
		// Polled, not on Changes(): that channel has one reader (the
		// xDS fan-out, when configured), and a stolen notice would delay it.
		select {
		case <-t.C:
		case <-ctx.Done():
			return false
		}
	}
}

func (n *Node) notify(state string) {
	if n.Notify != nil {
		n.Notify(state)
	}
}

// Abort makes a drain in progress, or one yet to start, end at once: the
// node stops waiting for acknowledgements or drain-grace and leaves. A
// second SIGTERM calls it. Safe to call any time, more than once, from any
// goroutine; it does not block.
func (n *Node) Abort() { n.abort() }

// Reload handles SIGHUP: a backend re-reads its main configuration's
// backend section and its application directory (only the directory if the
// file no longer loads); a load balancer renders again from the full
// membership. Other settings need a restart.
func (n *Node) Reload(path string) {
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

// GossipAddr is the node's gossip address, host:port: what other nodes
// use as a seed.
func (n *Node) GossipAddr() string { return n.cluster.LocalAddr() }

// Members is how many live members the node sees in the cluster, itself
// included.
func (n *Node) Members() int { return n.cluster.Members() }

// ClusterStats returns the node's gossip counters: dropped tasks, skipped
// sends and the like (also exported as metrics).
func (n *Node) ClusterStats() cluster.Stats { return n.cluster.Stats() }

// Snapshot is the membership as the node sees it now.
func (n *Node) Snapshot() catalog.Snapshot { return n.cluster.Snapshot() }

// Stats returns the load balancer loop's counters; a backend's are zero.
func (n *Node) Stats() lb.Stats {
	if n.lb == nil {
		return lb.Stats{}
	}
	return n.lb.Stats()
}

// Refusals returns the application instances the load balancer refuses
// to route to now, with the reasons (see lb.LB.Refusals); nil on a
// backend.
func (n *Node) Refusals() []lb.Refusal {
	if n.lb == nil {
		return nil
	}
	return n.lb.Refusals()
}

// ProxyReloads returns how many reloads a load balancer's managed proxy
// has been asked for; 0 for an external proxy or a backend.
func (n *Node) ProxyReloads() int {
	if r, ok := n.proxy.(interface{ Reloads() int }); ok {
		return r.Reloads()
	}
	return 0
}

// RenderedConfig returns the configuration file the load balancer's proxy
// runs now, as written to disk: generator-target for an external proxy,
// the state directory's file for a managed one. A backend gets ErrNotLB.
func (n *Node) RenderedConfig() ([]byte, error) {
	if n.lb == nil {
		return nil, ErrNotLB
	}
	c := n.cfg.LB
	path := c.GeneratorTarget
	if d, ok := n.proxy.(interface{ Dir() string }); ok {
		k, known := proxy.LookupKind(c.Generator)
		name := k.ConfigFile
		if !known || name == "" {
			return nil, fmt.Errorf("node: no known configuration file for managed %q", c.Generator)
		}
		path = filepath.Join(d.Dir(), name)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("node: rendered configuration: %w", err)
	}
	return b, nil
}

// Drained returns how a backend's drain ended; false until it has ended,
// and always on a load balancer.
func (n *Node) Drained() (backend.DrainOutcome, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.drained == nil {
		return backend.DrainOutcome{}, false
	}
	return *n.drained, true
}

// Kill stops gossip without leaving, as a crash would: peers notice only
// through failure detection. Run still has to end (cancel its context)
// to stop the node's other loops. For tests and the bench.
func (n *Node) Kill() { n.cluster.Kill() }

// Close leaves the cluster and stops the proxy; safe on a partly built
// node, and to call more than once. Run calls it.
func (n *Node) Close() error {
	n.closeOnce.Do(func() { n.closeErr = n.close() })
	return n.closeErr
}

func (n *Node) close() error {
	n.abort()
	var errs []error
	if n.admin != nil {
		errs = append(errs, n.admin.Close())
	}
	if n.metricsLn != nil {
		// Closed already when Run served it; this covers a node that
		// never ran.
		if err := n.metricsLn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if n.xds != nil {
		errs = append(errs, n.xds.srv.Close())
	}
	if n.cluster != nil {
		errs = append(errs, n.cluster.Close(n.cfg.Cluster.LeaveTimeout.Duration))
	}
	if n.proxy != nil {
		errs = append(errs, n.proxy.Close())
	}
	if n.acme != nil {
		errs = append(errs, n.acme.Close())
	}
	if c, ok := n.seeds.(seed.Closer); ok {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// isLoopback reports whether gossip bound to addr is reachable from this
// host only.
func isLoopback(addr string) bool {
	ip, err := netip.ParseAddr(addr)
	return err == nil && ip.IsLoopback()
}
