package e2e_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/e2e"
	"github.com/scrimplb/scrimp/generator"
)

// TestNginxHTTPHostRouting runs two applications on one listen port, told
// apart by host name, and a third that takes one path prefix of one of
// those hosts: each request reaches only its application's backends, and
// an unknown host gets the default server's 404.
func TestNginxHTTPHostRouting(t *testing.T) {
	const listen = "127.0.10.1"
	lb := ngxStart(t, listen, "")
	port := e2e.FreePort(t, listen)
	alpha := catalog.Application{Name: "alpha", ListenPort: port, Protocol: catalog.ProtocolHTTP, Domains: []string{"alpha.test", "www.alpha.test"}}
	beta := catalog.Application{Name: "beta", ListenPort: port, Protocol: catalog.ProtocolHTTP, Domains: []string{"beta.test"}}
	docs := catalog.Application{Name: "docs", ListenPort: port, Protocol: catalog.ProtocolHTTP, Domains: []string{"alpha.test"}, Paths: []string{"/docs"}}
	a1 := e2e.StartBackend(t, "alpha-1", "127.0.11.1")
	a2 := e2e.StartBackend(t, "alpha-2", "127.0.11.2")
	b1 := e2e.StartBackend(t, "beta-1", "127.0.11.3")
	d1 := e2e.StartBackend(t, "docs-1", "127.0.11.4")
	lb.applyClean(t, generator.Input{}, a1.Node(alpha), a2.Node(alpha), b1.Node(beta), d1.Node(docs))
	client := e2e.HTTPClient(lb.addr(port), nil)

	tests := []struct {
		name   string
		url    string
		want   []string // backends that answer (each at least once), or
		status int      // the status nginx itself answers with
	}{
		{name: "first host", url: "http://alpha.test/", want: []string{"alpha-1", "alpha-2"}},
		{name: "second name of the first host", url: "http://www.alpha.test/some/page", want: []string{"alpha-1", "alpha-2"}},
		{name: "path prefix application", url: "http://alpha.test/docs/intro", want: []string{"docs-1"}},
		{name: "path prefix only on its own host", url: "http://www.alpha.test/docs/intro", want: []string{"alpha-1", "alpha-2"}},
		{name: "second host", url: "http://beta.test/docs", want: []string{"beta-1"}},
		{name: "unknown host", url: "http://unknown.test/", status: http.StatusNotFound},
		{name: "no host name", url: "http://" + lb.addr(port) + "/", status: http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen := e2e.Spread{}
			for i := range 20 {
				code, name, resp, err := e2e.Get(client, tt.url)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				if tt.status != 0 {
					if code != tt.status {
						t.Fatalf("request %d: status %d (body %q), want %d", i, code, name, tt.status)
					}
					continue
				}
				if code != http.StatusOK {
					t.Fatalf("request %d: status %d, want 200", i, code)
				}
				// The backend sees the host the client asked for.
				if host := resp.Header.Get("X-Host"); host != resp.Request.URL.Host {
					t.Errorf("backend saw Host %q, want %q", host, resp.Request.URL.Host)
				}
				seen[name]++
			}
			if tt.status == 0 {
				if got := slices.Sorted(maps.Keys(seen)); !slices.Equal(got, tt.want) {
					t.Errorf("answered by %v, want each of %v", seen, tt.want)
				}
			}
		})
	}
}

