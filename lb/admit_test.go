package lb

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/scrimplb/scrimp/catalog"
)

// app is an http application on listen port 80 for domains.
func app(name string, domains ...string) catalog.Application {
	return catalog.Application{Name: name, ListenPort: 80, ApplicationPort: 8080, Protocol: catalog.ProtocolHTTP, Domains: domains}
}

// tcpApp is a tcp application on listen port port.
func tcpApp(name string, port int) catalog.Application {
	return catalog.Application{Name: name, ListenPort: port, ApplicationPort: 9000, Protocol: catalog.ProtocolTCP}
}

// backendAt is a backend node named name at addr advertising apps.
func backendAt(name, addr string, apps ...catalog.Application) catalog.Node {
	return catalog.Node{Name: name, Addr: netip.MustParseAddr(addr), Role: catalog.RoleBackend, Applications: apps}
}

// backend is a backend node at 10.0.0.x advertising apps.
func backend(name string, apps ...catalog.Application) catalog.Node {
	return backendAt(name, fmt.Sprintf("10.0.0.%d", 1+len(name)), apps...)
}

// routes lists "app@node" for every instance snap admits, sorted.
func admitted(snap catalog.Snapshot) []string {
	var out []string
	for _, n := range snap.Nodes {
		for _, a := range n.Applications {
			out = append(out, a.Name+"@"+n.Name)
		}
	}
	slices.Sort(out)
	return out
}

// refusedOf lists "app@node" for every refusal, sorted.
func refusedOf(rs []Refusal) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Application+"@"+r.Node)
	}
	return out
}

func with(a catalog.Application, edit func(*catalog.Application)) catalog.Application {
	edit(&a)
	return a
}

