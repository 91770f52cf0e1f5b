package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/scrimplb/scrimp/admin"
	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/lb"
)

// metrics is one node's Prometheus registry (its own, never the global
// default: the tests and the bench run several nodes in one process) and
// the instruments the node feeds as things happen: the load balancer's
// passes, refusals as they begin, seed requests. Values the node's parts
// already keep (lb.Stats, cluster.Stats, the backend's applications) are
// read at scrape time by liveCollector. Safe for concurrent use.
type metrics struct {
	reg *prometheus.Registry

	passes   *prometheus.CounterVec // by lb.Result
	render   prometheus.Histogram
	check    prometheus.Histogram
	reload   prometheus.Histogram
	update   prometheus.Histogram
	latency  prometheus.Histogram
	refusals *prometheus.CounterVec // by refusalReason

	seedRequests *prometheus.CounterVec // by operation
	seedErrors   *prometheus.CounterVec // by operation

	// refused is the last pass's refusals, to count the ones that begin;
	// only observe, on the load balancer loop's goroutine, uses it.
	refused map[lb.Refusal]bool
}

// Buckets, in seconds. Renders and runtime updates are in-process or one
// socket round trip (a tenth of a millisecond to seconds for huge
// clusters); checks
// and reloads run the proxy's binary (tens of milliseconds to the command
// timeout); change → applied adds the coalescing quiet period and max-wait.
var (
	fastBuckets    = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	proxyBuckets   = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	latencyBuckets = []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}
)

// passResults are every lb.Result, so that each pass counter exists from
// the start.
var passResults = []lb.Result{lb.ResultApplied, lb.ResultUpdated, lb.ResultUnchanged,
	lb.ResultRejected, lb.ResultRenderFailed, lb.ResultDeferred}

// newMetrics builds n's registry. The collectors read n's parts at scrape
// time, so it may be built before they are.
func newMetrics(n *Node) *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), refused: map[lb.Refusal]bool{}}
	hist := func(name, help string, buckets []float64) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
	}
	m.passes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scrimp_lb_passes_total",
		Help: "Passes of the load balancer loop (render, then apply if changed), by result."}, []string{"result"})
	m.render = hist("scrimp_lb_render_duration_seconds",
		"How long admission and the generator took, every pass.", fastBuckets)
	m.check = hist("scrimp_lb_check_duration_seconds",
		"How long the proxy's configuration check took, when it ran apart from the reload.", proxyBuckets)
	m.reload = hist("scrimp_lb_reload_duration_seconds",
		"How long the proxy took to check and load a changed configuration it accepted (a reload, or its first start).", proxyBuckets)
	m.update = hist("scrimp_lb_runtime_update_duration_seconds",
		"How long a runtime API update without a reload took, when it succeeded.", fastBuckets)
	m.latency = hist("scrimp_lb_change_latency_seconds",
		"From a membership change to the proxy running the configuration that answers it (reloaded or updated).", latencyBuckets)
	m.refusals = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scrimp_lb_refusals_total",
		Help: "Refusals of application instances as they began, one per instance and reason, by kind of reason."}, []string{"reason"})
	m.seedRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scrimp_seed_requests_total",
		Help: "Requests to the seed provider: fetching seeds, publishing and withdrawing this load balancer."}, []string{"op"})
	m.seedErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scrimp_seed_errors_total",
		Help: "Requests to the seed provider that failed."}, []string{"op"})
	m.reg.MustRegister(newLiveCollector(n), newACMECollector(n), m.seedRequests, m.seedErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.seedOp("fetch")
	if n.role == catalog.RoleLB {
		m.reg.MustRegister(m.passes, m.render, m.check, m.reload, m.update, m.latency, m.refusals)
		for _, r := range passResults {
			m.passes.WithLabelValues(string(r))
		}
		for _, r := range refusalReasons {
			m.refusals.WithLabelValues(r)
		}
	}
	return m
}

// seedOp makes the series of a seed operation exist at zero.
func (m *metrics) seedOp(op string) {
	m.seedRequests.WithLabelValues(op)
	m.seedErrors.WithLabelValues(op)
}

