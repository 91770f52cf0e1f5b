package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/e2e"
	"github.com/scrimplb/scrimp/internal/loopback"
	"github.com/scrimplb/scrimp/internal/proctest"
)

// startProcess runs the scrimp binary with args; it is killed at cleanup
// if still running.
func startProcess(t *testing.T, bin string, args ...string) (*exec.Cmd, *proctest.Buffer) {
	t.Helper()
	out := &proctest.Buffer{}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			loopback.StopProcess(cmd, 15*time.Second)
		}
		if t.Failed() {
			t.Logf("output of %v:\n%s", args, out)
		}
	})
	return cmd, out
}

// buildScrimp builds this command into dir and returns the binary.
func buildScrimp(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "scrimp")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func writeJSON(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestRealProcesses runs scrimp as separate processes, as users do: a load
// balancer with managed nginx and a backend whose applications come from a
// watched directory. It measures an app file's way to its first request
// served, checks SIGHUP, and drains the backend with `scrimp drain`.
func TestRealProcesses(t *testing.T) {
	e2e.RequireBinary(t, "nginx")
	dir := t.TempDir()
	bin := buildScrimp(t, dir)
	const lbIP, backendIP = "127.0.6.1", "127.0.6.2"
	gossip, listen := writeLBConfig(t, dir, lbIP)
	startProcess(t, bin, "--config", filepath.Join(dir, "lb.json"))

	// The backend's app is a real HTTP server in this test process.
	var wg sync.WaitGroup
	appCtx, stopApp := contextWithCancel()
	t.Cleanup(func() {
		stopApp()
		wg.Wait()
	})
	appPort, err := loopback.ServeApp(appCtx, &wg, backendIP, "backend-p")
	if err != nil {
		t.Fatal(err)
	}
	backendGossip, err := loopback.FreePort(backendIP)
	if err != nil {
		t.Fatal(err)
	}
	appDir := filepath.Join(dir, "apps")
	writeJSON(t, filepath.Join(dir, "backend.json"), fmt.Sprintf(`{
  "role": "backend", "node-name": "backend-p", "admin-socket": %q,
  "cluster": {"bind-addr": %q, "bind-port": %d, "profile": "local", "join-backoff-min": "50ms"},
  "seed": {"provider": "static", "static": {"addresses": ["%s:%d"]}},
  "backend": {"applications": [], "application-config-dir": %q, "drain-timeout": "10s", "drain-grace": "200ms"}
}`, filepath.Join(dir, "backend.sock"), backendIP, backendGossip, lbIP, gossip, appDir))
	pidFile := filepath.Join(dir, "backend.pid")
	backend, backendOut := startProcess(t, bin, "--config", filepath.Join(dir, "backend.json"), "--pid-file", pidFile)

	// The directory appears after start; then one app file lands in it.
	waitUntil(t, 10*time.Second, "backend joined", func() bool { return strings.Contains(backendOut.String(), "joined cluster") })
	// Let the load balancer go idle after the join's reload, as it is when
	// an app is deployed in steady state.
	time.Sleep(500 * time.Millisecond)
	if err := os.MkdirAll(appDir, 0o755); err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("http://%s:%d/", lbIP, listen)
	start := time.Now()
	writeJSON(t, filepath.Join(appDir, "web.json"), fmt.Sprintf(
		`{"name": "web", "listen-port": %d, "application-port": %d, "protocol": "http"}`, listen, appPort))
	waitUntil(t, 10*time.Second, "app file served through nginx", func() bool { return get(url) == "hello from backend-p" })
	t.Logf("app file written → first request served through nginx: %s", time.Since(start).Round(time.Millisecond))

	// A broken edit keeps the last good version serving.
	writeJSON(t, filepath.Join(appDir, "web.json"), `{"name": "web", "listen-port": "eighty"}`)
	waitUntil(t, 5*time.Second, "bad file reported", func() bool { return strings.Contains(backendOut.String(), "web.json") })
	for range 20 {
		if got := get(url); got != "hello from backend-p" {
			t.Fatalf("after a broken edit the app answered %q", got)
		}
	}

	// SIGHUP re-reads the configuration.
	if err := backend.Process.Signal(sighup); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "SIGHUP handled", func() bool { return strings.Contains(backendOut.String(), "SIGHUP") })

	// scrimp drain: the backend drains, leaves and exits 0. Reap it as
	// soon as it exits, as its init system would: until then its pid is a
	// zombie that scrimp drain would still see.
	exited := make(chan error, 1)
	go func() { exited <- backend.Wait() }()
	drain := exec.Command(bin, "drain", "--pid-file", pidFile, "--timeout", "20s")
	if out, err := drain.CombinedOutput(); err != nil {
		t.Fatalf("scrimp drain: %v\n%s", err, out)
	}
	if err := <-exited; err != nil {
		t.Fatalf("backend exited with %v", err)
	}
	if !strings.Contains(backendOut.String(), "every load balancer acknowledged") {
		t.Errorf("the backend left without the load balancer's acknowledgement")
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("pid file left behind: %v", err)
	}
	waitUntil(t, 5*time.Second, "503 once the only backend is gone", func() bool { return get(url) == "status 503" })
}

