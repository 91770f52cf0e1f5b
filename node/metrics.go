package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/scrimplb/scrimp/catalog"
)

// listenMetrics binds metrics-addr, if set, so that a taken port fails
// startup rather than going unnoticed; serveMetrics serves it.
func (n *Node) listenMetrics() error {
	if n.cfg.MetricsAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", n.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("%s: metrics-addr: %w", n.cfg.File, err)
	}
	n.metricsLn = ln
	return nil
}

// serveMetrics serves GET /metrics on the listener until ctx ends.
func (n *Node) serveMetrics(ctx context.Context) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		n.writeMetrics(w)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
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

// writeMetrics writes the node's counters in the Prometheus text format.
func (n *Node) writeMetrics(w io.Writer) {
	m := metricWriter{w: w}
	m.gauge("scrimp_cluster_members", "Live members of the gossip cluster as this node sees them, itself included.", float64(n.cluster.Members()))
	if n.lb != nil {
		s := n.lb.Stats()
		m.counter("scrimp_lb_renders_total", "Configurations rendered from the membership.", s.Renders)
		m.counter("scrimp_lb_reloads_total", "Changed configurations the proxy checked and loaded (a reload, or its first start).", s.Applies)
		m.counter("scrimp_lb_runtime_updates_total", "Changed configurations applied through the proxy's runtime API, without a reload.", s.Updates)
		m.counter("scrimp_lb_runtime_update_failures_total", "Runtime API updates that failed and fell back to a reload.", s.UpdateFailures)
		m.counter("scrimp_lb_rejected_total", "Changed configurations the proxy refused; the previous one kept running.", s.Rejected)
		ok := 1.0
		if s.LastError != nil {
			ok = 0
		}
		m.gauge("scrimp_lb_last_apply_ok", "1 when the last changed configuration was accepted, 0 when the proxy refused it.", ok)
		m.gauge("scrimp_lb_backends", "Backend nodes in the membership.", float64(n.cluster.Snapshot().Backends()))
		m.gauge("scrimp_lb_check_down_instances", "Instances the membership says serve but the load balancer's checks fail, left out of the configuration.", float64(s.CheckDown))
		m.gauge("scrimp_lb_guarded_instances", "Instances lost in a mass loss and kept in the configuration by the mass-loss guard.", float64(s.Guarded))
		m.counter("scrimp_lb_mass_loss_events_total", "Mass losses the guard caught, one per application.", s.GuardEvents)
		m.gauge("scrimp_lb_refused_instances", "Application instances the load balancer refuses to route to now: another application holds what they claim, or lb.listen-ports or lb.applications does not allow them.", float64(s.Refused))
		m.counter("scrimp_lb_refusals_total", "Refusals of application instances as they began, one per instance and reason.", s.RefusalEvents)
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
		m.header("scrimp_backend_applications", "gauge", "Applications this backend advertises, by state.")
		for _, st := range []catalog.State{catalog.StateUp, catalog.StateDraining, catalog.StateDown} {
			fmt.Fprintf(w, "scrimp_backend_applications{state=%q} %d\n", st, counts[st])
		}
	}
}

// metricWriter writes Prometheus text-format samples without labels.
type metricWriter struct{ w io.Writer }

func (m metricWriter) header(name, kind, help string) {
	fmt.Fprintf(m.w, "# HELP %s %s\n# TYPE %s %s\n", name, strings.ReplaceAll(help, "\n", " "), name, kind)
}

func (m metricWriter) counter(name, help string, v int) {
	m.header(name, "counter", help)
	fmt.Fprintf(m.w, "%s %d\n", name, v)
}

func (m metricWriter) gauge(name, help string, v float64) {
	m.header(name, "gauge", help)
	fmt.Fprintf(m.w, "%s %g\n", name, v)
}