// TestNginxTLS terminates TLS at nginx for two https applications on one
// port, chosen by SNI: clients that trust the test CA complete the
// handshake (HTTP/1.1 and HTTP/2) and reach the right backends; a name
// without a certificate is refused at the handshake.
func TestNginxTLS(t *testing.T) {
	const listen = "127.0.10.2"
	lb := ngxStart(t, listen, "")
	port := e2e.FreePort(t, listen)
	ca := e2e.NewCA(t)
	dir := t.TempDir()
	shopCert, shopKey := ca.Issue(t, dir, "shop.test", "www.shop.test")
	appsCert, appsKey := ca.Issue(t, dir, "*.apps.test")
	certs := []generator.TLSCert{
		{Domains: []string{"shop.test", "www.shop.test"}, Cert: shopCert, Key: shopKey},
		{Domains: []string{"*.apps.test"}, Cert: appsCert, Key: appsKey},
	}
	shop := catalog.Application{Name: "shop", ListenPort: port, Protocol: catalog.ProtocolHTTPS, Domains: []string{"shop.test", "www.shop.test"}}
	tenants := catalog.Application{Name: "tenants", ListenPort: port, Protocol: catalog.ProtocolHTTPS, Domains: []string{"*.apps.test"}}
	nocert := catalog.Application{Name: "nocert", ListenPort: port, Protocol: catalog.ProtocolHTTPS, Domains: []string{"nocert.test"}}
	s1 := e2e.StartBackend(t, "shop-1", "127.0.11.11")
	s2 := e2e.StartBackend(t, "shop-2", "127.0.11.12")
	t1 := e2e.StartBackend(t, "tenants-1", "127.0.11.13")
	n1 := e2e.StartBackend(t, "nocert-1", "127.0.11.14")
	warnings := lb.apply(t, generator.Input{TLS: certs}, s1.Node(shop), s2.Node(shop), t1.Node(tenants), n1.Node(nocert))
	if want := []string{"application nocert: no usable certificate in lb.tls for nocert.test; left out"}; !slices.Equal(warnings, want) {
		t.Errorf("warnings %q, want %q", warnings, want)
	}

	h1 := e2e.HTTPClient(lb.addr(port), ca.Pool)
	h2 := e2e.HTTPClient(lb.addr(port), ca.Pool)
	tr := h2.Transport.(*http.Transport).Clone()
	tr.ForceAttemptHTTP2 = true // a custom TLS config turns HTTP/2 off unless asked for
	h2.Transport = tr

	tests := []struct {
		name     string
		client   *http.Client
		url      string
		want     []string // backends that answer, each at least once
		certName string   // a name in the certificate nginx presents
		proto    int      // HTTP major version
		refused  bool     // the handshake must fail
	}{
		{name: "exact name", client: h1, url: "https://shop.test/", want: []string{"shop-1", "shop-2"}, certName: "shop.test", proto: 1},
		{name: "second name", client: h1, url: "https://www.shop.test/cart", want: []string{"shop-1", "shop-2"}, certName: "www.shop.test", proto: 1},
		{name: "wildcard certificate", client: h1, url: "https://acme.apps.test/", want: []string{"tenants-1"}, certName: "*.apps.test", proto: 1},
		{name: "http2", client: h2, url: "https://shop.test/", want: []string{"shop-1", "shop-2"}, certName: "shop.test", proto: 2},
		{name: "unknown name", client: h1, url: "https://unknown.test/", refused: true},
		{name: "application without certificate", client: h1, url: "https://nocert.test/", refused: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen := e2e.Spread{}
			for i := range 10 {
				code, name, resp, err := e2e.Get(tt.client, tt.url)
				if tt.refused {
					if err == nil {
						t.Fatalf("request %d: status %d from %q, want a refused handshake", i, code, name)
					}
					continue
				}
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				if code != http.StatusOK {
					t.Fatalf("request %d: status %d, want 200", i, code)
				}
				if resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 || !slices.Contains(resp.TLS.PeerCertificates[0].DNSNames, tt.certName) {
					t.Fatalf("request %d: TLS state %+v, want TLS 1.2+ with a certificate for %s", i, resp.TLS, tt.certName)
				}
				if resp.ProtoMajor != tt.proto {
					t.Errorf("request %d: %s, want HTTP/%d", i, resp.Proto, tt.proto)
				}
				seen[name]++
			}
			if !tt.refused {
				if got := slices.Sorted(maps.Keys(seen)); !slices.Equal(got, tt.want) {
					t.Errorf("answered by %v, want each of %v", seen, tt.want)
				}
			}
		})
	}
}

