package lb

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/scrimplb/scrimp/catalog"
)

// GuardConfig tunes the mass-loss guard. When most of an application's
// backends are lost at once, the cause is more often the load balancer's
// own network (a partition, a flapping link, lost gossip) than a real mass
// failure, and emptying the upstream would turn that trouble into an
// outage. So the lost backends stay in the configuration as they were, for
// Grace, behind the proxy's passive checks, which skip the ones that really
// are dead request by request. A single failure (one of several backends)
// is still removed at once. A zero field means its value in
// DefaultGuardConfig.
//
// Lost means taken out against the backend's will: its node vanished from
// the membership (left without draining, or declared dead), or the load
// balancer's own checks fail while the membership says it serves. Both
// count because a network partition shows first as failing checks, then as
// dead nodes. Never lost: a backend that drains, one its own health check
// reports down, or an application a live node stopped advertising; the
// backend asked for those.
//
// The load balancer's checks also tell the network's fault from the
// backend's. A check that is refused (the port refuses connections, or the
// application answers with an error status) proves that the load balancer
// reached the backend's host, so that loss is real: it is removed at once,
// never guarded, and does not count toward Share. Only losses without such
// proof (vanished without a refused check, checks timing out or hosts
// unreachable) count and are guarded. So a leave without drain followed by
// a crash is two removals, not a mass loss, and processes that crash on
// live hosts are gone in about a second however many they are.
//
// Only backends proven to serve before the loss are guarded: a loss the
// guard keeps must be of a real backend, not of a name in gossip. A member
// that advertises hundreds of servers that never answer, then vanishes,
// must not have them kept: they are left out once their checks fail and
// removed at once when they vanish, and they count neither as lost nor as
// backends the application had (so they cannot hide a real mass loss
// either). Proven means:
//   - checked instances (TCP and HTTP applications, checks on): a check
//     of the load balancer's own passed since it started checking the
//     instance at its current address, port and health path. A backend
//     that joined a moment ago and was not checked yet is not proven;
//     every real one is within about one check Interval.
//   - instances the load balancer cannot check (checks disabled, UDP
//     applications): routed without a break for at least Window before
//     the loss. With no check there is no evidence but time; Window is
//     how long failure detection may take to declare a mass loss, so a
//     set that came and went within it was never established. Such a
//     guard is never renewed (no check of it can pass), so what a member
//     can make the guard keep is bounded by Grace, and the member could
//     have kept it routed itself for that long anyway.
//
// A server at an address where something does answer the check is proven
// in this sense: the load balancer cannot tell it from a backend. Keeping
// such members out is the cluster key's and the ownership rules' work.
//
// Guarded backends keep being checked, also when their nodes vanished; one
// whose check is refused leaves the guard at once, one whose checks time
// out stays for Grace, and one whose own last check passed when Grace runs
// out is kept for another Grace: the load balancer reaches it, whatever
// gossip says, so when only gossip is cut off (a firewalled gossip port,
// seeds unreachable) the running configuration keeps serving. A guard is
// renewed only by that passing check of the instance itself, never because
// its application lost more backends. A backend already left out by
// failing checks when its node vanished is not put back: only what the
// last configuration routed to is guarded.
//
// The price: when backends really are cut off from the load balancer, the
// proxy's passive checks, not the load balancer, keep requests away from
// them for Grace. Losses that trickle in are removed one by one until they
// add up to a mass loss within Window; then the ones removed earlier are
// put back too. A mass loss within a check interval of the load
// balancer's start (nothing proven yet) is not guarded.
type GuardConfig struct {
	// Disabled turns the guard off: every lost backend is removed at once.
	Disabled bool
	// Share is the fraction of an application's backends whose loss
	// within Window, if exceeded, makes the guard keep them.
	Share float64
	// Min is the fewest backends an application must have had for the
	// guard to act; a lone backend that is lost is removed.
	Min int
	// Window is how close together losses must be to count as one
	// event: failure detection does not declare every node dead in the
	// same instant.
	Window time.Duration
	// Grace is how long guarded backends stay in the configuration
	// without coming back before they are removed.
	Grace time.Duration
}

// DefaultGuardConfig returns the default guard settings: more than half of
// at least 2 backends lost within 10 s are kept for 60 s.
func DefaultGuardConfig() GuardConfig {
	return GuardConfig{Share: 0.5, Min: 2, Window: 10 * time.Second, Grace: 60 * time.Second}
}

// withDefaults returns g with every zero field set to its default.
func (g GuardConfig) withDefaults() GuardConfig {
	d := DefaultGuardConfig()
	g.Share = orDefault(g.Share, d.Share)
	g.Min = orDefault(g.Min, d.Min)
	g.Window = orDefault(g.Window, d.Window)
	g.Grace = orDefault(g.Grace, d.Grace)
	return g
}

