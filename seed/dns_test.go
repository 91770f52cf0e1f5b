package seed

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// fakeDNS is an authoritative DNS server on loopback answering from a zone
// the test can change between queries.
type fakeDNS struct {
	addr string

	mu sync.Mutex
	// rrs holds the zone in presentation format, e.g.
	// "lb.test. 5 IN A 10.0.0.1".
	rrs []dns.RR
	// srvExtra adds the targets' addresses to SRV answers, as Kubernetes
	// does for headless services.
	srvExtra atomic.Bool
	// truncateUDP answers every UDP query with an empty truncated reply,
	// as a server does when the answer does not fit in a datagram.
	truncateUDP atomic.Bool

	udpQueries, tcpQueries atomic.Int64
}

// startFakeDNS serves on a free loopback port over UDP and, on the same
// port, TCP.
func startFakeDNS(t *testing.T, zone ...string) *fakeDNS {
	t.Helper()
	f := &fakeDNS{}
	f.set(t, zone...)
	var (
		pc  net.PacketConn
		l   net.Listener
		err error
	)
	for attempt := 0; attempt < 10; attempt++ {
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		// The TCP port of the same number may be taken; try another.
		if l, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatalf("no loopback port free for both UDP and TCP: %v", err)
	}
	f.addr = pc.LocalAddr().String()
	for _, srv := range []*dns.Server{
		{PacketConn: pc, Handler: dns.HandlerFunc(f.serve)},
		{Listener: l, Handler: dns.HandlerFunc(f.serve)},
	} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("DNS server did not start")
		}
		t.Cleanup(func() { srv.Shutdown() })
	}
	return f
}

// set replaces the zone.
func (f *fakeDNS) set(t *testing.T, zone ...string) {
	t.Helper()
	var rrs []dns.RR
	for _, s := range zone {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatalf("bad test record %q: %v", s, err)
		}
		rrs = append(rrs, rr)
	}
	f.mu.Lock()
	f.rrs = rrs
	f.mu.Unlock()
}

func (f *fakeDNS) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	q := req.Question[0]
	udp := w.LocalAddr().Network() == "udp"
	if udp {
		f.udpQueries.Add(1)
	} else {
		f.tcpQueries.Add(1)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if udp && f.truncateUDP.Load() {
		m.Truncated = true
		w.WriteMsg(m)
		return
	}
	exists := false
	for name := q.Name; name != ""; {
		next := ""
		for _, rr := range f.rrs {
			h := rr.Header()
			if !strings.EqualFold(h.Name, name) {
				continue
			}
			exists = true
			if h.Rrtype == q.Qtype {
				m.Answer = append(m.Answer, rr)
			} else if cname, ok := rr.(*dns.CNAME); ok {
				// Chase the alias, as a recursive server would.
				m.Answer = append(m.Answer, rr)
				next = cname.Target
			}
		}
		name = next
	}
	if !exists {
		m.Rcode = dns.RcodeNameError
	}
	if f.srvExtra.Load() {
		for _, ans := range m.Answer {
			if srv, ok := ans.(*dns.SRV); ok {
				for _, rr := range f.rrs {
					if t := rr.Header().Rrtype; strings.EqualFold(rr.Header().Name, srv.Target) && (t == dns.TypeA || t == dns.TypeAAAA) {
						m.Extra = append(m.Extra, rr)
					}
				}
			}
		}
	}
	w.WriteMsg(m)
}

func newDNSTest(t *testing.T, server string, names ...any) (Provider, *logRecorder) {
	t.Helper()
	env, rec := testEnv(t)
	return newTestProvider(t, "dns", map[string]any{"names": names, "server": server, "timeout": "2s"}, env), rec
}

// A Kubernetes headless service: one SRV record per ready pod, pointing at
// a per-pod name, with the pods' addresses in the additional section.
var headlessService = []string{
	"_gossip._udp.scrimp.default.svc.cluster.local. 5 IN SRV 0 50 7946 10-244-0-5.scrimp.default.svc.cluster.local.",
	"_gossip._udp.scrimp.default.svc.cluster.local. 5 IN SRV 0 50 7946 10-244-1-7.scrimp.default.svc.cluster.local.",
	"10-244-0-5.scrimp.default.svc.cluster.local. 5 IN A 10.244.0.5",
	"10-244-1-7.scrimp.default.svc.cluster.local. 5 IN A 10.244.1.7",
	"scrimp.default.svc.cluster.local. 5 IN A 10.244.0.5",
	"scrimp.default.svc.cluster.local. 5 IN A 10.244.1.7",
}

