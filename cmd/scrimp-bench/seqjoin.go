package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/scrimplb/scrimp/admin"
	"github.com/scrimplb/scrimp/generator"
	"github.com/scrimplb/scrimp/lb"
)

// Rows of sequential joins and removals (issue 17's first target).
const (
	rowSeqJoin  = "joins 1 s apart → first request served"
	rowSeqCause = "joins 1 s apart: where the time goes (p50)"
	rowRemoved  = "removal applied → last response from it"
	rowRestart  = "restart in place → first request served"
)

const (
	targetSeqJoin = "p95 ≤ 60 ms"
	targetRemoved = "≤ 20 ms"
	targetRestart = "(no target; a join's: p95 ≤ 60 ms)"
)

// seqRestarts is how many of the joined backends restart in place.
const seqRestarts = 5

// luaOpts are the nginx generator options of its reload-free mode:
// membership changes reach nginx through balancer_by_lua, not reloads.
var luaOpts = json.RawMessage(`{"balancer": "lua"}`)

// seqSetups are the setups of the sequential rows.
var seqSetups = []benchSetup{
	// The default mode is the lua balancer when its modules are installed
	// (make test and make bench install them); reload mode shows the
	// cause of the ~100 ms floor of a reload.
	{"nginx (default mode)", "nginx", nil},
	{"nginx, reload", "nginx", json.RawMessage(`{"balancer": "reload"}`)},
	{"haproxy, runtime-api", "haproxy", json.RawMessage(`{"runtime-api": true}`)},
}

func init() {
	providers = append(providers, rowProvider{
		group: "seqjoin",
		names: []string{rowSeqJoin, rowSeqCause, rowRestart, rowRemoved},
		run: func(ctx context.Context, b *bencher) {
			for i, s := range seqSetups {
				if ctx.Err() != nil {
					return
				}
				b.seqRows(ctx, s, fmt.Sprintf("127.0.%d", 130+i))
			}
		},
	})
}

// seqBackend is a backend of the sequential rows: a real process pair
// (scrimp node and app) when the scrimp binary is at hand, else an
// in-process node.
type seqBackend struct {
	name    string
	started time.Time // the node's start
	proc    *procBackend
	inproc  *benchBackend
}

func (s *seqBackend) stop() {
	if s.proc != nil {
		s.proc.stop()
		return
	}
	s.inproc.stop()
}

// seqJoin is what one join measured, as times since the backend's start.
type seqJoin struct {
	served time.Duration
	// pass and done are when the load balancer's pass that routed the
	// backend started and ended (ended: the proxy applied it; for an
	// nginx reload, its old workers stopped accepting).
	pass, done time.Duration
	// render is when the pass handed the configuration to the proxy.
	render time.Duration
	// newWorkers and oldStopped are when nginx's new workers appeared and
	// when the last old one was told to stop accepting; -1 when there was
	// no reload.
	newWorkers, oldStopped time.Duration
}

// seqRows measures, on one cluster under light steady load (2 clients,
// a new connection per request): joins 1 s apart, each from the backend
// node's start to the first request it serves, and then removals 1 s
// apart, each from the load balancer's pass that applied it to the last
// response the removed backend gave. For nginx it also records its
// workers (/proc) to break the join time down.
func (b *bencher) seqRows(ctx context.Context, s benchSetup, netPrefix string) {
	joins := 10
	if b.o.quick {
		joins = 3
	}
	setup := fmt.Sprintf("%s, %d joins then %d graceful removals", s.label, joins, joins)
	if _, err := generator.New(s.gen, s.opts); err != nil {
		na := "mode unavailable: " + strings.ReplaceAll(err.Error(), "|", "/")
		b.add(rowSeqJoin, setup, na, targetSeqJoin)
		b.add(rowRemoved, setup, na, targetRemoved)
		return
	}
	opts := gracefulDrain
	opts.genOpts = s.opts
	c, err := b.startCluster(netPrefix, s.gen, "local", opts)
	if err != nil {
		b.add(rowSeqJoin, setup, failed(err), targetSeqJoin)
		return
	}
	defer c.close()
	res, err := b.seqMeasure(ctx, c, netPrefix, joins)
	if err != nil {
		b.add(rowSeqJoin, setup, failed(err), targetSeqJoin)
		b.add(rowRemoved, setup, "not measured: joins failed", targetRemoved)
		return
	}
	setup += ", " + res.how
	served := make([]time.Duration, len(res.joins))
	for i, j := range res.joins {
		served[i] = j.served
	}
	b.add(rowSeqJoin, setup, fmt.Sprintf("p50 %s, p95 %s, max %s (n=%d); %d reloads, %d runtime updates", ms(pct(served, .5)),
		ms(pct(served, .95)), ms(pct(served, 1)), len(served), res.reloads, res.updates), targetSeqJoin)
	b.add(rowSeqCause, setup, causeBreakdown(res.joins, s.gen == "nginx"), "(cause of the join time)")
	switch {
	case res.restartErr != nil:
		b.add(rowRestart, setup, failed(res.restartErr), targetRestart)
	case len(res.restarts) == 0:
		b.add(rowRestart, setup, "not measured: backends in-process", targetRestart)
	default:
		b.add(rowRestart, setup, fmt.Sprintf("p50 %s, p95 %s, max %s (n=%d; the node's process stopped gracefully and started again with the same name, address and gossip port; its app kept running)",
			ms(pct(res.restarts, .5)), ms(pct(res.restarts, .95)), ms(pct(res.restarts, 1)), len(res.restarts)), targetRestart)
	}
	if res.removeErr != nil {
		b.add(rowRemoved, setup, failed(res.removeErr), targetRemoved)
		return
	}
	b.add(rowRemoved, setup, fmt.Sprintf("p50 %s, p95 %s, max %s (n=%d; negative: none after the apply); removal applied %s p50 after the stop; %d of %d requests failed",
		msSigned(pct(res.after, .5)), msSigned(pct(res.after, .95)), msSigned(pct(res.after, 1)), len(res.after), ms(pct(res.applied, .5)), res.failed, res.requests), targetRemoved)
}

