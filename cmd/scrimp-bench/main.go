// Command scrimp-bench measures scrimp on loopback: real nginx, real
// HAProxy, real scrimp nodes (in this process and as processes of the
// scrimp binary) on addresses 127.0.x.y, and prints one markdown table of
// figures beside their targets. `make bench` runs it.
//
// Rows come in groups (--rows selects some): the built-in ones runBench
// runs itself (gossip, load, routing, render, idle), and those other files
// register from init as rowProviders (rows.go): seqjoin (joins 1 s apart,
// removals, and where an nginx reload's time goes), chart (the SVG of
// per-backend request rate), scale1000 and procs150 (scale.go). A new file
// adds rows with
//
//	func init() { providers = append(providers, rowProvider{group: ..., names: ..., run: ...}) }
//
// and nothing else.
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
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
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/scrimplb/scrimp/backend"
	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/e2e"
	"github.com/scrimplb/scrimp/generator"
	"github.com/scrimplb/scrimp/internal/loopback"
	"github.com/scrimplb/scrimp/node"
	"github.com/scrimplb/scrimp/proxy"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "scrimp-bench:", err)
		os.Exit(1)
	}
}

// benchOptions configures a run.
type benchOptions struct {
	only string // run one group of rows; empty runs all (older spelling of rows)
	rows string // comma-separated groups of rows to run; empty runs all
	// svg is where the scaling chart (group "chart") is written.
	svg     string
	quick   bool
	out     string
	verbose bool
	// cpuProfile is where the bench's own CPU profile goes; empty: none.
	cpuProfile string
	// scaleBackends overrides the scale1000 row's number of backends.
	scaleBackends int
	// scrimp is the scrimp binary the real-process rows start; empty:
	// findScrimp's default.
	scrimp string
}

