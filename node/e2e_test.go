package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/backend"
	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/internal/loopback"
)

// requireNginx skips when nginx is missing on a developer machine, and
// fails in CI, where `make test` installs it.
func requireNginx(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("nginx"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("nginx is required in CI: %v", err)
		}
		t.Skipf("nginx not installed (make test installs it): %v", err)
	}
}

// testCluster runs scrimp nodes in this process, each on its own loopback
// address, the way separate machines would.
type testCluster struct {
	t          testing.TB
	net        string // first three octets, e.g. "127.0.1"
	listenPort int
	lb         *Node
	seed       string
	stateDir   string
	profile    string
	logger     *slog.Logger
	generator  string
	// edit, if set, changes the configuration of every node the cluster
	// starts (load balancer and backends) before it starts: keys, label.
	edit func(cfg *config.Config)
	// host, if set, is the Host header of requests through the load
	// balancer (applications with domains).
	host string
}

type testBackend struct {
	name   string
	node   *Node
	cancel context.CancelFunc
	done   chan struct{}
}

func newTestCluster(t testing.TB, net, profile string) *testCluster {
	t.Helper()
	return newTestClusterWith(t, net, profile, "nginx")
}

// newTestClusterWith runs a load balancer whose managed proxy is the
// generator's ("nginx" or "haproxy").
func newTestClusterWith(t testing.TB, net, profile, generator string) *testCluster {
	t.Helper()
	return newTestClusterOptions(t, net, profile, generator, nil)
}

// newTestClusterOptions is newTestClusterWith with generator options.
func newTestClusterOptions(t testing.TB, net, profile, generator string, options json.RawMessage) *testCluster {
	t.Helper()
	return newTestClusterSetup(t, net, profile, generator, options, nil)
}

