package lb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/check"
)

// CheckConfig tunes the load balancer's own active checks of every backend
// instance it routes to. Gossip needs about five seconds to declare a
// crashed node dead; these checks take a crashed application out of the
// proxy configuration in about one (Fall × Interval), and they also catch
// an application that died on a node that is still alive. A zero field
// means its value in DefaultCheckConfig.
//
// What is checked: a TCP connect to the backend's address and application
// port; for http and https applications with a health path, a GET of that
// path (https without certificate verification, since the certificate names
// the public domains, not the backend's address), expecting a 2xx or 3xx
// status. gRPC applications get a TCP connect (their servers often speak
// only HTTP/2), UDP applications no check at all: they always count as up.
//
// A new instance counts as up until its checks say otherwise: its backend
// has just advertised it as serving (after its own health check, if it has
// one), and waiting for a check would delay every join by an interval. An
// instance that is dead on arrival is out after Fall failed checks.
// Instances the membership does not route to (draining, or down by their
// own backend's check) are not checked.
type CheckConfig struct {
	// Disabled turns the checks off: every instance the membership says
	// serves is routed.
	Disabled bool
	// Interval is the time between the starts of two checks of one
	// instance whose state is settled: its last check agreed with its
	// state (passed while up, failed while down).
	Interval time.Duration
	// FastInterval is the time from the start of a check that disagrees
	// with the instance's state (a failure while it is up, a pass while
	// it is down) to the next check, until Fall (or Rise) of them in a
	// row flip the state or one agrees again (HAProxy's fastinter). A
	// crashed application is therefore out Interval + (Fall-1) ×
	// FastInterval after its crash at the latest, plus the timeouts of
	// checks that time out, without checking every instance that often.
	FastInterval time.Duration
	// Timeout bounds one check: connect, TLS handshake, request and
	// response header.
	Timeout time.Duration
	// Fall is how many failed checks in a row take an instance out of the
	// configuration.
	Fall int
	// Rise is how many passed checks in a row bring it back.
	Rise int
	// MaxInFlight bounds the checks that run at once over all instances,
	// so that thousands of instances do not open thousands of sockets in
	// the same millisecond. A check waiting for its turn is late, never
	// failed: its timeout starts when it runs.
	MaxInFlight int
	// HoldInterval is the time between the checks of an instance while
	// the load balancer holds an idle connection open to it (see NoHold):
	// the held connection tells a crash at once, the checks are there for
	// what it cannot tell (a listener closed by a live process, a health
	// path that fails).
	HoldInterval time.Duration
	// NoHold turns the held connections off: every settled instance is
	// checked every Interval. With them (the default), the load balancer
	// keeps the connection of a passing TCP check open, idle, with TCP
	// keepalive, and checks at once when it closes: the kernel closes it
	// when the application's process dies, so a crash is seen in about a
	// round trip instead of at the next check. Instances with a health
	// path are not held: the answer of the path is what their checks are
	// for, every Interval. docs/performance.md weighs the trade-offs.
	NoHold bool
}

// DefaultCheckConfig returns the default check settings: a check every
// 900 ms, every 100 ms after one that disagrees with the state, with a
// 400 ms timeout, down after 2 failures, up after 2 passes, at most 256
// checks at once; with a held connection open, a check every 5 s. A
// crashed application (refused connections) is out of the configuration
// about Fall × FastInterval after its crash with a held connection, and
// within a second without one (docs/performance.md).
func DefaultCheckConfig() CheckConfig {
	return CheckConfig{Interval: 900 * time.Millisecond, FastInterval: 100 * time.Millisecond,
		Timeout: 400 * time.Millisecond, Fall: 2, Rise: 2, MaxInFlight: 256,
		HoldInterval: 5 * time.Second}
}

// checkSlot is the spacing of the grid the checks start on: checks due
// within one slot start together, so that the load balancer wakes up
// about Interval/checkSlot times per interval however many instances it
// checks, rather than once per check.
const checkSlot = 50 * time.Millisecond

// withDefaults returns c with every zero field set to its default.
func (c CheckConfig) withDefaults() CheckConfig {
	d := DefaultCheckConfig()
	c.Interval = orDefault(c.Interval, d.Interval)
	c.FastInterval = orDefault(c.FastInterval, min(d.FastInterval, c.Interval))
	c.Timeout = orDefault(c.Timeout, d.Timeout)
	c.Fall = orDefault(c.Fall, d.Fall)
	c.Rise = orDefault(c.Rise, d.Rise)
	c.MaxInFlight = orDefault(c.MaxInFlight, d.MaxInFlight)
	c.HoldInterval = max(orDefault(c.HoldInterval, d.HoldInterval), c.Interval)
	return c
}

