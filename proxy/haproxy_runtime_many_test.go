package proxy

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/generator"
)

// TestManagedHAProxyRuntimeUpdateMany fills and empties hundreds of slots
// in one Update each: the commands span many CLI lines, and the state read
// back must match every slot. The addresses are loopback ports nothing
// listens on (HAProxy's checks only reach loopback). The 1,024-slot case
// is the bench's scale row (one application, 1,000 backends joining in
// batches of a few hundred): every server must be in the running state and
// in the haproxy.cfg written.
func TestManagedHAProxyRuntimeUpdateMany(t *testing.T) {
	for _, tc := range []struct {
		name  string
		slots int
		apps  int
		steps []int // backends per application, one Update each
	}{
		{"three apps of 128 slots", 128, 3, []int{120, 0, 77}},
		{"one app of 1024 slots", 1024, 1, []int{250, 600, 1000, 999}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := newManagedHAProxy(t)
			g, err := generator.New("haproxy", fmt.Appendf(nil, `{"runtime-api": true, "server-slots": %d}`, tc.slots))
			if err != nil {
				t.Fatal(err)
			}
			var ports []int
			for range tc.apps {
				ports = append(ports, freePort(t))
			}
			render := func(perApp int, prev *generator.Runtime) generator.Output {
				t.Helper()
				var nodes []catalog.Node
				for i := range perApp {
					var apps []catalog.Application
					for a, port := range ports {
						apps = append(apps, catalog.Application{Name: fmt.Sprintf("app-%d", a), ListenPort: port, ApplicationPort: 20000 + i, Protocol: catalog.ProtocolHTTP, Weight: 1 + i%7})
					}
					addr := netip.AddrFrom4([4]byte{127, 0, byte(30 + i/250), byte(1 + i%250)})
					nodes = append(nodes, catalog.Node{Name: fmt.Sprintf("node-%04d", i), Addr: addr, Role: catalog.RoleBackend, Applications: apps})
				}
				var retained []catalog.Application
				if perApp == 0 {
					for a, port := range ports {
						retained = append(retained, catalog.Application{Name: fmt.Sprintf("app-%d", a), ListenPort: port, ApplicationPort: 1, Protocol: catalog.ProtocolHTTP})
					}
				}
				out, err := g.Render(generator.Input{Snapshot: catalog.NewSnapshot(nodes), Retained: retained, ListenAddr: "127.0.0.1", Standalone: true, StateDir: h.Dir(), Previous: prev})
				if err != nil {
					t.Fatal(err)
				}
				return out
			}
			ctx := context.Background()
			first := render(1, nil)
			applyHAProxy(t, h, first.Config)
			prev := first.Runtime
			for _, n := range tc.steps {
				out := render(n, prev)
				if out.Runtime.Skeleton != prev.Skeleton {
					t.Fatalf("%d backends per app changed the skeleton", n)
				}
				if err := h.Update(ctx, out.Config, out.Runtime); err != nil {
					t.Fatalf("Update to %d backends per app: %v", n, err)
				}
				ready := 0
				for _, s := range out.Runtime.Slots {
					if s.State == generator.SlotReady {
						ready++
					}
				}
				if ready != n*tc.apps {
					t.Fatalf("%d backends per app: %d ready slots, want %d", n, ready, n*tc.apps)
				}
				prev = out.Runtime
			}
			if h.Reloads() != 0 {
				t.Errorf("%d reloads, want none", h.Reloads())
			}
		})
	}
}