func newRootCmd() *cobra.Command {
	o := benchOptions{}
	cmd := &cobra.Command{
		Use:   "scrimp-bench",
		Short: "Measure join, reload, removal, restart and scale under load, spread and render figures on loopback",
		Long: `Run real nginx, real HAProxy and real scrimp nodes (in this process, and
as processes of the scrimp binary) on loopback addresses 127.0.x.y and print
one markdown table of measured figures, each beside its target. Nothing
leaves the machine. A full run takes about eleven minutes on two cores;
--quick is shorter, with fewer samples.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if o.cpuProfile != "" {
				f, err := os.Create(o.cpuProfile)
				if err != nil {
					return fmt.Errorf("--cpuprofile: %w", err)
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return fmt.Errorf("--cpuprofile: %w", err)
				}
				defer pprof.StopCPUProfile()
			}
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
	cmd.Flags().StringVar(&o.only, "only", "", "run one group of rows (same as --rows with one group)")
	cmd.Flags().StringVar(&o.rows, "rows", "", "run only these comma-separated groups of rows: "+strings.Join(allGroups(), ", "))
	cmd.Flags().StringVar(&o.svg, "svg", "bin/bench-scaling.svg", "where the chart row writes its SVG of per-backend request rate")
	cmd.Flags().StringVar(&o.out, "out", "", "also write the table to this file")
	cmd.Flags().IntVar(&o.scaleBackends, "scale-backends", 0, "backends of the scale1000 row (default 1,000; 200 with --quick)")
	cmd.Flags().StringVar(&o.cpuProfile, "cpuprofile", "", "write the bench process's CPU profile here (where in-process nodes spend)")
	cmd.Flags().BoolVar(&o.verbose, "verbose", false, "show the nodes' logs on stderr")
	cmd.Flags().StringVar(&o.scrimp, "scrimp", "", "the scrimp binary for the real-process rows (default: scrimp next to this executable, else built with go build)")
	cmd.AddCommand(newBenchAppCmd())
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
	rowRoll   = "rolling restart under steady load"
	rowScale  = "scale out then in under steady load"
	rowGRPC   = "gRPC spread, 1 HTTP/2 conn, 3 backends"
	rowHash   = "hash keys moved adding 4th backend"
	rowRender = "render 10,000 upstream servers"
	rowIdle   = "idle node CPU / RSS"
)

var benchRowNames = []string{rowJoin, rowBurstR, rowBurstT, rowKill, rowRoll, rowScale, rowGRPC, rowHash, rowRender, rowIdle}

// Targets shared by several rows.
const (
	targetKill = "≤ 2 s; 0 failed with retries"
	targetLoad = "0 failed"
)

// benchSetup is a proxy setup of the rows under steady load: a generator
// and its options.
type benchSetup struct {
	label, gen string
	opts       json.RawMessage
}

var loadSetups = []benchSetup{
	{"nginx, reload", "nginx", json.RawMessage(`{"balancer": "reload"}`)},
	// Reload-free membership changes (seqjoin.go's luaOpts); a generator
	// that refuses the option reports the mode unavailable.
	{"nginx, lua balancer", "nginx", luaOpts},
	{"haproxy", "haproxy", nil},
	{"haproxy, runtime-api", "haproxy", json.RawMessage(`{"runtime-api": true}`)},
}

// noRetries are the generator options that turn the proxy's retries on
// another backend off.
var noRetries = map[string]json.RawMessage{
	"nginx":   json.RawMessage(`{"next-upstream-tries": 1}`),
	"haproxy": json.RawMessage(`{"retries": 0}`),
}

type bencher struct {
	o        benchOptions
	progress io.Writer
	log      *slog.Logger
	rows     []benchRow
	// notes are lines printed under the table (a breakdown, a file
	// written).
	notes []string
	start time.Time

	scrimpOnce sync.Once
	scrimp     string // the scrimp binary (scrimpBinary)
	scrimpErr  error
	cleanup    []func() // run when runBench returns
}

// syncWriter serialises log lines from several nodes onto one writer.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (b *bencher) add(name, setup, result, target string) {
	b.rows = append(b.rows, benchRow{name, setup, result, target})
	fmt.Fprintf(b.progress, "bench %5.1fs: %s (%s): %s\n", time.Since(b.start).Seconds(), name, setup, result)
}

// note adds a line under the table.
func (b *bencher) note(line string) {
	b.notes = append(b.notes, line)
	fmt.Fprintf(b.progress, "bench %5.1fs: %s\n", time.Since(b.start).Seconds(), line)
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
	defer func() {
		for _, f := range b.cleanup {
			f()
		}
	}()
	if o.verbose {
		b.log = slog.New(slog.NewTextHandler(&syncWriter{w: progress}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	proxies := []string{"nginx", "haproxy"}
	groups, err := parseGroups(o.rows, o.only)
	if err != nil {
		return "", err
	}
	// want reports whether a group of rows is to run (--rows, --only).
	want := func(group string) bool { return len(groups) == 0 || groups[group] }
	b.note(b.machineNote(ctx))

	// Rows 1-3 share a cluster per proxy: joins, then kills, then a burst.
	for i, p := range proxies {
		if !want("gossip") {
			break
		}
		if ctx.Err() != nil {
			break
		}
		b.gossipRows(ctx, p, "local", fmt.Sprintf("127.0.%d", 60+i), fmt.Sprintf("127.0.%d", 70+i), true)
	}
	// Row 3 again with the proxy's retries on another backend turned off.
	for i, p := range proxies {
		if ctx.Err() != nil || !want("gossip") {
			break
		}
		b.killNoRetries(ctx, p, fmt.Sprintf("127.0.%d", 100+i))
	}
	if !want("gossip") {
	} else if !o.quick {
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
	// Rolling restart, then scale out and in, under steady client load.
	for i, s := range loadSetups {
		if want("load") {
			b.rollingRow(ctx, s, fmt.Sprintf("127.0.%d", 150+i))
		}
	}
	for i, s := range loadSetups {
		if want("load") {
			b.scaleRow(ctx, s, fmt.Sprintf("127.0.%d", 155+i))
		}
	}
	for i, p := range proxies {
		if want("routing") {
			b.grpcSpread(ctx, p, fmt.Sprintf("127.0.%d", 80+i))
			b.hashMoved(ctx, p, fmt.Sprintf("127.0.%d", 82+i))
		}
	}
	for _, p := range proxies {
		if want("render") {
			b.render(p)
		}
	}
	sizes := []int{3, 10, 30}
	for i, n := range sizes {
		if want("idle") {
			b.idle(ctx, n, fmt.Sprintf("127.0.%d", 90+i))
		}
	}

	// Groups other files register (rows.go).
	for _, p := range providers {
		if want(p.group) && ctx.Err() == nil {
			p.run(ctx, b)
		}
	}

	var sb strings.Builder
	mode := "full"
	if o.quick {
		mode = "--quick"
	}
	fmt.Fprintf(&sb, "scrimp-bench (%s), %s, %d CPUs, %s, took %s\n\n", mode, runtime.Version(), runtime.NumCPU(),
		time.Now().Format("2006-01-02 15:04"), time.Since(start).Round(time.Second))
	sb.WriteString("| measurement | setup | measured | target |\n|---|---|---|---|\n")
	// One block per measurement, in allRowNames' order; setups keep the
	// order they ran in.
	names := allRowNames()
	slices.SortStableFunc(b.rows, func(x, y benchRow) int {
		return cmp.Compare(rowOrder(names, x.name), rowOrder(names, y.name))
	})
	for _, r := range b.rows {
		fmt.Fprintf(&sb, "| %s | %s | %s | %s |\n", r.name, r.setup, r.result, r.target)
	}
	for _, n := range b.notes {
		sb.WriteString("\n" + n + "\n")
	}
	return sb.String(), ctx.Err()
}

// ---- rows 1-3: gossip through a real load balancer node ----

type benchCluster struct {
	b          *bencher
	net, gen   string
	profile    string
	opts       clusterOptions
	listenPort int
	lb         *node.Node
	lbCfg      *config.LB
	seed       string
	stateDir   string
	cancel     context.CancelFunc
	done       chan struct{}
	backends   []*benchBackend
}

type benchBackend struct {
	name    string
	node    *node.Node
	cancel  context.CancelFunc
	stopApp context.CancelFunc
	done    chan struct{}
	gone    bool // killed or stopped
}

// clusterOptions are a bench cluster's settings beyond generator and
// gossip profile.
type clusterOptions struct {
	// genOpts are the generator's options (lb.generator-options).
	genOpts json.RawMessage
	// drainTimeout and drainGrace are every backend's drain settings;
	// a zero drainTimeout means 300 ms and no grace, for clusters whose
	// backends are killed: a dead one cannot drain.
	drainTimeout, drainGrace time.Duration
	// reloadsPerMinute, when positive, is lb.limits.reloads-per-minute
	// (else the default).
	reloadsPerMinute int
}

// gracefulDrain is the drain of the rows under steady load, as
// TestRollingRestartLosesNoRequest has it.
var gracefulDrain = clusterOptions{drainTimeout: 10 * time.Second, drainGrace: 300 * time.Millisecond}

func (b *bencher) startCluster(netPrefix, gen, profile string, opts clusterOptions) (*benchCluster, error) {
	lbIP := netPrefix + ".1"
	port, err := loopback.FreePort(lbIP)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "scrimp-bench-")
	if err != nil {
		return nil, err
	}
	if opts.drainTimeout == 0 {
		opts.drainTimeout, opts.drainGrace = 300*time.Millisecond, 0
	}
	c := &benchCluster{b: b, net: netPrefix, gen: gen, profile: profile, opts: opts, listenPort: port, stateDir: dir}
	cfg, err := node.LocalConfig("lb", lbIP, nil)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	cfg.Cluster.Profile = profile
	lbc := config.DefaultLB()
	lbc.StateDir, lbc.ListenAddr, lbc.Generator, lbc.GeneratorOptions = dir, lbIP, gen, opts.genOpts
	if opts.reloadsPerMinute > 0 {
		lbc.Limits.ReloadsPerMinute = opts.reloadsPerMinute
	}
	cfg.LB = &lbc
	n, err := node.StartLocal(cfg, b.log.With("node", "lb-"+gen))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	c.lb, c.lbCfg, c.seed = n, cfg.LB, n.GossipAddr()
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel, c.done = cancel, make(chan struct{})
	go func() {
		defer close(c.done)
		n.Run(ctx)
	}()
	return c, nil
}

// addBackend starts a backend node named name on ip with an HTTP app that
// answers its name, joined through the load balancer. The app serves
// until the node has finished: drained and left, or killed.
func (c *benchCluster) addBackend(name, ip string) (*benchBackend, error) {
	appCtx, stopApp := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	appPort, err := loopback.ServeApp(appCtx, &wg, ip, name)
	if err != nil {
		stopApp()
		return nil, err
	}
	cfg, err := node.LocalConfig(name, ip, []string{c.seed})
	if err != nil {
		stopApp()
		return nil, err
	}
	cfg.Cluster.Profile = c.profile
	bc := config.DefaultBackend()
	bc.DrainTimeout, bc.DrainGrace = config.D(c.opts.drainTimeout), config.D(c.opts.drainGrace)
	bc.Applications = []config.Application{{Application: catalog.Application{
		Name: "web", ListenPort: c.listenPort, ApplicationPort: appPort, Protocol: catalog.ProtocolHTTP,
	}}}
	cfg.Backend = &bc
	n, err := node.StartLocal(cfg, c.b.log.With("node", name))
	if err != nil {
		stopApp()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	be := &benchBackend{name: name, node: n, cancel: cancel, stopApp: stopApp, done: make(chan struct{})}
	go func() {
		defer close(be.done)
		n.Run(ctx)
		stopApp()
		wg.Wait()
	}()
	c.backends = append(c.backends, be)
	return be, nil
}

// kill crashes a backend: its app stops and its gossip goes silent at
// once, without leaving. The node winds down in the background.
func (be *benchBackend) kill() {
	be.gone = true
	be.stopApp()
	be.node.Kill()
	be.cancel()
}

// stop shuts a backend down gracefully, as a rolling restart or a scale-in
// does: it drains (the load balancer acknowledges a configuration without
// it, then drain-grace), leaves, and only then its app stops. It returns
// when the node has finished.
func (be *benchBackend) stop() {
	be.gone = true
	be.cancel()
	<-be.done
}

// close stops every node and the proxy. Backends still running stop
// gracefully first, while the load balancer can still acknowledge their
// drain (a backend that cannot drain would wait its whole drain timeout);
// bounded by the drain timeout.
func (c *benchCluster) close() {
	for _, be := range c.backends {
		if !be.gone {
			be.gone = true
			be.cancel()
		}
	}
	for _, be := range c.backends {
		select {
		case <-be.done:
		case <-time.After(c.opts.drainTimeout + 10*time.Second):
		}
	}
	c.cancel()
	<-c.done
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
	name, ok := strings.CutPrefix(strings.TrimSpace(string(body)), "hello from ")
	if !ok {
		return "", fmt.Errorf("status 200 but not the demo app's answer: %q", body)
	}
	return name, nil
}

// waitServed polls until every name has answered, from start.
func (c *benchCluster) waitServed(start time.Time, timeout time.Duration, names ...string) (time.Duration, error) {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	var last error
	for len(want) > 0 {
		name, err := c.get(benchClient)
		if err == nil {
			delete(want, name)
		} else {
			last = err
		}
		if time.Since(start) > timeout {
			// The evidence: what the client saw, what the load balancer did.
			st := c.lb.Stats()
			return 0, fmt.Errorf("%d of %d backends not served after %s (last request: %v; load balancer: %d members, %d renders, %d reloads, %d runtime updates, %d update failures, %d rejected, last error %v)",
				len(want), len(names), timeout, last, c.lb.Members(), st.Renders, st.Applies, st.Updates, st.UpdateFailures, st.Rejected, st.LastError)
		}
		if len(names) == 1 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	return time.Since(start), nil
}

// routed reports whether the proxy's running configuration sends requests
// to the backend.
func (c *benchCluster) routed(name string) bool {
	b, err := c.lb.RenderedConfig()
	if err != nil {
		return false
	}
	if c.gen == "haproxy" {
		for l := range strings.Lines(string(b)) {
			l = strings.TrimSpace(l)
			if !strings.HasPrefix(l, "server ") {
				continue
			}
			// "server NAME ..."; in runtime-api mode "server sN ... # NAME",
			// a disabled slot taking no new requests.
			if strings.HasPrefix(l, "server "+name+" ") ||
				strings.HasSuffix(l, " # "+name) && !strings.Contains(l, " disabled") {
				return true
			}
		}
		return false
	}
	return strings.Contains(string(b), "# "+name+"\n")
}

func (c *benchCluster) idle() {
	time.Sleep(c.lbCfg.QuietPeriod.Duration + 100*time.Millisecond)
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
	// These rows make about 30 changes in a minute on one load balancer
	// (21 joins, 5 kills, a burst): in reload mode that is more than the
	// default reload limit lets through at once (20, then one every
	// 1.5 s), so the limit is raised to measure the mechanics, and the
	// setup says so.
	const reloadLimit = 120
	setup := fmt.Sprintf("%s, %s, %d reloads/min", gen, profile, reloadLimit)
	joins, kills, burst := 20, 5, 50
	if b.o.quick {
		joins, kills, burst = 3, 1, 10
	}
	fmt.Fprintf(b.progress, "bench: %s: starting a load balancer and %d joins\n", setup, joins)
	skipRest := func(reason string) {
		if all {
			b.add(rowKill, gen+", retries on", reason, targetKill)
			b.add(rowBurstR, gen, reason, "≤ 3 reloads")
			b.add(rowBurstT, gen, reason, "≤ 1.5 s")
		}
	}
	c, err := b.startCluster(netPrefix, gen, profile, clusterOptions{reloadsPerMinute: reloadLimit})
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
	limit := fmt.Sprintf(", %d reloads/min", reloadLimit)
	b.killRow(ctx, c, gen+", retries on"+limit, kills)

	// Row 2: 50 backends join within 1 s on their own addresses.
	b.burstRow(ctx, c, gen+limit, burstNet, burst)
}

// killRow kills backends 1..kills of c (never the witness, backend 0)
// one at a time under steady GET load, and reports the time from each
// kill to the backend's removal from the proxy's configuration, and the
// requests that failed from the kill to 300 ms after the removal.
func (b *bencher) killRow(ctx context.Context, c *benchCluster, setup string, kills int) {
	var removed []time.Duration
	load := c.startLoad(4, 10*time.Millisecond)
	var killErr error
	how := "SIGKILL to node and app processes"
	for i := range kills {
		if ctx.Err() != nil {
			killErr = ctx.Err()
			break
		}
		// A backend whose node and app are processes of their own, killed
		// with SIGKILL; inside go test (no scrimp binary to start) a
		// joined in-process backend, its app stopped and gossip silenced.
		name := fmt.Sprintf("victim-%d", i+1)
		pb, err := b.startProcBackend(ctx, c, name, fmt.Sprintf("%s.%d", c.net, 200+i))
		var kill func()
		switch {
		case errors.Is(err, errNoProcess):
			how = "in-process crash (app stopped, gossip silenced)"
			be := c.backends[1+i] // a joined backend, never the witness
			name, kill = be.name, be.kill
		case err != nil:
			killErr = err
		default:
			kill = pb.kill
			if _, err := c.waitServed(time.Now(), 10*time.Second, name); err != nil {
				pb.kill()
				killErr = err
			}
		}
		if killErr != nil {
			break
		}
		c.idle()
		load.Count(true)
		start := time.Now()
		kill()
		for c.routed(name) && time.Since(start) < 30*time.Second {
			time.Sleep(5 * time.Millisecond)
		}
		if c.routed(name) {
			killErr = fmt.Errorf("%s still routed after 30 s", name)
			break
		}
		removed = append(removed, time.Since(start))
		// Requests just after the reload count too.
		time.Sleep(300 * time.Millisecond)
		load.Count(false)
	}
	res := load.Stop()
	b.logFailures(rowKill, setup, res)
	if killErr != nil {
		b.add(rowKill, setup, failed(killErr), targetKill)
		return
	}
	b.add(rowKill, setup+", "+how, fmt.Sprintf("p50 %s, max %s (n=%d); %s%s", ms(pct(removed, .5)), ms(pct(removed, 1)),
		len(removed), res, res.First()), targetKill)
}

// killNoRetries is row 3 on a cluster of its own whose proxy does not
// retry a failed request on another backend: what the kills cost then.
func (b *bencher) killNoRetries(ctx context.Context, gen, netPrefix string) {
	setup := gen + ", retries off"
	kills := 5
	if b.o.quick {
		kills = 1
	}
	err := func() error {
		c, err := b.startCluster(netPrefix, gen, "local", clusterOptions{genOpts: noRetries[gen]})
		if err != nil {
			return err
		}
		defer c.close()
		// A witness and the backends to kill, as in gossipRows.
		var names []string
		for i := range kills + 1 {
			name := fmt.Sprintf("backend-%d", i+1)
			if _, err := c.addBackend(name, fmt.Sprintf("%s.%d", netPrefix, i+2)); err != nil {
				return err
			}
			names = append(names, name)
		}
		if _, err := c.waitServed(time.Now(), 20*time.Second, names...); err != nil {
			return err
		}
		b.killRow(ctx, c, setup, kills)
		return nil
	}()
	if err != nil {
		b.add(rowKill, setup, failed(err), targetKill)
	}
}

// ---- steady load: kill, rolling restart and scale rows ----

// startLoad starts a steady GET load through c's load balancer, each
// answer checked to come from a demo app.
func (c *benchCluster) startLoad(clients int, interval time.Duration) *loopback.Load {
	return loopback.StartLoad(clients, interval, func(client *http.Client) error {
		_, err := c.get(client)
		return err
	})
}

// logFailures writes the first failed requests of a row to the progress
// output, with when they were sent (since the kill or the phase's start),
// as evidence.
func (b *bencher) logFailures(name, setup string, r loopback.Result) {
	for _, f := range r.Failures {
		fmt.Fprintf(b.progress, "bench: %s (%s): request sent at %+d ms failed: %s\n", name, setup, f.At.Milliseconds(), f.Err)
	}
}

// loadCluster starts a cluster for setup whose backends drain gracefully,
// with n backends named prefix-1..n served. A generator that does not
// take the setup's options yet is reported as notMeasured.
func (b *bencher) loadCluster(s benchSetup, netPrefix, prefix string, n int) (c *benchCluster, notMeasured string, err error) {
	if _, err := generator.New(s.gen, s.opts); err != nil {
		return nil, "mode unavailable: " + strings.ReplaceAll(err.Error(), "|", "/"), nil
	}
	opts := gracefulDrain
	opts.genOpts = s.opts
	c, err = b.startCluster(netPrefix, s.gen, "local", opts)
	if err != nil {
		return nil, "", err
	}
	var names []string
	for i := range n {
		be, err := c.addBackend(fmt.Sprintf("%s-%d", prefix, i+1), fmt.Sprintf("%s.%d", netPrefix, i+2))
		if err != nil {
			c.close()
			return nil, "", err
		}
		names = append(names, be.name)
	}
	if _, err := c.waitServed(time.Now(), 20*time.Second, names...); err != nil {
		c.close()
		return nil, "", err
	}
	// No reload pending from the joins: the phase counts its own.
	time.Sleep(c.lbCfg.QuietPeriod.Duration + c.lbCfg.MaxWait.Duration)
	return c, "", nil
}

// phase is a change of membership under steady load: it runs change with
// 4 clients at about 260 req/s in all counting, and reports their
// failures, their rate, the phase's duration and the proxy's reloads.
// change calls mark at its steps; with failures, the steps go to the
// progress output beside them.
func (b *bencher) phase(c *benchCluster, name, setup string, change func(mark func(string)) (note string, err error)) string {
	before, reloads := c.lb.Stats(), c.lb.ProxyReloads()
	load := c.startLoad(4, 15*time.Millisecond)
	load.Count(true)
	start := time.Now()
	var marks []string
	mark := func(step string) {
		marks = append(marks, fmt.Sprintf("%+d ms %s", time.Since(start).Milliseconds(), step))
	}
	note, err := change(mark)
	took := time.Since(start)
	// Requests just after the last change count too.
	time.Sleep(300 * time.Millisecond)
	res := load.Stop()
	b.logFailures(name, setup, res)
	if res.Failed > 0 {
		fmt.Fprintf(b.progress, "bench: %s (%s): steps: %s\n", name, setup, strings.Join(marks, ", "))
	}
	if err != nil {
		return failed(err)
	}
	stats := c.lb.Stats()
	out := fmt.Sprintf("%s over %s%s; %d reloads", res, took.Round(100*time.Millisecond), res.First(), c.lb.ProxyReloads()-reloads)
	if n := stats.Updates - before.Updates; n > 0 {
		out += fmt.Sprintf(", %d changes applied without one (runtime API)", n)
	}
	if n := stats.UpdateFailures - before.UpdateFailures; n > 0 {
		out += fmt.Sprintf(", %d runtime updates failed", n)
	}
	if n := stats.Rejected - before.Rejected; n > 0 {
		out += fmt.Sprintf(", %d configurations rejected", n)
	}
	if note != "" {
		out += "; " + note
	}
	return out
}

// stopAll stops backends gracefully, all at once, and notes those that
// did not drain (the drain was not advertised, or not acknowledged in
// time) or that the proxy's configuration still routes to afterwards.
func (c *benchCluster) stopAll(bes ...*benchBackend) string {
	var wg sync.WaitGroup
	for _, be := range bes {
		wg.Go(be.stop)
	}
	wg.Wait()
	var notes []string
	var undrained []string
	first := ""
	for _, be := range bes {
		if out, ok := be.node.Drained(); !ok || out.Result != backend.DrainAcknowledged {
			undrained = append(undrained, be.name)
			if first == "" {
				first = be.name + ": " + out.String()
				if !ok {
					first = be.name + ": drain never ended"
				}
			}
		}
	}
	if len(undrained) > 0 {
		notes = append(notes, fmt.Sprintf("%d of %d did not drain (%s; first: %s)", len(undrained), len(bes),
			strings.Join(undrained, ", "), strings.ReplaceAll(first, "|", "/")))
	}
	var still []string
	deadline := time.Now().Add(2 * time.Second)
	for _, be := range bes {
		for c.routed(be.name) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if c.routed(be.name) {
			still = append(still, be.name)
		}
	}
	if len(still) > 0 {
		notes = append(notes, "still routed after leaving: "+strings.Join(still, ", "))
	}
	return strings.Join(notes, "; ")
}

// rollingRow replaces every backend of a cluster, one at a time, under
// steady load: a replacement starts and is served, then the backend it
// replaces stops gracefully.
func (b *bencher) rollingRow(ctx context.Context, s benchSetup, netPrefix string) {
	n := 3
	if b.o.quick {
		n = 2
	}
	setup := fmt.Sprintf("%s, %d backends replaced one at a time (drain %s, grace %s), 4 keep-alive clients", s.label, n,
		gracefulDrain.drainTimeout, gracefulDrain.drainGrace)
	if ctx.Err() != nil {
		b.add(rowRoll, setup, failed(ctx.Err()), targetLoad)
		return
	}
	c, notMeasured, err := b.loadCluster(s, netPrefix, "old", n)
	switch {
	case err != nil:
		b.add(rowRoll, setup, failed(err), targetLoad)
		return
	case notMeasured != "":
		b.add(rowRoll, setup, notMeasured, targetLoad)
		return
	}
	defer c.close()
	old := slices.Clone(c.backends)
	res := b.phase(c, rowRoll, setup, func(mark func(string)) (string, error) {
		var notes []string
		for i, be := range old {
			if ctx.Err() != nil {
				return "", ctx.Err()
			}
			repl, err := c.addBackend(fmt.Sprintf("new-%d", i+1), fmt.Sprintf("%s.%d", netPrefix, 20+i))
			if err != nil {
				return "", err
			}
			mark(repl.name + " started")
			if _, err := c.waitServed(time.Now(), 10*time.Second, repl.name); err != nil {
				return "", fmt.Errorf("%s: %w", repl.name, err)
			}
			mark(repl.name + " served; stopping " + be.name)
			if note := c.stopAll(be); note != "" {
				notes = append(notes, note)
			}
			mark(be.name + " stopped")
		}
		return strings.Join(notes, "; "), nil
	})
	b.add(rowRoll, setup, res, targetLoad)
}

// scaleRow grows a cluster from `from` backends to `to` and shrinks it to
// `end` under steady load; the backends that go stop gracefully, all at
// once, as an autoscaler's scale-in does.
func (b *bencher) scaleRow(ctx context.Context, s benchSetup, netPrefix string) {
	from, to, end := 3, 10, 2
	if b.o.quick {
		from, to, end = 2, 4, 1
	}
	setup := fmt.Sprintf("%s, %d → %d → %d backends, the %d leaving at once (drain %s, grace %s), 4 keep-alive clients", s.label,
		from, to, end, to-end, gracefulDrain.drainTimeout, gracefulDrain.drainGrace)
	if ctx.Err() != nil {
		b.add(rowScale, setup, failed(ctx.Err()), targetLoad)
		return
	}
	c, notMeasured, err := b.loadCluster(s, netPrefix, "scale", from)
	switch {
	case err != nil:
		b.add(rowScale, setup, failed(err), targetLoad)
		return
	case notMeasured != "":
		b.add(rowScale, setup, notMeasured, targetLoad)
		return
	}
	defer c.close()
	res := b.phase(c, rowScale, setup, func(mark func(string)) (string, error) {
		var names []string
		for i := from; i < to; i++ {
			be, err := c.addBackend(fmt.Sprintf("scale-%d", i+1), fmt.Sprintf("%s.%d", netPrefix, i+2))
			if err != nil {
				return "", err
			}
			names = append(names, be.name)
		}
		mark(fmt.Sprintf("%d started", to-from))
		start := time.Now()
		if _, err := c.waitServed(start, 20*time.Second, names...); err != nil {
			return "", err
		}
		mark(fmt.Sprintf("all %d served; stopping %d", to, to-end))
		out := fmt.Sprintf("all %d served %s after the last start", to, ms(time.Since(start)))
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		start = time.Now()
		note := c.stopAll(c.backends[:to-end]...)
		mark(fmt.Sprintf("%d stopped", to-end))
		out += fmt.Sprintf("; %d stopped %s after the stop", to-end, ms(time.Since(start)))
		if note != "" {
			out += "; " + note
		}
		return out, nil
	})
	b.add(rowScale, setup, res, targetLoad)
}

func (b *bencher) burstRow(ctx context.Context, c *benchCluster, gen, burstNet string, burst int) {
	setup := fmt.Sprintf("%s, %d joins", gen, burst)
	// Let the load balancer settle completely: no pending reload.
	time.Sleep(c.lbCfg.QuietPeriod.Duration + c.lbCfg.MaxWait.Duration)
	before := c.lb.Stats().Applies
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
	time.Sleep(c.lbCfg.QuietPeriod.Duration + c.lbCfg.MaxWait.Duration + 500*time.Millisecond)
	stats := c.lb.Stats()
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
	k, ok := proxy.LookupKind(kind)
	if !ok || k.NewManaged == nil {
		return nil, fmt.Errorf("bench: %q is not a proxy kind that runs in managed mode", kind)
	}
	gen, err := generator.New(k.Generator, nil)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "scrimp-bench-")
	if err != nil {
		return nil, err
	}
	m, err := k.NewManaged(k.Binary, dir, 10*time.Second, b.log)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &directProxy{gen: gen, listen: listen, apply: m.Apply, dir: m.Dir(),
		close: func() error { defer os.RemoveAll(dir); return m.Close() }}, nil
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

func (b *bencher) grpcSpread(ctx context.Context, kind, netPrefix string) {
	calls := 1000
	if b.o.quick {
		calls = 150
	}
	setup := fmt.Sprintf("%s, %d calls", kind, calls)
	res, err := func() (string, error) {
		listen := netPrefix + ".1"
		port, err := loopback.FreePort(listen)
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
			gs := e2e.NewGRPCServer(name)
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
		// One call on conn, which the second connection below replaces.
		call := func() (string, error) { return e2e.GRPCCall(ctx, conn) }
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
		port, err := loopback.FreePort(listen)
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
			p, err := loopback.ServeApp(appCtx, &wg, ip, name)
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

// idle measures idle nodes in a cluster of nodes members: an in-process
// load balancer and nodes-3 in-process backends, plus one real scrimp
// backend process and one real scrimp load balancer process (with its own
// nginx) started from this binary. The processes' CPU and RSS are read
// from /proc: that is what a node costs on a VPS. The in-process figure is
// the bench process's growth per node (Go runtime shared), for comparison.
func (b *bencher) idle(ctx context.Context, nodes int, netPrefix string) {
	window := 10 * time.Second
	if b.o.quick {
		if nodes > 3 {
			b.add(rowIdle, fmt.Sprintf("%d nodes", nodes), "not measured (--quick)", "(no target)")
			return
		}
		window = time.Second
	}
	setup := fmt.Sprintf("%d nodes (2 lb + %d backends, local profile), %s window", nodes, nodes-2, window)
	res, err := func() (string, error) {
		runtime.GC()
		debug.FreeOSMemory()
		_, rss0, err := procStat()
		if err != nil {
			return "", err
		}
		c, err := b.startCluster(netPrefix, "nginx", "local", clusterOptions{})
		if err != nil {
			return "", err
		}
		defer c.close()
		var names []string
		for i := range nodes - 3 {
			name := fmt.Sprintf("idle-%d", i+1)
			if _, err := c.addBackend(name, fmt.Sprintf("%s.%d", netPrefix, i+2)); err != nil {
				return "", err
			}
			names = append(names, name)
		}
		procs, err := b.idleProcesses(ctx, c, netPrefix+".250", netPrefix+".251")
		noProcs := ""
		switch {
		case errors.Is(err, errNoProcess):
			procs, noProcs = &idleProcs{}, err.Error() // in-process nodes only
		case err != nil:
			return "", err
		default:
			defer procs.stop()
			names = append(names, procs.backendName)
		}
		if _, err := c.waitServed(time.Now(), 30*time.Second, names...); err != nil {
			return "", err
		}
		// Let joins, reloads and checks' first rounds settle.
		settle := c.lbCfg.QuietPeriod.Duration + c.lbCfg.MaxWait.Duration
		if !b.o.quick {
			settle += 2 * time.Second
		}
		time.Sleep(settle)
		t0, _, err := procStat()
		if err != nil {
			return "", err
		}
		p0, err := procs.sample()
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
		p1, err := procs.sample()
		if err != nil {
			return "", err
		}
		took := time.Since(start).Seconds()
		inProc := nodes - 2
		cpu := (t1 - t0).Seconds() / took * 100
		pct := func(i int) float64 { return (p1[i].cpu - p0[i].cpu).Seconds() / took * 100 }
		res := noProcs
		if len(p1) == 2 {
			res = fmt.Sprintf("scrimp backend process: CPU %.2f%% of a core, RSS %.1f MiB; scrimp lb process: CPU %.2f%%, RSS %.1f MiB (its nginx not counted)",
				pct(0), float64(p1[0].rss)/(1<<20), pct(1), float64(p1[1].rss)/(1<<20))
		}
		return res + fmt.Sprintf("; in-process nodes: CPU %.2f%%, RSS +%.1f MiB per node",
			cpu/float64(inProc), float64(rss1-rss0)/float64(inProc)/(1<<20)), nil
	}()
	if err != nil {
		res = failed(err)
	}
	b.add(rowIdle, setup, res, "(no target)")
}

// errNoProcess wraps why a row's real processes cannot start (no scrimp
// binary; a go test binary cannot run bench-app): the row then measures
// in-process nodes only.
var errNoProcess = errors.New("real processes not measured")

// scrimpBinary returns the scrimp binary the real-process rows start:
// --scrimp, else scrimp next to this executable, else one built with go
// build into a temporary directory (removed by runBench). The answer is
// found once.
func (b *bencher) scrimpBinary() (string, error) {
	b.scrimpOnce.Do(func() {
		b.scrimp, b.scrimpErr = b.findScrimp()
		if b.scrimpErr != nil {
			b.scrimpErr = fmt.Errorf("%w (%v)", errNoProcess, b.scrimpErr)
		}
	})
	return b.scrimp, b.scrimpErr
}

func (b *bencher) findScrimp() (string, error) {
	if b.o.scrimp != "" {
		return exec.LookPath(b.o.scrimp)
	}
	if exe, err := os.Executable(); err == nil {
		next := filepath.Join(filepath.Dir(exe), "scrimp")
		if st, err := os.Stat(next); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return next, nil
		}
	}
	dir, err := os.MkdirTemp("", "scrimp-bench-bin-")
	if err != nil {
		return "", err
	}
	b.cleanup = append(b.cleanup, func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "scrimp")
	fmt.Fprintf(b.progress, "bench: building scrimp with go build for the real-process rows\n")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/scrimplb/scrimp/cmd/scrimp").CombinedOutput(); err != nil {
		return "", fmt.Errorf("no scrimp next to scrimp-bench and go build failed (pass --scrimp PATH): %v: %s", err, bytes.TrimSpace(out))
	}
	return bin, nil
}

// selfForApp returns this executable, to start as `scrimp-bench
// bench-app`; a go test binary cannot be.
func selfForApp() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("%w (%v)", errNoProcess, err)
	}
	if strings.HasSuffix(exe, ".test") {
		return "", fmt.Errorf("%w (a test binary cannot run bench-app; scrimp-bench can)", errNoProcess)
	}
	return exe, nil
}

