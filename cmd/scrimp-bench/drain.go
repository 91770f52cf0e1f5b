package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/scrimplb/scrimp/backend"
)

// The mass-drain row: many backends stopped together under steady load.
// Acknowledgements of draining backends used to travel only in the load
// balancer's beacon, which holds catalog.MaxAcks of them: with more
// draining at once, the rest waited for their drain timeout.
const (
	rowMassDrain    = "backends stopped together under steady load"
	targetMassDrain = "all left ≤ 3 s; 0 failed"
	// massDrainKept are the backends that keep serving while the others
	// stop, so that every request has somewhere to go.
	massDrainKept = 3
	// massDrainTimeout is each backend's drain timeout, the default's 30 s:
	// a drain that is never acknowledged shows as a 30 s leave.
	massDrainTimeout = 30 * time.Second
	// massDrainGrace is each backend's drain-grace, as in the other rows
	// under steady load (gracefulDrain).
	massDrainGrace = 300 * time.Millisecond
)

// massDrainRow measures n backends stopped together (SIGTERM-like: each
// drains, is acknowledged, serves massDrainGrace more, leaves) through a
// load balancer node with managed gen ("nginx" or "haproxy") on
// netPrefix.1, under the steady load of phase, with massDrainKept more
// backends serving throughout. Backends are in-process nodes, each on its
// own loopback address (netPrefix.2 on; n+massDrainKept ≤ 253) with its
// own gossip and its own demo app; the proxy is a real process. It adds
// one row: the time from the stop to the last backend gone (its node
// drained, left and stopped), the drains' acknowledgement times, those not
// acknowledged, failed requests and reloads. Call it as
//
//	b.massDrainRow(ctx, "nginx", "127.0.110", 150)
func (b *bencher) massDrainRow(ctx context.Context, gen, netPrefix string, n int) {
	setup := fmt.Sprintf("%s, %d of %d, local", gen, n, n+massDrainKept)
	if err := ctx.Err(); err != nil {
		b.add(rowMassDrain, setup, failed(err), targetMassDrain)
		return
	}
	if n+massDrainKept > 253 {
		b.add(rowMassDrain, setup, failed(fmt.Errorf("%d backends do not fit in %s.0/24", n+massDrainKept, netPrefix)), targetMassDrain)
		return
	}
	c, err := b.startCluster(netPrefix, gen, "local", clusterOptions{drainTimeout: massDrainTimeout, drainGrace: massDrainGrace})
	if err != nil {
		b.add(rowMassDrain, setup, failed(err), targetMassDrain)
		return
	}
	defer c.close()
	var names []string
	var leaving []*benchBackend
	for i := range n + massDrainKept {
		be, err := c.addBackend(fmt.Sprintf("drain-%d", i+1), fmt.Sprintf("%s.%d", netPrefix, i+2))
		if err != nil {
			b.add(rowMassDrain, setup, failed(err), targetMassDrain)
			return
		}
		names = append(names, be.name)
		if i >= massDrainKept {
			leaving = append(leaving, be)
		}
	}
	if _, err := c.waitServed(time.Now(), 60*time.Second, names...); err != nil {
		b.add(rowMassDrain, setup, failed(err), targetMassDrain)
		return
	}
	// No reload pending from the joins: the phase counts its own.
	time.Sleep(c.lbCfg.QuietPeriod.Duration + c.lbCfg.MaxWait.Duration)

	result := b.phase(c, rowMassDrain, setup, func(mark func(string)) (string, error) {
		start := time.Now()
		left := make([]time.Duration, len(leaving))
		var wg sync.WaitGroup
		for i, be := range leaving {
			wg.Go(func() {
				be.stop()
				left[i] = time.Since(start)
			})
		}
		wg.Wait()
		mark("all left")
		slices.Sort(left)
		var acked []time.Duration
		unacked := 0
		for _, be := range leaving {
			out, ok := be.node.Drained()
			if !ok || out.Result != backend.DrainAcknowledged {
				unacked++
				continue
			}
			acked = append(acked, out.Took)
		}
		note := fmt.Sprintf("all %d left after %s (p50 %s)", n, ms(left[len(left)-1]), ms(pct(left, .5)))
		if len(acked) > 0 {
			note += fmt.Sprintf(", acknowledged after p50 %s, max %s", ms(pct(acked, .5)), ms(pct(acked, 1)))
		}
		if unacked > 0 {
			note += fmt.Sprintf("; %d not acknowledged (left at their drain timeout, %s)", unacked, massDrainTimeout)
		}
		// A drained backend must be out of the proxy's configuration: the
		// mass-loss guard must not keep backends that drained.
		deadline := time.Now().Add(2 * time.Second)
		for slices.ContainsFunc(leaving, func(be *benchBackend) bool { return c.routed(be.name) }) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		still := 0
		for _, be := range leaving {
			if c.routed(be.name) {
				still++
			}
		}
		if still > 0 {
			note += fmt.Sprintf("; %d still routed 2 s after leaving", still)
		}
		return note, nil
	})
	b.add(rowMassDrain, setup, result, targetMassDrain)
}
