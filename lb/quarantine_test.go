package lb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/generator"
)

// picky is a proxy that refuses every configuration with a tcp listener on
// one of its bad ports, as nginx refuses a port it cannot use. With
// bindOnly its Check passes them and only Apply refuses them, as with a
// port another process holds (nginx -t does not bind).
type picky struct {
	mu       sync.Mutex
	bad      map[int]bool
	bindOnly bool
	running  []byte
	checks   int
	applies  int // Apply calls, refused ones included
	reloads  int // configurations made live
}

func newPicky(bindOnly bool, bad ...int) *picky {
	p := &picky{bad: map[int]bool{}, bindOnly: bindOnly}
	for _, b := range bad {
		p.bad[b] = true
	}
	return p
}

func (p *picky) refuses(config []byte) error {
	for port := range p.bad {
		if bytes.Contains(config, fmt.Appendf(nil, "listen 127.0.0.1:%d;", port)) {
			return fmt.Errorf("nginx: [emerg] bind() to 127.0.0.1:%d failed (98: Address already in use)\nnginx: configuration file test failed", port)
		}
	}
	return nil
}

// The time a check and a reload take, about nginx's.
const (
	pickyCheck  = 5 * time.Millisecond
	pickyReload = 20 * time.Millisecond
)

func (p *picky) Check(_ context.Context, config []byte) error {
	time.Sleep(pickyCheck)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.checks++
	if p.bindOnly {
		return nil
	}
	return p.refuses(config)
}

func (p *picky) Apply(_ context.Context, config []byte) error {
	time.Sleep(pickyReload)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.applies++
	if err := p.refuses(config); err != nil {
		return err
	}
	p.running = config
	p.reloads++
	return nil
}

func (p *picky) state() (running []byte, checks, applies int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.running, p.checks, p.applies
}

// standalone renders a whole nginx.conf, with a stream block for tcp.
var standalone = generator.Input{ListenAddr: "127.0.0.1", Standalone: true, StateDir: "/var/lib/scrimp"}

// applyOnly hides picky's Check: a proxy that can only apply.
type applyOnly struct{ p *picky }

func (a applyOnly) Apply(ctx context.Context, config []byte) error { return a.p.Apply(ctx, config) }

func listens(config []byte, port int) bool {
	return bytes.Contains(config, fmt.Appendf(nil, "listen 127.0.0.1:%d;", port))
}

// quarantinedOf returns the quarantine refusals, "app@node".
func quarantinedOf(rs []Refusal) []string {
	var out []string
	for _, r := range rs {
		if strings.HasPrefix(r.Reason, QuarantineReason) {
			out = append(out, r.Application+"@"+r.Node)
		}
	}
	return out
}