// idleProcs are real scrimp processes of the idle rows.
type idleProcs struct {
	backendName string
	cmds        []*exec.Cmd // backend, load balancer
	dir         string
	stopApp     context.CancelFunc
	wg          sync.WaitGroup
}

// procSample is a process's CPU time and resident memory.
type procSample struct {
	cpu time.Duration
	rss int64
}

// idleProcesses starts the scrimp binary twice: as a backend on backendIP with
// a demo app, and as a load balancer on lbIP with managed nginx, both
// joined to c.
func (b *bencher) idleProcesses(ctx context.Context, c *benchCluster, backendIP, lbIP string) (*idleProcs, error) {
	exe, err := b.scrimpBinary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "scrimp-bench-idle-")
	if err != nil {
		return nil, err
	}
	p := &idleProcs{backendName: "idle-process", dir: dir}
	appCtx, stopApp := context.WithCancel(context.Background())
	p.stopApp = stopApp
	appPort, err := loopback.ServeApp(appCtx, &p.wg, backendIP, p.backendName)
	if err != nil {
		p.stop()
		return nil, err
	}
	seed, err := json.Marshal([]string{c.seed})
	if err != nil {
		p.stop()
		return nil, err
	}
	var ports [2]int
	for i, ip := range []string{backendIP, lbIP} {
		if ports[i], err = loopback.FreePort(ip); err != nil {
			p.stop()
			return nil, err
		}
	}
	configs := []string{
		backendProcessConfig(p.backendName, backendIP, ports[0], seed, c.listenPort, appPort),
		fmt.Sprintf(`{"role": "lb", "node-name": "idle-process-lb", "log-level": "warn", "admin-socket": %q,
  "cluster": {"bind-addr": %q, "bind-port": %d, "profile": "local"},
  "seed": {"provider": "static", "static": {"addresses": %s}},
  "lb": {"generator": "nginx", "mode": "managed", "listen-addr": %q, "state-dir": %q}}`,
			processAdminSocket(lbIP, ports[1]), lbIP, ports[1], seed, lbIP, filepath.Join(dir, "lb")),
	}
	for i, conf := range configs {
		file := filepath.Join(dir, fmt.Sprintf("node-%d.json", i))
		if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
			p.stop()
			return nil, err
		}
		cmd, err := b.startProcess(ctx, exe, "--config", file)
		if err != nil {
			p.stop()
			return nil, err
		}
		p.cmds = append(p.cmds, cmd)
	}
	return p, nil
}

