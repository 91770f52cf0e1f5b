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
// listens on (HAProxy's checks only reach loopback).
func TestManagedHAProxyRuntimeUpdateMany(t *testing.T) {
	h, _ := newManagedHAProxy(t)
	g, err := generator.New("haproxy", []byte(`{"runtime-api": true, "server-slots": 128}`))
	if err != nil {
		t.Fatal(err)
	}
	ports := []int{freePort(t), freePort(t), freePort(t)}
	render := func(perApp int, prev *generator.Runtime) generator.Output {
		t.Helper()
		var nodes []catalog.Node
		for i := range perApp {
			var apps []catalog.Application
			for a, port := range ports {
				apps = append(apps, catalog.Application{Name: fmt.Sprintf("app-%d", a), ListenPort: port, ApplicationPort: 20000 + i, Protocol: catalog.ProtocolHTTP, Weight: 1 + i%7})
			}
			nodes = append(nodes, catalog.Node{Name: fmt.Sprintf("node-%03d", i), Addr: netip.AddrFrom4([4]byte{127, 0, 30, byte(1 + i)}), Role: catalog.RoleBackend, Applications: apps})
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
	for _, n := range []int{120, 0, 77} {
		out := render(n, prev)
		if out.Runtime.Skeleton != prev.Skeleton {
			t.Fatalf("%d backends per app changed the skeleton", n)
		}
		if err := h.Update(ctx, out.Config, out.Runtime); err != nil {
			t.Fatalf("Update to %d backends per app: %v", n, err)
		}
		prev = out.Runtime
	}
	if h.Reloads() != 0 {
		t.Errorf("%d reloads, want none", h.Reloads())
	}
}