// newTestClusterSetup is newTestClusterOptions with setup, if not nil,
// called on the cluster before its load balancer starts (to set edit,
// host or logger).
func newTestClusterSetup(t testing.TB, net, profile, generator string, options json.RawMessage, setup func(*testCluster)) *testCluster {
	t.Helper()
	if generator == "nginx" {
		requireNginx(t)
	} else if _, err := exec.LookPath(generator); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is required in CI: %v", generator, err)
		}
		t.Skipf("%s not installed (make test installs it)", generator)
	}
	lbIP := net + ".1"
	port, err := loopback.FreePort(lbIP)
	if err != nil {
		t.Fatal(err)
	}
	tc := &testCluster{t: t, net: net, listenPort: port, stateDir: t.TempDir(), profile: profile, logger: testLogger(t), generator: generator}
	if setup != nil {
		setup(tc)
	}
	cfg, err := LocalConfig("lb", lbIP, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Cluster.Profile = profile
	lbc := config.DefaultLB()
	lbc.StateDir, lbc.ListenAddr, lbc.Generator, lbc.GeneratorOptions = tc.stateDir, lbIP, generator, options
	cfg.LB = &lbc
	if tc.edit != nil {
		tc.edit(cfg)
	}
	n, err := StartLocal(cfg, tc.logger.With("node", "lb"))
	if err != nil {
		t.Fatal(err)
	}
	tc.lb = n
	tc.seed = n.GossipAddr()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := n.Run(ctx); err != nil {
			t.Errorf("lb: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return tc
}

func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelInfo
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	w := &logWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// logWriter sends log lines to t.Log until the test ends: memberlist's
// goroutines may log while winding down, and t.Log after a test is a race.
type logWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// url is where requests enter the load balancer.
func (tc *testCluster) url() string { return fmt.Sprintf("http://%s.1:%d/", tc.net, tc.listenPort) }

// addBackend starts backend number i (address NET.i+1) with a real HTTP
// app answering its name, joined through the load balancer's seed.
func (tc *testCluster) addBackend(i int) *testBackend {
	tc.t.Helper()
	// A graceful stop drains (the load balancers acknowledge it), with no
	// extra grace: the test apps have no long requests.
	return tc.addDrainingBackend(i, 5*time.Second, 0)
}

// addDrainingBackend is addBackend with a drain on shutdown: the app keeps
// serving until the node has drained and left, as an app running beside
// scrimp would.
func (tc *testCluster) addDrainingBackend(i int, drainTimeout, grace time.Duration) *testBackend {
	tc.t.Helper()
	return tc.addBackendEdit(i, drainTimeout, grace, nil)
}

// addBackendEdit is addDrainingBackend with edit, if not nil, changing the
// backend's configuration after the cluster's own edit.
func (tc *testCluster) addBackendEdit(i int, drainTimeout, grace time.Duration, edit func(*config.Config)) *testBackend {
	tc.t.Helper()
	name := fmt.Sprintf("backend-%d", i)
	ip := fmt.Sprintf("%s.%d", tc.net, i+1)
	ctx, cancel := context.WithCancel(context.Background())
	appCtx, stopApp := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	appPort, err := loopback.ServeApp(appCtx, &wg, ip, name)
	// Port 0 on another loopback address can give the number of the load
	// balancer's gossip port, which the load balancer refuses (all of
	// 127/8 is its own): take another.
	for try := 0; err == nil && tc.seed != "" && strings.HasSuffix(tc.seed, fmt.Sprintf(":%d", appPort)) && try < 5; try++ {
		stopApp()
		wg.Wait()
		appCtx, stopApp = context.WithCancel(context.Background())
		appPort, err = loopback.ServeApp(appCtx, &wg, ip, name)
	}
	if err != nil {
		tc.t.Fatal(err)
	}
	cfg, err := LocalConfig(name, ip, []string{tc.seed})
	if err != nil {
		tc.t.Fatal(err)
	}
	cfg.Cluster.Profile = tc.profile
	bc := config.DefaultBackend()
	bc.DrainTimeout, bc.DrainGrace = config.D(drainTimeout), config.D(grace)
	bc.Applications = []config.Application{{Application: catalog.Application{
		Name: "web", ListenPort: tc.listenPort, ApplicationPort: appPort, Protocol: catalog.ProtocolHTTP,
	}}}
	cfg.Backend = &bc
	for _, e := range []func(*config.Config){tc.edit, edit} {
		if e != nil {
			e(cfg)
		}
	}
	n, err := StartLocal(cfg, tc.logger.With("node", name))
	if err != nil {
		stopApp()
		tc.t.Fatal(err)
	}
	b := &testBackend{name: name, node: n, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(b.done)
		n.Run(ctx)
		stopApp()
		wg.Wait()
	}()
	tc.t.Cleanup(b.stop)
	return b
}

// stop leaves the cluster gracefully and stops the app; idempotent.
func (b *testBackend) stop() {
	b.cancel()
	<-b.done
}

// kill stops gossip without leaving and stops the app, like a crash.
func (b *testBackend) kill() {
	b.node.Kill()
	b.cancel()
	<-b.done
}

var client = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// get sends one request through the load balancer and returns the body.
func (tc *testCluster) get() (string, error) {
	req, err := http.NewRequest(http.MethodGet, tc.url(), nil)
	if err != nil {
		return "", err
	}
	req.Host = tc.host // "" means the URL's
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	return strings.TrimPrefix(strings.TrimSpace(string(body)), "hello from "), nil
}

// waitServed polls until every name in want has answered, and returns how
// long that took.
func (tc *testCluster) waitServed(timeout time.Duration, want ...string) time.Duration {
	tc.t.Helper()
	start := time.Now()
	seen := map[string]bool{}
	for {
		if name, err := tc.get(); err == nil {
			seen[name] = true
		}
		all := true
		for _, w := range want {
			all = all && seen[w]
		}
		if all {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			tc.t.Fatalf("after %s only %v of %v answered", timeout, seen, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// routed reports whether the proxy's running configuration
// (RenderedConfig) sends traffic to the named backend.
func (tc *testCluster) routed(name string) bool {
	b, err := tc.lb.RenderedConfig()
	if err != nil {
		return false
	}
	if tc.generator == "haproxy" {
		// A plain server line, or (runtime-api) a slot holding the node
		// that is not disabled.
		s := string(b)
		return strings.Contains(s, "server "+name+" ") ||
			strings.Contains(s, " # "+name+"\n") && !strings.Contains(s, " disabled # "+name+"\n")
	}
	return strings.Contains(string(b), "# "+name+"\n")
}

func (tc *testCluster) waitUnrouted(timeout time.Duration, name string) time.Duration {
	tc.t.Helper()
	start := time.Now()
	for tc.routed(name) {
		if time.Since(start) > timeout {
			tc.t.Fatalf("%s still in the nginx config after %s", name, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// burst sends n requests and returns who answered and how many failed.
func (tc *testCluster) burst(n int) (map[string]int, []error) {
	counts := map[string]int{}
	var errs []error
	for range n {
		name, err := tc.get()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		counts[name]++
	}
	return counts, errs
}

func TestEndToEndThroughNginx(t *testing.T) {
	tc := newTestCluster(t, "127.0.1", "local")
	b1 := tc.addBackend(1)
	b2 := tc.addBackend(2)
	tc.addBackend(3)
	took := tc.waitServed(10*time.Second, "backend-1", "backend-2", "backend-3")
	t.Logf("three backends served through nginx %s after they started", took)

	counts, errs := tc.burst(90)
	if len(errs) > 0 || len(counts) != 3 {
		t.Fatalf("before changes: answers %v, %d failures (first: %v)", counts, len(errs), first(errs))
	}

	// A graceful leave: removed from the config, and then no request fails.
	b1.stop()
	t.Logf("graceful leave removed from nginx after %s", tc.waitUnrouted(5*time.Second, "backend-1"))
	counts, errs = tc.burst(60)
	if len(errs) > 0 || counts["backend-1"] > 0 || len(counts) != 2 {
		t.Fatalf("after backend-1 left: answers %v, %d failures (first: %v)", counts, len(errs), first(errs))
	}

	// A crash: gossip failure detection removes it.
	b2.kill()
	t.Logf("killed backend removed from nginx after %s", tc.waitUnrouted(20*time.Second, "backend-2"))
	counts, errs = tc.burst(30)
	if len(errs) > 0 || len(counts) != 1 || counts["backend-3"] != 30 {
		t.Fatalf("after backend-2 died: answers %v, %d failures (first: %v)", counts, len(errs), first(errs))
	}

	// A late joiner gets traffic.
	tc.addBackend(4)
	t.Logf("late backend served after %s", tc.waitServed(10*time.Second, "backend-4"))

	stats := tc.lb.Stats()
	if stats.Rejected != 0 {
		t.Errorf("nginx rejected %d configurations: %v", stats.Rejected, stats.LastError)
	}
	t.Logf("lb stats: %+v", stats)
}

// TestRollingRestartLosesNoRequest replaces every backend behind a real
// nginx, one at a time, while a client sends requests all through it: each
// old backend drains (load balancers acknowledge it is out of rotation,
// then a grace period) before it leaves, so no request fails.
func TestRollingRestartLosesNoRequest(t *testing.T) {
	tc := newTestCluster(t, "127.0.5", "local")
	const drainTimeout, grace = 10 * time.Second, 300 * time.Millisecond
	old := []*testBackend{
		tc.addDrainingBackend(1, drainTimeout, grace),
		tc.addDrainingBackend(2, drainTimeout, grace),
		tc.addDrainingBackend(3, drainTimeout, grace),
	}
	tc.waitServed(10*time.Second, "backend-1", "backend-2", "backend-3")

	// Four clients with keep-alive connections to nginx, as browsers and
	// services have, for the whole restart. They POST: nginx never retries
	// a non-idempotent request on another backend, so a request sent to a
	// backend that is gone fails here instead of being hidden by a retry.
	load := startLoad(func() *http.Request {
		req, err := http.NewRequest(http.MethodPost, tc.url(), strings.NewReader("payload"))
		if err != nil {
			panic(err)
		}
		// A keep-alive connection that nginx closes as an old worker
		// retires (every reload) can race with the next request on it;
		// careful clients resend then, and Go's does for requests marked
		// idempotent. nginx still treats the POST as non-idempotent and
		// never retries it upstream.
		req.Header.Set("Idempotency-Key", "test")
		return req
	})

	start := time.Now()
	for i, b := range old {
		replacement := tc.addDrainingBackend(11+i, drainTimeout, grace)
		tc.waitServed(10*time.Second, replacement.name)
		b.stop()
		if tc.routed(b.name) {
			t.Errorf("%s still routed after it drained and left", b.name)
		}
		if out, ok := b.node.Drained(); !ok || out.Result != backend.DrainAcknowledged || out.Grace < grace {
			t.Errorf("%s drained: %v (ended: %v); want acknowledged, then the full grace", b.name, out, ok)
		}
	}
	took := time.Since(start)
	time.Sleep(200 * time.Millisecond) // requests after the last change count too
	res := load.Stop()
	t.Logf("rolling restart of 3 backends took %s; %d requests, %d failed", took.Round(time.Millisecond), res.Sent, res.Failed)
	if res.Failed > 0 {
		t.Fatalf("%d of %d requests failed during the rolling restart; first: %v", res.Failed, res.Sent, res.Failures[0].Err)
	}
	if res.Sent < 200 {
		t.Fatalf("only %d requests were sent; the test proves nothing", res.Sent)
	}
}

// startGetLoad is startLoad with idempotent GETs of tc.url(): nginx may
// retry them on another backend.
func (tc *testCluster) startGetLoad() *loopback.Load {
	return startLoad(func() *http.Request {
		req, err := http.NewRequest(http.MethodGet, tc.url(), nil)
		if err != nil {
			panic(err)
		}
		return req
	})
}

// startLoad starts four clients sending newRequest's requests over
// keep-alive connections, one every 2 ms each, counting from the start; a
// transport error or a status other than 200 is a failure. It is the
// bench's steady load.
func startLoad(newRequest func() *http.Request) *loopback.Load {
	l := loopback.StartLoad(4, 2*time.Millisecond, func(client *http.Client) error {
		resp, err := client.Do(newRequest())
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	l.Count(true)
	return l
}

// TestEndToEndThroughHAProxy is the gossip end-to-end path with a managed
// HAProxy: backends that join are served, one that leaves is removed and
// no request fails after.
func TestEndToEndThroughHAProxy(t *testing.T) {
	tc := newTestClusterWith(t, "127.0.7", "local", "haproxy")
	b1 := tc.addBackend(1)
	tc.addBackend(2)
	tc.addBackend(3)
	t.Logf("three backends served through HAProxy %s after they started",
		tc.waitServed(10*time.Second, "backend-1", "backend-2", "backend-3"))
	b1.stop()
	t.Logf("graceful leave removed from HAProxy after %s", tc.waitUnrouted(5*time.Second, "backend-1"))
	// HAProxy's old worker may take a moment to stop accepting.
	time.Sleep(200 * time.Millisecond)
	counts, errs := tc.burst(60)
	if len(errs) > 0 || counts["backend-1"] > 0 || len(counts) != 2 {
		t.Fatalf("after backend-1 left: answers %v, %d failures (first: %v)", counts, len(errs), first(errs))
	}
	tc.addBackend(4)
	t.Logf("late backend served after %s", tc.waitServed(10*time.Second, "backend-4"))
}

func first(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return errs[0]
}

// BenchmarkJoinToServed measures, per gossip profile, the time from a
// backend starting (gossip join) to its first request served through
// nginx, and from a kill -9 equivalent to its removal from nginx's config.
// Run: go test ./node -run XXX -bench JoinToServed -benchtime 5x
func BenchmarkJoinToServed(b *testing.B) {
	for i, profile := range []string{"local", "lan"} {
		b.Run(profile, func(b *testing.B) {
			tc := newTestCluster(b, fmt.Sprintf("127.0.%d", 20+i), profile)
			// A permanent backend so failure detection has a witness, as
			// it would in any real deployment.
			tc.addBackend(1)
			tc.waitServed(10*time.Second, "backend-1")
			var join, removal time.Duration
			for n := range b.N {
				idx := 2 + n%200
				// Let the load balancer go idle, as it is when a backend
				// joins in production; a join within the quiet period of
				// the last reload would wait for it.
				time.Sleep(tc.lb.cfg.LB.QuietPeriod.Duration + 100*time.Millisecond)
				start := time.Now()
				be := tc.addBackend(idx)
				tc.waitServed(20*time.Second, be.name)
				join += time.Since(start)
				start = time.Now()
				be.kill()
				tc.waitUnrouted(60*time.Second, be.name)
				removal += time.Since(start)
			}
			b.ReportMetric(float64(join.Milliseconds())/float64(b.N), "join-to-served-ms")
			b.ReportMetric(float64(removal.Milliseconds())/float64(b.N), "kill-to-removed-ms")
		})
	}
}
