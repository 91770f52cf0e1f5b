package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/generator"
	"github.com/scrimplb/scrimp/internal/proctest"
	"github.com/scrimplb/scrimp/proxy"
)

// The HAProxy tests use loopback addresses 127.0.15.1 to 127.0.19.254
// only: the load balancer listens on hapListen, and each test's backends
// have their own 127.0.1x.y addresses.
const hapListen = "127.0.15.1"

// hapWait bounds every wait for HAProxy or a backend to change state; a
// busy 2-core machine can be slow to start processes, and polls return as
// soon as the condition holds.
const hapWait = 30 * time.Second

// hapLB is a managed HAProxy driven by the haproxy generator, the way a
// scrimp load balancer drives it, minus gossip: tests hand it snapshots.
type hapLB struct {
	t     *testing.T
	gen   generator.Generator
	proxy *proxy.ManagedHAProxy
	tls   []generator.TLSCert
	logs  *proctest.Buffer
}

// startHAProxyLB returns a managed HAProxy (not yet started: the first
// apply starts it) that is closed when the test ends. options are the
// generator's options, "" for the defaults.
func startHAProxyLB(t *testing.T, options string, tls ...generator.TLSCert) *hapLB {
	t.Helper()
	bin := RequireBinary(t, "haproxy")
	var raw json.RawMessage
	if options != "" {
		raw = json.RawMessage(options)
	}
	gen, err := generator.New("haproxy", raw)
	if err != nil {
		t.Fatal(err)
	}
	logs := &proctest.Buffer{}
	// Registered first so it runs last, after Close has stopped the
	// goroutines that log.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("haproxy log:\n%s", logs.String())
		}
	})
	p, err := proxy.NewManagedHAProxy(bin, t.TempDir(), hapWait, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close haproxy: %v", err)
		}
	})
	return &hapLB{t: t, gen: gen, proxy: p, tls: tls, logs: logs}
}

// apply renders nodes (and retained applications) and makes the result
// live; Apply returns once HAProxy runs it. Warnings fail the test unless
// listed in allowed.
func (lb *hapLB) apply(nodes []catalog.Node, retained []catalog.Application, allowed ...string) {
	lb.t.Helper()
	out, err := lb.gen.Render(generator.Input{
		Snapshot: catalog.NewSnapshot(nodes), ListenAddr: hapListen, Standalone: true,
		StateDir: lb.proxy.Dir(), TLS: lb.tls, Retained: retained,
	})
	if err != nil {
		lb.t.Fatalf("render: %v", err)
	}
	for _, w := range out.Warnings {
		if !slices.Contains(allowed, w) {
			lb.t.Errorf("unexpected warning: %s", w)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*hapWait)
	defer cancel()
	if err := lb.proxy.Apply(ctx, out.Config); err != nil {
		lb.t.Fatalf("apply: %v\n%s", err, out.Config)
	}
	// Apply returns once a new worker runs; the old one may still accept
	// a connection or two until it handles its stop signal. Tests that
	// count where requests land need every one on the new configuration.
	sock := filepath.Join(lb.proxy.Dir(), "master.sock")
	if err := Eventually(hapWait, func() error { return hapNoOldWorkers(sock) }); err != nil {
		lb.t.Fatalf("old haproxy workers still running: %v", err)
	}
}

// hapNoOldWorkers asks HAProxy's master CLI ("show proc") whether any
// worker of an earlier configuration is still running.
func hapNoOldWorkers(sock string) error {
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, "show proc\n"); err != nil {
		return err
	}
	c.(*net.UnixConn).CloseWrite() // the master answers once the request is complete
	reply, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if !strings.Contains(string(reply), " master ") {
		return fmt.Errorf("show proc: %q", reply)
	}
	_, old, _ := strings.Cut(string(reply), "# old workers\n")
	old, _, _ = strings.Cut(old, "#")
	if strings.TrimSpace(old) != "" {
		return fmt.Errorf("old workers: %s", strings.TrimSpace(old))
	}
	return nil
}

func hapApp(name string, proto catalog.Protocol, listen int, domains ...string) catalog.Application {
	return catalog.Application{Name: name, ListenPort: listen, Protocol: proto, Domains: domains}
}

func hapAddr(port int) string { return net.JoinHostPort(hapListen, strconv.Itoa(port)) }

// hapExpect polls until a GET of url with header answers status and,
// for a 200, the backend want.
func hapExpect(t *testing.T, c *http.Client, url string, status int, want string, header ...string) *http.Response {
	t.Helper()
	var resp *http.Response
	err := Eventually(hapWait, func() error {
		code, name, r, err := Get(c, url, header...)
		switch {
		case err != nil:
			return err
		case code != status || (status == http.StatusOK && name != want):
			return fmt.Errorf("status %d, body %q", code, name)
		}
		resp = r
		return nil
	})
	if err != nil {
		t.Fatalf("GET %s %v: %v; want status %d from %q", url, header, err, status, want)
	}
	return resp
}

