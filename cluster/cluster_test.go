package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/scrimplb/scrimp/catalog"
)

// testNode starts a member on its own loopback address (127.0.0.N): on one
// address memberlist converges only after a push/pull interval.
func testNode(t *testing.T, ip int, role catalog.Role, apps ...catalog.Application) *Cluster {
	t.Helper()
	return keyedNode(t, ip, role, nil, "", apps...)
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(newTestWriter(t), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// testWriter sends log lines to t.Log until the test ends; memberlist's
// goroutines may still log while they wind down, and t.Log after the end
// of a test is a race.
type testWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func newTestWriter(t *testing.T) *testWriter {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return w
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

func app(name string, port int) catalog.Application {
	return catalog.Application{Name: name, ListenPort: 80, ApplicationPort: port, Protocol: catalog.ProtocolHTTP, Domains: []string{name + ".example.com"}}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func names(s catalog.Snapshot) string {
	var n []string
	for _, node := range s.Nodes {
		n = append(n, node.Name)
	}
	return strings.Join(n, ",")
}

func TestJoinConvergesAndSnapshotIsOrdered(t *testing.T) {
	lb := testNode(t, 11, catalog.RoleLB)
	b1 := testNode(t, 12, catalog.RoleBackend, app("web", 8080))
	b2 := testNode(t, 13, catalog.RoleBackend, app("web", 8081), app("api", 9000))
	for _, b := range []*Cluster{b2, b1} {
		if _, err := b.Join([]string{lb.LocalAddr()}); err != nil {
			t.Fatalf("Join: %v", err)
		}
	}
	want := "backend-12,backend-13,lb-11"
	for _, c := range []*Cluster{lb, b1, b2} {
		waitFor(t, c.LocalName()+" to see all members", 5*time.Second, func() bool { return names(c.Snapshot()) == want })
	}
	// The load balancer fetches each backend's applications after it sees
	// the backend join.
	waitFor(t, "applications at the load balancer", 5*time.Second, func() bool {
		services, _ := lb.Snapshot().Services()
		return len(services) == 2 && len(services[1].Servers) == 2
	})
	snap := lb.Snapshot()
	b := snap.Nodes[1]
	if b.Addr != netip.MustParseAddr("127.0.0.13") || b.Role != catalog.RoleBackend || len(b.Applications) != 2 ||
		b.Applications[0].Name != "api" || b.Applications[1].ApplicationPort != 8081 {
		t.Errorf("backend-13 as seen by lb = %+v", b)
	}
	services, conflicts := snap.Services()
	if len(services) != 2 || len(conflicts) != 0 || len(services[1].Servers) != 2 {
		t.Errorf("Services = %+v, conflicts %+v", services, conflicts)
	}
}

func TestChangesSignalAndUpdateIsRebroadcast(t *testing.T) {
	lb := testNode(t, 21, catalog.RoleLB)
	b := testNode(t, 22, catalog.RoleBackend, app("web", 8080))
	if _, err := b.Join([]string{lb.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "backend visible", 5*time.Second, func() bool { return lb.Snapshot().Backends() == 1 })
	drain(lb.Changes())
	if err := b.UpdateApplications(catalog.RoleBackend, []catalog.Application{app("web", 8080), app("new", 7000)}, time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lb.Changes():
	case <-time.After(5 * time.Second):
		t.Fatal("no change signalled after a metadata update")
	}
	waitFor(t, "update visible", 5*time.Second, func() bool {
		n := lb.Snapshot().Nodes
		return len(n) == 2 && len(n[0].Applications) == 2 && n[0].Applications[0].Name == "new"
	})
}

// TestUnconfirmedBroadcastStillSpreads updates a backend with a broadcast
// timeout too short for any confirmation: the update is not an error (the
// new set is the node's state already) and still reaches the load
// balancer. Backends stopped together used to give up draining here.
func TestUnconfirmedBroadcastStillSpreads(t *testing.T) {
	lb := testNode(t, 23, catalog.RoleLB)
	b := testNode(t, 24, catalog.RoleBackend, app("web", 8080))
	if _, err := b.Join([]string{lb.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "backend visible", 5*time.Second, func() bool { return lb.Snapshot().Backends() == 1 })
	draining := app("web", 8080)
	draining.State = catalog.StateDraining
	if err := b.UpdateApplications(catalog.RoleBackend, []catalog.Application{draining}, time.Nanosecond); err != nil {
		t.Fatalf("UpdateApplications with an unconfirmed broadcast: %v", err)
	}
	waitFor(t, "draining visible at the load balancer", 5*time.Second, func() bool {
		n := lb.Snapshot().Nodes
		return len(n) == 2 && len(n[0].Applications) == 1 && n[0].Applications[0].State == catalog.StateDraining
	})
}

func drain(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

func TestGracefulLeaveAndCrash(t *testing.T) {
	lb := testNode(t, 31, catalog.RoleLB)
	left := testNode(t, 32, catalog.RoleBackend, app("web", 8080))
	crashed := testNode(t, 33, catalog.RoleBackend, app("web", 8080))
	// A third live member confirms the suspicion; alone with one peer,
	// memberlist waits the suspicion maximum (18 s on "local").
	witness := testNode(t, 34, catalog.RoleBackend, app("other", 8080))
	for _, b := range []*Cluster{left, crashed, witness} {
		if _, err := b.Join([]string{lb.LocalAddr()}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "all backends", 5*time.Second, func() bool { return lb.Snapshot().Backends() == 3 })

	start := time.Now()
	if err := left.Close(time.Second); err != nil {
		t.Fatal(err)
	}
	if err := left.Close(time.Second); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	waitFor(t, "graceful leave", 2*time.Second, func() bool { return lb.Snapshot().Backends() == 2 })
	t.Logf("graceful leave seen after %s", time.Since(start))

	start = time.Now()
	crashed.Kill()
	// Failure detection on the local profile takes a few seconds.
	waitFor(t, "crash detected", 15*time.Second, func() bool { return lb.Snapshot().Backends() == 1 })
	t.Logf("crash detected after %s", time.Since(start))
}

// TestLargeApplicationSet: a backend with 100 applications of 5 domains
// each (about 20 KiB, far over memberlist's 512-byte metadata) is routed in
// full, and a change to one application reaches the load balancer within 2
// seconds on the lan profile.
func TestLargeApplicationSet(t *testing.T) {
	var apps []catalog.Application
	for i := range 100 {
		a := app(fmt.Sprintf("application-%03d", i), 8000+i)
		a.ListenPort = 80
		a.Domains = nil
		for d := range 5 {
			a.Domains = append(a.Domains, fmt.Sprintf("a-rather-long-domain-name-%03d-%d.example.com", i, d))
		}
		apps = append(apps, a)
	}
	if size := len(catalog.EncodeMeta(catalog.Meta{Role: catalog.RoleBackend, Applications: apps})); size < 10*memberlist.MetaMaxSize {
		t.Fatalf("test set is only %d bytes", size)
	}
	newNode := func(ip int, role catalog.Role, apps []catalog.Application) *Cluster {
		c, err := New(Config{NodeName: fmt.Sprintf("%s-%d", role, ip), BindAddr: fmt.Sprintf("127.0.0.%d", ip),
			Profile: "lan", Role: role, Applications: apps, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Kill() })
		return c
	}
	lb := newNode(43, catalog.RoleLB, nil)
	b := newNode(44, catalog.RoleBackend, apps)
	if _, err := b.Join([]string{lb.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, "all 100 applications at the load balancer", 5*time.Second, func() bool {
		services, _ := lb.Snapshot().Services()
		return len(services) == 100 && len(services[99].Domains) == 5
	})
	t.Logf("100 apps × 5 domains routed %s after join", time.Since(start))

	changed := slices.Clone(apps)
	changed[42].Domains = append(slices.Clone(changed[42].Domains[:4]), "changed.example.com")
	start = time.Now()
	// UpdateApplications returns once the broadcast has been retransmitted
	// (several gossip rounds); the load balancer hears of it sooner.
	updated := make(chan error, 1)
	go func() { updated <- b.UpdateApplications(catalog.RoleBackend, changed, time.Second) }()
	t.Cleanup(func() {
		if err := <-updated; err != nil {
			t.Errorf("UpdateApplications: %v", err)
		}
	})
	waitFor(t, "the change at the load balancer", 2*time.Second, func() bool {
		services, _ := lb.Snapshot().Services()
		return len(services) == 100 && services[42].Domains[4] == "changed.example.com"
	})
	t.Logf("change to one app reached the load balancer after %s (lan profile)", time.Since(start))
}

func TestInvalidApplicationsAreRejected(t *testing.T) {
	c := testNode(t, 45, catalog.RoleBackend, app("web", 8080))
	bad := app("web", 8080)
	bad.Domains = []string{"x; } evil {"}
	if err := c.UpdateApplications(catalog.RoleBackend, []catalog.Application{bad}, time.Second); err == nil {
		t.Fatal("UpdateApplications accepted an invalid domain")
	}
	if got := c.Snapshot().Nodes; len(got) != 1 || len(got[0].Applications) != 1 || got[0].Applications[0].Domains[0] != "web.example.com" {
		t.Fatalf("old advertisement not kept: %+v", got)
	}
}

// rawDelegate advertises arbitrary bytes, as a hostile or buggy peer could.
type rawDelegate struct {
	mu    sync.Mutex
	meta  []byte
	onMsg func([]byte)
	local []byte // LocalState on a join
}

func (d *rawDelegate) NodeMeta(int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.meta
}
func (d *rawDelegate) NotifyMsg(b []byte) {
	d.mu.Lock()
	f := d.onMsg
	d.mu.Unlock()
	if f != nil {
		f(append([]byte(nil), b...))
	}
}
func (d *rawDelegate) GetBroadcasts(int, int) [][]byte { return nil }
func (d *rawDelegate) LocalState(join bool) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !join {
		return nil
	}
	return d.local
}
func (d *rawDelegate) MergeRemoteState(buf []byte, _ bool) {}

func TestInvalidPeerMetadataIsDropped(t *testing.T) {
	lb := testNode(t, 51, catalog.RoleLB)
	tests := []struct {
		name string
		meta []byte
	}{
		{"garbage", []byte("\xff\x00garbage")},
		{"config injection in a domain", catalog.EncodeMeta(catalog.Meta{Role: catalog.RoleBackend, Applications: []catalog.Application{{
			Name: "web", ListenPort: 80, ApplicationPort: 8080, Protocol: catalog.ProtocolHTTP,
			Domains: []string{"x; } server { listen 1; location / { proxy_pass http://evil"},
		}}})},
		{"empty", nil},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conf := memberlist.DefaultLocalConfig()
			conf.Name = fmt.Sprintf("hostile-%d", i)
			conf.BindAddr = fmt.Sprintf("127.0.0.%d", 52+i)
			conf.BindPort = 0
			conf.Delegate = &rawDelegate{meta: tc.meta}
			conf.LogOutput = newTestWriter(t)
			ml, err := memberlist.Create(conf)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ml.Shutdown() })
			if _, err := ml.Join([]string{lb.LocalAddr()}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "memberlist to see the peer", 5*time.Second, func() bool { return lb.Members() >= 2 })
			for _, n := range lb.Snapshot().Nodes {
				if n.Name == conf.Name {
					t.Fatalf("hostile peer in snapshot: %+v", n)
				}
			}
			ml.Leave(time.Second)
			ml.Shutdown()
			waitFor(t, "peer gone", 5*time.Second, func() bool { return lb.Members() == 1 })
		})
	}
}

func TestMaintainRetriesUntilALoadBalancerAppears(t *testing.T) {
	// The backend starts first; its seed points where the load balancer
	// will come up.
	lbAddr := "127.0.0.61"
	port := freeUDPTCPPort(t, lbAddr)
	b := testNode(t, 62, catalog.RoleBackend, app("web", 8080))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Maintain(ctx, staticSeeds{fmt.Sprintf("%s:%d", lbAddr, port)}, JoinOptions{BackoffMin: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond, RejoinInterval: 100 * time.Millisecond})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	time.Sleep(300 * time.Millisecond) // let a few attempts fail first
	lb, err := New(Config{NodeName: "late-lb", BindAddr: lbAddr, BindPort: port, Profile: "local", Role: catalog.RoleLB, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lb.Kill() })
	waitFor(t, "backend to join the late load balancer", 5*time.Second, func() bool { return lb.Snapshot().Backends() == 1 })

	// The load balancer goes away and comes back at another address: the
	// backend, alone again, asks its seeds and finds it.
	lb.Close(time.Second)
	waitFor(t, "backend alone", 5*time.Second, func() bool { return b.alone() })
	lb2, err := New(Config{NodeName: "lb-2", BindAddr: lbAddr, BindPort: port, Profile: "local", Role: catalog.RoleLB, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lb2.Kill() })
	waitFor(t, "backend to rejoin", 5*time.Second, func() bool { return lb2.Snapshot().Backends() == 1 })
}

type staticSeeds []string

func (s staticSeeds) Seeds(context.Context) ([]string, error) { return s, nil }

func freeUDPTCPPort(t *testing.T, ip string) int {
	t.Helper()
	c, err := New(Config{NodeName: "probe", BindAddr: ip, Profile: "local", Role: catalog.RoleLB})
	if err != nil {
		t.Fatal(err)
	}
	port := localPort(c)
	c.Kill()
	return int(port)
}

// TestHostileApplicationSets: a peer whose gossip is well formed but whose
// served application set is invalid, or that forges another member's set,
// never gets anything into the snapshot.
func TestHostileApplicationSets(t *testing.T) {
	lb := testNode(t, 71, catalog.RoleLB)
	honest := testNode(t, 72, catalog.RoleBackend, app("web", 8080))
	if _, err := honest.Join([]string{lb.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "honest backend routed", 5*time.Second, func() bool {
		s, _ := lb.Snapshot().Services()
		return len(s) == 1
	})

	// The hostile set: a domain that would inject configuration. Its
	// beacon names exactly these bytes, so only validation stops it.
	bad := catalog.EncodeMeta(catalog.Meta{Role: catalog.RoleBackend, Applications: []catalog.Application{{
		Name: "evil", ListenPort: 80, ApplicationPort: 8080, Protocol: catalog.ProtocolHTTP,
		Domains: []string{"x; } server { listen 1; location / { proxy_pass http://evil"},
	}}})
	beacon, err := catalog.EncodeBeacon(catalog.Beacon{Role: catalog.RoleBackend, Digest: catalog.DigestOf(bad)})
	if err != nil {
		t.Fatal(err)
	}
	d := &rawDelegate{meta: beacon}
	conf := memberlist.DefaultLocalConfig()
	conf.Name, conf.BindAddr, conf.BindPort = "hostile", "127.0.0.73", 0
	conf.Delegate = d
	conf.LogOutput = newTestWriter(t)
	ml, err := memberlist.Create(conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ml.Shutdown() })
	lbAddr := netip.MustParseAddrPort(lb.LocalAddr())
	var answered, forged sync.WaitGroup
	answered.Add(1)
	forged.Add(1)
	var once1, once2 sync.Once
	d.mu.Lock()
	d.onMsg = func(b []byte) {
		if len(b) == 0 || msgType(b[0]) != msgRequest {
			return
		}
		// The load balancer's record, made here: memberlist's Members
		// hands out records its alive handler rewrites without a lock
		// (a data race), and the request may come before this node's
		// join has merged the load balancer's state.
		to := &memberlist.Node{Name: "lb-71", Addr: lbAddr.Addr().AsSlice(), Port: lbAddr.Port()}
		// Answer with our own (invalid) set...
		d := catalog.DigestOf(bad)
		ml.SendReliable(to, encodeMessage(stateMsg{From: "hostile", Digest: d, Set: bad}))
		once1.Do(answered.Done)
		// ...and pretend to be the honest backend with it.
		ml.SendReliable(to, encodeMessage(stateMsg{From: "backend-72", Digest: d, Set: bad}))
		once2.Do(forged.Done)
	}
	d.mu.Unlock()
	if _, err := ml.Join([]string{lb.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	waitGroup(t, &answered, "hostile answer")
	waitGroup(t, &forged, "forged answer")
	// Give the load balancer's worker time to process both messages: poll
	// its view a few times; it must never change.
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		services, _ := lb.Snapshot().Services()
		if len(services) != 1 || services[0].Name != "web" || len(services[0].Servers) != 1 {
			t.Fatalf("hostile data reached the snapshot: %+v", services)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// localPort is c's gossip port, from the address fixed at its start
// (memberlist's LocalNode record is rewritten concurrently).
func localPort(c *Cluster) uint16 {
	return netip.MustParseAddrPort(c.LocalAddr()).Port()
}

// nodeBook records the nodes a memberlist reports, copied in its event
// callbacks, which memberlist calls under its own lock: Members hands out
// the records its alive handler rewrites without one (a data race).
type nodeBook struct {
	mu    sync.Mutex
	nodes map[string]memberlist.Node
}

func (b *nodeBook) NotifyJoin(n *memberlist.Node)   { b.put(n) }
func (b *nodeBook) NotifyUpdate(n *memberlist.Node) { b.put(n) }
func (b *nodeBook) NotifyLeave(n *memberlist.Node) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.nodes, n.Name)
}

func (b *nodeBook) put(n *memberlist.Node) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.nodes == nil {
		b.nodes = map[string]memberlist.Node{}
	}
	b.nodes[n.Name] = memberlist.Node{Name: n.Name, Addr: slices.Clone(n.Addr), Port: n.Port}
}

// node returns a copy of member name's record, nil if unknown.
func (b *nodeBook) node(name string) *memberlist.Node {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, ok := b.nodes[name]
	if !ok {
		return nil
	}
	return &n
}

func waitGroup(t *testing.T, wg *sync.WaitGroup, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestChangeIsGossipedAgain checks that a changed application set is
// scheduled for two more rounds of gossip, and that the worker's review
// takes them in turn once due.
func TestChangeIsGossipedAgain(t *testing.T) {
	b := testNode(t, 25, catalog.RoleBackend, app("web", 8080))
	before := time.Now()
	if err := b.UpdateApplications(catalog.RoleBackend, []catalog.Application{app("web", 8081)}, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	got := slices.Clone(b.regossip)
	b.mu.Unlock()
	if len(got) != 2 || got[0].Before(before.Add(regossipFirst)) || got[1].Before(before.Add(regossipSecond)) {
		t.Fatalf("regossip = %v, want two times, %v and %v after the change", got, regossipFirst, regossipSecond)
	}
	waitFor(t, "both re-gossips done", 5*time.Second, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.regossip) == 0
	})
	if since := time.Since(before); since < regossipSecond {
		t.Errorf("re-gossips done %v after the change, before the second was due", since)
	}
}

// TestQuietBackendStopsTicking: an idle backend's worker stops its tick
// (every wakeup of an idle process costs CPU), and what needs the tick
// restarts it: a changed set's re-gossips (alone, so that no fetch wakes
// the worker), and the rejoin of a load balancer that left.
func TestQuietBackendStopsTicking(t *testing.T) {
	b := testNode(t, 152, catalog.RoleBackend, app("web", 8080))
	ticks := func() uint64 { return b.stats.workerTicks.Load() }
	// still reports whether the tick stayed stopped for a while.
	still := func() bool {
		n := ticks()
		time.Sleep(3 * workerTick)
		return ticks() == n
	}
	waitFor(t, "the backend's worker to stop ticking", 10*time.Second, still)

	n := ticks()
	if err := b.UpdateApplications(catalog.RoleBackend, []catalog.Application{app("web", 8081)}, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both re-gossips done", 5*time.Second, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.regossip) == 0
	})
	if ticks() == n {
		t.Fatal("the re-gossips were done without a tick")
	}
	waitFor(t, "the backend's worker to stop ticking again", 10*time.Second, still)

	lb := testNode(t, 151, catalog.RoleLB)
	if _, err := b.Join([]string{lb.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the backend's set at the load balancer", 5*time.Second, func() bool {
		s := lb.Snapshot()
		return s.Backends() == 1 && slices.ContainsFunc(s.Nodes, func(nd catalog.Node) bool {
			return len(nd.Applications) == 1 && nd.Applications[0].ApplicationPort == 8081
		})
	})
	waitFor(t, "the backend's worker to stop ticking in a cluster", 10*time.Second, still)
	if lb.stats.workerTicks.Load() == 0 {
		t.Fatal("the load balancer's worker never ticked")
	}

	// The load balancer goes: the backend tries to rejoin it, on its tick.
	// (A leave rather than a crash: the backend's probe of a dead member
	// would outlive the test, and goleak fail the package.)
	n = ticks()
	if err := lb.Close(time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a rejoin scheduled", 15*time.Second, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.rejoin) == 1
	})
	waitFor(t, "the tick to run again", 5*time.Second, func() bool { return ticks() > n+2 })
}