func TestAdmit(t *testing.T) {
	web := app("web", "shop.example")
	tests := []struct {
		name   string
		policy Policy
		// renders are the snapshots of successive renders; the last one
		// is checked.
		renders      [][]catalog.Node
		wantAdmitted []string
		wantRefused  []string
		wantReason   string // in every refusal's reason
	}{
		{
			name: "newcomer with the same domains is refused, however its name sorts",
			renders: [][]catalog.Node{
				{backend("web-1", web)},
				{backend("web-1", web), backend("aaa-1", app("aaa", "shop.example"))},
			},
			wantAdmitted: []string{"web@web-1"},
			wantRefused:  []string{"aaa@aaa-1"},
			wantReason:   `domain shop.example path / is held by application "web"`,
		},
		{
			name: "node name order does not decide the definition of an application",
			renders: [][]catalog.Node{
				{backend("web-1", web)},
				{backend("web-1", web), backend("aaa-1", app("web", "evil.example"))},
			},
			wantAdmitted: []string{"web@web-1"},
			wantRefused:  []string{"web@aaa-1"},
			wantReason:   `application "web" is held as http on listen port 80 for shop.example`,
		},
		{
			name: "a differing listen port or protocol does not take the application either",
			renders: [][]catalog.Node{
				{backend("web-1", web)},
				{backend("web-1", web), backend("aaa-1", with(web, func(a *catalog.Application) { a.Protocol = catalog.ProtocolGRPC }))},
			},
			wantAdmitted: []string{"web@web-1"},
			wantRefused:  []string{"web@aaa-1"},
			wantReason:   `application "web" is held`,
		},
		{
			name: "more backends of the owner's definition are admitted",
			renders: [][]catalog.Node{
				{backend("web-1", web)},
				{backend("web-1", web), backend("web-2", web), backend("aaa", app("web", "shop.example", "other.example"))},
			},
			wantAdmitted: []string{"web@web-1", "web@web-2"},
			wantRefused:  []string{"web@aaa"},
		},
		{
			name: "the incumbent leaving frees its domains for the newcomer",
			renders: [][]catalog.Node{
				{backend("web-1", web)},
				{backend("web-1", web), backend("aaa-1", app("aaa", "shop.example"))},
				{backend("aaa-1", app("aaa", "shop.example"))},
			},
			wantAdmitted: []string{"aaa@aaa-1"},
		},
		{
			name: "a draining incumbent keeps its domains",
			renders: [][]catalog.Node{
				{backend("web-1", web)},
				{backend("web-1", with(web, func(a *catalog.Application) { a.State = catalog.StateDraining })), backend("aaa-1", app("aaa", "shop.example"))},
			},
			wantAdmitted: []string{"web@web-1"},
			wantRefused:  []string{"aaa@aaa-1"},
		},
		{
			name: "an incumbent that is down keeps its domains",
			renders: [][]catalog.Node{
				{backend("web-1", web)},
				{backend("web-1", with(web, func(a *catalog.Application) { a.State = catalog.StateDown })), backend("aaa-1", app("aaa", "shop.example"))},
			},
			wantAdmitted: []string{"web@web-1"},
			wantRefused:  []string{"aaa@aaa-1"},
		},
		{
			name: "the incumbent changing its definition everywhere keeps the name",
			renders: [][]catalog.Node{
				{backend("web-1", web)},
				{backend("web-1", app("web", "shop.example", "www.shop.example"))},
			},
			wantAdmitted: []string{"web@web-1"},
		},
		{
			name: "another path on the same domain is its own route",
			renders: [][]catalog.Node{
				{backend("web-1", web)},
				{backend("web-1", web), backend("api-1", with(app("api", "shop.example"), func(a *catalog.Application) { a.Paths = []string{"/api"} }))},
			},
			wantAdmitted: []string{"api@api-1", "web@web-1"},
		},
		{
			name: "a domain is held across listen ports",
			renders: [][]catalog.Node{
				{backend("web-1", web)},
				{backend("web-1", web), backend("aaa-1", with(app("aaa", "shop.example"), func(a *catalog.Application) { a.ListenPort = 8443 }))},
			},
			wantAdmitted: []string{"web@web-1"},
			wantRefused:  []string{"aaa@aaa-1"},
		},
		{
			name: "catch-all applications on different listen ports do not conflict",
			renders: [][]catalog.Node{
				{backend("a-1", with(app("a"), func(a *catalog.Application) { a.ListenPort = 8080 }))},
				{backend("a-1", with(app("a"), func(a *catalog.Application) { a.ListenPort = 8080 })),
					backend("b-1", with(app("b"), func(a *catalog.Application) { a.ListenPort = 8081 }))},
			},
			wantAdmitted: []string{"a@a-1", "b@b-1"},
		},
		{
			name: "a tcp application holds its listen port against tcp and http newcomers",
			renders: [][]catalog.Node{
				{backend("db-1", tcpApp("db", 5432))},
				{backend("db-1", tcpApp("db", 5432)), backend("aaa", tcpApp("aaa", 5432)),
					backend("aab", with(app("aab"), func(a *catalog.Application) { a.ListenPort = 5432 }))},
			},
			wantAdmitted: []string{"db@db-1"},
			wantRefused:  []string{"aaa@aaa", "aab@aab"},
			wantReason:   `listen port 5432 is held by application "db" for tcp`,
		},
		{
			name: "http applications share a listen port by domain; another protocol does not",
			renders: [][]catalog.Node{
				{backend("web-1", web)},
				{backend("web-1", web), backend("blog-1", app("blog", "blog.example")),
					backend("aaa", with(app("aaa", "x.example"), func(a *catalog.Application) { a.Protocol = catalog.ProtocolGRPC }))},
			},
			wantAdmitted: []string{"blog@blog-1", "web@web-1"},
			wantRefused:  []string{"aaa@aaa"},
			wantReason:   `listen port 80 is held by application "web" for http`,
		},
		{
			name: "tcp and udp use different listeners on the same port",
			renders: [][]catalog.Node{
				{backend("dns-1", tcpApp("dns-tcp", 5353), with(tcpApp("dns-udp", 5353), func(a *catalog.Application) { a.Protocol = catalog.ProtocolUDP }))},
			},
			wantAdmitted: []string{"dns-tcp@dns-1", "dns-udp@dns-1"},
		},
		{
			name: "without an incumbent, the definition more backends advertise wins",
			renders: [][]catalog.Node{
				{backend("web-1", web), backend("web-2", web), backend("aaa", app("web", "evil.example"))},
			},
			wantAdmitted: []string{"web@web-1", "web@web-2"},
			wantRefused:  []string{"web@aaa"},
		},
		{
			name: "without an incumbent, equals that conflict are both refused",
			renders: [][]catalog.Node{
				{backend("web-1", web), backend("aaa", app("aaa", "shop.example")), backend("other", app("other", "other.example"))},
			},
			wantAdmitted: []string{"other@other"},
			wantRefused:  []string{"aaa@aaa", "web@web-1"},
			wantReason:   "contested",
		},
		{
			name: "a contest ends when one side is withdrawn",
			renders: [][]catalog.Node{
				{backend("web-1", web), backend("aaa", app("aaa", "shop.example"))},
				{backend("web-1", web)},
				{backend("web-1", web), backend("aaa", app("aaa", "shop.example"))},
			},
			wantAdmitted: []string{"web@web-1"},
			wantRefused:  []string{"aaa@aaa"},
			wantReason:   "is held by",
		},
		{
			name:   "listen ports outside lb.listen-ports are refused",
			policy: Policy{ListenPorts: []PortRange{{80, 80}, {443, 443}, {1024, 65535}}},
			renders: [][]catalog.Node{
				{backend("ssh", tcpApp("ssh", 22)), backend("db", tcpApp("db", 5432)), backend("web-1", web)},
			},
			wantAdmitted: []string{"db@db", "web@web-1"},
			wantRefused:  []string{"ssh@ssh"},
			wantReason:   "listen port 22 is not one lb.listen-ports allows",
		},
		{
			name:   "scrimp's own ports are never listen ports",
			policy: Policy{Reserved: []int{7946, 9946}},
			renders: [][]catalog.Node{
				{backend("gossip", tcpApp("gossip", 7946)), backend("metrics", with(app("metrics"), func(a *catalog.Application) { a.ListenPort = 9946 })),
					backend("web-1", web)},
			},
			wantAdmitted: []string{"web@web-1"},
			wantRefused:  []string{"gossip@gossip", "metrics@metrics"},
			wantReason:   "is used by scrimp or its proxy on this load balancer",
		},
		{
			name:   "the load balancer's own address on scrimp's ports is never a destination",
			policy: Policy{Reserved: []int{7946, 9946}, Own: []netip.Addr{netip.MustParseAddr("192.0.2.10")}},
			renders: [][]catalog.Node{
				{
					backendAt("loop", "127.0.0.1", with(app("steal"), func(a *catalog.Application) { a.ListenPort = 8000; a.ApplicationPort = 9946 })),
					backendAt("own", "192.0.2.10", with(app("steal2"), func(a *catalog.Application) { a.ListenPort = 8001; a.ApplicationPort = 7946 })),
					backendAt("mapped", "::ffff:192.0.2.10", with(app("steal3"), func(a *catalog.Application) { a.ListenPort = 8002; a.ApplicationPort = 7946 })),
					// The same port elsewhere, or another port here, is an ordinary backend.
					backendAt("other", "192.0.2.11", with(app("fine"), func(a *catalog.Application) { a.ListenPort = 8003; a.ApplicationPort = 9946 })),
					backendAt("local", "127.0.0.1", with(app("fine2"), func(a *catalog.Application) { a.ListenPort = 8004; a.ApplicationPort = 8080 })),
				},
			},
			wantAdmitted: []string{"fine2@local", "fine@other"},
			wantRefused:  []string{"steal@loop", "steal2@own", "steal3@mapped"},
			wantReason:   "is this load balancer's own, and port",
		},
		{
			name: "the allow-list admits only what a rule allows",
			policy: Policy{Allow: []AllowRule{
				{Name: "web", Domains: []string{"shop.example", "*.shop.example"}, Backends: []string{"web-*"}},
				{Name: "db*", Backends: []string{"db-?"}},
			}},
			renders: [][]catalog.Node{
				{
					backend("web-1", app("web", "shop.example", "www.shop.example")),
					backend("web-2", app("web", "shop.example", "www.shop.example")),
					backend("evil", app("web", "shop.example", "www.shop.example")),     // not a web-* node
					backend("web-3", app("blog", "blog.shop.example")),                  // no rule for blog
					backend("db-1", tcpApp("db", 5432)),                                 // db on db-?
					backend("db-10", tcpApp("db", 5432)),                                // db-? is one character
					backend("web-4", app("web", "shop.example", "evil.example")),        // a domain outside the rule
					backend("web-5", with(app("web"), func(a *catalog.Application) {})), // no domains, the rule wants some
				},
			},
			wantAdmitted: []string{"db@db-1", "web@web-1", "web@web-2"},
			wantRefused:  []string{"blog@web-3", "db@db-10", "web@evil", "web@web-4", "web@web-5"},
			wantReason:   "no rule of lb.applications allows",
		},
		{
			name:   "a policy refusal is not an owner",
			policy: Policy{Allow: []AllowRule{{Name: "web", Backends: []string{"web-*"}}}},
			renders: [][]catalog.Node{
				{backend("aaa", app("web", "evil.example"))},
				{backend("aaa", app("web", "evil.example")), backend("web-1", web)},
			},
			wantAdmitted: []string{"web@web-1"},
			wantRefused:  []string{"web@aaa"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var owners Owners
			var adm admission
			for _, nodes := range tt.renders {
				adm = tt.policy.admit(owners, catalog.NewSnapshot(nodes))
				owners = adm.owners
			}
			if got := admitted(adm.snap); !slices.Equal(got, tt.wantAdmitted) {
				t.Errorf("admitted %v, want %v", got, tt.wantAdmitted)
			}
			if got := refusedOf(adm.refusals); !slices.Equal(got, tt.wantRefused) {
				t.Errorf("refused %v, want %v\n%v", got, tt.wantRefused, adm.refusals)
			}
			for _, r := range adm.refusals {
				if !strings.Contains(r.Reason, tt.wantReason) {
					t.Errorf("refusal %+v: reason does not say %q", r, tt.wantReason)
				}
			}
		})
	}
}

