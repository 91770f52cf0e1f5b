package lb

import "time"

// Timing is the reload schedule: a change that finds the load balancer idle
// is applied at once; changes that arrive while it is busy, or within Quiet
// of the last apply, wait until membership has been quiet for Quiet, but
// never longer than MaxWait after the first of them.
type Timing struct {
	Quiet   time.Duration
	MaxWait time.Duration
}

// Next returns when to apply pending changes. lastDone is when the last
// apply finished (zero if none), first and last are when the first and the
// latest pending change were seen. It is a pure function so the policy can
// be tested without clocks.
func (t Timing) Next(lastDone, first, last time.Time) time.Time {
	if lastDone.IsZero() || !first.Before(lastDone.Add(t.Quiet)) {
		return first // idle: act at once
	}
	quiet := last.Add(t.Quiet)
	deadline := first.Add(t.MaxWait)
	if deadline.Before(quiet) {
		return deadline
	}
	return quiet
}