type seqResult struct {
	how              string
	joins            []seqJoin
	reloads, updates int
	after, applied   []time.Duration // removal rows
	restarts         []time.Duration // restart row: start → first served
	restartErr       error
	removeErr        error
	failed, requests int
}

func msSigned(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64) + " ms"
}

func (b *bencher) seqMeasure(ctx context.Context, c *benchCluster, netPrefix string, joins int) (seqResult, error) {
	var r seqResult
	if _, err := c.addBackend("backend-1", netPrefix+".2"); err != nil {
		return r, err
	}
	if _, err := c.waitServed(time.Now(), 20*time.Second, "backend-1"); err != nil {
		return r, err
	}
	time.Sleep(c.lbCfg.QuietPeriod.Duration + c.lbCfg.MaxWait.Duration)
	adm := admin.NewClient(c.lb.AdminSocket())
	st, err := adm.Status(ctx)
	if err != nil {
		return r, err
	}
	if st.LB == nil {
		return r, errors.New("admin status: not a load balancer")
	}
	reloads0 := st.LB.Reloads
	stats0 := c.lb.Stats()
	var watch *workerWatch
	if c.gen == "nginx" && st.LB.ProxyPID > 0 {
		watch = startWorkerWatch(st.LB.ProxyPID)
		defer watch.stop()
	}
	load := startRespLog(2, 20*time.Millisecond, c.get)
	var rs []response
	defer func() {
		if rs == nil {
			load.Stop()
		}
	}()
	// findPass waits for the load balancer's pass that started at or after
	// t and applied or updated a configuration.
	findPass := func(t time.Time) (lb.Outcome, error) {
		deadline := time.Now().Add(5 * time.Second)
		for {
			st, err := adm.Status(ctx)
			if err == nil && st.LB != nil {
				for _, o := range st.LB.History {
					if !o.At.Before(t) && (o.Result == lb.ResultApplied || o.Result == lb.ResultUpdated || o.Result == lb.ResultQuarantined) {
						return o, nil
					}
				}
			}
			if time.Now().After(deadline) {
				return lb.Outcome{}, fmt.Errorf("no pass applied a configuration within 5 s of %s (status: %v)", t.Format("15:04:05.000"), err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	var bes []*seqBackend
	defer func() {
		var wg sync.WaitGroup
		for _, be := range bes {
			if be.proc != nil {
				wg.Go(be.proc.kill)
			}
		}
		wg.Wait()
	}()
	r.how = "backends: scrimp and app processes"
	tick := time.Now()
	for i := range joins {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		// One second apart, whatever the previous join took.
		time.Sleep(time.Until(tick.Add(time.Duration(i) * time.Second)))
		name := fmt.Sprintf("seq-%d", i+1)
		ip := fmt.Sprintf("%s.%d", netPrefix, i+3)
		be := &seqBackend{name: name}
		pb, err := b.startProcBackend(ctx, c, name, ip)
		switch {
		case errors.Is(err, errNoProcess):
			r.how = "backends in-process (" + err.Error() + ")"
			be.started = time.Now()
			if be.inproc, err = c.addBackend(name, ip); err != nil {
				return r, err
			}
		case err != nil:
			return r, err
		default:
			be.proc, be.started = pb, pb.nodeStarted
		}
		bes = append(bes, be)
		if _, err := c.waitServed(be.started, 10*time.Second, name); err != nil {
			return r, fmt.Errorf("%s: %w", name, err)
		}
		servedAt := time.Now()
		o, err := findPass(be.started)
		if err != nil {
			return r, fmt.Errorf("%s: %w", name, err)
		}
		j := seqJoin{served: servedAt.Sub(be.started), pass: o.At.Sub(be.started), render: o.At.Add(o.Render + o.Check).Sub(be.started),
			done: o.At.Add(o.Render + o.Check + o.Proxy).Sub(be.started), newWorkers: -1, oldStopped: -1}
		if watch != nil {
			if nw, old, ok := watch.reloadAfter(o.At); ok {
				j.newWorkers, j.oldStopped = nw.Sub(be.started), old.Sub(be.started)
			}
		}
		r.joins = append(r.joins, j)
	}
	st, err = adm.Status(ctx)
	if err != nil {
		return r, err
	}
	r.reloads = st.LB.Reloads - reloads0
	r.updates = c.lb.Stats().Updates - stats0.Updates
	r.restarts, r.restartErr = b.seqRestart(ctx, c, bes)

	// Removals, 1 s apart; each backend stops gracefully in the background
	// (it drains, leaves, then its app stops).
	type removal struct {
		name string
		done time.Time // the pass that applied it ended
		took time.Duration
	}
	var removals []removal
	var stops sync.WaitGroup
	tick = time.Now()
	for i, be := range bes {
		if err := ctx.Err(); err != nil {
			r.removeErr = err
			break
		}
		time.Sleep(time.Until(tick.Add(time.Duration(i) * time.Second)))
		t0 := time.Now()
		stops.Go(be.stop)
		for c.routed(be.name) && time.Since(t0) < 10*time.Second {
			time.Sleep(2 * time.Millisecond)
		}
		if c.routed(be.name) {
			r.removeErr = fmt.Errorf("%s still routed 10 s after its stop", be.name)
			break
		}
		o, err := findPass(t0)
		if err != nil {
			r.removeErr = fmt.Errorf("%s: %w", be.name, err)
			break
		}
		done := o.At.Add(o.Render + o.Check + o.Proxy)
		removals = append(removals, removal{name: be.name, done: done, took: done.Sub(t0)})
	}
	// Answers still in flight at the last removal count.
	time.Sleep(time.Second)
	rs = load.Stop()
	stops.Wait()
	bes = nil // stopped
	for _, rm := range removals {
		last, ok := lastFrom(rs, rm.name)
		if !ok {
			last = rm.done.Add(-time.Hour) // never answered: nothing after the apply
		}
		r.after = append(r.after, max(last.Sub(rm.done), -time.Second))
		r.applied = append(r.applied, rm.took)
	}
	for _, x := range rs {
		if x.Err != nil {
			r.failed++
		}
	}
	r.requests = len(rs)
	if r.removeErr == nil && len(r.after) == 0 {
		r.removeErr = errors.New("no removal measured")
	}
	return r, nil
}

// causeBreakdown prints the p50 of each step of the joins, as times from
// the backend node's start, and the p95 of the last steps.
func causeBreakdown(js []seqJoin, nginx bool) string {
	cols := func(f func(seqJoin) time.Duration) (p50, p95 time.Duration, n int) {
		var ds []time.Duration
		for _, j := range js {
			if d := f(j); d >= 0 {
				ds = append(ds, d)
			}
		}
		if len(ds) == 0 {
			return -1, -1, 0
		}
		return pct(ds, .5), pct(ds, .95), len(ds)
	}
	pass, pass95, _ := cols(func(j seqJoin) time.Duration { return j.pass })
	render, _, _ := cols(func(j seqJoin) time.Duration { return j.render })
	nw, _, n := cols(func(j seqJoin) time.Duration { return j.newWorkers })
	old, _, _ := cols(func(j seqJoin) time.Duration { return j.oldStopped })
	done, done95, _ := cols(func(j seqJoin) time.Duration { return j.done })
	served, _, _ := cols(func(j seqJoin) time.Duration { return j.served })
	wait, wait95, _ := cols(func(j seqJoin) time.Duration { return j.served - j.done })
	parts := []string{fmt.Sprintf("pass starts +%s (p95 %s)", ms(pass), ms(pass95)), fmt.Sprintf("config handed to the proxy +%s", ms(render))}
	if n > 0 {
		parts = append(parts, fmt.Sprintf("new workers up +%s", ms(nw)),
			fmt.Sprintf("old workers told to stop accepting +%s (%s after the new ones: the master's ngx_msleep(100))", ms(old), ms(old-nw)))
	} else if nginx {
		parts = append(parts, "no reload seen (no new nginx workers)")
	}
	parts = append(parts, fmt.Sprintf("apply done +%s (p95 %s)", ms(done), ms(done95)), fmt.Sprintf("first served +%s", ms(served)))
	return "from the backend's start: " + strings.Join(parts, " → ") +
		fmt.Sprintf("; apply done → first served p50 %s, p95 %s (n=%d)", ms(wait), ms(wait95), len(js))
}

// workerWatch polls an nginx master's children in /proc every
// millisecond and keeps when each worker appeared and when it was told to
// shut down (retitled "worker process is shutting down").
type workerWatch struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	seen   map[int]time.Time // worker → first seen
	closed map[int]time.Time // worker → first seen shutting down or gone
}

func startWorkerWatch(master int) *workerWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &workerWatch{cancel: cancel, done: make(chan struct{}), seen: map[int]time.Time{}, closed: map[int]time.Time{}}
	children := fmt.Sprintf("/proc/%d/task/%d/children", master, master)
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			b, err := os.ReadFile(children)
			now := time.Now()
			if err != nil {
				return // the master is gone
			}
			live := map[int]bool{}
			for _, f := range strings.Fields(string(b)) {
				pid, _ := strconv.Atoi(f)
				live[pid] = true
			}
			w.mu.Lock()
			for pid := range live {
				if _, ok := w.seen[pid]; !ok {
					w.seen[pid] = now
				}
			}
			for pid := range w.seen {
				if _, ok := w.closed[pid]; ok {
					continue
				}
				cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
				if !live[pid] || err != nil || bytes.Contains(cmd, []byte("shutting down")) {
					w.closed[pid] = now
				}
			}
			w.mu.Unlock()
			time.Sleep(time.Millisecond)
		}
	}()
	return w
}

