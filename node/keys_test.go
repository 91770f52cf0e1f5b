package node

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/keyring"
)

// A keyring file that others may read stops the node with an error naming
// the file and the key; one with the right mode passes. (LocalConfig's
// bare load balancer has other problems; only keyring ones count here.)
func TestCheckKeyringFile(t *testing.T) {
	dir := t.TempDir()
	key := base64.StdEncoding.EncodeToString(keyring.Generate())
	write := func(name string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(`["`+key+`"]`), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name, file string
		want       string // "" = no problem
	}{
		{"owner only", write("good.json", 0o600), ""},
		{"readable by others", write("open.json", 0o644), "cluster.keyring-file"},
		{"missing", filepath.Join(dir, "none.json"), "cluster.keyring-file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := LocalConfig("lb", "127.0.0.1", nil)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Cluster.KeyringFile = tc.file
			err = Check(cfg)
			switch {
			case tc.want == "" && err != nil && strings.Contains(err.Error(), "keyring"):
				t.Fatalf("Check: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.file)):
				t.Fatalf("Check = %v, want an error naming %s and %s", err, tc.want, tc.file)
			case err != nil && strings.Contains(err.Error(), key):
				t.Fatalf("the error shows the key: %v", err)
			}
		})
	}
}

// The gossip settings of the configuration reach memberlist: a keyed node
// in the transition accepts a plaintext node, an enforcing one does not;
// allowed-cidrs keeps out a node from another address and lets in one
// from an allowed network.
func TestGossipSettingsReachTheCluster(t *testing.T) {
	ring := filepath.Join(t.TempDir(), "keyring.json")
	if err := os.WriteFile(ring, []byte(`["`+base64.StdEncoding.EncodeToString(keyring.Generate())+`"]`), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		first  func(c *config.Cluster)
		joins  bool
		suffix int
	}{
		{"keyed, in transition: plaintext joins", func(c *config.Cluster) {
			c.KeyringFile, c.GossipVerifyIncoming, c.GossipVerifyOutgoing = ring, false, false
		}, true, 1},
		{"keyed, enforced: plaintext is refused", func(c *config.Cluster) { c.KeyringFile = ring }, false, 3},
		{"allowed-cidrs without the other node", func(c *config.Cluster) { c.AllowedCIDRs = []string{"127.0.15.5/32"} }, false, 5},
		{"allowed-cidrs with the other node", func(c *config.Cluster) { c.AllowedCIDRs = []string{"127.0.15.0/24"} }, true, 7},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			first, err := LocalConfig("first", fmt.Sprintf("127.0.15.%d", tc.suffix), []string{})
			if err != nil {
				t.Fatal(err)
			}
			first.Backend = &config.Backend{}
			tc.first(&first.Cluster)
			a := runTestNode(t, first, testLogger(t))
			second, err := LocalConfig("second", fmt.Sprintf("127.0.15.%d", tc.suffix+1), []string{a.GossipAddr()})
			if err != nil {
				t.Fatal(err)
			}
			second.Backend = &config.Backend{}
			runTestNode(t, second, testLogger(t))
			deadline := time.Now().Add(3 * time.Second)
			for a.Members() != 2 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if joined := a.Members() == 2; joined != tc.joins {
				t.Fatalf("first node sees %d members; want the second to join: %v", a.Members(), tc.joins)
			}
		})
	}
}
