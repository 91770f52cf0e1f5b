package seed

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recordingPublisher is a Publisher that records its calls, to test the
// scheduling of RunPublisher apart from any store.
type recordingPublisher struct {
	mu    sync.Mutex
	calls []string // "publish ADDR" or "withdraw ADDR"
	fail  int      // how many of the next publishes fail
	// withdrawCtx records the state of the context Withdraw was given.
	withdrawCtxErr      error
	withdrawHasDeadline bool
}

func (r *recordingPublisher) Publish(ctx context.Context, self string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "publish "+self)
	if r.fail > 0 {
		r.fail--
		return errors.New("store unavailable")
	}
	return nil
}

func (r *recordingPublisher) Withdraw(ctx context.Context, self string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "withdraw "+self)
	r.withdrawCtxErr = ctx.Err()
	_, r.withdrawHasDeadline = ctx.Deadline()
	return nil
}

func (r *recordingPublisher) snapshot() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

func (r *recordingPublisher) count(call string) int {
	n := 0
	for _, c := range r.snapshot() {
		if c == call {
			n++
		}
	}
	return n
}

// runPublisher starts RunPublisher and returns a stop func that cancels it
// and waits, bounded, for it to return.
func runPublisher(t *testing.T, p Publisher, self func() string, period, jitter time.Duration) (stop func()) {
	t.Helper()
	env, _ := testEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		RunPublisher(ctx, p, self, period, jitter, env.Logger)
	}()
	stop = func() {
		t.Helper()
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Fatal("RunPublisher did not return after cancellation")
		}
	}
	t.Cleanup(func() { cancel(); <-done })
	return stop
}

// fastPublisherChecks shortens RunPublisher's address check and retry
// delays for the test.
func fastPublisherChecks(t *testing.T) {
	oldCheck, oldRetry := selfCheckInterval, firstRetry
	selfCheckInterval, firstRetry = 10*time.Millisecond, 10*time.Millisecond
	t.Cleanup(func() { selfCheckInterval, firstRetry = oldCheck, oldRetry })
}

func TestRunPublisher(t *testing.T) {
	const a, b = "10.0.0.1:7946", "10.0.0.2:7946"
	tests := []struct {
		name           string
		period, jitter time.Duration
		fail           int
		// change switches self from a to b once the first publish was seen.
		change bool
		// until is what the calls must include before stopping.
		until []string
		// want is the exact sequence of calls, if it is predictable.
		want []string
	}{
		{
			name: "publishes at once and withdraws on cancel", period: time.Hour,
			until: []string{"publish " + a}, want: []string{"publish " + a, "withdraw " + a},
		},
		{
			name: "refreshes every period", period: 20 * time.Millisecond, jitter: 10 * time.Millisecond,
			until: []string{"publish " + a, "publish " + a, "publish " + a},
		},
		{
			name: "retries failures", period: time.Hour, fail: 2,
			until: []string{"publish " + a, "publish " + a, "publish " + a},
			want:  []string{"publish " + a, "publish " + a, "publish " + a, "withdraw " + a},
		},
		{
			name: "address change", period: time.Hour, change: true,
			until: []string{"publish " + a, "withdraw " + a, "publish " + b},
			want:  []string{"publish " + a, "withdraw " + a, "publish " + b, "withdraw " + b},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fastPublisherChecks(t)
			p := &recordingPublisher{fail: tt.fail}
			var self atomic.Value
			self.Store(a)
			stop := runPublisher(t, p, func() string { return self.Load().(string) }, tt.period, tt.jitter)
			eventually(t, 10*time.Second, func() string {
				if tt.change && p.count("publish "+a) > 0 {
					self.Store(b)
				}
				got := p.snapshot()
				if len(got) < len(tt.until) || !slices.Equal(got[:len(tt.until)], tt.until) {
					return fmt.Sprintf("calls %q, want them to start with %q", got, tt.until)
				}
				return ""
			})
			stop()
			got := p.snapshot()
			if tt.want != nil && !slices.Equal(got, tt.want) {
				t.Errorf("calls %q, want %q", got, tt.want)
			}
			if last := got[len(got)-1]; last != "withdraw "+self.Load().(string) {
				t.Errorf("last call %q, want the withdrawal of the current address", last)
			}
			if p.withdrawCtxErr != nil || !p.withdrawHasDeadline {
				t.Errorf("Withdraw got a context with error %v, deadline %t; want a live one with a deadline",
					p.withdrawCtxErr, p.withdrawHasDeadline)
			}
		})
	}
}

func TestRunPublisherWithoutAddress(t *testing.T) {
	fastPublisherChecks(t)
	p := &recordingPublisher{}
	var asked atomic.Int64
	stop := runPublisher(t, p, func() string { asked.Add(1); return "" }, time.Hour, 0)
	eventually(t, 10*time.Second, func() string {
		if asked.Load() < 3 {
			return "self was not asked repeatedly"
		}
		return ""
	})
	stop()
	if got := p.snapshot(); len(got) != 0 {
		t.Errorf("calls %q with no address, want none", got)
	}
}

func TestRunPublisherDefaults(t *testing.T) {
	// A zero period and a nil logger must not spin or panic.
	p := &recordingPublisher{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		RunPublisher(ctx, p, func() string { return "10.0.0.1:1" }, 0, time.Hour, nil)
	}()
	eventually(t, 10*time.Second, func() string {
		if p.count("publish 10.0.0.1:1") == 0 {
			return "not published"
		}
		return ""
	})
	cancel()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("RunPublisher did not return")
	}
	if n := p.count("publish 10.0.0.1:1"); n != 1 {
		t.Errorf("%d publishes, want 1: the default period is 30s", n)
	}
}

func TestJittered(t *testing.T) {
	for range 1000 {
		if d := jittered(10*time.Second, 2*time.Second); d < 8*time.Second || d > 12*time.Second {
			t.Fatalf("jittered(10s, 2s) = %s, outside [8s, 12s]", d)
		}
	}
	if d := jittered(10*time.Second, 0); d != 10*time.Second {
		t.Errorf("jittered(10s, 0) = %s", d)
	}
}
