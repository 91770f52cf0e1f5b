package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/scrimplb/scrimp/admin"
	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/internal/loopback"
	"github.com/scrimplb/scrimp/lb"
)

// families is a scrape parsed by the Prometheus text parser.
type families map[string]*dto.MetricFamily

// scrape GETs /metrics at addr, with token as a bearer token unless it is
// empty, and parses the answer as Prometheus does.
func scrape(addr, token string) (families, error) {
	resp, err := getMetrics(addr, token)
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
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("parsing the scrape: %w", err)
	}
	return fams, nil
}

func getMetrics(addr, token string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return client.Do(req)
}

// value returns the value of the sample of family name whose labels are
// labels (name, value pairs; none for an unlabelled family): a counter's
// or a gauge's value, a histogram's sample count.
func (f families) value(name string, labels ...string) (float64, bool) {
	fam := f[name]
	if fam == nil {
		return 0, false
	}
	for _, m := range fam.GetMetric() {
		if len(m.GetLabel())*2 != len(labels) {
			continue
		}
		match := true
		for i, l := range m.GetLabel() {
			match = match && l.GetName() == labels[2*i] && l.GetValue() == labels[2*i+1]
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// is returns whether the sample exists and has value v.
func (f families) is(v float64, name string, labels ...string) bool {
	got, ok := f.value(name, labels...)
	return ok && got == v
}

// requireTypes fails the test for each family of want that is missing or
// of another type.
func requireTypes(t *testing.T, who string, f families, want map[string]dto.MetricType) {
	t.Helper()
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range want {
			if !yield(n) {
				return
			}
		}
	}) {
		switch fam := f[name]; {
		case fam == nil:
			t.Errorf("%s: no %s", who, name)
		case fam.GetType() != want[name]:
			t.Errorf("%s: %s is a %s, want a %s", who, name, fam.GetType(), want[name])
		}
	}
}

// waitScrape scrapes addr until ok accepts what it read, or fails the test
// after timeout with the last scrape.
func waitScrape(t *testing.T, what, addr, token string, timeout time.Duration, ok func(families) bool) families {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		f, err := scrape(addr, token)
		if err == nil && ok(f) {
			return f
		}
		if time.Now().After(deadline) {
			var dump strings.Builder
			for _, name := range slices.Sorted(func(yield func(string) bool) {
				for n := range f {
					if strings.HasPrefix(n, "scrimp_") && !yield(n) {
						return
					}
				}
			}) {
				fmt.Fprintf(&dump, "\n%v", f[name])
			}
			t.Fatalf("%s: not after %s (err %v); last scrape:%s", what, timeout, err, dump.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The metrics every load balancer and every node export, with their types.
var (
	nodeMetricTypes = map[string]dto.MetricType{
		"scrimp_cluster_members":                  dto.MetricType_GAUGE,
		"scrimp_cluster_dropped_tasks_total":      dto.MetricType_COUNTER,
		"scrimp_cluster_malformed_messages_total": dto.MetricType_COUNTER,
		"scrimp_cluster_rejected_sets_total":      dto.MetricType_COUNTER,
		"scrimp_cluster_skipped_sends_total":      dto.MetricType_COUNTER,
		"scrimp_cluster_join_sets_total":          dto.MetricType_COUNTER,
		"scrimp_seed_requests_total":              dto.MetricType_COUNTER,
		"scrimp_seed_errors_total":                dto.MetricType_COUNTER,
		"go_goroutines":                           dto.MetricType_GAUGE,
		"go_memstats_heap_alloc_bytes":            dto.MetricType_GAUGE,
		"process_cpu_seconds_total":               dto.MetricType_COUNTER,
		"process_resident_memory_bytes":           dto.MetricType_GAUGE,
		"process_open_fds":                        dto.MetricType_GAUGE,
	}
	lbMetricTypes = map[string]dto.MetricType{
		// As the hand-written writer exported them.
		"scrimp_lb_renders_total":                 dto.MetricType_COUNTER,
		"scrimp_lb_reloads_total":                 dto.MetricType_COUNTER,
		"scrimp_lb_runtime_updates_total":         dto.MetricType_COUNTER,
		"scrimp_lb_runtime_update_failures_total": dto.MetricType_COUNTER,
		"scrimp_lb_rejected_total":                dto.MetricType_COUNTER,
		"scrimp_lb_last_apply_ok":                 dto.MetricType_GAUGE,
		"scrimp_lb_backends":                      dto.MetricType_GAUGE,
		"scrimp_lb_check_down_instances":          dto.MetricType_GAUGE,
		"scrimp_lb_guarded_instances":             dto.MetricType_GAUGE,
		"scrimp_lb_mass_loss_events_total":        dto.MetricType_COUNTER,
		"scrimp_lb_quarantined_instances":         dto.MetricType_GAUGE,
		"scrimp_lb_quarantine_trials_total":       dto.MetricType_COUNTER,
		"scrimp_lb_reloads_delayed_total":         dto.MetricType_COUNTER,
		"scrimp_lb_refused_instances":             dto.MetricType_GAUGE,
		"scrimp_lb_refusals_total":                dto.MetricType_COUNTER,
		// New.
		"scrimp_lb_passes_total":                    dto.MetricType_COUNTER,
		"scrimp_lb_render_duration_seconds":         dto.MetricType_HISTOGRAM,
		"scrimp_lb_check_duration_seconds":          dto.MetricType_HISTOGRAM,
		"scrimp_lb_reload_duration_seconds":         dto.MetricType_HISTOGRAM,
		"scrimp_lb_runtime_update_duration_seconds": dto.MetricType_HISTOGRAM,
		"scrimp_lb_change_latency_seconds":          dto.MetricType_HISTOGRAM,
	}
)

// TestMetrics runs a load balancer and a backend with metrics-addr set and
// reads them as Prometheus would: the names the hand-written writer had,
// with their types, the duration histograms once the load balancer has
// applied a configuration, the seed requests, and the Go and process
// collectors.
func TestMetrics(t *testing.T) {
	requireNginx(t)
	const net9 = "127.0.9"
	lbAddr := fmt.Sprintf("%s.50:%d", net9, mustFreePort(t, net9+".50"))
	tc := newTestCluster(t, net9, "local")
	// newTestCluster has no metrics; run a second, metered load balancer
	// and a metered backend in the same cluster. The metered load
	// balancer finds the cluster through a program (the exec provider)
	// and fails to publish itself with another, so that its seed
	// requests and errors are real.
	cfg, err := LocalConfig("lb-metered", net9+".50", []string{tc.seed})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Role = "lb"
	cfg.MetricsAddr = lbAddr
	cfg.Seed = config.Seed{Provider: "exec", Sections: map[string]json.RawMessage{
		"exec": json.RawMessage(fmt.Sprintf(`{"command": ["echo", %q], "publish-command": ["false"]}`, tc.seed))}}
	lbc := config.DefaultLB()
	lbc.StateDir, lbc.ListenAddr = t.TempDir(), net9+".50"
	cfg.LB = &lbc
	metered := runTestNode(t, cfg, testLogger(t))

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

	// The loop's counters and its outcomes are updated one after the
	// other: wait for a scrape between passes, where they agree.
	lbm := waitScrape(t, "load balancer sees 2 backends, 4 members, a failed publish, between passes", lbAddr, "", 10*time.Second, func(f families) bool {
		n, _ := f.value("scrimp_seed_errors_total", "op", "publish")
		reloads, _ := f.value("scrimp_lb_reloads_total")
		applied, _ := f.value("scrimp_lb_passes_total", "result", "applied")
		timed, _ := f.value("scrimp_lb_reload_duration_seconds")
		return f.is(2, "scrimp_lb_backends") && f.is(4, "scrimp_cluster_members") && n >= 1 && reloads == applied && reloads == timed
	})
	bem := waitScrape(t, "backend advertises web", beAddr, "", 10*time.Second, func(f families) bool {
		return f.is(1, "scrimp_backend_applications", "state", "up") && f.is(0, "scrimp_backend_applications", "state", "draining") &&
			f.is(0, "scrimp_backend_applications", "state", "down")
	})
	requireTypes(t, "load balancer", lbm, nodeMetricTypes)
	requireTypes(t, "load balancer", lbm, lbMetricTypes)
	requireTypes(t, "backend", bem, nodeMetricTypes)
	requireTypes(t, "backend", bem, map[string]dto.MetricType{"scrimp_backend_applications": dto.MetricType_GAUGE})
	for name := range lbMetricTypes {
		if _, ok := bem[name]; ok {
			t.Errorf("a backend reports the load balancer's %s", name)
		}
	}

	// The live values are those the load balancer keeps.
	s := metered.Stats()
	if reloads, _ := lbm.value("scrimp_lb_reloads_total"); reloads < 1 || reloads > float64(s.Applies) {
		t.Errorf("scrimp_lb_reloads_total %g, want 1 to %d (lb.Stats, read after)", reloads, s.Applies)
	}
	if !lbm.is(1, "scrimp_lb_last_apply_ok") {
		t.Errorf("scrimp_lb_last_apply_ok is not 1: %v", lbm["scrimp_lb_last_apply_ok"])
	}
	// The load balancer applied configurations: the histograms hold
	// each of its passes, reloads and the changes they answered.
	var passes float64
	for _, m := range lbm["scrimp_lb_passes_total"].GetMetric() {
		passes += m.GetCounter().GetValue()
	}
	// Both are observed at the end of a pass; a pass may end between
	// the two being read.
	if renders, _ := lbm.value("scrimp_lb_render_duration_seconds"); renders < passes-1 || renders > passes+1 || renders < 1 {
		t.Errorf("%g renders timed, %g passes: want equal (give or take the pass ending during the scrape), and some", renders, passes)
	}
	// A backend joining now, after the metered load balancer's first
	// pass (whose changes no latency is measured for), is a change it
	// applies: its latency is observed.
	before, _ := lbm.value("scrimp_lb_change_latency_seconds")
	tc.addBackend(2)
	waitScrape(t, "the change → applied latency of a backend joining", lbAddr, "", 10*time.Second, func(f families) bool {
		n, _ := f.value("scrimp_lb_change_latency_seconds")
		return f.is(3, "scrimp_lb_backends") && n > before
	})
	h := lbm["scrimp_lb_reload_duration_seconds"].GetMetric()[0].GetHistogram()
	if h.GetSampleSum() <= 0 || len(h.GetBucket()) < 10 {
		t.Errorf("reload histogram: sum %g, %d buckets; want a positive sum and the configured buckets", h.GetSampleSum(), len(h.GetBucket()))
	}
	// Seeds: the program listed the cluster; the publish program failed.
	if n, _ := lbm.value("scrimp_seed_requests_total", "op", "fetch"); n < 1 || !lbm.is(0, "scrimp_seed_errors_total", "op", "fetch") {
		t.Errorf("seed fetches %g, errors %v; want some, and none failed", n, lbm["scrimp_seed_errors_total"])
	}
	if n, _ := bem.value("scrimp_seed_requests_total", "op", "fetch"); n < 1 {
		t.Errorf("the backend counts %g seed fetches, want some", n)
	}
	if _, ok := bem.value("scrimp_seed_requests_total", "op", "publish"); ok {
		t.Error("a backend, which never publishes, reports publish requests")
	}
	// The Go and process collectors report this process.
	if g, _ := lbm.value("go_goroutines"); g < 1 {
		t.Errorf("go_goroutines %g", g)
	}
	if fds, _ := lbm.value("process_open_fds"); fds < 1 {
		t.Errorf("process_open_fds %g", fds)
	}

	// A taken metrics port fails startup, naming the field.
	taken := *bcfg
	taken.NodeName = "backend-clash"
	if _, err := StartLocal(&taken, testLogger(t)); err == nil || !strings.Contains(err.Error(), "metrics-addr") {
		t.Errorf("start with a taken metrics port: %v, want an error naming metrics-addr", err)
	}
}

// TestMetricsRuntimeUpdates runs HAProxy with its runtime API: a second
// backend joining fills a slot without a reload, and the runtime update
// histogram holds every update the load balancer counts.
func TestMetricsRuntimeUpdates(t *testing.T) {
	const net3 = "127.0.92"
	addr := fmt.Sprintf("%s.1:%d", net3, mustFreePort(t, net3+".1"))
	tc := newTestClusterSetup(t, net3, "local", "haproxy", json.RawMessage(`{"runtime-api": true}`), func(tc *testCluster) {
		tc.edit = func(cfg *config.Config) {
			if cfg.Role == "lb" {
				cfg.MetricsAddr = addr
			}
		}
	})
	tc.addBackend(1)
	tc.waitServed(10*time.Second, "backend-1")
	tc.addBackend(2)
	tc.waitServed(10*time.Second, "backend-1", "backend-2")
	f := waitScrape(t, "a runtime update timed, and two change latencies", addr, "", 10*time.Second, func(f families) bool {
		updates, _ := f.value("scrimp_lb_runtime_updates_total")
		timed, _ := f.value("scrimp_lb_runtime_update_duration_seconds")
		passes, _ := f.value("scrimp_lb_passes_total", "result", "updated")
		// Two changes were applied, a reload and an update.
		latencies, _ := f.value("scrimp_lb_change_latency_seconds")
		return updates >= 1 && timed == updates && passes == updates && latencies >= 2
	})
	if !f.is(0, "scrimp_lb_runtime_update_failures_total") {
		t.Errorf("runtime update failures: %v", f["scrimp_lb_runtime_update_failures_total"])
	}
}

// TestMetricsRefusalsByReason: a member that tries to take a domain held
// by another application, scrimp's gossip port and its metrics port is
// refused, and each refusal is counted under its kind of reason, never
// under a name the member chose.
func TestMetricsRefusalsByReason(t *testing.T) {
	const net3 = "127.0.91"
	metricsAddr := fmt.Sprintf("%s.1:%d", net3, mustFreePort(t, net3+".1"))
	tc := newTestClusterSetup(t, net3, "local", "nginx", nil, func(tc *testCluster) {
		tc.host = "shop.example"
		tc.edit = func(cfg *config.Config) {
			if cfg.Role == "lb" {
				cfg.MetricsAddr = metricsAddr
			}
		}
	})
	legit := tc.addBackendEdit(1, 5*time.Second, 0, webFor("shop.example", 1))
	tc.waitServed(10*time.Second, legit.name)
	f := waitScrape(t, "zero refusals of each kind", metricsAddr, "", 5*time.Second, func(f families) bool {
		return f.is(0, "scrimp_lb_refusals_total", "reason", "ownership")
	})
	for _, r := range refusalReasons {
		if !f.is(0, "scrimp_lb_refusals_total", "reason", r) {
			t.Errorf("before any refusal: scrimp_lb_refusals_total{reason=%q} is not 0", r)
		}
	}

	gossipPort := netip.MustParseAddrPort(tc.seed).Port()
	metricsPort := netip.MustParseAddrPort(metricsAddr).Port()
	tc.addBackendEdit(2, 5*time.Second, 0, renamed("aaa-evil",
		catalog.Application{Name: "aaa", ListenPort: tc.listenPort, Protocol: catalog.ProtocolHTTP, Domains: []string{"shop.example"}, Weight: 100},
		catalog.Application{Name: "aab", ListenPort: int(gossipPort), Protocol: catalog.ProtocolTCP},
		catalog.Application{Name: "aac", ListenPort: mustFreePort(t, net3+".1"), ApplicationPort: int(metricsPort), Protocol: catalog.ProtocolHTTP},
	))
	want := map[string]float64{"ownership": 1, "listen-port": 1, "own-address": 1}
	// The gauge is waited for too: a scrape is not atomic across
	// collectors (Prometheus gathers them concurrently), so one taken
	// during the pass can read the gauge before it and the counters after.
	f = waitScrape(t, "the three refusals counted", metricsAddr, "", 15*time.Second, func(f families) bool {
		for _, r := range refusalReasons {
			if !f.is(want[r], "scrimp_lb_refusals_total", "reason", r) {
				return false
			}
		}
		return f.is(3, "scrimp_lb_refused_instances")
	})
	if n := len(f["scrimp_lb_refusals_total"].GetMetric()); n != len(refusalReasons) {
		t.Errorf("%d refusal series, want the %d fixed reasons only", n, len(refusalReasons))
	}
	if !f.is(3, "scrimp_lb_refused_instances") {
		t.Errorf("scrimp_lb_refused_instances %v, want 3", f["scrimp_lb_refused_instances"])
	}
	if s := tc.lb.Stats(); s.RefusalEvents != 3 {
		t.Errorf("lb.Stats counts %d refusal events, the metrics 3", s.RefusalEvents)
	}
	// Renders go on; a refusal that goes on is not counted again.
	before := tc.lb.Stats().Renders
	tc.lb.lb.Resync()
	waitFor(t, "another render", 5*time.Second, func() bool { return tc.lb.Stats().Renders > before })
	f, err := scrape(metricsAddr, "")
	if err != nil {
		t.Fatal(err)
	}
	if !f.is(1, "scrimp_lb_refusals_total", "reason", "ownership") {
		t.Errorf("after another render: %v, want ownership still 1", f["scrimp_lb_refusals_total"])
	}
}

// TestMetricRefusalReasons sorts each reason lb/admit.go writes, and
// members' attempts to pass for another kind through the names they
// choose.
func TestMetricRefusalReasons(t *testing.T) {
	for _, c := range []struct{ name, reason, want string }{
		{"name held", `application "web" is held as http on listen port 80 for shop.example; this is http on listen port 81`, "ownership"},
		{"port held", `listen port 5432 is held by application "db" for tcp`, "ownership"},
		{"domain held", `domain shop.example path / is held by application "web"`, "ownership"},
		{"any host held", `any host path /api on listen port 80 is held by application "api"`, "ownership"},
		{"contested", `contested: application "b" (http on listen port 80 for x.example) claims the same with as many backends (1), and neither was here first; neither is routed until one is withdrawn`, "ownership"},
		{"reserved port", "listen port 7946 is used by scrimp or its proxy on this load balancer", "listen-port"},
		{"port not allowed", "listen port 22 is not one lb.listen-ports allows", "listen-port"},
		{"own address", "address 127.0.0.1 is this load balancer's own, and port 9946 is scrimp's or its proxy's", "own-address"},
		{"allow list", "no rule of lb.applications allows this application from this backend", "allow-list"},
		{"quarantined", lb.QuarantineReason + "nginx: [emerg] bind() to 0.0.0.0:7000 failed (98: Address already in use)", "quarantined"},
		{"limit", "limit lb.limits.apps-per-member: this backend advertises more than 2 applications; those after the first 2 by name are refused", "limit"},
		{"total limit", "limit lb.limits.upstream-servers: 10 instances are routed, at most 10 allowed in total", "limit"},
		{"unknown", "quarantined: flapped 12 times", "other"},
		{"empty", "", "other"},
		// A member's names appear only where lb puts them.
		{"name that looks like a limit", `application "limit lb.limits.x" is held as http on listen port 80; this is tcp on listen port 80`, "ownership"},
		{"domain that looks like a port reason", `domain x.is.not.one.lb.listen-ports.allows path / is held by application "web"`, "ownership"},
		{"name that looks like the allow list", `application "no rule of lb.applications allows this application from this backend" is held as http on listen port 80; this is tcp on listen port 81`, "ownership"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := refusalReason(c.reason); got != c.want {
				t.Errorf("refusalReason(%q) = %q, want %q", c.reason, got, c.want)
			}
			if !slices.Contains(refusalReasons, c.want) {
				t.Errorf("%q is not a reason label", c.want)
			}
		})
	}
}

// TestMetricsToken runs a node whose metrics need a bearer token: no
// token or a wrong one is refused with 401, the right one is served. A
// token file others may read, or an empty one, stops the node from
// starting and fails Check, naming the file and not the token.
func TestMetricsToken(t *testing.T) {
	const ip = "127.0.93.1"
	dir := t.TempDir()
	const token = "s3cr3t-metrics-token_0123456789"
	tokenFile := filepath.Join(dir, "metrics.token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("%s:%d", ip, mustFreePort(t, ip))
	// A backend whose seed program fails: nothing to join, but its
	// metrics serve, and count the failed fetches.
	cfg, err := LocalConfig("backend-token", ip, []string{"127.0.93.2:1"})
	if err != nil {
		t.Fatal(err)
	}
	cfg.MetricsAddr, cfg.MetricsTokenFile = addr, tokenFile
	cfg.Seed = config.Seed{Provider: "exec", Sections: map[string]json.RawMessage{"exec": json.RawMessage(`{"command": ["false"]}`)}}
	bc := config.DefaultBackend()
	bc.Applications = []config.Application{{Application: catalog.Application{Name: "web", ListenPort: 8080, ApplicationPort: 1, Protocol: catalog.ProtocolHTTP}}}
	cfg.Backend = &bc
	if err := Check(cfg); err != nil {
		t.Fatalf("Check with a good token file: %v", err)
	}
	logger, logs := tapLogger(testLogger(t))
	runTestNode(t, cfg, logger)

	for _, c := range []struct{ name, header string }{
		{"none", ""},
		{"wrong", "Bearer not-the-token"},
		{"prefix", "Bearer " + token[:len(token)-1]},
		{"longer", "Bearer " + token + "x"},
		{"other scheme", "Basic " + token},
		{"bare token", token},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
			if err != nil {
				t.Fatal(err)
			}
			if c.header != "" {
				req.Header.Set("Authorization", c.header)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("status %d, WWW-Authenticate %q; want 401 asking for a bearer token", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
			}
			if bytes.Contains(body, []byte("scrimp_")) {
				t.Errorf("a refused request got metrics: %s", body)
			}
		})
	}
	f := waitScrape(t, "failed seed fetches counted", addr, token, 10*time.Second, func(f families) bool {
		n, _ := f.value("scrimp_seed_errors_total", "op", "fetch")
		return n >= 1
	})
	if !f.is(1, "scrimp_backend_applications", "state", "up") {
		t.Errorf("scrimp_backend_applications %v", f["scrimp_backend_applications"])
	}
	// The lower-case scheme is the same scheme (RFC 9110).
	resp, err := client.Do(func() *http.Request {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
		req.Header.Set("Authorization", "bearer "+token)
		return req
	}())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("lower-case bearer: status %d", resp.StatusCode)
	}
	if n := logs.count("metrics are served beyond loopback"); n != 0 {
		t.Errorf("%d warnings about exposed metrics for a loopback address with a token", n)
	}

	// Bad token files: Check and Start refuse them.
	for _, c := range []struct {
		name    string
		content string
		mode    os.FileMode
		want    string
	}{
		{"group readable", token, 0o640, "mode 0640 lets group or others read the token"},
		{"world readable", token, 0o604, "mode 0604"},
		{"empty", "\n", 0o600, "empty"},
		{"two words", token + " " + token, 0o600, "one word of printable ASCII"},
		{"too long", strings.Repeat("x", admin.MaxTokenFile+1), 0o600, "more than the 4096 bytes"},
		{"missing", "", 0, "no such file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "token")
			if c.mode != 0 {
				if err := os.WriteFile(path, []byte(c.content), c.mode); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(path, c.mode); err != nil { // past the umask
					t.Fatal(err)
				}
			}
			bad := *cfg
			bad.MetricsTokenFile = path
			bad.MetricsAddr = fmt.Sprintf("%s:%d", ip, mustFreePort(t, ip))
			for what, err := range map[string]error{"Check": Check(&bad), "Start": startErr(t, &bad)} {
				if err == nil || !strings.Contains(err.Error(), "metrics-token-file") || !strings.Contains(err.Error(), c.want) {
					t.Errorf("%s: %v, want an error naming metrics-token-file and %q", what, err, c.want)
				} else if strings.Contains(err.Error(), token) {
					t.Errorf("%s: the error quotes the token: %v", what, err)
				}
			}
		})
	}
}

// startErr starts cfg (closing the node if it starts) and returns the error.
func startErr(t *testing.T, cfg *config.Config) error {
	t.Helper()
	c := *cfg
	n, err := StartLocal(&c, testLogger(t))
	if err == nil {
		n.Close()
	}
	return err
}

// TestMetricsExposedWarning: metrics-addr beyond loopback without a token
// is a `scrimp validate` warning and a warning at start. The start is
// tried on 0.0.0.0 at a port a loopback listener holds, so the bind fails
// and nothing ever listens beyond loopback.
func TestMetricsExposedWarning(t *testing.T) {
	for _, c := range []struct {
		addr, token string
		warn        bool
	}{
		{"0.0.0.0:9946", "", true},
		{"[::]:9946", "", true},
		{"192.0.2.10:9946", "", true},
		{"192.0.2.10:9946", "/etc/scrimp/metrics.token", false},
		{"127.0.0.1:9946", "", false},
		{"[::1]:9946", "", false},
		{"", "", false},
	} {
		cfg := config.DefaultConfig()
		cfg.Cluster.BindAddr, cfg.Cluster.KeyringFile = "127.0.0.1", "/etc/scrimp/keyring.json"
		cfg.MetricsAddr, cfg.MetricsTokenFile = c.addr, c.token
		var got []string
		for _, w := range Warnings(cfg) {
			if strings.HasPrefix(w, "metrics-token-file: ") {
				got = append(got, w)
			}
		}
		if c.warn != (len(got) == 1) || len(got) > 1 {
			t.Errorf("metrics-addr %q, metrics-token-file %q: warnings %q, want one: %v", c.addr, c.token, got, c.warn)
		}
		if c.warn && !strings.Contains(got[0], c.addr) {
			t.Errorf("warning %q does not name %s", got[0], c.addr)
		}
	}

	const ip = "127.0.94.1"
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	port := held.Addr().(*net.TCPAddr).Port
	cfg, err := LocalConfig("backend-exposed", ip, []string{"127.0.94.2:1"})
	if err != nil {
		t.Fatal(err)
	}
	cfg.MetricsAddr = fmt.Sprintf("0.0.0.0:%d", port)
	bc := config.DefaultBackend()
	bc.Applications = []config.Application{{Application: catalog.Application{Name: "web", ListenPort: 8080, ApplicationPort: 1, Protocol: catalog.ProtocolHTTP}}}
	cfg.Backend = &bc
	logger, logs := tapLogger(testLogger(t))
	n, err := Start(cfg, logger) // not StartLocal: it tries again on "address already in use"
	if err == nil {
		n.Close()
		t.Fatalf("metrics-addr %s bound while 127.0.0.1:%d is held; the test relies on it failing", cfg.MetricsAddr, port)
	}
	if !strings.Contains(err.Error(), "metrics-addr") {
		t.Errorf("start: %v, want an error naming metrics-addr", err)
	}
	if n := logs.count("metrics are served beyond loopback without a token", "metrics-addr="+cfg.MetricsAddr); n != 1 {
		t.Errorf("%d warnings at start about metrics beyond loopback, want 1", n)
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
