package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
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
	c, err := New(Config{
		NodeName:     fmt.Sprintf("%s-%d", role, ip),
		BindAddr:     fmt.Sprintf("127.0.0.%d", ip),
		Profile:      "local",
		Role:         role,
		Applications: apps,
		Logger:       testLogger(t),
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Kill() })
	return c
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

func TestOversizeMetadataFailsBeforeMemberlist(t *testing.T) {
	var apps []catalog.Application
	for i := range 12 {
		a := app(fmt.Sprintf("application-%02d", i), 8000+i)
		a.Domains = []string{fmt.Sprintf("a-rather-long-domain-name-%02d.example.com", i)}
		apps = append(apps, a)
	}
	_, err := New(Config{NodeName: "big", BindAddr: "127.0.0.41", Profile: "local", Role: catalog.RoleBackend, Applications: apps})
	if err == nil {
		t.Fatal("New accepted metadata over 512 bytes")
	}
	for _, want := range []string{"over memberlist's 512-byte metadata limit", "application-00 (", "application-11 ("} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}

	c := testNode(t, 42, catalog.RoleBackend, app("web", 8080))
	if err := c.UpdateApplications(catalog.RoleBackend, apps, time.Second); err == nil {
		t.Fatal("UpdateApplications accepted metadata over 512 bytes")
	}
	if got := *c.meta.Load(); len(got) > MetaMaxSize {
		t.Fatalf("oversize metadata stored: %d bytes", len(got))
	}
}

// rawDelegate advertises arbitrary bytes, as a hostile or buggy peer could.
type rawDelegate struct {
	mu   sync.Mutex
	meta []byte
}

func (d *rawDelegate) NodeMeta(int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.meta
}
func (d *rawDelegate) NotifyMsg([]byte)                    {}
func (d *rawDelegate) GetBroadcasts(int, int) [][]byte     { return nil }
func (d *rawDelegate) LocalState(bool) []byte              { return nil }
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
	port := c.ml.LocalNode().Port
	c.Kill()
	return int(port)
}
