package check

// First is how a Counter treats the first result, when there is no
// history to smooth yet.
type First int

// First-result rules.
const (
	// StartUp counts as up before any result, and the first result counts
	// like any other: a failing start is down after fall failures. For
	// instances that were announced as serving by someone who checked
	// them already, so that waiting for a check would only delay them.
	StartUp First = iota + 1
	// FirstDecides counts as down before any result, and the first
	// result sets the state at once: up after one pass, down (still,
	// and now known) after one failure. For an application nobody has
	// checked yet: it takes traffic after its first pass, not after rise
	// of them.
	FirstDecides
)

// Counter turns a sequence of check results into up and down with rise/fall
// hysteresis: after the first result (see First), the state flips to down
// only after fall failures in a row and back to up only after rise passes
// in a row, so that a check that fails now and then changes nothing. It is
// a value without locking; its owner serializes Record with the reads.
type Counter struct {
	rise, fall int
	first      First
	known      bool // a result has been recorded
	down       bool
	passes     int // consecutive, while down, toward rise
	fails      int // consecutive, while up, toward fall
}

// NewCounter returns a counter that needs rise passes to come up and fall
// failures to go down; a threshold below 1 counts as 1. It panics on a
// First that is not one of the rules above: that is a programming error.
func NewCounter(rise, fall int, first First) Counter {
	if first != StartUp && first != FirstDecides {
		panic("check: unknown first-result rule")
	}
	return Counter{rise: max(rise, 1), fall: max(fall, 1), first: first, down: first == FirstDecides}
}

// Record counts one result and reports whether the state flipped and
// whether this was the first result recorded.
func (c *Counter) Record(pass bool) (flipped, first bool) {
	if !c.known {
		c.known, first = true, true
		if c.first == FirstDecides {
			flipped = c.down == pass
			c.down = !pass
			return flipped, true
		}
	}
	switch {
	case pass && c.down:
		c.passes++
		if c.passes >= c.rise {
			c.down, c.passes = false, 0
			return true, first
		}
	case pass:
		c.fails = 0
	case !c.down:
		c.fails++
		if c.fails >= c.fall {
			c.down, c.fails = true, 0
			return true, first
		}
	default:
		c.passes = 0
	}
	return false, first
}

// Down reports whether the state is down.
func (c *Counter) Down() bool { return c.down }

// Known reports whether a result has been recorded.
func (c *Counter) Known() bool { return c.known }