// TestHAProxyHTTPByHost routes by exact host, wildcard and path prefix on
// one listen port, and answers 404 for a host nothing serves.
func TestHAProxyHTTPByHost(t *testing.T) {
	lb := startHAProxyLB(t, "")
	a, b, c := StartBackend(t, "a", "127.0.16.1"), StartBackend(t, "b", "127.0.16.2"), StartBackend(t, "c", "127.0.16.3")
	port := FreePort(t, hapListen)
	api := hapApp("api", catalog.ProtocolHTTP, port, "a.example.test")
	api.Paths = []string{"/api"}
	lb.apply([]catalog.Node{
		a.Node(hapApp("site-a", catalog.ProtocolHTTP, port, "a.example.test")),
		b.Node(hapApp("site-b", catalog.ProtocolHTTP, port, "b.example.test", "*.b.example.test")),
		c.Node(api),
	}, nil)

	client := HTTPClient(hapAddr(port), nil)
	base := fmt.Sprintf("http://%s/", hapAddr(port))
	tests := []struct {
		name   string
		host   string
		path   string
		status int
		want   string
	}{
		{name: "exact host", host: "a.example.test", status: 200, want: "a"},
		{name: "exact host with port", host: fmt.Sprintf("a.example.test:%d", port), status: 200, want: "a"},
		{name: "host in upper case", host: "A.Example.TEST", status: 200, want: "a"},
		{name: "path prefix on the same host", host: "a.example.test", path: "api/v1/users", status: 200, want: "c"},
		{name: "other host, same path", host: "b.example.test", path: "api/v1", status: 200, want: "b"},
		{name: "wildcard, one label", host: "x.b.example.test", status: 200, want: "b"},
		{name: "wildcard, two labels", host: "y.x.b.example.test", status: 200, want: "b"},
		{name: "unknown host", host: "nobody.example.test", status: 404},
		{name: "suffix without a label boundary", host: "xb.example.test", status: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := hapExpect(t, client, base+tt.path, tt.status, tt.want, "Host", tt.host)
			if tt.status == 200 {
				if got := resp.Header.Get("X-Host"); got != tt.host {
					t.Errorf("the backend saw Host %q, want %q", got, tt.host)
				}
				if got := resp.Header.Get("X-Path"); got != "/"+tt.path {
					t.Errorf("the backend saw path %q, want %q", got, "/"+tt.path)
				}
			}
		})
	}
}

// TestHAProxyTLS terminates TLS for two domains with certificates of a
// test CA, each picked by SNI, and forwards plain HTTP to the backends.
func TestHAProxyTLS(t *testing.T) {
	ca := NewCA(t)
	dir := t.TempDir()
	// CA.Issue writes NAME.crt and NAME.key: the layout the standalone
	// configuration's ssl-load-extra-del-ext reads.
	secureCrt, secureKey := ca.Issue(t, dir, "secure.example.test")
	shopCrt, shopKey := ca.Issue(t, dir, "shop.example.test", "*.shop.example.test")
	lb := startHAProxyLB(t, "",
		generator.TLSCert{Domains: []string{"secure.example.test"}, Cert: secureCrt, Key: secureKey},
		generator.TLSCert{Domains: []string{"*.shop.example.test", "shop.example.test"}, Cert: shopCrt, Key: shopKey})
	s1, s2 := StartBackend(t, "secure-1", "127.0.16.11"), StartBackend(t, "shop-1", "127.0.16.12")
	port := FreePort(t, hapListen)
	lb.apply([]catalog.Node{
		s1.Node(hapApp("secure", catalog.ProtocolHTTPS, port, "secure.example.test")),
		s2.Node(hapApp("shop", catalog.ProtocolHTTPS, port, "shop.example.test", "*.shop.example.test")),
	}, nil)

	client := HTTPClient(hapAddr(port), ca.Pool)
	for _, tt := range []struct{ host, want string }{
		{"secure.example.test", "secure-1"},
		{"shop.example.test", "shop-1"},
		{"eu.shop.example.test", "shop-1"},
	} {
		t.Run(tt.host, func(t *testing.T) {
			resp := hapExpect(t, client, fmt.Sprintf("https://%s:%d/", tt.host, port), 200, tt.want)
			if resp.TLS == nil || resp.TLS.PeerCertificates[0].VerifyHostname(tt.host) != nil {
				t.Errorf("the certificate does not name %s", tt.host)
			}
		})
	}
}

