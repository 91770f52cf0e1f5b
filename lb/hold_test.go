package lb

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
)

// startChecks runs checks with cfg over the given nodes until the test
// ends, on the real clock.
func startChecks(t *testing.T, cfg CheckConfig, nodes ...catalog.Node) *checks {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	c := newChecks(ctx, cfg, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { cancel(); c.close() })
	c.sync(catalog.Snapshot{Nodes: nodes}, nil)
	return c
}

// TestHoldSeesCrash checks that a held connection tells a crash at once:
// with checks 10 s apart, an application whose process died (its port
// refuses, the connections it held are closed) is down long before the
// next check would have come, and only Fall failed checks after it.
func TestHoldSeesCrash(t *testing.T) {
	app := newKeepingBackend(t)
	cfg := CheckConfig{Interval: 10 * time.Second, HoldInterval: time.Minute, FastInterval: 50 * time.Millisecond,
		Timeout: time.Second, Fall: 2, Rise: 2}
	c := startChecks(t, cfg, app.node("a"))
	key := instKey{"a", "web"}
	// The first check comes within an interval; its connection is held.
	waitForWithin(t, 2*cfg.Interval, "the first check and the held connection", func() bool { return c.health()[key].held })
	if n := app.accepted.Load(); n != 1 {
		t.Errorf("%d connects for the first check and the held connection, want 1: the check's connection is held", n)
	}
	if h := c.health()[key]; h.down || !h.passing {
		t.Fatalf("health before the crash = %+v, want passing", h)
	}
	app.close()
	crashed := time.Now()
	waitForWithin(t, cfg.Interval/2, "the crashed instance to be down", func() bool { return c.health()[key].down })
	t.Logf("down %v after the crash (checks %v apart)", time.Since(crashed).Round(time.Millisecond), cfg.Interval)
	if h := c.health()[key]; !h.refused {
		t.Errorf("health after the crash = %+v, want refused", h)
	}
}

// TestHoldSkipsChecks checks that an instance whose connection is held is
// checked every HoldInterval, not every Interval, and that a process that
// closes its listener but keeps the held connection (a listener closed by
// a live process) is still found by those checks.
func TestHoldSkipsChecks(t *testing.T) {
	held, plain := newKeepingBackend(t), newKeepingBackend(t)
	cfg := CheckConfig{Interval: 100 * time.Millisecond, HoldInterval: 3 * time.Second, FastInterval: 50 * time.Millisecond,
		Timeout: time.Second, Fall: 2, Rise: 2}
	noHold := cfg
	noHold.NoHold = true
	startChecks(t, noHold, plain.node("plain"))
	c := startChecks(t, cfg, held.node("held"))
	key := instKey{"held", "web"}
	waitFor(t, "the held connection", func() bool { return c.health()[key].held })
	heldFrom, plainFrom := held.accepted.Load(), plain.accepted.Load()
	// Until the held one's next check (3 s), the plain one is checked
	// every 100 ms: wait for ten of those.
	waitFor(t, "ten checks of the instance without a held connection", func() bool { return plain.accepted.Load() >= plainFrom+10 })
	if n := held.accepted.Load() - heldFrom; n > 1 {
		t.Errorf("the held instance was checked %d times while the other one was checked 10 times; want at most 1", n)
	}
	// Closing only the listener leaves the held connection open: the
	// checks every HoldInterval find it.
	held.mu.Lock()
	held.ln.Close()
	held.mu.Unlock()
	waitForWithin(t, 4*cfg.HoldInterval, "the instance whose listener closed to be down", func() bool { return c.health()[key].down })
}

// TestHoldNotRenewedAtOnce checks that an application that closes every
// idle connection at once (the plain tcpBackend) is not held again right
// away: each closed held connection would otherwise cost a check and a new
// connection, in a loop. Over ten intervals it gets about ten checks plus
// a few held connections, not hundreds of connects.
func TestHoldNotRenewedAtOnce(t *testing.T) {
	app := newTCPBackend(t)
	cfg := CheckConfig{Interval: 100 * time.Millisecond, HoldInterval: 2 * time.Second, FastInterval: 50 * time.Millisecond,
		Timeout: time.Second, Fall: 2, Rise: 2}
	c := startChecks(t, cfg, app.node("a"))
	waitFor(t, "the first check", func() bool { return app.accepted.Load() >= 1 })
	from, start := app.accepted.Load(), time.Now()
	// A window of the real clock, not an event: count the connects in
	// 10 intervals (a slow machine only lowers the count).
	time.Sleep(10 * cfg.Interval)
	n := app.accepted.Load() - from
	intervals := int64(time.Since(start)/cfg.Interval) + 1
	// Each interval: one check; each HoldInterval: one held connection
	// and the check its end brings.
	if limit := intervals + 2*(int64(time.Since(start)/cfg.HoldInterval)+2); n > limit {
		t.Errorf("%d connects in %d intervals, want at most %d", n, intervals, limit)
	}
	if h := c.health()[instKey{"a", "web"}]; h.down {
		t.Errorf("an application that closes idle connections is down: %+v", h)
	}
}
