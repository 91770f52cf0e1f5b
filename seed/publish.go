package seed

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Scheduled is implemented by publishers whose records expire unless they
// are refreshed, so they know how often RunPublisher must call Publish.
// PublishSchedule never blocks and may be called from any goroutine.
type Scheduled interface {
	PublishSchedule() (period, jitter time.Duration)
}

const (
	// defaultPublishPeriod is used when RunPublisher is given no period.
	defaultPublishPeriod = 30 * time.Second
	// withdrawTimeout bounds the final Withdraw: the node is shutting down
	// and must not hang on a store that has become unreachable; a record
	// left behind ages out anyway.
	withdrawTimeout = 5 * time.Second
)

// Tests shorten these.
var (
	// selfCheckInterval is how often RunPublisher asks self for the
	// address between publishes, so that a new address is advertised
	// within about a second rather than a whole period.
	selfCheckInterval = time.Second
	// firstRetry is the wait after the first failed Publish; it doubles
	// with each further failure up to the period.
	firstRetry = time.Second
)

// RunPublisher advertises this node through p until ctx is cancelled. It
// publishes at once, then every period ± a uniformly random jitter (so that
// load balancers started together do not write in lockstep), and at once
// when self returns a different address, withdrawing the old one. An empty
// address from self means "not known yet" and publishes nothing. Failures
// are logged and retried after 1s, 2s, 4s… up to period. When ctx is
// cancelled it withdraws the last address with a fresh context bounded by a
// few seconds, then returns.
//
// RunPublisher blocks; run it in its own goroutine. self is called from
// that goroutine only and must not block. A period <= 0 means 30s; jitter
// is clamped to [0, period/2].
func RunPublisher(ctx context.Context, p Publisher, self func() string, period, jitter time.Duration, logger *slog.Logger) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if period <= 0 {
		period = defaultPublishPeriod
	}
	jitter = min(max(jitter, 0), period/2)
	check := min(selfCheckInterval, period)

	var (
		current  string    // last address published (or attempted): what Withdraw must remove
		due      time.Time // when the next refresh is due; zero means now
		failures int
	)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		if addr := self(); addr != "" && (addr != current || !time.Now().Before(due)) {
			if current != "" && addr != current {
				logger.Info("seed: address changed; withdrawing the old one", "old", current, "new", addr)
				withdraw(ctx, p, current, logger)
			}
			current = addr
			pctx, cancel := context.WithTimeout(ctx, period)
			err := p.Publish(pctx, addr)
			cancel()
			switch {
			case ctx.Err() != nil:
				// Shutting down: fall through to the withdraw below.
			case err != nil:
				failures++
				wait := min(firstRetry<<min(failures-1, 16), period)
				logger.Warn("seed: publish failed", "address", addr, "retry-in", wait, "err", err)
				due = time.Now().Add(wait)
			default:
				if failures > 0 {
					logger.Info("seed: publish succeeded again", "address", addr, "failures", failures)
				}
				failures = 0
				due = time.Now().Add(jittered(period, jitter))
			}
		}
		wait := check
		if !due.IsZero() {
			wait = max(min(time.Until(due), check), 0)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			if current != "" {
				withdraw(context.WithoutCancel(ctx), p, current, logger)
			}
			return
		case <-timer.C:
		}
	}
}

// withdraw removes addr within withdrawTimeout, logging rather than
// returning failure: the caller is moving on either way and the record
// ages out if this fails.
func withdraw(ctx context.Context, p Publisher, addr string, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, withdrawTimeout)
	defer cancel()
	if err := p.Withdraw(ctx, addr); err != nil {
		logger.Warn("seed: withdraw failed; the record will age out", "address", addr, "err", err)
		return
	}
	logger.Info("seed: withdrawn", "address", addr)
}

// jittered returns period shifted by a uniform random amount in
// [-jitter, +jitter].
func jittered(period, jitter time.Duration) time.Duration {
	if jitter <= 0 {
		return period
	}
	return period - jitter + time.Duration(rand.Int64N(int64(2*jitter)+1))
}
