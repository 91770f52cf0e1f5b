package node

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/lb"
)

// The ownership attacks of issue 13, tried against real nodes on loopback
// with a real nginx: a member whose node name (and application name)
// sorts first tries to take a legitimate application's domains or name, or
// a listen port of scrimp itself. The incumbent keeps what it has; the
// newcomer is refused, reported and routed nowhere.

// renamed returns a backend edit that renames the node (its app still
// answers with the harness's name, backend-N) and replaces its
// applications.
func renamed(node string, apps ...catalog.Application) func(*config.Config) {
	return func(cfg *config.Config) {
		cfg.NodeName = node
		port := cfg.Backend.Applications[0].ApplicationPort // the harness's app
		cfg.Backend.Applications = nil
		for _, a := range apps {
			if a.ApplicationPort == 0 {
				a.ApplicationPort = port
			}
			cfg.Backend.Applications = append(cfg.Backend.Applications, config.Application{Application: a})
		}
	}
}

// waitDecided polls until the load balancer has decided on application
// app of node: refused it, routed to node, or had a configuration refused
// by the proxy. The tests then assert on requests first, so that they
// fail on what a client sees whatever the load balancer decided.
func (tc *testCluster) waitDecided(t *testing.T, app, node string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("a decision on %s of %s", app, node), 15*time.Second, func() bool {
		return slices.ContainsFunc(tc.lb.Refusals(), func(r lb.Refusal) bool { return r.Application == app && r.Node == node }) ||
			tc.routed(node) || tc.lb.Stats().Rejected > 0
	})
	// The configuration file is written before nginx has reloaded: a
	// render asked for now comes after that apply has finished (the loop
	// is sequential), and nginx runs what it applied.
	before := tc.lb.Stats().Renders
	tc.lb.lb.Resync()
	waitFor(t, "a render after the decision", 10*time.Second, func() bool { return tc.lb.Stats().Renders > before })
}

// refusal returns the load balancer's refusal of application app of
// node, failing the test if there is none.
func (tc *testCluster) refusal(t *testing.T, app, node string) lb.Refusal {
	t.Helper()
	rs := tc.lb.Refusals()
	i := slices.IndexFunc(rs, func(r lb.Refusal) bool { return r.Application == app && r.Node == node })
	if i < 0 {
		t.Fatalf("no refusal of %s on %s: %v", app, node, rs)
	}
	return rs[i]
}

// requireAll sends 20 requests through nginx and fails unless all of them
// were answered by want.
func (tc *testCluster) requireAll(t *testing.T, want string) {
	t.Helper()
	counts, errs := tc.burst(20)
	if len(errs) > 0 || counts[want] != 20 {
		t.Fatalf("answers %v, %d failures (first: %v); want all 20 from %s", counts, len(errs), first(errs), want)
	}
}

// requireRefusalReported checks that the refusal shows in the load
// balancer's stats (as the metrics read them) and in its log.
func requireRefusalReported(t *testing.T, tc *testCluster, logs *tapLines, r lb.Refusal) {
	t.Helper()
	if s := tc.lb.Stats(); s.Refused < 1 || s.RefusalEvents < 1 {
		t.Errorf("stats: %d refused, %d refusal events; want at least 1 each", s.Refused, s.RefusalEvents)
	}
	if n := logs.count("refused: not routed", "application="+r.Application, "node="+r.Node); n != 1 {
		t.Errorf("%d warnings about refusing %s on %s, want exactly 1 (once per change)", n, r.Application, r.Node)
	}
}