// Validate reports settings that cannot be meant. Zero values are valid and
// mean the defaults.
func (g GuardConfig) Validate() error {
	var share error
	if g.Share < 0 || g.Share >= 1 {
		share = fmt.Errorf("share: %v is not in [0, 1)", g.Share)
	}
	return errors.Join(
		share,
		negative("min", g.Min),
		negative("window", g.Window),
		negative("grace", g.Grace),
	)
}

// instance is one application instance as it was rendered.
type instance struct {
	node catalog.Node // without Applications
	app  catalog.Application
}

// instStatus is what the current membership and checks say of an instance
// that was routed.
type instStatus int

const (
	statusRoutable  instStatus = iota // present, serving, passing the checks
	statusVanished                    // its node is gone from the membership
	statusFailing                     // serving per the membership, failing the load balancer's checks
	statusWithdrawn                   // its live backend stopped offering it (draining, down, removed)
	statusRefused                     // lost, and its checks prove the host was reached (see refused)
)

// String returns the status as written in logs.
func (s instStatus) String() string {
	switch s {
	case statusRoutable:
		return "back"
	case statusVanished:
		return "vanished from the membership"
	case statusFailing:
		return "fails the load balancer's checks"
	case statusWithdrawn:
		return "withdrawn by its backend"
	case statusRefused:
		return "refused by its backend"
	}
	return fmt.Sprintf("status(%d)", int(s))
}

// loss is an instance that was routed and has been lost.
type loss struct {
	inst    instance
	status  instStatus // statusVanished or statusFailing
	at      time.Time  // the render that first found it lost
	until   time.Time  // guarded until then; zero when not guarded
	expired bool       // the grace period ran out: never guarded again until it returns
	// refused: a check of it was refused since it was lost (or just
	// before), so the loss is the backend's, not the network's: it is
	// neither counted nor guarded, until it returns.
	refused bool
	// proven: it was proven to serve when it was lost (see GuardConfig).
	// An unproven loss is neither counted nor guarded.
	proven bool
}

func (l loss) guarded() bool { return !l.until.IsZero() && !l.expired && !l.refused && l.proven }

// counts reports whether the loss counts toward a mass loss: proven, and
// not explained by a refusal.
func (l loss) counts() bool { return l.proven && !l.refused }

// guardState is what the guard remembers from one render to the next. The
// zero value is the state before the first render.
type guardState struct {
	// routed are the instances the last render routed to, guarded ones
	// included.
	routed map[instKey]instance
	// since is when each of routed was first routed without a break
	// since: the proof of instances the load balancer does not check.
	since map[instKey]time.Time
	// lost are instances lost recently (within Window) or guarded.
	lost map[instKey]loss
}

