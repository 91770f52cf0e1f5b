package check

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestOnGrid checks when the loop calls its check, in a synctest bubble
// where time only moves when every goroutine waits.
func TestOnGrid(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name      string
		first     time.Duration // after the loop began
		interval  time.Duration
		takes     time.Duration                // how long each check runs
		soon      func(call int) time.Duration // what call number call (from 0) returns; nil: 0
		stopAfter time.Duration
		want      []time.Duration // when checks start, since the loop began
	}{
		{name: "on the grid from the first instant", first: 30 * ms, interval: 100 * ms, stopAfter: 350 * ms,
			want: []time.Duration{30 * ms, 130 * ms, 230 * ms, 330 * ms}},
		{name: "a first instant in the past: at once, then on its grid", first: -70 * ms, interval: 100 * ms, stopAfter: 250 * ms,
			want: []time.Duration{0, 30 * ms, 130 * ms, 230 * ms}},
		{name: "the check's own time does not shift the grid", first: 0, interval: 100 * ms, takes: 40 * ms, stopAfter: 350 * ms,
			want: []time.Duration{0, 100 * ms, 200 * ms, 300 * ms}},
		{name: "a slow check: missed instants are dropped", first: 0, interval: 100 * ms, takes: 250 * ms, stopAfter: 650 * ms,
			want: []time.Duration{0, 300 * ms, 600 * ms}},
		{name: "soon: a quick re-check off the grid, then back on it", first: 0, interval: 100 * ms,
			soon: func(call int) time.Duration {
				if call == 1 || call == 2 {
					return 20 * ms
				}
				return 0
			},
			stopAfter: 350 * ms,
			want:      []time.Duration{0, 100 * ms, 120 * ms, 140 * ms, 200 * ms, 300 * ms}},
		{name: "soon shorter than the check: at once after it", first: 0, interval: 100 * ms, takes: 30 * ms,
			soon: func(call int) time.Duration {
				if call == 0 {
					return 10 * ms
				}
				return 0
			},
			stopAfter: 250 * ms,
			want:      []time.Duration{0, 30 * ms, 100 * ms, 200 * ms}},
		{name: "stopped before the first instant: no check", first: 500 * ms, interval: 100 * ms, stopAfter: 200 * ms},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantStarts(t, tt.stopAfter, tt.takes, tt.want, func(ctx context.Context, start time.Time, check func(context.Context) int) {
				OnGrid(ctx, start.Add(tt.first), tt.interval, func(ctx context.Context) time.Duration {
					call := check(ctx)
					if tt.soon == nil {
						return 0
					}
					return tt.soon(call)
				})
			})
		})
	}
}

// TestOnGridWakesTogether checks that loops given instants on one grid
// call their checks at the same instants: the point of the grid.
func TestOnGridWakesTogether(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		origin := time.Now()
		interval, slot := time.Second, 250*time.Millisecond
		calls := map[time.Duration]int{} // instant since origin → checks then
		var mu sync.Mutex
		done := make(chan struct{})
		const loops = 20
		for i := range loops {
			// Loops start at different times, in one of 4 slots.
			time.Sleep(13 * time.Millisecond)
			first := GridStart(origin, time.Duration(i%4)*slot, interval, time.Now())
			go func() {
				defer func() { done <- struct{}{} }()
				OnGrid(ctx, first, interval, func(context.Context) time.Duration {
					mu.Lock()
					calls[time.Since(origin)]++
					mu.Unlock()
					return 0
				})
			}()
		}
		time.Sleep(3 * time.Second)
		cancel()
		for range loops {
			<-done
		}
		for at, n := range calls {
			if at%slot != 0 {
				t.Errorf("%d checks at %v, off the %v grid", n, at, slot)
			}
		}
		// 4 slots a second over about 3 seconds.
		if len(calls) > 13 {
			t.Errorf("checks at %d distinct instants, want at most 13: %v", len(calls), calls)
		}
	})
}

func TestGridStart(t *testing.T) {
	origin := time.Unix(1000, 0)
	s := time.Second
	tests := []struct {
		name             string
		offset, interval time.Duration
		now              time.Duration // since origin
		want             time.Duration // since origin
	}{
		{"before the first instant", 300 * time.Millisecond, s, 100 * time.Millisecond, 300 * time.Millisecond},
		{"after it: the next one", 300 * time.Millisecond, s, 1400 * time.Millisecond, 2300 * time.Millisecond},
		{"exactly on an instant: the next one", 300 * time.Millisecond, s, 1300 * time.Millisecond, 2300 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := GridStart(origin, tt.offset, tt.interval, origin.Add(tt.now)).Sub(origin)
			if got != tt.want {
				t.Errorf("GridStart = origin+%v, want origin+%v", got, tt.want)
			}
		})
	}
}