func TestDNSResolve(t *testing.T) {
	tests := []struct {
		name     string
		zone     []string
		srvExtra bool
		names    []any
		want     []string
		wantErr  string
		warns    int
	}{
		{
			name:  "A with the default port",
			zone:  []string{"lb.test. 5 IN A 10.0.0.1", "lb.test. 5 IN A 10.0.0.2"},
			names: []any{"lb.test"},
			want:  []string{"10.0.0.1:7946", "10.0.0.2:7946"},
		},
		{
			name:  "AAAA",
			zone:  []string{"lb6.test. 5 IN AAAA 2001:db8::1"},
			names: []any{"lb6.test."},
			want:  []string{"[2001:db8::1]:7946"},
		},
		{
			name:  "A and AAAA of one name",
			zone:  []string{"lb.test. 5 IN A 10.0.0.1", "lb.test. 5 IN AAAA 2001:db8::1"},
			names: []any{"lb.test"},
			want:  []string{"10.0.0.1:7946", "[2001:db8::1]:7946"},
		},
		{
			name:  "CNAME",
			zone:  []string{"seeds.test. 5 IN CNAME lb.test.", "lb.test. 5 IN A 10.0.0.1"},
			names: []any{"seeds.test"},
			want:  []string{"10.0.0.1:7946"},
		},
		{
			name:     "SRV of a headless service with additional records",
			zone:     headlessService,
			srvExtra: true,
			names:    []any{"_gossip._udp.scrimp.default.svc.cluster.local"},
			want:     []string{"10.244.0.5:7946", "10.244.1.7:7946"},
		},
		{
			name:  "SRV without additional records",
			zone:  headlessService,
			names: []any{"_gossip._udp.scrimp.default.svc.cluster.local"},
			want:  []string{"10.244.0.5:7946", "10.244.1.7:7946"},
		},
		{
			name: "SRV ports and a dead target",
			zone: []string{
				"_g._tcp.test. 5 IN SRV 0 0 7001 a.test.",
				"_g._tcp.test. 5 IN SRV 0 0 7002 gone.test.",
				"_g._tcp.test. 5 IN SRV 0 0 7003 .",
				"a.test. 5 IN AAAA 2001:db8::a",
			},
			names: []any{"_g._tcp.test"},
			want:  []string{"[2001:db8::a]:7001"},
			warns: 1,
		},
		{
			name:  "explicit types",
			zone:  []string{"gossip.test. 5 IN SRV 0 0 7001 a.test.", "a.test. 5 IN A 10.0.0.1", "_odd.test. 5 IN A 10.0.0.2"},
			names: []any{map[string]any{"name": "gossip.test", "type": "srv"}, map[string]any{"name": "_odd.test", "type": "a"}},
			want:  []string{"10.0.0.1:7001", "10.0.0.2:7946"},
		},
		{
			name:  "several names merged",
			zone:  []string{"a.test. 5 IN A 10.0.0.1", "b.test. 5 IN A 10.0.0.1", "b.test. 5 IN A 10.0.0.2"},
			names: []any{"a.test", "b.test"},
			want:  []string{"10.0.0.1:7946", "10.0.0.2:7946"},
		},
		{
			name:  "name without records",
			zone:  []string{"lb.test. 5 IN TXT \"no addresses\""},
			names: []any{"lb.test"},
			want:  nil,
		},
		{
			name:    "NXDOMAIN",
			zone:    []string{"lb.test. 5 IN A 10.0.0.1"},
			names:   []any{"typo.test"},
			wantErr: "seed dns: A typo.test: no such name (NXDOMAIN)",
		},
		{
			name:    "SRV NXDOMAIN",
			names:   []any{"_gossip._udp.nothing.test"},
			wantErr: "SRV _gossip._udp.nothing.test: no such name (NXDOMAIN)",
		},
		{
			name:  "one name NXDOMAIN, another resolves",
			zone:  []string{"lb.test. 5 IN A 10.0.0.1"},
			names: []any{"typo.test", "lb.test"},
			want:  []string{"10.0.0.1:7946"},
			warns: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startFakeDNS(t, tt.zone...)
			srv.srvExtra.Store(tt.srvExtra)
			p, rec := newDNSTest(t, srv.addr, tt.names...)
			got, err := seedsErr(p)
			wantErr(t, err, tt.wantErr)
			if !sameAddrs(got, tt.want) {
				t.Errorf("Seeds = %q, want %q", got, tt.want)
			}
			if n := rec.count("WARN"); n != tt.warns {
				t.Errorf("%d warnings, want %d", n, tt.warns)
			}
		})
	}
}

