package node

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/cluster"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/internal/loopback"
	"github.com/scrimplb/scrimp/keyring"
)

// The memory attacks of issue 13, measured on the real proxy processes:
// one keyed member advertising 4,096 applications grew nginx from 16 MB
// to 550 MB with a 4.5 MB nginx.conf and 800 listeners, kept for an hour
// after it left; the same set flipping every 4 s while connections were
// held open grew nginx to 5 GB and 29 processes, old workers never
// exiting. These tests measure the managed proxy's process tree (its
// master and every process under it, from /proc) against a baseline
// taken with only a legitimate application routed.

// floodApps returns n applications named PREFIX-0000…: every fourth a
// tcp application on its own listen port from tcpBase, the others HTTP
// applications on port with a domain each, as a member that wants as many
// server blocks and listeners as it can get would advertise.
func floodApps(prefix string, n, port, tcpBase int) []catalog.Application {
	var apps []catalog.Application
	for i := range n {
		a := catalog.Application{Name: fmt.Sprintf("%s-%04d", prefix, i)}
		if i%4 == 3 {
			a.Protocol, a.ListenPort = catalog.ProtocolTCP, tcpBase+i/4
		} else {
			a.Protocol, a.ListenPort = catalog.ProtocolHTTP, port
			a.Domains = []string{fmt.Sprintf("%s-%04d.flood.example", prefix, i)}
		}
		apps = append(apps, a)
	}
	return apps
}

// listenDirective is a listener in a rendered configuration: nginx's
// "listen ADDR" and HAProxy's "bind ADDR".
var listenDirective = regexp.MustCompile(`(?m)^\s*(?:listen|bind)\s+(\S+?);?(?:\s|$)`)

// listeners returns the distinct listen addresses of a rendered
// configuration (nginx repeats one in every server block of its port).
func listeners(conf string) []string {
	var out []string
	for _, m := range listenDirective.FindAllStringSubmatch(conf, -1) {
		if !slices.Contains(out, m[1]) {
			out = append(out, m[1])
		}
	}
	return out
}

// settled waits until the proxy's process tree has the same number of
// processes in three samples 300 ms apart (a reload's old workers have
// exited) and returns the last sample.
func (tc *testCluster) settled(t *testing.T, timeout time.Duration) procUsage {
	t.Helper()
	var last []procUsage
	waitFor(t, "a settled proxy process tree", timeout, func() bool {
		last = append(last, tc.proxyUsage(t))
		time.Sleep(300 * time.Millisecond)
		n := len(last)
		return n >= 3 && last[n-1].Procs == last[n-2].Procs && last[n-2].Procs == last[n-3].Procs
	})
	return last[len(last)-1]
}

// sampler records the proxy's process tree every interval until stopped,
// keeping the peaks.
type sampler struct {
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	samples int
	peak    procUsage // the largest of each field, not one sample
	check   func(procUsage) error
	errs    []error
}

// startSampler samples tc's proxy every interval; check, if not nil, is
// called on every sample and what it returns is reported by stopSampling.
func (tc *testCluster) startSampler(t *testing.T, interval time.Duration, check func(procUsage) error) *sampler {
	t.Helper()
	master := tc.proxyMaster(t)
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{}), check: check}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			u := treeUsage(master)
			s.mu.Lock()
			s.samples++
			if u.Procs == 0 && len(s.errs) < 10 {
				s.errs = append(s.errs, fmt.Errorf("the proxy's master %d is gone", master))
			}
			s.peak.Procs, s.peak.RSS, s.peak.PSS, s.peak.Own = max(s.peak.Procs, u.Procs), max(s.peak.RSS, u.RSS), max(s.peak.PSS, u.PSS), max(s.peak.Own, u.Own)
			if s.check != nil {
				if err := s.check(u); err != nil && len(s.errs) < 10 {
					s.errs = append(s.errs, err)
				}
			}
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(s.halt)
	return s
}

// halt stops the sampling and waits for it; safe to call again.
func (s *sampler) halt() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

// stopSampling stops s and returns the peaks, failing the test with what
// check reported.
func (s *sampler) stopSampling(t *testing.T) procUsage {
	t.Helper()
	s.halt()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, err := range s.errs {
		t.Error(err)
	}
	if s.samples < 2 {
		t.Fatalf("only %d samples of the proxy's processes", s.samples)
	}
	return s.peak
}

