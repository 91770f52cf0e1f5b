package node

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/internal/loopback"
)

// notifications records a node's sd_notify lines, as systemd would get
// them, and signals each on a channel.
type notifications struct {
	mu    sync.Mutex
	lines []string
	ready time.Time // when READY=1 came
	ch    chan string
}

func newNotifications() *notifications { return &notifications{ch: make(chan string, 16)} }

func (r *notifications) notify(state string) {
	r.mu.Lock()
	r.lines = append(r.lines, state)
	if state == "READY=1" {
		r.ready = time.Now()
	}
	r.mu.Unlock()
	r.ch <- state
}

func (r *notifications) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.lines...)
}

// wait returns the next line, failing the test after timeout.
func (r *notifications) wait(t *testing.T, who string, timeout time.Duration) string {
	t.Helper()
	select {
	case s := <-r.ch:
		return s
	case <-time.After(timeout):
		t.Fatalf("%s: no sd_notify line after %s (so far %q)", who, timeout, r.all())
		return ""
	}
}

// signalHandler passes records to next and closes seen at the first whose
// message is msg: a test waits on what the node logs instead of sleeping.
type signalHandler struct {
	slog.Handler
	msg  string
	once *sync.Once
	seen chan struct{}
}

func (h signalHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.once.Do(func() { close(h.seen) })
	}
	return h.Handler.Handle(ctx, r)
}

func (h signalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	h.Handler = h.Handler.WithAttrs(as)
	return h
}

func (h signalHandler) WithGroup(name string) slog.Handler {
	h.Handler = h.Handler.WithGroup(name)
	return h
}

// TestReadyAfterJoinAndFirstConfig checks what systemd's Type=notify units
// rely on: a backend says READY=1 only once it has joined a load balancer
// (not while it retries its seeds), a load balancer only once its proxy
// runs a configuration, and both say STOPPING=1 last, READY=1 once.
func TestReadyAfterJoinAndFirstConfig(t *testing.T) {
	requireNginx(t)
	const lbIP, beIP = "127.0.151.1", "127.0.151.2"

	// The load balancer's configuration first, for its gossip address; it
	// starts only after the backend has failed to join it.
	lbCfg, err := LocalConfig("lb", lbIP, nil)
	if err != nil {
		t.Fatal(err)
	}
	lbc := config.DefaultLB()
	lbc.StateDir, lbc.ListenAddr = t.TempDir(), lbIP
	lbCfg.LB = &lbc

	beCfg, err := LocalConfig("backend-1", beIP, []string{net.JoinHostPort(lbIP, strconv.Itoa(lbCfg.Cluster.BindPort))})
	if err != nil {
		t.Fatal(err)
	}
	listenPort, err := loopback.FreePort(lbIP)
	if err != nil {
		t.Fatal(err)
	}
	bc := config.DefaultBackend()
	bc.DrainTimeout, bc.DrainGrace = config.D(2*time.Second), config.D(0)
	bc.Applications = []config.Application{{Application: catalog.Application{
		Name: "web", ListenPort: listenPort, ApplicationPort: 18081, Protocol: catalog.ProtocolHTTP,
	}}}
	beCfg.Backend = &bc

	failed := make(chan struct{})
	logger := testLogger(t)
	beLog := slog.New(signalHandler{Handler: logger.Handler(), msg: "cannot join the cluster; retrying",
		once: new(sync.Once), seen: failed}).With("node", "backend-1")
	be, err := StartLocal(beCfg, beLog)
	if err != nil {
		t.Fatal(err)
	}
	beNotes := newNotifications()
	be.Notify = beNotes.notify
	beCtx, stopBE := context.WithCancel(context.Background())
	beDone := make(chan struct{})
	go func() {
		defer close(beDone)
		if err := be.Run(beCtx); err != nil {
			t.Errorf("backend: %v", err)
		}
	}()
	t.Cleanup(func() { stopBE(); <-beDone })

	select {
	case <-failed:
	case <-time.After(10 * time.Second):
		t.Fatal("the backend never reported a failed join")
	}
	if got := beNotes.all(); len(got) != 0 {
		t.Fatalf("backend sent %q before it joined any load balancer", got)
	}

	lbStart := time.Now()
	lbNode, err := Start(lbCfg, logger.With("node", "lb"))
	if err != nil {
		t.Fatal(err)
	}
	lbNotes := newNotifications()
	// What the proxy runs when the load balancer says READY=1.
	var atReady struct {
		config []byte
		err    error
	}
	lbNode.Notify = func(state string) {
		if state == "READY=1" {
			atReady.config, atReady.err = lbNode.RenderedConfig()
		}
		lbNotes.notify(state)
	}
	lbCtx, stopLB := context.WithCancel(context.Background())
	lbDone := make(chan struct{})
	go func() {
		defer close(lbDone)
		if err := lbNode.Run(lbCtx); err != nil {
			t.Errorf("lb: %v", err)
		}
	}()
	t.Cleanup(func() { stopLB(); <-lbDone })

	if s := lbNotes.wait(t, "lb", 15*time.Second); s != "READY=1" {
		t.Fatalf("lb: first line %q, want READY=1", s)
	}
	if atReady.err != nil {
		t.Fatalf("lb said READY=1 before its proxy ran a configuration: %v", atReady.err)
	}
	if len(atReady.config) == 0 {
		t.Fatalf("lb said READY=1 with an empty proxy configuration")
	}
	if s := beNotes.wait(t, "backend", 15*time.Second); s != "READY=1" {
		t.Fatalf("backend: first line %q, want READY=1", s)
	}
	beNotes.mu.Lock()
	beReady := beNotes.ready
	beNotes.mu.Unlock()
	if beReady.Before(lbStart) {
		t.Fatalf("backend said READY=1 %s before the load balancer started", lbStart.Sub(beReady))
	}
	if !seesLB(be.Snapshot(), "lb") {
		t.Fatalf("backend said READY=1 but does not see the load balancer: %+v", be.Snapshot().Nodes)
	}

	stopBE()
	<-beDone
	stopLB()
	<-lbDone
	for who, r := range map[string]*notifications{"backend": beNotes, "lb": lbNotes} {
		if got, want := strings.Join(r.all(), " "), "READY=1 STOPPING=1"; got != want {
			t.Errorf("%s sent %q, want %q", who, got, want)
		}
	}
}

