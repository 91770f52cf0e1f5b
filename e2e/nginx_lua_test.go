package e2e_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/e2e"
	"github.com/scrimplb/scrimp/generator"
)

// TestNginxLuaGRPCSpread is TestNginxGRPCSpread through the lua balancer:
// grpc_pass to an upstream whose peers balancer_by_lua picks, with
// keepalive, balances per call over one client connection.
func TestNginxLuaGRPCSpread(t *testing.T) {
	for _, m := range generator.DebianLuaModules {
		if _, err := os.Stat(m); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("nginx's lua module is required in CI: %v", err)
			}
			t.Skipf("nginx's lua module is not installed: %v", err)
		}
	}
	const listen = "127.0.10.40"
	lb := ngxStart(t, listen, `{"balancer": "lua"}`)
	port := e2e.FreePort(t, listen)
	rpc := catalog.Application{Name: "rpc", ListenPort: port, Protocol: catalog.ProtocolGRPC}
	names := []string{"grpc-1", "grpc-2", "grpc-3"}
	var nodes []catalog.Node
	for i, name := range names {
		nodes = append(nodes, e2e.StartBackend(t, name, fmt.Sprintf("127.0.11.%d", 141+i)).Node(rpc))
	}
	lb.applyClean(t, generator.Input{}, nodes...)

	conn := e2e.GRPCConn(t, lb.addr(port))
	call := func() (string, error) { return e2e.GRPCCall(context.Background(), conn) }
	ngxEventually(t, "first gRPC call", call)
	spread := ngxSpread(t, 300, call)
	ok, desc := spread.Within(names, 0.10)
	t.Logf("gRPC through the lua balancer, 300 calls on one connection: %s", desc)
	if !ok {
		t.Errorf("calls on one connection are not spread evenly: %s", desc)
	}
}
