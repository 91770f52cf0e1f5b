package cluster

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/scrimplb/scrimp/catalog"
)

// Seeder returns gossip addresses to join. It may block on I/O and must
// honour ctx; it is called from one goroutine, once per join attempt, so it
// can re-read its source each time.
type Seeder interface {
	Seeds(ctx context.Context) ([]string, error)
}

// JoinOptions tunes Maintain.
type JoinOptions struct {
	// StartAlone lets the node form a new cluster when no seed answers the
	// first attempt (a load balancer); otherwise it keeps retrying (a
	// backend, which is useless without a load balancer).
	StartAlone bool
	// BackoffMin and BackoffMax bound the exponential wait between failed
	// attempts; each wait is jittered by up to ±20%.
	BackoffMin, BackoffMax time.Duration
	// RejoinInterval is how often a node that finds itself alone asks the
	// seeds again once it has given up waiting (see alone).
	RejoinInterval time.Duration
}

// Maintain joins the cluster through seeds and keeps the node joined: while
// it is alone (a backend seeing no load balancer, a load balancer seeing
// no other member) it asks the seeds again, with backoff, so that a node
// whose peers all went away finds them again wherever they come back. It
// returns when ctx is done.
func (c *Cluster) Maintain(ctx context.Context, seeds Seeder, o JoinOptions) {
	if o.BackoffMin <= 0 {
		o.BackoffMin = 200 * time.Millisecond
	}
	if o.BackoffMax < o.BackoffMin {
		o.BackoffMax = o.BackoffMin
	}
	if o.RejoinInterval <= 0 {
		o.RejoinInterval = 10 * time.Second
	}
	wait := o.BackoffMin // the next backoff while failing to join
	first := true
	for {
		sleep := o.RejoinInterval
		if c.alone() {
			n, err := c.joinFrom(ctx, seeds)
			switch {
			case err == nil:
				c.log.Info("joined cluster", "contacted", n)
				wait = o.BackoffMin
			case ctx.Err() != nil:
				return
			case o.StartAlone:
				if first {
					c.log.Info("no seed reachable; starting a new cluster", "err", err)
				} else {
					c.log.Debug("still alone; will ask the seeds again", "err", err, "retry-in", sleep)
				}
			default:
				sleep = wait
				wait = min(wait*2, o.BackoffMax)
				c.log.Warn("cannot join the cluster; retrying", "err", err, "retry-in", sleep.Round(time.Millisecond))
			}
			first = false
		} else {
			wait = o.BackoffMin
		}
		t := time.NewTimer(jitter(sleep))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (c *Cluster) joinFrom(ctx context.Context, seeds Seeder) (int, error) {
	addrs, err := seeds.Seeds(ctx)
	if err != nil {
		return 0, err
	}
	return c.Join(addrs)
}

// alone reports whether the node should look for its cluster: a backend
// that sees no load balancer, or a load balancer that sees no other member.
func (c *Cluster) alone() bool {
	snap := c.Snapshot()
	var self catalog.Role
	others := 0
	lbs := 0
	for _, n := range snap.Nodes {
		if n.Name == c.self {
			self = n.Role
			continue
		}
		others++
		if n.Role == catalog.RoleLB {
			lbs++
		}
	}
	if self == catalog.RoleLB {
		return others == 0
	}
	return lbs == 0
}

func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}
