package lb

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/generator"
)

// certSource is a CertSource the test changes by hand.
type certSource struct {
	mu      sync.Mutex
	certs   []generator.TLSCert
	route   *generator.ACMERoute
	changes chan struct{}
}

func newCertSource(route *generator.ACMERoute, certs ...generator.TLSCert) *certSource {
	return &certSource{certs: certs, route: route, changes: make(chan struct{}, 1)}
}

func (s *certSource) Certs() ([]generator.TLSCert, *generator.ACMERoute) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var r *generator.ACMERoute
	if s.route != nil {
		c := *s.route
		c.Domains = slices.Clone(c.Domains)
		r = &c
	}
	return slices.Clone(s.certs), r
}

func (s *certSource) Changes() <-chan struct{} { return s.changes }

// set replaces the certificates (nil keeps them: their files' contents
// changed) and signals a change.
func (s *certSource) set(certs ...generator.TLSCert) {
	s.mu.Lock()
	if certs != nil {
		s.certs = certs
	}
	s.mu.Unlock()
	select {
	case s.changes <- struct{}{}:
	default:
	}
}

// certRecorder is a recorder that can also load certificates without a
// reload (CertProxy); fail makes UpdateCerts fail.
type certRecorder struct {
	recorder
	cmu     sync.Mutex
	updates [][]generator.TLSCert
	fail    bool
}

func (c *certRecorder) UpdateCerts(_ context.Context, certs []generator.TLSCert) error {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	c.updates = append(c.updates, certs)
	if c.fail {
		return errors.New("set ssl cert: not loaded")
	}
	return nil
}

func (c *certRecorder) updateCount() int {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	return len(c.updates)
}

// reloadRecorder is a recorder that reloads its running text
// (CertReloader).
type reloadRecorder struct {
	recorder
	reloads int
}

func (r *reloadRecorder) ReloadCerts(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reloads++
	return nil
}

var (
	certApp  = generator.TLSCert{Domains: []string{"app.test"}, Cert: "/tls/app.test.crt", Key: "/tls/app.test.key"}
	certNew  = generator.TLSCert{Domains: []string{"new.test"}, Cert: "/tls/new.test.crt", Key: "/tls/new.test.key"}
	certIdle = generator.TLSCert{Domains: []string{"idle.test"}, Cert: "/tls/idle.test.crt", Key: "/tls/idle.test.key"}
	route    = &generator.ACMERoute{Handler: netip.MustParseAddrPort("127.0.0.1:5002"), Port: 80, Domains: []string{"app.test", "new.test"}}
)

// httpsMembers returns a membership with an https application for
// domains.
func httpsMembers(domains ...string) *members {
	m := newMembers()
	m.set(catalog.Node{Name: "b1", Addr: netip.MustParseAddr("10.0.0.1"), Role: catalog.RoleBackend,
		Applications: []catalog.Application{{Name: "app", ListenPort: 443, ApplicationPort: 8443, Protocol: catalog.ProtocolHTTPS, Domains: domains}}})
	return m
}

func startCertLB(t *testing.T, m *members, p Proxy, src *certSource) *LB {
	t.Helper()
	return startLBWith(t, Config{Members: m, Proxy: p, Certs: src, Checks: CheckConfig{Disabled: true},
		Timing: Timing{Quiet: 10 * time.Millisecond, MaxWait: 50 * time.Millisecond}})
}

func TestCertsAreRendered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &recorder{}
		startCertLB(t, httpsMembers("app.test"), p, newCertSource(route, certApp, certIdle))
		settle(time.Second)
		config, _ := p.last()
		for _, want := range []string{"ssl_certificate /tls/app.test.crt;", "location ^~ /.well-known/acme-challenge/", "proxy_pass http://127.0.0.1:5002;", "server_name app.test;"} {
			if !bytes.Contains(config, []byte(want)) {
				t.Errorf("configuration lacks %q:\n%s", want, config)
			}
		}
	})
}

