package lb

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/scrimplb/scrimp/catalog"
)

// tcpBackend stands in for an application: a listener on 127.0.0.1 that
// accepts connections and closes them (or, made by newKeepingBackend,
// keeps them open as a server waiting for a request does). close and
// reopen make its port refuse and accept connections again; close also
// closes the connections it kept, as the death of a process does.
type tcpBackend struct {
	t        *testing.T
	addr     netip.AddrPort
	accepted atomic.Int64
	keep     bool

	mu    sync.Mutex
	ln    net.Listener
	done  chan struct{} // closed when the accept loop of ln returns
	conns []net.Conn    // kept open (keep)
}

func newTCPBackend(t *testing.T) *tcpBackend {
	t.Helper()
	return startTCPBackend(t, false)
}

// newKeepingBackend returns a tcpBackend that keeps the connections it
// accepts open until close.
func newKeepingBackend(t *testing.T) *tcpBackend {
	t.Helper()
	return startTCPBackend(t, true)
}

func startTCPBackend(t *testing.T, keep bool) *tcpBackend {
	t.Helper()
	b := &tcpBackend{t: t, keep: keep}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = netip.MustParseAddrPort(ln.Addr().String())
	b.serve(ln)
	t.Cleanup(b.close)
	return b
}

func (b *tcpBackend) serve(ln net.Listener) {
	b.ln, b.done = ln, make(chan struct{})
	done := b.done
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.accepted.Add(1)
			if !b.keep {
				c.Close()
				continue
			}
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.mu.Unlock()
		}
	}()
}

// close stops listening: connections are refused from now on.
func (b *tcpBackend) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ln == nil {
		return
	}
	b.ln.Close()
	b.mu.Unlock()
	<-b.done // the accept loop takes mu to keep a connection
	b.mu.Lock()
	b.ln = nil
	for _, c := range b.conns {
		c.Close()
	}
	b.conns = nil
}

// reopen listens on the same address again.
func (b *tcpBackend) reopen() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var ln net.Listener
	var err error
	for range 50 { // the port is free unless another test grabbed it
		if ln, err = net.Listen("tcp", b.addr.String()); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		b.t.Fatalf("reopen %s: %v", b.addr, err)
	}
	b.serve(ln)
}

// node returns a backend node named name whose application "web" (HTTP,
// no health path: a TCP check) is this listener.
func (b *tcpBackend) node(name string) catalog.Node {
	return catalog.Node{Name: name, Addr: b.addr.Addr(), Role: catalog.RoleBackend,
		Applications: []catalog.Application{{Name: "web", ListenPort: 80, ApplicationPort: int(b.addr.Port()), Protocol: catalog.ProtocolHTTP}}}
}

