package node

import (
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/backend"
)

// Many more backends than a load balancer's beacon can acknowledge
// (catalog.MaxAcks) are stopped together under steady load through
// managed nginx: every one is acknowledged (none waits for its drain
// timeout), all have left well within a bound far below that timeout, the
// mass-loss guard keeps none of them (they drained: the load balancer had
// withdrawn them before they vanished), and no request fails. The bench
// measures 150 against the 3 s target (cmd/scrimp-bench, drain.go); the
// bound here is generous for a busy machine.
func TestMassDrainThroughNginx(t *testing.T) {
	tc := newTestCluster(t, "127.0.233", "local")
	const stopped, kept = massDrainStopped, 3
	const drainTimeout, grace = 30 * time.Second, 300 * time.Millisecond
	var all, leaving []*testBackend
	for i := range stopped + kept {
		b := tc.addDrainingBackend(i+1, drainTimeout, grace)
		all = append(all, b)
		if i >= kept {
			leaving = append(leaving, b)
		}
	}
	var names []string
	for _, b := range all {
		names = append(names, b.name)
	}
	tc.waitServed(60*time.Second, names...)
	// No reload from the joins still pending.
	time.Sleep(1500 * time.Millisecond)

	load := startLoad(func() *http.Request {
		req, err := http.NewRequest(http.MethodPost, tc.url(), strings.NewReader("payload"))
		if err != nil {
			panic(err)
		}
		req.Header.Set("Idempotency-Key", "test") // see TestRollingRestartLosesNoRequest
		return req
	})
	start := time.Now()
	var wg sync.WaitGroup
	left := make([]time.Duration, len(leaving))
	for i, b := range leaving {
		wg.Go(func() {
			b.stop()
			left[i] = time.Since(start)
		})
	}
	wg.Wait()
	allLeft := time.Since(start)
	var unrouted time.Duration
	deadline := time.Now().Add(10 * time.Second)
	for slices.ContainsFunc(leaving, func(b *testBackend) bool { return tc.routed(b.name) }) {
		if time.Now().After(deadline) {
			t.Fatal("backends that drained and left are still in nginx's configuration 10 s later (kept by the mass-loss guard?)")
		}
		time.Sleep(10 * time.Millisecond)
	}
	unrouted = time.Since(start)
	time.Sleep(300 * time.Millisecond) // requests after the last change count too
	res := load.Stop()

	var took []time.Duration
	for _, b := range leaving {
		out, ok := b.node.Drained()
		if !ok || out.Result != backend.DrainAcknowledged {
			t.Errorf("%s drained: %v (ended: %v); want acknowledged", b.name, out, ok)
			continue
		}
		took = append(took, out.Took)
	}
	slices.Sort(took)
	slices.Sort(left)
	if len(took) > 0 {
		t.Logf("%d backends stopped together: acknowledged after p50 %v, max %v; all left after %v (p50 %v); none routed after %v; %d requests, %d failed",
			stopped, took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond),
			allLeft.Round(time.Millisecond), left[len(left)/2].Round(time.Millisecond), unrouted.Round(time.Millisecond), res.Sent, res.Failed)
	}
	if allLeft > 10*time.Second {
		t.Errorf("the %d backends took %v to leave, want well within 10 s (drain timeout %v)", stopped, allLeft, drainTimeout)
	}
	if res.Failed > 0 {
		t.Errorf("%d of %d requests failed; first: %v", res.Failed, res.Sent, res.Failures[0].Err)
	}
	if res.Sent < 100 {
		t.Errorf("only %d requests were sent; the test proves nothing", res.Sent)
	}
	var kept3 []string
	for _, b := range all[:kept] {
		kept3 = append(kept3, b.name)
	}
	tc.waitServed(10*time.Second, kept3...)
}
