package lb

import "github.com/scrimplb/scrimp/catalog"

// Admitter applies a Policy to one membership snapshot after another
// outside the load balancer loop (the xDS server's feed does), keeping the
// owners from one call to the next as the loop does, so that the same
// incumbents keep their names. It is not safe for concurrent use: one
// goroutine feeds it.
type Admitter struct {
	policy Policy
	owners Owners
}

// NewAdmitter returns an Admitter of p with no owners yet.
func NewAdmitter(p Policy) *Admitter { return &Admitter{policy: p} }

// Admit returns what of snap to route, without the refused instances
// (draining and down ones that are admitted stay, with their state), and
// the refusals.
func (a *Admitter) Admit(snap catalog.Snapshot) (catalog.Snapshot, []Refusal) {
	adm := a.policy.admit(a.owners, snap)
	a.owners = adm.owners
	return adm.snap, adm.refusals
}