// TestHAProxyTCP forwards raw TCP and balances connections.
func TestHAProxyTCP(t *testing.T) {
	lb := startHAProxyLB(t, "")
	a, b := StartBackend(t, "tcp-a", "127.0.17.1"), StartBackend(t, "tcp-b", "127.0.17.2")
	port := FreePort(t, hapListen)
	app := hapApp("echo", catalog.ProtocolTCP, port)
	lb.apply([]catalog.Node{a.Node(app), b.Node(app)}, nil)

	seen := Spread{}
	for range 20 {
		var name string
		if err := Eventually(hapWait, func() (err error) { name, err = TCPAsk(hapAddr(port)); return err }); err != nil {
			t.Fatalf("TCP: %v", err)
		}
		seen[name]++
	}
	if ok, desc := seen.Within([]string{"tcp-a", "tcp-b"}, 0.10); !ok {
		t.Errorf("round-robin over TCP connections: %s", desc)
	}
}

// TestHAProxyGRPCSpread makes 300 unary calls over ONE HTTP/2 client
// connection: HAProxy must balance each call (stream), not the connection.
func TestHAProxyGRPCSpread(t *testing.T) {
	lb := startHAProxyLB(t, "")
	names := []string{"grpc-1", "grpc-2", "grpc-3"}
	var nodes []catalog.Node
	port := FreePort(t, hapListen)
	for i, n := range names {
		nodes = append(nodes, StartBackend(t, n, fmt.Sprintf("127.0.17.%d", 11+i)).Node(hapApp("rpc", catalog.ProtocolGRPC, port)))
	}
	lb.apply(nodes, nil)

	conn := GRPCConn(t, hapAddr(port))
	ctx := context.Background()
	if err := Eventually(hapWait, func() error { _, err := GRPCCall(ctx, conn); return err }); err != nil {
		t.Fatalf("gRPC through haproxy: %v", err)
	}
	spread := Spread{}
	for i := range 300 {
		name, err := GRPCCall(ctx, conn)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		spread[name]++
	}
	ok, desc := spread.Within(names, 0.10)
	t.Logf("gRPC spread of 300 calls over one connection: %s", desc)
	if !ok {
		t.Errorf("calls are not spread evenly: %s", desc)
	}
}

// TestHAProxyHashStability hashes a header: each of 1,000 keys always
// lands on the same backend, and adding a fourth backend moves only the
// keys it takes over, about a quarter of them.
func TestHAProxyHashStability(t *testing.T) {
	lb := startHAProxyLB(t, "")
	port := FreePort(t, hapListen)
	app := hapApp("sticky", catalog.ProtocolHTTP, port)
	app.Balance, app.HashKey = catalog.BalanceHash, "header:X-User"
	var backends []*Backend
	for i := range 4 {
		backends = append(backends, StartBackend(t, fmt.Sprintf("hash-%d", i+1), fmt.Sprintf("127.0.18.%d", i+1)))
	}
	nodes := func(n int) []catalog.Node {
		var out []catalog.Node
		for _, b := range backends[:n] {
			out = append(out, b.Node(app))
		}
		return out
	}
	client := HTTPClient(hapAddr(port), nil)
	url := fmt.Sprintf("http://%s/", hapAddr(port))
	const keys = 1000
	key := func(i int) string { return fmt.Sprintf("user-%04d", i) }
	// route asks for every key once and returns the backend of each.
	route := func() []string {
		t.Helper()
		out := make([]string, keys)
		for i := range keys {
			code, name, _, err := Get(client, url, "X-User", key(i))
			if err != nil || code != http.StatusOK {
				t.Fatalf("key %s: status %d, %v", key(i), code, err)
			}
			out[i] = name
		}
		return out
	}

	lb.apply(nodes(3), nil)
	first := route()
	second := route()
	spread := Spread{}
	for i := range keys {
		if first[i] != second[i] {
			t.Errorf("key %s went to %s, then to %s", key(i), first[i], second[i])
		}
		spread[first[i]]++
	}
	_, desc := spread.Within([]string{"hash-1", "hash-2", "hash-3"}, 0.25)
	t.Logf("1,000 keys over 3 backends: %s", desc)
	for _, n := range []string{"hash-1", "hash-2", "hash-3"} {
		if spread[n] < keys/10 {
			t.Errorf("backend %s got %d of %d keys: the hash does not spread keys", n, spread[n], keys)
		}
	}

	lb.apply(nodes(4), nil)
	after := route()
	moved, toNew := 0, 0
	for i := range keys {
		if after[i] != first[i] {
			moved++
			if after[i] == "hash-4" {
				toNew++
			}
		}
	}
	fraction := float64(moved) / keys
	t.Logf("adding a 4th backend moved %d of %d keys (%.1f%%; ideal 25%%), %d of them to the new backend", moved, keys, 100*fraction, toNew)
	if fraction > 0.35 {
		t.Errorf("%.1f%% of keys moved, want at most 35%%", 100*fraction)
	}
	if toNew != moved {
		t.Errorf("%d keys moved between old backends: consistent hashing moves keys only to the new one", moved-toNew)
	}
	if again := route(); !slices.Equal(again, after) {
		t.Error("with four backends, keys do not always land on the same backend")
	}
}