// prober sends requests for the legitimate application through the proxy
// on fresh connections until stopped, counting answers that are not the
// legitimate backend's as failures.
type prober struct {
	stop         chan struct{}
	done         chan struct{}
	sent, failed atomic.Int64
	mu           sync.Mutex
	firstErr     error
	slowest      time.Duration
}

// startProber starts probing, a request every interval; stopProbing
// reports.
func (tc *testCluster) startProber(t *testing.T, want string, interval time.Duration) *prober {
	p := &prober{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			sent := time.Now()
			name, err := tc.get() // no keep-alive: a new connection each
			if err == nil && name != want {
				err = fmt.Errorf("answered by %q, want %q", name, want)
			}
			took := time.Since(sent)
			p.sent.Add(1)
			if err != nil {
				p.failed.Add(1)
			}
			p.mu.Lock()
			p.slowest = max(p.slowest, took)
			if err != nil && p.firstErr == nil {
				p.firstErr = fmt.Errorf("sent at %s: %w", sent.Format("15:04:05.000"), err)
			}
			p.mu.Unlock()
			select {
			case <-p.stop:
				return
			case <-time.After(interval):
			}
		}
	}()
	t.Cleanup(p.halt)
	return p
}

// halt stops the probing and waits for it; safe to call again.
func (p *prober) halt() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

// stopProbing stops p and fails the test unless every request, and at
// least least of them, was answered by the legitimate backend.
func (p *prober) stopProbing(t *testing.T, what string, least int64) {
	t.Helper()
	p.halt()
	sent, failed := p.sent.Load(), p.failed.Load()
	p.mu.Lock()
	defer p.mu.Unlock()
	t.Logf("%s: %d requests on fresh connections, %d failed, the slowest answered in %s", what, sent, failed, p.slowest.Round(time.Millisecond))
	if failed > 0 || sent < least {
		t.Errorf("%s: %d of %d requests failed (first: %v); want none of at least %d", what, failed, sent, p.firstErr, least)
	}
}

// memoryEdit returns a cluster edit: the gossip keyring and label on
// every node, and a short lb.retain-empty on the load balancer so that
// the flood's applications are forgotten soon after it leaves. An expired
// application goes at the next render, which without a membership change
// is the next resync: lb.resync-interval is short too.
func memoryEdit(keyFile string, retain time.Duration) func(*config.Config) {
	return both(withKeys(keyFile, "prod"), func(cfg *config.Config) {
		if cfg.LB != nil {
			cfg.LB.RetainEmpty, cfg.LB.ResyncInterval = config.D(retain), config.D(time.Second)
		}
	})
}

// The bounds of the flood test. The proxy's processes with the
// legitimate application alone are about 15-20 MiB RSS, 2-6 MiB of it
// their own (heap and shared zones, procUsage.Own); lb.limits lets the
// flood add at most apps-per-member (64) applications and
// listen-ports-per-member (16) listeners, well under a kilobyte of
// configuration each, which costs each process a MiB or two (measured:
// nginx RSS 15 -> 25-29 MiB). 64 MiB over the baseline, in RSS summed
// over the processes and in their own memory, leaves room for a reload's
// second generation of workers; without the limits the same flood took
// nginx from 21 to 364 MiB RSS (own 8 -> 126 MiB) with a 2.6 MB
// configuration and 1,025 listeners (and 550 MB in the issue).
//
// After the member left, nginx's master keeps its heap's high-water mark
// (the allocator does not give it back) and forks new workers from it,
// so the RSS summed over the processes counts those pages once per
// process: the return is judged on own memory, within 8 MiB of the
// baseline (measured: +3 MiB; without the limits +116 MiB, kept), and
// RSS within the 64 MiB.
const (
	floodApps4096   = 4096
	floodMemory     = 64 << 20
	floodConfig     = 128 << 10 // 64 applications: 44 KB measured, vs 2.6 MB unlimited
	floodRetain     = 3 * time.Second
	floodReturnSlop = 8 << 20
)

// One keyed member advertising 4,096 applications, with domains and tcp
// listen ports, while a legitimate application is served: its first 64
// are routed (one is requested to show the flood is live), the rest
// refused; the legitimate application answers every request all along;
// the configuration stays small, the listeners few, and the proxy's
// process tree (sampled every 200 ms) within 64 MiB of its baseline.
// After the member leaves and lb.retain-empty passes, configuration and
// processes are back to the baseline and memory near it.
func TestMemoryAppFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("about 20 s per proxy: a real proxy flooded by 4,096 applications")
	}
	for _, c := range []struct{ generator, net string }{{"nginx", "127.0.161"}, {"haproxy", "127.0.162"}} {
		t.Run(c.generator, func(t *testing.T) { testMemoryAppFlood(t, c.generator, c.net) })
	}
}

