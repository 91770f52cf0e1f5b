package lb

import (
	"cmp"
	"slices"
	"time"

	"github.com/scrimplb/scrimp/catalog"
)

// Instance names one application instance: an application on a backend.
type Instance struct {
	Application string `json:"application"`
	Node        string `json:"node"`
}

// View is what the last render saw and routed, for the admin interface:
// which instances only the load balancer knows to be out (its own checks)
// or kept (the mass-loss guard). It holds values only.
type View struct {
	// At is when the last render started; zero before the first.
	At time.Time
	// Routed is the membership as rendered: admitted instances only,
	// those failing the load balancer's checks marked down, guarded ones
	// added back.
	Routed catalog.Snapshot
	// CheckDown are instances the membership says serve that the render
	// left out because they fail the load balancer's checks, sorted.
	CheckDown []Instance
	// Guarded are instances the mass-loss guard keeps, sorted.
	Guarded []Instance
	// Refusals are the instances refused, as Refusals returns them.
	Refusals []Refusal
}

// View returns the last render's view. Safe for concurrent use; the
// result is the caller's (Routed is immutable and shared).
func (l *LB) View() View {
	l.mu.Lock()
	defer l.mu.Unlock()
	v := l.view
	v.CheckDown = slices.Clone(v.CheckDown)
	v.Guarded = slices.Clone(v.Guarded)
	v.Refusals = slices.Clone(l.refusals)
	return v
}

// newView builds the view of one render from the membership it started
// from, the guard's result and the admitted snapshot it rendered.
func newView(at time.Time, members catalog.Snapshot, res guardResult, routed catalog.Snapshot) View {
	v := View{At: at, Routed: routed}
	rendered := map[instKey]catalog.State{}
	for _, n := range res.snap.Nodes {
		for _, a := range n.Applications {
			rendered[instKey{n.Name, a.Name}] = a.State
		}
	}
	for _, n := range members.Nodes {
		if n.Role != catalog.RoleBackend {
			continue
		}
		for _, a := range n.Applications {
			k := instKey{n.Name, a.Name}
			if s, ok := rendered[k]; ok && a.State.Serving() && s == catalog.StateDown {
				v.CheckDown = append(v.CheckDown, Instance{Application: a.Name, Node: n.Name})
			}
		}
	}
	for _, k := range res.state.guarded() {
		v.Guarded = append(v.Guarded, Instance{Application: k.app, Node: k.node})
	}
	slices.SortFunc(v.CheckDown, func(a, b Instance) int {
		return cmp.Or(cmp.Compare(a.Application, b.Application), cmp.Compare(a.Node, b.Node))
	})
	return v
}