// TestAdmitNameOrderDoesNotDecide checks the same conflicts under every
// naming: whichever name sorts first, the incumbent keeps what it has.
func TestAdmitNameOrderDoesNotDecide(t *testing.T) {
	for _, names := range [][2]string{{"aaa", "zzz"}, {"zzz", "aaa"}} {
		incumbent, newcomer := names[0], names[1]
		t.Run(incumbent+" first", func(t *testing.T) {
			first := catalog.NewSnapshot([]catalog.Node{backend(incumbent+"-node", app(incumbent, "shop.example"))})
			adm := Policy{}.admit(Owners{}, first)
			both := catalog.NewSnapshot([]catalog.Node{
				backend(incumbent+"-node", app(incumbent, "shop.example")),
				backend(newcomer+"-node", app(newcomer, "shop.example")),
			})
			adm = Policy{}.admit(adm.owners, both)
			if got, want := admitted(adm.snap), []string{incumbent + "@" + incumbent + "-node"}; !slices.Equal(got, want) {
				t.Errorf("admitted %v, want %v", got, want)
			}
			// The same render again changes nothing: ownership is stable.
			again := Policy{}.admit(adm.owners, both)
			if !slices.Equal(again.refusals, adm.refusals) || again.owners.Len() != 1 {
				t.Errorf("second render: refusals %v (was %v), %d owners", again.refusals, adm.refusals, again.owners.Len())
			}
		})
	}
}

