package cluster

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
)

// keyedNode is testNode with a gossip keyring and label.
func keyedNode(t *testing.T, ip int, role catalog.Role, keys [][]byte, label string, apps ...catalog.Application) *Cluster {
	t.Helper()
	c, err := New(Config{
		NodeName:     fmt.Sprintf("%s-%d", role, ip),
		BindAddr:     fmt.Sprintf("127.0.0.%d", ip),
		Profile:      "local",
		Role:         role,
		Applications: apps,
		Keys:         keys,
		Label:        label,
		Logger:       testLogger(t),
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Kill() })
	return c
}

// A node without the cluster's key, with another key or with another label
// cannot join, and its applications never reach the load balancer; a node
// with the key (primary or not) and the label joins and is routed.
func TestKeyringAndLabelKeepStrangersOut(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	other := bytes.Repeat([]byte{9}, 32)
	lb := keyedNode(t, 101, catalog.RoleLB, [][]byte{key}, "prod")
	cases := []struct {
		name  string
		ip    int
		keys  [][]byte
		label string
		joins bool
	}{
		{"no key", 102, nil, "prod", false},
		{"wrong key", 103, [][]byte{other}, "prod", false},
		{"wrong label", 104, [][]byte{key}, "staging", false},
		{"no label", 105, [][]byte{key}, "", false},
		{"same primary, another key installed too", 106, [][]byte{key, other}, "prod", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := keyedNode(t, tc.ip, catalog.RoleBackend, tc.keys, tc.label, app("web-"+fmt.Sprint(tc.ip), 8080))
			_, err := b.Join([]string{lb.LocalAddr()})
			if tc.joins {
				if err != nil {
					t.Fatalf("Join: %v", err)
				}
				waitFor(t, "the backend's application at the load balancer", 5*time.Second, func() bool {
					services, _ := lb.Snapshot().Services()
					for _, s := range services {
						if s.Name == "web-"+fmt.Sprint(tc.ip) && len(s.Servers) == 1 {
							return true
						}
					}
					return false
				})
				return
			}
			if err == nil {
				t.Fatalf("Join succeeded")
			}
			// Give gossip a moment in which a join that half worked
			// would show; the stranger must never appear.
			deadline := time.Now().Add(500 * time.Millisecond)
			for time.Now().Before(deadline) {
				for _, n := range lb.Snapshot().Nodes {
					if n.Name == b.LocalName() {
						t.Fatalf("%s is a member of the load balancer's cluster", n.Name)
					}
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}
