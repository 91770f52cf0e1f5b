package backend

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/config"
)

// drainFake is the cluster and the advertiser of a drain under
// synctest's fake clock: load balancers acknowledge at fixed instants
// after the start, and every call is recorded.
type drainFake struct {
	drainScript
	start time.Time

	mu           sync.Mutex
	advertised   bool
	rebroadcasts []time.Duration // since start
}

func (f *drainFake) Drain(ctx context.Context) error {
	if f.advBlocks {
		<-ctx.Done()
		return ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advertised = f.advErr == nil
	return f.advErr
}

func (f *drainFake) Unacknowledged() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.advertised {
		return slices.Clone(f.lbs) // nobody acknowledges what was never sent
	}
	var out []string
	for _, lb := range f.lbs {
		at, ok := f.ackAt[lb]
		if !ok || time.Since(f.start) < at {
			out = append(out, lb)
		}
	}
	return out
}

func (f *drainFake) Rebroadcast() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rebroadcasts = append(f.rebroadcasts, time.Since(f.start))
}

func (f *drainFake) rebroadcastCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.rebroadcasts)
}

// drainScript is what a drainFake does.
type drainScript struct {
	ackAt     map[string]time.Duration // never acknowledges when absent
	lbs       []string
	advErr    error // Drain's answer
	advBlocks bool  // Drain blocks until its context ends
}

// TestRunDrainTiming checks the drain's timer logic on synctest's fake
// clock: each case's outcome and the exact time it took.
func TestRunDrainTiming(t *testing.T) {
	refused := errors.New("metadata too large")
	cases := []struct {
		name    string
		fake    drainScript
		timeout time.Duration
		grace   time.Duration
		// cancelAt, if set, ends the caller's context then (a second
		// signal).
		cancelAt time.Duration
		want     DrainResult
		pending  []string
		took     time.Duration // start to result, grace excluded
		total    time.Duration // what RunDrain blocked for
		// rebroadcasts is how many beacons were repeated.
		rebroadcasts int
	}{
		{
			name:    "acknowledged at once, then the grace",
			fake:    drainScript{lbs: []string{"lb-1", "lb-2"}, ackAt: map[string]time.Duration{"lb-1": 0, "lb-2": 0}},
			timeout: 10 * time.Second, grace: 300 * time.Millisecond,
			want: DrainAcknowledged, took: 0, total: 300 * time.Millisecond,
		},
		{
			// Polled every 50 ms: lb-2's acknowledgement at 620 ms is
			// seen at 650 ms; beacons repeated at 250 and 500 ms.
			name:    "the last acknowledgement ends the wait",
			fake:    drainScript{lbs: []string{"lb-1", "lb-2"}, ackAt: map[string]time.Duration{"lb-1": 100 * time.Millisecond, "lb-2": 620 * time.Millisecond}},
			timeout: 10 * time.Second, grace: time.Second,
			want: DrainAcknowledged, took: 650 * time.Millisecond, total: 1650 * time.Millisecond, rebroadcasts: 2,
		},
		{
			// Off the 50 ms poll grid, so that the timeout never ties
			// with a tick: beacons repeated every 250 ms up to 2 s.
			name:    "a load balancer that never answers: the timeout, no grace",
			fake:    drainScript{lbs: []string{"lb-1", "lb-2"}, ackAt: map[string]time.Duration{"lb-1": 0}},
			timeout: 2020 * time.Millisecond, grace: time.Second,
			want: DrainTimedOut, pending: []string{"lb-2"}, took: 2020 * time.Millisecond, total: 2020 * time.Millisecond, rebroadcasts: 8,
		},
		{
			name:    "not advertised: leaves without waiting",
			fake:    drainScript{lbs: []string{"lb-1"}, advErr: refused},
			timeout: 10 * time.Second, grace: time.Second,
			want: DrainNotAdvertised, pending: nil, took: 0, total: 0,
		},
		{
			name:    "advertising never answers: the timeout bounds it",
			fake:    drainScript{lbs: []string{"lb-1"}, advBlocks: true},
			timeout: 3 * time.Second, grace: time.Second,
			want: DrainNotAdvertised, took: 3 * time.Second, total: 3 * time.Second,
		},
		{
			name:    "a second signal while waiting",
			fake:    drainScript{lbs: []string{"lb-1"}},
			timeout: 10 * time.Second, grace: time.Second, cancelAt: 1210 * time.Millisecond,
			want: DrainInterrupted, pending: []string{"lb-1"}, took: 1210 * time.Millisecond, total: 1210 * time.Millisecond, rebroadcasts: 4,
		},
		{
			name:    "a second signal during the grace",
			fake:    drainScript{lbs: []string{"lb-1"}, ackAt: map[string]time.Duration{"lb-1": 0}},
			timeout: 10 * time.Second, grace: 30 * time.Second, cancelAt: 5 * time.Second,
			want: DrainInterrupted, took: 0, total: 5 * time.Second,
		},
		{
			name:    "a second signal while advertising",
			fake:    drainScript{lbs: []string{"lb-1"}, advBlocks: true},
			timeout: 10 * time.Second, grace: time.Second, cancelAt: 700 * time.Millisecond,
			want: DrainInterrupted, took: 700 * time.Millisecond, total: 700 * time.Millisecond,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &drainFake{drainScript: tc.fake, start: time.Now()}
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				if tc.cancelAt > 0 {
					time.AfterFunc(tc.cancelAt, cancel)
				}
				out := RunDrain(ctx, f, f, DrainOptions{Timeout: tc.timeout, Grace: tc.grace, Logger: slog.New(slog.DiscardHandler)})
				total := time.Since(f.start)
				if out.Result != tc.want || !slices.Equal(out.Pending, tc.pending) {
					t.Errorf("outcome %v, pending %v; want %v, pending %v", out, out.Pending, tc.want, tc.pending)
				}
				if out.Took != tc.took || total != tc.total {
					t.Errorf("took %v, blocked %v; want %v and %v", out.Took, total, tc.took, tc.total)
				}
				if want := tc.total - tc.took; (tc.want == DrainAcknowledged || out.Grace > 0) && out.Grace != want {
					t.Errorf("grace %v, want %v", out.Grace, want)
				}
				if tc.want == DrainNotAdvertised && !tc.fake.advBlocks && !errors.Is(out.Err, refused) {
					t.Errorf("err %v, want %v", out.Err, refused)
				}
				if n := f.rebroadcastCount(); n != tc.rebroadcasts {
					t.Errorf("%d rebroadcasts (%v), want %d", n, f.rebroadcasts, tc.rebroadcasts)
				}
			})
		})
	}
}

