package node

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/cluster"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/internal/loopback"
)

// Issue 13, "917 fake servers stayed in the upstream after they were
// withdrawn": members advertise many servers of an application that never
// serve, then go. The mass-loss guard must not keep them (they were never
// proven to serve), while a real mass loss of proven backends is still
// guarded.
//
// The fake servers are tarpits: their ports accept connections and never
// answer, so every check of the load balancer times out. A refused check
// (nothing listening) would prove the host reachable and the loss real,
// which the guard already never kept; timeouts are what the guard keeps
// when the backends are proven, so they are the case that needs the proof.

// tarpit listens on ip and accepts connections that it never answers,
// until the test ends, and returns its port.
func tarpit(t *testing.T, ip string) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// fakeMember joins tc's cluster as backend name on ip, advertising the
// harness's application "web" (with health path) at a tarpit on ip.
func fakeMember(t *testing.T, tc *testCluster, name, ip string) *cluster.Cluster {
	t.Helper()
	c, err := cluster.New(cluster.Config{
		NodeName: name, BindAddr: ip, Profile: "local", Role: catalog.RoleBackend,
		Applications: []catalog.Application{{Name: "web", ListenPort: tc.listenPort, ApplicationPort: tarpit(t, ip),
			Protocol: catalog.ProtocolHTTP, HealthPath: "/healthz"}},
		Logger: tc.logger.With("node", name, "component", "cluster"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(time.Second) })
	// A real backend's join loop retries; so does this one, a few times,
	// for a dial that times out on a loaded machine (250 ms, local).
	for attempt := 1; ; attempt++ {
		_, err := c.Join([]string{tc.seed})
		if err == nil {
			break
		}
		if attempt == 3 {
			t.Fatalf("%s: join: %v", name, err)
		}
	}
	return c
}

// fakeCrowd starts n fake members fake-PREFIX-0.. on NET.(base+i) and
// waits until the load balancer's membership lists all of them with
// their application.
func fakeCrowd(t *testing.T, tc *testCluster, prefix string, base, n int) []*cluster.Cluster {
	t.Helper()
	var out []*cluster.Cluster
	var names []string
	for i := range n {
		name := fmt.Sprintf("fake-%s-%d", prefix, i)
		names = append(names, name)
		out = append(out, fakeMember(t, tc, name, fmt.Sprintf("%s.%d", tc.net, base+i)))
	}
	waitFor(t, "the fake servers in the load balancer's membership", 10*time.Second, func() bool {
		seen := 0
		for _, node := range tc.lb.Snapshot().Nodes {
			if strings.HasPrefix(node.Name, "fake-"+prefix+"-") && len(node.Applications) == 1 {
				seen++
			}
		}
		return seen == len(names)
	})
	return out
}

// leaveAll starts every member of crowd leaving the cluster at once and
// returns without waiting for them.
func leaveAll(crowd []*cluster.Cluster) {
	for _, c := range crowd {
		go c.Close(time.Second)
	}
}

// fakesRouted returns how many nodes named fake-* the rendered nginx
// configuration routes to.
func fakesRouted(t *testing.T, tc *testCluster) int {
	t.Helper()
	b, err := tc.lb.RenderedConfig()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "# fake-")
}

// waitFakesRouted polls until the rendered configuration routes to a
// fake server (they are routed on arrival, until their checks fail) and
// returns how many it routes then.
func waitFakesRouted(t *testing.T, tc *testCluster) int {
	t.Helper()
	var n int
	waitFor(t, "fake servers routed", 10*time.Second, func() bool {
		n = fakesRouted(t, tc)
		return n > 0
	})
	return n
}

