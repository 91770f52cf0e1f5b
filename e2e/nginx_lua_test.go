package e2e_test

import (
	"testing"

	"github.com/scrimplb/scrimp/e2e"
)

// TestNginxLuaGRPCSpread is TestNginxGRPCSpread through the lua balancer:
// grpc_pass to an upstream whose peers balancer_by_lua picks, with
// keepalive, balances per call over one client connection.
func TestNginxLuaGRPCSpread(t *testing.T) {
	e2e.RequireNginxLua(t)
	ngxGRPCSpread(t, "127.0.10.40", `{"balancer": "lua"}`, 141, "gRPC through the lua balancer")
}