// TestNginxStream runs tcp and udp applications through nginx's stream
// block: a tcp and a udp application on the same port number, round-robin
// over two backends, and a tcp application hashed on the client address,
// which always reaches the same backend.
func TestNginxStream(t *testing.T) {
	const listen = "127.0.10.3"
	// A short udp session timeout lets nginx stop quickly at cleanup: a
	// graceful stop waits for open udp sessions to time out.
	lb := ngxStart(t, listen, `{"udp-timeout": "1s"}`)
	port, sticky := e2e.FreePort(t, listen), e2e.FreePort(t, listen)
	db := catalog.Application{Name: "db", ListenPort: port, Protocol: catalog.ProtocolTCP}
	dns := catalog.Application{Name: "dns", ListenPort: port, Protocol: catalog.ProtocolUDP}
	pinned := catalog.Application{Name: "pinned", ListenPort: sticky, Protocol: catalog.ProtocolTCP, Balance: catalog.BalanceHash, HashKey: "source-ip"}
	b1 := e2e.StartBackend(t, "stream-1", "127.0.11.21")
	b2 := e2e.StartBackend(t, "stream-2", "127.0.11.22")
	lb.applyClean(t, generator.Input{}, b1.Node(db, dns, pinned), b2.Node(db, dns, pinned))

	both := []string{"stream-1", "stream-2"}
	tests := []struct {
		name  string
		ask   func() (string, error)
		want  []string // every backend that must answer
		count int      // how many distinct backends answer
	}{
		{name: "tcp round-robin", ask: func() (string, error) { return e2e.TCPAsk(lb.addr(port)) }, want: both, count: 2},
		{name: "udp round-robin", ask: func() (string, error) { return e2e.UDPAsk(lb.addr(port)) }, want: both, count: 2},
		{name: "tcp hashed on source-ip", ask: func() (string, error) { return e2e.TCPAsk(lb.addr(sticky)) }, count: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ngxEventually(t, "first answer", tt.ask)
			seen := ngxSpread(t, 20, tt.ask)
			if len(seen) != tt.count {
				t.Errorf("answered by %v, want %d distinct backends", seen, tt.count)
			}
			for _, name := range tt.want {
				if seen[name] == 0 {
					t.Errorf("answered by %v, never by %s", seen, name)
				}
			}
		})
	}
}

// TestNginxGRPCSpread makes 300 unary calls over ONE HTTP/2 client
// connection: nginx balances per request, not per connection, so each of
// three backends gets an equal share within ±10%.
func TestNginxGRPCSpread(t *testing.T) {
	ngxGRPCSpread(t, "127.0.10.4", "", 31, "gRPC")
}

// ngxGRPCSpread starts nginx on listen with config in front of three gRPC
// backends (127.0.11.first and the two after it), makes 300 unary calls
// over one client connection and wants each backend to get a third within
// ±10%. what names the setup in the log.
func ngxGRPCSpread(t *testing.T, listen, config string, first int, what string) {
	t.Helper()
	lb := ngxStart(t, listen, config)
	port := e2e.FreePort(t, listen)
	rpc := catalog.Application{Name: "rpc", ListenPort: port, Protocol: catalog.ProtocolGRPC}
	names := []string{"grpc-1", "grpc-2", "grpc-3"}
	var nodes []catalog.Node
	for i, name := range names {
		nodes = append(nodes, e2e.StartBackend(t, name, fmt.Sprintf("127.0.11.%d", first+i)).Node(rpc))
	}
	lb.applyClean(t, generator.Input{}, nodes...)

	conn := e2e.GRPCConn(t, lb.addr(port))
	call := func() (string, error) { return e2e.GRPCCall(context.Background(), conn) }
	ngxEventually(t, "first gRPC call", call)
	spread := ngxSpread(t, 300, call)
	ok, desc := spread.Within(names, 0.10)
	t.Logf("%s, 300 calls on one connection: %s", what, desc)
	if !ok {
		t.Errorf("calls on one connection are not spread evenly: %s", desc)
	}
}

