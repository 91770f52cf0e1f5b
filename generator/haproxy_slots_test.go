package generator

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/scrimplb/scrimp/catalog"
)

func slotServer(node string, last byte) catalog.Server {
	return catalog.Server{Node: node, Addr: netip.AddrFrom4([4]byte{10, 0, 0, last}), Port: 8080, Weight: 1}
}

// slotOf returns the index of node's slot, or -1.
func slotOf(slots []Slot, node string) int {
	for i, s := range slots {
		if s.Node == node {
			return i
		}
	}
	return -1
}

func TestAssignSlots(t *testing.T) {
	a, b, c, d := slotServer("a", 1), slotServer("b", 2), slotServer("c", 3), slotServer("d", 4)
	first := assignSlots("be", []catalog.Server{a, b}, nil, nil, 4)
	tests := []struct {
		name      string
		servers   []catalog.Server
		draining  []catalog.Server
		prev      []Slot
		min       int
		wantCount int
		// check inspects the result beyond its length.
		check func(t *testing.T, got []Slot)
	}{
		{name: "empty", min: 4, wantCount: 4, check: func(t *testing.T, got []Slot) {
			for _, s := range got {
				if s.State != SlotMaint || s.Node != "" {
					t.Errorf("slot %s = %+v, want free", s.Server, s)
				}
			}
		}},
		{name: "fresh servers get their hashed slot or the next", servers: []catalog.Server{a, b}, min: 4, wantCount: 4, check: func(t *testing.T, got []Slot) {
			for _, n := range []string{"a", "b"} {
				if i := slotOf(got, n); i < 0 || got[i].State != SlotReady {
					t.Errorf("%s not ready in %+v", n, got)
				}
			}
		}},
		{name: "a join moves nobody", servers: []catalog.Server{a, b, c}, prev: first, min: 4, wantCount: 4, check: func(t *testing.T, got []Slot) {
			for _, n := range []string{"a", "b"} {
				if slotOf(got, n) != slotOf(first, n) {
					t.Errorf("%s moved from slot %d to %d", n, slotOf(first, n), slotOf(got, n))
				}
			}
			if slotOf(got, "c") < 0 {
				t.Error("c has no slot")
			}
		}},
		{name: "a leave frees only its slot", servers: []catalog.Server{b}, prev: first, min: 4, wantCount: 4, check: func(t *testing.T, got []Slot) {
			if i := slotOf(first, "a"); got[i].State != SlotMaint || got[i].Node != "" {
				t.Errorf("a's slot %d = %+v, want free", i, got[i])
			}
			if slotOf(got, "b") != slotOf(first, "b") {
				t.Error("b moved")
			}
		}},
		{name: "draining keeps its slot, in drain", servers: []catalog.Server{b}, draining: []catalog.Server{a}, prev: first, min: 4, wantCount: 4, check: func(t *testing.T, got []Slot) {
			i := slotOf(got, "a")
			if i != slotOf(first, "a") || got[i].State != SlotDrain || got[i].Addr != netip.MustParseAddrPort("10.0.0.1:8080") {
				t.Errorf("a = slot %d %+v, want slot %d draining at 10.0.0.1:8080", i, got[i], slotOf(first, "a"))
			}
		}},
		{name: "draining without a slot gets none", servers: []catalog.Server{a}, draining: []catalog.Server{c}, min: 4, wantCount: 4, check: func(t *testing.T, got []Slot) {
			if slotOf(got, "c") >= 0 {
				t.Errorf("draining c got a slot: %+v", got)
			}
		}},
		{name: "full: slots double, nobody moves", servers: []catalog.Server{a, b, c, d, slotServer("e", 5)}, prev: assignSlots("be", []catalog.Server{a, b, c, d}, nil, nil, 4), min: 4, wantCount: 8, check: func(t *testing.T, got []Slot) {
			prev := assignSlots("be", []catalog.Server{a, b, c, d}, nil, nil, 4)
			for _, n := range []string{"a", "b", "c", "d"} {
				if slotOf(got, n) != slotOf(prev, n) {
					t.Errorf("%s moved from %d to %d", n, slotOf(prev, n), slotOf(got, n))
				}
			}
		}},
		{name: "never fewer slots than before", servers: []catalog.Server{a}, prev: assignSlots("be", nil, nil, nil, 16), min: 4, wantCount: 16},
		{name: "a weight change stays in place", servers: []catalog.Server{{Node: "a", Addr: a.Addr, Port: 8080, Weight: 7}, b}, prev: first, min: 4, wantCount: 4, check: func(t *testing.T, got []Slot) {
			if i := slotOf(got, "a"); i != slotOf(first, "a") || got[i].Weight != 7 {
				t.Errorf("a = %+v, want weight 7 in slot %d", got[i], slotOf(first, "a"))
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := assignSlots("be", tt.servers, tt.draining, tt.prev, tt.min)
			if len(got) != tt.wantCount {
				t.Fatalf("%d slots, want %d: %+v", len(got), tt.wantCount, got)
			}
			seen := map[string]bool{}
			for i, s := range got {
				if s.Backend != "be" || s.Server != fmt.Sprintf("s%d", i+1) {
					t.Errorf("slot %d named %s/%s", i, s.Backend, s.Server)
				}
				if s.Node != "" && seen[s.Node] {
					t.Errorf("%s in two slots", s.Node)
				}
				seen[s.Node] = true
			}
			if tt.check != nil {
				tt.check(t, got)
			}
		})
	}
}

// TestHAProxyRuntimeSkeleton follows one cluster through joins, leaves,
// drains and a full loss: only the slots change, so the skeleton stays
// and a proxy can apply each step without a reload; adding slots or
// changing an application changes it. Every output passes haproxy -c.
func TestHAProxyRuntimeSkeleton(t *testing.T) {
	bin := findHAProxy(t)
	dir := hapShortTempDir(t)
	g := newHAProxyGen(t, `{"runtime-api": true, "server-slots": 4}`)
	web := hapApplication("web", catalog.ProtocolHTTP, 8080, 8080, "example.com")
	node := func(name string, last byte, app catalog.Application) catalog.Node {
		return catalog.Node{Name: name, Addr: netip.AddrFrom4([4]byte{10, 0, 0, last}), Role: catalog.RoleBackend, Applications: []catalog.Application{app}}
	}
	draining := hapWith(web, func(a *catalog.Application) { a.State = catalog.StateDraining })
	steps := []struct {
		name         string
		nodes        []catalog.Node
		retained     []catalog.Application
		sameSkeleton bool
		want         map[string]SlotState // node → state; others must be free
		slots        int
	}{
		{name: "start", nodes: []catalog.Node{node("b1", 1, web), node("b2", 2, web)}, want: map[string]SlotState{"b1": SlotReady, "b2": SlotReady}, slots: 4},
		{name: "join", sameSkeleton: true, nodes: []catalog.Node{node("b1", 1, web), node("b2", 2, web), node("b3", 3, web)}, want: map[string]SlotState{"b1": SlotReady, "b2": SlotReady, "b3": SlotReady}, slots: 4},
		{name: "drain", sameSkeleton: true, nodes: []catalog.Node{node("b1", 1, draining), node("b2", 2, web), node("b3", 3, web)}, want: map[string]SlotState{"b1": SlotDrain, "b2": SlotReady, "b3": SlotReady}, slots: 4},
		{name: "leave", sameSkeleton: true, nodes: []catalog.Node{node("b2", 2, web), node("b3", 3, web)}, want: map[string]SlotState{"b2": SlotReady, "b3": SlotReady}, slots: 4},
		{name: "weight", sameSkeleton: true, nodes: []catalog.Node{node("b2", 2, hapWith(web, func(a *catalog.Application) { a.Weight = 5 })), node("b3", 3, web)}, want: map[string]SlotState{"b2": SlotReady, "b3": SlotReady}, slots: 4},
		{name: "all lost", sameSkeleton: true, retained: []catalog.Application{web}, want: map[string]SlotState{}, slots: 4},
		{name: "back", sameSkeleton: true, nodes: []catalog.Node{node("b4", 4, web)}, want: map[string]SlotState{"b4": SlotReady}, slots: 4},
		{name: "outgrow", nodes: []catalog.Node{node("b4", 4, web), node("b5", 5, web), node("b6", 6, web), node("b7", 7, web), node("b8", 8, web)},
			want: map[string]SlotState{"b4": SlotReady, "b5": SlotReady, "b6": SlotReady, "b7": SlotReady, "b8": SlotReady}, slots: 8},
		{name: "application changed", nodes: []catalog.Node{node("b4", 4, hapWith(web, func(a *catalog.Application) { a.Domains = []string{"example.org"} }))},
			want: map[string]SlotState{"b4": SlotReady}, slots: 8},
	}
	var prev *Runtime
	var prevConfig []byte
	for _, st := range steps {
		out, err := g.Render(Input{Snapshot: catalog.NewSnapshot(st.nodes), Retained: st.retained, ListenAddr: "127.0.0.1", Standalone: true, StateDir: dir, Previous: prev})
		if err != nil {
			t.Fatalf("%s: Render: %v", st.name, err)
		}
		if out.Runtime == nil {
			t.Fatalf("%s: no Runtime in runtime-api mode", st.name)
		}
		if prev != nil {
			if same := out.Runtime.Skeleton == prev.Skeleton; same != st.sameSkeleton {
				t.Errorf("%s: skeleton unchanged = %v, want %v", st.name, same, st.sameSkeleton)
			}
			if bytes.Equal(out.Config, prevConfig) {
				t.Errorf("%s: configuration text unchanged; a restart would lose the change", st.name)
			}
			// Whoever stays keeps their slot.
			for _, s := range out.Runtime.Slots {
				if s.Node == "" {
					continue
				}
				if i := slotOf(prev.Slots, s.Node); i >= 0 && prev.Slots[i].Server != s.Server {
					t.Errorf("%s: %s moved from %s to %s", st.name, s.Node, prev.Slots[i].Server, s.Server)
				}
			}
		}
		if len(out.Runtime.Slots) != st.slots {
			t.Errorf("%s: %d slots, want %d", st.name, len(out.Runtime.Slots), st.slots)
		}
		for _, s := range out.Runtime.Slots {
			if s.Backend != "scrimp_web" {
				t.Errorf("%s: slot of backend %q", st.name, s.Backend)
			}
			want, ok := st.want[s.Node]
			switch {
			case s.Node == "" && s.State != SlotMaint:
				t.Errorf("%s: free slot %s is %s", st.name, s.Server, s.State)
			case s.Node != "" && (!ok || want != s.State):
				t.Errorf("%s: %s in %s is %s, want %s", st.name, s.Node, s.Server, s.State, want)
			}
		}
		for n := range st.want {
			if slotOf(out.Runtime.Slots, n) < 0 {
				t.Errorf("%s: %s has no slot", st.name, n)
			}
		}
		if !bytes.Contains(out.Config, []byte("http-error status 503")) {
			t.Errorf("%s: no 503 answer for a backend without usable servers", st.name)
		}
		if bin != "" {
			hapCheck(t, bin, hapWrite(t, dir, st.name+".cfg", out.Config))
		}
		prev, prevConfig = out.Runtime, out.Config
	}
}

func TestHAProxyRuntimeOnlyStandalone(t *testing.T) {
	g := newHAProxyGen(t, `{"runtime-api": true}`)
	in := Input{Snapshot: catalog.NewSnapshot([]catalog.Node{hapNode("b1", "10.0.0.1", hapWeb)}), ListenAddr: "127.0.0.1"}
	out, err := g.Render(in)
	if err != nil {
		t.Fatal(err)
	}
	if out.Runtime != nil || bytes.Contains(out.Config, []byte(" s1 ")) {
		t.Errorf("include mode rendered slots (no runtime API there):\n%s", out.Config)
	}
	if len(out.Warnings) != 1 || !strings.Contains(out.Warnings[0], "managed mode") {
		t.Errorf("warnings %q, want one saying runtime-api needs managed mode", out.Warnings)
	}
	// Without the option nothing changes either.
	in.Standalone, in.StateDir = true, "/var/lib/scrimp"
	out, err = newHAProxyGen(t, "").Render(in)
	if err != nil {
		t.Fatal(err)
	}
	if out.Runtime != nil || !strings.Contains(string(out.Config), "server b1 10.0.0.1:8080") {
		t.Errorf("default options rendered slots:\n%s", out.Config)
	}
}