func TestDNSSRVUsesAdditionalSection(t *testing.T) {
	srv := startFakeDNS(t, headlessService...)
	srv.srvExtra.Store(true)
	p, _ := newDNSTest(t, srv.addr, "_gossip._udp.scrimp.default.svc.cluster.local")
	seedsNow(t, p)
	if n := srv.udpQueries.Load(); n != 1 {
		t.Errorf("%d queries, want 1: the targets' addresses came with the SRV answer", n)
	}
}

func TestDNSReResolvesEveryCall(t *testing.T) {
	srv := startFakeDNS(t, headlessService[:3]...)
	srv.srvExtra.Store(true)
	p, _ := newDNSTest(t, srv.addr, "_gossip._udp.scrimp.default.svc.cluster.local")
	steps := []struct {
		zone []string
		want []string
	}{
		{headlessService[:3], []string{"10.244.0.5:7946"}},
		{headlessService[:4], []string{"10.244.0.5:7946", "10.244.1.7:7946"}}, // a pod became ready
		{[]string{headlessService[1], headlessService[3]}, []string{"10.244.1.7:7946"}},
	}
	for i, s := range steps {
		srv.set(t, s.zone...)
		if got := seedsNow(t, p); !sameAddrs(got, s.want) {
			t.Fatalf("step %d: Seeds = %q, want %q", i, got, s.want)
		}
	}
}

func TestDNSTruncatedFallsBackToTCP(t *testing.T) {
	srv := startFakeDNS(t, "lb.test. 5 IN A 10.0.0.1")
	srv.truncateUDP.Store(true)
	p, _ := newDNSTest(t, srv.addr, "lb.test")
	if got, want := seedsNow(t, p), []string{"10.0.0.1:7946"}; !sameAddrs(got, want) {
		t.Fatalf("Seeds = %q, want %q", got, want)
	}
	if srv.tcpQueries.Load() == 0 {
		t.Error("no query over TCP after a truncated UDP answer")
	}
}

func TestDNSServerDown(t *testing.T) {
	// A UDP port nobody listens on: the query is refused or times out.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	env, _ := testEnv(t)
	p := newTestProvider(t, "dns", map[string]any{"names": []string{"lb.test"}, "server": addr, "timeout": "200ms"}, env)
	start := time.Now()
	_, err = seedsErr(p)
	wantErr(t, err, "server "+addr)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s with a 200ms timeout", d)
	}
}

func TestDNSHonoursContext(t *testing.T) {
	// A server that never answers: only ctx can end the call early.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	env, _ := testEnv(t)
	p := newTestProvider(t, "dns", map[string]any{"names": []string{"lb.test"}, "server": pc.LocalAddr().String(), "timeout": "1m"}, env)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := p.Seeds(ctx); err == nil {
		t.Fatal("Seeds succeeded against a silent server")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %s after a 100ms context", d)
	}
}

func TestDNSOptions(t *testing.T) {
	tests := []struct {
		name    string
		section any
		port    int // Env.DefaultPort
		wantErr string
	}{
		{name: "no section", section: nil, port: testPort, wantErr: "names: required"},
		{name: "unknown field", section: map[string]any{"names": []string{"a"}, "nmes": 1}, port: testPort, wantErr: `unknown field "nmes"`},
		{name: "bad name", section: map[string]any{"names": []string{"a..b"}}, port: testPort, wantErr: `names[0]: "a..b" is not a domain name`},
		{name: "empty name", section: map[string]any{"names": []string{""}}, port: testPort, wantErr: `names[0]: "" is not a domain name`},
		{name: "bad type", section: map[string]any{"names": []any{map[string]any{"name": "a", "type": "mx"}}}, port: testPort, wantErr: `names[0].type: "mx"`},
		{name: "unknown entry field", section: map[string]any{"names": []any{map[string]any{"name": "a", "kind": "srv"}}}, port: testPort, wantErr: `unknown field "kind"`},
		{name: "bad port", section: map[string]any{"names": []string{"a"}, "port": 70000}, port: testPort, wantErr: "port: 70000 is not in 1-65535"},
		{name: "no port for A", section: map[string]any{"names": []string{"a"}}, port: 0, wantErr: "port: required"},
		{name: "SRV needs no port", section: map[string]any{"names": []string{"_g._udp.a"}}, port: 0},
		{name: "bad server", section: map[string]any{"names": []string{"a"}, "server": "1.2.3.4:0"}, port: testPort, wantErr: "server: seed address"},
		{name: "bad timeout", section: map[string]any{"names": []string{"a"}, "timeout": "2"}, port: testPort, wantErr: `timeout: "2" is not a duration`},
		{name: "server without port", section: map[string]any{"names": []string{"a"}, "server": "10.0.0.2"}, port: testPort},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, _ := testEnv(t)
			env.DefaultPort = tt.port
			_, err := newFromSection("dns", tt.section, env)
			wantErr(t, err, tt.wantErr)
		})
	}
}