// backendProcessConfig is the configuration of a scrimp backend process
// serving application "web" (listenPort on the load balancer) from
// appPort on ip.
func backendProcessConfig(name, ip string, gossipPort int, seed []byte, listenPort, appPort int) string {
	return fmt.Sprintf(`{"role": "backend", "node-name": %q, "log-level": "warn", "admin-socket": %q,
  "cluster": {"bind-addr": %q, "bind-port": %d, "profile": "local"},
  "seed": {"provider": "static", "static": {"addresses": %s}},
  "backend": {"drain-timeout": "2s", "applications": [{"name": "web", "listen-port": %d, "application-port": %d, "protocol": "http"}]}}`,
		name, processAdminSocket(ip, gossipPort), ip, gossipPort, seed, listenPort, appPort)
}

// processAdminSocket is the admin socket of a scrimp process the bench
// starts: its own, named after its gossip address (the default,
// /run/scrimp/admin.sock, may belong to a scrimp running on the host).
func processAdminSocket(ip string, gossipPort int) string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("scrimp-bench-%s-%d.sock", ip, gossipPort))
}

// startProcess starts exe with args; ctx's end stops it with SIGTERM (a
// node then leaves cleanly).
func (b *bencher) startProcess(ctx context.Context, exe string, args ...string) (*exec.Cmd, error) {
	cmd := exec.CommandContext(ctx, exe, args...)
	if b.o.verbose {
		cmd.Stderr = b.progress
	}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", exe, err)
	}
	return cmd, nil
}

