package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/generator"
	"github.com/scrimplb/scrimp/internal/proctest"
)

func haproxyBinary(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"haproxy", "/usr/sbin/haproxy"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("haproxy is not installed, and CI is set: the managed proxy must be tested against it")
	}
	t.Skip("haproxy not in PATH; set CI=1 to make this a failure")
	return ""
}

// haproxyProcsOf returns the live processes that belong to the HAProxy
// instances of state directory dir: every process whose command line
// names dir (masters and workers), and every process in their process
// groups or in one of groups.
func haproxyProcsOf(t *testing.T, dir string, groups ...int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	pgids := map[int]bool{}
	for _, g := range groups {
		if g != 0 {
			pgids[g] = true
		}
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && alive(pid) && bytes.Contains(cmdline, []byte(dir+"/")) {
			pgids[pid] = true
			if pgid, err := syscall.Getpgid(pid); err == nil {
				pgids[pgid] = true
			}
		}
	}
	var pids []int
	for g := range pgids {
		pids = append(pids, group(t, g)...)
	}
	return pids
}

// closeHAProxyBounded calls h.Close and fails t if it does not return in
// time; it then kills HAProxy itself so that Close, and the test, can
// finish.
func closeHAProxyBounded(t *testing.T, h *ManagedHAProxy) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- h.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
		return
	case <-time.After(2 * waitTimeout):
	}
	pid := hapMasterPid(h)
	t.Errorf("Close did not return within %s; haproxy processes %v", 2*waitTimeout, haproxyProcsOf(t, h.Dir(), pid))
	for _, p := range haproxyProcsOf(t, h.Dir(), pid) {
		syscall.Kill(p, syscall.SIGKILL)
	}
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Errorf("Close still blocked after haproxy was killed")
	}
}

// newManagedHAProxy returns a ManagedHAProxy in a temp dir that is
// closed, and checked to leave no process behind, when the test ends. The
// returned buffer collects its log.
func newManagedHAProxy(t *testing.T) (*ManagedHAProxy, *proctest.Buffer) {
	t.Helper()
	noLeak(t)
	bin := haproxyBinary(t)
	logs := &proctest.Buffer{}
	// Registered first so it runs last, after Close has joined the
	// goroutines that write logs.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("haproxy log:\n%s", logs.String())
		}
	})
	h, err := NewManagedHAProxy(bin, t.TempDir(), waitTimeout, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pid := hapMasterPid(h)
		closeHAProxyBounded(t, h)
		poll(t, "no haproxy process is left after Close", func() string {
			if left := haproxyProcsOf(t, h.Dir(), pid); len(left) > 0 {
				return fmt.Sprintf("processes %v still running", left)
			}
			return ""
		})
	})
	return h, logs
}

// hapMasterPid returns the running master's pid, 0 if none is running.
func hapMasterPid(h *ManagedHAProxy) int { return h.sup.pid() }

// hapConfig renders a realistic standalone configuration with the
// haproxy generator: application "web" on each listen port, served by
// backend.
func hapConfig(t *testing.T, h *ManagedHAProxy, backend *httptest.Server, ports ...int) []byte {
	t.Helper()
	g, err := generator.New("haproxy", nil)
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(backend.Listener.Addr().String())
	var apps []catalog.Application
	for i, port := range ports {
		apps = append(apps, catalog.Application{Name: fmt.Sprintf("web-%d", i), ListenPort: port, ApplicationPort: int(ap.Port()), Protocol: catalog.ProtocolHTTP})
	}
	snap := catalog.NewSnapshot([]catalog.Node{{Name: "backend-1", Addr: ap.Addr(), Role: catalog.RoleBackend, Applications: apps}})
	out, err := g.Render(generator.Input{Snapshot: snap, ListenAddr: "127.0.0.1", Standalone: true, StateDir: h.Dir()})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Warnings) > 0 {
		t.Fatalf("warnings: %q", out.Warnings)
	}
	return out.Config
}

