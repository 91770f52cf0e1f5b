package node

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestHAProxyWorkersDropRoot: a load balancer running managed HAProxy
// renders its configuration with the workers switching to the haproxy
// account exactly when scrimp runs as root (the runner decides), and
// serves through it.
func TestHAProxyWorkersDropRoot(t *testing.T) {
	tc := newTestClusterWith(t, "127.0.35", "local", "haproxy")
	tc.addBackend(1)
	tc.waitServed(10*time.Second, "backend-1")
	b, err := tc.lb.RenderedConfig()
	if err != nil {
		t.Fatal(err)
	}
	has := strings.Contains(string(b), "\n    user haproxy\n    group haproxy\n")
	if root := os.Geteuid() == 0; has != root {
		t.Errorf("running as root: %v; the configuration switches the workers to haproxy: %v", root, has)
	}
}
