package lb

import "time"

// ReloadLimit bounds how often the loop asks the proxy for a reload: every
// reload starts new workers while the old ones finish their connections,
// so a member that flips its advertisement every few seconds would
// otherwise pile up proxy processes. Apply calls count, the trials that
// narrow down a refused configuration included; runtime updates without a
// reload (RuntimeProxy.Update) do not.
type ReloadLimit struct {
	// PerMinute is how many reloads any 60 s window may hold; zero or
	// less means no limit. A third of them may come at once; the rest
	// are spread over the minute (see Next).
	PerMinute int
}

// reloadWindow is the span PerMinute counts over.
const reloadWindow = time.Minute

// Next returns the earliest time at or after now a reload may start,
// given the start times of earlier reloads, oldest first (only the last
// PerMinute of them matter). It is a pure function, like Timing.Next.
//
// A burst of PerMinute/3 reloads (at least 2) goes at once; after it,
// reloads are spaced so that the minute holds the other two thirds (1.5 s
// apart at 60 a minute: the generic cell rate algorithm), so no 60 s
// window ever holds more than PerMinute. A change past the burst
// therefore waits one spacing, not the rest of a minute, as it would if
// the whole minute's reloads could be spent at once.
func (r ReloadLimit) Next(reloads []time.Time, now time.Time) time.Time {
	if r.PerMinute <= 0 || len(reloads) == 0 {
		return now
	}
	// At least 2, so that the proxy's start does not delay the first
	// change after it.
	burst := min(r.PerMinute, max(2, r.PerMinute/3))
	spacing := reloadWindow / time.Duration(max(1, r.PerMinute-burst))
	// The theoretical arrival time: when the reloads so far would have
	// ended had each taken one spacing.
	var tat time.Time
	for _, at := range reloads {
		if at.After(tat) {
			tat = at
		}
		tat = tat.Add(spacing)
	}
	// Replaying only the last PerMinute reloads is enough for the window:
	// they alone put tat (P-B+1) spacings past the first of them, which
	// is more than a minute.
	if at := tat.Add(-time.Duration(burst-1) * spacing); at.After(now) {
		return at
	}
	return now
}

// keep returns reloads with at appended, trimmed to what Next needs.
func (r ReloadLimit) keep(reloads []time.Time, at time.Time) []time.Time {
	reloads = append(reloads, at)
	if n := max(r.PerMinute, 1); len(reloads) > n {
		reloads = append(reloads[:0], reloads[len(reloads)-n:]...)
	}
	return reloads
}