func applyHAProxy(t *testing.T, h *ManagedHAProxy, config []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
	defer cancel()
	if err := h.Apply(ctx, config); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

// hapShowProc asks the running master for "show proc".
func hapShowProc(t *testing.T, h *ManagedHAProxy) haproxyProcs {
	t.Helper()
	info, err := h.showProc(context.Background())
	if err != nil {
		t.Fatalf("show proc: %v", err)
	}
	return info
}

func TestManagedHAProxyLifecycle(t *testing.T) {
	h, logs := newManagedHAProxy(t)
	one, two := upstream(t, "one"), upstream(t, "two")
	port := freePort(t)
	confOne := hapConfig(t, h, one, port)
	confTwo := hapConfig(t, h, two, port)
	confFile := filepath.Join(h.Dir(), "haproxy.cfg")

	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"first Apply starts haproxy", func(t *testing.T) {
			if hapMasterPid(h) != 0 {
				t.Fatal("haproxy runs before the first Apply")
			}
			applyHAProxy(t, h, confOne)
			pid := hapMasterPid(h)
			if pid == 0 {
				t.Fatal("no haproxy master after the first Apply")
			}
			// Apply returns once a worker runs: no poll needed.
			if got, err := get(port); err != nil || got != "one" {
				t.Errorf("right after Apply: %q, %v; want \"one\"", got, err)
			}
			if got := h.Reloads(); got != 0 {
				t.Errorf("Reloads() = %d after starting, want 0", got)
			}
			if got := readOr(t, confFile, ""); got != string(confOne) {
				t.Error("haproxy.cfg does not hold the applied configuration")
			}
			if got := strings.TrimSpace(readOr(t, filepath.Join(h.Dir(), "haproxy.pid"), "")); got != strconv.Itoa(pid) {
				t.Errorf("haproxy.pid holds %q, want the master's pid %d", got, pid)
			}
			if info := hapShowProc(t, h); len(info.workers) != 1 || info.reloads != 0 {
				t.Errorf("show proc: %+v, want one worker and no reload", info)
			}
		}},
		{"changed config reloads", func(t *testing.T) {
			pid, before := hapMasterPid(h), hapShowProc(t, h)
			applyHAProxy(t, h, confTwo)
			if got := h.Reloads(); got != 1 {
				t.Errorf("Reloads() = %d, want 1", got)
			}
			// The old worker finishes its connections and may accept one
			// more until its stop signal is handled: poll.
			waitBody(t, port, "two")
			if hapMasterPid(h) != pid {
				t.Errorf("master pid changed from %d to %d: a reload must not restart haproxy", pid, hapMasterPid(h))
			}
			after := hapShowProc(t, h)
			if after.reloads != before.reloads+1 || len(after.workers) != 1 || after.workers[0] == before.workers[0] {
				t.Errorf("show proc before %+v, after %+v: want one more reload and a new worker", before, after)
			}
			if !strings.Contains(logs.String(), `component=haproxy via="master CLI"`) {
				t.Error("the reload did not go through the master CLI")
			}
		}},
		{"identical bytes do nothing", func(t *testing.T) {
			before := h.Reloads()
			applyHAProxy(t, h, bytes.Clone(confTwo))
			if got := h.Reloads(); got != before {
				t.Errorf("Reloads() = %d, want %d unchanged", got, before)
			}
		}},
		{"rejected config keeps the running one", func(t *testing.T) {
			before, pid := h.Reloads(), hapMasterPid(h)
			bad := bytes.Replace(confOne, []byte("    retries 2\n"), []byte("    retries 2\n    scrimp_bogus_keyword on\n"), 1)
			err := h.Apply(context.Background(), bad)
			if err == nil {
				t.Fatal("Apply accepted a configuration with an unknown keyword")
			}
			for _, want := range []string{"haproxy rejected the new configuration, previous one kept", "[ALERT]", `unknown keyword 'scrimp_bogus_keyword'`, "exit status"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if strings.Contains(err.Error(), "[NOTICE]") {
				t.Errorf("error %q carries HAProxy's notices, not only its alerts", err)
			}
			if got := readOr(t, confFile, ""); got != string(confTwo) {
				t.Errorf("haproxy.cfg changed after a rejected Apply:\n%s", got)
			}
			if _, err := os.Stat(confFile + ".next"); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("haproxy.cfg.next left behind: %v", err)
			}
			if l := leftovers(t, h.Dir()); len(l) > 0 {
				t.Errorf("temp files left behind: %v", l)
			}
			if got := h.Reloads(); got != before {
				t.Errorf("Reloads() = %d, want %d unchanged", got, before)
			}
			if hapMasterPid(h) != pid {
				t.Error("the master changed after a rejected Apply")
			}
			if got, err := get(port); err != nil || got != "two" {
				t.Errorf("after the rejected Apply: %q, %v; want \"two\"", got, err)
			}
		}},
		{"good config after a rejected one", func(t *testing.T) {
			applyHAProxy(t, h, confOne)
			waitBody(t, port, "one")
		}},
		{"reload that fails to bind keeps the old workers", func(t *testing.T) {
			// haproxy -c does not bind, so this passes the check and
			// fails in the reload itself.
			taken, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer taken.Close()
			busy := taken.Addr().(*net.TCPAddr).Port
			err = h.Apply(context.Background(), hapConfig(t, h, two, port, busy))
			if err == nil {
				t.Fatal("Apply succeeded although a listen port is taken")
			}
			for _, want := range []string{"reload haproxy (master CLI)", "could not load it", "Address already in use"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if got := readOr(t, confFile, ""); got != string(confOne) {
				t.Errorf("haproxy.cfg does not hold the configuration that runs after the failed reload:\n%s", got)
			}
			for range 5 {
				if got, err := get(port); err != nil || got != "one" {
					t.Errorf("after the failed reload: %q, %v; want \"one\" from the old workers", got, err)
				}
			}
			// The same configuration is tried again, not skipped as applied.
			taken.Close()
			applyHAProxy(t, h, hapConfig(t, h, two, port, busy))
			waitBody(t, port, "two")
			waitBody(t, busy, "two")
		}},
		{"Close stops haproxy and is idempotent", func(t *testing.T) {
			pid := hapMasterPid(h)
			closeHAProxyBounded(t, h)
			if alive(pid) {
				t.Errorf("master %d still running after Close", pid)
			}
			groupGone(t, pid, "no haproxy process is left after Close")
			if _, err := get(port); err == nil {
				t.Error("port still answers after Close")
			}
			if err := h.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			if err := h.Apply(context.Background(), confTwo); err == nil || !strings.Contains(err.Error(), "closed") {
				t.Errorf("Apply after Close: %v, want an error saying it is closed", err)
			}
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.run) {
			return
		}
	}
}

func TestManagedHAProxyFirstApplyRejected(t *testing.T) {
	h, _ := newManagedHAProxy(t)
	err := h.Apply(context.Background(), []byte("defaults\n    nonsense on\n"))
	if err == nil || !strings.Contains(err.Error(), "unknown keyword 'nonsense'") {
		t.Fatalf("Apply: %v, want HAProxy's unknown keyword message", err)
	}
	if hapMasterPid(h) != 0 {
		t.Error("haproxy started from a rejected configuration")
	}
	if _, err := os.Stat(filepath.Join(h.Dir(), "haproxy.cfg")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("haproxy.cfg exists after a rejected first Apply: %v", err)
	}
}

// TestManagedHAProxyFirstStartFails starts HAProxy on a port another
// process holds: Apply must say so, and the supervisor must keep trying
// until the port is free.
func TestManagedHAProxyFirstStartFails(t *testing.T) {
	h, _ := newManagedHAProxy(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	port := taken.Addr().(*net.TCPAddr).Port
	err = h.Apply(context.Background(), hapConfig(t, h, upstream(t, "late"), port))
	if err == nil || !strings.Contains(err.Error(), "did not start") || !strings.Contains(err.Error(), "Address already in use") {
		t.Fatalf("Apply: %v, want an error saying haproxy did not start, with its alert", err)
	}
	taken.Close()
	waitBody(t, port, "late")
}

// TestManagedHAProxyRestartsAfterKill kills the master with SIGKILL. The
// supervisor must notice, clear away its workers and start a new master
// from the last good configuration.
func TestManagedHAProxyRestartsAfterKill(t *testing.T) {
	h, _ := newManagedHAProxy(t)
	port := freePort(t)
	applyHAProxy(t, h, hapConfig(t, h, upstream(t, "alive"), port))
	waitBody(t, port, "alive")
	old := hapMasterPid(h)
	if left := group(t, old); len(left) < 2 {
		t.Fatalf("haproxy process group %v: want a master and a worker", left)
	}

	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	poll(t, "a new master is running and has written its pid file", func() string {
		pid := hapMasterPid(h)
		if pid == 0 || pid == old {
			return fmt.Sprintf("master pid %d", pid)
		}
		if got := strings.TrimSpace(readOr(t, filepath.Join(h.Dir(), "haproxy.pid"), "")); got != strconv.Itoa(pid) {
			return fmt.Sprintf("haproxy.pid holds %q, want %d", got, pid)
		}
		return ""
	})
	groupGone(t, old, "the killed master's workers are gone")
	waitBody(t, port, "alive")

	// The restarted master is the one Apply reloads.
	applyHAProxy(t, h, hapConfig(t, h, upstream(t, "after restart"), port))
	waitBody(t, port, "after restart")
}

// TestManagedHAProxyRestartsWithLastGoodConfig: after a reload that
// failed (a listen port taken), a crash restarts HAProxy with the
// configuration its old workers kept serving, not the one it could not
// load.
func TestManagedHAProxyRestartsWithLastGoodConfig(t *testing.T) {
	h, _ := newManagedHAProxy(t)
	port := freePort(t)
	good := hapConfig(t, h, upstream(t, "good"), port)
	applyHAProxy(t, h, good)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	busy := taken.Addr().(*net.TCPAddr).Port
	if err := h.Apply(context.Background(), hapConfig(t, h, upstream(t, "bad"), port, busy)); err == nil {
		t.Fatal("Apply succeeded although a listen port is taken")
	}
	old := hapMasterPid(h)
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	poll(t, "a new master is running", func() string {
		if pid := hapMasterPid(h); pid == 0 || pid == old {
			return fmt.Sprintf("master pid %d", pid)
		}
		return ""
	})
	groupGone(t, old, "the killed master's workers are gone")
	waitBody(t, port, "good")
	if got := readOr(t, filepath.Join(h.Dir(), "haproxy.cfg"), ""); got != string(good) {
		t.Errorf("haproxy.cfg is not the last good configuration:\n%s", got)
	}
}

// TestManagedHAProxyReloadFallback removes the master CLI socket: the
// reload must fall back to SIGUSR2, say so, and still wait for the new
// worker.
func TestManagedHAProxyReloadFallback(t *testing.T) {
	h, logs := newManagedHAProxy(t)
	port := freePort(t)
	applyHAProxy(t, h, hapConfig(t, h, upstream(t, "before"), port))
	if err := os.Remove(filepath.Join(h.Dir(), "master.sock")); err != nil {
		t.Fatal(err)
	}
	applyHAProxy(t, h, hapConfig(t, h, upstream(t, "after"), port))
	waitBody(t, port, "after")
	for _, want := range []string{"sending SIGUSR2 instead", `component=haproxy via=SIGUSR2`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log does not contain %q", want)
		}
	}
	if got := h.Reloads(); got != 1 {
		t.Errorf("Reloads() = %d, want 1", got)
	}
}

// TestManagedHAProxyApplyDuringRestart applies a new configuration while
// the supervisor waits to restart a dead master: Apply starts HAProxy
// itself, and the supervisor must then not start a second master.
func TestManagedHAProxyApplyDuringRestart(t *testing.T) {
	h, _ := newManagedHAProxy(t)
	port := freePort(t)
	applyHAProxy(t, h, hapConfig(t, h, upstream(t, "first"), port))
	old := hapMasterPid(h)
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	poll(t, "the supervisor notices the dead master", func() string {
		if pid := hapMasterPid(h); pid != 0 {
			return fmt.Sprintf("master pid %d", pid)
		}
		return ""
	})
	applyHAProxy(t, h, hapConfig(t, h, upstream(t, "second"), port))
	started := hapMasterPid(h)
	if started == 0 || started == old {
		t.Fatalf("Apply during the restart backoff left master pid %d", started)
	}
	waitBody(t, port, "second")
	// The supervisor's first restart attempt comes 500ms after the death;
	// watch well past it that the master Apply started stays the one.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if pid := hapMasterPid(h); pid != started {
			t.Fatalf("master changed from %d (started by Apply) to %d: two masters were started", started, pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	closeHAProxyBounded(t, h)
	groupGone(t, started, "the master Apply started is stopped by Close")
}

func TestManagedHAProxyCloseWithoutApply(t *testing.T) {
	h, _ := newManagedHAProxy(t)
	for i := range 3 {
		if err := h.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	if err := h.Apply(context.Background(), []byte("defaults\n")); err == nil {
		t.Error("Apply after Close succeeded")
	}
	if hapMasterPid(h) != 0 {
		t.Error("Apply after Close started haproxy")
	}
}

func TestManagedHAProxyConcurrentClose(t *testing.T) {
	h, _ := newManagedHAProxy(t)
	port := freePort(t)
	applyHAProxy(t, h, hapConfig(t, h, upstream(t, "x"), port))
	pid := hapMasterPid(h)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { closeHAProxyBounded(t, h) })
	}
	wg.Wait()
	if alive(pid) {
		t.Errorf("master %d survives Close", pid)
	}
	groupGone(t, pid, "no haproxy process is left after concurrent Closes")
}

func TestNewManagedHAProxy(t *testing.T) {
	tests := []struct {
		name    string
		binary  string
		dir     func(t *testing.T) string
		wantErr string
	}{
		{
			name: "missing binary", binary: "scrimp-no-such-haproxy",
			dir: func(t *testing.T) string { return t.TempDir() }, wantErr: `haproxy binary "scrimp-no-such-haproxy" not found`,
		},
		{
			name: "state dir under a file", binary: "/bin/sh",
			dir: func(t *testing.T) string {
				f := filepath.Join(t.TempDir(), "file")
				if err := os.WriteFile(f, nil, 0o644); err != nil {
					t.Fatal(err)
				}
				return filepath.Join(f, "state")
			},
			wantErr: "state dir",
		},
		{
			name: "comma in the state dir", binary: "/bin/sh",
			dir:     func(t *testing.T) string { return filepath.Join(t.TempDir(), "a,b") },
			wantErr: "comma",
		},
		{
			name: "state dir too long for a socket", binary: "/bin/sh",
			dir:     func(t *testing.T) string { return filepath.Join(t.TempDir(), strings.Repeat("d", 90)) },
			wantErr: "longer than the 97 characters",
		},
		{
			name: "creates the state dir", binary: "/bin/sh",
			dir: func(t *testing.T) string { return filepath.Join(t.TempDir(), "a", "b") },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.dir(t)
			h, err := NewManagedHAProxy(tt.binary, dir, time.Second, nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			if !filepath.IsAbs(h.Dir()) || h.Dir() != filepath.Clean(dir) {
				t.Errorf("Dir() = %q, want absolute %q", h.Dir(), dir)
			}
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
				t.Errorf("state dir not created: %v", err)
			}
		})
	}
}

