package check

import (
	"context"
	"time"
)

// Every calls check once after delay, then every interval (start to start)
// until ctx is done, and returns when ctx is done and check has returned.
// A check that outlasts interval delays the next one, and the ticks missed
// meanwhile are dropped, so checks never pile up. check runs in Every's
// goroutine and must return soon after its ctx is done. interval must be
// positive; a delay of zero or less calls check at once.
func Every(ctx context.Context, delay, interval time.Duration, check func(ctx context.Context)) {
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for ctx.Err() == nil {
		check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}
