package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/scrimplb/scrimp/admin"
	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/internal/loopback"
	"github.com/scrimplb/scrimp/node"
)

// Rows of the scale group (issue 17's scale target).
const (
	rowScale1000 = "1,000 in-process backends joining within 10 s"
	rowScale150  = "150 backend processes started together"
)

const (
	targetScale1000 = "all routed ≤ 2 s after the last join; ≤ 10 reloads"
	targetScale150  = "(no target; issue 17: all routed 0.7 s after the last start, 5 reloads)"
)

// scaleSetups are the proxies of the 1,000-backend row.
var scaleSetups = []benchSetup{
	{"haproxy, runtime-api", "haproxy", json.RawMessage(`{"runtime-api": true, "server-slots": 1024}`)},
	{"nginx (default mode)", "nginx", nil},
}

func init() {
	providers = append(providers, rowProvider{
		group: "scale1000",
		names: []string{rowScale1000},
		run: func(ctx context.Context, b *bencher) {
			for i, s := range scaleSetups {
				if ctx.Err() != nil {
					return
				}
				if only := os.Getenv("SCRIMP_BENCH_SCALE_SETUP"); only != "" && only != s.gen {
					continue
				}
				b.scale1000Row(ctx, s, 10+2*i)
				if d := os.Getenv("SCRIMP_BENCH_SCALE_DUMP"); d != "" {
					// What the row left behind in this process.
					runtime.GC()
					var ms runtime.MemStats
					runtime.ReadMemStats(&ms)
					fmt.Fprintf(b.progress, "bench: after the %s row: %d goroutines, heap in use %d MiB\n", s.gen, runtime.NumGoroutine(), ms.HeapInuse>>20)
					if f, err := os.Create(filepath.Join(d, "after-"+s.gen+"-goroutines.txt")); err == nil {
						pprof.Lookup("goroutine").WriteTo(f, 1)
						f.Close()
					}
				}
			}
		},
	}, rowProvider{
		group: "procs150",
		names: []string{rowScale150},
		run:   func(ctx context.Context, b *bencher) { b.procs150Row(ctx, "127.0.140") },
	})
}

// lbProcess is a scrimp load balancer running as a process of the scrimp
// binary, with its managed proxy: its CPU and memory are its own.
type lbProcess struct {
	cmd    *exec.Cmd
	dir    string
	ip     string
	gen    string
	seed   string // its gossip address, host:port
	admin  *admin.Client
	socket string
	dump   string // SCRIMP_BENCH_SCALE_DUMP: the prefix of this process's files there
}

