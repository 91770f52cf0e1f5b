package node

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/internal/loopback"
	"github.com/scrimplb/scrimp/internal/s3test"
	"github.com/scrimplb/scrimp/seed"
)

// s3SeedSection serves an empty bucket "seeds" (a real versitygw on
// loopback, see internal/s3test) for the test and returns the s3 seed
// provider's section for it.
func s3SeedSection(t *testing.T) json.RawMessage {
	t.Helper()
	endpoint := s3test.Start(t)
	o, err := seed.NewObjects(seed.ObjectsOptions{Bucket: "seeds", Region: "us-east-1", Endpoint: endpoint,
		PathStyle: true, RequestTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := o.CreateBucket(t.Context()); err != nil {
		t.Fatal(err)
	}
	section, err := json.Marshal(map[string]any{
		"bucket": "seeds", "endpoint": endpoint, "region": "us-east-1", "path-style": true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return section
}

// TestBackendBootstrapsFromS3 runs a load balancer that publishes its
// gossip address to an S3 bucket (versitygw on loopback) and a
// backend whose only seed is that bucket: the backend finds the load
// balancer, joins, and its app is served through nginx.
func TestBackendBootstrapsFromS3(t *testing.T) {
	requireNginx(t)
	section := s3SeedSection(t)
	s3Seed := func(cfg *config.Config) {
		cfg.Seed = config.Seed{Provider: "s3", Sections: map[string]json.RawMessage{"s3": section}}
	}
	logger := testLogger(t)

	const lbIP, backendIP = "127.0.2.1", "127.0.2.2"
	listenPort, err := loopback.FreePort(lbIP)
	if err != nil {
		t.Fatal(err)
	}
	lbCfg, err := LocalConfig("lb", lbIP, nil)
	if err != nil {
		t.Fatal(err)
	}
	s3Seed(lbCfg)
	lbc := config.DefaultLB()
	lbc.StateDir, lbc.ListenAddr = t.TempDir(), lbIP
	lbCfg.LB = &lbc
	runTestNode(t, lbCfg, logger)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	appPort, err := loopback.ServeApp(ctx, &wg, backendIP, "backend-s3")
	if err != nil {
		t.Fatal(err)
	}
	bCfg, err := LocalConfig("backend-s3", backendIP, []string{})
	if err != nil {
		t.Fatal(err)
	}
	s3Seed(bCfg)
	bCfg.Backend = &config.Backend{Applications: []config.Application{{Application: catalog.Application{
		Name: "web", ListenPort: listenPort, ApplicationPort: appPort, Protocol: catalog.ProtocolHTTP,
	}}}}
	start := time.Now()
	b := runTestNode(t, bCfg, logger)
	deadline := start.Add(15 * time.Second)
	for b.Snapshot().Backends() != 1 || len(b.Snapshot().Nodes) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("backend did not join through S3 within 15s; it sees %v", b.Snapshot().Nodes)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("backend start → joined through S3 seed: %s", time.Since(start))

	tc := &testCluster{t: t, net: "127.0.2", listenPort: listenPort}
	tc.waitServed(10*time.Second, "backend-s3")
	t.Logf("backend start → first request served: %s", time.Since(start))
}

// runTestNode starts a node from cfg and stops it (gracefully) at cleanup.
func runTestNode(t *testing.T, cfg *config.Config, logger *slog.Logger) *Node {
	t.Helper()
	n, err := StartLocal(cfg, logger.With("node", cfg.NodeName))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: %v", cfg.NodeName, err)
		}
	})
	return n
}