// TestAdmitKeepsDrainingRefusalsForAcks checks that a refused instance
// that drains is left out of what is rendered but kept in what is
// acknowledged: the proxy does not route to it, and the backend waits for
// the acknowledgement to leave.
func TestAdmitKeepsDrainingRefusalsForAcks(t *testing.T) {
	web := app("web", "shop.example")
	adm := Policy{}.admit(Owners{}, catalog.NewSnapshot([]catalog.Node{backend("web-1", web)}))
	drainingEvil := with(app("aaa", "shop.example"), func(a *catalog.Application) { a.State = catalog.StateDraining })
	adm = Policy{}.admit(adm.owners, catalog.NewSnapshot([]catalog.Node{backend("web-1", web), backend("aaa", drainingEvil)}))
	if got := admitted(adm.snap); !slices.Equal(got, []string{"web@web-1"}) {
		t.Errorf("rendered %v", got)
	}
	if got := admitted(adm.ack); !slices.Equal(got, []string{"aaa@aaa", "web@web-1"}) {
		t.Errorf("acknowledged %v", got)
	}
}

func TestRetainable(t *testing.T) {
	web := app("web", "shop.example")
	adm := Policy{}.admit(Owners{}, catalog.NewSnapshot([]catalog.Node{backend("new-1", app("new", "shop.example")), backend("db-1", tcpApp("db", 5432))}))
	keep, dropped := adm.owners.retainable([]catalog.Application{
		web,                   // its domain is another's now
		tcpApp("olddb", 5432), // so is its port
		app("blog", "blog.example"),
		app("db", "db.example"), // its name is another's definition now
	})
	if got := admitted(catalog.Snapshot{Nodes: []catalog.Node{{Name: "r", Applications: keep}}}); !slices.Equal(got, []string{"blog@r"}) {
		t.Errorf("kept %v", got)
	}
	if want := []string{"web", "olddb", "db"}; !slices.Equal(dropped, want) {
		t.Errorf("dropped %v, want %v", dropped, want)
	}
}