// startLBProcess starts a scrimp load balancer on ip for generator gen
// (options genOpts) with the gossip profile, and waits until its admin
// socket answers.
func (b *bencher) startLBProcess(ctx context.Context, ip, gen string, genOpts json.RawMessage, profile string) (*lbProcess, error) {
	exe, err := b.scrimpBinary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "scrimp-bench-lb-")
	if err != nil {
		return nil, err
	}
	port, err := loopback.FreePort(ip)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if genOpts == nil {
		genOpts = json.RawMessage(`{}`)
	}
	p := &lbProcess{dir: dir, ip: ip, gen: gen, seed: fmt.Sprintf("%s:%d", ip, port), socket: processAdminSocket(ip, port)}
	conf := fmt.Sprintf(`{"role": "lb", "node-name": "bench-lb", "log-level": "warn", "admin-socket": %q,
  "cluster": {"bind-addr": %q, "bind-port": %d, "profile": %q},
  "seed": {"provider": "static", "static": {"addresses": []}},
  "lb": {"generator": %q, "generator-options": %s, "mode": "managed", "listen-addr": %q, "state-dir": %q}}`,
		p.socket, ip, port, profile, gen, genOpts, ip, filepath.Join(dir, "state"))
	file := filepath.Join(dir, "lb.json")
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		p.close()
		return nil, err
	}
	if d := os.Getenv("SCRIMP_BENCH_SCALE_DUMP"); d != "" {
		// Debugging the row: the load balancer's log goes to a file there.
		p.dump = filepath.Join(d, time.Now().Format("150405")+"-"+gen+"-")
		logf, ferr := os.Create(p.dump + "lb.log")
		if ferr != nil {
			p.close()
			return nil, ferr
		}
		defer logf.Close()
		conf = strings.Replace(conf, `"log-level": "warn"`, `"log-level": "debug"`, 1)
		if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
			p.close()
			return nil, err
		}
		cmd := exec.CommandContext(ctx, exe, "--config", file)
		cmd.Stderr = logf
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		cmd.WaitDelay = 10 * time.Second
		if err := cmd.Start(); err != nil {
			p.close()
			return nil, err
		}
		p.cmd = cmd
	} else if p.cmd, err = b.startProcess(ctx, exe, "--config", file); err != nil {
		p.close()
		return nil, err
	}
	p.admin = admin.NewClient(p.socket)
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := p.admin.Status(ctx)
		if err == nil && st.LB != nil {
			return p, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.close()
			return nil, fmt.Errorf("load balancer process: admin socket not answering after 20 s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// close stops the process (SIGTERM: it stops its proxy) and removes its
// files. Safe twice.
func (p *lbProcess) close() {
	if p.cmd != nil {
		loopback.StopProcess(p.cmd, 20*time.Second)
		p.cmd = nil
	}
	os.RemoveAll(p.dir)
}

// routedNames is the set of backend nodes the rendered configuration
// routes requests to (from the "# node" comment of each server line; a
// disabled HAProxy slot routes nowhere).
func routedNames(cfg []byte) map[string]bool {
	out := map[string]bool{}
	for l := range strings.Lines(string(cfg)) {
		l = strings.TrimSpace(l)
		if !strings.HasPrefix(l, "server ") {
			continue
		}
		i := strings.LastIndex(l, " # ")
		if i < 0 {
			if f := strings.Fields(l); len(f) > 1 { // haproxy: server NAME addr ...
				out[f[1]] = true
			}
			continue
		}
		if strings.Contains(l[:i], " disabled") {
			continue
		}
		out[strings.TrimSpace(l[i+3:])] = true
	}
	return out
}

// procUsage is a process tree's CPU time and resident memory.
type procUsage struct {
	cpu time.Duration
	rss int64
}

// treeUsage reads pid's CPU time and RSS, and with children its
// children's too (one level: nginx's or HAProxy's workers).
func treeUsage(pid int, children bool) (procUsage, error) {
	pids := []int{pid}
	if children {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid)); err == nil {
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil {
					pids = append(pids, c)
				}
			}
		}
	}
	var u procUsage
	for i, p := range pids {
		s, err := readProc(p)
		if err != nil {
			if i == 0 {
				return u, err
			}
			continue // a worker that just exited
		}
		u.cpu += s.cpu
		u.rss += s.rss
	}
	return u, nil
}

// readProc reads one process's CPU time and RSS from /proc.
func readProc(pid int) (procSample, error) {
	var s procSample
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("process %d: %w", pid, err)
	}
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	s.cpu = time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ 100
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			s.rss = kb * 1024
		}
	}
	return s, nil
}

// lbUsage samples the load balancer process and its proxy's processes.
func (p *lbProcess) usage(ctx context.Context) (daemon, prox procUsage, err error) {
	if daemon, err = treeUsage(p.cmd.Process.Pid, false); err != nil {
		return
	}
	st, err := p.admin.Status(ctx)
	if err != nil {
		return
	}
	if st.LB != nil && st.LB.ProxyPID > 0 {
		prox, err = treeUsage(st.LB.ProxyPID, true)
	}
	return
}

// waitRouted polls the load balancer's rendered configuration until every
// name is routed, and returns when that was first seen.
func (p *lbProcess) waitRouted(ctx context.Context, names []string, byAddr map[string]string, timeout time.Duration) (time.Time, error) {
	at, _, err := p.waitRoutedJoined(ctx, names, byAddr, timeout)
	return at, err
}

