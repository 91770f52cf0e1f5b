package lb

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/scrimplb/scrimp/catalog"
)

// bnode returns backend node name ("b3" is at 10.0.0.3) offering apps,
// each "app" (up) or "app=state".
func bnode(name string, apps ...string) catalog.Node {
	n, _ := strconv.Atoi(strings.TrimLeft(name, "abcdefghijklmnopqrstuvwxyz"))
	node := catalog.Node{Name: name, Addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(n)}), Role: catalog.RoleBackend}
	for i, a := range apps {
		app, state, _ := strings.Cut(a, "=")
		node.Applications = append(node.Applications, catalog.Application{
			Name: app, ListenPort: 8000 + i, ApplicationPort: 9000 + i, Protocol: catalog.ProtocolHTTP,
			State: catalog.State(state),
		})
	}
	return node
}

// webs returns backend nodes b1..bn offering "web".
func webs(n int) []catalog.Node {
	var out []catalog.Node
	for i := 1; i <= n; i++ {
		out = append(out, bnode(fmt.Sprintf("b%d", i), "web"))
	}
	return out
}

// pick returns the nodes of all with the given names, in order.
func pick(all []catalog.Node, names ...string) []catalog.Node {
	var out []catalog.Node
	for _, n := range all {
		if slices.Contains(names, n.Name) {
			out = append(out, n)
		}
	}
	return out
}

// healthOf returns the checks' view: down instances fail by timeouts,
// refused ones are down and refused, up ones passed their last check (and
// so are proven); instances in none of these have not been checked.
func healthOf(down, refused []string, up ...string) map[instKey]health {
	out := map[instKey]health{}
	for _, s := range up {
		node, app, _ := strings.Cut(s, "/")
		out[instKey{node, app}] = health{passing: true, proven: true}
	}
	for _, s := range down {
		node, app, _ := strings.Cut(s, "/")
		out[instKey{node, app}] = health{down: true}
	}
	for _, s := range refused {
		node, app, _ := strings.Cut(s, "/")
		out[instKey{node, app}] = health{down: true, refused: true}
	}
	return out
}

// crowd returns 16 backend nodes f5..f20 offering "web": the fake servers
// of issue 13.
func crowd() []catalog.Node {
	var out []catalog.Node
	for i := 5; i <= 20; i++ {
		out = append(out, bnode(fmt.Sprintf("f%d", i), "web"))
	}
	return out
}

// withCrowd returns nodes and the crowd.
func withCrowd(nodes []catalog.Node) []catalog.Node {
	return append(slices.Clone(nodes), crowd()...)
}

// udp returns copies of nodes whose applications are UDP: the load
// balancer never checks those.
func udp(nodes []catalog.Node) []catalog.Node {
	out := slices.Clone(nodes)
	for i := range out {
		out[i].Applications = slices.Clone(out[i].Applications)
		for j := range out[i].Applications {
			out[i].Applications[j].Protocol = catalog.ProtocolUDP
		}
	}
	return out
}

// all returns every instance of nodes, "node/app", sorted.
func all(nodes []catalog.Node) []string {
	var out []string
	for _, n := range nodes {
		for _, a := range n.Applications {
			out = append(out, n.Name+"/"+a.Name)
		}
	}
	slices.Sort(out)
	return out
}

// prove marks every instance in proven as proven in h, adding those h
// lacks: a checker's proof lasts as long as the checker (this address,
// port and health path), whatever its later results.
func prove(h map[instKey]health, proven map[string]bool) map[instKey]health {
	for s := range proven {
		node, app, _ := strings.Cut(s, "/")
		e := h[instKey{node, app}]
		e.proven = true
		h[instKey{node, app}] = e
	}
	return h
}

// provenHealth returns the checks' view of instances ("node/app") proven
// earlier, whose last checks neither passed nor failed enough to count.
func provenHealth(instances ...string) map[instKey]health {
	proven := map[string]bool{}
	for _, s := range instances {
		proven[s] = true
	}
	return prove(map[instKey]health{}, proven)
}

func keyStrings[V any](m map[instKey]V) []string {
	var out []string
	for k := range m {
		out = append(out, k.String())
	}
	slices.Sort(out)
	return out
}

// guardStep is one render in a guard scenario and what it must yield.
type guardStep struct {
	at      time.Duration  // since the start of the scenario
	nodes   []catalog.Node // the membership
	down    []string       // instances failing the load balancer's checks by timeouts, "node/app"
	refused []string       // instances failing them by refusals
	up      []string       // instances passing them; proven from then on
	// unchecked: the load balancer's checks are disabled: step is given
	// no health at all, and down, refused and up must be empty.
	unchecked bool
	routed    []string // want, if not nil: instances the render routes to, sorted
	guarded   []string // want: instances guarded, sorted
	events    []string // want, if not nil: "kind app nodes", in order
}