func TestCertChange(t *testing.T) {
	tests := []struct {
		name string
		// proxy returns the proxy and its count of UpdateCerts and
		// Reload calls.
		proxy       func() (Proxy, func() (updates, reloads int))
		want        Result
		wantApplies int // Apply calls after the change
		stats       Stats
	}{
		{
			name: "plain proxy: the same text applied again",
			proxy: func() (Proxy, func() (int, int)) {
				return &recorder{}, func() (int, int) { return 0, 0 }
			},
			want: ResultCertsReloaded, wantApplies: 1, stats: Stats{CertReloads: 1},
		},
		{
			name: "CertReloader: reloaded",
			proxy: func() (Proxy, func() (int, int)) {
				p := &reloadRecorder{}
				return p, func() (int, int) { p.mu.Lock(); defer p.mu.Unlock(); return 0, p.reloads }
			},
			want: ResultCertsReloaded, stats: Stats{CertReloads: 1},
		},
		{
			name: "CertProxy: no reload",
			proxy: func() (Proxy, func() (int, int)) {
				p := &certRecorder{}
				return p, func() (int, int) { return p.updateCount(), 0 }
			},
			want: ResultCertsUpdated, stats: Stats{CertUpdates: 1},
		},
		{
			name: "CertProxy failing: falls back to a reload",
			proxy: func() (Proxy, func() (int, int)) {
				p := &certRecorder{fail: true}
				return p, func() (int, int) { return p.updateCount(), 0 }
			},
			want: ResultCertsReloaded, wantApplies: 1, stats: Stats{CertUpdateFailures: 1, CertReloads: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p, calls := tt.proxy()
				src := newCertSource(route, certApp, certIdle)
				var outcomes []Outcome
				l := startLBWith(t, Config{Members: httpsMembers("app.test"), Proxy: p, Certs: src, Checks: CheckConfig{Disabled: true},
					Timing:    Timing{Quiet: 10 * time.Millisecond, MaxWait: 50 * time.Millisecond},
					OnOutcome: func(o Outcome) { outcomes = append(outcomes, o) }})
				settle(time.Second)
				rec := recorderOf(p)
				before, _ := rec.count()
				config, _ := rec.last()
				if before != 1 {
					t.Fatalf("%d applies before the change, want 1", before)
				}

				src.set() // app.test's files got new contents
				settle(time.Second)
				after, _ := rec.count()
				if got := after - before; got != tt.wantApplies {
					t.Errorf("%d applies after the change, want %d", got, tt.wantApplies)
				}
				if now, _ := rec.last(); !bytes.Equal(now, config) {
					t.Errorf("the text changed:\n%s", now)
				}
				updates, reloads := calls()
				if cp, ok := p.(*certRecorder); ok {
					if updates != 1 || !slices.EqualFunc(cp.updates[0], []generator.TLSCert{certApp}, func(a, b generator.TLSCert) bool { return a.Cert == b.Cert }) {
						t.Errorf("UpdateCerts calls %v, want one with %s only (idle.test is in no configuration)", cp.updates, certApp.Cert)
					}
				}
				if _, ok := p.(*reloadRecorder); ok && reloads != 1 {
					t.Errorf("%d reloads, want 1", reloads)
				}
				if got := outcomes[len(outcomes)-1].Result; got != tt.want {
					t.Errorf("last outcome %s, want %s", got, tt.want)
				}
				s := l.Stats()
				got := Stats{CertUpdates: s.CertUpdates, CertUpdateFailures: s.CertUpdateFailures, CertReloads: s.CertReloads}
				if got != tt.stats {
					t.Errorf("stats %+v, want %+v", got, tt.stats)
				}

				// Nothing more happens until the next change.
				settle(time.Minute)
				if again, _ := rec.count(); again != after {
					t.Errorf("%d more applies without a change", again-after)
				}
				if u, r := calls(); u != updates || r != reloads {
					t.Errorf("UpdateCerts/Reload called again without a change")
				}
			})
		})
	}
}

// A certificate for a name nothing served yet changes the text: a plain
// Apply, no UpdateCerts.
func TestNewCertAppliesConfig(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &certRecorder{}
		src := newCertSource(route, certApp)
		l := startCertLB(t, httpsMembers("app.test", "new.test"), p, src)
		settle(time.Second)
		config, _ := p.last()
		if bytes.Contains(config, []byte(certNew.Cert)) {
			t.Fatalf("new.test served before it has a certificate:\n%s", config)
		}
		src.set(certApp, certNew)
		settle(time.Second)
		config, _ = p.last()
		if !bytes.Contains(config, []byte("ssl_certificate "+certNew.Cert+";")) {
			t.Errorf("new.test not served with its new certificate:\n%s", config)
		}
		if n := p.updateCount(); n != 0 {
			t.Errorf("%d UpdateCerts calls, want none: the reload loaded the files", n)
		}
		if s := l.Stats(); s.Applies != 2 || s.CertUpdates != 0 || s.CertReloads != 0 {
			t.Errorf("stats %+v, want 2 applies and no certificate passes", s)
		}
	})
}

// A failed forced reload is retried after the backoff.
func TestCertReloadFailureIsRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &recorder{}
		src := newCertSource(route, certApp)
		l := startCertLB(t, httpsMembers("app.test"), p, src)
		settle(time.Second)
		p.setReject(true)
		src.set()
		settle(100 * time.Millisecond)
		if s := l.Stats(); s.Rejected != 1 || s.CertReloads != 0 {
			t.Fatalf("stats %+v, want one rejection", s)
		}
		p.setReject(false)
		settle(maxBackoff)
		if s := l.Stats(); s.CertReloads != 1 || s.LastError != nil {
			t.Errorf("stats %+v, want the reload retried and done", s)
		}
	})
}

// recorderOf returns the recorder inside each test proxy.
func recorderOf(p Proxy) *recorder {
	switch p := p.(type) {
	case *recorder:
		return p
	case *certRecorder:
		return &p.recorder
	case *reloadRecorder:
		return &p.recorder
	}
	panic("unknown proxy")
}