// orDefault returns v, or def when v is zero or negative: the rule of every
// withDefaults in this package, where a zero setting means its default.
func orDefault[T ~int | ~int64 | ~float64](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Validate reports settings that cannot be meant: negative values. Zero
// values are valid and mean the defaults.
func (c CheckConfig) Validate() error {
	return errors.Join(
		negative("interval", c.Interval),
		negative("fast-interval", c.FastInterval),
		negative("timeout", c.Timeout),
		negative("fall", c.Fall),
		negative("rise", c.Rise),
		negative("max-in-flight", c.MaxInFlight),
		negative("hold-interval", c.HoldInterval),
	)
}

// negative returns an error naming the setting when v is negative: the
// rule of every Validate in this package, where zero means the default.
func negative[T ~int | ~int64 | ~float64](name string, v T) error {
	if v < 0 {
		return fmt.Errorf("%s: %v is negative", name, v)
	}
	return nil
}

// instKey names one application instance: an application on a backend node.
type instKey struct {
	node, app string
}

func (k instKey) String() string { return k.node + "/" + k.app }

// Probe kinds.
const (
	probeTCP   = "tcp"
	probeHTTP  = "http"
	probeHTTPS = "https"
)

// probe is one resolved check, comparable with ==, so that a changed
// definition (new address, port or health path) restarts the checker.
type probe struct {
	kind string // probeTCP, probeHTTP or probeHTTPS
	addr string // host:port to connect to
	path string // HTTP only: the path to GET
	host string // HTTP only: Host header and TLS server name; empty means addr
}

// probeFor returns the check of app on node; ok is false when the instance
// is not checked (UDP: there is nothing to connect to).
func probeFor(node catalog.Node, app catalog.Application) (p probe, ok bool) {
	if app.Protocol == catalog.ProtocolUDP || !node.Addr.IsValid() || app.ApplicationPort <= 0 || app.ApplicationPort > 65535 {
		return probe{}, false
	}
	p = probe{kind: probeTCP, addr: netip.AddrPortFrom(node.Addr, uint16(app.ApplicationPort)).String()}
	if app.HealthPath != "" && (app.Protocol == catalog.ProtocolHTTP || app.Protocol == catalog.ProtocolHTTPS) {
		p.kind, p.path = probeHTTP, app.HealthPath
		if app.Protocol == catalog.ProtocolHTTPS {
			p.kind = probeHTTPS
		}
		// Applications that route by host name answer their own names,
		// not an IP address; the first exact domain is one of them.
		for _, d := range app.Domains {
			if !strings.HasPrefix(d, "*.") {
				p.host = d
				break
			}
		}
	}
	return p, true
}

// check returns the shared probe that runs p: any 2xx or 3xx status
// passes (a redirect is the application's answer, see CheckConfig).
func (p probe) check() check.Probe {
	c := check.Probe{Kind: check.TCP, Addr: p.addr}
	if p.kind != probeTCP {
		c.Kind, c.TLS, c.Path, c.Host = check.HTTP, p.kind == probeHTTPS, p.path, p.host
		c.UserAgent, c.Accept = "scrimp-lb-check", check.Range{From: 200, To: 399}
	}
	return c
}

// run performs one check within timeout and returns why it failed, or nil.
func (p probe) run(ctx context.Context, timeout time.Duration) error {
	return p.check().Run(ctx, timeout)
}

// checker runs the check of one instance in its own goroutine.
type checker struct {
	key    instKey
	probe  probe
	cancel context.CancelFunc

	// Guarded by checks.mu. A new instance starts up (check.StartUp):
	// it was just advertised as serving by its own backend, and waiting
	// for a check would delay every fresh join by an interval. A
	// dead-on-arrival instance is out after Fall failures, about a
	// second. A refusal counts as one failure like any other; it is
	// only remembered, for the mass-loss guard.
	count   check.Counter
	refused bool // the last check failed and refused (see check.Refused)
	passing bool // the last check passed
	// proven: a check passed since this checker started, that is since
	// the instance was advertised at this address, port and health
	// path. The mass-loss guard keeps only proven instances: a name in
	// gossip that never answered a check is not a backend it may keep.
	proven bool
	// holding: a connection to the instance is held (see CheckConfig.NoHold).
	holding bool

	// Owned by the checker's loop goroutine.
	wake     chan struct{} // the held connection ended: check now; capacity 1
	held     *hold         // nil when none is held
	holdFrom time.Time     // no connection is held before then (see loop)
}

// newChecker returns the checker of instance k, up until its checks say
// otherwise.
func newChecker(k instKey, p probe, cfg CheckConfig, cancel context.CancelFunc) *checker {
	return &checker{key: k, probe: p, cancel: cancel, count: check.NewCounter(cfg.Rise, cfg.Fall, check.StartUp),
		wake: make(chan struct{}, 1)}
}

// health is what the checks say of an instance.
type health struct {
	// down: Fall checks in a row failed, and Rise have not passed since.
	down bool
	// refused: the last check failed in a way that proves the backend's
	// host was reached (see check.Refused), so the network is not to
	// blame.
	refused bool
	// passing: the last check passed and the instance is not down: the
	// load balancer reaches it, whatever gossip says.
	passing bool
	// proven: a check of it passed since its checker started (this
	// address, port and health path): it served the load balancer at
	// least once, so it may be guarded when it is lost.
	proven bool
	// held: the load balancer holds an idle connection to it, which
	// tells at once when its process dies.
	held bool
}

// checks runs one checker per checked instance. sync starts and stops them
// to match the membership; close stops them all and waits.
type checks struct {
	cfg     CheckConfig
	log     *slog.Logger
	ctx     context.Context // parent of every checker's context
	wg      sync.WaitGroup
	origin  time.Time     // of the grid every check starts on (check.OnGrid)
	slots   int           // grid instants per interval, at least 1
	sem     chan struct{} // MaxInFlight tokens
	changed chan struct{} // a render is due (see record); capacity 1

	mu      sync.Mutex
	running map[instKey]*checker
}

func newChecks(ctx context.Context, cfg CheckConfig, log *slog.Logger) *checks {
	cfg = cfg.withDefaults()
	return &checks{
		cfg:     cfg,
		log:     log,
		ctx:     ctx,
		origin:  time.Now(),
		slots:   max(1, int(cfg.Interval/checkSlot)),
		sem:     make(chan struct{}, cfg.MaxInFlight),
		changed: make(chan struct{}, 1),
		running: map[instKey]*checker{},
	}
}

// sync makes the running checkers match the instances of snap that the
// membership says serve, plus extra (instances the mass-loss guard keeps
// although their nodes vanished). Instances that do not serve (draining,
// down by their own backend's check) are not routed, so there is nothing
// to check; a checker whose probe changed starts over, as up. It must be
// called from one goroutine at a time, never after close.
func (c *checks) sync(snap catalog.Snapshot, extra []instance) {
	want := map[instKey]probe{}
	for _, n := range snap.Nodes {
		if n.Role != catalog.RoleBackend {
			continue
		}
		for _, a := range n.Applications {
			if !a.State.Serving() {
				continue
			}
			if p, ok := probeFor(n, a); ok {
				want[instKey{n.Name, a.Name}] = p
			}
		}
	}
	for _, in := range extra {
		if p, ok := probeFor(in.node, in.app); ok {
			want[instKey{in.node.Name, in.app.Name}] = p
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, ch := range c.running {
		if p, ok := want[k]; !ok || p != ch.probe {
			ch.cancel()
			delete(c.running, k)
		}
	}
	for k, p := range want {
		if _, ok := c.running[k]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(c.ctx)
		ch := newChecker(k, p, c.cfg, cancel)
		c.running[k] = ch
		c.wg.Go(func() { c.loop(ctx, ch) })
	}
}

// health returns what the checks say of every instance that has been
// checked; the others count as up (and unproven). The map is never nil:
// the guard tells checks that are on from checks that are off by it.
func (c *checks) health() map[instKey]health {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[instKey]health{}
	for k, ch := range c.running {
		if down := ch.count.Down(); down || ch.refused || ch.passing || ch.proven {
			out[k] = health{down: down, refused: ch.refused, passing: ch.passing && !down, proven: ch.proven, held: ch.holding}
		}
	}
	return out
}

// close stops every checker and waits until their goroutines have returned.
func (c *checks) close() {
	c.mu.Lock()
	for k, ch := range c.running {
		ch.cancel()
		delete(c.running, k)
	}
	c.mu.Unlock()
	c.wg.Wait()
}

func (c *checks) loop(ctx context.Context, ch *checker) {
	run := ch.probe.check()
	log := c.log.With("node", ch.key.node, "application", ch.key.app, "check", ch.probe.kind, "target", run.Target())
	// Each instance gets a random slot of the grid, so that instances
	// found at once (a restart, a large join) are spread over the
	// interval, and the instances of one slot are checked together (one
	// wake-up of the process for all of them).
	offset := time.Duration(rand.N(c.slots)) * (c.cfg.Interval / time.Duration(c.slots))
	first := check.GridStart(c.origin, offset, c.cfg.Interval, time.Now())
	defer ch.dropHold()
	check.OnGridWake(ctx, first, c.cfg.Interval, ch.wake, func(ctx context.Context) time.Duration {
		select {
		case <-ctx.Done():
			return 0
		case c.sem <- struct{}{}:
		}
		defer func() { <-c.sem }()
		// A held connection that ended is why this check runs now, unless
		// the grid's instant came first. One the application closed soon
		// after it was opened saved no check: none is held for a while.
		now := time.Now()
		if ch.held != nil && ch.held.over() {
			if now.Sub(ch.held.since) < 2*c.cfg.Interval {
				ch.holdFrom = now.Add(c.cfg.HoldInterval)
			}
			ch.held = nil
			select { // this check is the one its end asked for
			case <-ch.wake:
			default:
			}
		}
		// A TCP check of an instance to hold keeps its connection: the
		// connect is the check, and one connect both checks and holds.
		var err error
		var conn net.Conn
		if c.holds(ch) && ch.held == nil && !now.Before(ch.holdFrom) {
			if conn, err = dialHold(ctx, ch.probe.addr, c.cfg.Timeout); err != nil {
				err = fmt.Errorf("connect: %w", err)
			}
		} else {
			err = run.Run(ctx, c.cfg.Timeout)
		}
		if ctx.Err() != nil {
			closeConn(conn)
			return 0 // stopped: the result says nothing about the backend
		}
		flipped, down, news := c.record(ch, err)
		switch {
		case flipped && down:
			log.Warn("backend fails the load balancer's checks: leaving it out of the configuration",
				"err", err, "fall", c.cfg.Fall, "refused", check.Refused(err))
		case flipped:
			log.Info("backend passes the load balancer's checks again", "rise", c.cfg.Rise)
		case err != nil:
			log.Debug("load balancer check failed", "err", err, "refused", check.Refused(err))
		}
		if news {
			select {
			case c.changed <- struct{}{}:
			default:
			}
		}
		if err != nil || down {
			closeConn(conn) // nothing is held while down: Rise passes bring it back
			ch.dropHold()
			c.setHolding(ch, false)
			if unsettled(err, down) {
				return c.cfg.FastInterval
			}
			return 0
		}
		if conn != nil {
			h := &hold{conn: conn, since: now, ended: make(chan struct{})}
			ch.held = h
			c.wg.Go(func() { h.watch(ch.wake) })
		}
		c.setHolding(ch, ch.held != nil)
		if ch.held != nil {
			return c.cfg.HoldInterval
		}
		return 0
	})
}

// holds reports whether the checks of ch hold a connection between them:
// TCP checks, unless NoHold. The answer of a health path is what its
// checks are for, so those keep their checks every Interval.
func (c *checks) holds(ch *checker) bool {
	return !c.cfg.NoHold && ch.probe.kind == probeTCP
}

// setHolding records whether a connection to ch's instance is held, for
// health.
func (c *checks) setHolding(ch *checker, on bool) {
	c.mu.Lock()
	ch.holding = on
	c.mu.Unlock()
}

// closeConn closes conn unless it is nil.
func closeConn(conn net.Conn) {
	if conn != nil {
		conn.Close()
	}
}

// dropHold closes the held connection, if any. The watcher ends by itself
// once the close unblocks its read.
func (ch *checker) dropHold() {
	if ch.held != nil {
		ch.held.drop()
		ch.held = nil
	}
}

// unsettled reports whether a check result disagrees with the state it
// left the instance in (a failure while still up, a pass while still
// down): the next check comes after FastInterval, not Interval.
func unsettled(err error, down bool) bool {
	return (err != nil) != down
}

// record counts one result (err nil for a pass) with rise/fall
// hysteresis, so that one lost packet does not cause two reloads. It
// reports whether down flipped, whether the instance is down now, and
// whether the loop must render again: down flipped, or a check was
// refused after one that was not (the mass-loss guard drops a backend it
// keeps as soon as its host refuses).
func (c *checks) record(ch *checker, err error) (flipped, down, news bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	wasRefused := ch.refused
	flipped, down = ch.record(err)
	return flipped, down, flipped || ch.refused && !wasRefused
}

// record counts one result without the lock and reports whether down
// flipped and whether the instance is down now.
func (ch *checker) record(err error) (flipped, down bool) {
	pass := err == nil
	ch.refused = !pass && check.Refused(err)
	ch.passing = pass
	ch.proven = ch.proven || pass
	flipped, _ = ch.count.Record(pass)
	return flipped, ch.count.Down()
}