// procBackend is a backend whose scrimp node and demo app are two
// processes of this binary, so that it can crash as a host does: both
// get SIGKILL at once.
type procBackend struct {
	name      string
	node, app *exec.Cmd
	dir       string
	config    string // the node's configuration file, in dir
	// nodeStarted is when the node's process was started (its app runs
	// already).
	nodeStarted time.Time
}

// startProcBackend starts the app (`scrimp-bench bench-app`, which prints its
// port) and then the scrimp node, joined to c.
func (b *bencher) startProcBackend(ctx context.Context, c *benchCluster, name, ip string) (*procBackend, error) {
	exe, err := b.scrimpBinary()
	if err != nil {
		return nil, err
	}
	self, err := selfForApp()
	if err != nil {
		return nil, err
	}
	p := &procBackend{name: name}
	if p.dir, err = os.MkdirTemp("", "scrimp-bench-kill-"); err != nil {
		return nil, err
	}
	app := exec.CommandContext(ctx, self, "bench-app", "--ip", ip, "--name", name)
	out, err := app.StdoutPipe()
	if err != nil {
		p.kill()
		return nil, err
	}
	if err := app.Start(); err != nil {
		p.kill()
		return nil, err
	}
	p.app = app
	line, err := bufio.NewReader(out).ReadString('\n')
	appPort, perr := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || perr != nil {
		p.kill()
		return nil, fmt.Errorf("bench-app on %s: no port (%q, %v)", ip, line, err)
	}
	seed, err := json.Marshal([]string{c.seed})
	if err != nil {
		p.kill()
		return nil, err
	}
	gossipPort, err := loopback.FreePort(ip)
	if err != nil {
		p.kill()
		return nil, err
	}
	p.config = filepath.Join(p.dir, "node.json")
	if err := os.WriteFile(p.config, []byte(backendProcessConfig(name, ip, gossipPort, seed, c.listenPort, appPort)), 0o600); err != nil {
		p.kill()
		return nil, err
	}
	if err := p.startNode(ctx, b, exe); err != nil {
		p.kill()
		return nil, err
	}
	return p, nil
}