func (w *workerWatch) stop() {
	w.cancel()
	<-w.done
}

// reloadAfter finds the first reload at or after t: when its new workers
// appeared, and when the last of the workers that ran before them was
// told to stop (or exited).
func (w *workerWatch) reloadAfter(t time.Time) (newAt, oldStopped time.Time, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var firstNew time.Time
	for _, at := range w.seen {
		if !at.Before(t) && (firstNew.IsZero() || at.Before(firstNew)) {
			firstNew = at
		}
	}
	if firstNew.IsZero() {
		return time.Time{}, time.Time{}, false
	}
	var old []time.Time
	for pid, at := range w.seen {
		if at.Before(firstNew) {
			c, closed := w.closed[pid]
			if closed && !c.Before(firstNew) {
				old = append(old, c)
			}
		}
	}
	if len(old) == 0 {
		return time.Time{}, time.Time{}, false
	}
	return firstNew, slices.MaxFunc(old, func(a, b time.Time) int { return a.Compare(b) }), true
}

// seqRestart restarts the node processes of the first seqRestarts
// backends in place, one at a time: each stops gracefully (it drains and
// leaves), and once the load balancer no longer routes to it starts again
// with its configuration, as a restart of the service on its host does.
// It returns, for each, the time from the new start to the first request
// it serves. Peers remember the old run under that name: the case
// Cluster.Join pushes its state twice for.
func (b *bencher) seqRestart(ctx context.Context, c *benchCluster, bes []*seqBackend) ([]time.Duration, error) {
	var out []time.Duration
	for _, be := range bes[:min(seqRestarts, len(bes))] {
		if be.proc == nil {
			return nil, nil
		}
		if err := ctx.Err(); err != nil {
			return out, err
		}
		started, err := b.restartNode(ctx, c, be.proc)
		if err != nil {
			return out, fmt.Errorf("%s: %w", be.name, err)
		}
		took, err := c.waitServed(started, 10*time.Second, be.name)
		if err != nil {
			return out, fmt.Errorf("%s after its restart: %w", be.name, err)
		}
		out = append(out, took)
		time.Sleep(time.Second) // apart, as the joins are
	}
	return out, nil
}

// restartNode stops p's node process gracefully, waits until c's load
// balancer no longer routes to it, and starts it again with the same
// configuration file; p's app keeps running. It returns the new start.
func (b *bencher) restartNode(ctx context.Context, c *benchCluster, p *procBackend) (time.Time, error) {
	exe, err := b.scrimpBinary()
	if err != nil {
		return time.Time{}, err
	}
	p.stopNode()
	for deadline := time.Now().Add(10 * time.Second); c.routed(p.name); {
		if time.Now().After(deadline) {
			return time.Time{}, errors.New("still routed 10 s after its node stopped")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.startNode(ctx, b, exe); err != nil {
		return time.Time{}, err
	}
	return p.nodeStarted, nil
}
