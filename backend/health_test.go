package backend

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/config"
)

// Modes of a healthServer.
const (
	modeOK       int32 = iota
	modeFail           // every check fails
	modeFlapUp         // every third check fails: never fall 3 in a row
	modeFlapDown       // every third check passes: never rise 2 in a row
)

// healthServer is a real HTTP server on 127.0.0.1 whose health answer a
// test controls, counting the checks it receives.
type healthServer struct {
	*httptest.Server
	port int
	mode atomic.Int32
	hits atomic.Int64
}

func newHealthServer(t *testing.T) *healthServer {
	t.Helper()
	h := &healthServer{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := h.hits.Add(1)
		ok := true
		switch h.mode.Load() {
		case modeFail:
			ok = false
		case modeFlapUp:
			ok = n%3 != 0
		case modeFlapDown:
			ok = n%3 == 0
		}
		if !ok {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	t.Cleanup(h.Close)
	h.port = h.Listener.Addr().(*net.TCPAddr).Port
	return h
}

func (h *healthServer) setMode(m int32) { h.mode.Store(m) }

// waitHits waits until the server has answered n more checks.
func (h *healthServer) waitHits(t *testing.T, n int64) {
	t.Helper()
	target := h.hits.Load() + n
	waitUntil(t, fmt.Sprintf("%d more health checks", n), func() bool { return h.hits.Load() >= target })
}

// fastCheck is a "health-check" member with short timings, plus extra
// members.
func fastCheck(extra string) string {
	if extra != "" {
		extra = ", " + extra
	}
	return `, "health-check": {"interval": "50ms", "timeout": "50ms", "rise": 2, "fall": 2` + extra + `}`
}

// closedPort returns a port on 127.0.0.1 that nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

// appProtoJSON is appJSON with another protocol.
func appProtoJSON(name string, port int, proto, extra string) string {
	return strings.Replace(appJSON(name, port, extra), `"protocol": "http"`, fmt.Sprintf("%q: %q", "protocol", proto), 1)
}

// checkState runs a backend with one application file and waits for the
// application to be advertised in state want; it fails if the application
// was ever advertised in another state besides the initial down.
func checkState(t *testing.T, content string, port int, want catalog.State) {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "web.json"), content)
	b, _ := newBackend(t, &config.Backend{ApplicationConfigDir: dir})
	adv := &fakeAdv{}
	run(t, b, adv)
	waitCall(t, adv, 0, fmt.Sprintf("web:%d=%s", port, want))
	for _, c := range adv.since(0) {
		if d := describe(c.apps); d != fmt.Sprintf("web:%d=%s", port, want) && d != fmt.Sprintf("web:%d=down", port) {
			t.Errorf("advertised %s, want only %s", d, want)
		}
	}
}

func TestHealthHTTP(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		tls     bool
		extra   func(port int) string // the rest of the application object
		want    catalog.State
	}{
		{
			name:    "200 expected by default",
			handler: func(w http.ResponseWriter, r *http.Request) {},
			extra:   func(int) string { return fastCheck("") },
			want:    catalog.StateUp,
		},
		{
			name:    "500 is down",
			handler: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) },
			extra:   func(int) string { return fastCheck("") },
			want:    catalog.StateDown,
		},
		{
			name:    "listed status accepted",
			handler: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) },
			extra:   func(int) string { return fastCheck(`"expect-status": [200, 204]`) },
			want:    catalog.StateUp,
		},
		{
			name:    "single expected status",
			handler: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) },
			extra:   func(int) string { return fastCheck(`"expect-status": 204`) },
			want:    catalog.StateUp,
		},
		{
			name:    "status not listed is down",
			handler: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) },
			extra:   func(int) string { return fastCheck("") },
			want:    catalog.StateDown,
		},
		{
			name: "redirect is not followed",
			handler: func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/" {
					http.Redirect(w, r, "/ok", http.StatusFound)
				}
			},
			extra: func(int) string { return fastCheck("") },
			want:  catalog.StateDown,
		},
		{
			name:    "explicit path with query",
			handler: only(func(r *http.Request) bool { return r.URL.RequestURI() == "/healthz?full=1" }),
			extra:   func(int) string { return fastCheck(`"path": "/healthz?full=1"`) },
			want:    catalog.StateUp,
		},
		{
			name:    "path defaults to health-path",
			handler: only(func(r *http.Request) bool { return r.URL.Path == "/ready" }),
			extra:   func(int) string { return `, "health-path": "/ready"` + fastCheck("") },
			want:    catalog.StateUp,
		},
		{
			name:    "host header is the first exact domain",
			handler: only(func(r *http.Request) bool { return r.Host == "example.com" }),
			extra:   func(int) string { return `, "domains": ["*.example.org", "example.com"]` + fastCheck("") },
			want:    catalog.StateUp,
		},
		{
			name:    "the check says who it is",
			handler: only(func(r *http.Request) bool { return r.UserAgent() == "scrimp-health-check" }),
			extra:   func(int) string { return fastCheck("") },
			want:    catalog.StateUp,
		},
		{
			name:    "timeout is a failure",
			handler: func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() },
			extra:   func(int) string { return fastCheck("") },
			want:    catalog.StateDown,
		},
		{
			name:    "https application is checked over TLS",
			handler: only(func(r *http.Request) bool { return r.TLS != nil }),
			tls:     true,
			extra:   func(int) string { return fastCheck("") },
			want:    catalog.StateUp,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var srv *httptest.Server
			if tt.tls {
				srv = httptest.NewTLSServer(tt.handler)
			} else {
				srv = httptest.NewServer(tt.handler)
			}
			t.Cleanup(srv.Close)
			port := srv.Listener.Addr().(*net.TCPAddr).Port
			proto := "http"
			if tt.tls {
				proto = "https"
			}
			checkState(t, appProtoJSON("web", port, proto, tt.extra(port)), port, tt.want)
		})
	}
}

