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
// What check returns moves the next call. Zero: the next instant of the
// grid after the call returned. Less than interval: that long after the
// start of this call, off the grid (a quick re-check, HAProxy's
// fastinter). Interval or more: the first instant of the grid at least
// that long after the start of this call (fewer checks, still on the
// grid). Instants missed while a check ran are dropped, so checks never
// pile up. check runs in OnGrid's goroutine and must return soon after its
// ctx is done. interval must be positive; a first instant in the past
// calls check at once.
func OnGrid(ctx context.Context, first time.Time, interval time.Duration, check func(ctx context.Context) (next time.Duration)) {
	OnGridWake(ctx, first, interval, nil, check)
}

// OnGridWake is OnGrid, except that a receive from wake calls check at
// once, whenever it comes: for an event that makes a check due now (a
// connection the checker holds was closed). A nil wake never fires.
func OnGridWake(ctx context.Context, first time.Time, interval time.Duration, wake <-chan struct{}, check func(ctx context.Context) (next time.Duration)) {
	t := time.NewTimer(time.Until(first))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-wake:
		}
		start := time.Now()
		d := check(ctx)
		if ctx.Err() != nil {
			return
		}
		var next time.Time
		switch {
		case d <= 0:
			next = nextOnGrid(first, interval, time.Now())
		case d < interval:
			next = start.Add(d)
		default:
			next = nextOnGrid(first, interval, start.Add(d-1))
		}
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
