package lb

import (
	"testing"
	"time"
)

func TestTimingNext(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	timing := Timing{Quiet: 200 * time.Millisecond, MaxWait: time.Second}
	tests := []struct {
		name                  string
		lastDone, first, last time.Time
		want                  time.Time
	}{
		{"first ever change applies at once", time.Time{}, ms(5), ms(5), ms(5)},
		{"change long after the last apply applies at once", ms(0), ms(500), ms(500), ms(500)},
		{"change exactly one quiet period after applies at once", ms(0), ms(200), ms(200), ms(200)},
		{"change right after an apply waits for quiet", ms(0), ms(10), ms(10), ms(210)},
		{"burst waits for quiet after its last change", ms(0), ms(10), ms(150), ms(350)},
		{"endless burst is capped by max wait", ms(0), ms(10), ms(990), ms(1010)},
		{"max wait counts from the first pending change", ms(0), ms(100), ms(2000), ms(1100)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := timing.Next(tc.lastDone, tc.first, tc.last); !got.Equal(tc.want) {
				t.Errorf("Next = %v after t0, want %v", got.Sub(t0), tc.want.Sub(t0))
			}
		})
	}
}
