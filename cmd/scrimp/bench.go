package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/generator"
	"github.com/scrimplb/scrimp/proxy"
)

// benchOptions configures `scrimp bench`.
type benchOptions struct {
	quick   bool
	out     string
	verbose bool
}

func newBenchCmd() *cobra.Command {
	o := benchOptions{}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure join, reload, removal, spread and render figures on loopback",
		Long: `Run real nginx, real HAProxy and real scrimp nodes (in this process) on
loopback addresses 127.0.x.y and print one markdown table of measured
figures, each beside its target. Nothing leaves the machine. A full run
takes a few minutes; --quick takes seconds with fewer samples.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			table, err := runBench(ctx, cmd.ErrOrStderr(), o)
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), table)
			if o.out != "" {
				return os.WriteFile(o.out, []byte(table), 0o644)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&o.quick, "quick", false, "a short run with few samples")
	cmd.Flags().StringVar(&o.out, "out", "", "also write the table to this file")
	cmd.Flags().BoolVar(&o.verbose, "verbose", false, "show the nodes' logs on stderr")
	return cmd
}

// benchRow is one line of the result table.
type benchRow struct {
	name, setup, result, target string
}

// Row names, shared with the smoke test.
const (
	rowJoin   = "join → first request served"
	rowBurstR = "reloads per 50-join burst"
	rowBurstT = "last join of burst → all served"
	rowKill   = "kill → removed from proxy config"
	rowGRPC   = "gRPC spread, 1 HTTP/2 conn, 3 backends"
	rowHash   = "hash keys moved adding 4th backend"
	rowRender = "render 10,000 upstream servers"
	rowIdle   = "idle node CPU / RSS"
)

var benchRowNames = []string{rowJoin, rowBurstR, rowBurstT, rowKill, rowGRPC, rowHash, rowRender, rowIdle}

type bencher struct {
	o        benchOptions
	progress io.Writer
	log      *slog.Logger
	rows     []benchRow
	start    time.Time
}

func (b *bencher) add(name, setup, result, target string) {
	b.rows = append(b.rows, benchRow{name, setup, result, target})
	fmt.Fprintf(b.progress, "bench %5.1fs: %s (%s): %s\n", time.Since(b.start).Seconds(), name, setup, result)
}

func failed(err error) string { return "failed: " + strings.ReplaceAll(err.Error(), "|", "/") }

// runBench runs every measurement and returns the markdown table.
func runBench(ctx context.Context, progress io.Writer, o benchOptions) (string, error) {
	for _, bin := range []string{"nginx", "haproxy"} {
		if _, err := exec.LookPath(bin); err != nil {
			return "", fmt.Errorf("%s not found (%v): install it (make deps does)", bin, err)
		}
	}
	start := time.Now()
	b := &bencher{o: o, progress: progress, log: slog.New(slog.DiscardHandler), start: start}
	if o.verbose {
		b.log = slog.New(slog.NewTextHandler(&syncWriter{w: progress}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	proxies := []string{"nginx", "haproxy"}

	// Rows 1-3 share a cluster per proxy: joins, then kills, then a burst.
	for i, p := range proxies {
		if ctx.Err() != nil {
			break
		}
		b.gossipRows(ctx, p, "local", fmt.Sprintf("127.0.%d", 60+i), fmt.Sprintf("127.0.%d", 70+i), true)
	}
	if !o.quick {
		for i, p := range proxies {
			if ctx.Err() != nil {
				break
			}
			b.gossipRows(ctx, p, "lan", fmt.Sprintf("127.0.%d", 62+i), "", false)
		}
	} else {
		for _, p := range proxies {
			b.add(rowJoin, p+", lan", "not measured (--quick)", "≤ 1 s")
		}
	}
	for i, p := range proxies {
		b.grpcSpread(ctx, p, fmt.Sprintf("127.0.%d", 80+i))
	}
	for i, p := range proxies {
		b.hashMoved(ctx, p, fmt.Sprintf("127.0.%d", 82+i))
	}
	for _, p := range proxies {
		b.render(p)
	}
	sizes := []int{3, 10}
	for i, n := range sizes {
		b.idle(ctx, n, fmt.Sprintf("127.0.%d", 90+i))
	}

	var sb strings.Builder
	mode := "full"
	if o.quick {
		mode = "--quick"
	}
	fmt.Fprintf(&sb, "scrimp bench (%s), %s, %d CPUs, %s, took %s\n\n", mode, runtime.Version(), runtime.NumCPU(),
		time.Now().Format("2006-01-02 15:04"), time.Since(start).Round(time.Second))
	sb.WriteString("| measurement | setup | measured | target |\n|---|---|---|---|\n")
	for _, r := range b.rows {
		fmt.Fprintf(&sb, "| %s | %s | %s | %s |\n", r.name, r.setup, r.result, r.target)
	}
	return sb.String(), ctx.Err()
}

// ---- rows 1-3: gossip through a real load balancer node ----

type benchCluster struct {
	b          *bencher
	net, gen   string
	profile    string
	listenPort int
	lb         *node
	seed       string
	stateDir   string
	cancel     context.CancelFunc
	done       chan struct{}
	backends   []*benchBackend
}

type benchBackend struct {
	name    string
	node    *node
	cancel  context.CancelFunc
	stopApp context.CancelFunc
	done    chan struct{}
	killed  bool
}

func (b *bencher) startCluster(netPrefix, gen, profile string) (*benchCluster, error) {
	lbIP := netPrefix + ".1"
	port, err := freePort(lbIP)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "scrimp-bench-")
	if err != nil {
		return nil, err
	}
	c := &benchCluster{b: b, net: netPrefix, gen: gen, profile: profile, listenPort: port, stateDir: dir}
	cfg, err := demoConfig("lb", lbIP, nil)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	cfg.Cluster.Profile = profile
	lbc := config.DefaultLB()
	lbc.StateDir, lbc.ListenAddr, lbc.Generator = dir, lbIP, gen
	cfg.LB = &lbc
	n, err := startLocalNode(cfg, b.log.With("node", "lb-"+gen))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	c.lb, c.seed = n, n.cluster.LocalAddr()
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel, c.done = cancel, make(chan struct{})
	go func() {
		defer close(c.done)
		n.run(ctx)
	}()
	return c, nil
}

// addBackend starts a backend node named name on ip with an HTTP app that
// answers its name, joined through the load balancer.
func (c *benchCluster) addBackend(name, ip string) (*benchBackend, error) {
	appCtx, stopApp := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	appPort, err := serveDemoApp(appCtx, &wg, ip, name)
	if err != nil {
		stopApp()
		return nil, err
	}
	cfg, err := demoConfig(name, ip, []string{c.seed})
	if err != nil {
		stopApp()
		return nil, err
	}
	cfg.Cluster.Profile = c.profile
	bc := config.DefaultBackend()
	// Short: the bench kills backends, and a dead one cannot drain.
	bc.DrainTimeout, bc.DrainGrace = config.D(300*time.Millisecond), config.D(0)
	bc.Applications = []config.Application{{Application: catalog.Application{
		Name: "web", ListenPort: c.listenPort, ApplicationPort: appPort, Protocol: catalog.ProtocolHTTP,
	}}}
	cfg.Backend = &bc
	n, err := startLocalNode(cfg, c.b.log.With("node", name))
	if err != nil {
		stopApp()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	be := &benchBackend{name: name, node: n, cancel: cancel, stopApp: stopApp, done: make(chan struct{})}
	go func() {
		defer close(be.done)
		n.run(ctx)
		stopApp()
		wg.Wait()
	}()
	c.backends = append(c.backends, be)
	return be, nil
}

// kill crashes a backend: its app stops and its gossip goes silent at
// once, without leaving. The node winds down in the background.
func (be *benchBackend) kill() {
	be.killed = true
	be.stopApp()
	be.node.cluster.Kill()
	be.cancel()
}

// close stops every node and the proxy; bounded by the drain timeout.
func (c *benchCluster) close() {
	c.cancel()
	<-c.done
	var wg sync.WaitGroup
	for _, be := range c.backends {
		if !be.killed {
			wg.Go(be.kill)
		}
	}
	wg.Wait()
	for _, be := range c.backends {
		select {
		case <-be.done:
		case <-time.After(10 * time.Second):
		}
	}
	os.RemoveAll(c.stateDir)
}

var benchClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func (c *benchCluster) url() string { return fmt.Sprintf("http://%s.1:%d/", c.net, c.listenPort) }

// get sends one request on a new connection and returns who answered.
func (c *benchCluster) get(client *http.Client) (string, error) {
	resp, err := client.Get(c.url())
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<12))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	return strings.TrimPrefix(strings.TrimSpace(string(body)), "hello from "), nil
}

// waitServed polls until every name has answered, from start.
func (c *benchCluster) waitServed(start time.Time, timeout time.Duration, names ...string) (time.Duration, error) {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	for len(want) > 0 {
		if name, err := c.get(benchClient); err == nil {
			delete(want, name)
		}
		if time.Since(start) > timeout {
			return 0, fmt.Errorf("%d of %d backends not served after %s", len(want), len(names), timeout)
		}
		if len(names) == 1 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	return time.Since(start), nil
}

// routed reports whether the proxy's running configuration names the backend.
func (c *benchCluster) routed(name string) bool {
	if c.gen == "haproxy" {
		b, err := os.ReadFile(c.stateDir + "/haproxy.cfg")
		return err == nil && strings.Contains(string(b), "server "+name+" ")
	}
	b, err := os.ReadFile(c.stateDir + "/nginx.conf")
	return err == nil && strings.Contains(string(b), "# "+name+"\n")
}

func (c *benchCluster) idle() {
	time.Sleep(c.lb.cfg.LB.QuietPeriod.Duration + 100*time.Millisecond)
}

func pct(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s)-1)*p + 0.5)
	return s[i]
}

func ms(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) + " ms" }

// gossipRows measures join → served (row 1) and, when all is set, kill →
// removed (row 3) and the 50-join burst (row 2) on one cluster.
func (b *bencher) gossipRows(ctx context.Context, gen, profile, netPrefix, burstNet string, all bool) {
	setup := gen + ", " + profile
	joins, kills, burst := 20, 5, 50
	if b.o.quick {
		joins, kills, burst = 3, 1, 10
	}
	fmt.Fprintf(b.progress, "bench: %s: starting a load balancer and %d joins\n", setup, joins)
	skipRest := func(reason string) {
		if all {
			b.add(rowKill, gen, reason, "≤ 2 s, 0 failed")
			b.add(rowBurstR, gen, reason, "≤ 3 reloads")
			b.add(rowBurstT, gen, reason, "≤ 1.5 s")
		}
	}
	c, err := b.startCluster(netPrefix, gen, profile)
	if err != nil {
		b.add(rowJoin, setup, failed(err), "≤ 1 s")
		skipRest("not measured: no cluster")
		return
	}
	defer c.close()
	// A permanent backend, as any deployment has a witness for failure
	// detection and a proxy already running.
	if _, err := c.addBackend("backend-1", netPrefix+".2"); err != nil {
		b.add(rowJoin, setup, failed(err), "≤ 1 s")
		skipRest("not measured: no cluster")
		return
	}
	if _, err := c.waitServed(time.Now(), 20*time.Second, "backend-1"); err != nil {
		b.add(rowJoin, setup, failed(err), "≤ 1 s")
		skipRest("not measured: no cluster")
		return
	}

	// Row 1: each join with the load balancer idle.
	var took []time.Duration
	var joinErr error
	for i := range joins {
		if ctx.Err() != nil {
			joinErr = ctx.Err()
			break
		}
		c.idle()
		name := fmt.Sprintf("backend-%d", i+2)
		start := time.Now()
		if _, err := c.addBackend(name, fmt.Sprintf("%s.%d", netPrefix, i+3)); err != nil {
			joinErr = err
			break
		}
		d, err := c.waitServed(start, 10*time.Second, name)
		if err != nil {
			joinErr = fmt.Errorf("%s: %w", name, err)
			break
		}
		took = append(took, d)
	}
	if joinErr != nil {
		b.add(rowJoin, setup, failed(joinErr), "≤ 1 s")
	} else {
		b.add(rowJoin, setup, fmt.Sprintf("p50 %s, p95 %s, max %s (n=%d)", ms(pct(took, .5)), ms(pct(took, .95)), ms(pct(took, 1)), len(took)), "≤ 1 s")
	}
	if !all {
		return
	}
	if joinErr != nil {
		skipRest("not measured: joins failed")
		return
	}

	// Row 3: kill joined backends one at a time under steady GET load.
	b.killRow(ctx, c, gen, kills)

	// Row 2: 50 backends join within 1 s on their own addresses.
	b.burstRow(ctx, c, gen, burstNet, burst)
}

func (b *bencher) killRow(ctx context.Context, c *benchCluster, gen string, kills int) {
	var removed []time.Duration
	var sent, failures atomic.Int64
	var firstErr atomic.Value
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	counting := atomic.Bool{}
	keepAlive := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	for range 4 {
		wg.Go(func() {
			for loadCtx.Err() == nil {
				_, err := c.get(keepAlive)
				if counting.Load() {
					sent.Add(1)
					if err != nil {
						failures.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
					}
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	var window time.Duration
	var killErr error
	for i := range kills {
		if ctx.Err() != nil {
			killErr = ctx.Err()
			break
		}
		c.idle()
		be := c.backends[1+i] // a joined backend, never the witness
		counting.Store(true)
		start := time.Now()
		be.kill()
		for c.routed(be.name) && time.Since(start) < 30*time.Second {
			time.Sleep(5 * time.Millisecond)
		}
		if c.routed(be.name) {
			killErr = fmt.Errorf("%s still routed after 30 s", be.name)
			break
		}
		removed = append(removed, time.Since(start))
		// Requests just after the reload count too.
		time.Sleep(300 * time.Millisecond)
		counting.Store(false)
		window += time.Since(start)
	}
	stopLoad()
	wg.Wait()
	keepAlive.CloseIdleConnections()
	if killErr != nil {
		b.add(rowKill, gen, failed(killErr), "≤ 2 s, 0 failed")
		return
	}
	rate := float64(sent.Load()) / window.Seconds()
	res := fmt.Sprintf("p50 %s, max %s (n=%d); %d of %d GETs failed at %.0f req/s", ms(pct(removed, .5)), ms(pct(removed, 1)),
		len(removed), failures.Load(), sent.Load(), rate)
	if e, ok := firstErr.Load().(string); ok {
		res += " (first: " + strings.ReplaceAll(e, "|", "/") + ")"
	}
	b.add(rowKill, gen, res, "≤ 2 s, 0 failed")
}

func (b *bencher) burstRow(ctx context.Context, c *benchCluster, gen, burstNet string, burst int) {
	setup := fmt.Sprintf("%s, %d joins", gen, burst)
	// Let the load balancer settle completely: no pending reload.
	time.Sleep(c.lb.cfg.LB.QuietPeriod.Duration + c.lb.cfg.LB.MaxWait.Duration)
	before := c.lb.lb.Stats().Applies
	first := time.Now()
	var names []string
	var err error
	for i := range burst {
		if ctx.Err() != nil {
			err = ctx.Err()
			break
		}
		// Spread evenly over just under one second.
		if d := time.Until(first.Add(time.Duration(i) * 900 * time.Millisecond / time.Duration(burst))); d > 0 {
			time.Sleep(d)
		}
		name := fmt.Sprintf("burst-%d", i+1)
		if _, err = c.addBackend(name, fmt.Sprintf("%s.%d", burstNet, i+2)); err != nil {
			break
		}
		names = append(names, name)
	}
	last := time.Now()
	if err != nil {
		b.add(rowBurstR, setup, failed(err), "≤ 3 reloads")
		b.add(rowBurstT, setup, failed(err), "≤ 1.5 s")
		return
	}
	took, err := c.waitServed(last, 30*time.Second, names...)
	// Count reloads that follow too, up to a full coalescing window.
	time.Sleep(c.lb.cfg.LB.QuietPeriod.Duration + c.lb.cfg.LB.MaxWait.Duration + 500*time.Millisecond)
	stats := c.lb.lb.Stats()
	b.add(rowBurstR, setup, fmt.Sprintf("%d reloads (joins spread over %s; %d rejected)", stats.Applies-before,
		last.Sub(first).Round(time.Millisecond), stats.Rejected), "≤ 3 reloads")
	if err != nil {
		b.add(rowBurstT, setup, failed(err), "≤ 1.5 s")
		return
	}
	b.add(rowBurstT, setup, ms(took), "≤ 1.5 s")
}

// ---- rows 4-5: generator + managed proxy directly, no gossip ----

type directProxy struct {
	gen    generator.Generator
	apply  func(context.Context, []byte) error
	close  func() error
	dir    string
	listen string
}

func (b *bencher) newDirect(kind, listen string) (*directProxy, error) {
	gen, err := generator.New(kind, nil)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "scrimp-bench-")
	if err != nil {
		return nil, err
	}
	d := &directProxy{gen: gen, listen: listen}
	switch kind {
	case "haproxy":
		m, err := proxy.NewManagedHAProxy("haproxy", dir, 10*time.Second, b.log)
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		d.apply, d.dir = m.Apply, m.Dir()
		d.close = func() error { defer os.RemoveAll(dir); return m.Close() }
	default:
		m, err := proxy.NewManagedNginx("nginx", dir, 10*time.Second, b.log)
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		d.apply, d.dir = m.Apply, m.Dir()
		d.close = func() error { defer os.RemoveAll(dir); return m.Close() }
	}
	return d, nil
}

func (d *directProxy) render(nodes ...catalog.Node) error {
	out, err := d.gen.Render(generator.Input{Snapshot: catalog.NewSnapshot(nodes), ListenAddr: d.listen, Standalone: true, StateDir: d.dir})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return d.apply(ctx, out.Config)
}

type benchGRPC struct {
	testpb.UnimplementedTestServiceServer
	name string
}

func (s benchGRPC) UnaryCall(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{Hostname: s.name}, nil
}

func (b *bencher) grpcSpread(ctx context.Context, kind, netPrefix string) {
	calls := 1000
	if b.o.quick {
		calls = 150
	}
	setup := fmt.Sprintf("%s, %d calls", kind, calls)
	res, err := func() (string, error) {
		listen := netPrefix + ".1"
		port, err := freePort(listen)
		if err != nil {
			return "", err
		}
		var nodes []catalog.Node
		for i := range 3 {
			name, ip := fmt.Sprintf("grpc-%d", i+1), fmt.Sprintf("%s.%d", netPrefix, i+2)
			ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
			if err != nil {
				return "", err
			}
			gs := grpc.NewServer()
			testpb.RegisterTestServiceServer(gs, benchGRPC{name: name})
			go gs.Serve(ln)
			defer gs.Stop()
			nodes = append(nodes, catalog.Node{Name: name, Addr: netip.MustParseAddr(ip), Role: catalog.RoleBackend,
				Applications: []catalog.Application{{Name: "rpc", ListenPort: port, ApplicationPort: ln.Addr().(*net.TCPAddr).Port, Protocol: catalog.ProtocolGRPC}}})
		}
		d, err := b.newDirect(kind, listen)
		if err != nil {
			return "", err
		}
		defer d.close()
		if err := d.render(nodes...); err != nil {
			return "", err
		}
		conn, err := grpc.NewClient(net.JoinHostPort(listen, strconv.Itoa(port)), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return "", err
		}
		defer conn.Close()
		client := testpb.NewTestServiceClient(conn)
		call := func() (string, error) {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			r, err := client.UnaryCall(cctx, &testpb.SimpleRequest{})
			return r.GetHostname(), err
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			_, err := call()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return "", fmt.Errorf("proxy not serving gRPC after 15 s: %w", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		// A fresh connection: the warm-up calls do not count.
		conn.Close()
		conn, err = grpc.NewClient(net.JoinHostPort(listen, strconv.Itoa(port)), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return "", err
		}
		defer conn.Close()
		client = testpb.NewTestServiceClient(conn)
		counts := map[string]int{}
		for range calls {
			name, err := call()
			if err != nil {
				return "", err
			}
			counts[name]++
		}
		lo, hi := calls, 0
		var parts []string
		for _, n := range nodes {
			lo, hi = min(lo, counts[n.Name]), max(hi, counts[n.Name])
			parts = append(parts, strconv.Itoa(counts[n.Name]))
		}
		if lo == 0 {
			return "", fmt.Errorf("a backend got no calls (%s)", strings.Join(parts, "/"))
		}
		return fmt.Sprintf("%.2f (%s)", float64(hi)/float64(lo), strings.Join(parts, "/")), nil
	}()
	if err != nil {
		res = failed(err)
	}
	b.add(rowGRPC, setup, res, "≤ 1.2")
}

func (b *bencher) hashMoved(ctx context.Context, kind, netPrefix string) {
	keys := 1000
	if b.o.quick {
		keys = 200
	}
	setup := fmt.Sprintf("%s, %d keys, N=3→4", kind, keys)
	res, err := func() (string, error) {
		listen := netPrefix + ".1"
		port, err := freePort(listen)
		if err != nil {
			return "", err
		}
		appCtx, stopApps := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		defer func() { stopApps(); wg.Wait() }()
		app := catalog.Application{Name: "accounts", ListenPort: port, Protocol: catalog.ProtocolHTTP,
			Balance: catalog.BalanceHash, HashKey: "header:X-Key"}
		var nodes []catalog.Node
		for i := range 4 {
			name, ip := fmt.Sprintf("hash-%d", i+1), fmt.Sprintf("%s.%d", netPrefix, i+2)
			p, err := serveDemoApp(appCtx, &wg, ip, name)
			if err != nil {
				return "", err
			}
			a := app
			a.ApplicationPort = p
			nodes = append(nodes, catalog.Node{Name: name, Addr: netip.MustParseAddr(ip), Role: catalog.RoleBackend,
				Applications: []catalog.Application{a}})
		}
		d, err := b.newDirect(kind, listen)
		if err != nil {
			return "", err
		}
		defer d.close()
		url := fmt.Sprintf("http://%s/", net.JoinHostPort(listen, strconv.Itoa(port)))
		ask := func(key int) (string, error) {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			req.Header.Set("X-Key", "key-"+strconv.Itoa(key))
			resp, err := benchClient.Do(req)
			if err != nil {
				return "", err
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				return "", fmt.Errorf("status %d", resp.StatusCode)
			}
			return strings.TrimPrefix(strings.TrimSpace(string(body)), "hello from "), nil
		}
		waitFor := func(ok func(string) bool) error {
			deadline := time.Now().Add(15 * time.Second)
			for k := 0; ; k++ {
				name, err := ask(k % keys)
				if err == nil && ok(name) {
					return nil
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("proxy did not pick up the configuration in 15 s (last: %v)", err)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		mapping := func() ([]string, error) {
			out := make([]string, keys)
			for k := range keys {
				if out[k], err = ask(k); err != nil {
					return nil, err
				}
			}
			return out, nil
		}
		if err := d.render(nodes[:3]...); err != nil {
			return "", err
		}
		if err := waitFor(func(string) bool { return true }); err != nil {
			return "", err
		}
		before, err := mapping()
		if err != nil {
			return "", err
		}
		if err := d.render(nodes...); err != nil {
			return "", err
		}
		if err := waitFor(func(n string) bool { return n == "hash-4" }); err != nil {
			return "", err
		}
		// Old workers finish with their connections; every new one runs the
		// new configuration.
		time.Sleep(time.Second)
		after, err := mapping()
		if err != nil {
			return "", err
		}
		moved, toNew := 0, 0
		for k := range keys {
			if before[k] != after[k] {
				moved++
				if after[k] == "hash-4" {
					toNew++
				}
			}
		}
		return fmt.Sprintf("%.3f moved (%d of %d; %d to the new backend; ideal 0.25)", float64(moved)/float64(keys), moved, keys, toNew), nil
	}()
	if err != nil {
		res = failed(err)
	}
	b.add(rowHash, setup, res, "≤ 0.35")
}

// ---- row 6: render time ----

func (b *bencher) render(kind string) {
	iters := 10
	if b.o.quick {
		iters = 2
	}
	setup := fmt.Sprintf("%s, 1,000 apps × 10 backends, median of %d", kind, iters)
	res, err := func() (string, error) {
		gen, err := generator.New(kind, nil)
		if err != nil {
			return "", err
		}
		var nodes []catalog.Node
		for n := range 10 {
			node := catalog.Node{Name: fmt.Sprintf("node-%02d", n), Addr: netip.MustParseAddr(fmt.Sprintf("127.0.200.%d", n+1)), Role: catalog.RoleBackend}
			for a := range 1000 {
				node.Applications = append(node.Applications, catalog.Application{Name: fmt.Sprintf("app-%04d", a),
					ListenPort: 8080, ApplicationPort: 9000 + a, Protocol: catalog.ProtocolHTTP, Domains: []string{fmt.Sprintf("app-%04d.test", a)}})
			}
			nodes = append(nodes, node)
		}
		in := generator.Input{Snapshot: catalog.NewSnapshot(nodes), ListenAddr: "127.0.0.1", Standalone: true, StateDir: os.TempDir()}
		var took []time.Duration
		var size int
		for i := range iters + 1 {
			start := time.Now()
			out, err := gen.Render(in)
			if err != nil {
				return "", err
			}
			if i > 0 { // the first warms up
				took = append(took, time.Since(start))
			}
			size = len(out.Config)
			if len(out.Warnings) > 0 {
				return "", fmt.Errorf("%d warnings, first: %s", len(out.Warnings), out.Warnings[0])
			}
		}
		return fmt.Sprintf("%.1f ms median, %.1f ms max (%d KiB config)", float64(pct(took, .5).Microseconds())/1000,
			float64(pct(took, 1).Microseconds())/1000, size/1024), nil
	}()
	if err != nil {
		res = failed(err)
	}
	b.add(rowRender, setup, res, "≤ 100 ms")
}

// ---- row 7: idle CPU and RSS ----

// procStat returns this process's user+system CPU time (getrusage
// RUSAGE_SELF) and resident set size (VmRSS in /proc/self/status).
func procStat() (cpu time.Duration, rss int64, err error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0, err
	}
	cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	fh, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, 0, err
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			rss = kb * 1024
		}
	}
	if rss == 0 {
		return 0, 0, errors.New("/proc/self/status: no VmRSS")
	}
	return cpu, rss, nil
}

func (b *bencher) idle(ctx context.Context, nodes int, netPrefix string) {
	window := 10 * time.Second
	if b.o.quick {
		if nodes > 3 {
			b.add(rowIdle, fmt.Sprintf("%d nodes", nodes), "not measured (--quick)", "(no target)")
			return
		}
		window = time.Second
	}
	setup := fmt.Sprintf("%d nodes (1 lb + %d backends, local), %s window; in-process, so the figure covers the bench process (nodes, test apps), not nginx", nodes, nodes-1, window)
	res, err := func() (string, error) {
		runtime.GC()
		debug.FreeOSMemory()
		_, rss0, err := procStat()
		if err != nil {
			return "", err
		}
		c, err := b.startCluster(netPrefix, "nginx", "local")
		if err != nil {
			return "", err
		}
		defer c.close()
		var names []string
		for i := range nodes - 1 {
			name := fmt.Sprintf("idle-%d", i+1)
			if _, err := c.addBackend(name, fmt.Sprintf("%s.%d", netPrefix, i+2)); err != nil {
				return "", err
			}
			names = append(names, name)
		}
		if _, err := c.waitServed(time.Now(), 20*time.Second, names...); err != nil {
			return "", err
		}
		// Let joins, reloads and checks' first rounds settle.
		settle := c.lb.cfg.LB.QuietPeriod.Duration + c.lb.cfg.LB.MaxWait.Duration
		if !b.o.quick {
			settle += 2 * time.Second
		}
		time.Sleep(settle)
		t0, _, err := procStat()
		if err != nil {
			return "", err
		}
		start := time.Now()
		select {
		case <-time.After(window):
		case <-ctx.Done():
			return "", ctx.Err()
		}
		t1, rss1, err := procStat()
		if err != nil {
			return "", err
		}
		cpu := (t1 - t0).Seconds() / time.Since(start).Seconds() * 100
		return fmt.Sprintf("CPU %.2f%% of one core per node (%.2f%% whole process, getrusage); RSS %.1f MiB per node ((%.0f − %.0f MiB baseline) / %d)",
			cpu/float64(nodes), cpu, float64(rss1-rss0)/float64(nodes)/(1<<20), float64(rss1)/(1<<20), float64(rss0)/(1<<20), nodes), nil
	}()
	if err != nil {
		res = failed(err)
	}
	b.add(rowIdle, setup, res, "(no target)")
}
