package backend

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/check"
	"github.com/scrimplb/scrimp/config"
)

// probe is one resolved health check: everything needed to run it, and
// comparable with slices.Equal for ExpectStatus, so that the backend can
// tell whether a reloaded application needs a new checker.
type probe struct {
	kind check.Kind // check.HTTP or check.TCP
	addr string     // host:port to connect to
	// path, host and tls are for HTTP checks: the request path, the Host
	// header (empty: the address) and whether to speak TLS.
	path   string
	host   string
	tls    bool
	expect []int

	interval, timeout time.Duration
	rise, fall        int
}

// newProbe resolves app's health check against the address checks
// connect to.
func newProbe(app config.Application, addr netip.Addr) probe {
	h := app.HealthCheck.Resolve(app.Application)
	p := probe{
		kind:     check.TCP,
		addr:     netip.AddrPortFrom(addr, uint16(app.ApplicationPort)).String(),
		interval: h.Interval.Duration,
		timeout:  h.Timeout.Duration,
		rise:     h.Rise,
		fall:     h.Fall,
	}
	if h.Type == config.HealthCheckHTTP {
		p.kind, p.path = check.HTTP, h.Path
		p.tls = app.Protocol == catalog.ProtocolHTTPS
		p.expect = slices.Clone(h.ExpectStatus)
		// Applications that route by host name answer their own names,
		// not 127.0.0.1; the first exact domain is one of them.
		for _, d := range app.Domains {
			if !strings.HasPrefix(d, "*.") {
				p.host = d
				break
			}
		}
	}
	return p
}

func (p probe) equal(q probe) bool {
	return p.kind == q.kind && p.addr == q.addr && p.path == q.path && p.host == q.host && p.tls == q.tls &&
		slices.Equal(p.expect, q.expect) && p.interval == q.interval && p.timeout == q.timeout &&
		p.rise == q.rise && p.fall == q.fall
}

// check returns the shared probe that runs p: only the listed statuses
// pass, so a redirect fails unless it is listed. TLS is not verified: the
// check connects to a local address, and the certificate names the public
// domains, not that address.
func (p probe) check() check.Probe {
	c := check.Probe{Kind: p.kind, Addr: p.addr}
	if p.kind == check.HTTP {
		c.TLS, c.Path, c.Host = p.tls, p.path, p.host
		c.UserAgent, c.Accept = "scrimp-health-check", check.Codes(p.expect)
	}
	return c
}

// checker runs one application's health check and keeps its state with
// rise/fall hysteresis, so that a check that fails now and then does not
// change the advertisement.
type checker struct {
	probe  probe
	cancel context.CancelFunc

	mu sync.Mutex
	// count is down until the first check passes; the first result
	// decides the state at once (check.FirstDecides): a new instance
	// takes traffic after its first passing check rather than after rise
	// of them, because there is no history to smooth yet, and a failing
	// start is down already.
	count   check.Counter
	started time.Time
}

// startChecker starts running p for application app in a goroutine
// tracked by wg, which ends when ctx is done or stop is called. notify is
// called whenever the state to advertise may have changed.
func startChecker(ctx context.Context, wg *sync.WaitGroup, app string, p probe, log *slog.Logger, notify func()) *checker {
	ctx, cancel := context.WithCancel(ctx)
	c := &checker{
		probe:   p,
		cancel:  cancel,
		count:   check.NewCounter(p.rise, p.fall, check.FirstDecides),
		started: time.Now(),
	}
	run := p.check()
	log = log.With("application", app, "check", string(p.kind), "target", run.Target())
	wg.Go(func() { check.Every(ctx, 0, p.interval, func(ctx context.Context) { c.run(ctx, run, log, notify) }) })
	return c
}

func (c *checker) stop() { c.cancel() }

// run performs one check and records its result.
func (c *checker) run(ctx context.Context, run check.Probe, log *slog.Logger, notify func()) {
	err := run.Run(ctx, c.probe.timeout)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		log.Debug("health check failed", "err", err)
	}
	if changed, state, first := c.record(err == nil); changed {
		switch {
		case state == catalog.StateUp:
			log.Info("application is up: health check passed")
		case first:
			log.Warn("application is down: first health check failed", "err", err)
		default:
			log.Warn("application is down: health check failed", "err", err, "fall", c.probe.fall)
		}
		notify()
	}
}

// record counts one result and reports whether the backend must look again
// (the state flipped, or this was the first result) and the state now.
func (c *checker) record(pass bool) (changed bool, state catalog.State, first bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	flipped, first := c.count.Record(pass)
	return flipped || first, c.stateLocked(), first
}

// stateLocked is the state to advertise; c.mu must be held.
func (c *checker) stateLocked() catalog.State {
	if c.count.Down() {
		return catalog.StateDown
	}
	return catalog.StateUp
}

// status returns the state to advertise and, while no check has completed,
// the time the first one started.
func (c *checker) status() (state catalog.State, known bool, started time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stateLocked(), c.count.Known(), c.started
}