func TestGuardStep(t *testing.T) {
	four := webs(4)
	mixed := []catalog.Node{bnode("b1", "api", "web"), bnode("b2", "api", "web"), bnode("b3", "web"), bnode("b4", "web"), bnode("b5", "api"), bnode("b6", "api")}
	long := GuardConfig{Window: 10 * time.Second, Grace: 5 * time.Second}
	tests := []struct {
		name  string
		cfg   GuardConfig
		steps []guardStep
	}{
		{"first render routes everything", GuardConfig{}, []guardStep{
			{at: 0, nodes: four, up: all(four), routed: []string{"b1/web", "b2/web", "b3/web", "b4/web"}, events: []string{}},
		}},
		{"one of four vanishing is removed at once", GuardConfig{}, []guardStep{
			{at: 0, nodes: four, up: all(four), routed: []string{"b1/web", "b2/web", "b3/web", "b4/web"}},
			{at: time.Second, nodes: pick(four, "b1", "b2", "b3"), routed: []string{"b1/web", "b2/web", "b3/web"}, events: []string{}},
		}},
		{"three of four vanishing at once are kept, then removed after grace", GuardConfig{}, []guardStep{
			{at: 0, nodes: four, up: all(four), routed: []string{"b1/web", "b2/web", "b3/web", "b4/web"}},
			{at: time.Second, nodes: pick(four, "b1"), routed: []string{"b1/web", "b2/web", "b3/web", "b4/web"},
				guarded: []string{"b2/web", "b3/web", "b4/web"}, events: []string{"started web [b2 b3 b4] 3/4"}},
			{at: 30 * time.Second, nodes: pick(four, "b1"), routed: []string{"b1/web", "b2/web", "b3/web", "b4/web"},
				guarded: []string{"b2/web", "b3/web", "b4/web"}, events: []string{}},
			{at: 61 * time.Second, nodes: pick(four, "b1"), routed: []string{"b1/web"}, events: []string{"expired web [b2 b3 b4]"}},
			{at: 62 * time.Second, nodes: pick(four, "b1"), routed: []string{"b1/web"}, events: []string{}},
		}},
		{"lost by gossip but passing the checks: kept beyond grace until the checks fail", GuardConfig{}, []guardStep{
			{at: 0, nodes: four, up: all(four)},
			{at: time.Second, nodes: pick(four, "b1"), up: []string{"b1/web", "b2/web", "b3/web", "b4/web"},
				guarded: []string{"b2/web", "b3/web", "b4/web"}, events: []string{"started web [b2 b3 b4] 3/4"}},
			{at: 61 * time.Second, nodes: pick(four, "b1"), up: []string{"b1/web", "b2/web", "b3/web", "b4/web"},
				routed: []string{"b1/web", "b2/web", "b3/web", "b4/web"}, guarded: []string{"b2/web", "b3/web", "b4/web"}, events: []string{"renewed web [b2 b3 b4]"}},
			{at: 10 * time.Minute, nodes: pick(four, "b1"), up: []string{"b1/web", "b2/web", "b3/web", "b4/web"},
				routed: []string{"b1/web", "b2/web", "b3/web", "b4/web"}, guarded: []string{"b2/web", "b3/web", "b4/web"}, events: []string{"renewed web [b2 b3 b4]"}},
			// b2 stops answering (timeouts): it goes when its grace ends.
			{at: 10*time.Minute + time.Second, nodes: pick(four, "b1"), up: []string{"b1/web", "b3/web", "b4/web"}, down: []string{"b2/web"},
				routed: []string{"b1/web", "b2/web", "b3/web", "b4/web"}, guarded: []string{"b2/web", "b3/web", "b4/web"}, events: []string{}},
			{at: 11*time.Minute + time.Second, nodes: pick(four, "b1"), up: []string{"b1/web", "b3/web", "b4/web"}, down: []string{"b2/web"},
				routed: []string{"b1/web", "b3/web", "b4/web"}, guarded: []string{"b3/web", "b4/web"}, events: []string{"renewed web [b3 b4]", "expired web [b2]"}},
		}},
		{"guarded backends that come back are routed from the membership", GuardConfig{}, []guardStep{
			{at: 0, nodes: four, up: all(four)},
			{at: time.Second, nodes: pick(four, "b1"), guarded: []string{"b2/web", "b3/web", "b4/web"}},
			{at: 5 * time.Second, nodes: pick(four, "b1", "b2", "b3"), routed: []string{"b1/web", "b2/web", "b3/web", "b4/web"},
				guarded: []string{"b4/web"}, events: []string{"ended web [b2 b3] back"}},
			{at: 6 * time.Second, nodes: four, routed: []string{"b1/web", "b2/web", "b3/web", "b4/web"}, events: []string{"ended web [b4] back"}},
		}},
		{"exactly half is not more than half", GuardConfig{}, []guardStep{
			{at: 0, nodes: four, up: all(four)},
			{at: time.Second, nodes: pick(four, "b1", "b2"), routed: []string{"b1/web", "b2/web"}},
		}},
		{"both of two vanishing are kept", GuardConfig{}, []guardStep{
			{at: 0, nodes: webs(2), up: all(webs(2))},
			{at: time.Second, nodes: nil, routed: []string{"b1/web", "b2/web"}, guarded: []string{"b1/web", "b2/web"}},
		}},
		{"a lone backend is below the minimum", GuardConfig{}, []guardStep{
			{at: 0, nodes: webs(1), up: all(webs(1))},
			{at: time.Second, nodes: nil, routed: []string{}},
		}},
		{"draining backends that leave are never guarded", GuardConfig{}, []guardStep{
			{at: 0, nodes: four, up: all(four)},
			{at: time.Second, nodes: []catalog.Node{four[0], bnode("b2", "web=draining"), bnode("b3", "web=draining"), bnode("b4", "web=draining")},
				routed: []string{"b1/web"}},
			{at: 2 * time.Second, nodes: pick(four, "b1"), routed: []string{"b1/web"}, events: []string{}},
		}},
		{"backends down by their own checks are never guarded", GuardConfig{}, []guardStep{
			{at: 0, nodes: four, up: all(four)},
			{at: time.Second, nodes: []catalog.Node{four[0], bnode("b2", "web=down"), bnode("b3", "web=down"), bnode("b4", "web=down")},
				routed: []string{"b1/web"}},
		}},
		{"an application a live node stops offering is not guarded", GuardConfig{}, []guardStep{
			{at: 0, nodes: four, up: all(four)},
			{at: time.Second, nodes: []catalog.Node{four[0], bnode("b2"), bnode("b3", "api"), bnode("b4")},
				routed: []string{"b1/web", "b3/api"}},
		}},
		{"losses spread within the window add up", GuardConfig{}, []guardStep{
			{at: 0, nodes: four, up: all(four)},
			{at: 1 * time.Second, nodes: pick(four, "b1", "b2", "b3"), routed: []string{"b1/web", "b2/web", "b3/web"}},
			{at: 4 * time.Second, nodes: pick(four, "b1", "b2"), routed: []string{"b1/web", "b2/web"}},
			// The third loss makes three of four: the earlier two are
			// put back as well.
			{at: 7 * time.Second, nodes: pick(four, "b1"), routed: []string{"b1/web", "b2/web", "b3/web", "b4/web"},
				guarded: []string{"b2/web", "b3/web", "b4/web"}, events: []string{"started web [b2 b3 b4] 3/4"}},
		}},
		{"losses spread beyond the window do not", GuardConfig{}, []guardStep{
			{at: 0, nodes: four, up: all(four)},
			{at: 1 * time.Second, nodes: pick(four, "b1", "b2", "b3"), routed: []string{"b1/web", "b2/web", "b3/web"}},
			{at: 12 * time.Second, nodes: pick(four, "b1", "b2"), routed: []string{"b1/web", "b2/web"}},
			{at: 23 * time.Second, nodes: pick(four, "b1"), routed: []string{"b1/web"}},
		}},
		{"one failing check of four is left out", GuardConfig{}, []guardStep{
			{at: 0, nodes: four, up: all(four)},
			{at: time.Second, nodes: four, down: []string{"b2/web"}, routed: []string{"b1/web", "b3/web", "b4/web"}},
			{at: 2 * time.Second, nodes: four, routed: []string{"b1/web", "b2/web", "b3/web", "b4/web"}},
		}},
		{"three failing checks of four are kept, and leave the guard when they pass", GuardConfig{}, []guardStep{
			{at: 0, nodes: four, up: all(four)},
			{at: time.Second, nodes: four, down: []string{"b2/web", "b3/web", "b4/web"},
				routed: []string{"b1/web", "b2/web", "b3/web", "b4/web"}, guarded: []string{"b2/web", "b3/web", "b4/web"}},
			{at: 2 * time.Second, nodes: four, down: []string{"b4/web"},
				routed: []string{"b1/web", "b2/web", "b3/web", "b4/web"}, guarded: []string{"b4/web"}},
			{at: 3 * time.Second, nodes: four, routed: []string{"b1/web", "b2/web", "b3/web", "b4/web"}},
		}},
		{"failing checks then vanishing stays one guarded loss", GuardConfig{}, []guardStep{
			{at: 0, nodes: four, up: all(four)},
			{at: time.Second, nodes: four, down: []string{"b2/web", "b3/web", "b4/web"}, guarded: []string{"b2/web", "b3/web", "b4/web"}},
			{at: 5 * time.Second, nodes: pick(four, "b1"), routed: []string{"b1/web", "b2/web", "b3/web", "b4/web"},
				guarded: []string{"b2/web", "b3/web", "b4/web"}, events: []string{}},
			{at: 62 * time.Second, nodes: pick(four, "b1"), routed: []string{"b1/web"}, events: []string{"expired web [b2 b3 b4]"}},
		}},
		{"a guarded backend that drains leaves the guard", GuardConfig{}, []guardStep{
			{at: 0, nodes: four, up: all(four)},
			{at: time.Second, nodes: four, down: []string{"b2/web", "b3/web", "b4/web"}, guarded: []string{"b2/web", "b3/web", "b4/web"}},
			{at: 2 * time.Second, nodes: []catalog.Node{four[0], four[1], four[2], bnode("b4", "web=draining")}, down: []string{"b2/web", "b3/web"},
				routed: []string{"b1/web", "b2/web", "b3/web"}, guarded: []string{"b2/web", "b3/web"}, events: []string{"ended web [b4] withdrawn by its backend"}},
		}},
		{"a backend already failing its checks is not put back when it vanishes", GuardConfig{}, []guardStep{
			{at: 0, nodes: four, up: all(four)},
			{at: time.Second, nodes: four, down: []string{"b4/web"}, routed: []string{"b1/web", "b2/web", "b3/web"}},
			{at: 20 * time.Second, nodes: pick(four, "b1", "b2", "b3"), routed: []string{"b1/web", "b2/web", "b3/web"}},
			// b2 and b3 make two of three: guarded, without b4.
			{at: 21 * time.Second, nodes: pick(four, "b1"), routed: []string{"b1/web", "b2/web", "b3/web"}, guarded: []string{"b2/web", "b3/web"}},
		}},
		{"more losses during a mass loss are kept too", GuardConfig{}, []guardStep{
			{at: 0, nodes: webs(5), up: all(webs(5))},
			{at: time.Second, nodes: pick(webs(5), "b1", "b2"), guarded: []string{"b3/web", "b4/web", "b5/web"}},
			// Beyond the window, but the application is still guarded:
			// five of five lost.
			{at: 20 * time.Second, nodes: pick(webs(5), "b1"), guarded: []string{"b2/web", "b3/web", "b4/web", "b5/web"},
				routed: []string{"b1/web", "b2/web", "b3/web", "b4/web", "b5/web"}, events: []string{"grew web [b2] 4/5"}},
		}},
		{"an expired guard is not renewed within the window", long, []guardStep{
			{at: 0, nodes: four, up: all(four)},
			{at: time.Second, nodes: pick(four, "b1"), guarded: []string{"b2/web", "b3/web", "b4/web"}},
			{at: 7 * time.Second, nodes: pick(four, "b1"), routed: []string{"b1/web"}, events: []string{"expired web [b2 b3 b4]"}},
			{at: 8 * time.Second, nodes: pick(four, "b1"), routed: []string{"b1/web"}, events: []string{}},
		}},
		{"losses as a guard expires are judged against what remains", GuardConfig{}, []guardStep{
			{at: 0, nodes: webs(6), up: all(webs(6))},
			{at: time.Second, nodes: pick(webs(6), "b1", "b2"), guarded: []string{"b3/web", "b4/web", "b5/web", "b6/web"}},
			// b3-b6 expire; b1 and b2 are lost in the same render: two
			// of the two left.
			{at: 62 * time.Second, nodes: nil, routed: []string{"b1/web", "b2/web"}, guarded: []string{"b1/web", "b2/web"},
				events: []string{"started web [b1 b2] 2/2", "expired web [b3 b4 b5 b6]"}},
		}},
		{"three of four refusing their checks are removed at once", GuardConfig{}, []guardStep{
			{at: 0, nodes: four, up: all(four)},
			{at: time.Second, nodes: four, refused: []string{"b2/web", "b3/web", "b4/web"}, routed: []string{"b1/web"}, events: []string{}},
		}},
		{"a vanished backend whose last check was refused does not count", GuardConfig{}, []guardStep{
			{at: 0, nodes: four, up: all(four)},
			// b2's port refused before its node left: two unexplained
			// losses of four, not more than half.
			{at: time.Second, nodes: pick(four, "b1"), refused: []string{"b2/web"}, routed: []string{"b1/web"}},
		}},
		{"a refusal stays on record after the checks stop", GuardConfig{}, []guardStep{
			{at: 0, nodes: four, up: all(four)},
			{at: time.Second, nodes: pick(four, "b1", "b3", "b4"), refused: []string{"b2/web"}, routed: []string{"b1/web", "b3/web", "b4/web"}},
			{at: 3 * time.Second, nodes: pick(four, "b1"), routed: []string{"b1/web"}},
		}},
		{"a guarded backend that refuses leaves the guard", GuardConfig{}, []guardStep{
			{at: 0, nodes: four, up: all(four)},
			{at: time.Second, nodes: pick(four, "b1"), guarded: []string{"b2/web", "b3/web", "b4/web"}},
			{at: 2 * time.Second, nodes: pick(four, "b1"), refused: []string{"b2/web"}, down: []string{"b3/web"},
				routed: []string{"b1/web", "b3/web", "b4/web"}, guarded: []string{"b3/web", "b4/web"},
				events: []string{"ended web [b2] refused by its backend"}},
		}},
		{"a leave and a crash in a row are not a mass loss", GuardConfig{}, []guardStep{
			{at: 0, nodes: webs(3), up: all(webs(3))},
			// b1 leaves without draining; b2 crashes: its port refuses.
			{at: 1 * time.Second, nodes: pick(webs(3), "b2", "b3"), routed: []string{"b2/web", "b3/web"}},
			{at: 2 * time.Second, nodes: pick(webs(3), "b2", "b3"), refused: []string{"b2/web"}, routed: []string{"b3/web"}, events: []string{}},
			{at: 6 * time.Second, nodes: pick(webs(3), "b3"), routed: []string{"b3/web"}, events: []string{}},
		}},
		{"applications are judged apart", GuardConfig{}, []guardStep{
			{at: 0, nodes: mixed, up: all(mixed)},
			// b1 and b2 vanish: two of four api instances (removed),
			// two of four web instances (removed); b3 too: three of
			// four web instances (kept).
			{at: time.Second, nodes: []catalog.Node{bnode("b4", "web"), bnode("b5", "api"), bnode("b6", "api")},
				routed:  []string{"b1/web", "b2/web", "b3/web", "b4/web", "b5/api", "b6/api"},
				guarded: []string{"b1/web", "b2/web", "b3/web"}},
		}},
		// Issue 13: a member set adds many servers that never answer
		// a check, then vanishes.
		{"never-proven members are removed at once on a mass loss", GuardConfig{}, []guardStep{
			{at: 0, nodes: four, up: all(four)},
			// Routed on arrival, not checked yet.
			{at: time.Second, nodes: withCrowd(four), routed: all(withCrowd(four))},
			{at: 2 * time.Second, nodes: four, routed: all(four), events: []string{}},
		}},
		{"never-proven members failing their checks are left out, and stay out when they vanish", GuardConfig{}, []guardStep{
			{at: 0, nodes: four, up: all(four)},
			{at: time.Second, nodes: withCrowd(four), routed: all(withCrowd(four))},
			{at: 2 * time.Second, nodes: withCrowd(four), down: all(crowd()), routed: all(four), events: []string{}},
			{at: 3 * time.Second, nodes: four, routed: all(four), events: []string{}},
		}},
		{"backends lost before their first check are removed at once", GuardConfig{}, []guardStep{
			{at: 0, nodes: four},
			{at: time.Second, nodes: pick(four, "b1"), routed: []string{"b1/web"}, events: []string{}},
		}},
		{"an unproven crowd does not hide a real mass loss", GuardConfig{}, []guardStep{
			{at: 0, nodes: four, up: all(four)},
			{at: time.Second, nodes: withCrowd(four)},
			{at: 2 * time.Second, nodes: withCrowd(pick(four, "b1")), routed: all(withCrowd(four)),
				guarded: []string{"b2/web", "b3/web", "b4/web"}, events: []string{"started web [b2 b3 b4] 3/4"}},
		}},
		{"proven backends lost with an unproven crowd are kept for grace, the crowd is not", GuardConfig{}, []guardStep{
			{at: 0, nodes: four, up: all(four)},
			{at: time.Second, nodes: withCrowd(four)},
			{at: 2 * time.Second, nodes: nil, routed: all(four), guarded: all(four), events: []string{"started web [b1 b2 b3 b4] 4/4"}},
			{at: 61 * time.Second, nodes: nil, routed: all(four), guarded: all(four), events: []string{}},
			{at: 62 * time.Second, nodes: nil, routed: []string{}, events: []string{"expired web [b1 b2 b3 b4]"}},
		}},
		{"a guard is renewed only by a passing check of its own, never by more losses", GuardConfig{}, []guardStep{
			{at: 0, nodes: webs(5), up: all(webs(5))},
			{at: time.Second, nodes: pick(webs(5), "b1", "b2"), guarded: []string{"b3/web", "b4/web", "b5/web"},
				events: []string{"started web [b3 b4 b5] 3/5"}},
			// Grace is over. b3 passes its check: renewed. b4 times out
			// and b5 has no result since: both go, although b1 and b2
			// are lost in the same render.
			{at: 61 * time.Second, nodes: nil, up: []string{"b3/web"}, down: []string{"b4/web"},
				routed: []string{"b1/web", "b2/web", "b3/web"}, guarded: []string{"b1/web", "b2/web", "b3/web"},
				events: []string{"grew web [b1 b2] 3/3", "renewed web [b3]", "expired web [b4 b5]"}},
		}},
		{"checks off: backends routed for a window are proven by time, kept for grace, never renewed", GuardConfig{}, []guardStep{
			{at: 0, nodes: four, unchecked: true},
			{at: 11 * time.Second, nodes: four, unchecked: true, routed: all(four), events: []string{}},
			{at: 12 * time.Second, nodes: pick(four, "b1"), unchecked: true, routed: all(four),
				guarded: []string{"b2/web", "b3/web", "b4/web"}, events: []string{"started web [b2 b3 b4] 3/4"}},
			{at: 73 * time.Second, nodes: pick(four, "b1"), unchecked: true, routed: []string{"b1/web"},
				events: []string{"expired web [b2 b3 b4]"}},
		}},
		{"checks off: a crowd that came and went within a window is removed at once, and hides nothing", GuardConfig{}, []guardStep{
			{at: 0, nodes: four, unchecked: true},
			{at: 20 * time.Second, nodes: withCrowd(four), unchecked: true, routed: all(withCrowd(four))},
			{at: 25 * time.Second, nodes: four, unchecked: true, routed: all(four), events: []string{}},
			{at: 26 * time.Second, nodes: pick(four, "b1"), unchecked: true, routed: all(four),
				guarded: []string{"b2/web", "b3/web", "b4/web"}, events: []string{"started web [b2 b3 b4] 3/4"}},
		}},
		{"UDP instances, never checked, lost within a window of their start are removed at once", GuardConfig{}, []guardStep{
			{at: 0, nodes: udp(four)},
			{at: time.Second, nodes: udp(pick(four, "b1")), routed: []string{"b1/web"}},
		}},
		{"UDP instances, never checked, routed for a window are kept", GuardConfig{}, []guardStep{
			{at: 0, nodes: udp(four)},
			{at: 11 * time.Second, nodes: udp(pick(four, "b1")), routed: all(four), guarded: []string{"b2/web", "b3/web", "b4/web"}},
		}},
		{"disabled removes everything at once", GuardConfig{Disabled: true}, []guardStep{
			{at: 0, nodes: four, up: all(four)},
			{at: time.Second, nodes: pick(four, "b1"), routed: []string{"b1/web"}},
		}},
		{"a stricter share keeps fewer", GuardConfig{Share: 0.75}, []guardStep{
			{at: 0, nodes: four, up: all(four)},
			{at: time.Second, nodes: pick(four, "b1"), routed: []string{"b1/web"}},
		}},
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var state guardState
			proven := map[string]bool{}
			for i, s := range tc.steps {
				for _, u := range s.up {
					proven[u] = true
				}
				checked := prove(healthOf(s.down, s.refused, s.up...), proven)
				if s.unchecked {
					checked = nil
				}
				res := tc.cfg.step(state, catalog.NewSnapshot(s.nodes), checked, t0.Add(s.at))
				state = res.state
				if routed := keyStrings(routedIn(res.snap)); s.routed != nil && !slices.Equal(routed, s.routed) {
					t.Errorf("step %d (%v): routed %v, want %v", i, s.at, routed, s.routed)
				}
				var guarded []string
				for _, k := range state.guarded() {
					guarded = append(guarded, k.String())
				}
				slices.Sort(guarded)
				if !slices.Equal(guarded, s.guarded) {
					t.Errorf("step %d (%v): guarded %v, want %v", i, s.at, guarded, s.guarded)
				}
				if s.events != nil {
					got := []string{}
					for _, e := range res.events {
						got = append(got, describe(e))
					}
					if !slices.Equal(got, s.events) {
						t.Errorf("step %d (%v): events %q, want %q", i, s.at, got, s.events)
					}
				}
			}
		})
	}
}