func TestDomainMatch(t *testing.T) {
	for _, tt := range []struct {
		pattern, domain string
		want            bool
	}{
		{"shop.example", "shop.example", true},
		{"shop.example", "SHOP.example", true},
		{"shop.example", "www.shop.example", false},
		{"*.shop.example", "www.shop.example", true},
		{"*.shop.example", "a.b.shop.example", true},
		{"*.shop.example", "*.shop.example", true},
		{"*.shop.example", "shop.example", false},
		{"*.shop.example", "evilshop.example", false},
	} {
		if got := DomainMatch(tt.pattern, tt.domain); got != tt.want {
			t.Errorf("DomainMatch(%q, %q) = %v, want %v", tt.pattern, tt.domain, got, tt.want)
		}
	}
}

// TestLoopKeepsOwners runs the loop with a real generator: the owners
// persist from one render to the next, a newcomer with the incumbent's
// domain stays out of the configuration, is counted and logged once, and
// takes over once the incumbent is gone — and the incumbent, retained with
// no backends, is then forgotten rather than kept beside it.
func TestLoopKeepsOwners(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMembers()
		p := &recorder{}
		var logs strings.Builder
		var mu sync.Mutex
		logger := slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))
		l := startLBWith(t, Config{Members: m, Proxy: p, Checks: CheckConfig{Disabled: true}, RetainEmpty: time.Hour, Logger: logger,
			Admission: Policy{ListenPorts: []PortRange{{80, 80}}}})
		web := backend("web-1", app("web", "shop.example"))
		evil := backend("aaa", app("aaa", "shop.example"))
		m.set(web)
		settle(time.Second)
		m.set(web, evil)
		settle(time.Second)
		cfg, _ := p.last()
		if strings.Contains(string(cfg), "# aaa\n") || !strings.Contains(string(cfg), "# web-1\n") {
			t.Fatalf("configuration does not route web only:\n%s", cfg)
		}
		if s := l.Stats(); s.Refused != 1 || s.RefusalEvents != 1 {
			t.Errorf("stats: %d refused, %d events; want 1 and 1", s.Refused, s.RefusalEvents)
		}
		rs := l.Refusals()
		if len(rs) != 1 || rs[0].Application != "aaa" || rs[0].Node != "aaa" {
			t.Errorf("refusals %+v", rs)
		}
		l.Resync()
		settle(time.Second)
		mu.Lock()
		if n := strings.Count(logs.String(), "refused: not routed"); n != 1 {
			t.Errorf("%d refusal warnings after two renders, want 1", n)
		}
		mu.Unlock()
		if s := l.Stats(); s.RefusalEvents != 1 {
			t.Errorf("%d refusal events after another render, want still 1", s.RefusalEvents)
		}

		m.set(evil)
		settle(time.Second)
		cfg, _ = p.last()
		if !strings.Contains(string(cfg), "# aaa\n") || strings.Contains(string(cfg), "# web-1\n") {
			t.Fatalf("after the incumbent left, want aaa routed instead of web:\n%s", cfg)
		}
		if rs := l.Refusals(); len(rs) != 0 {
			t.Errorf("refusals %+v, want none", rs)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, want := range []string{"no longer refused", "forgetting application without backends: another application holds"} {
			if !strings.Contains(logs.String(), want) {
				t.Errorf("log lacks %q:\n%s", want, logs.String())
			}
		}
	})
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(b)
}