// TestQuarantine: a member's application the proxy refuses, advertised
// together with a healthy newcomer, is narrowed down and quarantined while
// the newcomer is applied; later changes apply; the bad instance is tried
// again when its advertisement changes. The same with a proxy that checks,
// one whose check passes but whose reload fails, and one without a check.
func TestQuarantine(t *testing.T) {
	for _, tc := range []struct {
		name       string
		bindOnly   bool
		checker    bool
		wantChecks bool // trials are checks, not reloads
	}{
		{"refused by the check", false, true, true},
		{"check passes, reload fails", true, true, false},
		{"proxy without a check", false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := newMembers()
				web := backendAt("web-1", "10.0.0.1", tcpApp("web", 7001))
				m.set(web)
				pk := newPicky(tc.bindOnly, 7666)
				var p Proxy = pk
				if !tc.checker {
					p = applyOnly{pk}
				}
				timing := Timing{Quiet: 10 * time.Millisecond, MaxWait: 50 * time.Millisecond}
				var outcomes []Outcome
				l := startLBWith(t, Config{Members: m, Proxy: p, Timing: timing, Checks: CheckConfig{Disabled: true}, Input: standalone,
					RetainEmpty: time.Hour, OnOutcome: func(o Outcome) { outcomes = append(outcomes, o) }})
				settle(100 * time.Millisecond)
				_, _, applies0 := pk.state()

				// The bad application and a healthy one join at once.
				bad := backendAt("evil", "10.0.0.9", tcpApp("evil", 7666))
				good := backendAt("good", "10.0.0.2", tcpApp("fine", 7002))
				m.set(web, bad, good)
				settle(500 * time.Millisecond)
				running, checks, applies := pk.state()
				if !listens(running, 7002) || !listens(running, 7001) || listens(running, 7666) {
					t.Fatalf("running configuration after the bad join: fine %v web %v evil %v; want fine and web, not evil",
						listens(running, 7002), listens(running, 7001), listens(running, 7666))
				}
				if q := quarantinedOf(l.Refusals()); len(q) != 1 || q[0] != "evil@evil" {
					t.Fatalf("quarantined %v, want [evil@evil]; refusals %+v", q, l.Refusals())
				}
				r := l.Refusals()[0]
				if !strings.Contains(r.Reason, "bind() to 127.0.0.1:7666 failed") || strings.Contains(r.Reason, "\n") {
					t.Errorf("reason %q: want the proxy's first error line", r.Reason)
				}
				st := l.Stats()
				if st.Quarantined != 1 || st.QuarantineEvents != 1 || st.Refused != 1 || st.LastError != nil {
					t.Errorf("stats %+v: want 1 quarantined, 1 event, 1 refused, no error", st)
				}
				o := outcomes[len(outcomes)-1]
				if o.Result != ResultQuarantined || o.Quarantined != 1 || o.Trials == 0 || o.Trials > 4 || o.Error == "" {
					t.Errorf("outcome %+v: want quarantined, 1 instance, 1-4 trials, the error", o)
				}
				if tc.checker && o.Check == 0 {
					t.Errorf("outcome %+v: want the checks' duration", o)
				}
				reloadTrials := applies - applies0
				t.Logf("%s: %d trials, %d checks, %d Apply calls", tc.name, o.Trials, checks, reloadTrials)
				if tc.wantChecks && reloadTrials != 1 {
					t.Errorf("%d Apply calls, want 1: trials by check, then the rest applied once", reloadTrials)
				}

				// The quarantine holds while evil advertises the same: a
				// new backend of web applies without a trial.
				web2 := backendAt("web-2", "10.0.0.3", tcpApp("web", 7001))
				m.set(web, web2, bad, good)
				settle(500 * time.Millisecond)
				running, _, _ = pk.state()
				if !bytes.Contains(running, []byte("10.0.0.3:9000")) || listens(running, 7666) {
					t.Fatalf("a new backend during the quarantine was not applied:\n%s", running)
				}
				if o := outcomes[len(outcomes)-1]; o.Result != ResultApplied || o.Trials != 0 {
					t.Errorf("outcome %+v: want applied without trials", o)
				}
				if got := l.Stats().Trials; got != outcomes[len(outcomes)-2].Trials {
					t.Errorf("Stats.Trials = %d, want only the quarantine's %d", got, outcomes[len(outcomes)-2].Trials)
				}

				// evil's advertisement changes to a port the proxy takes:
				// tried again, and served.
				fixed := backendAt("evil", "10.0.0.9", tcpApp("evil", 7667))
				m.set(web, web2, fixed, good)
				settle(500 * time.Millisecond)
				running, _, _ = pk.state()
				if !listens(running, 7667) {
					t.Fatalf("the changed advertisement was not applied")
				}
				if q := quarantinedOf(l.Refusals()); len(q) != 0 || l.Stats().Quarantined != 0 {
					t.Errorf("still quarantined: %v", q)
				}
			})
		})
	}
}

// TestQuarantineEnds: a quarantined instance is tried again when its node
// leaves and comes back, and on Resync; an application only ever
// quarantined is not retained as an empty one.
func TestQuarantineEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMembers()
		web := backendAt("web-1", "10.0.0.1", tcpApp("web", 7001))
		bad := backendAt("evil", "10.0.0.9", tcpApp("evil", 7666))
		m.set(web, bad)
		pk := newPicky(false, 7666)
		timing := Timing{Quiet: 10 * time.Millisecond, MaxWait: 50 * time.Millisecond}
		l := startLBWith(t, Config{Members: m, Proxy: pk, Timing: timing, Checks: CheckConfig{Disabled: true}, Input: standalone, RetainEmpty: time.Hour})
		settle(500 * time.Millisecond)
		if q := quarantinedOf(l.Refusals()); len(q) != 1 {
			t.Fatalf("quarantined %v at the first render, want evil", q)
		}
		trials := l.Stats().Trials

		// The same advertisement again: no trial.
		m.set(web, bad)
		settle(500 * time.Millisecond)
		if got := l.Stats().Trials; got != trials {
			t.Errorf("%d trials for an unchanged quarantined advertisement, want none", got-trials)
		}

		// Resync tries it again (and quarantines it again).
		l.Resync()
		settle(500 * time.Millisecond)
		if got := l.Stats().Trials; got == trials {
			t.Error("Resync did not try the quarantined instance again")
		}
		if st := l.Stats(); st.Quarantined != 1 || st.QuarantineEvents != 2 {
			t.Errorf("after a resync: %+v, want it quarantined again", st)
		}

		// Its node leaves: not retained as an empty application (its
		// listener never worked), and no longer quarantined.
		m.set(web)
		settle(500 * time.Millisecond)
		running, _, _ := pk.state()
		if listens(running, 7666) {
			t.Fatal("an application only ever quarantined was retained")
		}
		if st := l.Stats(); st.Quarantined != 0 || len(l.Refusals()) != 0 {
			t.Errorf("after its node left: %+v, refusals %v", st, l.Refusals())
		}
		// It comes back the same: tried, and quarantined again.
		trials = l.Stats().Trials
		m.set(web, bad)
		settle(500 * time.Millisecond)
		if st := l.Stats(); st.Trials == trials || st.Quarantined != 1 {
			t.Errorf("after its node came back: %+v, want tried and quarantined", st)
		}
		// An application the proxy did run is retained when its backends
		// go: web keeps its listener.
		m.set(bad)
		settle(500 * time.Millisecond)
		if running, _, _ = pk.state(); !listens(running, 7001) {
			t.Error("an accepted application was not retained")
		}
	})
}

