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
	// less means no limit.
	PerMinute int
}

// reloadWindow is the span PerMinute counts over.
const reloadWindow = time.Minute

// Next returns the earliest time at or after now a reload may start,
// given the start times of earlier reloads, oldest first (only the last
// PerMinute of them matter). It is a pure function, like Timing.Next.
func (r ReloadLimit) Next(reloads []time.Time, now time.Time) time.Time {
	if r.PerMinute <= 0 || len(reloads) < r.PerMinute {
		return now
	}
	at := reloads[len(reloads)-r.PerMinute].Add(reloadWindow)
	if at.After(now) {
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