func testMemoryAppFlood(t *testing.T, generator, net3 string) {
	limits := config.DefaultLBLimits()
	keys := writeKeyFile(t, keyring.Generate())
	tc := newTestClusterSetup(t, net3, "local", generator, nil, func(tc *testCluster) {
		tc.edit = memoryEdit(keys, floodRetain)
		tc.host = "shop.example"
	})
	legit := tc.addBackendEdit(1, 5*time.Second, 0, webFor("shop.example", 1))
	tc.waitServed(10*time.Second, legit.name)
	base := tc.settled(t, 15*time.Second)
	baseConf := renderedConfig(t, tc)
	t.Logf("%s baseline, the legitimate application alone: %v; configuration %d bytes, %d listeners; RSS/PSS/own of each: %s",
		generator, base, len(baseConf), len(listeners(baseConf)), strings.Join(base.Each, ", "))

	probe := tc.startProber(t, legit.name, 20*time.Millisecond)
	samples := tc.startSampler(t, 200*time.Millisecond, nil)
	start := time.Now()
	apps := floodApps("flood", floodApps4096, tc.listenPort, 20000)
	flood := tc.addBackendEdit(2, 5*time.Second, 0, renamed("aaa-flood", apps...))
	last := apps[len(apps)-1].Name
	tc.waitDecided(t, last, "aaa-flood")
	t.Logf("the load balancer decided on all %d applications %s after the member started", len(apps), time.Since(start).Round(time.Millisecond))

	// The flood is live: its first application answers through the
	// proxy, its last does not.
	for _, c := range []struct {
		app    string
		served bool
	}{{apps[0].Name, true}, {last, false}} {
		waitFor(t, fmt.Sprintf("%s served=%v", c.app, c.served), 10*time.Second, func() bool {
			name, err := tc.getHost(c.app + ".flood.example")
			return (err == nil && name == flood.name) == c.served
		})
	}
	if s := tc.lb.Stats(); s.Refused < floodApps4096-limits.AppsPerMember {
		t.Errorf("%d applications refused, want at least %d", s.Refused, floodApps4096-limits.AppsPerMember)
	}
	conf := renderedConfig(t, tc)
	ls := listeners(conf)
	// The flood's instances, by its node name (its app answers with the
	// harness's name).
	routed := strings.Count(conf, "# aaa-flood\n")
	if generator == "haproxy" {
		routed = strings.Count(conf, "server aaa-flood ")
	}
	t.Logf("%s with the flood: configuration %d bytes (%+d), %d listeners, %d flood instances routed",
		generator, len(conf), len(conf)-len(baseConf), len(ls), routed)
	if len(conf) > floodConfig {
		t.Errorf("the configuration is %d bytes with the flood, want at most %d", len(conf), floodConfig)
	}
	if max := len(listeners(baseConf)) + limits.ListenPortsPerMember; len(ls) > max || len(ls) <= len(listeners(baseConf)) {
		t.Errorf("%d listeners with the flood %v, want more than the baseline's %d and at most %d", len(ls), ls, len(listeners(baseConf)), max)
	}
	if routed == 0 || routed > limits.AppsPerMember {
		t.Errorf("%d flood instances routed, want 1 to %d", routed, limits.AppsPerMember)
	}
	tc.requireAll(t, legit.name)
	peak := samples.stopSampling(t)
	t.Logf("%s peak during the flood: %v (baseline %v)", generator, peak, base)
	if peak.RSS > base.RSS+floodMemory || peak.Own > base.Own+floodMemory {
		t.Errorf("the %s processes peaked at RSS %s and own memory %s, over the baseline's %s and %s + %s",
			generator, mib(peak.RSS), mib(peak.Own), mib(base.RSS), mib(base.Own), mib(floodMemory))
	}

	// The member leaves; after lb.retain-empty its applications are gone.
	left := time.Now()
	flood.stop()
	waitFor(t, "no flood application in the configuration", floodRetain+15*time.Second, func() bool {
		return !strings.Contains(renderedConfig(t, tc), "flood")
	})
	after := tc.settled(t, 15*time.Second)
	afterConf := renderedConfig(t, tc)
	t.Logf("%s %s after the member left: %v; configuration %d bytes, %d listeners; RSS/PSS/own of each: %s",
		generator, time.Since(left).Round(time.Millisecond), after, len(afterConf), len(listeners(afterConf)), strings.Join(after.Each, ", "))
	probe.stopProbing(t, "the legitimate application during the flood", 50)
	if len(afterConf) != len(baseConf) || after.Procs != base.Procs {
		t.Errorf("after the flood left: configuration %d bytes and %d processes, want the baseline's %d and %d",
			len(afterConf), after.Procs, len(baseConf), base.Procs)
	}
	if after.Own > base.Own+floodReturnSlop || after.RSS > base.RSS+floodMemory {
		t.Errorf("after the flood left: own memory %s and RSS %s, want back within %s of the baseline's %s and RSS within %s of %s",
			mib(after.Own), mib(after.RSS), mib(floodReturnSlop), mib(base.Own), mib(floodMemory), mib(base.RSS))
	}
}