// Another application naming the same domain, from a node and with an
// application name that both sort first and with weight 100, gets none
// of the requests; the incumbent gets all of them.
func TestSameDomainsNewcomerGetsNothing(t *testing.T) {
	var logs *tapLines
	tc := newTestClusterSetup(t, "127.0.131", "local", "nginx", nil, func(tc *testCluster) {
		tc.host = "shop.example"
		tc.logger, logs = tapLogger(tc.logger)
	})
	legit := tc.addBackendEdit(1, 5*time.Second, 0, webFor("shop.example", 1))
	tc.waitServed(10*time.Second, legit.name)

	evil := tc.addBackendEdit(2, 5*time.Second, 0, renamed("aaa-evil", catalog.Application{
		Name: "aaa", ListenPort: tc.listenPort, Protocol: catalog.ProtocolHTTP, Domains: []string{"shop.example"}, Weight: 100,
	}))
	tc.waitDecided(t, "aaa", "aaa-evil")
	tc.requireAll(t, legit.name)
	if tc.routed("aaa-evil") {
		t.Error("the newcomer is in nginx's configuration")
	}
	r := tc.refusal(t, "aaa", "aaa-evil")
	if !strings.Contains(r.Reason, `domain shop.example path / is held by application "web"`) {
		t.Errorf("reason %q does not name the holder", r.Reason)
	}
	requireRefusalReported(t, tc, logs, r)
	// Renders go on (resync, checks); the refusal is not logged again.
	before := tc.lb.Stats().Renders
	tc.lb.lb.Resync()
	waitFor(t, "another render", 5*time.Second, func() bool { return tc.lb.Stats().Renders > before })
	requireRefusalReported(t, tc, logs, r)

	// Once the incumbent is gone for good, the domain is free: the
	// newcomer is served, and the incumbent is not kept as retained
	// beside it.
	legit.stop()
	tc.waitServed(10*time.Second, evil.name)
	waitFor(t, "no refusals", 5*time.Second, func() bool { return len(tc.lb.Refusals()) == 0 })
	// The newcomer answers as soon as nginx's new workers run; the old
	// ones accept for 100 ms more with the old configuration (503) until
	// the reload is done (nginx.conf is written before it): wait for the
	// old workers to stop taking requests, then require every answer.
	waitFor(t, "only the newcomer answering", 5*time.Second, func() bool {
		counts, errs := tc.burst(5)
		return len(errs) == 0 && counts[evil.name] == 5
	})
	tc.requireAll(t, evil.name)
	if n := logs.count("forgetting application without backends: another application holds", "application=web"); n != 1 {
		t.Errorf("%d lines about forgetting the retained web, want 1", n)
	}
}

// A node whose name sorts first and that defines "web" differently (its
// own domain, another listen port, weight 100) does not take "web" away:
// the legitimate definition keeps serving every request.
func TestRedefinedApplicationDoesNotTakeOver(t *testing.T) {
	var logs *tapLines
	tc := newTestClusterSetup(t, "127.0.132", "local", "nginx", nil, func(tc *testCluster) {
		tc.host = "shop.example"
		tc.logger, logs = tapLogger(tc.logger)
	})
	legit := tc.addBackendEdit(1, 5*time.Second, 0, webFor("shop.example", 1))
	tc.waitServed(10*time.Second, legit.name)

	otherPort := mustFreePort(t, "127.0.132.1")
	tc.addBackendEdit(2, 5*time.Second, 0, renamed("aaa-evil", catalog.Application{
		Name: "web", ListenPort: otherPort, Protocol: catalog.ProtocolHTTP, Domains: []string{"evil.example"}, Weight: 100,
	}))
	tc.waitDecided(t, "web", "aaa-evil")
	tc.requireAll(t, legit.name)
	r := tc.refusal(t, "web", "aaa-evil")
	if !strings.Contains(r.Reason, `application "web" is held as http on listen port`) {
		t.Errorf("reason %q does not say web is held", r.Reason)
	}
	requireRefusalReported(t, tc, logs, r)

	// A legitimate newcomer with the owner's definition still joins.
	more := tc.addBackendEdit(3, 5*time.Second, 0, webFor("shop.example", 1))
	tc.waitServed(10*time.Second, more.name)
	counts, errs := tc.burst(20)
	if len(errs) > 0 || counts[legit.name]+counts[more.name] != 20 {
		t.Fatalf("answers %v, %d failures (first: %v); want all 20 from %s and %s", counts, len(errs), first(errs), legit.name, more.name)
	}
}

// A tcp application on the load balancer's gossip port, which nginx could
// never bind, is refused and reported; it does not make later
// configurations fail: a legitimate backend joining afterwards is served
// and the proxy (nginx, and HAProxy) never refuses a configuration. Another member pointing an
// application at the load balancer's metrics port (at a loopback address:
// the load balancer's own) is refused as well: the metrics never show up
// behind a public listen port.
func TestForbiddenPortsAreRefused(t *testing.T) {
	for _, c := range []struct{ generator, net string }{{"nginx", "127.0.133"}, {"haproxy", "127.0.135"}} {
		t.Run(c.generator, func(t *testing.T) { testForbiddenPorts(t, c.generator, c.net) })
	}
}

