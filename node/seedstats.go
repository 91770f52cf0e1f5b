package node

import (
	"context"
	"errors"

	"github.com/scrimplb/scrimp/seed"
)

// countedSeeds counts a seed provider's fetches, and those that failed, in
// the node's metrics. It wraps only Seeds, for the join loop: the node
// asserts the provider's other interfaces (Publisher, Rekeyer, Closer) on
// the provider itself. It blocks as the provider does.
type countedSeeds struct {
	p seed.Provider
	m *metrics
}

func (c countedSeeds) Seeds(ctx context.Context) ([]string, error) {
	addrs, err := c.p.Seeds(ctx)
	c.m.countSeed(ctx, "fetch", err)
	return addrs, err
}

// countedPublisher counts a publisher's publishes and withdrawals, and
// those that failed. It blocks as the publisher does.
type countedPublisher struct {
	p seed.Publisher
	m *metrics
}

// seedPublisher wraps p; the publish and withdraw series exist from then on.
func (m *metrics) seedPublisher(p seed.Publisher) countedPublisher {
	m.seedOp("publish")
	m.seedOp("withdraw")
	return countedPublisher{p: p, m: m}
}

func (c countedPublisher) Publish(ctx context.Context, self string) error {
	err := c.p.Publish(ctx, self)
	c.m.countSeed(ctx, "publish", err)
	return err
}

func (c countedPublisher) Withdraw(ctx context.Context, self string) error {
	err := c.p.Withdraw(ctx, self)
	c.m.countSeed(ctx, "withdraw", err)
	return err
}

// countSeed counts one request of op. One cut short because the node is
// stopping (its context cancelled) is not the provider's failure, and is
// not counted as an error; one that ran out of time is.
func (m *metrics) countSeed(ctx context.Context, op string, err error) {
	m.seedRequests.WithLabelValues(op).Inc()
	if err != nil && !errors.Is(ctx.Err(), context.Canceled) {
		m.seedErrors.WithLabelValues(op).Inc()
	}
}