// BenchmarkAdmit admits 10,000 backends of one application and one
// member advertising 4,096 applications of its own, with an incumbent.
func BenchmarkAdmit(b *testing.B) {
	var nodes []catalog.Node
	for i := range 10000 {
		nodes = append(nodes, backendAt(fmt.Sprintf("web-%05d", i), fmt.Sprintf("10.%d.%d.%d", i/65536, i/256%256, i%256), app("web", "shop.example")))
	}
	var many []catalog.Application
	for i := range 4096 {
		many = append(many, app(fmt.Sprintf("app-%04d", i), fmt.Sprintf("d%d.example", i), "shop.example"))
	}
	nodes = append(nodes, backend("aaa", many...))
	snap := catalog.NewSnapshot(nodes)
	p := Policy{ListenPorts: []PortRange{{80, 80}, {443, 443}, {1024, 65535}}, Reserved: []int{7946}}
	owners := p.admit(Owners{}, snap).owners
	b.ResetTimer()
	for b.Loop() {
		adm := p.admit(owners, snap)
		if len(adm.refusals) != 4096 {
			b.Fatalf("%d refusals", len(adm.refusals))
		}
	}
}

// TestAdmitLimits checks that each limit refuses the excess, names the
// limit, and leaves what is within it (and other members) routed.
func TestAdmitLimits(t *testing.T) {
	// many is n http applications of one backend, named app-000 ...,
	// given in reverse order so that the advertisement's order cannot
	// be what decides.
	many := func(n int) []catalog.Application {
		var out []catalog.Application
		for i := n - 1; i >= 0; i-- {
			out = append(out, app(fmt.Sprintf("app-%03d", i), fmt.Sprintf("d%03d.example", i)))
		}
		return out
	}
	domains := func(n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("n%d.example", i))
		}
		return out
	}
	tests := []struct {
		name         string
		limits       Limits
		renders      [][]catalog.Node
		wantAdmitted []string
		wantRefused  []string
		wantReason   string
	}{
		{
			name:   "apps per member: the excess by name is refused, another member is not affected",
			limits: Limits{AppsPerMember: 2},
			renders: [][]catalog.Node{{
				backend("big", many(4)...),
				backend("web-1", app("web", "shop.example")),
			}},
			wantAdmitted: []string{"app-000@big", "app-001@big", "web@web-1"},
			wantRefused:  []string{"app-002@big", "app-003@big"},
			wantReason:   "limit lb.limits.apps-per-member",
		},
		{
			name:         "domains per app",
			limits:       Limits{DomainsPerApp: 3},
			renders:      [][]catalog.Node{{backend("b", app("wide", domains(4)...), app("ok", domains(3)[:1]...))}},
			wantAdmitted: []string{"ok@b"},
			wantRefused:  []string{"wide@b"},
			wantReason:   "limit lb.limits.domains-per-app: 4 domains, at most 3",
		},
		{
			name:   "paths per app",
			limits: Limits{PathsPerApp: 1},
			renders: [][]catalog.Node{{backend("b",
				with(app("deep", "a.example"), func(a *catalog.Application) { a.Paths = []string{"/a", "/b"} }),
				with(app("ok", "b.example"), func(a *catalog.Application) { a.Paths = []string{"/a"} }))}},
			wantAdmitted: []string{"ok@b"},
			wantRefused:  []string{"deep@b"},
			wantReason:   "limit lb.limits.paths-per-app",
		},
		{
			name:   "domains per member count distinct domains",
			limits: Limits{DomainsPerMember: 3},
			renders: [][]catalog.Node{{backend("b",
				app("a", "x.example", "y.example"),
				with(app("b", "X.example", "z.example"), func(a *catalog.Application) { a.Paths = []string{"/b"} }),
				app("c", "w.example"))}},
			wantAdmitted: []string{"a@b", "b@b"},
			wantRefused:  []string{"c@b"},
			wantReason:   "limit lb.limits.domains-per-member",
		},
		{
			name:   "listen ports per member; a port already used costs nothing",
			limits: Limits{ListenPortsPerMember: 2},
			renders: [][]catalog.Node{{backend("b",
				tcpApp("t1", 5001), tcpApp("t2", 5002), tcpApp("t3", 5003), app("web", "shop.example"))}},
			wantAdmitted: []string{"t1@b", "t2@b"},
			wantRefused:  []string{"t3@b", "web@b"},
			wantReason:   "limit lb.limits.listen-ports-per-member",
		},
		{
			name:   "listeners in total: the incumbents stay, the newcomer is refused",
			limits: Limits{Listeners: 2},
			renders: [][]catalog.Node{
				{backend("b1", tcpApp("t1", 5001)), backend("b2", tcpApp("t2", 5002))},
				{backend("a0", tcpApp("t0", 5000)), backend("b1", tcpApp("t1", 5001)), backend("b2", tcpApp("t2", 5002))},
			},
			wantAdmitted: []string{"t1@b1", "t2@b2"},
			wantRefused:  []string{"t0@a0"},
			wantReason:   "limit lb.limits.listeners: 2 listeners are in use, at most 2",
		},
		{
			name:   "listeners in total: sharing an http listener needs no new one",
			limits: Limits{Listeners: 1},
			renders: [][]catalog.Node{
				{backend("b1", app("web", "shop.example"))},
				{backend("b1", app("web", "shop.example")), backend("b2", app("blog", "blog.example")), backend("b3", tcpApp("t", 5000))},
			},
			wantAdmitted: []string{"blog@b2", "web@b1"},
			wantRefused:  []string{"t@b3"},
			wantReason:   "limit lb.limits.listeners",
		},
		{
			name:   "upstream servers in total: the incumbent's instances count, a newcomer beyond is refused",
			limits: Limits{UpstreamServers: 3},
			renders: [][]catalog.Node{
				{backend("w1", app("web", "shop.example")), backend("w2", app("web", "shop.example"))},
				{backend("w1", app("web", "shop.example")), backend("w2", app("web", "shop.example")),
					backend("x1", app("blog", "blog.example")), backend("x2", app("blog", "blog.example")),
					backend("y1", app("api", "api.example"))},
			},
			wantAdmitted: []string{"api@y1", "web@w1", "web@w2"},
			wantRefused:  []string{"blog@x1", "blog@x2"},
			wantReason:   "limit lb.limits.upstream-servers: 2 instances are routed, at most 3",
		},
		{
			name:         "zero limits limit nothing",
			renders:      [][]catalog.Node{{backend("big", many(100)...)}},
			wantAdmitted: admittedNames("big", many(100)),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Policy{Limits: tt.limits}
			var owners Owners
			var adm admission
			for _, nodes := range tt.renders {
				adm = p.admit(owners, catalog.NewSnapshot(nodes))
				owners = adm.owners
			}
			if got := admitted(adm.snap); !slices.Equal(got, tt.wantAdmitted) {
				t.Errorf("admitted %v, want %v", got, tt.wantAdmitted)
			}
			if got := refusedOf(adm.refusals); !slices.Equal(got, tt.wantRefused) {
				t.Errorf("refused %v, want %v\n%v", got, tt.wantRefused, adm.refusals)
			}
			for _, r := range adm.refusals {
				if !strings.Contains(r.Reason, tt.wantReason) {
					t.Errorf("refusal %+v: reason does not say %q", r, tt.wantReason)
				}
			}
		})
	}
}

// admittedNames is "app@node" for each of apps, sorted.
func admittedNames(node string, apps []catalog.Application) []string {
	var out []string
	for _, a := range apps {
		out = append(out, a.Name+"@"+node)
	}
	slices.Sort(out)
	return out
}