// TestQuarantineBounded: many candidates, many of them bad: the search
// stops after maxTrials, quarantines what it has not decided, and never
// applies a bad one.
func TestQuarantineBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMembers()
		pk := newPicky(false)
		var nodes []catalog.Node
		var badPorts []int
		for i := range 200 {
			port := 10000 + i
			if i%7 == 3 {
				badPorts = append(badPorts, port)
				pk.bad[port] = true
			}
			nodes = append(nodes, backendAt(fmt.Sprintf("n%03d", i), fmt.Sprintf("10.0.%d.%d", i/200, 1+i%200), tcpApp(fmt.Sprintf("a%03d", i), port)))
		}
		m.set(nodes...)
		timing := Timing{Quiet: 10 * time.Millisecond, MaxWait: 50 * time.Millisecond}
		l := startLBWith(t, Config{Members: m, Proxy: pk, Timing: timing, Checks: CheckConfig{Disabled: true}, Input: standalone})
		settle(500 * time.Millisecond)
		st := l.Stats()
		running, _, _ := pk.state()
		for _, port := range badPorts {
			if listens(running, port) {
				t.Fatalf("bad port %d applied", port)
			}
		}
		t.Logf("200 candidates, %d bad: %d trials, %d quarantined", len(badPorts), st.Trials, st.Quarantined)
		if st.Trials > maxTrials {
			t.Errorf("%d trials, want at most %d", st.Trials, maxTrials)
		}
		if st.Quarantined < len(badPorts) || st.Quarantined == 200 {
			t.Errorf("%d quarantined, want all %d bad ones and not everything", st.Quarantined, len(badPorts))
		}
		served := 0
		for i := range 200 {
			if listens(running, 10000+i) {
				served++
			}
		}
		if served+st.Quarantined != 200 {
			t.Errorf("%d served + %d quarantined, want 200", served, st.Quarantined)
		}
	})
}

// TestQuarantineNotWhenBaseFails: when the configuration without any
// candidate is refused too, nothing is quarantined: the configuration is
// rejected as a whole and retried after the backoff.
func TestQuarantineNotWhenBaseFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMembers()
		m.set(backendAt("web-1", "10.0.0.1", tcpApp("web", 7001)))
		p := &failing{}
		timing := Timing{Quiet: 10 * time.Millisecond, MaxWait: 50 * time.Millisecond}
		l := startLBWith(t, Config{Members: m, Proxy: p, Timing: timing, Checks: CheckConfig{Disabled: true}, Input: standalone})
		settle(500 * time.Millisecond)
		st := l.Stats()
		if st.Rejected != 1 || st.Quarantined != 0 || st.LastError == nil || len(l.Refusals()) != 0 {
			t.Fatalf("%+v, refusals %v: want a rejection and nothing quarantined", st, l.Refusals())
		}
		if changes, _ := l.History(); len(changes) != 1 || changes[0].Result != ResultRejected || changes[0].Trials != 1 {
			t.Errorf("history %+v: want one pass, rejected after one trial (the base)", changes)
		}
	})
}

// failing refuses every configuration, as a broken proxy would.
type failing struct{}

func (failing) Check(context.Context, []byte) error { return errors.New("nginx: [emerg] no such file") }
func (failing) Apply(context.Context, []byte) error { return errors.New("nginx: [emerg] no such file") }
