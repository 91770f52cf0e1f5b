package lb

import (
	"net/netip"
	"testing"

	"github.com/scrimplb/scrimp/catalog"
)

// TestAdmitterKeepsIncumbents: an Admitter remembers owners from one call
// to the next, as the loop does: a newcomer that redefines a routed
// application is refused even when more backends advertise it.
func TestAdmitterKeepsIncumbents(t *testing.T) {
	backend := func(name, addr string, listen int) catalog.Node {
		return catalog.Node{Name: name, Addr: netip.MustParseAddr(addr), Role: catalog.RoleBackend,
			Applications: []catalog.Application{{Name: "svc", ListenPort: listen, ApplicationPort: 9000, Protocol: catalog.ProtocolGRPC}}}
	}
	a := NewAdmitter(Policy{})
	snap, refusals := a.Admit(catalog.NewSnapshot([]catalog.Node{backend("z-first", "10.0.0.1", 9000)}))
	if len(refusals) != 0 || snap.Backends() != 1 {
		t.Fatalf("first: %d backends, refusals %v", snap.Backends(), refusals)
	}
	snap, refusals = a.Admit(catalog.NewSnapshot([]catalog.Node{
		backend("z-first", "10.0.0.1", 9000), backend("a-new", "10.0.0.2", 9001), backend("b-new", "10.0.0.3", 9001),
	}))
	if len(refusals) != 2 || refusals[0].Node != "a-new" || refusals[1].Node != "b-new" {
		t.Fatalf("refusals %v, want both newcomers", refusals)
	}
	services, _ := snap.Services()
	if len(services) != 1 || len(services[0].Servers) != 1 || services[0].Servers[0].Node != "z-first" {
		t.Errorf("routed %+v, want only the incumbent", services)
	}
}
