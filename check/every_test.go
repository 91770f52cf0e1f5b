package check

import (
	"context"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// TestEvery checks when the loop calls its check, in a synctest bubble
// where time only moves when every goroutine waits.
func TestEvery(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name            string
		delay, interval time.Duration
		takes           time.Duration // how long each check runs
		stopAfter       time.Duration
		want            []time.Duration // when checks start, since the loop began
	}{
		{"no delay: at once, then every interval", 0, 100 * ms, 0, 350 * ms, []time.Duration{0, 100 * ms, 200 * ms, 300 * ms}},
		{"a delay shifts every check", 30 * ms, 100 * ms, 0, 350 * ms, []time.Duration{30 * ms, 130 * ms, 230 * ms, 330 * ms}},
		{"interval is start to start", 0, 100 * ms, 40 * ms, 350 * ms, []time.Duration{0, 100 * ms, 200 * ms, 300 * ms}},
		{"a slow check delays the next, missed ticks are dropped", 0, 100 * ms, 250 * ms, 600 * ms, []time.Duration{0, 250 * ms, 500 * ms}},
		{"stopped during the delay: no check", 500 * ms, 100 * ms, 0, 200 * ms, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantStarts(t, tt.stopAfter, tt.takes, tt.want, func(ctx context.Context, _ time.Time, check func(context.Context) int) {
				Every(ctx, tt.delay, tt.interval, func(ctx context.Context) { check(ctx) })
			})
		})
	}
}

// wantStarts runs loop in a synctest bubble for stopAfter, stops it, and
// checks that the checks it called started at want (since start, when the
// loop began). Each check runs for takes, or until the loop is stopped,
// and returns its call number (from 0). Every and OnGrid tests share it.
func wantStarts(t *testing.T, stopAfter, takes time.Duration, want []time.Duration, loop func(ctx context.Context, start time.Time, check func(context.Context) (call int))) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		start := time.Now()
		var got []time.Duration
		done := make(chan struct{})
		go func() {
			defer close(done)
			loop(ctx, start, func(ctx context.Context) int {
				call := len(got)
				got = append(got, time.Since(start))
				select {
				case <-time.After(takes):
				case <-ctx.Done():
				}
				return call
			})
		}()
		time.Sleep(stopAfter)
		cancel()
		<-done // the loop returns once stopped, its check included
		if !slices.Equal(got, want) {
			t.Fatalf("checks at %v, want %v", got, want)
		}
	})
}

// TestEveryStopsARunningCheck checks that stopping the loop reaches a
// check that is running, and that Every waits for it.
func TestEveryStopsARunningCheck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		started, returned := make(chan struct{}), false
		done := make(chan struct{})
		go func() {
			defer close(done)
			Every(ctx, 0, time.Second, func(ctx context.Context) {
				close(started)
				<-ctx.Done()
				returned = true
			})
		}()
		<-started
		cancel()
		<-done
		if !returned {
			t.Error("Every returned before its check")
		}
	})
}
