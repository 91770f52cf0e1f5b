package lb

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/generator"
)

// members is a membership source the test changes by hand.
type members struct {
	mu      sync.Mutex
	snap    catalog.Snapshot
	changes chan struct{}
}

func newMembers() *members { return &members{changes: make(chan struct{}, 1)} }

func (m *members) Snapshot() catalog.Snapshot {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.snap
}

func (m *members) Changes() <-chan struct{} { return m.changes }

// setBackends replaces the membership with n backends of app "web".
func (m *members) setBackends(n int) {
	var nodes []catalog.Node
	for i := range n {
		nodes = append(nodes, catalog.Node{
			Name: fmt.Sprintf("b%03d", i), Addr: netip.AddrFrom4([4]byte{10, 0, byte(i / 250), byte(1 + i%250)}), Role: catalog.RoleBackend,
			Applications: []catalog.Application{{Name: "web", ListenPort: 80, ApplicationPort: 8080, Protocol: catalog.ProtocolHTTP}},
		})
	}
	m.mu.Lock()
	m.snap = catalog.NewSnapshot(nodes)
	m.mu.Unlock()
	select {
	case m.changes <- struct{}{}:
	default:
	}
}

// set replaces the membership with nodes.
func (m *members) set(nodes ...catalog.Node) {
	m.mu.Lock()
	m.snap = catalog.NewSnapshot(nodes)
	m.mu.Unlock()
	select {
	case m.changes <- struct{}{}:
	default:
	}
}

// recorder is a proxy that keeps what it was asked to apply; reject makes
// it refuse configurations, as nginx -t would.
type recorder struct {
	mu      sync.Mutex
	applied [][]byte
	at      []time.Time // when each of applied was applied
	checks  int
	reject  bool
	delay   time.Duration
}

// setReject makes the proxy refuse configurations, or accept them again.
func (r *recorder) setReject(on bool) {
	r.mu.Lock()
	r.reject = on
	r.mu.Unlock()
}

func (r *recorder) Apply(_ context.Context, config []byte) error {
	time.Sleep(r.delay) // a reload takes time; changes keep arriving meanwhile
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checks++
	if r.reject {
		return errors.New("nginx: [emerg] rejected")
	}
	r.applied = append(r.applied, config)
	r.at = append(r.at, time.Now())
	return nil
}

// last returns the running configuration and when it was applied.
func (r *recorder) last() ([]byte, time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.applied) == 0 {
		return nil, time.Time{}
	}
	return r.applied[len(r.applied)-1], r.at[len(r.at)-1]
}

func (r *recorder) count() (applies, checks int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.applied), r.checks
}

// startLB runs a load balancer without active checks: these tests use
// made-up addresses, which must not be dialled.
func startLB(t *testing.T, m *members, p Proxy, timing Timing) *LB {
	t.Helper()
	return startLBWith(t, Config{Members: m, Proxy: p, Timing: timing, Checks: CheckConfig{Disabled: true}})
}

// startLBWith runs a load balancer with cfg, rendering with nginx unless
// cfg names a generator, until the test ends.
func startLBWith(t *testing.T, cfg Config) *LB {
	t.Helper()
	l, stop := runLB(t, cfg)
	t.Cleanup(stop)
	return l
}

// runLB runs a load balancer with cfg; stop cancels it and returns once
// Run has returned.
func runLB(t *testing.T, cfg Config) (l *LB, stop func()) {
	t.Helper()
	if cfg.Generator == nil {
		gen, err := generator.New("nginx", nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Generator = gen
	}
	if cfg.Input.ListenAddr == "" {
		cfg.Input.ListenAddr = "127.0.0.1"
	}
	l = New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.Run(ctx)
	}()
	return l, func() {
		cancel()
		<-done
	}
}

// settle runs the fake clock of the test's synctest bubble on by d, then
// waits until every other goroutine of the bubble is blocked: whatever the
// load balancer does up to then is done. Only inside synctest.Test.
func settle(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

// waitFor polls cond for tests on real clocks (real checks, real
// sockets); tests of the loop's timing run in a synctest bubble instead.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitForWithin(t, 5*time.Second, what, cond)
}

func waitForWithin(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// The tests below drive the loop's timers on synctest's fake clock: the
// proxy is a recorder and checks are off, so nothing leaves the bubble and
// every duration is exact.

func TestFirstRenderAppliesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMembers()
		p := &recorder{}
		start := time.Now()
		// With an hour of quiet period and max wait, only the immediate
		// path can apply. (Timing.Next is tested for the idle-change case.)
		l := startLB(t, m, p, Timing{Quiet: time.Hour, MaxWait: time.Hour})
		synctest.Wait()
		if a, _ := p.count(); a != 1 {
			t.Fatalf("%d applies, want the first at once", a)
		}
		if _, at := p.last(); !at.Equal(start) {
			t.Errorf("first render applied %v after start, want at once", at.Sub(start))
		}
		if got := l.Stats().Applies; got != 1 {
			t.Fatalf("Applies = %d", got)
		}
	})
}

