package lb

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/generator"
)

// defaultTiming is the configuration file's default reload schedule.
var defaultTiming = Timing{Quiet: 200 * time.Millisecond, MaxWait: time.Second}

// fastChecks make loop tests quick; the default settings are measured in
// TestClosedPortIsLeftOutAndComesBack.
var fastChecks = CheckConfig{Interval: 50 * time.Millisecond, Timeout: 200 * time.Millisecond}

// routes reports whether config has a server line for addr.
func routes(config []byte, addr netip.AddrPort) bool {
	return bytes.Contains(config, []byte("server "+addr.String()+" "))
}

// waitConfig waits until the running configuration satisfies cond and
// returns it with the time it was applied.
func waitConfig(t *testing.T, p *recorder, what string, cond func(config []byte) bool) ([]byte, time.Time) {
	t.Helper()
	var config []byte
	var at time.Time
	waitFor(t, what, func() bool {
		config, at = p.last()
		return config != nil && cond(config)
	})
	return config, at
}

// tcpBackends starts n listeners and returns them with their nodes b1..bn.
func tcpBackends(t *testing.T, n int) ([]*tcpBackend, []catalog.Node) {
	t.Helper()
	var bs []*tcpBackend
	var nodes []catalog.Node
	for i := range n {
		b := newTCPBackend(t)
		bs = append(bs, b)
		nodes = append(nodes, b.node(fmt.Sprintf("b%d", i+1)))
	}
	return bs, nodes
}

func TestClosedPortIsLeftOutAndComesBack(t *testing.T) {
	bs, nodes := tcpBackends(t, 3)
	m := newMembers()
	m.set(nodes...)
	p := &recorder{}
	// The default check settings: the figures logged below are the ones
	// to expect in production (plus the proxy's reload time).
	l := startLBWith(t, Config{Members: m, Proxy: p, Timing: defaultTiming})
	waitConfig(t, p, "all three routed", func(c []byte) bool { return countServers(c) == 3 })

	closed := time.Now()
	bs[1].close()
	_, removed := waitConfig(t, p, "b2 left out", func(c []byte) bool { return !routes(c, bs[1].addr) && countServers(c) == 2 })
	t.Logf("port closed → left out of the applied configuration: %v (checks every %v, timeout %v, fall %d)",
		removed.Sub(closed).Round(time.Millisecond), DefaultCheckConfig().Interval, DefaultCheckConfig().Timeout, DefaultCheckConfig().Fall)
	if s := l.Stats(); s.CheckDown != 1 || s.Guarded != 0 {
		t.Errorf("CheckDown = %d, Guarded = %d; want 1, 0 (one of three is a single failure)", s.CheckDown, s.Guarded)
	}

	reopened := time.Now()
	bs[1].reopen()
	_, back := waitConfig(t, p, "b2 back", func(c []byte) bool { return routes(c, bs[1].addr) && countServers(c) == 3 })
	t.Logf("port reopened → back in the applied configuration: %v (rise %d)", back.Sub(reopened).Round(time.Millisecond), DefaultCheckConfig().Rise)
	waitFor(t, "CheckDown back to 0", func() bool { return l.Stats().CheckDown == 0 })
}