// TestRunDrainInCluster drains a running Backend out of a real two-node
// gossip cluster on loopback: the load balancer member acknowledges the
// draining set as its proxy would, once it has it, and the drain ends
// acknowledged; the load balancer then sees the backend's applications as
// draining.
func TestRunDrainInCluster(t *testing.T) {
	const lbIP, backendIP = "127.0.31.1", "127.0.31.2"
	lbc := startMember(t, "lb-1", lbIP, catalog.RoleLB, nil)

	b, _ := newBackend(t, &config.Backend{Applications: []config.Application{staticApp("web", 8080)}})
	bc := startMember(t, "backend-1", backendIP, catalog.RoleBackend, b.Applications())
	run(t, b, bc)
	if _, err := bc.Join([]string{lbc.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the load balancer sees the backend", func() bool { return lbc.Snapshot().Backends() == 1 })

	// The load balancer's part: acknowledge every membership change, as
	// its loop does once the proxy runs the new configuration.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			lbc.Acknowledge(lbc.Snapshot())
			select {
			case <-ctx.Done():
				return
			case <-lbc.Changes():
			}
		}
	})

	out := RunDrain(context.Background(), b, bc, DrainOptions{Timeout: 10 * time.Second, Grace: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if out.Result != DrainAcknowledged || out.Grace < 50*time.Millisecond {
		t.Fatalf("drain: %v; want acknowledged with 50ms grace", out)
	}
	t.Logf("drain in a real cluster: %v", out)
	var states []catalog.State
	for _, n := range lbc.Snapshot().Nodes {
		for _, a := range n.Applications {
			states = append(states, a.State)
		}
	}
	if !slices.Equal(states, []catalog.State{catalog.StateDraining}) {
		t.Errorf("the load balancer sees application states %v, want [draining]", states)
	}
}
