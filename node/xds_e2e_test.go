package node

import (
	"context"
	"fmt"
	"math"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	grpcxds "google.golang.org/grpc/xds"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/internal/greeter"
	"github.com/scrimplb/scrimp/internal/loopback"
	"github.com/scrimplb/scrimp/xds"
)

// grpcBackend is a real greeter server beside a scrimp backend node that
// advertises it as the grpc application "greeter".
type grpcBackend struct {
	*testBackend
	srv *grpc.Server
}

// addGreeter starts backend i (address NET.i+1): its greeter server, then
// its node.
func (tc *testCluster) addGreeter(i int) *grpcBackend {
	tc.t.Helper()
	ip := fmt.Sprintf("%s.%d", tc.net, i+1)
	name := fmt.Sprintf("backend-%d", i)
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		tc.t.Fatal(err)
	}
	srv := grpc.NewServer()
	greeter.Register(srv, name)
	go srv.Serve(ln)
	tc.t.Cleanup(srv.Stop)
	port := ln.Addr().(*net.TCPAddr).Port
	b := tc.addBackendEdit(i, 5*time.Second, 300*time.Millisecond, func(cfg *config.Config) {
		cfg.Backend.Applications = []config.Application{{Application: catalog.Application{
			Name: "greeter", ListenPort: tc.listenPort, ApplicationPort: port, Protocol: catalog.ProtocolGRPC,
		}}}
	})
	return &grpcBackend{testBackend: b, srv: srv}
}

// TestXDSEndToEnd runs real scrimp nodes (a load balancer with nginx and
// its xDS server, backends advertising a real gRPC greeter) and a gRPC
// client dialling xds:///greeter: the classic experiment's even split,
// scaling 3 → 10 (time to first call), one crashing and a graceful
// scale-down to 2, with no failed call.
func TestXDSEndToEnd(t *testing.T) {
	const net = "127.0.151"
	port, err := loopback.FreePort(net + ".1")
	if err != nil {
		t.Fatal(err)
	}
	tc := newTestClusterSetup(t, net, "local", "nginx", nil, func(tc *testCluster) {
		tc.edit = func(cfg *config.Config) {
			if cfg.Role == "lb" {
				x := config.DefaultXDS()
				x.ListenAddr, x.Retries = fmt.Sprintf("%s.1:%d", net, port), 3
				cfg.XDS = &x
			}
		}
	})
	if tc.lb.XDSAddr() == "" {
		t.Fatal("the load balancer serves no xDS")
	}
	bs := []*grpcBackend{tc.addGreeter(1), tc.addGreeter(2), tc.addGreeter(3)}

	boot, err := xds.Bootstrap(tc.lb.XDSAddr(), "e2e-client", nil)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := grpcxds.NewXDSResolverWithConfigForTesting(boot)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///greeter", grpc.WithResolvers(rb), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	call := func() (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return greeter.SayHello(ctx, conn, "")
	}
	waitAll := func(timeout time.Duration, names ...string) {
		t.Helper()
		seen := map[string]bool{}
		deadline := time.Now().Add(timeout)
		for {
			if n, err := call(); err == nil {
				seen[n] = true
			}
			all := true
			for _, w := range names {
				all = all && seen[w]
			}
			if all {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %s only %v of %v answered", timeout, seen, names)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitAll(20*time.Second, "backend-1", "backend-2", "backend-3")

	// The classic experiment over one ClientConn.
	counts := map[string]int{}
	for range 10000 {
		n, err := call()
		if err != nil {
			t.Fatalf("call: %v", err)
		}
		counts[n]++
	}
	t.Logf("10,000 calls through scrimp's xDS: %v", counts)
	for _, b := range bs {
		if c := float64(counts[b.name]); math.Abs(c-10000.0/3) > 0.02*10000/3 {
			t.Errorf("%s took %.0f calls, want 3333 ±2%%", b.name, c)
		}
	}

	// Calls run from here on; none may fail.
	var (
		mu     sync.Mutex
		first  = map[string]time.Time{}
		failed []error
		stop   = make(chan struct{})
		wg     sync.WaitGroup
	)
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				n, err := call()
				mu.Lock()
				if err != nil {
					failed = append(failed, err)
				} else if _, ok := first[n]; !ok {
					first[n] = time.Now()
				}
				mu.Unlock()
			}
		})
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	firstCall := func(name string, since time.Time, timeout time.Duration) time.Duration {
		t.Helper()
		for {
			mu.Lock()
			at, ok := first[name]
			mu.Unlock()
			if ok {
				return at.Sub(since)
			}
			if time.Since(since) > timeout {
				t.Fatalf("%s got no call within %s", name, timeout)
			}
			time.Sleep(time.Millisecond)
		}
	}
	failures := func(when string) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if len(failed) > 0 {
			t.Fatalf("%s: %d failed calls, first: %v", when, len(failed), failed[0])
		}
	}

	// Scale 3 → 10: each new backend gets calls within 2s of its start
	// (the node's start: its gossip join is included).
	var slowest time.Duration
	for i := 4; i <= 10; i++ {
		started := time.Now()
		b := tc.addGreeter(i)
		bs = append(bs, b)
		d := firstCall(b.name, started, 2*time.Second)
		slowest = max(slowest, d)
		t.Logf("%s: first call over xDS %s after its node started", b.name, d.Round(time.Millisecond))
	}
	t.Logf("scale 3 → 10: slowest start to first call %s", slowest.Round(time.Millisecond))
	failures("scale up")

	// A crash: the app dies with its node, which does not leave. The
	// client's connection breaks at once; calls in flight are retried.
	crashed := bs[9]
	crashed.srv.Stop()
	crashed.kill()
	time.Sleep(500 * time.Millisecond)
	failures("crash")

	// Scale down gracefully to 2: each node drains (announced DRAINING),
	// leaves, then its app stops.
	var stops sync.WaitGroup
	for _, b := range bs[2:9] {
		stops.Go(func() {
			b.stop()
			b.srv.GracefulStop()
		})
	}
	stops.Wait()
	time.Sleep(300 * time.Millisecond)
	failures("graceful scale-down to 2")
	mu.Lock()
	clear(first)
	mu.Unlock()
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	var got []string
	for name := range first {
		got = append(got, name)
	}
	mu.Unlock()
	slices.Sort(got)
	if !slices.Equal(got, []string{"backend-1", "backend-2"}) {
		t.Errorf("after a crash and a graceful scale-down to 2, calls went to %v", got)
	}
}