// startNode starts p's node process (exe) with its configuration file and
// records when.
func (p *procBackend) startNode(ctx context.Context, b *bencher, exe string) error {
	p.nodeStarted = time.Now()
	var err error
	p.node, err = b.startProcess(ctx, exe, "--config", p.config)
	return err
}

// stopNode stops p's node process gracefully (SIGTERM: it drains and
// leaves) and reaps it; the app keeps running.
func (p *procBackend) stopNode() {
	if p.node != nil {
		loopback.StopProcess(p.node, 20*time.Second)
		p.node = nil
	}
}

// kill sends SIGKILL to the node and the app at once and reaps them.
func (p *procBackend) kill() {
	for _, cmd := range []*exec.Cmd{p.node, p.app} {
		if cmd != nil {
			cmd.Process.Kill()
		}
	}
	for _, cmd := range []*exec.Cmd{p.node, p.app} {
		if cmd != nil {
			cmd.Wait()
		}
	}
	os.RemoveAll(p.dir)
}

// stop ends the backend gracefully: SIGTERM to the node (it drains and
// leaves), then, once it has exited, the app. It blocks until both are
// reaped.
func (p *procBackend) stop() {
	p.stopNode()
	p.kill()
}

// newBenchAppCmd is `scrimp-bench bench-app`, the demo app as a process of its
// own for the bench's kill rows: it prints its port, then serves until a
// signal.
func newBenchAppCmd() *cobra.Command {
	var ip, name string
	cmd := &cobra.Command{
		Use:    "bench-app",
		Short:  "Serve the demo app (used by the bench's kill rows)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			var wg sync.WaitGroup
			port, err := loopback.ServeApp(ctx, &wg, ip, name)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), port)
			<-ctx.Done()
			wg.Wait()
			return nil
		},
	}
	cmd.Flags().StringVar(&ip, "ip", "127.0.0.1", "loopback address to listen on")
	cmd.Flags().StringVar(&name, "name", "bench-app", "the name the app answers")
	return cmd
}

