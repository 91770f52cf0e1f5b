package packaging

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/internal/loopback"
	"github.com/scrimplb/scrimp/internal/proctest"
)

// notifySocket is a stand-in for systemd's NOTIFY_SOCKET: it receives a
// service's sd_notify lines.
type notifySocket struct {
	path  string
	lines chan string
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	dir, err := os.MkdirTemp("", "scrimp-notify-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// The service runs as scrimp: it must reach the socket.
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	n := &notifySocket{path: path, lines: make(chan string, 16)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			n.lines <- string(buf[:k])
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return n
}

func (n *notifySocket) wait(t *testing.T, who, want string, timeout time.Duration, log *proctest.Buffer) {
	t.Helper()
	select {
	case got := <-n.lines:
		if got != want {
			t.Fatalf("%s sent %q, want %q\n%s", who, got, want, log)
		}
	case <-time.After(timeout):
		t.Fatalf("%s sent no %q in %s\n%s", who, want, timeout, log)
	}
}

// freePort returns a free port on ip (loopback.FreePort).
func freePort(t *testing.T, ip string) int {
	t.Helper()
	port, err := loopback.FreePort(ip)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// service starts the installed scrimp with config as the units do (see
// asScrimp), its sd_notify lines going to a socket of its own.
func service(t *testing.T, name, config string) (*exec.Cmd, *notifySocket, *proctest.Buffer) {
	t.Helper()
	ns := newNotifySocket(t)
	cmd := asScrimp("/usr/bin/scrimp", "--config", config)
	cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+ns.path)
	log := &proctest.Buffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, ns, log
}

// runAsService runs a load balancer (managed nginx on port 80) and a
// backend from the installed package, as the scrimp user with the units'
// privileges: READY=1 comes from each once it is of use, traffic flows
// through port 80, and SIGTERM stops each with STOPPING=1 and exit 0.
func runAsService(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/nginx"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("nginx is required in CI: %v", err)
		}
		t.Skipf("nginx not installed: %v", err)
	}
	const lbIP, beIP = "127.0.152.1", "127.0.152.2"
	if l, err := net.Listen("tcp", lbIP+":80"); err != nil {
		t.Skipf("port 80 on %s is taken: %v", lbIP, err)
	} else {
		l.Close()
	}
	// RuntimeDirectory=scrimp makes the admin sockets' directory. Other
	// tests running at the same time may use /run/scrimp (the default
	// admin-socket), so this one has its own, made as systemd would.
	const runDir = "/run/scrimp-pkgtest"
	if err := os.Mkdir(runDir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(runDir) })
	run(t, "chown", "scrimp:scrimp", runDir)

	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello from the packaged backend")
	})}
	appLn, err := net.Listen("tcp", beIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	go app.Serve(appLn)
	t.Cleanup(func() { app.Close() })

	lbPort, bePort := freePort(t, lbIP), freePort(t, beIP)
	cluster := `"profile": "local", "keyring-file": "/etc/scrimp/keyring.json", "label": "pkgtest"`
	writeFile(t, "/etc/scrimp/lb.json", fmt.Sprintf(`{"role": "lb", "node-name": "pkg-lb",
  "admin-socket": "/run/scrimp-pkgtest/lb.sock",
  "cluster": {"bind-addr": %q, "bind-port": %d, %s},
  "seed": {"provider": "static", "static": {"addresses": []}},
  "lb": {"generator": "nginx", "mode": "managed", "listen-addr": %q, "state-dir": "/var/lib/scrimp"}}
`, lbIP, lbPort, cluster, lbIP), 0o644, false)
	writeFile(t, "/etc/scrimp/backend.json", fmt.Sprintf(`{"role": "backend", "node-name": "pkg-backend",
  "admin-socket": "/run/scrimp-pkgtest/backend.sock",
  "cluster": {"bind-addr": %q, "bind-port": %d, %s},
  "seed": {"provider": "static", "static": {"addresses": ["%s:%d"]}},
  "backend": {"drain-timeout": "5s", "drain-grace": "0s", "applications": [
    {"name": "web", "listen-port": 80, "application-port": %d, "protocol": "http"}]}}
`, beIP, bePort, cluster, lbIP, lbPort, appLn.Addr().(*net.TCPAddr).Port), 0o644, false)

	lb, lbNotify, lbLog := service(t, "lb", "/etc/scrimp/lb.json")
	lbNotify.wait(t, "load balancer", "READY=1", 30*time.Second, lbLog)
	be, beNotify, beLog := service(t, "backend", "/etc/scrimp/backend.json")
	beNotify.wait(t, "backend", "READY=1", 30*time.Second, beLog)

	// Through nginx on port 80, which runs as scrimp.
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		body, err := get(client, "http://"+lbIP+":80/")
		if err == nil && strings.Contains(body, "packaged backend") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer through port 80: %v %q\nlb:\n%s", err, body, lbLog)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out := run(t, "ps", "-o", "user=", "-C", "nginx"); !strings.Contains(out, "scrimp") {
		t.Errorf("nginx does not run as scrimp: %q", out)
	}

	for _, s := range []struct {
		who    string
		cmd    *exec.Cmd
		notify *notifySocket
		log    *proctest.Buffer
	}{{"backend", be, beNotify, beLog}, {"load balancer", lb, lbNotify, lbLog}} {
		if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		s.notify.wait(t, s.who, "STOPPING=1", 10*time.Second, s.log)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		done := make(chan error, 1)
		go func() { done <- s.cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s exited: %v\n%s", s.who, err, s.log)
			}
		case <-ctx.Done():
			t.Errorf("%s did not exit after SIGTERM\n%s", s.who, s.log)
		}
		cancel()
	}
}

func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