// only answers 200 to requests that satisfy ok, 404 to others.
func only(ok func(*http.Request) bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !ok(r) {
			http.NotFound(w, r)
		}
	}
}

func TestHealthTCP(t *testing.T) {
	listening := func(t *testing.T) int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		return l.Addr().(*net.TCPAddr).Port
	}
	tests := []struct {
		name  string
		port  func(t *testing.T) int
		proto string
		check string
		want  catalog.State
	}{
		{"listening port is up", listening, "tcp", `"type": "tcp"`, catalog.StateUp},
		{"closed port is down", closedPort, "tcp", `"type": "tcp"`, catalog.StateDown},
		{"default type for grpc is tcp", listening, "grpc", "", catalog.StateUp},
		{"explicit tcp check of an http application", listening, "http", `"type": "tcp"`, catalog.StateUp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			port := tt.port(t)
			checkState(t, appProtoJSON("web", port, tt.proto, fastCheck(tt.check)), port, tt.want)
		})
	}
}

// TestHealthThresholds drives a real check through flapping and steady
// failures and recoveries, and checks that the advertisement changes
// exactly once per threshold crossed and never for flapping.
func TestHealthThresholds(t *testing.T) {
	dir := t.TempDir()
	srv := newHealthServer(t)
	// Generous timings: a check that times out on a busy machine must not
	// look like a designed failure.
	check := `, "health-check": {"interval": "100ms", "timeout": "100ms", "rise": 2, "fall": 3}`
	writeFile(t, filepath.Join(dir, "web.json"), appJSON("web", srv.port, check))
	b, logs := newBackend(t, &config.Backend{ApplicationConfigDir: dir})
	adv := &fakeAdv{}
	run(t, b, adv)
	up, down := fmt.Sprintf("web:%d=up", srv.port), fmt.Sprintf("web:%d=down", srv.port)
	waitCall(t, adv, 0, up)
	s := &sentinel{dir: dir}
	last := s.mark(t, adv, 0, up)

	steps := []struct {
		name    string
		mode    int32
		checks  int64  // checks to let pass before looking
		want    string // the state then
		changes int    // advertisements of web caused by the step
	}{
		{"flapping while up never reaches fall", modeFlapUp, 12, up, 0},
		{"steady failure goes down once", modeFail, 8, down, 1},
		{"flapping while down never reaches rise", modeFlapDown, 12, down, 0},
		{"steady success comes up once", modeOK, 8, up, 1},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			from := last + 1
			current := fmt.Sprintf("zz-sentinel-%d:", s.n.Load())
			srv.setMode(st.mode)
			changed := time.Now()
			srv.waitHits(t, st.checks)
			last = s.mark(t, adv, from, st.want)
			// Until the new sentinel, only state changes of web are
			// advertised with the current sentinel (removing it may be
			// advertised on its own).
			calls := adv.since(from)[:last-from]
			changes := 0
			for _, c := range calls {
				if strings.Contains(describe(c.apps), current) {
					changes++
					t.Logf("server changed -> %s advertised after %v (interval 100ms, rise 2, fall 3)",
						st.want, c.at.Sub(changed).Round(time.Millisecond))
				}
			}
			if changes != st.changes {
				t.Errorf("%d advertisements, want %d; calls since the step began:\n%s", changes, st.changes, describeCalls(calls))
			}
		})
	}
	logs.waitLog(t, "application is down: health check failed", "application=web")
	logs.waitLog(t, "application is up", "application=web")
}

func describeCalls(calls []call) string {
	var b strings.Builder
	for _, c := range calls {
		b.WriteString("\t" + describe(c.apps) + "\n")
	}
	return b.String()
}

func TestNewProbe(t *testing.T) {
	app := func(proto catalog.Protocol, hc config.HealthCheck, mod func(*catalog.Application)) config.Application {
		a := config.Application{Application: catalog.Application{Name: "web", ListenPort: 80, ApplicationPort: 8080, Protocol: proto}, HealthCheck: &hc}
		if mod != nil {
			mod(&a.Application)
		}
		return a
	}
	def := config.DefaultHealthCheck()
	tests := []struct {
		name string
		app  config.Application
		addr string
		want probe
	}{
		{"http defaults", app(catalog.ProtocolHTTP, def, nil), "127.0.0.1",
			probe{kind: "http", addr: "127.0.0.1:8080", path: "/", expect: []int{200}, interval: 2 * time.Second, timeout: time.Second, rise: 2, fall: 3}},
		{"https with domains and health path", app(catalog.ProtocolHTTPS, def, func(a *catalog.Application) {
			a.Domains, a.HealthPath = []string{"*.example.org", "example.com"}, "/ready"
		}), "127.0.0.1",
			probe{kind: "http", addr: "127.0.0.1:8080", path: "/ready", host: "example.com", tls: true, expect: []int{200}, interval: 2 * time.Second, timeout: time.Second, rise: 2, fall: 3}},
		{"tcp for grpc on an IPv6 address", app(catalog.ProtocolGRPC, def, nil), "::1",
			probe{kind: "tcp", addr: "[::1]:8080", interval: 2 * time.Second, timeout: time.Second, rise: 2, fall: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := newProbe(tt.app, netip.MustParseAddr(tt.addr))
			if !got.equal(tt.want) {
				t.Errorf("newProbe = %+v\nwant %+v", got, tt.want)
			}
		})
	}
}
