package lb

import (
	"testing"
	"testing/synctest"
	"time"
)

func TestReloadLimitNext(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s ...int) []time.Time {
		var out []time.Time
		for _, x := range s {
			out = append(out, t0.Add(time.Duration(x)*time.Second))
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		limit   int
		reloads []time.Time
		now     time.Duration
		want    time.Duration
	}{
		{"no limit", 0, at(0, 1, 2, 3), 4 * time.Second, 4 * time.Second},
		{"no reload yet", 30, nil, 2 * time.Second, 2 * time.Second},
		// 30 a minute: a burst of 10, then 3 s apart (20 in the minute).
		{"within the burst", 30, at(0, 0, 0, 0, 0, 0, 0, 0, 0), 1 * time.Second, 1 * time.Second},
		{"the burst spent: one spacing", 30, at(0, 0, 0, 0, 0, 0, 0, 0, 0, 0), 1 * time.Second, 3 * time.Second},
		{"the burst spent long ago", 30, at(0, 0, 0, 0, 0, 0, 0, 0, 0, 0), 40 * time.Second, 40 * time.Second},
		{"spaced reloads never wait", 30, at(0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33), 36 * time.Second, 36 * time.Second},
		// 5 a minute: two at once, then 20 s apart.
		{"small limit: the burst", 5, at(0), 1 * time.Second, 1 * time.Second},
		{"small limit: spacing", 5, at(0, 0), 1 * time.Second, 20 * time.Second},
		{"small limit: after the spacing", 5, at(0, 0), 21 * time.Second, 21 * time.Second},
		{"every spacing spent", 5, at(0, 0, 20, 40), 41 * time.Second, 60 * time.Second},
		{"an idle spell refills the burst", 5, at(0, 0, 50), 51 * time.Second, 51 * time.Second},
		// 2 a minute: both at once, then a minute apart.
		{"two a minute", 2, at(0, 1), 2 * time.Second, 60 * time.Second},
		{"exactly at the edge", 1, at(10), 70 * time.Second, 70 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ReloadLimit{PerMinute: tc.limit}.Next(tc.reloads, t0.Add(tc.now))
			if want := t0.Add(tc.want); !got.Equal(want) {
				t.Errorf("Next = %v, want %v", got.Sub(t0), tc.want)
			}
		})
	}
	var kept []time.Time
	r := ReloadLimit{PerMinute: 2}
	for _, x := range at(1, 2, 3, 4) {
		kept = r.keep(kept, x)
	}
	if len(kept) != 2 || !kept[0].Equal(t0.Add(3*time.Second)) {
		t.Errorf("keep kept %v, want the last 2", kept)
	}
}

// TestReloadLimit: a change every second for two minutes with a limit of
// 5 reloads per minute: no 60 s window holds more than 5 reloads, the
// changes are coalesced, the limit is counted, and the last state is
// applied once the window allows.
func TestReloadLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMembers()
		p := &recorder{delay: 5 * time.Millisecond}
		timing := Timing{Quiet: 10 * time.Millisecond, MaxWait: 50 * time.Millisecond}
		l := startLBWith(t, Config{Members: m, Proxy: p, Timing: timing, Checks: CheckConfig{Disabled: true},
			ReloadLimit: ReloadLimit{PerMinute: 5}})
		settle(time.Second)
		for i := 1; i <= 120; i++ {
			m.setBackends(i)
			settle(time.Second)
		}
		settle(2 * time.Minute)
		p.mu.Lock()
		at := append([]time.Time(nil), p.at...)
		p.mu.Unlock()
		for i := range at {
			n := 0
			for j := i; j < len(at) && at[j].Sub(at[i]) < time.Minute; j++ {
				n++
			}
			if n > 5 {
				t.Fatalf("%d reloads within a minute from %v", n, at[i])
			}
		}
		config, _ := p.last()
		if got := countServers(config); got != 120 {
			t.Errorf("%d servers in the last configuration, want 120", got)
		}
		st := l.Stats()
		t.Logf("120 changes over 2 min, limit 5/min: %d reloads, %d delayed passes", len(at), st.ReloadsDelayed)
		if len(at) < 10 || len(at) > 16 {
			t.Errorf("%d reloads, want about 5 per minute over 3 minutes", len(at))
		}
		if st.ReloadsDelayed == 0 {
			t.Error("ReloadsDelayed = 0")
		}
		changes, _ := l.History()
		for _, o := range changes {
			if o.Result == ResultLimited {
				t.Errorf("a limited pass in the history: %+v", o)
			}
		}
	})
}
