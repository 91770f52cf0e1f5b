package e2e_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/e2e"
	"github.com/scrimplb/scrimp/generator"
	"github.com/scrimplb/scrimp/internal/proctest"
	"github.com/scrimplb/scrimp/proxy"
)

// Every nginx end-to-end test uses its own addresses in 127.0.10.0 -
// 127.0.14.255 (other suites use other ranges): nginx listens on
// 127.0.10.N and the test's backends on 127.0.1x.y.

// ngxWait bounds how long a poll waits for nginx to pick something up.
const ngxWait = 15 * time.Second

// ngxLB is a managed nginx, run the way a scrimp load balancer runs it,
// fed by the nginx generator.
type ngxLB struct {
	m      *proxy.ManagedNginx
	gen    generator.Generator
	listen string
	// marker is a port where every applied configuration answers for
	// its own generation's host name only (see apply).
	marker     int
	generation int
	logs       *ngxLog
}

// ngxStart prepares a managed nginx listening on listen, with the nginx
// generator built from options (raw JSON, "" for the defaults). nginx
// starts with the first apply and stops at cleanup; its log is shown if
// the test fails.
func ngxStart(t *testing.T, listen, options string) *ngxLB {
	t.Helper()
	binary := e2e.RequireBinary(t, "nginx")
	var raw []byte
	if options != "" {
		raw = []byte(options)
	}
	gen, err := generator.New("nginx", raw)
	if err != nil {
		t.Fatal(err)
	}
	logs := &ngxLog{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("nginx log:\n%s", logs.String())
		}
	})
	m, err := proxy.NewManagedNginx(binary, t.TempDir(), 10*time.Second, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	// Registered after the log dump, so it runs first: the dump then
	// shows everything nginx said, and nothing writes to the log later.
	t.Cleanup(func() { m.Close() })
	return &ngxLB{m: m, gen: gen, listen: listen, marker: e2e.FreePort(t, listen), logs: logs}
}

// addr is the load balancer's host:port for a listen port.
func (n *ngxLB) addr(port int) string {
	return net.JoinHostPort(n.listen, strconv.Itoa(port))
}

// apply renders in (as a managed load balancer on n's address) with the
// given nodes, makes it live, and waits until nginx serves it and no
// longer serves the previous configuration. It returns the generator's
// warnings.
//
// nginx reloads asynchronously: after SIGHUP the master starts new
// workers and only then tells the old ones to stop accepting. To know
// when that is done, every configuration carries a marker: a retained
// application on n.marker for the host name generation-N.test, which
// answers 503, while any other host gets the default server's 404.
func (n *ngxLB) apply(t *testing.T, in generator.Input, nodes ...catalog.Node) []string {
	t.Helper()
	n.generation++
	gen := n.generation
	in.Snapshot = catalog.NewSnapshot(nodes)
	in.ListenAddr, in.Standalone, in.StateDir = n.listen, true, n.m.Dir()
	in.Retained = append(append([]catalog.Application(nil), in.Retained...), catalog.Application{
		Name: fmt.Sprintf("generation-%d", gen), ListenPort: n.marker, ApplicationPort: 1,
		Protocol: catalog.ProtocolHTTP, Domains: []string{fmt.Sprintf("generation-%d.test", gen)},
	})
	out, err := n.gen.Render(in)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.m.Apply(ctx, out.Config); err != nil {
		t.Fatalf("apply generation %d: %v\n%s", gen, err, out.Config)
	}
	client := e2e.HTTPClient(n.addr(n.marker), nil)
	status := func(g int) int {
		code, _, _, err := e2e.Get(client, "http://marker/", "Host", fmt.Sprintf("generation-%d.test", g))
		if err != nil {
			return 0
		}
		return code
	}
	// Several consecutive good answers, each on a new connection that any
	// worker may accept: one could still come from an old worker that has
	// not yet been told to stop.
	streak := 0
	err = e2e.Eventually(ngxWait, func() error {
		cur, prev := status(gen), http.StatusNotFound
		if gen > 1 {
			prev = status(gen - 1)
		}
		if cur != http.StatusServiceUnavailable || prev != http.StatusNotFound {
			streak = 0
			return fmt.Errorf("generation %d answers %d, generation %d answers %d: %w", gen, cur, gen-1, prev, e2e.ErrNotReady)
		}
		if streak++; streak < 5 {
			return e2e.ErrNotReady
		}
		return nil
	})
	if err != nil {
		t.Fatalf("nginx did not switch to configuration generation %d: %v\n%s", gen, err, out.Config)
	}
	return out.Warnings
}

// applyClean is apply for a configuration that must leave nothing out.
func (n *ngxLB) applyClean(t *testing.T, in generator.Input, nodes ...catalog.Node) {
	t.Helper()
	if w := n.apply(t, in, nodes...); len(w) > 0 {
		t.Fatalf("unexpected generator warnings: %q", w)
	}
}

// ngxLog collects the managed nginx's log lines; exec's copying
// goroutine writes while the test may read.
type ngxLog struct{ proctest.Buffer }

// count returns how many logged lines contain all of parts.
func (l *ngxLog) count(parts ...string) int {
	n := 0
	for _, line := range strings.Split(l.String(), "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

// ngxStoppableBackend is an HTTP server that answers "NAME\n" like an
// e2e.Backend, but that a test can stop to play a backend that died. It
// returns the cluster member advertising apps (ApplicationPort set to the
// server's port) and a function that stops the server.
func ngxStoppableBackend(t *testing.T, name, ip string, apps ...catalog.Application) (catalog.Node, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("backend %s: %v", name, err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "%s\n", name)
	})}
	go srv.Serve(ln)
	var once sync.Once
	stop := func() { once.Do(func() { srv.Close() }) }
	t.Cleanup(stop)
	port := ln.Addr().(*net.TCPAddr).Port
	out := make([]catalog.Application, len(apps))
	for i, a := range apps {
		a.ApplicationPort = port
		out[i] = a
	}
	return catalog.Node{Name: name, Addr: netip.MustParseAddr(ip), Role: catalog.RoleBackend, Applications: out}, stop
}

// ngxAsk sends one request through c and returns the answering backend's
// name, or an error for anything but a 200.
func ngxAsk(c *http.Client, url string, header ...string) (string, error) {
	code, name, _, err := e2e.Get(c, url, header...)
	if err != nil {
		return "", err
	}
	if code != http.StatusOK {
		return "", fmt.Errorf("GET %s: status %d", url, code)
	}
	return name, nil
}

// ngxSpread asks n times with ask and counts the answers; it fails the
// test at the first error.
func ngxSpread(t *testing.T, n int, ask func() (string, error)) e2e.Spread {
	t.Helper()
	s := e2e.Spread{}
	for i := range n {
		name, err := ask()
		if err != nil {
			t.Fatalf("request %d of %d: %v", i+1, n, err)
		}
		s[name]++
	}
	return s
}

// ngxEventually polls ask until it answers without error, so a test can
// wait for a listener or route to come up.
func ngxEventually(t *testing.T, what string, ask func() (string, error)) {
	t.Helper()
	err := e2e.Eventually(ngxWait, func() error {
		_, err := ask()
		return err
	})
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}