func TestDNSServerDefaultsToPort53(t *testing.T) {
	env, _ := testEnv(t)
	p := newTestProvider(t, "dns", map[string]any{"names": []string{"a"}, "server": "10.0.0.2", "port": 7000}, env).(*dnsSeeds)
	if p.server != "10.0.0.2:53" || p.port != 7000 {
		t.Errorf("server %q port %d, want 10.0.0.2:53 and 7000", p.server, p.port)
	}
}

func TestDNSNameKind(t *testing.T) {
	for _, tt := range []struct {
		n    dnsName
		want string
	}{
		{dnsName{Name: "_gossip._udp.example.com"}, dnsTypeSRV},
		{dnsName{Name: "lb.example.com"}, dnsTypeA},
		{dnsName{Name: "gossip.example.com", Type: "srv"}, dnsTypeSRV},
		{dnsName{Name: "_x.example.com", Type: "a"}, dnsTypeA},
	} {
		t.Run(fmt.Sprintf("%s/%s", tt.n.Name, tt.n.Type), func(t *testing.T) {
			if got := tt.n.kind(); got != tt.want {
				t.Errorf("kind() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDNSResolvConf(t *testing.T) {
	old := resolvConf
	t.Cleanup(func() { resolvConf = old })
	env, _ := testEnv(t)
	p := newTestProvider(t, "dns", map[string]any{"names": []string{"scrimp"}}, env).(*dnsSeeds)

	resolvConf = t.TempDir() + "/resolv.conf"
	if _, err := seedsErr(p); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "no server configured") {
		t.Fatalf("missing resolv.conf: error %v, want fs.ErrNotExist, saying no server is configured", err)
	}

	conf := "nameserver 127.0.0.1\nnameserver ::1\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5\n"
	if err := os.WriteFile(resolvConf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	q, err := p.query()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"127.0.0.1:53", "[::1]:53"}; !slices.Equal(q.servers, want) {
		t.Errorf("servers %q, want %q", q.servers, want)
	}
	want := []string{"scrimp.default.svc.cluster.local.", "scrimp.svc.cluster.local.", "scrimp."}
	if got := q.candidates("scrimp"); !slices.Equal(got, want) {
		t.Errorf("candidates %q, want the search list %q", got, want)
	}
	if got := q.candidates("lb.example.com."); !slices.Equal(got, []string{"lb.example.com."}) {
		t.Errorf("an absolute name must not be searched, got %q", got)
	}
}

func TestDNSSearchList(t *testing.T) {
	// The first candidate does not exist, the second does: the search
	// goes on past NXDOMAIN, as the system resolver's does.
	srv := startFakeDNS(t, "scrimp.svc.cluster.local. 5 IN A 10.0.0.1")
	env, _ := testEnv(t)
	p := newTestProvider(t, "dns", map[string]any{"names": []string{"scrimp"}, "server": srv.addr}, env).(*dnsSeeds)
	q, err := p.query()
	if err != nil {
		t.Fatal(err)
	}
	q.candidates = func(name string) []string {
		return []string{name + ".default.svc.cluster.local.", name + ".svc.cluster.local.", name + "."}
	}
	got, err := q.hosts(context.Background(), "scrimp", 7000)
	if err != nil || !slices.Equal(got, []string{"10.0.0.1:7000"}) {
		t.Fatalf("hosts = %q, %v; want 10.0.0.1:7000 from the second candidate", got, err)
	}
}
