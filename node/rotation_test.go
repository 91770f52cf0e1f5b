package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/admin"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/keyring"
)

// newKeyedTestCluster is newTestCluster (managed nginx, "local" profile)
// whose nodes gossip with the keyring file each has under dir, made with
// keys when it does not exist yet, and a label.
func newKeyedTestCluster(t *testing.T, net, dir string, keys [][]byte) *testCluster {
	t.Helper()
	return newTestClusterSetup(t, net, "local", "nginx", nil, func(tc *testCluster) {
		tc.edit = func(cfg *config.Config) {
			file := filepath.Join(dir, cfg.NodeName+".keys")
			if _, err := os.Stat(file); errors.Is(err, os.ErrNotExist) {
				if err := keyring.Save(file, keys); err != nil {
					t.Fatal(err)
				}
			}
			cfg.Cluster.KeyringFile, cfg.Cluster.Label = file, "rotation-test"
		}
	})
}

// TestKeyRotationUnderLoad rotates the gossip key of a running cluster (a
// load balancer with a real nginx and two backends) through the nodes'
// admin sockets while clients send requests through nginx: install the new
// key everywhere, use it, remove the old one. No request fails, no node
// leaves, every keyring file ends up holding the new key only, and a node
// restarted from its file joins and is served again.
func TestKeyRotationUnderLoad(t *testing.T) {
	dir := t.TempDir()
	old, next := keyring.Generate(), keyring.Generate()
	tc := newKeyedTestCluster(t, "127.0.12", dir, [][]byte{old})
	backends := []*testBackend{tc.addBackend(1), tc.addBackend(2)}
	tc.waitServed(10*time.Second, "backend-1", "backend-2")
	nodes := []*Node{tc.lb, backends[0].node, backends[1].node}
	for _, n := range nodes {
		if n.AdminSocket() == "" {
			t.Fatalf("%s serves no admin socket", n.cfg.NodeName)
		}
	}

	// Watch membership on every node for the whole rotation.
	stopWatch := make(chan struct{})
	var lost []string
	var watch sync.WaitGroup
	watch.Go(func() {
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(20 * time.Millisecond):
			}
			for _, n := range nodes {
				if m := n.Members(); m != 3 {
					lost = append(lost, fmt.Sprintf("%s saw %d members", n.cfg.NodeName, m))
				}
			}
		}
	})
	load := tc.startGetLoad()

	oldFP, nextFP := keyring.Fingerprint(old), keyring.Fingerprint(next)
	steps := []struct {
		op        string
		via       *Node // whose admin socket
		key       []byte
		keys      map[string]int
		primaries map[string]int
	}{
		{"install", tc.lb, next, map[string]int{oldFP: 3, nextFP: 3}, map[string]int{oldFP: 3}},
		{"use", backends[0].node, next, map[string]int{oldFP: 3, nextFP: 3}, map[string]int{nextFP: 3}},
		{"remove", tc.lb, old, map[string]int{nextFP: 3}, map[string]int{nextFP: 3}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, st := range steps {
		// Traffic and gossip (probes, push/pull) run for a while in each
		// state, long enough for failure detection to drop a node that
		// could no longer talk to the others.
		time.Sleep(2 * time.Second)
		res, err := admin.NewClient(st.via.AdminSocket()).Keys(ctx, st.op, st.key)
		if err != nil {
			t.Fatalf("%s: %v", st.op, err)
		}
		if res.Members != 3 || res.Responded != 3 || len(res.Errors) != 0 || !maps.Equal(res.Keys, st.keys) || !maps.Equal(res.Primaries, st.primaries) {
			t.Fatalf("%s: %+v; want 3 members answering, keys %v, primaries %v", st.op, res, st.keys, st.primaries)
		}
		t.Logf("%s through %s: %d of %d members answered", st.op, st.via.AdminSocket(), res.Responded, res.Members)
	}
	time.Sleep(2 * time.Second)
	res := load.Stop()
	close(stopWatch)
	watch.Wait()
	t.Logf("during the rotation: %d requests, %d failed", res.Sent, res.Failed)
	if res.Failed > 0 {
		t.Fatalf("%d of %d requests failed during the rotation; first: %v", res.Failed, res.Sent, res.Failures[0].Err)
	}
	if res.Sent < 500 {
		t.Fatalf("only %d requests were sent; the test proves nothing", res.Sent)
	}
	if len(lost) > 0 {
		t.Fatalf("membership changed during the rotation: %v", lost[0])
	}

	for _, n := range nodes {
		got, err := keyring.Load(n.cfg.Cluster.KeyringFile)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.EqualFunc(got, keyring.Keys{next}, bytes.Equal) {
			t.Fatalf("%s's keyring file holds %v, want only the new key %s", n.cfg.NodeName, got, nextFP)
		}
	}

	// A restart reads the rotated file: the node joins and is served.
	backends[1].stop()
	tc.waitUnrouted(10*time.Second, "backend-2")
	restarted := tc.addBackend(2)
	t.Logf("backend-2 restarted with its rotated keyring, served after %s", tc.waitServed(10*time.Second, "backend-2"))
	if restarted.node.Members() != 3 {
		t.Fatalf("the restarted node sees %d members, want 3", restarted.node.Members())
	}
}