// guarded returns the instances guarded now, sorted.
func (s guardState) guarded() []instKey {
	var out []instKey
	for k, l := range s.lost {
		if l.guarded() {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, compareKeys)
	return out
}

// nextExpiry returns when the first guard runs out; ok is false when
// nothing is guarded.
func (s guardState) nextExpiry() (at time.Time, ok bool) {
	for _, l := range s.lost {
		if l.guarded() && (!ok || l.until.Before(at)) {
			at, ok = l.until, true
		}
	}
	return at, ok
}

func compareKeys(a, b instKey) int {
	return cmp.Or(cmp.Compare(a.app, b.app), cmp.Compare(a.node, b.node))
}

// guardEventKind says what happened to guarded instances.
type guardEventKind int

const (
	guardStarted guardEventKind = iota // a mass loss: instances are now guarded
	guardGrew                          // more instances lost during a mass loss, guarded too
	guardRenewed                       // the grace period ran out, but the instances pass the checks: kept
	guardExpired                       // the grace period ran out: instances removed
	guardEnded                         // a guarded instance came back, was withdrawn or refused
)

// guardEvent is something the loop logs.
type guardEvent struct {
	kind   guardEventKind
	app    string
	nodes  []string   // the instances concerned, sorted
	lost   int        // guardStarted, guardGrew: instances lost within the window
	of     int        // guardStarted, guardGrew: instances routed before
	until  time.Time  // guardStarted, guardGrew: when the new guards run out
	status instStatus // guardEnded: why the guard ended
}

// guardResult is one render's view after checks and guard.
type guardResult struct {
	snap      catalog.Snapshot // what to render
	state     guardState       // to pass to the next step
	events    []guardEvent     // sorted by application
	checkDown int              // instances marked down because their checks fail
	// kept are the guarded instances whose nodes vanished: the load
	// balancer keeps checking them, so that a refusal ends their guard.
	kept []instance
}

// step computes what to render from the membership snap, what the load
// balancer's checks say (checked; instances absent from it are up and
// unproven; nil when checks are disabled) and the previous render's state. It is pure: prev is not modified and the result
// depends only on the arguments, so every rule is tested without clocks or
// networks.
//
// Instances that are down by the checks are rendered with State down (so
// the generator leaves them out) unless guarded. An application whose
// routed instances were lost without proof that the network is not to
// blame, more than Share of at least Min within Window, keeps those until
// Grace after the loss was recognised, until they come back, or until a
// check of them is refused. Only instances proven to serve (see
// GuardConfig) count or are kept.
func (g GuardConfig) step(prev guardState, snap catalog.Snapshot, checked map[instKey]health, now time.Time) guardResult {
	if !g.Disabled {
		g = g.withDefaults()
	}
	nodes := map[string]*catalog.Node{}
	for i := range snap.Nodes {
		if snap.Nodes[i].Role == catalog.RoleBackend {
			nodes[snap.Nodes[i].Name] = &snap.Nodes[i]
		}
	}
	status := func(k instKey) instStatus {
		n, ok := nodes[k.node]
		if !ok {
			return statusVanished
		}
		for _, a := range n.Applications {
			switch {
			case a.Name != k.app:
			case !a.State.Serving():
				return statusWithdrawn
			case checked[k].down:
				return statusFailing
			default:
				return statusRoutable
			}
		}
		return statusWithdrawn
	}

	proven := func(k instKey) bool {
		if inst, ok := prev.routed[k]; ok && checked != nil {
			if _, checkable := probeFor(inst.node, inst.app); checkable {
				return checked[k].proven
			}
		}
		since, ok := prev.since[k]
		return ok && now.Sub(since) >= g.Window
	}

	next := guardState{lost: map[instKey]loss{}, since: map[instKey]time.Time{}}
	res := guardResult{}
	if !g.Disabled {
		res.events = g.track(prev, next.lost, status, checked, proven, now)
	}
	res.snap, res.checkDown = render(snap, checked, next.lost)
	next.routed = routedIn(res.snap)
	for k := range next.routed {
		next.since[k] = now
		if _, ok := prev.routed[k]; ok {
			if since, ok := prev.since[k]; ok {
				next.since[k] = since
			}
		}
	}
	res.state = next
	for _, k := range next.guarded() {
		if l := next.lost[k]; l.status == statusVanished {
			res.kept = append(res.kept, l.inst)
		}
	}
	return res
}

// track fills lost from prev, the current status of every instance, what
// its checks say and whether it was proven to serve (asked only of
// instances prev routed), decides which are guarded and returns what to
// log.
func (g GuardConfig) track(prev guardState, lost map[instKey]loss, status func(instKey) instStatus,
	checked map[instKey]health, proven func(instKey) bool, now time.Time) []guardEvent {
	var events []guardEvent
	type endKey struct {
		app    string
		status instStatus
	}
	ended := map[endKey][]string{}

	// Losses still lost carry over; the rest came back or were withdrawn.
	for k, l := range prev.lost {
		was := l.guarded()
		s := status(k)
		if s != statusVanished && s != statusFailing {
			if was {
				ended[endKey{k.app, s}] = append(ended[endKey{k.app, s}], k.node)
			}
			continue
		}
		l.status = s
		l.refused = l.refused || checked[k].refused
		if was && !l.guarded() {
			ended[endKey{k.app, statusRefused}] = append(ended[endKey{k.app, statusRefused}], k.node)
		}
		lost[k] = l
	}
	// Newly lost: routed last time, lost now.
	for k, inst := range prev.routed {
		if _, ok := lost[k]; ok {
			continue
		}
		if s := status(k); s == statusVanished || s == statusFailing {
			lost[k] = loss{inst: inst, status: s, at: now, refused: checked[k].refused, proven: proven(k)}
		}
	}
	// Guards run out; old losses no longer count.
	expired := map[string][]string{}
	gone := map[instKey]bool{} // expired now: no longer part of the application
	renewed := map[string][]string{}
	for k, l := range lost {
		if l.guarded() && !now.Before(l.until) && checked[k].passing {
			// The load balancer still reaches it: gossip, not the
			// backend, is what failed (a blocked gossip port, say), and
			// the configuration that serves it stays.
			l.until = now.Add(g.Grace)
			lost[k] = l
			renewed[k.app] = append(renewed[k.app], k.node)
			continue
		}
		if l.guarded() && !now.Before(l.until) {
			l.expired = true
			lost[k] = l
			expired[k.app] = append(expired[k.app], k.node)
			gone[k] = true
		}
		if !l.guarded() && now.Sub(l.at) > g.Window {
			delete(lost, k)
		}
	}

	// Tally each application: the proven instances it had (routed last
	// time, or lost within the window) and those of them lost for no
	// known reason. Unproven ones count for neither: a crowd of names
	// that never served must not start a guard, nor hide a real mass
	// loss by swelling the application.
	type tally struct {
		had      map[instKey]bool
		lost     []instKey
		guarding bool
	}
	apps := map[string]*tally{}
	get := func(app string) *tally {
		t, ok := apps[app]
		if !ok {
			t = &tally{had: map[instKey]bool{}}
			apps[app] = t
		}
		return t
	}
	for k := range prev.routed {
		if l, ok := lost[k]; gone[k] || ok && !l.proven || !ok && !proven(k) {
			continue
		}
		get(k.app).had[k] = true
	}
	for k, l := range lost {
		if l.expired || !l.proven {
			continue
		}
		t := get(k.app)
		t.had[k] = true
		if !l.counts() {
			continue
		}
		t.lost = append(t.lost, k)
		if l.guarded() {
			t.guarding = true
		}
	}
	for _, app := range slices.Sorted(maps.Keys(apps)) {
		t := apps[app]
		if len(t.had) < g.Min || float64(len(t.lost)) <= g.Share*float64(len(t.had)) {
			continue
		}
		var newly []string
		for _, k := range t.lost {
			if l := lost[k]; l.until.IsZero() {
				l.until = now.Add(g.Grace)
				lost[k] = l
				newly = append(newly, k.node)
			}
		}
		if len(newly) == 0 {
			continue
		}
		kind := guardStarted
		if t.guarding {
			kind = guardGrew
		}
		slices.Sort(newly)
		events = append(events, guardEvent{kind: kind, app: app, nodes: newly, lost: len(t.lost), of: len(t.had), until: now.Add(g.Grace)})
	}
	for _, app := range slices.Sorted(maps.Keys(renewed)) {
		events = append(events, guardEvent{kind: guardRenewed, app: app, nodes: slices.Sorted(slices.Values(renewed[app])), until: now.Add(g.Grace)})
	}
	for _, app := range slices.Sorted(maps.Keys(expired)) {
		events = append(events, guardEvent{kind: guardExpired, app: app, nodes: slices.Sorted(slices.Values(expired[app]))})
	}
	endOrder := func(a, b endKey) int { return cmp.Or(cmp.Compare(a.app, b.app), cmp.Compare(a.status, b.status)) }
	for _, k := range slices.SortedFunc(maps.Keys(ended), endOrder) {
		events = append(events, guardEvent{kind: guardEnded, app: k.app, nodes: slices.Sorted(slices.Values(ended[k])), status: k.status})
	}
	slices.SortStableFunc(events, func(a, b guardEvent) int { return cmp.Compare(a.app, b.app) })
	return events
}

// render returns snap with the instances down by the checks marked down,
// unless guarded, and with the guarded instances of vanished nodes added
// back as they were last rendered. It copies what it changes: snap is
// shared.
func render(snap catalog.Snapshot, checked map[instKey]health, lost map[instKey]loss) (catalog.Snapshot, int) {
	nodes := make([]catalog.Node, 0, len(snap.Nodes))
	marked := 0
	for _, n := range snap.Nodes {
		if n.Role == catalog.RoleBackend && len(checked) > 0 {
			var apps []catalog.Application
			for i, a := range n.Applications {
				k := instKey{n.Name, a.Name}
				if !a.State.Serving() || !checked[k].down || lost[k].guarded() {
					continue
				}
				if apps == nil {
					apps = slices.Clone(n.Applications)
				}
				apps[i].State = catalog.StateDown
				marked++
			}
			if apps != nil {
				n.Applications = apps
			}
		}
		nodes = append(nodes, n)
	}
	back := map[string]*catalog.Node{}
	for _, l := range lost {
		if !l.guarded() || l.status != statusVanished {
			continue
		}
		n, ok := back[l.inst.node.Name]
		if !ok {
			node := l.inst.node
			n = &node
			back[n.Name] = n
		}
		n.Applications = append(n.Applications, l.inst.app)
	}
	for _, n := range back {
		slices.SortFunc(n.Applications, func(a, b catalog.Application) int { return cmp.Compare(a.Name, b.Name) })
		nodes = append(nodes, *n)
	}
	return catalog.NewSnapshot(nodes), marked
}

// routedIn returns the instances snap routes to: serving applications of
// backend nodes.
func routedIn(snap catalog.Snapshot) map[instKey]instance {
	out := map[instKey]instance{}
	for _, n := range snap.Nodes {
		if n.Role != catalog.RoleBackend {
			continue
		}
		bare := n
		bare.Applications = nil
		for _, a := range n.Applications {
			if a.State.Serving() {
				out[instKey{n.Name, a.Name}] = instance{node: bare, app: a}
			}
		}
	}
	return out
}