// observeOutcome is the load balancer's OnOutcome: it feeds the pass
// counters, the duration histograms and the refusal counters. Called from
// the loop's goroutine after each pass; it does not block.
func (n *Node) observeOutcome(o lb.Outcome) {
	m := n.metrics
	m.passes.WithLabelValues(string(o.Result)).Inc()
	m.render.Observe(o.Render.Seconds())
	if o.Check > 0 {
		m.check.Observe(o.Check.Seconds())
	}
	switch o.Result {
	case lb.ResultApplied:
		m.reload.Observe(o.Proxy.Seconds())
	case lb.ResultUpdated:
		m.update.Observe(o.Proxy.Seconds())
	}
	if o.Latency > 0 && (o.Result == lb.ResultApplied || o.Result == lb.ResultUpdated) {
		m.latency.Observe(o.Latency.Seconds())
	}
	// The pass has stored its refusals before reporting: count those
	// that were not refused so in the pass before (as lb.Stats'
	// RefusalEvents does), by kind.
	now := n.lb.Refusals()
	is := make(map[lb.Refusal]bool, len(now))
	for _, r := range now {
		is[r] = true
		if !m.refused[r] {
			m.refusals.WithLabelValues(refusalReason(r.Reason)).Inc()
		}
	}
	m.refused = is
}

// refusalReasons are the values of scrimp_lb_refusals_total's reason
// label: a fixed set, so that members, whose names and domains appear in
// the reasons' text, cannot create series.
var refusalReasons = []string{"ownership", "listen-port", "own-address", "allow-list", "limit", "quarantined", "other"}

// refusalReason sorts the free text of an lb.Refusal's reason (see
// lb/admit.go) into one of refusalReasons. It matches the text lb writes
// around the names, never inside them: a member cannot move its refusal
// to another kind by naming its application or domain so.
func refusalReason(reason string) string {
	switch {
	case strings.HasPrefix(reason, lb.QuarantineReason):
		return "quarantined"
	case strings.HasPrefix(reason, "limit lb.limits."):
		return "limit"
	case strings.HasPrefix(reason, "contested: application "),
		strings.HasPrefix(reason, "application ") && strings.Contains(reason, " is held as "):
		return "ownership"
	case strings.HasPrefix(reason, "listen port ") && (strings.HasSuffix(reason, " is not one lb.listen-ports allows") ||
		strings.HasSuffix(reason, " is used by scrimp or its proxy on this load balancer")):
		return "listen-port"
	case strings.HasPrefix(reason, "address ") && strings.HasSuffix(reason, "'s or its proxy's") &&
		strings.Contains(reason, " is this load balancer's own, and port "):
		return "own-address"
	case reason == "no rule of lb.applications allows this application from this backend":
		return "allow-list"
	case strings.Contains(reason, " is held by application "):
		// A listen port, a domain and path, or a path on any host.
		return "ownership"
	}
	return "other"
}

// liveCollector reads, at every scrape, the values the node's parts keep
// themselves: the membership, the load balancer's lb.Stats, the cluster's
// counters, the backend's applications. Counters stay counters: they only
// grow for the life of the process.
type liveCollector struct {
	n                                                          *Node
	members, backends                                          *prometheus.Desc
	renders, reloads, updates, updateFailures, rejected        *prometheus.Desc
	lastOK, checkDown, guarded, guardEvents, refused           *prometheus.Desc
	quarantined, trials, reloadsDelayed                        *prometheus.Desc
	dropped, malformed, rejectedSets, skippedSends, backendApp *prometheus.Desc
	joinSets                                                   *prometheus.Desc
}

