package node

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/lb"
)

// lb.limits.reloads-per-minute with a real nginx: after the start and one
// reload, a burst of joins waits for the 60 s window and is applied in one
// reload; no window holds more reloads than the limit, and every backend
// is served in the end.
func TestRateLimitReloadsNginx(t *testing.T) {
	const limit = 2
	var logs *tapLines
	// Reload mode: with the lua balancer, joins need no reload at all.
	tc := newTestClusterSetup(t, "127.0.193", "local", "nginx", json.RawMessage(`{"balancer": "reload"}`), func(tc *testCluster) {
		tc.logger, logs = tapLogger(tc.logger)
		tc.edit = func(cfg *config.Config) {
			if cfg.LB != nil {
				cfg.LB.Limits.ReloadsPerMinute = limit
			}
		}
	})
	// The load balancer's start (its first configuration, which starts
	// nginx) before the first join; a join that came first would be in
	// the start's configuration and need no reload.
	waitFor(t, "the load balancer's first configuration", 10*time.Second, func() bool { return tc.lb.Stats().Applies >= 1 })
	b1 := tc.addBackend(1)
	tc.waitServed(10*time.Second, b1.name)
	if got := tc.lb.ProxyReloads(); got != 1 {
		t.Fatalf("%d nginx reloads after the first join, want 1 (the start is not a reload)", got)
	}

	// The start and that reload fill the window: a burst of joins waits.
	burst := time.Now()
	var names []string
	for i := 2; i <= 5; i++ {
		names = append(names, tc.addBackend(i).name)
	}
	waitFor(t, "the limit delaying a reload", 10*time.Second, func() bool { return tc.lb.Stats().ReloadsDelayed > 0 })
	tc.waitServed(75*time.Second, append(names, b1.name)...)
	reloads := tc.lb.ProxyReloads()
	t.Logf("burst of 4 joins with %d reloads per minute: all served %v after the burst, %d nginx reloads in all, %d delayed passes",
		limit, time.Since(burst).Round(time.Millisecond), reloads, tc.lb.Stats().ReloadsDelayed)
	if reloads != 2 {
		t.Errorf("%d nginx reloads, want 2: the first join and the whole burst in one", reloads)
	}

	// Every reload the loop made (Apply calls, the start included), by
	// the history: no 60 s window holds more than the limit.
	changes, _ := tc.lb.lb.History()
	var at []time.Time
	for _, o := range changes {
		if o.Result == lb.ResultApplied || o.Result == lb.ResultQuarantined || o.Result == lb.ResultRejected {
			at = append(at, o.At.Add(o.Render))
		}
	}
	for i := range at {
		n := 0
		for j := i; j < len(at) && at[j].Sub(at[i]) < time.Minute; j++ {
			n++
		}
		if n > limit {
			t.Errorf("%d reloads within 60 s from %v: %v", n, at[i], at)
		}
	}
	if n := logs.count("reload limit reached"); n != 1 {
		t.Errorf("%d log lines about the limit, want 1", n)
	}
	tc.requireAllOf(t, append(names, b1.name))
}

// requireAllOf sends 20 requests and fails unless all were answered by
// one of want.
func (tc *testCluster) requireAllOf(t *testing.T, want []string) {
	t.Helper()
	counts, errs := tc.burst(20)
	n := 0
	for _, w := range want {
		n += counts[w]
	}
	if len(errs) > 0 || n != 20 {
		t.Fatalf("answers %v, %d failures (first: %v); want all 20 from %v", counts, len(errs), first(errs), want)
	}
}
