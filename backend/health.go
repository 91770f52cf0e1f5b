package backend

import (
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/config"
)

// probe is one resolved health check: everything needed to run it, and
// comparable with slices.Equal for ExpectStatus, so that the backend can
// tell whether a reloaded application needs a new checker.
type probe struct {
	kind string // config.HealthCheckHTTP or config.HealthCheckTCP
	addr string // host:port to connect to
	// url, host and tls are for HTTP checks: the request URL, the Host
	// header (empty: the address) and whether to speak TLS.
	url    string
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
		kind:     h.Type,
		addr:     netip.AddrPortFrom(addr, uint16(app.ApplicationPort)).String(),
		interval: h.Interval.Duration,
		timeout:  h.Timeout.Duration,
		rise:     h.Rise,
		fall:     h.Fall,
	}
	if p.kind == config.HealthCheckHTTP {
		scheme := "http"
		if app.Protocol == catalog.ProtocolHTTPS {
			scheme, p.tls = "https", true
		}
		p.url = scheme + "://" + p.addr + h.Path
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
	return p.kind == q.kind && p.addr == q.addr && p.url == q.url && p.host == q.host && p.tls == q.tls &&
		slices.Equal(p.expect, q.expect) && p.interval == q.interval && p.timeout == q.timeout &&
		p.rise == q.rise && p.fall == q.fall
}

// newClient returns the HTTP client of one checker. Each check opens a new
// connection (no keep-alive), so a check proves that the application still
// accepts connections, and no idle connection outlives the checker.
// Redirects are not followed: a 3xx is the application's answer. TLS is not
// verified: the check connects to a local address, and the certificate
// names the public domains, not that address.
func (p probe) newClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:             nil, // never send a local check through HTTP_PROXY
			DisableKeepAlives: true,
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true, ServerName: p.host},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// run performs one check and returns why it failed, or nil.
func (p probe) run(ctx context.Context, client *http.Client) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	if p.kind == config.HealthCheckTCP {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", p.addr)
		if err != nil {
			return err
		}
		return conn.Close()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return fmt.Errorf("health check request: %w", err)
	}
	if p.host != "" {
		req.Host = p.host
	}
	req.Header.Set("User-Agent", "scrimp-health-check")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	// Read a little of the body so the server is not cut off mid-write,
	// which some servers log as an error.
	_, _ = io.CopyN(io.Discard, resp.Body, 4096)
	resp.Body.Close()
	if !slices.Contains(p.expect, resp.StatusCode) {
		return fmt.Errorf("status %d, expected %v", resp.StatusCode, p.expect)
	}
	return nil
}

// checker runs one application's health check and keeps its state with
// rise/fall hysteresis, so that a check that fails now and then does not
// change the advertisement.
type checker struct {
	probe  probe
	cancel context.CancelFunc

	mu      sync.Mutex
	state   catalog.State // StateDown until the first check passes
	known   bool          // a check has completed
	started time.Time
	passes  int // consecutive passes while down
	fails   int // consecutive failures while up
}

// startChecker starts running p for application app in a goroutine
// tracked by wg, which ends when ctx is done or stop is called. notify is
// called whenever the state to advertise may have changed.
func startChecker(ctx context.Context, wg *sync.WaitGroup, app string, p probe, log *slog.Logger, notify func()) *checker {
	ctx, cancel := context.WithCancel(ctx)
	c := &checker{
		probe:   p,
		cancel:  cancel,
		state:   catalog.StateDown,
		started: time.Now(),
	}
	log = log.With("application", app, "check", p.kind, "target", cmp.Or(p.url, p.addr))
	wg.Go(func() { c.loop(ctx, log, notify) })
	return c
}

func (c *checker) stop() { c.cancel() }

func (c *checker) loop(ctx context.Context, log *slog.Logger, notify func()) {
	client := c.probe.newClient()
	defer client.CloseIdleConnections()
	ticker := time.NewTicker(c.probe.interval)
	defer ticker.Stop()
	for {
		err := c.probe.run(ctx, client)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			log.Debug("health check failed", "error", err)
		}
		if changed, state, first := c.record(err == nil); changed {
			switch {
			case state == catalog.StateUp:
				log.Info("application is up: health check passed")
			case first:
				log.Warn("application is down: first health check failed", "error", err)
			default:
				log.Warn("application is down: health check failed", "error", err, "fall", c.probe.fall)
			}
			notify()
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// record counts one result and reports whether the backend must look again
// (the state flipped, or this was the first result) and the state now.
//
// The first result decides the state at once: a new instance takes traffic
// after its first passing check rather than after rise of them, because
// there is no history to smooth yet; a failing start is down already.
// After that, state flips only after rise passes or fall failures in a row.
func (c *checker) record(pass bool) (changed bool, state catalog.State, first bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.known {
		c.known = true
		if pass {
			c.state = catalog.StateUp
		}
		return true, c.state, true
	}
	switch {
	case pass && c.state == catalog.StateDown:
		c.passes++
		if c.passes >= c.probe.rise {
			c.state, c.passes = catalog.StateUp, 0
			return true, c.state, false
		}
	case pass:
		c.fails = 0
	case c.state == catalog.StateUp:
		c.fails++
		if c.fails >= c.probe.fall {
			c.state, c.fails = catalog.StateDown, 0
			return true, c.state, false
		}
	default:
		c.passes = 0
	}
	return false, c.state, false
}

// status returns the state to advertise and, while no check has completed,
// the time the first one started.
func (c *checker) status() (state catalog.State, known bool, started time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state, c.known, c.started
}
