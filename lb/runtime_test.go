package lb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/scrimplb/scrimp/generator"
)

// slotRecorder is a recorder that can also update slots; failUpdate makes
// updates fail, as a proxy whose runtime API does not answer would.
type slotRecorder struct {
	recorder
	updates    []*generator.Runtime
	failUpdate bool
}

func (r *slotRecorder) Update(_ context.Context, config []byte, rt *generator.Runtime) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failUpdate {
		return errors.New("runtime API: connection refused")
	}
	r.updates = append(r.updates, rt)
	// What runs now, as Apply records it, for last().
	r.applied = append(r.applied, config)
	r.at = append(r.at, time.Now())
	return nil
}

func (r *slotRecorder) updateCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.updates)
}

var _ RuntimeProxy = (*slotRecorder)(nil)

// TestSlotChangesNeedNoReload drives the loop with HAProxy's runtime-api
// generator: membership changes within the slots are updates, not
// reloads; a change of the slots themselves, or an update that fails, is
// a reload; and every reload is followed by an update that re-asserts the
// slots.
func TestSlotChangesNeedNoReload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gen, err := generator.New("haproxy", []byte(`{"runtime-api": true, "server-slots": 8}`))
		if err != nil {
			t.Fatal(err)
		}
		m := newMembers()
		m.setBackends(2)
		p := &slotRecorder{}
		timing := Timing{Quiet: 5 * time.Millisecond, MaxWait: 20 * time.Millisecond}
		l := startLBWith(t, Config{
			Members: m, Proxy: p, Generator: gen, Checks: CheckConfig{Disabled: true},
			Input:  generator.Input{ListenAddr: "127.0.0.1", Standalone: true, StateDir: "/var/lib/scrimp"},
			Timing: timing,
		})
		// want checks the counters once a change has had MaxWait (on the
		// bubble's fake clock) to be applied.
		want := func(what string, applies, updates, updateCount int) {
			t.Helper()
			settle(timing.MaxWait)
			s := l.Stats()
			if s.Applies != applies || s.Updates != updates || p.updateCount() != updateCount {
				t.Fatalf("%s: %d applies, %d updates, %d recorded; want %d, %d, %d",
					what, s.Applies, s.Updates, p.updateCount(), applies, updates, updateCount)
			}
		}
		// The first apply is followed by an update re-asserting the slots.
		want("first apply", 1, 0, 1)

		for n := 3; n <= 8; n++ {
			m.setBackends(n)
			want(fmt.Sprintf("%d backends within 8 slots", n), 1, n-2, n-1)
		}
		cfg, _ := p.last()
		if got := countSlots(cfg); got != 8 {
			t.Errorf("the running configuration has %d server lines, want 8 slots", got)
		}

		// A ninth backend needs more slots: one reload, then a re-assert.
		m.setBackends(9)
		want("a ninth backend", 2, 6, 8)
		p.mu.Lock()
		slots := len(p.updates[len(p.updates)-1].Slots)
		p.mu.Unlock()
		if slots != 16 {
			t.Errorf("%d slots after growing, want 16", slots)
		}

		// An update that fails falls back to a reload of the same text.
		// (Not more than half the backends at once: the mass-loss guard
		// would keep them.)
		p.mu.Lock()
		p.failUpdate = true
		p.mu.Unlock()
		m.setBackends(7)
		settle(timing.MaxWait)
		if s := l.Stats(); s.Applies != 3 || s.UpdateFailures < 1 {
			t.Fatalf("after a failed update: %d applies, %d update failures; want 3 and at least 1", s.Applies, s.UpdateFailures)
		}
		cfg, _ = p.last()
		if got := countSlots(cfg); got != 16 {
			t.Errorf("fallback applied %d server lines, want 16 slots", got)
		}

		// Back to a working runtime API: updates again, no reload.
		p.mu.Lock()
		p.failUpdate = false
		p.mu.Unlock()
		m.setBackends(6)
		settle(timing.MaxWait)
		if s := l.Stats(); s.Applies != 3 || s.Updates != 7 {
			t.Errorf("after recovery: %d applies, %d updates; want 3, 7", s.Applies, s.Updates)
		}
	})
}

func countSlots(config []byte) int { return strings.Count(string(config), "\n    server s") }

// TestUpdatesAreNotCoalesced checks that a change that needs no reload
// is applied at once even right after another one: an update does not
// start a quiet period (only updateQuiet), so backends joining 50 ms apart
// are each served within a few milliseconds, while a reload still does.
func TestUpdatesAreNotCoalesced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gen, err := generator.New("haproxy", []byte(`{"runtime-api": true, "server-slots": 8}`))
		if err != nil {
			t.Fatal(err)
		}
		m := newMembers()
		m.setBackends(2)
		p := &slotRecorder{}
		timing := Timing{Quiet: time.Second, MaxWait: 5 * time.Second}
		startLBWith(t, Config{
			Members: m, Proxy: p, Generator: gen, Checks: CheckConfig{Disabled: true},
			Input:  generator.Input{ListenAddr: "127.0.0.1", Standalone: true, StateDir: "/var/lib/scrimp"},
			Timing: timing,
		})
		// The first apply was a reload: past its quiet period first.
		settle(2 * timing.Quiet)
		base := p.updateCount() // the re-assert after the first apply
		for n := 3; n <= 6; n++ {
			time.Sleep(50 * time.Millisecond) // the fake clock of the bubble
			changed := time.Now()
			m.setBackends(n)
			time.Sleep(updateQuiet)
			synctest.Wait()
			if got := p.updateCount(); got != base+n-2 {
				t.Fatalf("%d backends: %d updates %v after the change, want %d (not held for the %v quiet period)",
					n, got, time.Since(changed), base+n-2, timing.Quiet)
			}
		}
	})
}
