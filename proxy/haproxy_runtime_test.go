package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/generator"
)

// slotCluster renders runtime-api configurations for a set of upstreams on
// 127.0.0.1, each answering its own name.
type slotCluster struct {
	t        *testing.T
	gen      generator.Generator
	dir      string
	port     int
	backends map[string]*httptest.Server
	prev     *generator.Runtime
}

func newSlotCluster(t *testing.T, h *ManagedHAProxy, names ...string) *slotCluster {
	t.Helper()
	g, err := generator.New("haproxy", []byte(`{"runtime-api": true, "server-slots": 4}`))
	if err != nil {
		t.Fatal(err)
	}
	c := &slotCluster{t: t, gen: g, dir: h.Dir(), port: freePort(t), backends: map[string]*httptest.Server{}}
	for _, n := range names {
		c.backends[n] = upstream(t, n)
	}
	return c
}

// render renders the configuration for the serving and draining backends
// (weights by name, 1 when absent), after the last rendered one.
func (c *slotCluster) render(serving, draining []string, weights map[string]int) generator.Output {
	c.t.Helper()
	var nodes []catalog.Node
	add := func(name string, state catalog.State) {
		ap := netip.MustParseAddrPort(c.backends[name].Listener.Addr().String())
		nodes = append(nodes, catalog.Node{Name: name, Addr: ap.Addr(), Role: catalog.RoleBackend, Applications: []catalog.Application{{
			Name: "web", ListenPort: c.port, ApplicationPort: int(ap.Port()), Protocol: catalog.ProtocolHTTP, Weight: weights[name], State: state,
		}}})
	}
	for _, n := range serving {
		add(n, catalog.StateUp)
	}
	for _, n := range draining {
		add(n, catalog.StateDraining)
	}
	out, err := c.gen.Render(generator.Input{Snapshot: catalog.NewSnapshot(nodes), ListenAddr: "127.0.0.1", Standalone: true, StateDir: c.dir, Previous: c.prev})
	if err != nil {
		c.t.Fatal(err)
	}
	if out.Runtime == nil {
		c.t.Fatal("no slots rendered")
	}
	return out
}