// getHost is get with another Host header.
func (tc *testCluster) getHost(host string) (string, error) {
	c := *tc
	c.host = host
	return c.get()
}

// streamGet sends one HTTP request over conn, a TCP connection through
// the proxy's stream listener to the legitimate application, and returns
// who answered.
func streamGet(conn net.Conn, r *bufio.Reader) (string, error) {
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	defer conn.SetDeadline(time.Time{})
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	return strings.TrimPrefix(strings.TrimSpace(string(body)), loopback.AppAnswer), nil
}

// heldConn is a connection through the proxy the test keeps open.
type heldConn struct {
	conn net.Conn
	r    *bufio.Reader
}

// streamDial opens a connection to addr and sends one request on it,
// failing unless want answers.
func streamDial(addr, want string) (heldConn, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return heldConn{}, err
	}
	h := heldConn{conn: conn, r: bufio.NewReader(conn)}
	name, err := streamGet(conn, h.r)
	if err == nil && name != want {
		err = fmt.Errorf("answered by %q, want %q", name, want)
	}
	if err != nil {
		conn.Close()
		return heldConn{}, err
	}
	return h, nil
}

// The flipping attack's timing. Old workers get flipShutdown (nginx
// worker_shutdown_timeout, HAProxy hard-stop-after, both 30 s by
// default) to finish their connections; flipSlack more covers the
// sampling interval, the proxy's timer granularity and a loaded machine.
// The member flips every flipEvery for flipFor. Each generation of
// workers kept costs a few MiB of their own memory (measured: nginx own
// 2 -> 20 MiB at the peak with 4 old workers); with the default 30 s
// nginx went to 21 processes, 201 MiB RSS and 68 MiB own in the same
// 20 s, and flipMemory is the bound in own memory.
const (
	flipShutdown = 2 * time.Second
	flipSlack    = 2 * time.Second
	flipEvery    = 1500 * time.Millisecond
	flipFor      = 20 * time.Second
	flipMemory   = 64 << 20
)

// One keyed member flips its application set between two sets of 4,096
// every 1.5 s for 20 s, each flip a reload, while the test keeps opening
// connections through the proxy to the legitimate application and holds
// them open, as an attacker pinning every generation of old workers
// would. Sampled every 500 ms, no worker of an earlier configuration
// outlives the shutdown bound; the proxy's own memory stays within 64 MiB
// of the baseline; the legitimate application answers every request on
// a fresh connection, HTTP and TCP; and once a configuration without the
// member is applied, the process tree is back to the master and its
// workers within the bound and its memory near the baseline.
func TestMemoryFlippingApps(t *testing.T) {
	if testing.Short() {
		t.Skip("about 35 s per proxy: a real proxy reloaded every 1.5 s with connections held open")
	}
	for _, c := range []struct {
		generator, net string
		options        json.RawMessage
	}{
		// Reload mode, whose old workers pile up under flipping: the
		// lua balancer's processes hold more memory of their own (see
		// docs/reloads.md).
		{"nginx", "127.0.163", json.RawMessage(fmt.Sprintf(`{"worker-shutdown-timeout": "%ds", "balancer": "reload"}`, flipShutdown/time.Second))},
		{"haproxy", "127.0.164", json.RawMessage(fmt.Sprintf(`{"hard-stop-after": "%ds"}`, flipShutdown/time.Second))},
	} {
		t.Run(c.generator, func(t *testing.T) { testMemoryFlippingApps(t, c.generator, c.net, c.options) })
	}
}