func describe(e guardEvent) string {
	switch e.kind {
	case guardStarted:
		return fmt.Sprintf("started %s %v %d/%d", e.app, e.nodes, e.lost, e.of)
	case guardGrew:
		return fmt.Sprintf("grew %s %v %d/%d", e.app, e.nodes, e.lost, e.of)
	case guardExpired:
		return fmt.Sprintf("expired %s %v", e.app, e.nodes)
	case guardRenewed:
		return fmt.Sprintf("renewed %s %v", e.app, e.nodes)
	default:
		return fmt.Sprintf("ended %s %v %s", e.app, e.nodes, e.status)
	}
}

// TestGuardRendersLostInstancesAsTheyWere checks that a guarded instance
// is rendered with its last address and definition, that the membership's
// snapshot is not modified, and that marked-down instances are copies.
func TestGuardRendersLostInstancesAsTheyWere(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	nodes := webs(3)
	nodes[1].Applications[0].Weight = 7
	nodes[1].Digest = catalog.Digest{1, 2, 3}
	var g GuardConfig
	first := catalog.NewSnapshot(nodes)
	proven := provenHealth(all(nodes)...)
	res := g.step(guardState{}, first, proven, t0)
	now := catalog.NewSnapshot(nodes[:1])
	res = g.step(res.state, now, proven, t0.Add(time.Second))
	if got := len(res.snap.Nodes); got != 3 {
		t.Fatalf("rendered %d nodes, want 3", got)
	}
	back := res.snap.Nodes[1]
	if back.Name != "b2" || back.Addr != nodes[1].Addr || back.Digest != nodes[1].Digest || back.Role != catalog.RoleBackend {
		t.Errorf("guarded node rendered as %+v, want it as it was: %+v", back, nodes[1])
	}
	if len(back.Applications) != 1 || back.Applications[0].Weight != 7 || back.Applications[0].ApplicationPort != nodes[1].Applications[0].ApplicationPort {
		t.Errorf("guarded application rendered as %+v", back.Applications)
	}

	// Marking down copies: the membership's snapshot is shared.
	res = g.step(guardState{}, first, healthOf([]string{"b1/web"}, nil), t0)
	if first.Nodes[0].Applications[0].State != "" {
		t.Error("step modified the membership's snapshot")
	}
	if res.snap.Nodes[0].Applications[0].State != catalog.StateDown || res.checkDown != 1 {
		t.Errorf("b1/web rendered %q (%d marked), want down (1)", res.snap.Nodes[0].Applications[0].State, res.checkDown)
	}
}