// TestManagedHAProxyRuntimeUpdate changes the backends of a real HAProxy
// under steady keep-alive traffic only through Update: joins, a drain, a
// leave, a weight change, a freed slot taken by another backend. It must
// never reload, never fail a request, and serve exactly the backends of
// each step. Then a slot change that needs more slots is refused by Update
// and reloaded, still without a failed request; with every backend gone
// HAProxy answers 503 with Retry-After; and HAProxy restarted after a
// crash serves the slots Update last wrote to haproxy.cfg.
func TestManagedHAProxyRuntimeUpdate(t *testing.T) {
	h, _ := newManagedHAProxy(t)
	c := newSlotCluster(t, h, "u1", "u2", "u3", "u4", "u5", "u6")
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
	defer cancel()
	update := func(out generator.Output) {
		t.Helper()
		if err := h.Update(ctx, out.Config, out.Runtime); err != nil {
			t.Fatalf("Update: %v", err)
		}
		c.prev = out.Runtime
	}
	first := c.render([]string{"u1", "u2"}, nil, nil)
	applyHAProxy(t, h, first.Config)
	update(first) // what the load balancer does after every Apply

	// Steady traffic over keep-alive connections for the whole test.
	var (
		mu       sync.Mutex
		seen     = map[string]time.Time{} // backend → last answer
		sent     atomic.Int64
		failures []string
	)
	loadCtx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	t.Cleanup(client.CloseIdleConnections)
	for range 4 {
		wg.Go(func() {
			for loadCtx.Err() == nil {
				body, err := getWith(client, c.port)
				sent.Add(1)
				mu.Lock()
				if err != nil {
					failures = append(failures, err.Error())
				} else {
					seen[body] = time.Now()
				}
				mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	var stopOnce sync.Once
	stopTraffic := func() {
		stopOnce.Do(func() {
			stopLoad()
			wg.Wait()
		})
	}
	defer stopTraffic()
	// expect waits until every backend in want answers after the step and
	// no other one does for a while.
	expect := func(step string, want ...string) {
		t.Helper()
		at := time.Now()
		poll(t, step+": "+strings.Join(want, ",")+" answer", func() string {
			mu.Lock()
			defer mu.Unlock()
			for _, n := range want {
				if !seen[n].After(at) {
					return n + " has not answered"
				}
			}
			return ""
		})
		quiet := time.Now()
		time.Sleep(200 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		for n, last := range seen {
			if last.After(quiet) && !slices.Contains(want, n) {
				t.Errorf("%s: %s still answers", step, n)
			}
		}
	}
	expect("start", "u1", "u2")

	steps := []struct {
		name              string
		serving, draining []string
		weights           map[string]int
	}{
		{name: "u3 joins", serving: []string{"u1", "u2", "u3"}},
		{name: "u4 joins", serving: []string{"u1", "u2", "u3", "u4"}},
		{name: "u1 drains", serving: []string{"u2", "u3", "u4"}, draining: []string{"u1"}},
		{name: "u1 leaves", serving: []string{"u2", "u3", "u4"}},
		{name: "u2 weighs 5", serving: []string{"u2", "u3", "u4"}, weights: map[string]int{"u2": 5}},
		{name: "u2 leaves, u5 takes a free slot", serving: []string{"u3", "u4", "u5"}},
	}
	for _, st := range steps {
		update(c.render(st.serving, st.draining, st.weights))
		expect(st.name, st.serving...)
	}
	if got := hapShowProc(t, h).reloads; got != 0 || h.Reloads() != 0 {
		t.Errorf("HAProxy reloaded %d times (Reloads() = %d); want none", got, h.Reloads())
	}
	// The first Update after Apply found nothing to do; the steps changed
	// slots.
	if got := h.Updates(); got != 1+len(steps) {
		t.Errorf("Updates() = %d, want %d", got, 1+len(steps))
	}
	// (Two more follow: all backends gone, and back.)

	// Five backends do not fit in four slots: the skeleton changed, and
	// Update says so instead of half-applying it. The caller reloads, then
	// re-asserts the slots; the new workers must serve from their first
	// request (a 503 rule on "nbsrv eq 0" once failed requests here).
	grown := c.render([]string{"u2", "u3", "u4", "u5", "u6"}, nil, nil)
	if err := h.Update(ctx, grown.Config, grown.Runtime); err == nil || !strings.Contains(err.Error(), "not in the running configuration") {
		t.Errorf("Update with new slots: %v, want an error naming the missing slot", err)
	}
	applyHAProxy(t, h, grown.Config)
	update(grown)
	expect("more slots", "u2", "u3", "u4", "u5", "u6")
	if h.Reloads() != 1 {
		t.Errorf("%d reloads, want 1 (more slots)", h.Reloads())
	}

	mu.Lock()
	n, failed := sent.Load(), slices.Clone(failures)
	mu.Unlock()
	t.Logf("%d requests through %d slot updates and a reload for more slots, %d failed", n, len(steps), len(failed))
	if len(failed) > 0 {
		t.Errorf("%d of %d requests failed, first: %s", len(failed), n, failed[0])
	}

	// Every backend gone (the application retained): no reload either,
	// and HAProxy answers 503 with Retry-After itself.
	stopTraffic()
	web := catalog.Application{Name: "web", ListenPort: c.port, ApplicationPort: 1, Protocol: catalog.ProtocolHTTP}
	empty, err := c.gen.Render(generator.Input{Retained: []catalog.Application{web}, ListenAddr: "127.0.0.1", Standalone: true, StateDir: c.dir, Previous: c.prev})
	if err != nil {
		t.Fatal(err)
	}
	update(empty)
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", c.port))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "5" || !strings.Contains(string(body), "web has no live backend") {
		t.Errorf("without backends: %s, Retry-After %q, %q; want 503, 5, a message", resp.Status, resp.Header.Get("Retry-After"), body)
	}
	if h.Reloads() != 1 {
		t.Errorf("%d reloads, want still 1", h.Reloads())
	}
	update(c.render([]string{"u3", "u4", "u5"}, nil, nil))

	// A crash: the supervisor restarts HAProxy from haproxy.cfg, which
	// Update kept current, so the restarted one serves u3, u4 and u5.
	syscall.Kill(-hapMasterPid(h), syscall.SIGKILL)
	answered := map[string]bool{}
	poll(t, "the restarted HAProxy serves u3, u4 and u5", func() string {
		body, err := getWith(client, c.port)
		switch {
		case err != nil:
			return err.Error()
		case body != "u3" && body != "u4" && body != "u5":
			t.Errorf("restarted HAProxy sent a request to %s", body)
		}
		answered[body] = true
		if len(answered) < 3 {
			return fmt.Sprintf("only %v answered", answered)
		}
		return ""
	})
}

// getWith GETs 127.0.0.1:port with client and returns the body.
func getWith(client *http.Client, port int) (string, error) {
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s: %q", resp.Status, b)
	}
	return string(b), nil
}

func TestSlotCommands(t *testing.T) {
	addr := netip.MustParseAddrPort("10.0.0.1:8080")
	slot := func(state generator.SlotState) generator.Slot {
		return generator.Slot{Backend: "scrimp_web", Server: "s1", Node: "b1", Addr: addr, Weight: 2, State: state}
	}
	running := hapServerState{addr: addr.Addr(), port: 8080, weight: 2, admin: 0x04}
	tests := []struct {
		name  string
		slot  generator.Slot
		state hapServerState
		want  []string
	}{
		{name: "ready and in place", slot: slot(generator.SlotReady), state: running},
		{name: "free slot filled", slot: slot(generator.SlotReady), state: hapServerState{addr: netip.MustParseAddr("127.0.0.1"), port: 1, weight: 1, admin: 0x05},
			want: []string{"set server scrimp_web/s1 addr 10.0.0.1 port 8080", "set server scrimp_web/s1 weight 2", "set server scrimp_web/s1 state ready"}},
		{name: "weight only", slot: slot(generator.SlotReady), state: hapServerState{addr: addr.Addr(), port: 8080, weight: 7},
			want: []string{"set server scrimp_web/s1 weight 2"}},
		{name: "drained back to ready", slot: slot(generator.SlotReady), state: hapServerState{addr: addr.Addr(), port: 8080, weight: 2, admin: 0x08},
			want: []string{"set server scrimp_web/s1 state ready"}},
		{name: "to drain", slot: slot(generator.SlotDrain), state: running, want: []string{"set server scrimp_web/s1 state drain"}},
		{name: "drain satisfied by maintenance", slot: slot(generator.SlotDrain), state: hapServerState{admin: 0x05}},
		{name: "freed", slot: slot(generator.SlotMaint), state: running, want: []string{"set server scrimp_web/s1 state maint"}},
		{name: "already free", slot: slot(generator.SlotMaint), state: hapServerState{admin: 0x01}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := slotCommands([]generator.Slot{tt.slot}, map[string]hapServerState{"scrimp_web/s1": tt.state})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("commands %q, want %q", got, tt.want)
			}
		})
	}
	if _, err := slotCommands([]generator.Slot{slot(generator.SlotReady)}, nil); err == nil {
		t.Error("a slot the running HAProxy lacks gave no error")
	}
}

func TestParseServersState(t *testing.T) {
	const out = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n" +
		"3 scrimp_web 1 s1 10.0.0.1 2 4 3 1 0 1 0 2 6 0 0 1 - 8080 - 0 0 - - 0\n" +
		"3 scrimp_web 2 s2 ::1 0 5 1 1 3 1 0 0 14 0 0 1 - 1 - 0 0 - - 0\n\n"
	got, err := parseServersState(out)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]hapServerState{
		"scrimp_web/s1": {addr: netip.MustParseAddr("10.0.0.1"), port: 8080, admin: 4, weight: 3},
		"scrimp_web/s2": {addr: netip.MustParseAddr("::1"), port: 1, admin: 5, weight: 1},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("parseServersState = %v, want %v", got, want)
	}
	for _, bad := range []string{"", "2\n", "1\n3 scrimp_web 1 s1\n", "1\n3 scrimp_web 1 s1 10.0.0.1 2 x 3 1 0 1 0 2 6 0 0 1 - 8080 - 0 0 - - 0\n"} {
		if _, err := parseServersState(bad); err == nil {
			t.Errorf("parseServersState(%q) gave no error", bad)
		}
	}
}
