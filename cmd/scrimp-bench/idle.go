package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/scrimplb/scrimp/internal/loopback"
)

// Rows of idleScaleRows. They are not in benchRowNames yet: the caller
// adds them there (they sort first until then).
const (
	rowIdleLB      = "idle load balancer process CPU / RSS"
	rowIdleBackend = "idle backend process CPU / RSS"
)

// Targets of idleScaleRows (issue 17).
const (
	targetIdleLB      = "≤ 1% of a core"
	targetIdleBackend = "≤ 0.3% of a core; RSS ≤ 20 MB"
)

// idleScaleLBExtra, when set, is added to the load balancer process's
// "lb" section (a JSON object's members, e.g. `"checks": {...}`): for
// comparing settings by hand (TestIdleScale's SCRIMP_BENCH_IDLE_LB).
var idleScaleLBExtra string

// idleScaleRows measures what an idle cluster of backends+2 nodes costs
// its real processes: a scrimp load balancer process (managed nginx, the
// cluster's seed, running its active checks of every backend) and one
// scrimp backend process, beside backends in-process backend nodes (this
// process, each with its own demo app and gossip on its own address
// netPrefix.2, .3, …). The processes' CPU (utime+stime from
// /proc/PID/stat) and RSS (VmRSS) are read over window once every backend
// is served through the load balancer and the joins have settled. The
// load balancer's nginx is not counted. It returns two rows (rowIdleLB,
// rowIdleBackend), with "failed: …" results when the cluster could not be
// set up; backends must be at most 240 (one address each).
//
// It blocks for about window plus the time to join backends nodes (a
// minute for 150 on two cores) and stops everything it started before
// returning, or soon after ctx is done.
func (b *bencher) idleScaleRows(ctx context.Context, netPrefix string, backends int, window time.Duration) []benchRow {
	setup := fmt.Sprintf("%d backends (in-process nodes) + 1 backend process + 1 lb process, local profile, nginx, %s window", backends, window)
	lbRes, beRes, err := b.idleScale(ctx, netPrefix, backends, window)
	if err != nil {
		lbRes, beRes = failed(err), failed(err)
	}
	rows := []benchRow{
		{rowIdleLB, setup, lbRes, targetIdleLB},
		{rowIdleBackend, setup, beRes, targetIdleBackend},
	}
	for _, r := range rows {
		fmt.Fprintf(b.progress, "bench %5.1fs: %s (%s): %s\n", time.Since(b.start).Seconds(), r.name, r.setup, r.result)
	}
	return rows
}

