package node

import (
	"encoding/json"
	"sync"
	"testing"
	"time"
)

// TestHAProxyRuntimeAPIWithoutReloads runs a real cluster whose load
// balancer drives HAProxy through its runtime API: backends join and
// leave gracefully under steady keep-alive traffic, and HAProxy is never
// reloaded, nor does any request fail.
func TestHAProxyRuntimeAPIWithoutReloads(t *testing.T) {
	tc := newTestClusterOptions(t, "127.0.8", "local", "haproxy", json.RawMessage(`{"runtime-api": true}`))
	const drainTimeout, grace = 10 * time.Second, 300 * time.Millisecond
	old := []*testBackend{tc.addDrainingBackend(1, drainTimeout, grace), tc.addDrainingBackend(2, drainTimeout, grace)}
	tc.waitServed(10*time.Second, "backend-1", "backend-2")
	// The application's arrival changed the sections: that was a reload.
	// Let any pending render finish before counting.
	time.Sleep(tc.lb.cfg.LB.QuietPeriod.Duration + tc.lb.cfg.LB.MaxWait.Duration)
	before, reloads := tc.lb.Stats(), tc.lb.ProxyReloads()

	load := tc.startGetLoad()

	// Scale up by three, one at a time, then drain the first two at once.
	for i := 3; i <= 5; i++ {
		b := tc.addDrainingBackend(i, drainTimeout, grace)
		tc.waitServed(10*time.Second, b.name)
	}
	var stops sync.WaitGroup
	for _, b := range old {
		stops.Go(b.stop)
	}
	stops.Wait()
	for _, b := range old {
		if tc.routed(b.name) {
			t.Errorf("%s still routed after it drained and left", b.name)
		}
	}
	counts, errs := tc.burst(60)
	res := load.Stop()

	after := tc.lb.Stats()
	t.Logf("%d requests while 3 backends joined and 2 drained: %d failed; reloads %d, runtime updates %d, update failures %d",
		res.Sent, res.Failed, after.Applies-before.Applies, after.Updates-before.Updates, after.UpdateFailures)
	if after.Applies != before.Applies || tc.lb.ProxyReloads() != reloads {
		t.Errorf("HAProxy was reloaded %d times (the proxy counts %d); want none", after.Applies-before.Applies, tc.lb.ProxyReloads()-reloads)
	}
	if after.Updates-before.Updates < 4 {
		t.Errorf("%d runtime updates; want at least 4 (3 joins, 1+ drains)", after.Updates-before.Updates)
	}
	if after.UpdateFailures != 0 {
		t.Errorf("%d runtime updates failed", after.UpdateFailures)
	}
	if res.Failed > 0 {
		t.Errorf("%d of %d requests failed, first: %v", res.Failed, res.Sent, res.Failures[0].Err)
	}
	if len(errs) > 0 || counts["backend-1"]+counts["backend-2"] > 0 || counts["backend-3"] == 0 || counts["backend-4"] == 0 || counts["backend-5"] == 0 {
		t.Errorf("after the changes: answers %v, errors %v; want backends 3-5 only", counts, first(errs))
	}
}
