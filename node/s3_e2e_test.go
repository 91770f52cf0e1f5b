package node

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/internal/loopback"
)

// isolateAWS points the AWS SDK's credential chain at test values only, so
// nothing can reach a real AWS endpoint or read the developer's profile.
func isolateAWS(t *testing.T) {
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": "AKTEST", "AWS_SECRET_ACCESS_KEY": "SKTEST", "AWS_SESSION_TOKEN": "",
		"AWS_EC2_METADATA_DISABLED": "true", "AWS_PROFILE": "", "AWS_REGION": "", "AWS_DEFAULT_REGION": "",
		"AWS_CONFIG_FILE": filepath.Join(dir, "config"), "AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"),
		"AWS_ENDPOINT_URL": "", "AWS_ENDPOINT_URL_S3": "", "AWS_ROLE_ARN": "", "AWS_WEB_IDENTITY_TOKEN_FILE": "",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI": "", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "",
	} {
		t.Setenv(k, v)
	}
}

// s3SeedSection serves an empty bucket "seeds" (gofakes3 over HTTP on
// loopback) for the test and returns the s3 seed provider's section for it.
func s3SeedSection(t *testing.T) json.RawMessage {
	t.Helper()
	store := s3mem.New()
	if err := store.CreateBucket("seeds"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gofakes3.New(store).Server())
	t.Cleanup(srv.Close)
	section, err := json.Marshal(map[string]any{
		"bucket": "seeds", "endpoint": srv.URL, "path-style": true, "checksum-when-required": true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return section
}

// TestBackendBootstrapsFromS3 runs a load balancer that publishes its
// gossip address to an S3 bucket (gofakes3 over HTTP on loopback) and a
// backend whose only seed is that bucket: the backend finds the load
// balancer, joins, and its app is served through nginx.
func TestBackendBootstrapsFromS3(t *testing.T) {
	requireNginx(t)
	isolateAWS(t)
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