func TestHAProxyNewestWorker(t *testing.T) {
	tests := []struct {
		name  string
		procs haproxyProcs
		want  int
		ok    bool
	}{
		{name: "none"},
		{name: "one", procs: haproxyProcs{workers: []int{7}, age: map[int]int{7: 0}}, want: 7, ok: true},
		{name: "an old one still listed first", procs: haproxyProcs{workers: []int{5, 9}, age: map[int]int{5: 1, 9: 0}}, want: 9, ok: true},
		{name: "an old one still listed last", procs: haproxyProcs{workers: []int{9, 5}, age: map[int]int{5: 1, 9: 0}}, want: 9, ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.procs.newest()
			if got != tt.want || ok != tt.ok {
				t.Errorf("newest() = %d, %v; want %d, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestHAProxyParseShowProc(t *testing.T) {
	const header = "#<PID>          <type>          <reloads>       <uptime>        <version>      \n"
	tests := []struct {
		name    string
		in      string
		want    haproxyProcs
		wantErr string
	}{
		{
			name: "started",
			in:   header + "7767            master          0 [failed: 0]   0d00h10m12s     2.6.12-1+deb12u4\n# workers\n7770            worker          0               0d00h10m12s     2.6.12-1+deb12u4\n# programs\n\n",
			want: haproxyProcs{workers: []int{7770}, age: map[int]int{7770: 0}},
		},
		{
			name: "reloaded, old worker finishing",
			in: header + "7767            master          2 [failed: 0]   0d00h10m13s     2.6.12\n# workers\n19885           worker          0               0d00h00m01s     2.6.12\n" +
				"# old workers\n7770            worker          1               0d00h10m13s     2.6.12\n# programs\n",
			want: haproxyProcs{reloads: 2, workers: []int{19885}, old: []int{7770}, age: map[int]int{7770: 1, 19885: 0}},
		},
		{
			name: "failed reload",
			in:   header + "7767            master          2 [failed: 1]   0d00h10m25s     2.6.12\n# workers\n19885           worker          1               0d00h00m13s     2.6.12\n# programs\n",
			want: haproxyProcs{reloads: 2, failed: 1, workers: []int{19885}, age: map[int]int{19885: 1}},
		},
		{
			name: "no failed counter (other versions)",
			in:   header + "1 master 3 0d00h00m01s 2.4\n# workers\n2 worker 0 0d00h00m01s 2.4\n3 worker 0 0d00h00m01s 2.4\n",
			want: haproxyProcs{reloads: 3, workers: []int{2, 3}, age: map[int]int{2: 0, 3: 0}},
		},
		{name: "empty (master re-executing)", in: "", wantErr: "no master line"},
		{name: "garbage", in: "Unknown command.\n", wantErr: "no master line"},
		{name: "bad reload count", in: "1 master x\n", wantErr: "master line"},
		{name: "bad worker pid", in: "1 master 0\n# workers\nx worker 0\n", wantErr: "worker line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseShowProc(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("parseShowProc = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestHAProxyLevel(t *testing.T) {
	tests := []struct {
		name string
		line string
		want slog.Level
	}{
		{name: "alert", line: `[ALERT]    (1) : Binding [x:1] for frontend f: cannot bind socket`, want: slog.LevelError},
		{name: "emerg", line: `[EMERG]    (1) : x`, want: slog.LevelError},
		{name: "warning", line: `[WARNING]  (1) : Server b/s1 is DOWN`, want: slog.LevelWarn},
		{name: "notice", line: `[NOTICE]   (1) : New worker (2) forked`, want: slog.LevelInfo},
		{name: "debug", line: `[DEBUG] x`, want: slog.LevelDebug},
		{name: "untagged", line: `Configuration file is valid`, want: slog.LevelInfo},
		{name: "tag not at the start", line: `x [ALERT]`, want: slog.LevelInfo},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := haproxyLevel(tt.line); got != tt.want {
				t.Errorf("haproxyLevel(%q) = %v, want %v", tt.line, got, tt.want)
			}
		})
	}
}

func TestHAProxyAlerts(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{name: "none", in: "[NOTICE]   (7) : haproxy version is 2.6.12\nConfiguration file is valid\n", want: ""},
		{
			name: "two alerts among notices",
			in: "[NOTICE]   (7361) : haproxy version is 2.6.12\n" +
				"[ALERT]    (7361) : config : [a.cfg:36] : 'server b/s' : unknown keyword 'hash-key'.\n" +
				"[ALERT]    (7361) : config : Fatal errors found in configuration.\n",
			want: "[ALERT] config : [a.cfg:36] : 'server b/s' : unknown keyword 'hash-key'. | [ALERT] config : Fatal errors found in configuration.",
		},
		{name: "without a pid", in: "[ALERT] something\n", want: "[ALERT] something"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := haproxyAlerts([]byte(tt.in)); got != tt.want {
				t.Errorf("haproxyAlerts = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestHAProxyOutput(t *testing.T) {
	var buf bytes.Buffer
	w := &haproxyOutput{log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))}
	for _, chunk := range []string{"[WARNING]  (1) : first ", "line\n[ALERT]    (1) : sec", "ond\n[NOTICE] partial"} {
		if n, err := w.Write([]byte(chunk)); err != nil || n != len(chunk) {
			t.Fatalf("Write(%q) = %d, %v", chunk, n, err)
		}
	}
	want := "level=WARN msg=\"[WARNING]  (1) : first line\"\nlevel=ERROR msg=\"[ALERT]    (1) : second\"\n"
	if buf.String() != want {
		t.Errorf("logged\n%s\nwant\n%s", buf.String(), want)
	}
	if got := w.alertsSince(0); got != ": [ALERT] second" {
		t.Errorf("alertsSince(0) = %q", got)
	}
	mark := w.mark()
	if got := w.alertsSince(mark); got != "" {
		t.Errorf("alertsSince(mark) = %q, want none", got)
	}
	for i := range 30 {
		fmt.Fprintf(w, "[ALERT] (1) : alert %d\n", i)
	}
	got := w.alertsSince(mark)
	if strings.Count(got, "[ALERT]") != haproxyKeptAlerts || !strings.HasSuffix(got, "alert 29") {
		t.Errorf("alertsSince after 30 alerts = %q, want the last %d", got, haproxyKeptAlerts)
	}
}
