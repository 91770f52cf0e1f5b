package node

import (
	"slices"
	"testing"

	"github.com/scrimplb/scrimp/config"
)

// TestXDSPortReserved: no member may take the xDS server's port as a
// listen port or be routed to at it on the load balancer.
func TestXDSPortReserved(t *testing.T) {
	cfg := config.DefaultConfig()
	if got := reservedPorts(cfg, 0); slices.Contains(got, 18000) {
		t.Fatalf("reserved %v without xds", got)
	}
	x := config.DefaultXDS()
	x.ListenAddr = "127.0.0.1:18000"
	cfg.XDS = &x
	if got := reservedPorts(cfg, 9946); !slices.Equal(got, []int{7946, 9946, 18000}) {
		t.Errorf("reserved %v, want gossip, metrics and xds", got)
	}
}