func testForbiddenPorts(t *testing.T, generator, net3 string) {
	var logs *tapLines
	var metricsAddr string
	tc := newTestClusterSetup(t, net3, "local", generator, nil, func(tc *testCluster) {
		tc.logger, logs = tapLogger(tc.logger)
		metricsAddr = fmt.Sprintf("%s.1:%d", net3, mustFreePort(t, net3+".1"))
		tc.edit = func(cfg *config.Config) {
			if cfg.Role == "lb" {
				cfg.MetricsAddr = metricsAddr
			}
		}
	})
	b1 := tc.addBackend(1)
	tc.waitServed(10*time.Second, b1.name)

	gossipPort := netip.MustParseAddrPort(tc.seed).Port()
	metricsPort := netip.MustParseAddrPort(metricsAddr).Port()
	stealPort := mustFreePort(t, net3+".1")
	tc.addBackendEdit(2, 5*time.Second, 0, renamed("aaa-evil",
		catalog.Application{Name: "aaa", ListenPort: int(gossipPort), Protocol: catalog.ProtocolTCP},
		catalog.Application{Name: "aab", ListenPort: stealPort, ApplicationPort: int(metricsPort), Protocol: catalog.ProtocolHTTP},
	))
	tc.waitDecided(t, "aaa", "aaa-evil")
	tc.requireAll(t, b1.name)
	later := tc.addBackend(3)
	tc.waitServed(10*time.Second, b1.name, later.name)
	if s := tc.lb.Stats(); s.Rejected != 0 {
		t.Errorf("the proxy refused %d configurations (last: %v), want none", s.Rejected, s.LastError)
	}

	r := tc.refusal(t, "aaa", "aaa-evil")
	if want := fmt.Sprintf("listen port %d is used by scrimp", gossipPort); !strings.Contains(r.Reason, want) {
		t.Errorf("reason %q, want %q", r.Reason, want)
	}
	requireRefusalReported(t, tc, logs, r)
	r = tc.refusal(t, "aab", "aaa-evil")
	if want := fmt.Sprintf("is this load balancer's own, and port %d", metricsPort); !strings.Contains(r.Reason, want) {
		t.Errorf("reason %q, want %q", r.Reason, want)
	}
	// Nothing listens on the stolen port: the metrics are not published.
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("%s.1:%d", net3, stealPort), time.Second); err == nil {
		c.Close()
		t.Errorf("something listens on %s.1:%d, the port that was to publish the metrics", net3, stealPort)
	}
	if regexp.MustCompile(fmt.Sprintf(`:%d\b`, gossipPort)).MatchString(renderedConfig(t, tc)) {
		t.Errorf("the gossip port %d is in %s's configuration", gossipPort, generator)
	}
}

// A listen port outside lb.listen-ports is refused; one inside is served.
func TestListenPortPolicy(t *testing.T) {
	var allowed int
	tc := newTestClusterSetup(t, "127.0.134", "local", "nginx", nil, func(tc *testCluster) {
		allowed = tc.listenPort
		tc.edit = func(cfg *config.Config) {
			if cfg.Role == "lb" {
				cfg.LB.ListenPorts = []config.PortRange{config.PortRange(fmt.Sprint(allowed))}
			}
		}
	})
	first := tc.addBackend(1)
	tc.waitServed(10*time.Second, first.name)
	other := mustFreePort(t, "127.0.134.1")
	tc.addBackendEdit(2, 5*time.Second, 0, renamed("aaa-other", catalog.Application{Name: "other", ListenPort: other, Protocol: catalog.ProtocolHTTP}))
	tc.waitDecided(t, "other", "aaa-other")
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.134.1:%d", other), time.Second); err == nil {
		c.Close()
		t.Errorf("nginx listens on the refused listen port %d", other)
	}
	tc.requireAll(t, first.name)
	r := tc.refusal(t, "other", "aaa-other")
	if want := fmt.Sprintf("listen port %d is not one lb.listen-ports allows", other); r.Reason != want {
		t.Errorf("reason %q, want %q", r.Reason, want)
	}
}

func renderedConfig(t *testing.T, tc *testCluster) string {
	t.Helper()
	b, err := tc.lb.RenderedConfig()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
