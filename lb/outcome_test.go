package lb

import (
	"testing"
	"testing/synctest"
	"time"
)

// TestOutcomes: every pass is reported as a value, with the latency from
// the change it answered; unchanged passes do not push reloads out of
// the history.
func TestOutcomes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMembers()
		p := &recorder{delay: 3 * time.Millisecond}
		timing := Timing{Quiet: 10 * time.Millisecond, MaxWait: 50 * time.Millisecond}
		var seen []Outcome
		l := startLBWith(t, Config{Members: m, Proxy: p, Timing: timing, Checks: CheckConfig{Disabled: true},
			OnOutcome: func(o Outcome) { seen = append(seen, o) }})
		settle(p.delay)
		changes, last := l.History()
		if len(changes) != 1 || last.Result != ResultApplied || last.Latency != 0 || last.Proxy != p.delay {
			t.Fatalf("after the first render: history %+v, last %+v; want one applied pass, no latency, proxy %v", changes, last, p.delay)
		}

		m.setBackends(2)
		settle(timing.MaxWait)
		_, last = l.History()
		if last.Result != ResultApplied || last.Backends != 2 || last.Applications != 1 {
			t.Fatalf("after a change: %+v", last)
		}
		// The change came within Quiet of the last apply: it waited for
		// the quiet period, then the proxy took p.delay.
		if want := timing.Quiet + p.delay; last.Latency != want {
			t.Errorf("latency %v, want %v", last.Latency, want)
		}

		p.setReject(true)
		m.setBackends(3)
		settle(timing.MaxWait)
		_, last = l.History()
		if last.Result != ResultRejected || last.Error == "" {
			t.Fatalf("after a refused change: %+v", last)
		}

		m.setBackends(3) // the same refused text: not tried again yet
		settle(timing.MaxWait)
		changes, last = l.History()
		if last.Result != ResultDeferred {
			t.Errorf("same refused text again: %s, want %s", last.Result, ResultDeferred)
		}
		want := []Result{ResultApplied, ResultApplied, ResultRejected}
		if len(changes) != len(want) {
			t.Fatalf("history %d passes, want %v", len(changes), want)
		}
		for i, o := range changes {
			if o.Result != want[i] {
				t.Errorf("history[%d] = %s, want %s", i, o.Result, want[i])
			}
		}
		if len(seen) != 4 {
			t.Errorf("OnOutcome called %d times, want 4", len(seen))
		}
	})
}
