package node

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/internal/loopback"
)

// scrape GETs /metrics at addr and returns sample name (with labels) →
// value text.
func scrape(addr string) (map[string]string, error) {
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		return nil, fmt.Errorf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	out := map[string]string{}
	for line := range strings.Lines(string(body)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			return nil, fmt.Errorf("malformed sample %q", line)
		}
		out[name] = value
	}
	return out, nil
}

// TestMetrics runs a load balancer and a backend with metrics-addr set and
// reads their counters as Prometheus would.
func TestMetrics(t *testing.T) {
	requireNginx(t)
	const net9 = "127.0.9"
	lbAddr := fmt.Sprintf("%s.1:%d", net9, mustFreePort(t, net9+".1"))
	tc := newTestCluster(t, net9, "local")
	// newTestCluster has no metrics; run a second, metered load balancer
	// and a metered backend in the same cluster.
	cfg, err := LocalConfig("lb-metered", net9+".50", []string{tc.seed})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Role = "lb"
	cfg.MetricsAddr = lbAddr
	lbc := config.DefaultLB()
	lbc.StateDir, lbc.ListenAddr = t.TempDir(), net9+".50"
	cfg.LB = &lbc
	runTestNode(t, cfg, testLogger(t))

	b := tc.addBackend(1)
	tc.waitServed(10*time.Second, b.name)
	beAddr := fmt.Sprintf("%s.60:%d", net9, mustFreePort(t, net9+".60"))
	bcfg, err := LocalConfig("backend-metered", net9+".60", []string{tc.seed})
	if err != nil {
		t.Fatal(err)
	}
	bcfg.MetricsAddr = beAddr
	bc := config.DefaultBackend()
	bc.Applications = []config.Application{{Application: catalog.Application{Name: "web", ListenPort: tc.listenPort, ApplicationPort: 1, Protocol: catalog.ProtocolHTTP}}}
	bcfg.Backend = &bc
	runTestNode(t, bcfg, testLogger(t))

	deadline := time.Now().Add(10 * time.Second)
	var lbm, bem map[string]string
	for {
		lbm, err = scrape(lbAddr)
		if err == nil {
			bem, err = scrape(beAddr)
		}
		if err == nil && lbm["scrimp_lb_backends"] == "2" && lbm["scrimp_cluster_members"] == "4" && bem["scrimp_backend_applications{state=\"up\"}"] == "1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics not as expected after 10s (err %v):\nlb: %v\nbackend: %v", err, lbm, bem)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, name := range []string{"scrimp_lb_renders_total", "scrimp_lb_reloads_total", "scrimp_lb_runtime_updates_total",
		"scrimp_lb_rejected_total", "scrimp_lb_guarded_instances", "scrimp_lb_mass_loss_events_total", "scrimp_lb_check_down_instances",
		"scrimp_lb_refused_instances", "scrimp_lb_refusals_total"} {
		if _, ok := lbm[name]; !ok {
			t.Errorf("load balancer metrics lack %s: %v", name, lbm)
		}
	}
	if lbm["scrimp_lb_reloads_total"] == "0" || lbm["scrimp_lb_last_apply_ok"] != "1" {
		t.Errorf("reloads %s, last apply ok %s: want some, and 1", lbm["scrimp_lb_reloads_total"], lbm["scrimp_lb_last_apply_ok"])
	}
	if _, ok := bem["scrimp_lb_renders_total"]; ok {
		t.Error("a backend reports load balancer metrics")
	}

	// A taken metrics port fails startup, naming the field.
	taken := *bcfg
	taken.NodeName = "backend-clash"
	if _, err := StartLocal(&taken, testLogger(t)); err == nil || !strings.Contains(err.Error(), "metrics-addr") {
		t.Errorf("start with a taken metrics port: %v, want an error naming metrics-addr", err)
	}
}

func mustFreePort(t *testing.T, ip string) int {
	t.Helper()
	p, err := loopback.FreePort(ip)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