// TestNginxHashHeader balances on a request header: every one of 1,000
// keys lands on the same backend each time it is asked, and adding a
// fourth backend moves about a quarter of the keys (at most 35%), all of
// them to the new backend.
func TestNginxHashHeader(t *testing.T) {
	const (
		listen = "127.0.10.5"
		keys   = 1000
	)
	lb := ngxStart(t, listen, "")
	port := e2e.FreePort(t, listen)
	app := catalog.Application{Name: "accounts", ListenPort: port, Protocol: catalog.ProtocolHTTP, Balance: catalog.BalanceHash, HashKey: "header:X-Account-Id"}
	var nodes []catalog.Node
	for i := range 4 {
		nodes = append(nodes, e2e.StartBackend(t, fmt.Sprintf("hash-%d", i+1), fmt.Sprintf("127.0.11.%d", 41+i)).Node(app))
	}
	client := e2e.HTTPClient(lb.addr(port), nil)

	// placement asks for every key twice (on separate connections, so
	// possibly through different nginx workers) and returns where each
	// landed; a key answered by two backends fails the test.
	placement := func() map[string]string {
		t.Helper()
		var (
			mu     sync.Mutex
			placed = make(map[string]string, keys)
			errs   []error
			wg     sync.WaitGroup
			next   = make(chan string)
		)
		for range 4 {
			wg.Go(func() {
				for key := range next {
					var got [2]string
					for i := range got {
						name, err := ngxAsk(client, "http://accounts.test/", "X-Account-Id", key)
						if err != nil {
							mu.Lock()
							errs = append(errs, fmt.Errorf("key %s: %w", key, err))
							mu.Unlock()
							return
						}
						got[i] = name
					}
					mu.Lock()
					if got[0] != got[1] {
						errs = append(errs, fmt.Errorf("key %s answered by %s, then by %s", key, got[0], got[1]))
					}
					placed[key] = got[0]
					mu.Unlock()
				}
			})
		}
		for i := range keys {
			next <- fmt.Sprintf("account-%04d", i)
		}
		close(next)
		wg.Wait()
		for _, err := range errs[:min(len(errs), 5)] {
			t.Error(err)
		}
		if len(errs) > 0 {
			t.Fatalf("%d errors", len(errs))
		}
		return placed
	}
	shares := func(placed map[string]string) e2e.Spread {
		s := e2e.Spread{}
		for _, name := range placed {
			s[name]++
		}
		return s
	}

	lb.applyClean(t, generator.Input{}, nodes[:3]...)
	before := placement()
	t.Logf("hash on X-Account-Id, 3 backends: %d keys each asked twice, each always on one backend; keys per backend: %v", keys, shares(before))

	lb.applyClean(t, generator.Input{}, nodes...)
	after := placement()
	moved, elsewhere := 0, 0
	for key, was := range before {
		if after[key] != was {
			moved++
			if after[key] != "hash-4" {
				elsewhere++
			}
		}
	}
	fraction := float64(moved) / keys
	t.Logf("after adding a 4th backend: %d of %d keys moved (%.1f%%, ideal 25%%), %d of them not to the new backend; keys per backend: %v",
		moved, keys, 100*fraction, elsewhere, shares(after))
	if fraction > 0.35 {
		t.Errorf("%.1f%% of the keys moved when a 4th backend joined, want at most 35%%", 100*fraction)
	}
	if elsewhere > 0 {
		t.Errorf("%d keys moved between the old backends; consistent hashing moves keys only to the new one", elsewhere)
	}
}

