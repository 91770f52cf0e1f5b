package check

import (
	"strings"
	"testing"
)

// TestCounter drives the counter through sequences of results under both
// first-result rules: P passes, F fails; the states after each result are
// U up, D down; '*' marks a flip, '!' the first result (with
// FirstDecides, the backend looks again after it even when nothing
// flipped).
func TestCounter(t *testing.T) {
	tests := []struct {
		name       string
		first      First
		rise, fall int
		results    string
		want       string
	}{
		// StartUp: the load balancer's instances, announced as serving.
		{"start up: up before any failure", StartUp, 2, 2, "PP", "U!U"},
		{"start up: one failure is not enough", StartUp, 2, 2, "FPFP", "U!UUU"},
		{"start up: a failing start is down after fall", StartUp, 2, 2, "FF", "U!D*"},
		{"start up: fall 1 takes the first failure down", StartUp, 2, 1, "F", "D*!"},
		{"start up: rise passes in a row bring it back", StartUp, 2, 2, "FFPP", "U!D*DU*"},
		{"start up: a failure while rising starts over", StartUp, 2, 2, "FFPFPP", "U!D*DDDU*"},
		{"start up: failures while down keep it down", StartUp, 2, 2, "FFFF", "U!D*DD"},
		// FirstDecides: a backend's own applications, never checked yet.
		{"first decides: first pass is up at once", FirstDecides, 2, 3, "P", "U*!"},
		{"first decides: first failure is down", FirstDecides, 2, 3, "F", "D!"},
		{"first decides: fall failures in a row go down", FirstDecides, 2, 3, "PFFF", "U*!UUD*"},
		{"first decides: flapping never reaches fall", FirstDecides, 2, 3, "PFFPFFPFFP", "U*!UUUUUUUUU"},
		{"first decides: rise passes in a row come up", FirstDecides, 2, 3, "FPP", "D!DU*"},
		{"first decides: flapping never reaches rise", FirstDecides, 2, 3, "FPFPFPF", "D!DDDDDD"},
		{"first decides: a failure resets the rise count", FirstDecides, 3, 3, "FPPFPPP", "D!DDDDDU*"},
		{"first decides: a pass resets the fall count", FirstDecides, 2, 2, "PFPFF", "U*!UUUD*"},
		{"first decides: rise and fall 1 follow every result", FirstDecides, 1, 1, "PFPF", "U*!D*U*D*"},
		{"thresholds below 1 count as 1", FirstDecides, 0, -1, "PFP", "U*!D*U*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCounter(tt.rise, tt.fall, tt.first)
			if c.Known() {
				t.Fatal("a new counter knows a result")
			}
			if want := tt.first == FirstDecides; c.Down() != want {
				t.Fatalf("a new counter is down = %v, want %v", c.Down(), want)
			}
			var got strings.Builder
			for _, r := range tt.results {
				flipped, first := c.Record(r == 'P')
				got.WriteString(map[bool]string{false: "U", true: "D"}[c.Down()])
				if flipped {
					got.WriteString("*")
				}
				if first {
					got.WriteString("!")
				}
				if !c.Known() {
					t.Fatal("Known is false after a result")
				}
			}
			if got.String() != tt.want {
				t.Errorf("%s → %s, want %s", tt.results, got.String(), tt.want)
			}
		})
	}
}

func TestNewCounterRejectsUnknownRule(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("NewCounter accepted the zero First")
		}
	}()
	NewCounter(2, 2, 0)
}
