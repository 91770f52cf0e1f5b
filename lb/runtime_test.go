package lb

import (
	"context"
	"errors"
	"strings"
	"testing"
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
	gen, err := generator.New("haproxy", []byte(`{"runtime-api": true, "server-slots": 8}`))
	if err != nil {
		t.Fatal(err)
	}
	m := newMembers()
	m.setBackends(2)
	p := &slotRecorder{}
	l := startLBWith(t, Config{
		Members: m, Proxy: p, Generator: gen, Checks: CheckConfig{Disabled: true},
		Input:  generator.Input{ListenAddr: "127.0.0.1", Standalone: true, StateDir: "/var/lib/scrimp"},
		Timing: Timing{Quiet: 5 * time.Millisecond, MaxWait: 20 * time.Millisecond},
	})
	stats := func() (applies, updates, failures int) {
		s := l.Stats()
		return s.Applies, s.Updates, s.UpdateFailures
	}
	waitFor(t, "first apply", func() bool { a, _, _ := stats(); return a == 1 })
	waitFor(t, "slots re-asserted after the first apply", func() bool { return p.updateCount() == 1 })

	for n := 3; n <= 8; n++ {
		m.setBackends(n)
		waitFor(t, "update", func() bool { _, u, _ := stats(); return u == n-2 })
	}
	if a, _, _ := stats(); a != 1 {
		t.Errorf("%d reloads while backends joined within the slots, want 1 (the first)", a)
	}
	cfg, _ := p.last()
	if got := countSlots(cfg); got != 8 {
		t.Errorf("the running configuration has %d server lines, want 8 slots", got)
	}

	// A ninth backend needs more slots: one reload, then a re-assert.
	m.setBackends(9)
	waitFor(t, "reload for more slots", func() bool { a, _, _ := stats(); return a == 2 })
	waitFor(t, "slots re-asserted", func() bool { return p.updateCount() == 8 })
	if got := len(p.updates[len(p.updates)-1].Slots); got != 16 {
		t.Errorf("%d slots after growing, want 16", got)
	}

	// An update that fails falls back to a reload of the same text. (Not
	// more than half the backends at once: the mass-loss guard would keep
	// them.)
	p.mu.Lock()
	p.failUpdate = true
	p.mu.Unlock()
	m.setBackends(7)
	waitFor(t, "fallback reload", func() bool { a, _, f := stats(); return a == 3 && f >= 1 })
	cfg, _ = p.last()
	if got := countSlots(cfg); got != 16 {
		t.Errorf("fallback applied %d server lines, want 16 slots", got)
	}

	// Back to a working runtime API: updates again, no reload.
	p.mu.Lock()
	p.failUpdate = false
	p.mu.Unlock()
	m.setBackends(6)
	waitFor(t, "update after recovery", func() bool { _, u, _ := stats(); return u == 7 })
	if a, _, _ := stats(); a != 3 {
		t.Errorf("%d reloads, want 3", a)
	}
}

func countSlots(config []byte) int { return strings.Count(string(config), "\n    server s") }