func TestFailingHealthPathIsLeftOut(t *testing.T) {
	tests := []struct {
		name     string
		protocol catalog.Protocol
		start    func(http.Handler) *httptest.Server
	}{
		{"http", catalog.ProtocolHTTP, httptest.NewServer},
		{"https without certificate verification", catalog.ProtocolHTTPS, httptest.NewTLSServer},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var failing [2]atomic.Bool
			var nodes []catalog.Node
			var addrs []netip.AddrPort
			for i := range 2 {
				srv := tc.start(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path != "/healthz" || failing[i].Load() {
						http.Error(w, "unhealthy", http.StatusInternalServerError)
						return
					}
					w.WriteHeader(http.StatusOK)
				}))
				t.Cleanup(srv.Close)
				addr := netip.MustParseAddrPort(srv.Listener.Addr().String())
				addrs = append(addrs, addr)
				nodes = append(nodes, catalog.Node{Name: fmt.Sprintf("b%d", i+1), Addr: addr.Addr(), Role: catalog.RoleBackend,
					Applications: []catalog.Application{{Name: "web", ListenPort: 443, ApplicationPort: int(addr.Port()),
						Protocol: tc.protocol, HealthPath: "/healthz", Domains: []string{"app.example.com"}}}})
			}
			m := newMembers()
			m.set(nodes...)
			p := &recorder{}
			// The generator renders https only with a certificate; it
			// never reads the files.
			in := generator.Input{TLS: []generator.TLSCert{{Domains: []string{"app.example.com"}, Cert: "/etc/ssl/app.pem", Key: "/etc/ssl/app.key"}}}
			l := startLBWith(t, Config{Members: m, Proxy: p, Input: in, Timing: defaultTiming, Checks: fastChecks})
			waitConfig(t, p, "both routed", func(c []byte) bool { return routes(c, addrs[0]) && routes(c, addrs[1]) })

			failing[0].Store(true) // the port stays open: only the health path fails
			waitConfig(t, p, "b1 left out", func(c []byte) bool { return !routes(c, addrs[0]) && routes(c, addrs[1]) })
			if s := l.Stats(); s.CheckDown != 1 {
				t.Errorf("CheckDown = %d, want 1", s.CheckDown)
			}
			failing[0].Store(false)
			waitConfig(t, p, "b1 back", func(c []byte) bool { return routes(c, addrs[0]) && routes(c, addrs[1]) })
		})
	}
}

// httpBackend is an application on 127.0.0.1 with a health path that
// answers 200, or, once hung, never answers: its checks time out, as they
// do when the network between the load balancer and the backend fails.
type httpBackend struct {
	addr netip.AddrPort
	hung atomic.Bool
}

