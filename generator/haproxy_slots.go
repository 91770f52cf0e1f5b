package generator

import (
	"hash/fnv"
	"net/netip"
	"strconv"

	"github.com/scrimplb/scrimp/catalog"
)

// haproxySlotPlaceholder is the address a free slot's line carries. The
// slot is disabled, so HAProxy neither checks it nor sends it traffic; the
// runtime API gives it a real address before enabling it.
var haproxySlotPlaceholder = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 1)

// hapRuntime collects the slots of a runtime-api configuration.
type hapRuntime struct {
	prev     map[string][]Slot           // the running configuration's slots, by backend section
	draining map[string][]catalog.Server // draining instances, by application
	slots    []Slot                      // what this render writes, in order
}

func newHAPRuntime(in Input) *hapRuntime {
	rt := &hapRuntime{prev: map[string][]Slot{}, draining: map[string][]catalog.Server{}}
	if in.Previous != nil {
		for _, s := range in.Previous.Slots {
			rt.prev[s.Backend] = append(rt.prev[s.Backend], s)
		}
	}
	for _, node := range in.Snapshot.Nodes {
		if node.Role != catalog.RoleBackend {
			continue
		}
		for _, app := range node.Applications {
			if app.State != catalog.StateDraining {
				continue
			}
			s := catalog.Server{Node: node.Name, Addr: node.Addr, Port: app.ApplicationPort, Weight: max(app.Weight, 1)}
			if checkServer(s) != nil {
				continue
			}
			rt.draining[app.Name] = append(rt.draining[app.Name], s)
		}
	}
	return rt
}

// slots writes app's server slots. Every slot has the same check options
// (the application's), since HAProxy cannot change them at runtime; a
// slot's address, weight and state are masked out of the skeleton and
// follow the membership through the runtime API.
func (g haproxy) slots(w *hapWriter, app hapApp, rt *hapRuntime) {
	backend := haproxyBackend(app.Name)
	slots := assignSlots(backend, app.Servers, rt.draining[app.Name], rt.prev[backend], g.o.ServerSlots)
	for i, s := range slots {
		b := append(w.b, "    server "...)
		b = append(b, s.Server...)
		b = append(b, ' ')
		w.b = b
		from := len(w.b)
		addr := s.Addr
		if s.State == SlotMaint {
			addr = haproxySlotPlaceholder
		}
		w.b = addr.AppendTo(w.b)
		w.mask(from)
		// The slot's id fixes its points on a consistent-hash ring.
		w.b = append(w.b, " id "...)
		w.b = strconv.AppendInt(w.b, int64(i+1), 10)
		g.serverChecks(w, app, app.MaxFails, app.FailTimeout)
		from = len(w.b)
		w.b = append(w.b, " weight "...)
		w.b = strconv.AppendInt(w.b, int64(max(s.Weight, 1)), 10)
		if s.State != SlotReady {
			// Draining backends start disabled too: both take no new
			// requests, and a reload must not revive one.
			w.b = append(w.b, " disabled"...)
		}
		if s.Node != "" {
			w.b = append(w.b, " # "...)
			w.b = append(w.b, s.Node...)
		}
		w.mask(from)
		w.end()
	}
	rt.slots = append(rt.slots, slots...)
}

// assignSlots places a backend section's servers (serving instances) and
// draining instances in slots named s1, s2, …. Whoever had a slot in prev
// keeps it, so a membership change moves no other backend (nor its keys
// on a consistent-hash ring); a draining instance keeps its slot until it
// leaves, and one without a slot gets none. A new server takes the slot
// its node name hashes to, or the next free one, so load balancers that
// saw the same joins agree. There are at least minSlots slots and never
// fewer than prev had; when they run out their number doubles.
func assignSlots(backend string, servers, draining []catalog.Server, prev []Slot, minSlots int) []Slot {
	had := map[string]int{}
	for i, s := range prev {
		if _, dup := had[s.Node]; s.Node != "" && !dup && s.State != SlotMaint {
			had[s.Node] = i
		}
	}
	count := max(minSlots, len(prev), 1)
	need := len(servers)
	for _, s := range draining {
		if _, ok := had[s.Node]; ok {
			need++
		}
	}
	for count < need {
		count *= 2
	}
	slots := make([]Slot, count)
	for i := range slots {
		slots[i] = Slot{Backend: backend, Server: "s" + strconv.Itoa(i+1), Weight: 1, State: SlotMaint}
	}
	put := func(i int, s catalog.Server, state SlotState) {
		slots[i].Node, slots[i].Addr, slots[i].Weight, slots[i].State = s.Node, netip.AddrPortFrom(s.Addr, uint16(s.Port)), s.Weight, state
	}
	var fresh []catalog.Server
	for _, s := range servers {
		if i, ok := had[s.Node]; ok {
			put(i, s, SlotReady)
		} else {
			fresh = append(fresh, s)
		}
	}
	for _, s := range draining {
		if i, ok := had[s.Node]; ok {
			put(i, s, SlotDrain)
		}
	}
	for _, s := range fresh {
		h := fnv.New32a()
		h.Write([]byte(s.Node))
		i := int(h.Sum32() % uint32(count))
		for slots[i].State != SlotMaint {
			i = (i + 1) % count
		}
		put(i, s, SlotReady)
	}
	return slots
}