func testMemoryFlippingApps(t *testing.T, generator, net3 string, options json.RawMessage) {
	key := keyring.Generate()
	keys := writeKeyFile(t, key)
	tc := newTestClusterSetup(t, net3, "local", generator, options, func(tc *testCluster) {
		// Under the race detector each flip costs the load balancer
		// seconds of CPU (4,096 applications decoded and admitted), and
		// the legitimate app runs in this same starved process: checks
		// that allow 400 ms took it out of routing (404s) although it
		// never failed. Checks allowing 2 s still take out a dead app.
		tc.edit = both(memoryEdit(keys, floodRetain), func(cfg *config.Config) {
			if cfg.LB != nil {
				cfg.LB.Checks.Interval, cfg.LB.Checks.Timeout = config.D(2500*time.Millisecond), config.D(2*time.Second)
			}
		})
		tc.host = "shop.example"
	})
	// The legitimate backend serves HTTP by domain and, through a tcp
	// listener, the same app as a stream.
	tcpAddr := fmt.Sprintf("%s.1:%d", net3, mustFreePort(t, net3+".1"))
	_, tcpPort, _ := strings.Cut(tcpAddr, ":")
	legit := tc.addBackendEdit(1, 5*time.Second, 0, both(webFor("shop.example", 1), func(cfg *config.Config) {
		web := cfg.Backend.Applications[0].Application
		port, _ := strconv.Atoi(tcpPort)
		cfg.Backend.Applications = append(cfg.Backend.Applications, config.Application{Application: catalog.Application{
			Name: "web-tcp", ListenPort: port, ApplicationPort: web.ApplicationPort, Protocol: catalog.ProtocolTCP}})
	}))
	tc.waitServed(10*time.Second, legit.name)
	waitFor(t, "the legitimate tcp application served", 10*time.Second, func() bool {
		h, err := streamDial(tcpAddr, legit.name)
		if err == nil {
			h.conn.Close()
		}
		return err == nil
	})
	base := tc.settled(t, 15*time.Second)
	workers := base.Procs - 1
	t.Logf("%s baseline: %v (%d workers); RSS/PSS/own of each: %s", generator, base, workers, strings.Join(base.Each, ", "))

	// The attacker: a keyed member advertising set a, then b, then a….
	ip := net3 + ".50"
	appCtx, stopApp := context.WithCancel(context.Background())
	var appWG sync.WaitGroup
	appPort, err := loopback.ServeApp(appCtx, &appWG, ip, "flipper")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stopApp()
		appWG.Wait()
	})
	sets := [2][]catalog.Application{
		floodApps("flip-a", floodApps4096, tc.listenPort, 21000),
		floodApps("flip-b", floodApps4096, tc.listenPort, 22100),
	}
	for _, set := range sets {
		for i := range set {
			set[i].ApplicationPort = appPort
		}
	}
	flipper, err := cluster.New(cluster.Config{
		NodeName: "aaa-flipper", BindAddr: ip, Profile: "local", Role: catalog.RoleBackend,
		Applications: sets[0], Keys: [][]byte{key}, Label: "prod",
		Logger: tc.logger.With("node", "aaa-flipper", "component", "cluster"),
	})
	if err != nil {
		t.Fatal(err)
	}
	var closeOnce sync.Once
	leave := func() { closeOnce.Do(func() { flipper.Close(time.Second) }) }
	t.Cleanup(leave)
	if _, err := flipper.Join([]string{tc.seed}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the flipper routed", 15*time.Second, func() bool { return tc.routed("aaa-flipper") })
	master := tc.proxyMaster(t)

	// Every 500 ms: a worker of an earlier configuration (one with a
	// full generation of workers started after it) must be gone within
	// the shutdown bound of when it was first seen old.
	oldSince := map[int]time.Time{}
	var oldest time.Duration
	var maxOld int
	samples := tc.startSampler(t, 500*time.Millisecond, func(u procUsage) error {
		now := time.Now()
		old := u.old(workers)
		maxOld = max(maxOld, len(old))
		var err error
		for _, pid := range old {
			if _, ok := oldSince[pid]; !ok {
				oldSince[pid] = now
			}
			age := now.Sub(oldSince[pid])
			oldest = max(oldest, age)
			if age > flipShutdown+flipSlack && err == nil {
				err = fmt.Errorf("%s worker %d still runs %s after a newer generation of workers started, want gone within %s: %s; their connections: %s",
					generator, pid, age.Round(time.Millisecond), flipShutdown+flipSlack, strings.Join(u.Each, ", "), strings.Join(connectionsOf(liveTree(master)), "; "))
			}
		}
		return err
	})
	probe := tc.startProber(t, legit.name, 50*time.Millisecond)

	// Fresh stream connections every 100 ms, each must be answered; and
	// one connection every 200 ms kept open, pinning the workers of
	// every configuration.
	stop := make(chan struct{})
	var streamSent, streamFailed int
	var streamErr error
	var held []heldConn
	var loops sync.WaitGroup
	loops.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			h, err := streamDial(tcpAddr, legit.name)
			streamSent++
			if err != nil {
				streamFailed++
				streamErr = cmp.Or(streamErr, err)
			} else if n%2 == 0 {
				held = append(held, h)
			} else {
				h.conn.Close()
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	// Read the counters and held only after stopLoops.
	stopLoops := sync.OnceFunc(func() {
		close(stop)
		loops.Wait()
	})
	t.Cleanup(func() {
		stopLoops()
		for _, h := range held {
			h.conn.Close()
		}
	})

	start, reloads := time.Now(), tc.lb.ProxyReloads()
	for i := 1; time.Since(start) < flipFor; i++ {
		time.Sleep(flipEvery)
		if err := flipper.UpdateApplications(catalog.RoleBackend, sets[i%2], time.Second); err != nil {
			t.Fatal(err)
		}
	}
	stopLoops()
	t.Logf("%s flipped for %s: %d reloads, %d connections held open", generator,
		time.Since(start).Round(time.Millisecond), tc.lb.ProxyReloads()-reloads, len(held))
	changes, _ := tc.lb.lb.History()
	for _, o := range changes {
		if o.At.After(start) {
			t.Logf("pass at %s: %s, render %s, proxy %s, %d bytes", o.At.Format("15:04:05.000"), o.Result, o.Render.Round(time.Millisecond), o.Proxy.Round(time.Millisecond), o.Bytes)
		}
	}

	// The member leaves; its applications go after lb.retain-empty.
	// Once a render without them has been applied, the workers of every
	// earlier configuration have at most the shutdown bound left.
	leave()
	waitFor(t, "no flipped application in the configuration", floodRetain+15*time.Second, func() bool {
		return !strings.Contains(renderedConfig(t, tc), "flip-")
	})
	renders := tc.lb.Stats().Renders
	tc.lb.lb.Resync()
	waitFor(t, "a render after the flipped applications went", 10*time.Second, func() bool { return tc.lb.Stats().Renders > renders })
	gone := time.Now()
	var after procUsage
	deadline := gone.Add(flipShutdown + flipSlack)
	for after = tc.proxyUsage(t); after.Procs != base.Procs && time.Now().Before(deadline); after = tc.proxyUsage(t) {
		time.Sleep(50 * time.Millisecond)
	}
	back := time.Since(gone)
	peak := samples.stopSampling(t)
	probe.stopProbing(t, "the legitimate application over HTTP during the flipping", 50)
	if streamFailed > 0 || streamSent < 50 {
		t.Errorf("the legitimate application over TCP: %d of %d fresh connections failed (first: %v); want none of at least 50", streamFailed, streamSent, streamErr)
	} else {
		t.Logf("the legitimate application over TCP: %d fresh connections, none failed", streamSent)
	}
	cut := 0
	for _, h := range held {
		if _, err := streamGet(h.conn, h.r); err != nil {
			cut++
		}
	}
	t.Logf("%s: peak %v with at most %d old workers at once, the longest seen %s; baseline %v; %d of %d held connections closed by old workers' shutdown",
		generator, peak, maxOld, oldest.Round(time.Millisecond), base, cut, len(held))
	t.Logf("%s %s after the last configuration was applied: %v; RSS/PSS/own of each: %s",
		generator, back.Round(time.Millisecond), after, strings.Join(after.Each, ", "))
	if after.Procs != base.Procs {
		t.Errorf("%s after the last configuration was applied, %d %s processes, want the baseline's %d (the master and %d workers); the connections of each: %s",
			back.Round(time.Millisecond), after.Procs, generator, base.Procs, workers, strings.Join(connectionsOf(liveTree(tc.proxyMaster(t))), "; "))
	}
	if peak.Own > base.Own+flipMemory {
		t.Errorf("the %s processes peaked at own memory %s, over the baseline %s + %s", generator, mib(peak.Own), mib(base.Own), mib(flipMemory))
	}
	if after.Own > base.Own+floodReturnSlop {
		t.Errorf("after the attack: own memory %s, want within %s of the baseline %s", mib(after.Own), mib(floodReturnSlop), mib(base.Own))
	}
}
