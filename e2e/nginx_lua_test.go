package e2e_test

import (
	"os"
	"testing"

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
	ngxGRPCSpread(t, "127.0.10.40", `{"balancer": "lua"}`, 141, "gRPC through the lua balancer")
}