func TestGuardStateNextExpiry(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	g := GuardConfig{Grace: time.Minute}
	proven := provenHealth("b1/web", "b2/web")
	res := g.step(guardState{}, catalog.NewSnapshot(webs(2)), proven, t0)
	if _, ok := res.state.nextExpiry(); ok {
		t.Error("nextExpiry reported a guard with nothing guarded")
	}
	res = g.step(res.state, catalog.Snapshot{}, proven, t0.Add(time.Second))
	at, ok := res.state.nextExpiry()
	if want := t0.Add(time.Second + time.Minute); !ok || !at.Equal(want) {
		t.Errorf("nextExpiry = %v, %v; want %v", at, ok, want)
	}
}

func TestGuardConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  GuardConfig
		ok   bool
	}{
		{"zero means defaults", GuardConfig{}, true},
		{"defaults", DefaultGuardConfig(), true},
		{"share of one never triggers", GuardConfig{Share: 1}, false},
		{"negative share", GuardConfig{Share: -0.1}, false},
		{"negative grace", GuardConfig{Grace: -time.Second}, false},
		{"negative window", GuardConfig{Window: -time.Second}, false},
		{"negative min", GuardConfig{Min: -1}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestUnprovenMassIsNotGuarded is issue 13's attack at the load
// balancer's level: a member set adds many servers of an application that
// never answer a check (they accept connections and hang, so every check
// times out and nothing proves the host was reached), outnumbering its
// real backends, then vanishes. The fake servers are left out once their
// checks fail and stay out when they vanish: none was ever proven to
// serve. The real backends, proven by their checks, are still guarded
// when they are lost at once afterwards.
func TestUnprovenMassIsNotGuarded(t *testing.T) {
	const fakes = 20
	real, realNodes := httpBackends(t, 3)
	m := newMembers()
	m.set(realNodes...)
	p := &recorder{}
	l := startLBWith(t, Config{Members: m, Proxy: p, Timing: defaultTiming, Checks: fastChecks, Guard: GuardConfig{Grace: time.Hour}})
	waitConfig(t, p, "the real backends routed", func(c []byte) bool { return countServers(c) == 3 })
	waitProven(t, l, 3)

	all := slices.Clone(realNodes)
	var fakeAddrs []netip.AddrPort
	for i := range fakes {
		b := newHTTPBackend(t)
		b.hung.Store(true)
		fakeAddrs = append(fakeAddrs, b.addr)
		all = append(all, b.node(fmt.Sprintf("fake%d", i)))
	}
	m.set(all...)
	waitConfig(t, p, "the fake servers routed on arrival", func(c []byte) bool { return countServers(c) == 3+fakes })
	// Their checks time out: out after Fall failures, never guarded.
	waitForWithin(t, 10*time.Second, "the fake servers left out", func() bool {
		c, _ := p.last()
		return countServers(c) == 3 && routesAll(c, real)
	})
	m.set(realNodes...) // the member set vanishes
	renders := l.Stats().Renders
	waitFor(t, "a render after the fake servers vanished", func() bool { return l.Stats().Renders > renders })
	c, _ := p.last()
	for _, a := range fakeAddrs {
		if routes(c, a) {
			t.Fatalf("fake server %v is in the configuration after it vanished:\n%s", a, c)
		}
	}
	if s := l.Stats(); s.Guarded != 0 || s.GuardEvents != 0 {
		t.Fatalf("Guarded = %d, GuardEvents = %d after unproven servers were lost; want 0, 0", s.Guarded, s.GuardEvents)
	}

	// A real mass loss of proven backends is still guarded.
	m.set()
	waitFor(t, "the guard", func() bool { return l.Stats().Guarded == 3 })
	if c, _ := p.last(); countServers(c) != 3 || !routesAll(c, real) {
		t.Errorf("guarded backends are not in the configuration:\n%s", c)
	}
}

// routesAll reports whether config routes to every one of bs.
func routesAll(config []byte, bs []*httpBackend) bool {
	for _, b := range bs {
		if !routes(config, b.addr) {
			return false
		}
	}
	return true
}

// waitProven waits until the running load balancer's checks have proven
// n instances: only those can be guarded. Call it after a configuration
// was applied (which orders it after Run started its checks).
func waitProven(t *testing.T, l *LB, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d instances proven by the checks", n), func() bool {
		proven := 0
		for _, h := range l.checks.health() {
			if h.proven {
				proven++
			}
		}
		return proven == n
	})
}

