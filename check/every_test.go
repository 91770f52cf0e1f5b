package check

import (
	"context"
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
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(t.Context())
				start := time.Now()
				var got []time.Duration
				done := make(chan struct{})
				go func() {
					defer close(done)
					Every(ctx, tt.delay, tt.interval, func(ctx context.Context) {
						got = append(got, time.Since(start))
						select {
						case <-time.After(tt.takes):
						case <-ctx.Done():
						}
					})
				}()
				time.Sleep(tt.stopAfter)
				cancel()
				<-done // Every returns once stopped, its check included
				if len(got) != len(tt.want) {
					t.Fatalf("checks at %v, want %v", got, tt.want)
				}
				for i := range got {
					if got[i] != tt.want[i] {
						t.Fatalf("checks at %v, want %v", got, tt.want)
					}
				}
			})
		})
	}
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
