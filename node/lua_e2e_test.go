package node

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/e2e"
)

// TestNginxLuaWithoutReloads runs a real cluster whose managed nginx is
// in its default mode, which with the lua module installed is the lua
// balancer: under steady keep-alive load, the application scales 3 → 10
// → 2, has a rolling restart and loses a backend to a crash, and nginx is
// never reloaded, nor does any request fail.
func TestNginxLuaWithoutReloads(t *testing.T) {
	e2e.RequireNginxLua(t)
	tc := newTestCluster(t, "127.0.57", "local")
	const drainTimeout, grace = 10 * time.Second, 300 * time.Millisecond
	add := func(i int) *testBackend { return tc.addDrainingBackend(i, drainTimeout, grace) }
	live := map[int]*testBackend{}
	for i := 1; i <= 3; i++ {
		live[i] = add(i)
	}
	tc.waitServed(10*time.Second, "backend-1", "backend-2", "backend-3")
	if b, err := tc.lb.RenderedConfig(); err != nil || !strings.Contains(string(b), "balancer_by_lua_block") {
		t.Fatalf("the default nginx mode is not the lua balancer (err %v)", err)
	}
	// The application's arrival added its listener: that was a reload.
	// Let any pending render finish before counting.
	time.Sleep(tc.lb.cfg.LB.QuietPeriod.Duration + tc.lb.cfg.LB.MaxWait.Duration)
	before, reloads := tc.lb.Stats(), tc.lb.ProxyReloads()

	// Idempotent GETs on keep-alive connections: nginx may retry them
	// on another backend, which is how a crash costs no request.
	load := tc.startGetLoad()

	// 3 → 10, one join at a time: each is served soon after it starts.
	var joins []time.Duration
	for i := 4; i <= 10; i++ {
		start := time.Now()
		live[i] = add(i)
		tc.waitServed(10*time.Second, live[i].name)
		joins = append(joins, time.Since(start))
	}
	counts, errs := tc.burst(200)
	if len(errs) > 0 || len(counts) != 10 {
		t.Errorf("with 10 backends, 200 requests went to %d of them: %v, errors %v", len(counts), counts, first(errs))
	}

	// 10 → 2: eight drain and leave at once.
	var stops sync.WaitGroup
	for i := 3; i <= 10; i++ {
		stops.Go(live[i].stop)
		delete(live, i)
	}
	stops.Wait()
	counts, errs = tc.burst(40)
	if len(errs) > 0 || len(counts) != 2 || counts["backend-1"] == 0 || counts["backend-2"] == 0 {
		t.Errorf("after scaling down to 2: answers %v, errors %v; want backend-1 and backend-2", counts, first(errs))
	}

	// A rolling restart of both: each replaced by a new one.
	for i, old := range []int{1, 2} {
		live[11+i] = add(11 + i)
		tc.waitServed(10*time.Second, live[11+i].name)
		live[old].stop()
		delete(live, old)
	}

	// A crash: a backend killed without draining is still in the
	// membership until failure detection; its requests fail over.
	live[13] = add(13)
	tc.waitServed(10*time.Second, live[13].name)
	live[11].kill()
	delete(live, 11)
	counts, errs = tc.burst(60)
	if len(errs) > 0 {
		t.Errorf("after a crash: %d requests failed, first: %v", len(errs), first(errs))
	}
	time.Sleep(200 * time.Millisecond) // requests after the last change count too
	res := load.Stop()

	after := tc.lb.Stats()
	t.Logf("scale 3 → 10 → 2, rolling restart of 2, one crash: %d requests, %d failed; reloads %d (nginx counts %d), updates without reload %d, update failures %d; join → served %v; last answers %v",
		res.Sent, res.Failed, after.Applies-before.Applies, tc.lb.ProxyReloads()-reloads, after.Updates-before.Updates,
		after.UpdateFailures-before.UpdateFailures, joins, counts)
	if after.Applies != before.Applies || tc.lb.ProxyReloads() != reloads {
		t.Errorf("nginx was reloaded %d times (it counts %d); want none", after.Applies-before.Applies, tc.lb.ProxyReloads()-reloads)
	}
	if after.Updates-before.Updates < 10 {
		t.Errorf("%d updates without a reload; want at least 10", after.Updates-before.Updates)
	}
	if after.UpdateFailures != before.UpdateFailures {
		t.Errorf("%d updates failed", after.UpdateFailures-before.UpdateFailures)
	}
	if res.Failed > 0 {
		t.Errorf("%d of %d requests failed, first: %v", res.Failed, res.Sent, res.Failures[0].Err)
	}
	if res.Sent < 500 {
		t.Errorf("only %d requests were sent; the test proves little", res.Sent)
	}
}
