package node

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/internal/loopback"
	"github.com/scrimplb/scrimp/lb"
)

// A member advertises a tcp application on a listen port that another
// process on the load balancer holds: scrimp's validation and admission
// allow it, nginx -t and haproxy -c pass it (they do not bind), and the
// reload fails (issue 13: every later configuration failed with it). A
// healthy application joins at the same time. The load balancer narrows
// the refused configuration down to the bad instance, quarantines and
// reports it, and serves the rest; later changes still apply, and the bad
// member's fixed advertisement is served.
func TestQuarantineHeldPort(t *testing.T) {
	for _, c := range []struct{ generator, net string }{{"nginx", "127.0.191"}, {"haproxy", "127.0.192"}} {
		t.Run(c.generator, func(t *testing.T) { testQuarantineHeldPort(t, c.generator, c.net) })
	}
}

// getFrom sends one HTTP request to addr (through the proxy) and returns
// who answered.
func getFrom(addr string) (string, error) {
	resp, err := client.Get("http://" + addr + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	return strings.TrimPrefix(strings.TrimSpace(string(body)), "hello from "), nil
}

func testQuarantineHeldPort(t *testing.T, generator, net3 string) {
	var logs *tapLines
	tc := newTestClusterSetup(t, net3, "local", generator, nil, func(tc *testCluster) {
		tc.logger, logs = tapLogger(tc.logger)
	})
	lbIP := net3 + ".1"
	legit := tc.addBackend(1)
	tc.waitServed(10*time.Second, legit.name)

	// Another process holds a port on the load balancer's address.
	held, err := net.Listen("tcp", lbIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { held.Close() })
	heldPort := held.Addr().(*net.TCPAddr).Port
	finePort, err := loopback.FreePort(lbIP)
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	evil := tc.addBackendEdit(2, 5*time.Second, 0, renamed("evil",
		catalog.Application{Name: "evil", ListenPort: heldPort, Protocol: catalog.ProtocolTCP}))
	tc.addBackendEdit(3, 5*time.Second, 0, renamed("fine",
		catalog.Application{Name: "fine", ListenPort: finePort, Protocol: catalog.ProtocolTCP}))
	fineAddr := fmt.Sprintf("%s:%d", lbIP, finePort)
	waitFor(t, "the healthy newcomer served through the proxy", 60*time.Second, func() bool {
		who, err := getFrom(fineAddr)
		return err == nil && who == "backend-3"
	})
	served := time.Since(start)
	waitFor(t, "evil quarantined", 60*time.Second, func() bool { return tc.lb.Stats().Quarantined == 1 })
	quarantined := time.Since(start)
	tc.requireAll(t, legit.name)

	r := tc.refusal(t, "evil", "evil")
	if !strings.HasPrefix(r.Reason, lb.QuarantineReason) {
		t.Errorf("reason %q, want it to start with %q", r.Reason, lb.QuarantineReason)
	}
	requireRefusalReported(t, tc, logs, r)
	changes, _ := tc.lb.lb.History()
	trials := 0
	for _, o := range changes {
		if o.Result == lb.ResultQuarantined {
			trials = o.Trials
			t.Logf("quarantine pass: %d trials, check %v, proxy %v, error %q", o.Trials, o.Check, o.Proxy, o.Error)
		}
	}
	if trials == 0 {
		t.Errorf("no quarantine pass in the history: %+v", changes)
	}
	t.Logf("%s: healthy newcomer served %v after the joins, evil quarantined after %v (%d trials, %d proxy reloads)",
		generator, served.Round(time.Millisecond), quarantined.Round(time.Millisecond), trials, tc.lb.ProxyReloads())

	// A later change applies while evil stays quarantined.
	before := tc.lb.Stats().Trials
	web2 := tc.addBackend(4)
	tc.waitServed(30*time.Second, legit.name, web2.name)
	if s := tc.lb.Stats(); s.Quarantined != 1 || s.Trials != before {
		t.Errorf("after a new backend: %d quarantined, %d more trials; want evil still quarantined and no trials", s.Quarantined, s.Trials-before)
	}

	// evil's advertisement changes to a port the proxy can take: tried
	// again and served.
	fixedPort, err := loopback.FreePort(lbIP)
	if err != nil {
		t.Fatal(err)
	}
	sec := *evil.node.cfg.Backend
	sec.Applications = []config.Application{{Application: catalog.Application{
		Name: "evil", ListenPort: fixedPort, ApplicationPort: sec.Applications[0].ApplicationPort, Protocol: catalog.ProtocolTCP}}}
	if err := evil.node.backend.Reload(&sec); err != nil {
		t.Fatal(err)
	}
	fixedAddr := fmt.Sprintf("%s:%d", lbIP, fixedPort)
	waitFor(t, "evil's fixed advertisement served", 30*time.Second, func() bool {
		who, err := getFrom(fixedAddr)
		return err == nil && who == "backend-2"
	})
	if s := tc.lb.Stats(); s.Quarantined != 0 {
		t.Errorf("%d quarantined after the fix, want 0", s.Quarantined)
	}
	if who, err := getFrom(fineAddr); err != nil || who != "backend-3" {
		t.Errorf("fine after the fix: %q, %v", who, err)
	}
}