// idleScale runs the measurement of idleScaleRows and returns the two
// results.
func (b *bencher) idleScale(ctx context.Context, netPrefix string, backends int, window time.Duration) (lbRes, beRes string, err error) {
	if backends < 0 || backends > 240 {
		return "", "", fmt.Errorf("%d backends: the addresses %s.2 to .241 hold at most 240", backends, netPrefix)
	}
	exe, err := b.scrimpBinary()
	if err != nil {
		return "", "", err
	}
	dir, err := os.MkdirTemp("", "scrimp-bench-idle-scale-")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(dir)
	lbIP, beIP := netPrefix+".1", netPrefix+".250"
	listenPort, err := loopback.FreePort(lbIP)
	if err != nil {
		return "", "", err
	}
	lbGossip, err := loopback.FreePort(lbIP)
	if err != nil {
		return "", "", err
	}
	seedAddr := fmt.Sprintf("%s:%d", lbIP, lbGossip)
	seed, err := json.Marshal([]string{seedAddr})
	if err != nil {
		return "", "", err
	}

	// The load balancer process first: it is the seed.
	lbExtra := ""
	if idleScaleLBExtra != "" {
		lbExtra = ", " + idleScaleLBExtra
	}
	lbConf := fmt.Sprintf(`{"role": "lb", "node-name": "idle-scale-lb", "log-level": "warn",
  "cluster": {"bind-addr": %q, "bind-port": %d, "profile": "local"},
  "seed": {"provider": "static", "static": {"addresses": []}},
  "lb": {"generator": "nginx", "mode": "managed", "listen-addr": %q, "state-dir": %q%s}}`,
		lbIP, lbGossip, lbIP, filepath.Join(dir, "lb"), lbExtra)
	procCtx, stopProcs := context.WithCancel(context.Background())
	defer stopProcs()
	lbCmd, err := b.startConfigured(procCtx, exe, dir, "lb.json", lbConf)
	if err != nil {
		return "", "", err
	}
	// Deferred calls run last first: the backends stop (drain, leave)
	// while the load balancer still runs.
	defer loopback.StopProcess(lbCmd, 15*time.Second)

	// In-process backends, joined through the load balancer process.
	c := &benchCluster{b: b, net: netPrefix, profile: "local", listenPort: listenPort, seed: seedAddr,
		opts: clusterOptions{drainTimeout: 2 * time.Second}}
	defer closeBackends(c)
	names := make([]string, 0, backends+1)
	for i := range backends {
		if ctx.Err() != nil {
			return "", "", ctx.Err()
		}
		name := fmt.Sprintf("idle-scale-%d", i+1)
		if _, err := c.addBackend(name, fmt.Sprintf("%s.%d", netPrefix, i+2)); err != nil {
			return "", "", fmt.Errorf("backend %s: %w", name, err)
		}
		names = append(names, name)
	}

	// The backend process, with its demo app in this process.
	appCtx, stopApp := context.WithCancel(context.Background())
	var appWG sync.WaitGroup
	defer func() {
		stopApp()
		appWG.Wait()
	}()
	appPort, err := loopback.ServeApp(appCtx, &appWG, beIP, "idle-scale-process")
	if err != nil {
		return "", "", err
	}
	beGossip, err := loopback.FreePort(beIP)
	if err != nil {
		return "", "", err
	}
	beCmd, err := b.startConfigured(procCtx, exe, dir, "backend.json",
		backendProcessConfig("idle-scale-process", beIP, beGossip, seed, listenPort, appPort))
	if err != nil {
		return "", "", err
	}
	defer loopback.StopProcess(beCmd, 15*time.Second)
	names = append(names, "idle-scale-process")

	if err := waitAllServed(ctx, fmt.Sprintf("http://%s:%d/", lbIP, listenPort), time.Minute+time.Duration(backends)*time.Second, names); err != nil {
		return "", "", err
	}
	// Let the last joins, reloads and the checks' first rounds settle.
	select {
	case <-time.After(5 * time.Second):
	case <-ctx.Done():
		return "", "", ctx.Err()
	}
	procs := &idleProcs{cmds: []*exec.Cmd{beCmd, lbCmd}}
	p0, err := procs.sample()
	if err != nil {
		return "", "", err
	}
	start := time.Now()
	select {
	case <-time.After(window):
	case <-ctx.Done():
		return "", "", ctx.Err()
	}
	p1, err := procs.sample()
	if err != nil {
		return "", "", err
	}
	took := time.Since(start).Seconds()
	pct := func(i int) float64 { return (p1[i].cpu - p0[i].cpu).Seconds() / took * 100 }
	mib := func(i int) float64 { return float64(p1[i].rss) / (1 << 20) }
	lbRes = fmt.Sprintf("CPU %.2f%% of a core, RSS %.1f MiB (its nginx not counted)", pct(1), mib(1))
	// The backend's target is in MB (10^6 bytes): both are shown.
	beRes = fmt.Sprintf("CPU %.2f%% of a core, RSS %.1f MiB (%.1f MB)", pct(0), mib(0), float64(p1[0].rss)/1e6)
	return lbRes, beRes, nil
}

// startConfigured writes conf to dir/file, with an admin socket of its
// own in dir (two nodes on one host cannot share the default one), and
// starts the scrimp binary exe with it.
func (b *bencher) startConfigured(ctx context.Context, exe, dir, file, conf string) (*exec.Cmd, error) {
	var m map[string]any
	if err := json.Unmarshal([]byte(conf), &m); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	m["admin-socket"] = filepath.Join(dir, strings.TrimSuffix(file, ".json")+".sock")
	data, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	path := filepath.Join(dir, file)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return b.startProcess(ctx, exe, "--config", path)
}

// closeBackends stops c's in-process backends gracefully, in parallel,
// each bounded by its drain timeout and ten seconds more.
func closeBackends(c *benchCluster) {
	for _, be := range c.backends {
		if !be.gone {
			be.gone = true
			be.cancel()
		}
	}
	deadline := time.After(c.opts.drainTimeout + 10*time.Second)
	for _, be := range c.backends {
		select {
		case <-be.done:
		case <-deadline:
			return
		}
	}
}

// waitAllServed sends requests to url, each on a new connection, until
// every name in names has answered, or fails after timeout.
func waitAllServed(ctx context.Context, url string, timeout time.Duration, names []string) error {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	deadline := time.Now().Add(timeout)
	var last error
	for len(want) > 0 {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			missing := slices.Sorted(maps.Keys(want))
			if len(missing) > 5 {
				missing = append(missing[:5], "…")
			}
			return fmt.Errorf("%d of %d backends not served through the load balancer after %s (%s; last error: %v)",
				len(want), len(names), timeout, strings.Join(missing, ", "), last)
		}
		name, err := getName(url)
		if err != nil {
			last = err
			time.Sleep(20 * time.Millisecond)
			continue
		}
		delete(want, name)
	}
	return nil
}

// idleClient is patient: on a busy machine 150 nodes' apps answer slowly.
var idleClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// getName sends one GET to url and returns the name the demo app answered.
func getName(url string) (string, error) {
	resp, err := idleClient.Get(url)
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
	name, ok := strings.CutPrefix(strings.TrimSpace(string(body)), loopback.AppAnswer)
	if !ok {
		return "", errors.New("not the demo app's answer")
	}
	return name, nil
}
