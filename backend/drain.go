package backend

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// DrainCluster is what a drain needs of the gossip cluster
// (*cluster.Cluster provides it). Both methods must return at once and be
// safe for concurrent use: RunDrain polls them from its own goroutine.
type DrainCluster interface {
	// Unacknowledged returns the load balancers that have not yet
	// acknowledged this node's current application set.
	Unacknowledged() []string
	// Rebroadcast gossips this node's beacon again, in the background.
	Rebroadcast()
}

// DrainAdvertiser advertises every application as draining; (*Backend).Drain
// does. It blocks until the advertisement is taken or ctx ends.
type DrainAdvertiser interface {
	Drain(ctx context.Context) error
}

// Drain timing.
const (
	// DrainRebroadcast is how often a draining backend gossips its beacon
	// again while a load balancer has not acknowledged it: a gossip round
	// that misses one is common in small clusters.
	DrainRebroadcast = 250 * time.Millisecond
	// drainPoll is how often the acknowledgements are looked at.
	drainPoll = 50 * time.Millisecond
)

// DrainResult is how a drain ended.
type DrainResult int

const (
	// DrainAcknowledged: every load balancer acknowledged a configuration
	// without this node, and drain-grace was served in full.
	DrainAcknowledged DrainResult = iota + 1
	// DrainTimedOut: drain-timeout passed first; Pending names the load
	// balancers that had not acknowledged. No grace is served.
	DrainTimedOut
	// DrainNotAdvertised: the draining set could not be advertised; Err
	// says why. The node leaves without waiting.
	DrainNotAdvertised
	// DrainInterrupted: the caller's context ended first (a second
	// signal), while waiting (Pending non-empty) or during drain-grace.
	DrainInterrupted
)

func (r DrainResult) String() string {
	switch r {
	case DrainAcknowledged:
		return "acknowledged"
	case DrainTimedOut:
		return "timed out"
	case DrainNotAdvertised:
		return "not advertised"
	case DrainInterrupted:
		return "interrupted"
	}
	return fmt.Sprintf("DrainResult(%d)", int(r))
}

// DrainOutcome is what a drain did.
type DrainOutcome struct {
	Result DrainResult
	// Pending are the load balancers that had not acknowledged when the
	// drain timed out or was interrupted while waiting.
	Pending []string
	// Err is why the drain could not be advertised.
	Err error
	// Took is the time from the start to every acknowledgement, or to the
	// timeout, the failure or the interruption; drain-grace not included.
	Took time.Duration
	// Grace is how long in-flight requests were served after every
	// acknowledgement: drain-grace, or less when interrupted.
	Grace time.Duration
}

func (o DrainOutcome) String() string {
	s := fmt.Sprintf("%s after %s", o.Result, o.Took.Round(time.Millisecond))
	if o.Result == DrainAcknowledged || o.Grace > 0 {
		s += fmt.Sprintf(" (grace %s)", o.Grace.Round(time.Millisecond))
	}
	if len(o.Pending) > 0 {
		s += "; not acknowledged by " + strings.Join(o.Pending, ", ")
	}
	if o.Err != nil {
		s += ": " + o.Err.Error()
	}
	return s
}

// DrainOptions are a drain's settings (backend.drain-timeout and
// backend.drain-grace).
type DrainOptions struct {
	// Timeout bounds advertising and waiting for acknowledgements.
	Timeout time.Duration
	// Grace is how long requests in flight are served once every load
	// balancer has acknowledged.
	Grace time.Duration
	// Logger receives progress; nil means slog.Default().
	Logger *slog.Logger
}

// RunDrain takes a backend out of rotation without losing a request: it
// advertises every application as draining, waits until every load
// balancer acknowledges that its proxy runs a configuration without this
// node (re-gossiping the beacon every DrainRebroadcast) or o.Timeout
// passes, then serves requests in flight for o.Grace. When ctx ends (a
// second signal) it stops waiting at once and reports DrainInterrupted.
// It blocks until the drain is over and starts no goroutine.
func RunDrain(ctx context.Context, adv DrainAdvertiser, c DrainCluster, o DrainOptions) DrainOutcome {
	log := cmp.Or(o.Logger, slog.Default())
	start := time.Now()
	interrupted := func(pending []string) DrainOutcome {
		log.Warn("drain interrupted: leaving at once", "pending", pending, "after", time.Since(start).Round(time.Millisecond))
		return DrainOutcome{Result: DrainInterrupted, Pending: pending, Took: time.Since(start)}
	}
	if ctx.Err() != nil {
		return interrupted(nil)
	}
	wait, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	if err := adv.Drain(wait); err != nil {
		if ctx.Err() != nil {
			return interrupted(nil)
		}
		log.Warn("could not advertise draining; leaving without waiting", "err", err)
		return DrainOutcome{Result: DrainNotAdvertised, Err: err, Took: time.Since(start)}
	}
	log.Info("draining: waiting for the load balancers to stop routing here")
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	lastBroadcast := time.Now()
	for pending := c.Unacknowledged(); len(pending) > 0; pending = c.Unacknowledged() {
		select {
		case <-wait.Done():
			if ctx.Err() != nil {
				return interrupted(pending)
			}
			log.Warn("drain timeout: load balancers did not acknowledge", "pending", pending, "timeout", o.Timeout)
			return DrainOutcome{Result: DrainTimedOut, Pending: pending, Took: time.Since(start)}
		case <-tick.C:
		}
		if time.Since(lastBroadcast) >= DrainRebroadcast {
			c.Rebroadcast()
			lastBroadcast = time.Now()
		}
	}
	took := time.Since(start)
	log.Info("drained: every load balancer acknowledged; serving in-flight requests",
		"took", took.Round(time.Millisecond), "grace", o.Grace)
	graceStart := time.Now()
	timer := time.NewTimer(o.Grace)
	defer timer.Stop()
	select {
	case <-timer.C:
		return DrainOutcome{Result: DrainAcknowledged, Took: took, Grace: time.Since(graceStart)}
	case <-ctx.Done():
		grace := time.Since(graceStart)
		log.Warn("drain-grace cut short: leaving at once", "served", grace.Round(time.Millisecond), "grace", o.Grace)
		return DrainOutcome{Result: DrainInterrupted, Took: took, Grace: grace}
	}
}