// TestProbeRun checks the load balancer's policy on the shared probe (the
// probe itself is tested in package check): any 2xx or 3xx passes, a
// redirect is not followed, https is spoken over TLS without verification,
// the Host header is the probe's host.
func TestProbeRun(t *testing.T) {
	var gotHost, gotAgent atomic.Value
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotHost.Store(r.Host)
		gotAgent.Store(r.UserAgent())
		switch r.URL.Path {
		case "/ok":
			w.WriteHeader(http.StatusNoContent)
		case "/moved":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		case "/missing":
			http.NotFound(w, r)
		default:
			http.Error(w, "broken", http.StatusInternalServerError)
		}
	})
	plain := httptest.NewServer(handler)
	t.Cleanup(plain.Close)
	secure := httptest.NewTLSServer(handler)
	t.Cleanup(secure.Close)
	open := newTCPBackend(t)
	addrOf := func(s *httptest.Server) string {
		return strings.TrimPrefix(strings.TrimPrefix(s.URL, "https://"), "http://")
	}

	tests := []struct {
		name    string
		probe   probe
		wantErr string // substring; empty means pass
	}{
		{"tcp open port passes", probe{kind: probeTCP, addr: open.addr.String()}, ""},
		{"http 2xx passes", probe{kind: probeHTTP, addr: addrOf(plain), path: "/ok"}, ""},
		{"http 3xx passes and is not followed", probe{kind: probeHTTP, addr: addrOf(plain), path: "/moved"}, ""},
		{"http 404 fails", probe{kind: probeHTTP, addr: addrOf(plain), path: "/missing"}, "status 404"},
		{"http 500 fails", probe{kind: probeHTTP, addr: addrOf(plain), path: "/broken"}, "status 500"},
		{"https with a self-signed certificate passes", probe{kind: probeHTTPS, addr: addrOf(secure), path: "/ok"}, ""},
		{"https 500 fails", probe{kind: probeHTTPS, addr: addrOf(secure), path: "/broken"}, "status 500"},
		{"https to a plain server fails", probe{kind: probeHTTPS, addr: addrOf(plain), path: "/ok"}, "TLS handshake"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.probe.run(context.Background(), 300*time.Millisecond)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("run = %v, want a pass", err)
			case tc.wantErr != "" && err == nil:
				t.Errorf("run passed, want an error with %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Errorf("run = %v, want an error with %q", err, tc.wantErr)
			}
		})
	}

	t.Run("host header is the first exact domain", func(t *testing.T) {
		p := probe{kind: probeHTTP, addr: addrOf(plain), path: "/ok", host: "app.example.com"}
		if err := p.run(context.Background(), time.Second); err != nil {
			t.Fatal(err)
		}
		if got := gotHost.Load(); got != "app.example.com" {
			t.Errorf("Host = %v, want app.example.com", got)
		}
		if got := gotAgent.Load(); got != "scrimp-lb-check" {
			t.Errorf("User-Agent = %v, want scrimp-lb-check", got)
		}
	})
}

