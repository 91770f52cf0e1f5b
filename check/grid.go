package check

import (
	"context"
	"time"
)

// OnGrid calls check at the instants first, first+interval,
// first+2·interval and so on (absolute times on the monotonic clock, not
// counted from the end of the previous call), until ctx is done, and
// returns when ctx is done and check has returned. Loops whose first
// instants are on a shared grid (a common origin plus a multiple of a
// slot) therefore wake up together, and a process running hundreds of
// them wakes up once per slot rather than once per loop.
//
// When check returns a positive soon, the next call is soon after the
// start of this one instead: a quick re-check, off the grid (HAProxy's
// fastinter). After a call that returns zero the loop is back on the
// grid, at its next instant after the call returned. Instants missed
// while a check ran are dropped, so checks never pile up. check runs in
// OnGrid's goroutine and must return soon after its ctx is done. interval
// must be positive; a first instant in the past calls check at once.
func OnGrid(ctx context.Context, first time.Time, interval time.Duration, check func(ctx context.Context) (soon time.Duration)) {
	next := first
	t := time.NewTimer(time.Until(next))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		soon := check(ctx)
		if ctx.Err() != nil {
			return
		}
		if soon > 0 {
			t.Reset(time.Until(start.Add(soon)))
			continue
		}
		next = nextOnGrid(first, interval, time.Now())
		t.Reset(time.Until(next))
	}
}

// nextOnGrid returns the first instant first + k·interval (k ≥ 0) after
// now.
func nextOnGrid(first time.Time, interval time.Duration, now time.Time) time.Time {
	if now.Before(first) {
		return first
	}
	k := now.Sub(first)/interval + 1
	return first.Add(k * interval)
}

// GridStart returns the first instant after now of the grid origin +
// offset + k·interval: where a loop of OnGrid whose slot on the grid is
// offset starts.
func GridStart(origin time.Time, offset, interval time.Duration, now time.Time) time.Time {
	first := origin.Add(offset)
	if now.Before(first) {
		return first
	}
	return nextOnGrid(first, interval, now)
}