func newLiveCollector(n *Node) *liveCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &liveCollector{n: n,
		members:        d("scrimp_cluster_members", "Live members of the gossip cluster as this node sees them, itself included."),
		dropped:        d("scrimp_cluster_dropped_tasks_total", "Cluster work never done because a queue was full (fetches are retried, the rest repeated by its sender)."),
		malformed:      d("scrimp_cluster_malformed_messages_total", "Messages from peers that did not decode."),
		rejectedSets:   d("scrimp_cluster_rejected_sets_total", "Application sets that matched their member's gossiped digest but failed validation."),
		skippedSends:   d("scrimp_cluster_skipped_sends_total", "Sends not tried because the member's last send failed and its backoff had not ended."),
		joinSets:       d("scrimp_cluster_join_sets_total", "Application sets taken from backends' join push/pulls, with no fetch (load balancers)."),
		renders:        d("scrimp_lb_renders_total", "Configurations rendered from the membership."),
		reloads:        d("scrimp_lb_reloads_total", "Changed configurations the proxy checked and loaded (a reload, or its first start)."),
		updates:        d("scrimp_lb_runtime_updates_total", "Changed configurations applied through the proxy's runtime API, without a reload."),
		updateFailures: d("scrimp_lb_runtime_update_failures_total", "Runtime API updates that failed and fell back to a reload."),
		rejected:       d("scrimp_lb_rejected_total", "Changed configurations the proxy refused; the previous one kept running."),
		lastOK:         d("scrimp_lb_last_apply_ok", "1 when the last changed configuration was accepted, 0 when the proxy refused it."),
		backends:       d("scrimp_lb_backends", "Backend nodes in the membership."),
		checkDown:      d("scrimp_lb_check_down_instances", "Instances the membership says serve but the load balancer's checks fail, left out of the configuration."),
		guarded:        d("scrimp_lb_guarded_instances", "Instances lost in a mass loss and kept in the configuration by the mass-loss guard."),
		guardEvents:    d("scrimp_lb_mass_loss_events_total", "Mass losses the guard caught, one per application."),
		quarantined:    d("scrimp_lb_quarantined_instances", "Application instances quarantined because the proxy refused the configuration they gave; retried when their advertisement changes."),
		trials:         d("scrimp_lb_quarantine_trials_total", "Configurations checked or applied to narrow a refused configuration down to the instances that cause it."),
		reloadsDelayed: d("scrimp_lb_reloads_delayed_total", "Passes that waited because lb.limits.reloads-per-minute was reached."),
		refused: d("scrimp_lb_refused_instances", "Application instances the load balancer refuses to route to now: another application holds what they claim, "+
			"or lb.listen-ports, lb.applications or lb.limits do not allow them."),
		backendApp: d("scrimp_backend_applications", "Applications this backend advertises, by state.", "state"),
	}
}

// Describe sends every descriptor the collector may use; which it sends
// samples of depends on the node's role.
func (c *liveCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.members, c.dropped, c.malformed, c.rejectedSets, c.skippedSends, c.joinSets,
		c.renders, c.reloads, c.updates, c.updateFailures, c.rejected, c.lastOK, c.backends,
		c.checkDown, c.guarded, c.guardEvents, c.refused, c.backendApp, c.quarantined, c.trials, c.reloadsDelayed} {
		ch <- d
	}
}

// Collect reads the live values. It takes the load balancer's and the
// cluster's locks briefly, as their accessors do, and never blocks on I/O.
func (c *liveCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	if n.cluster != nil {
		gauge(c.members, float64(n.cluster.Members()))
		cs := n.cluster.Stats()
		counter(c.dropped, float64(cs.DroppedTasks))
		counter(c.malformed, float64(cs.MalformedMessages))
		counter(c.rejectedSets, float64(cs.RejectedSets))
		counter(c.skippedSends, float64(cs.SkippedSends))
		counter(c.joinSets, float64(cs.JoinSets))
	}
	if n.lb != nil {
		s := n.lb.Stats()
		counter(c.renders, float64(s.Renders))
		counter(c.reloads, float64(s.Applies))
		counter(c.updates, float64(s.Updates))
		counter(c.updateFailures, float64(s.UpdateFailures))
		counter(c.rejected, float64(s.Rejected))
		ok := 1.0
		if s.LastError != nil {
			ok = 0
		}
		gauge(c.lastOK, ok)
		gauge(c.backends, float64(n.cluster.Snapshot().Backends()))
		gauge(c.checkDown, float64(s.CheckDown))
		gauge(c.guarded, float64(s.Guarded))
		counter(c.guardEvents, float64(s.GuardEvents))
		gauge(c.refused, float64(s.Refused))
		gauge(c.quarantined, float64(s.Quarantined))
		counter(c.trials, float64(s.Trials))
		counter(c.reloadsDelayed, float64(s.ReloadsDelayed))
	}
	if n.backend != nil {
		counts := map[catalog.State]int{}
		for _, a := range n.backend.Applications() {
			st := a.State
			if st == "" {
				st = catalog.StateUp
			}
			counts[st]++
		}
		for _, st := range []catalog.State{catalog.StateUp, catalog.StateDraining, catalog.StateDown} {
			ch <- prometheus.MustNewConstMetric(c.backendApp, prometheus.GaugeValue, float64(counts[st]), string(st))
		}
	}
}