func TestProbeFor(t *testing.T) {
	node := catalog.Node{Name: "b1", Addr: netip.MustParseAddr("127.0.0.1"), Role: catalog.RoleBackend}
	v6 := catalog.Node{Name: "b2", Addr: netip.MustParseAddr("::1"), Role: catalog.RoleBackend}
	app := func(p catalog.Protocol, health string, domains ...string) catalog.Application {
		return catalog.Application{Name: "a", ListenPort: 80, ApplicationPort: 8080, Protocol: p, HealthPath: health, Domains: domains}
	}
	tests := []struct {
		name   string
		node   catalog.Node
		app    catalog.Application
		want   probe
		wantOK bool
	}{
		{"http without health path connects", node, app(catalog.ProtocolHTTP, ""), probe{kind: probeTCP, addr: "127.0.0.1:8080"}, true},
		{"http with health path gets it", node, app(catalog.ProtocolHTTP, "/healthz", "*.example.com", "www.example.com"),
			probe{kind: probeHTTP, addr: "127.0.0.1:8080", path: "/healthz", host: "www.example.com"}, true},
		{"https gets over TLS", node, app(catalog.ProtocolHTTPS, "/healthz"), probe{kind: probeHTTPS, addr: "127.0.0.1:8080", path: "/healthz"}, true},
		{"grpc connects", node, app(catalog.ProtocolGRPC, "/healthz"), probe{kind: probeTCP, addr: "127.0.0.1:8080"}, true},
		{"tcp connects", node, app(catalog.ProtocolTCP, ""), probe{kind: probeTCP, addr: "127.0.0.1:8080"}, true},
		{"udp is not checked", node, app(catalog.ProtocolUDP, ""), probe{}, false},
		{"ipv6 is bracketed", v6, app(catalog.ProtocolTCP, ""), probe{kind: probeTCP, addr: "[::1]:8080"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := probeFor(tc.node, tc.app)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("probeFor = %+v, %v; want %+v, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestCheckerRecord(t *testing.T) {
	tests := []struct {
		name    string
		results string // p: pass, f: fail (timeout), r: refused
		want    string // state after each result: u up, d down; upper case when refused
	}{
		{"a new instance is up until it fails", "pp", "uu"},
		{"one failure is not enough", "fpfp", "uuuu"},
		{"two failures in a row take it down", "ff", "ud"},
		{"two passes in a row bring it back", "ffpp", "uddu"},
		{"a failure while rising starts over", "ffpfpp", "uddddu"},
		{"failures while down keep it down", "ffff", "uddd"},
		{"refusals count as failures and are remembered until the next result", "rrfp", "UDdd"},
		{"a refusal after timeouts", "ffr", "udD"},
	}
	results := map[rune]error{'p': nil, 'f': context.DeadlineExceeded, 'r': syscall.ECONNREFUSED}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ch := newChecker(instKey{"b1", "web"}, probe{}, CheckConfig{Fall: 2, Rise: 2}, func() {})
			var got strings.Builder
			for _, r := range tc.results {
				ch.record(results[r])
				c := "u"
				if ch.count.Down() {
					c = "d"
				}
				if ch.refused {
					c = strings.ToUpper(c)
				}
				got.WriteString(c)
			}
			if got.String() != tc.want {
				t.Errorf("states %s, want %s", got.String(), tc.want)
			}
		})
	}
}

func TestCheckConfigDefaults(t *testing.T) {
	got := CheckConfig{Fall: 3}.withDefaults()
	want := DefaultCheckConfig()
	want.Fall = 3
	if got != want {
		t.Errorf("withDefaults = %+v, want %+v", got, want)
	}
	if err := (CheckConfig{Interval: -time.Second}).Validate(); err == nil {
		t.Error("Validate accepted a negative interval")
	}
	if err := (CheckConfig{}).Validate(); err != nil {
		t.Errorf("Validate(zero) = %v", err)
	}
}

// TestCheckSchedule checks when the checks run, on synctest's fake clock
// (the probes are real connects to real listeners, which take no fake
// time): an instance that keeps passing is checked once per Interval, and
// one whose application crashed (its port refuses) is down at most
// Interval + (Fall-1) × FastInterval after the crash, thanks to the quick
// re-check after the first failure.
func TestCheckSchedule(t *testing.T) {
	up, crashed := newTCPBackend(t), newTCPBackend(t)
	cfg := DefaultCheckConfig()
	// A held connection's read blocks on the network, which synctest's
	// clock does not wait for; TestHold* check the held connections.
	cfg.NoHold = true
	const window = 9 * time.Second
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		c := newChecks(ctx, cfg, slog.New(slog.DiscardHandler))
		defer c.close()
		c.sync(catalog.Snapshot{Nodes: []catalog.Node{up.node("up"), crashed.node("crashed")}}, nil)
		settle(window)
		if h := c.health(); h[instKey{"up", "web"}].down || h[instKey{"crashed", "web"}].down {
			t.Fatalf("an instance is down before any crash: %+v", h)
		}
		crashed.close()
		at := time.Now()
		key := instKey{"crashed", "web"}
		for !c.health()[key].down {
			if time.Since(at) > 3*cfg.Interval {
				t.Fatalf("the crashed instance is not down %v after its crash", time.Since(at))
			}
			settle(10 * time.Millisecond)
		}
		took := time.Since(at)
		if limit := cfg.Interval + time.Duration(cfg.Fall-1)*cfg.FastInterval; took > limit {
			t.Errorf("the crashed instance was down %v after its crash, want at most %v", took, limit)
		}
		if took < time.Duration(cfg.Fall-1)*cfg.FastInterval {
			t.Errorf("the crashed instance was down %v after its crash: sooner than %d failures allow", took, cfg.Fall)
		}
	})
	// Every passing check of "up" was one connect: about window/Interval
	// of them (the first within an interval of the start), not one per
	// FastInterval. The listener counts them on the real clock.
	lo, hi := int64(window/cfg.Interval)-1, int64(window/cfg.Interval)+3
	waitFor(t, "the listener to count the checks", func() bool { return up.accepted.Load() >= lo })
	if n := up.accepted.Load(); n > hi {
		t.Errorf("a passing instance was checked %d times, want %d to %d", n, lo, hi)
	}
}

func TestUnsettled(t *testing.T) {
	fail := errors.New("connect: refused")
	tests := []struct {
		name string
		err  error
		down bool
		want bool
	}{
		{"pass while up: settled", nil, false, false},
		{"failure while up: re-check soon", fail, false, true},
		{"pass while down: re-check soon", nil, true, true},
		{"failure while down: settled", fail, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := unsettled(tt.err, tt.down); got != tt.want {
				t.Errorf("unsettled(%v, %v) = %v, want %v", tt.err, tt.down, got, tt.want)
			}
		})
	}
}