// sample reads each process's CPU time and RSS from /proc.
func (p *idleProcs) sample() ([]procSample, error) {
	out := make([]procSample, len(p.cmds))
	for i, cmd := range p.cmds {
		pid := strconv.Itoa(cmd.Process.Pid)
		stat, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			return nil, fmt.Errorf("node process %s exited: %w", pid, err)
		}
		// pid (comm) state ppid … utime(14) stime(15), counted after ')'.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) < 13 {
			return nil, fmt.Errorf("/proc/%s/stat: short", pid)
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		// Linux reports these in clock ticks of 1/100 s (USER_HZ).
		out[i].cpu = time.Duration(ut+st) * 10 * time.Millisecond
		status, err := os.ReadFile("/proc/" + pid + "/status")
		if err != nil {
			return nil, err
		}
		for line := range strings.Lines(string(status)) {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				out[i].rss = kb * 1024
			}
		}
	}
	return out, nil
}

// stop ends the processes gracefully (SIGTERM: they drain and leave),
// waits for them, stops the demo app and removes the files.
func (p *idleProcs) stop() {
	for _, cmd := range p.cmds {
		cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, cmd := range p.cmds {
		loopback.StopProcess(cmd, 15*time.Second)
	}
	p.stopApp()
	p.wg.Wait()
	os.RemoveAll(p.dir)
}