// TestHAProxyRetained keeps an application whose backends are all gone:
// its host answers 503 with Retry-After, not 404 and not a refused
// connection, while other hosts keep working.
func TestHAProxyRetained(t *testing.T) {
	lb := startHAProxyLB(t, `{"retry-after": 7}`)
	gone, stays := StartBackend(t, "gone-1", "127.0.19.1"), StartBackend(t, "stays-1", "127.0.19.2")
	port := FreePort(t, hapListen)
	goneApp := hapApp("gone", catalog.ProtocolHTTP, port, "gone.example.test")
	staysApp := hapApp("stays", catalog.ProtocolHTTP, port, "stays.example.test")
	client := HTTPClient(hapAddr(port), nil)
	url := fmt.Sprintf("http://%s/", hapAddr(port))

	lb.apply([]catalog.Node{gone.Node(goneApp), stays.Node(staysApp)}, nil)
	hapExpect(t, client, url, 200, "gone-1", "Host", "gone.example.test")

	// The load balancer retains the application as its backends last
	// advertised it.
	lb.apply([]catalog.Node{stays.Node(staysApp)}, gone.Node(goneApp).Applications)
	resp := hapExpect(t, client, url, http.StatusServiceUnavailable, "", "Host", "gone.example.test")
	if got := resp.Header.Get("Retry-After"); got != "7" {
		t.Errorf("Retry-After %q, want \"7\"", got)
	}
	hapExpect(t, client, url, 200, "stays-1", "Host", "stays.example.test")
	hapExpect(t, client, url, http.StatusNotFound, "", "Host", "never.example.test")

	// Once forgotten, the host is unknown.
	lb.apply([]catalog.Node{stays.Node(staysApp)}, nil)
	hapExpect(t, client, url, http.StatusNotFound, "", "Host", "gone.example.test")
}

// TestHAProxyBackendStopped stops one of three backends without telling
// the load balancer: retries on other servers must hide it from clients
// at once, and health checks must then take it out.
func TestHAProxyBackendStopped(t *testing.T) {
	lb := startHAProxyLB(t, `{"check-interval": "200ms", "max-fails": 2}`)
	port := FreePort(t, hapListen)
	app := hapApp("web", catalog.ProtocolHTTP, port)
	var nodes []catalog.Node
	stop := map[string]func(){}
	for i, name := range []string{"web-1", "web-2", "web-3"} {
		n, s := hapStoppableBackend(t, name, fmt.Sprintf("127.0.19.%d", 11+i), app)
		nodes, stop[name] = append(nodes, n), s
	}
	lb.apply(nodes, nil)
	client := HTTPClient(hapAddr(port), nil)
	url := fmt.Sprintf("http://%s/", hapAddr(port))
	seen := Spread{}
	if err := Eventually(hapWait, func() error {
		_, name, _, err := Get(client, url)
		if err == nil {
			seen[name]++
		}
		if len(seen) < 3 {
			return fmt.Errorf("answers so far: %v", seen)
		}
		return nil
	}); err != nil {
		t.Fatalf("not every backend answers: %v", err)
	}

	stop["web-2"]()
	failed := 0
	answers := Spread{}
	for i := range 60 {
		code, name, _, err := Get(client, url)
		if err != nil || code != http.StatusOK {
			failed++
			t.Errorf("GET %d after web-2 stopped: status %d, %v", i, code, err)
			continue
		}
		answers[name]++
	}
	t.Logf("60 GETs right after web-2 stopped: %d failed, answers %v", failed, answers)
	if answers["web-2"] > 0 {
		t.Errorf("the stopped backend answered %d times", answers["web-2"])
	}
	if err := Eventually(hapWait, func() error {
		if !strings.Contains(lb.logs.String(), "Server scrimp_web/web-2 is DOWN") {
			return ErrNotReady
		}
		return nil
	}); err != nil {
		t.Errorf("haproxy never marked web-2 down: %v", err)
	}
}

// hapStoppableBackend starts an HTTP server on ip that answers its name,
// as StartBackend's does, and returns it as a node advertising app and a
// function that stops it (also called at cleanup).
func hapStoppableBackend(t *testing.T, name, ip string, app catalog.Application) (catalog.Node, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s\n", name)
	})}
	go srv.Serve(ln)
	var once sync.Once
	stop := func() { once.Do(func() { srv.Close() }) }
	t.Cleanup(stop)
	app.ApplicationPort = ln.Addr().(*net.TCPAddr).Port
	return catalog.Node{Name: name, Addr: netip.MustParseAddr(ip), Role: catalog.RoleBackend, Applications: []catalog.Application{app}}, stop
}