// readMetricsToken reads metrics-token-file: nil without one. It refuses
// what admin.ReadTokenFile refuses (a file group or others can access, not
// regular, or too large), and content (white space trimmed) that is empty
// or not printable ASCII without spaces. Errors name the file, never its
// content.
func readMetricsToken(cfg *config.Config) ([]byte, error) {
	path := cfg.MetricsTokenFile
	if path == "" {
		return nil, nil
	}
	data, err := admin.ReadTokenFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: metrics-token-file: %w", cfg.File, err)
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s: metrics-token-file %s: %s", cfg.File, path, fmt.Sprintf(format, args...))
	}
	token := bytes.TrimSpace(data)
	if len(token) == 0 {
		return nil, fail("empty")
	}
	for _, b := range token {
		if b <= ' ' || b > '~' {
			return nil, fail("the token must be one word of printable ASCII")
		}
	}
	return token, nil
}

// metricsExposed reports whether metrics-addr is set to an address beyond
// loopback while no token protects it.
func metricsExposed(cfg *config.Config) bool {
	if cfg.MetricsAddr == "" || cfg.MetricsTokenFile != "" {
		return false
	}
	ap, err := netip.ParseAddrPort(cfg.MetricsAddr)
	return err != nil || !ap.Addr().IsLoopback()
}

// listenMetrics builds the node's metrics and binds metrics-addr, if set,
// so that a taken port or a bad token file fails startup rather than
// going unnoticed; serveMetrics serves it.
func (n *Node) listenMetrics() error {
	n.metrics = newMetrics(n)
	if n.cfg.MetricsAddr == "" {
		return nil
	}
	token, err := readMetricsToken(n.cfg)
	if err != nil {
		return err
	}
	n.metricsToken = token
	if metricsExposed(n.cfg) {
		n.log.Warn("metrics are served beyond loopback without a token: anyone who reaches metrics-addr reads them; "+
			"set metrics-token-file or keep metrics-addr on loopback", "metrics-addr", n.cfg.MetricsAddr)
	}
	ln, err := net.Listen("tcp", n.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("%s: metrics-addr: %w", n.cfg.File, err)
	}
	n.metricsLn = ln
	return nil
}

// metricsHandler serves the registry, behind the bearer token if there is
// one. Scrapes are bounded: a few at a time, each with a deadline.
func (n *Node) metricsHandler() http.Handler {
	h := promhttp.HandlerFor(n.metrics.reg, promhttp.HandlerOpts{
		ErrorLog:            slogPrinter{n},
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
	if n.metricsToken != nil {
		h = requireToken(n.metricsToken, h)
	}
	return h
}

// requireToken answers 401 unless the request carries token as a bearer
// token. The comparison takes the same time whatever the token sent: both
// are hashed first, so neither their bytes nor their length leak.
func requireToken(token []byte, next http.Handler) http.Handler {
	want := sha256.Sum256(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, got, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		sum := sha256.Sum256([]byte(got))
		if subtle.ConstantTimeCompare(sum[:], want[:]) != 1 || !strings.EqualFold(scheme, "Bearer") {
			w.Header().Set("WWW-Authenticate", `Bearer realm="scrimp metrics"`)
			http.Error(w, "a bearer token is required (metrics-token-file)", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// slogPrinter logs promhttp's errors (a collector that failed) through the
// node's logger.
type slogPrinter struct{ n *Node }

func (p slogPrinter) Println(v ...any) {
	p.n.log.Error("metrics: collecting failed", "err", strings.TrimSpace(fmt.Sprintln(v...)))
}

// serveMetrics serves GET /metrics on the listener until ctx ends.
func (n *Node) serveMetrics(ctx context.Context) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", n.metricsHandler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 8 << 10}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(n.metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
		n.log.Error("metrics server stopped", "err", err)
	}
	<-done
}