func TestBurstIsCoalesced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMembers()
		p := &recorder{delay: 5 * time.Millisecond}
		timing := Timing{Quiet: 100 * time.Millisecond, MaxWait: 400 * time.Millisecond}
		startLB(t, m, p, timing)
		settle(p.delay)
		if a, _ := p.count(); a != 1 {
			t.Fatalf("%d applies after the first render, want 1", a)
		}
		settle(150 * time.Millisecond) // idle again

		// 50 joins over half a second.
		for i := 1; i <= 50; i++ {
			m.setBackends(i)
			settle(10 * time.Millisecond)
		}
		last := time.Now().Add(-10 * time.Millisecond)
		settle(timing.MaxWait) // pending changes wait no longer than this
		config, at := p.last()
		if n := countServers(config); n != 50 {
			t.Fatalf("%d servers routed %v after the last join, want 50", n, timing.MaxWait)
		}
		routedAfter := at.Sub(last)
		applies, _ := p.count()
		reloads := applies - 1
		t.Logf("50 joins: %d reloads, all routed %s after the last join", reloads, routedAfter)
		if reloads > 4 {
			t.Errorf("50 joins caused %d reloads; want them coalesced into at most 4", reloads)
		}
		if reloads < 2 {
			t.Errorf("50 joins caused %d reloads; the first should apply at once and the rest later", reloads)
		}
		// Once joins stop, the quiet period ends the wait (plus the
		// reload's own time).
		if routedAfter > timing.Quiet+p.delay {
			t.Errorf("all routed %v after the last join, want at most the quiet period %v plus the reload's %v",
				routedAfter, timing.Quiet, p.delay)
		}
	})
}

func countServers(config []byte) int {
	n := 0
	for i := 0; i+7 <= len(config); i++ {
		if string(config[i:i+7]) == "server " && (i == 0 || config[i-1] == ' ') {
			n++
		}
	}
	return n
}

func TestRejectedConfigIsNotRetriedUntilItChanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMembers()
		p := &recorder{}
		timing := Timing{Quiet: 10 * time.Millisecond, MaxWait: 50 * time.Millisecond}
		l := startLB(t, m, p, timing)
		synctest.Wait()
		if a, _ := p.count(); a != 1 {
			t.Fatalf("%d applies after the first render, want 1", a)
		}

		p.setReject(true)
		m.setBackends(1)
		settle(timing.MaxWait)
		if got := l.Stats().Rejected; got != 1 {
			t.Fatalf("Rejected = %d %v after a change, want 1", got, timing.MaxWait)
		}
		if l.Stats().LastError == nil {
			t.Error("LastError not set after a rejection")
		}
		// The same membership again (a resync, a duplicate event) renders
		// the same refused bytes: the proxy is not asked again (before the
		// retry backoff, see TestRefusedConfigIsRetried).
		m.setBackends(1)
		settle(100 * time.Millisecond)
		// The rejection is two checks: the new configuration, then the
		// running one as the base of a quarantine, which this proxy
		// refuses too, so nothing can be narrowed down.
		if _, checks := p.count(); checks != 3 {
			t.Errorf("proxy checked %d times; want 3 (first render, one rejection and its base)", checks)
		}
		// A real change is tried, and once accepted clears the error.
		p.setReject(false)
		m.setBackends(2)
		settle(timing.MaxWait)
		if got := l.Stats().Applies; got != 2 {
			t.Fatalf("Applies = %d after an accepted change, want 2", got)
		}
		if err := l.Stats().LastError; err != nil {
			t.Errorf("LastError = %v after success", err)
		}
	})
}

// TestRefusedConfigIsRetried: a reload that failed for a passing reason
// is tried again after a backoff, without any membership change.
func TestRefusedConfigIsRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMembers()
		p := &recorder{}
		timing := Timing{Quiet: 10 * time.Millisecond, MaxWait: 50 * time.Millisecond}
		l := startLB(t, m, p, timing)
		synctest.Wait()

		p.setReject(true)
		m.setBackends(2)
		// The rejection comes within MaxWait of the change, so at most
		// MaxWait before this settle returns.
		settle(timing.MaxWait)
		if got := l.Stats().Rejected; got != 1 {
			t.Fatalf("Rejected = %d, want 1", got)
		}
		p.setReject(false) // the proxy is fine again; the membership does not change
		settle(minBackoff - timing.MaxWait - time.Millisecond)
		if got := l.Stats().Applies; got != 1 {
			t.Fatalf("Applies = %d before the %v backoff had passed, want 1 (no retry yet)", got, minBackoff)
		}
		settle(timing.MaxWait + time.Millisecond)
		if got := l.Stats().Applies; got != 2 {
			t.Fatalf("Applies = %d once the %v backoff had passed, want 2 (the retry)", got, minBackoff)
		}
		if cfg, _ := p.last(); countServers(cfg) != 2 {
			t.Errorf("the retry applied %d servers, want 2", countServers(cfg))
		}
	})
}

func TestUnchangedMembershipDoesNotReload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMembers()
		m.setBackends(3)
		p := &recorder{}
		timing := Timing{Quiet: 5 * time.Millisecond, MaxWait: 20 * time.Millisecond}
		l := startLB(t, m, p, timing)
		synctest.Wait()
		for range 5 {
			m.setBackends(3)
			settle(20 * time.Millisecond)
		}
		settle(timing.MaxWait)
		if got := l.Stats().Renders; got < 3 {
			t.Errorf("%d renders for 5 membership events, want at least 3", got)
		}
		if a, _ := p.count(); a != 1 {
			t.Errorf("%d applies for an unchanged membership, want 1", a)
		}
	})
}