// TestNoReadyAfterStopping: a node stopped before it is of use (a backend
// that never finds a load balancer) says STOPPING=1 and never READY=1.
func TestNoReadyAfterStopping(t *testing.T) {
	const ip = "127.0.151.9"
	cfg, err := LocalConfig("lonely", ip, []string{ip + ":1"})
	if err != nil {
		t.Fatal(err)
	}
	bc := config.DefaultBackend()
	bc.DrainTimeout, bc.DrainGrace = config.D(time.Second), config.D(0)
	bc.Applications = []config.Application{{Application: catalog.Application{
		Name: "web", ListenPort: 18080, ApplicationPort: 18081, Protocol: catalog.ProtocolHTTP,
	}}}
	cfg.Backend = &bc
	failed := make(chan struct{})
	logger := slog.New(signalHandler{Handler: testLogger(t).Handler(), msg: "cannot join the cluster; retrying",
		once: new(sync.Once), seen: failed})
	n, err := StartLocal(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	notes := newNotifications()
	n.Notify = notes.notify
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.Run(ctx)
	}()
	select {
	case <-failed:
	case <-time.After(10 * time.Second):
		cancel()
		<-done
		t.Fatal("the backend never reported a failed join")
	}
	cancel()
	<-done
	if got := strings.Join(notes.all(), " "); got != "STOPPING=1" {
		t.Fatalf("sent %q, want only STOPPING=1", got)
	}
}

func seesLB(s catalog.Snapshot, name string) bool {
	for _, m := range s.Nodes {
		if m.Name == name && m.Role == catalog.RoleLB {
			return true
		}
	}
	return false
}