// TestNginxRetained removes every backend of an application while the
// load balancer still retains it: its host answers 503 with Retry-After
// (not 404, not a refused connection) while the other application keeps
// working; once it is forgotten, its host gets the default server's 404.
func TestNginxRetained(t *testing.T) {
	const listen = "127.0.10.6"
	lb := ngxStart(t, listen, "")
	port := e2e.FreePort(t, listen)
	web := catalog.Application{Name: "web", ListenPort: port, Protocol: catalog.ProtocolHTTP, Domains: []string{"web.test"}}
	gone := catalog.Application{Name: "gone", ListenPort: port, Protocol: catalog.ProtocolHTTP, Domains: []string{"gone.test"}}
	w1 := e2e.StartBackend(t, "web-1", "127.0.11.51")
	g1 := e2e.StartBackend(t, "gone-1", "127.0.11.52")
	client := e2e.HTTPClient(lb.addr(port), nil)

	type check struct {
		url        string
		status     int
		backend    string // for a 200
		retryAfter string // for a 503
	}
	steps := []struct {
		name     string
		nodes    []catalog.Node
		retained []catalog.Application
		checks   []check
	}{
		{
			name:  "both live",
			nodes: []catalog.Node{w1.Node(web), g1.Node(gone)},
			checks: []check{
				{url: "http://web.test/", status: http.StatusOK, backend: "web-1"},
				{url: "http://gone.test/", status: http.StatusOK, backend: "gone-1"},
			},
		},
		{
			name:     "all backends gone, retained",
			nodes:    []catalog.Node{w1.Node(web)},
			retained: g1.Node(gone).Applications, // as lb keeps it: the last definition seen
			checks: []check{
				{url: "http://web.test/", status: http.StatusOK, backend: "web-1"},
				{url: "http://gone.test/", status: http.StatusServiceUnavailable, retryAfter: "5"},
				{url: "http://gone.test/any/path?x=1", status: http.StatusServiceUnavailable, retryAfter: "5"},
			},
		},
		{
			name:  "forgotten",
			nodes: []catalog.Node{w1.Node(web)},
			checks: []check{
				{url: "http://web.test/", status: http.StatusOK, backend: "web-1"},
				{url: "http://gone.test/", status: http.StatusNotFound},
			},
		},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			lb.applyClean(t, generator.Input{Retained: step.retained}, step.nodes...)
			for _, c := range step.checks {
				code, name, resp, err := e2e.Get(client, c.url)
				switch {
				case err != nil:
					t.Errorf("GET %s: %v", c.url, err)
				case code != c.status:
					t.Errorf("GET %s: status %d (%q), want %d", c.url, code, name, c.status)
				case c.backend != "" && name != c.backend:
					t.Errorf("GET %s: answered by %q, want %q", c.url, name, c.backend)
				case resp.Header.Get("Retry-After") != c.retryAfter:
					t.Errorf("GET %s: Retry-After %q, want %q", c.url, resp.Header.Get("Retry-After"), c.retryAfter)
				}
			}
		})
	}
}

// TestNginxDeadBackend stops one of three backends without telling the
// load balancer: nginx's passive checks and proxy_next_upstream keep every
// GET succeeding on the other two, also each time the dead backend's
// fail_timeout runs out and nginx tries it again.
func TestNginxDeadBackend(t *testing.T) {
	const listen = "127.0.10.7"
	lb := ngxStart(t, listen, `{"fail-timeout": "1s"}`)
	port := e2e.FreePort(t, listen)
	web := catalog.Application{Name: "web", ListenPort: port, Protocol: catalog.ProtocolHTTP}
	l1 := e2e.StartBackend(t, "live-1", "127.0.11.61")
	l2 := e2e.StartBackend(t, "live-2", "127.0.11.62")
	doomed, stop := ngxStoppableBackend(t, "doomed", "127.0.11.63", web)
	lb.applyClean(t, generator.Input{}, l1.Node(web), l2.Node(web), doomed)
	client := e2e.HTTPClient(lb.addr(port), nil)
	ask := func() (string, error) { return ngxAsk(client, "http://web.test/") }

	if before := ngxSpread(t, 30, ask); len(before) != 3 {
		t.Fatalf("before the failure, answered by %v, want all three backends", before)
	}
	stop()
	// Long enough for the dead backend's 1s fail_timeout to run out twice,
	// so some requests are first sent to it again and must be retried.
	deadline := time.Now().Add(2500 * time.Millisecond)
	after := e2e.Spread{}
	for n := 0; n < 300 || time.Now().Before(deadline); n++ {
		name, err := ask()
		if err != nil {
			t.Fatalf("GET %d after the backend died: %v", n+1, err)
		}
		after[name]++
	}
	// Each time nginx tried the dead backend it logged the refused
	// connection, and the request went on to a live one.
	tried := lb.logs.count("Connection refused", doomed.Addr.String())
	t.Logf("after one of three backends died: %d GETs, all answered: %v; the dead backend was tried (and the GET retried) %d times", after["live-1"]+after["live-2"], after, tried)
	if after["doomed"] > 0 {
		t.Errorf("a dead backend answered: %v", after)
	}
	if tried < 2 {
		t.Errorf("nginx tried the dead backend %d times, want at least 2 (once, and again after fail_timeout)", tried)
	}
}