func newHTTPBackend(t *testing.T) *httpBackend {
	t.Helper()
	b := &httpBackend{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b.hung.Load() {
			select {
			case <-r.Context().Done(): // the check gave up
			case <-time.After(5 * time.Second):
			}
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	b.addr = netip.MustParseAddrPort(srv.Listener.Addr().String())
	return b
}

func (b *httpBackend) node(name string) catalog.Node {
	return catalog.Node{Name: name, Addr: b.addr.Addr(), Role: catalog.RoleBackend,
		Applications: []catalog.Application{{Name: "web", ListenPort: 80, ApplicationPort: int(b.addr.Port()),
			Protocol: catalog.ProtocolHTTP, HealthPath: "/healthz"}}}
}

// lossCase is a way to lose backends.
type lossCase struct {
	name string
	// lose takes the backends which away: from the membership, or from
	// the network as the load balancer's checks see it.
	lose func(m *members, bs []*httpBackend, nodes []catalog.Node, which ...int)
}

var lossCases = []lossCase{
	{"vanished from the membership", func(m *members, _ []*httpBackend, nodes []catalog.Node, which ...int) {
		var keep []catalog.Node
		for i, n := range nodes {
			if !slices.Contains(which, i) {
				keep = append(keep, n)
			}
		}
		m.set(keep...)
	}},
	{"checks timing out", func(_ *members, bs []*httpBackend, _ []catalog.Node, which ...int) {
		for _, i := range which {
			bs[i].hung.Store(true)
		}
	}},
}

// httpBackends starts n backends and returns them with their nodes b1..bn.
func httpBackends(t *testing.T, n int) ([]*httpBackend, []catalog.Node) {
	t.Helper()
	var bs []*httpBackend
	var nodes []catalog.Node
	for i := range n {
		b := newHTTPBackend(t)
		bs = append(bs, b)
		nodes = append(nodes, b.node(fmt.Sprintf("b%d", i+1)))
	}
	return bs, nodes
}

func TestMassLossIsGuarded(t *testing.T) {
	const grace = 500 * time.Millisecond
	for _, tc := range lossCases {
		t.Run(tc.name, func(t *testing.T) {
			bs, nodes := httpBackends(t, 4)
			m := newMembers()
			m.set(nodes...)
			p := &recorder{}
			l := startLBWith(t, Config{Members: m, Proxy: p, Timing: defaultTiming, Checks: fastChecks, Guard: GuardConfig{Grace: grace}})
			waitConfig(t, p, "four routed", func(c []byte) bool { return countServers(c) == 4 })
			waitProven(t, l, 4)

			lost := time.Now()
			tc.lose(m, bs, nodes, 1, 2, 3)
			waitFor(t, "the guard", func() bool { return l.Stats().Guarded == 3 })
			if s := l.Stats(); s.GuardEvents != 1 {
				t.Errorf("GuardEvents = %d, want 1", s.GuardEvents)
			}
			if c, _ := p.last(); countServers(c) != 4 {
				t.Errorf("guarded backends are not in the configuration:\n%s", c)
			}
			// Lost for real: the load balancer cannot reach them either
			// (one it still reaches is kept; see
			// TestGossipLossKeepsReachableBackends).
			for _, b := range bs[1:] {
				b.hung.Store(true)
			}
			_, removed := waitConfig(t, p, "guarded backends removed after grace", func(c []byte) bool {
				return countServers(c) == 1 && routes(c, bs[0].addr)
			})
			if since := removed.Sub(lost); since < grace {
				t.Errorf("guarded backends removed %v after the loss, before the %v grace period", since, grace)
			}
			if s := l.Stats(); s.Guarded != 0 {
				t.Errorf("Guarded = %d after grace, want 0", s.Guarded)
			}
		})
	}
}

// TestGossipLossKeepsReachableBackends cuts the load balancer off from
// gossip only (every backend vanishes from the membership, as when its
// gossip port is blocked) while the backends still answer its checks: the
// running configuration keeps serving them past the grace period, for as
// long as they answer; one that stops answering goes after its grace.
func TestGossipLossKeepsReachableBackends(t *testing.T) {
	const grace = 300 * time.Millisecond
	bs, nodes := httpBackends(t, 3)
	m := newMembers()
	m.set(nodes...)
	p := &recorder{}
	l := startLBWith(t, Config{Members: m, Proxy: p, Timing: defaultTiming, Checks: fastChecks, Guard: GuardConfig{Grace: grace}})
	waitConfig(t, p, "three routed", func(c []byte) bool { return countServers(c) == 3 })
	waitProven(t, l, 3)

	m.set() // the load balancer alone
	waitFor(t, "the guard", func() bool { return l.Stats().Guarded == 3 })
	// Three grace periods later, all are still served.
	deadline := time.Now().Add(3 * grace)
	for time.Now().Before(deadline) {
		c, _ := p.last()
		if countServers(c) != 3 {
			t.Fatalf("a reachable backend was removed while gossip was cut off:\n%s", c)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s := l.Stats(); s.Guarded != 3 {
		t.Errorf("Guarded = %d, want 3", s.Guarded)
	}

	bs[2].hung.Store(true)
	waitConfig(t, p, "the backend that stopped answering removed", func(c []byte) bool {
		return countServers(c) == 2 && !routes(c, bs[2].addr)
	})
	m.set(nodes[:2]...) // gossip is back
	waitFor(t, "the guard ends", func() bool { return l.Stats().Guarded == 0 })
	if c, _ := p.last(); countServers(c) != 2 || !routes(c, bs[0].addr) || !routes(c, bs[1].addr) {
		t.Errorf("after gossip came back:\n%s", c)
	}
}

func TestSingleLossIsRemovedAtOnce(t *testing.T) {
	for _, tc := range lossCases {
		t.Run(tc.name, func(t *testing.T) {
			bs, nodes := httpBackends(t, 4)
			m := newMembers()
			m.set(nodes...)
			p := &recorder{}
			// With an hour of grace, a guarded backend could not be
			// removed in time.
			l := startLBWith(t, Config{Members: m, Proxy: p, Timing: defaultTiming, Checks: fastChecks, Guard: GuardConfig{Grace: time.Hour}})
			waitConfig(t, p, "four routed", func(c []byte) bool { return countServers(c) == 4 })
			waitProven(t, l, 4)
			tc.lose(m, bs, nodes, 2)
			waitConfig(t, p, "b3 removed", func(c []byte) bool { return countServers(c) == 3 && !routes(c, bs[2].addr) })
			if s := l.Stats(); s.Guarded != 0 || s.GuardEvents != 0 {
				t.Errorf("Guarded = %d, GuardEvents = %d; want 0, 0", s.Guarded, s.GuardEvents)
			}
		})
	}
}

// TestMassRefusalIsNotGuarded: backends whose ports refuse connections
// are dead, not cut off, however many they are: the load balancer reached
// their hosts.
func TestMassRefusalIsNotGuarded(t *testing.T) {
	bs, nodes := tcpBackends(t, 4)
	m := newMembers()
	m.set(nodes...)
	p := &recorder{}
	l := startLBWith(t, Config{Members: m, Proxy: p, Timing: defaultTiming, Checks: fastChecks, Guard: GuardConfig{Grace: time.Hour}})
	waitConfig(t, p, "four routed", func(c []byte) bool { return countServers(c) == 4 })
	waitProven(t, l, 4)
	for _, b := range bs[1:] {
		b.close()
	}
	waitConfig(t, p, "three removed", func(c []byte) bool { return countServers(c) == 1 && routes(c, bs[0].addr) })
	// And when their nodes are then declared dead, they stay out.
	renders := l.Stats().Renders
	m.set(nodes[0])
	waitFor(t, "a render after they vanished", func() bool { return l.Stats().Renders > renders })
	if c, _ := p.last(); countServers(c) != 1 {
		t.Errorf("dead backends are back in the configuration:\n%s", c)
	}
	if s := l.Stats(); s.Guarded != 0 || s.GuardEvents != 0 {
		t.Errorf("Guarded = %d, GuardEvents = %d; want 0, 0", s.Guarded, s.GuardEvents)
	}
}

// TestGuardedBackendsAreStillChecked: the load balancer keeps checking
// backends it keeps after their nodes vanished, and drops one as soon as
// its host refuses connections.
func TestGuardedBackendsAreStillChecked(t *testing.T) {
	bs, nodes := tcpBackends(t, 4)
	m := newMembers()
	m.set(nodes...)
	p := &recorder{}
	l := startLBWith(t, Config{Members: m, Proxy: p, Timing: defaultTiming, Checks: fastChecks, Guard: GuardConfig{Grace: time.Hour}})
	waitConfig(t, p, "four routed", func(c []byte) bool { return countServers(c) == 4 })
	waitProven(t, l, 4)
	m.set(nodes[0])
	waitFor(t, "the guard", func() bool { return l.Stats().Guarded == 3 })
	checked := bs[1].accepted.Load()
	waitFor(t, "a check of a guarded backend", func() bool { return bs[1].accepted.Load() > checked })

	bs[1].close()
	waitConfig(t, p, "b2 removed", func(c []byte) bool { return countServers(c) == 3 && !routes(c, bs[1].addr) })
	if s := l.Stats(); s.Guarded != 2 {
		t.Errorf("Guarded = %d, want 2", s.Guarded)
	}
}

func TestDrainingIsNotGuarded(t *testing.T) {
	bs, nodes := tcpBackends(t, 4)
	m := newMembers()
	m.set(nodes...)
	p := &recorder{}
	l := startLBWith(t, Config{Members: m, Proxy: p, Timing: defaultTiming, Checks: fastChecks, Guard: GuardConfig{Grace: time.Hour}})
	waitConfig(t, p, "four routed", func(c []byte) bool { return countServers(c) == 4 })
	waitProven(t, l, 4)

	draining := []catalog.Node{nodes[0]}
	for _, n := range nodes[1:] {
		n.Applications = []catalog.Application{n.Applications[0]}
		n.Applications[0].State = catalog.StateDraining
		draining = append(draining, n)
	}
	m.set(draining...)
	waitConfig(t, p, "draining backends removed", func(c []byte) bool { return countServers(c) == 1 && routes(c, bs[0].addr) })
	// They finish draining and leave, closing their ports.
	renders := l.Stats().Renders
	for _, b := range bs[1:] {
		b.close()
	}
	m.set(nodes[0])
	waitFor(t, "a render after they left", func() bool { return l.Stats().Renders > renders })
	if c, _ := p.last(); countServers(c) != 1 {
		t.Errorf("backends that drained are back in the configuration:\n%s", c)
	}
	if s := l.Stats(); s.Guarded != 0 || s.GuardEvents != 0 {
		t.Errorf("Guarded = %d, GuardEvents = %d; want 0, 0", s.Guarded, s.GuardEvents)
	}
}

func TestRunStopsItsCheckers(t *testing.T) {
	bs, nodes := tcpBackends(t, 20)
	m := newMembers()
	m.set(nodes...)
	before := runtime.NumGoroutine()
	l, stop := runLB(t, Config{Members: m, Proxy: &recorder{}, Timing: defaultTiming,
		Checks: CheckConfig{Interval: 10 * time.Millisecond, Timeout: 100 * time.Millisecond}})
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			stop()
		}
	})
	waitFor(t, "every backend checked twice", func() bool {
		for _, b := range bs {
			if b.accepted.Load() < 2 {
				return false
			}
		}
		return l.Stats().Renders > 0
	})
	if n := runtime.NumGoroutine(); n < before+len(bs) {
		t.Errorf("%d goroutines while checking %d backends, %d before: where are the checkers?", n, len(bs), before)
	}
	stop()
	stopped = true
	// Run waits for its checkers: none may be running once it returned.
	// (Their goroutines may still be exiting, so the count is polled.)
	if stacks := checkerStacks(); stacks != "" {
		t.Errorf("checkers still running after Run returned:\n%s", stacks)
	}
	waitForGoroutines(t, before)

	// A checker that is stopped while the load balancer runs returns too.
	// (Without the guard, which would keep checking the 19 lost at once.)
	l, stop = runLB(t, Config{Members: m, Proxy: &recorder{}, Timing: defaultTiming, Checks: fastChecks, Guard: GuardConfig{Disabled: true}})
	t.Cleanup(stop)
	waitFor(t, "first render", func() bool { return l.Stats().Renders > 0 })
	m.set(nodes[0])
	waitFor(t, "render without 19 backends", func() bool { return l.Stats().Renders > 1 })
	waitForGoroutines(t, before+2) // the goroutine running Run, and one checker
}

// waitForGoroutines waits until at most want goroutines run, and fails
// with their stacks if that does not happen.
func waitForGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), want, lbStacks(string(buf)))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkerStacks returns the stacks of goroutines running a checker.
func checkerStacks() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "scrimp/lb.(*checks).loop") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// lbStacks returns the goroutine stacks in dump that run code of this
// package, or all of them if none does.
func lbStacks(dump string) string {
	var out []string
	for _, g := range strings.Split(dump, "\n\n") {
		if strings.Contains(g, "scrimp/lb.(") {
			out = append(out, g)
		}
	}
	if len(out) == 0 {
		return dump
	}
	return strings.Join(out, "\n\n")
}