// waitRoutedJoined is waitRouted that also returns when the load balancer
// first counted every name as a member (zero if it never did): the end of
// the joins as the load balancer sees them.
func (p *lbProcess) waitRoutedJoined(ctx context.Context, names []string, byAddr map[string]string, timeout time.Duration) (routedAt, joinedAt time.Time, err error) {
	deadline := time.Now().Add(timeout)
	missing := len(names)
	var lastGot map[string]bool
	var lastStatus time.Time
	for i := 0; ; i++ {
		if joinedAt.IsZero() && time.Since(lastStatus) >= 100*time.Millisecond {
			lastStatus = time.Now()
			if st, err := p.admin.Status(ctx); err == nil && st.Members > len(names) {
				joinedAt = time.Now()
			}
		}
		got, err := p.routed(ctx, byAddr)
		if err == nil {
			lastGot = got
			missing = 0
			for _, n := range names {
				if !got[n] {
					missing++
				}
			}
			if missing == 0 {
				routedAt = time.Now()
				if joinedAt.IsZero() {
					joinedAt = routedAt
				}
				return routedAt, joinedAt, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			why := ""
			if st, serr := p.admin.Status(ctx); serr == nil && st.LB != nil {
				why = fmt.Sprintf("; load balancer: %d members, %d failing its checks, %d refused, %d reloads", st.Members, st.LB.CheckDown, len(st.LB.Refused), st.LB.Reloads)
				if st.LB.Last != nil {
					why += fmt.Sprintf(", last pass %s routing %d backends", st.LB.Last.Result, st.LB.Last.Backends)
				}
				if u, uerr := p.unfetched(ctx); uerr == nil {
					why += fmt.Sprintf(", %d backends whose application sets it has not fetched", u)
				} else {
					why += fmt.Sprintf(", members not read: %v", uerr)
				}
				if d := os.Getenv("SCRIMP_BENCH_SCALE_DUMP"); d != "" {
					cfg, _ := p.admin.Render(ctx)
					os.WriteFile(p.dump+"rendered.cfg", cfg, 0o644)
					mr, merr := p.admin.Members(ctx)
					raw, _ := json.MarshalIndent(mr, "", " ")
					raw = append(raw, fmt.Sprint(merr)...)
					os.WriteFile(p.dump+"members.json", raw, 0o644)
					var miss []string
					for _, n := range names {
						if !lastGot[n] {
							miss = append(miss, n)
						}
					}
					os.WriteFile(p.dump+"missing.txt", []byte(strings.Join(miss, "\n")), 0o644)
				}
			}
			return time.Time{}, joinedAt, fmt.Errorf("%d of %d backends not routed after %s (last error: %v%s)", missing, len(names), timeout, err, why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// scaleNode is an in-process backend of the 1,000 row.
type scaleNode struct {
	name   string
	app    string // its demo app's address, host:port
	node   *node.Node
	cancel context.CancelFunc
	done   chan struct{}
}

// scale1000Row starts a load balancer process and n in-process backend
// nodes (each with its demo app) on 127.<net>.x.y and 127.<net+1>.x.y,
// started at an even rate over 10 s, and reports when the load balancer
// counted them all as members (the end of the joins as it sees them),
// when its proxy routed them all (HAProxy's file; nginx's lua balancer
// state), then whether every one answers a request sent through the load
// balancer, the reloads, and the load balancer's CPU and memory. Gossip
// uses the "wan" profile (gossip every 500 ms, probes every 5 s): with
// this many members in one process on a small machine, the "local"
// profile's 200 ms probe timeout would declare busy members dead.
//
// For debugging, SCRIMP_BENCH_SCALE_SETUP=haproxy|nginx runs one setup
// and SCRIMP_BENCH_SCALE_DUMP=DIR writes into DIR the load balancer's
// debug log, the backends' warnings and failed sends, a CPU profile of
// this process over the joins and a heap profile after them, and on
// failure the load balancer's rendered configuration, its members and the
// backends not routed.
func (b *bencher) scale1000Row(ctx context.Context, s benchSetup, net2 int) {
	n, over := 1000, 10*time.Second
	if b.o.quick {
		n, over = 200, 4*time.Second
	}
	if b.o.scaleBackends > 0 {
		n = b.o.scaleBackends
	}
	const profile = "wan"
	setup := fmt.Sprintf("%s, %d joins over %s (one per %s), gossip profile %q, LB and proxy as processes", s.label, n, over, over/time.Duration(n), profile)
	res, err := func() (string, error) {
		// The bench process holds every backend node; collect its garbage
		// less often (memory is plentiful, two cores are not). The load
		// balancer process keeps its own settings.
		defer debug.SetGCPercent(debug.SetGCPercent(400))
		// …but within a bound: a thousand members each holding the whole
		// membership take a few GiB, and the machine is shared.
		defer debug.SetMemoryLimit(debug.SetMemoryLimit(8 << 30))
		lbIP := fmt.Sprintf("127.%d.0.1", net2)
		lbp, err := b.startLBProcess(ctx, lbIP, s.gen, s.opts, profile)
		if err != nil {
			return "", err
		}
		defer lbp.close()
		listenPort, err := loopback.FreePort(lbIP)
		if err != nil {
			return "", err
		}
		appCtx, stopApps := context.WithCancel(context.Background())
		var apps sync.WaitGroup
		var nodes []*scaleNode
		defer func() {
			// Backends go at once without draining (Kill, then Run ends);
			// the load balancer process is stopped next anyway.
			var wg sync.WaitGroup
			for _, sn := range nodes {
				wg.Go(func() {
					sn.node.Kill()
					sn.cancel()
					<-sn.done
				})
			}
			wg.Wait()
			stopApps()
			apps.Wait()
		}()
		st0, err := lbp.admin.Status(ctx)
		if err != nil {
			return "", err
		}
		d0, p0, err := lbp.usage(ctx)
		if err != nil {
			return "", err
		}
		blog := b.log
		if lbp.dump != "" {
			f, err := os.Create(lbp.dump + "backends.log")
			if err != nil {
				return "", err
			}
			defer f.Close()
			blog = slog.New(dumpHandler{slog.NewTextHandler(&syncWriter{w: f}, &slog.HandlerOptions{Level: slog.LevelDebug})})
		}
		if lbp.dump != "" {
			// This process's CPU over the joins and a little after.
			if f, err := os.Create(lbp.dump + "cpu.prof"); err == nil && pprof.StartCPUProfile(f) == nil {
				stop := time.AfterFunc(over+10*time.Second, func() { pprof.StopCPUProfile(); f.Close() })
				defer func() {
					if stop.Stop() {
						pprof.StopCPUProfile()
						f.Close()
					}
				}()
			}
		}
		names := make([]string, n)
		byAddr := map[string]string{} // app address → node name
		started := make([]*scaleNode, n)
		errs := make([]error, n)
		// Each node starts at its time on the schedule, on a goroutine of
		// its own (at most scaleStarters at once): a start that waits for
		// the CPU, busy with the members already running, does not hold
		// back the next ones.
		slots := make(chan struct{}, scaleStarters)
		var starts sync.WaitGroup
		first := time.Now()
		for i := range n {
			if ctx.Err() != nil {
				break
			}
			time.Sleep(time.Until(first.Add(time.Duration(i) * over / time.Duration(n))))
			names[i] = fmt.Sprintf("big-%04d", i+1)
			// 250 addresses per /24, from 127.<net2>.1.1 up.
			ip := fmt.Sprintf("127.%d.%d.%d", net2+(i/250)/250, 1+(i/250)%250, 1+i%250)
			slots <- struct{}{}
			starts.Go(func() {
				defer func() { <-slots }()
				started[i], errs[i] = startScaleNode(appCtx, &apps, b, blog.With("node", names[i]), names[i], ip, lbp.seed, listenPort, profile)
			})
		}
		starts.Wait()
		for i, sn := range started {
			if sn != nil {
				nodes = append(nodes, sn)
				byAddr[sn.app] = names[i]
			}
		}
		if err := ctx.Err(); err != nil {
			return "", err
		}
		for i, err := range errs {
			if err != nil {
				return "", fmt.Errorf("%s: %w", names[i], err)
			}
		}
		last := time.Now()
		if d := os.Getenv("SCRIMP_BENCH_SCALE_DUMP"); d != "" {
			time.AfterFunc(5*time.Second, func() {
				if f, err := os.Create(lbp.dump + "heap.prof"); err == nil {
					pprof.WriteHeapProfile(f)
					f.Close()
				}
			})
		}
		routedAt, joinedAt, err := lbp.waitRoutedJoined(ctx, names, byAddr, 60*time.Second)
		if err != nil {
			if !joinedAt.IsZero() {
				err = fmt.Errorf("all members %s after the first start: %w", joinedAt.Sub(first).Round(10*time.Millisecond), err)
			}
			// What the backends' side of the gossip shows: sends they
			// skipped (the member did not take their last one) and
			// tasks they dropped (full queues).
			var skipped, dropped uint64
			for _, sn := range nodes {
				cs := sn.node.ClusterStats()
				skipped, dropped = skipped+cs.SkippedSends, dropped+cs.DroppedTasks
			}
			return "", fmt.Errorf("starts spread over %s: %w; backends: %d sends skipped, %d tasks dropped",
				last.Sub(first).Round(10*time.Millisecond), err, skipped, dropped)
		}
		d1, p1, err := lbp.usage(ctx)
		if err != nil {
			return "", err
		}
		// Routed as the proxy says; served is the proof: every backend
		// answers a request sent through the load balancer.
		served, requests, reqFailed, firstErr := servedCheck(ctx, fmt.Sprintf("%s:%d", lbIP, listenPort), names, 60*time.Second)
		failedHow := ""
		if firstErr != nil {
			failedHow = "; first: " + strings.ReplaceAll(firstErr.Error(), "|", "/")
		}
		st1, err := lbp.admin.Status(ctx)
		if err != nil {
			return "", err
		}
		updates := 0
		for _, o := range st1.LB.History {
			if o.At.After(first) && o.Result == "updated" {
				updates++
			}
		}
		window := routedAt.Sub(first).Seconds()
		return fmt.Sprintf("all routed %s after the LB counted the last member (starts took %s, the LB counted all members %s after the first start, all routed %s after it); %d of %d served within 60 s after (%d requests through the LB answered, %d failed%s); %d reloads, %d runtime updates in the last %d passes; "+
			"LB daemon: %.1f%% of a core over the joins, RSS %.0f MiB; %s: %.1f%% of a core, RSS %.0f MiB (master and workers)",
			ms(max(routedAt.Sub(joinedAt), 0)), last.Sub(first).Round(10*time.Millisecond), joinedAt.Sub(first).Round(10*time.Millisecond), routedAt.Sub(first).Round(10*time.Millisecond), served, len(names), requests, reqFailed, failedHow, st1.LB.Reloads-st0.LB.Reloads, updates, len(st1.LB.History),
			(d1.cpu-d0.cpu).Seconds()/window*100, float64(d1.rss)/(1<<20), s.gen, (p1.cpu-p0.cpu).Seconds()/window*100, float64(p1.rss)/(1<<20)), nil
	}()
	if errors.Is(err, errNoProcess) {
		res = "not measured: " + err.Error()
	} else if err != nil {
		res = failed(err)
	}
	b.add(rowScale1000, setup, res, targetScale1000)
}

// scaleStarters bounds the backends of the scale row starting at once.
const scaleStarters = 8

// startScaleNode starts an in-process backend node named name on ip with
// a demo app, joined through seed, serving application "web" on
// listenPort of the load balancer. It has no admin socket.
func startScaleNode(appCtx context.Context, apps *sync.WaitGroup, b *bencher, log *slog.Logger, name, ip, seed string, listenPort int, profile string) (*scaleNode, error) {
	appPort, err := loopback.ServeApp(appCtx, apps, ip, name)
	if err != nil {
		return nil, err
	}
	cfg, err := node.LocalConfig(name, ip, []string{seed})
	if err != nil {
		return nil, err
	}
	cfg.AdminSocket = ""
	cfg.Cluster.Profile = profile
	bc := config.DefaultBackend()
	bc.DrainTimeout, bc.DrainGrace = config.D(time.Second), config.D(0)
	bc.Applications = []config.Application{{Application: catalog.Application{
		Name: "web", ListenPort: listenPort, ApplicationPort: appPort, Protocol: catalog.ProtocolHTTP,
	}}}
	cfg.Backend = &bc
	nd, err := node.StartLocal(cfg, log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	sn := &scaleNode{name: name, app: fmt.Sprintf("%s:%d", ip, appPort), node: nd, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(sn.done)
		nd.Run(ctx)
	}()
	return sn, nil
}

// procs150Row starts a load balancer process (managed nginx) and 150
// scrimp backend processes (their apps served by this process), all at
// once, and reports when all were routed after the last start and the
// reloads; then stops them together.
func (b *bencher) procs150Row(ctx context.Context, netPrefix string) {
	n := 150
	if b.o.quick {
		n = 20
	}
	setup := fmt.Sprintf("nginx (default mode), %d scrimp backend processes started one after another, local profile", n)
	res, err := func() (string, error) {
		lbp, err := b.startLBProcess(ctx, netPrefix+".1", "nginx", nil, "local")
		if err != nil {
			return "", err
		}
		defer lbp.close()
		exe, err := b.scrimpBinary()
		if err != nil {
			return "", err
		}
		listenPort, err := loopback.FreePort(netPrefix + ".1")
		if err != nil {
			return "", err
		}
		dir, err := os.MkdirTemp("", "scrimp-bench-150-")
		if err != nil {
			return "", err
		}
		defer os.RemoveAll(dir)
		appCtx, stopApps := context.WithCancel(context.Background())
		var apps sync.WaitGroup
		var cmds []*exec.Cmd
		defer func() {
			var wg sync.WaitGroup
			for _, c := range cmds {
				wg.Go(func() { loopback.StopProcess(c, 20*time.Second) })
			}
			wg.Wait()
			stopApps()
			apps.Wait()
		}()
		seed, _ := json.Marshal([]string{lbp.seed})
		st0, err := lbp.admin.Status(ctx)
		if err != nil {
			return "", err
		}
		d0, _, err := lbp.usage(ctx)
		if err != nil {
			return "", err
		}
		var names []string
		byAddr := map[string]string{} // app address → process name
		first := time.Now()
		for i := range n {
			name := fmt.Sprintf("proc-%d", i+1)
			ip := netip.MustParseAddr(netPrefix + ".2")
			for range i {
				ip = ip.Next()
			}
			appPort, err := loopback.ServeApp(appCtx, &apps, ip.String(), name)
			if err != nil {
				return "", err
			}
			gossipPort, err := loopback.FreePort(ip.String())
			if err != nil {
				return "", err
			}
			file := filepath.Join(dir, name+".json")
			if err := os.WriteFile(file, []byte(backendProcessConfig(name, ip.String(), gossipPort, seed, listenPort, appPort)), 0o600); err != nil {
				return "", err
			}
			cmd, err := b.startProcess(ctx, exe, "--config", file)
			if err != nil {
				return "", err
			}
			cmds = append(cmds, cmd)
			names = append(names, name)
			byAddr[fmt.Sprintf("%s:%d", ip, appPort)] = name
		}
		last := time.Now()
		routedAt, err := lbp.waitRouted(ctx, names, byAddr, 60*time.Second)
		if err != nil {
			return "", err
		}
		d1, p1, err := lbp.usage(ctx)
		if err != nil {
			return "", err
		}
		// Reloads that follow, up to a coalescing window.
		time.Sleep(1500 * time.Millisecond)
		st1, err := lbp.admin.Status(ctx)
		if err != nil {
			return "", err
		}
		window := routedAt.Sub(first).Seconds()
		return fmt.Sprintf("all routed %s after the last start (starts took %s); %d reloads; LB daemon: %.1f%% of a core, RSS %.0f MiB; nginx RSS %.0f MiB",
			ms(max(routedAt.Sub(last), 0)), last.Sub(first).Round(10*time.Millisecond), st1.LB.Reloads-st0.LB.Reloads,
			(d1.cpu-d0.cpu).Seconds()/window*100, float64(d1.rss)/(1<<20), float64(p1.rss)/(1<<20)), nil
	}()
	if errors.Is(err, errNoProcess) {
		res = "not measured: " + err.Error()
	} else if err != nil {
		res = failed(err)
	}
	b.add(rowScale150, setup, res, targetScale150)
}

// dumpHandler writes, for SCRIMP_BENCH_SCALE_DUMP, the backends' warnings
// and the few debug lines that say why a send did not happen: a thousand
// nodes' full debug log would be most of the row's CPU.
type dumpHandler struct{ slog.Handler }

// dumpMessages are the debug lines dumpHandler keeps.
var dumpMessages = map[string]bool{
	"cannot reach member":                                       true,
	"not sending to a member that did not answer lately":        true,
	"request from a member not known yet: answering once it is": true,
	"member left": true,
}

func (h dumpHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn && !dumpMessages[r.Message] || strings.HasPrefix(r.Message, "memberlist: handler queue full") {
		return nil // the last: hundreds of thousands under overload
	}
	return h.Handler.Handle(ctx, r)
}

func (h dumpHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return dumpHandler{h.Handler.WithAttrs(as)}
}

func (h dumpHandler) WithGroup(name string) slog.Handler {
	return dumpHandler{h.Handler.WithGroup(name)}
}