// waitNoFakes polls until the rendered configuration routes to no fake
// server, failing after bound, and checks the guard never acted.
func waitNoFakes(t *testing.T, tc *testCluster, what string, bound time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for fakesRouted(t, tc) > 0 {
		if time.Since(start) > bound {
			t.Fatalf("%s: %d fake servers still in nginx's configuration after %v (lb stats %+v)",
				what, fakesRouted(t, tc), bound, tc.lb.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s := tc.lb.Stats(); s.Guarded != 0 || s.GuardEvents != 0 {
		t.Fatalf("%s: Guarded = %d, GuardEvents = %d; the guard kept servers never proven to serve", what, s.Guarded, s.GuardEvents)
	}
	return time.Since(start)
}

func TestFakeServersAreNotGuarded(t *testing.T) {
	const fakes = 20
	tc := newTestCluster(t, "127.0.113", "local")
	// The real backends' applications run apart from their nodes, as
	// they would beside scrimp: a node whose gossip dies leaves its
	// application serving (the harness's own stops with the node).
	ctx, stopApps := context.WithCancel(context.Background())
	var apps sync.WaitGroup
	t.Cleanup(func() {
		stopApps()
		apps.Wait()
	})
	var real []*testBackend
	for i := 1; i <= 3; i++ {
		port, err := loopback.ServeApp(ctx, &apps, fmt.Sprintf("%s.%d", tc.net, i+1), fmt.Sprintf("backend-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		real = append(real, tc.addBackendEdit(i, 5*time.Second, 0, func(cfg *config.Config) {
			app := &cfg.Backend.Applications[0]
			app.ApplicationPort, app.HealthPath = port, "/healthz"
		}))
	}
	tc.waitServed(10*time.Second, "backend-1", "backend-2", "backend-3")

	// A crowd that joins and leaves at once, before its checks fail:
	// never proven, so removed as soon as it is gone.
	crowd := fakeCrowd(t, tc, "a", 100, fakes)
	t.Logf("crowd a: %d of %d fake servers routed on arrival", waitFakesRouted(t, tc), fakes)
	leaveAll(crowd)
	t.Logf("crowd a: out of nginx %v after it started to leave",
		waitNoFakes(t, tc, "crowd left at once", 5*time.Second).Round(time.Millisecond))

	// A crowd that stays: its checks time out, so it is left out after
	// Fall checks, never guarded although it is most of the
	// application; then it leaves.
	crowd = fakeCrowd(t, tc, "b", 150, fakes)
	t.Logf("crowd b: %d of %d fake servers routed on arrival", waitFakesRouted(t, tc), fakes)
	t.Logf("crowd b, checks timing out: out of nginx %v after it was routed",
		waitNoFakes(t, tc, "crowd failing its checks", 5*time.Second).Round(time.Millisecond))
	leaveAll(crowd)
	// For the next seconds, as the membership loses them (a leave that
	// gossip loses is found by failure detection, later), none is put
	// back.
	left := time.Now()
	for time.Since(left) < 3*time.Second {
		if n := fakesRouted(t, tc); n > 0 {
			t.Fatalf("%d fake servers back in nginx's configuration %v after they left", n, time.Since(left))
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitNoFakes(t, tc, "crowd b left", 0)
	stayed := 0
	for _, node := range tc.lb.Snapshot().Nodes {
		if strings.HasPrefix(node.Name, "fake-") {
			stayed++
		}
	}
	t.Logf("crowd b: %d fake members still in the load balancer's membership %v after they started to leave, none routed",
		stayed, time.Since(left).Round(time.Millisecond))
	counts, errs := tc.burst(30)
	if len(errs) > 0 || len(counts) != 3 {
		t.Fatalf("after the fake servers: answers %v, %d failures (first: %v)", counts, len(errs), first(errs))
	}

	// A real mass loss: two of three proven backends vanish from the
	// load balancer's membership at once (a forged leave each, as lost
	// gossip would look; their applications still answer): guarded,
	// still routed, still served. Fake members that linger in the
	// membership, never proven, do not dilute the loss.
	for _, b := range real[1:] {
		sendForgedLeave(t, tc.seed, b.name)
	}
	waitFor(t, "the guard", 5*time.Second, func() bool { return tc.lb.Stats().Guarded == 2 })
	if s := tc.lb.Stats(); s.GuardEvents != 1 {
		t.Errorf("GuardEvents = %d, want 1", s.GuardEvents)
	}
	// The guard's render may still be on its way to nginx.
	waitFor(t, "all three in nginx's configuration during the guarded loss", 5*time.Second, func() bool {
		return tc.routed("backend-1") && tc.routed("backend-2") && tc.routed("backend-3")
	})
	tc.waitServed(5*time.Second, "backend-1", "backend-2", "backend-3")
}