// TestUncheckedProofByTime runs the loop with the load balancer's checks
// off, on synctest's fake clock: a crowd that joins and vanishes within
// the guard's Window is removed at the next render, while backends routed
// for longer are guarded on a mass loss, for exactly Grace (nothing can
// renew a guard without checks).
func TestUncheckedProofByTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const window, grace = 10 * time.Second, 30 * time.Second
		four := webs(4)
		m := newMembers()
		m.set(four...)
		p := &recorder{}
		l := startLBWith(t, Config{Members: m, Proxy: p, Timing: defaultTiming, Checks: CheckConfig{Disabled: true},
			Guard: GuardConfig{Window: window, Grace: grace}})
		settle(time.Second)

		m.set(withCrowd(four)...)
		settle(2 * time.Second)
		if c, _ := p.last(); countServers(c) != 20 {
			t.Fatalf("%d servers routed with the crowd, want 20", countServers(c))
		}
		m.set(four...) // the crowd vanishes 2 s after it joined
		settle(defaultTiming.MaxWait)
		if c, _ := p.last(); countServers(c) != 4 {
			t.Fatalf("%d servers routed after the crowd vanished, want 4:\n%s", countServers(c), c)
		}
		if s := l.Stats(); s.Guarded != 0 || s.GuardEvents != 0 {
			t.Fatalf("Guarded = %d, GuardEvents = %d after the crowd vanished; want 0, 0", s.Guarded, s.GuardEvents)
		}

		settle(window) // the four have been routed for more than a window
		m.set(four[0])
		settle(defaultTiming.MaxWait)
		lost := time.Now()
		if s := l.Stats(); s.Guarded != 3 || s.GuardEvents != 1 {
			t.Fatalf("Guarded = %d, GuardEvents = %d after three of four vanished; want 3, 1", s.Guarded, s.GuardEvents)
		}
		settle(grace - 2*time.Second)
		if c, _ := p.last(); countServers(c) != 4 {
			t.Fatalf("%d servers routed %v into the grace period, want 4", countServers(c), time.Since(lost))
		}
		settle(2*time.Second + defaultTiming.MaxWait)
		if c, _ := p.last(); countServers(c) != 1 {
			t.Fatalf("%d servers routed %v after the loss (grace %v), want 1", countServers(c), time.Since(lost), grace)
		}
		if s := l.Stats(); s.Guarded != 0 {
			t.Errorf("Guarded = %d after grace, want 0", s.Guarded)
		}
	})
}

// TestCheckerProof: a checker's proof is its first passing check, and it
// lasts while the checker does, whatever follows; a new checker (a new
// address, port or health path) starts unproven.
func TestCheckerProof(t *testing.T) {
	cfg := DefaultCheckConfig()
	timeout := fmt.Errorf("check: %w", context.DeadlineExceeded)
	tests := []struct {
		name    string
		results []error
		proven  bool
	}{
		{"unchecked", nil, false},
		{"only timeouts", []error{timeout, timeout, timeout}, false},
		{"only refusals", []error{syscall.ECONNREFUSED, syscall.ECONNREFUSED}, false},
		{"one pass", []error{nil}, true},
		{"a pass, then timeouts", []error{nil, timeout, timeout, timeout}, true},
		{"timeouts, then a pass", []error{timeout, timeout, nil}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ch := newChecker(instKey{"b1", "web"}, probe{kind: probeTCP, addr: "127.0.0.1:1"}, cfg, func() {})
			for _, err := range tc.results {
				ch.record(err)
			}
			if ch.proven != tc.proven {
				t.Errorf("proven = %v, want %v", ch.proven, tc.proven)
			}
		})
	}
}