var client = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func get(url string) string {
	resp, err := client.Get(url)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("status %d", resp.StatusCode)
	}
	return strings.TrimSpace(b.String())
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var sighup = syscall.SIGHUP

func contextWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}

// TestSecondSignalLeavesAtOnce drains real backend processes with long
// drain settings and sends each a second SIGTERM: one during drain-grace
// (every load balancer has acknowledged), one while it waits for an
// acknowledgement that cannot come (the load balancer process is stopped
// with SIGSTOP). Each stops waiting, leaves and exits 0 at once.
func TestSecondSignalLeavesAtOnce(t *testing.T) {
	e2e.RequireBinary(t, "nginx")
	dir := t.TempDir()
	bin := buildScrimp(t, dir)
	const lbIP = "127.0.32.1"
	gossip, listen := writeLBConfig(t, dir, lbIP)
	lb, _ := startProcess(t, bin, "--config", filepath.Join(dir, "lb.json"))
	// Runs before the load balancer's own cleanup stops it (LIFO).
	t.Cleanup(func() { lb.Process.Signal(syscall.SIGCONT) })

	var wg sync.WaitGroup
	appCtx, stopApp := contextWithCancel()
	t.Cleanup(func() {
		stopApp()
		wg.Wait()
	})
	url := fmt.Sprintf("http://%s:%d/", lbIP, listen)
	// startBackend runs a backend process that would drain for a minute
	// and serve in-flight requests for another, and waits until the load
	// balancer serves it.
	startBackend := func(name, ip string) (*exec.Cmd, *proctest.Buffer, chan error) {
		t.Helper()
		appPort, err := loopback.ServeApp(appCtx, &wg, ip, name)
		if err != nil {
			t.Fatal(err)
		}
		port, err := loopback.FreePort(ip)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, name+".json")
		writeJSON(t, file, fmt.Sprintf(`{
  "role": "backend", "node-name": %q, "admin-socket": %q,
  "cluster": {"bind-addr": %q, "bind-port": %d, "profile": "local", "join-backoff-min": "50ms", "leave-timeout": "500ms"},
  "seed": {"provider": "static", "static": {"addresses": ["%s:%d"]}},
  "backend": {"drain-timeout": "60s", "drain-grace": "60s",
    "applications": [{"name": "web", "listen-port": %d, "application-port": %d, "protocol": "http"}]}
}`, name, filepath.Join(dir, name+".sock"), ip, port, lbIP, gossip, listen, appPort))
		cmd, out := startProcess(t, bin, "--config", file)
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		waitUntil(t, 10*time.Second, name+" served through nginx", func() bool { return get(url) == "hello from "+name })
		return cmd, out, exited
	}
	// secondSignal sends SIGTERM, waits for the drain to reach the log
	// line phase, sends SIGTERM again and checks the process exits 0
	// within a few seconds, having logged why.
	secondSignal := func(name string, cmd *exec.Cmd, out *proctest.Buffer, exited chan error, phase, why string) {
		t.Helper()
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 10*time.Second, name+": "+phase, func() bool { return strings.Contains(out.String(), phase) })
		start := time.Now()
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("%s exited with %v", name, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s still running 5 s after the second SIGTERM", name)
		}
		t.Logf("%s: second SIGTERM → exit: %s", name, time.Since(start).Round(time.Millisecond))
		if !strings.Contains(out.String(), "second signal: leaving at once") || !strings.Contains(out.String(), why) {
			t.Errorf("%s did not log the second signal and %q", name, why)
		}
	}

	// During drain-grace: every load balancer has acknowledged.
	cmd, out, exited := startBackend("backend-grace", "127.0.32.2")
	secondSignal("backend-grace", cmd, out, exited, "every load balancer acknowledged", "drain-grace cut short")

	// While waiting: the stopped load balancer cannot acknowledge (its
	// failure detection takes seconds, the second signal comes at once).
	cmd, out, exited = startBackend("backend-wait", "127.0.32.3")
	if err := lb.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	secondSignal("backend-wait", cmd, out, exited, "draining: waiting", "drain interrupted")
	if err := lb.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
}

// writeLBConfig writes dir/lb.json: a load balancer with managed nginx on
// ip, gossip and listen ports free, alone until backends join it. It
// returns the gossip and listen ports.
func writeLBConfig(t *testing.T, dir, ip string) (gossip, listen int) {
	t.Helper()
	gossip, err := loopback.FreePort(ip)
	if err != nil {
		t.Fatal(err)
	}
	listen, err = loopback.FreePort(ip)
	if err != nil {
		t.Fatal(err)
	}
	writeJSON(t, filepath.Join(dir, "lb.json"), fmt.Sprintf(`{
  "role": "lb", "node-name": "lb", "admin-socket": %q,
  "cluster": {"bind-addr": %q, "bind-port": %d, "profile": "local"},
  "seed": {"provider": "static", "static": {"addresses": []}},
  "lb": {"state-dir": %q, "listen-addr": %q}
}`, filepath.Join(dir, "lb.sock"), ip, gossip, filepath.Join(dir, "lb-state"), ip))
	return gossip, listen
}
