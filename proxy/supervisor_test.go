package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// leakChecked holds the tests noLeak was called for.
var leakChecked sync.Map

// noLeak fails t if a goroutine started during the test is still running
// once every later cleanup (Close among them) has run. Only its first call
// in a test counts: that check runs after every later cleanup.
func noLeak(t *testing.T) {
	t.Helper()
	if _, done := leakChecked.LoadOrStore(t, true); done {
		return
	}
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// records is a slog handler that keeps every record, for tests that read
// what the supervisor logged.
type records struct {
	mu   *sync.Mutex
	recs *[]slog.Record
}

func newRecords() records { return records{mu: &sync.Mutex{}, recs: &[]slog.Record{}} }

func (r records) Enabled(context.Context, slog.Level) bool { return true }
func (r records) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r records) WithGroup(string) slog.Handler            { return r }
func (r records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	*r.recs = append(*r.recs, rec.Clone())
	return nil
}

// with returns the records whose message contains msg.
func (r records) with(msg string) []slog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []slog.Record
	for _, rec := range *r.recs {
		if strings.Contains(rec.Message, msg) {
			out = append(out, rec)
		}
	}
	return out
}

func (r records) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, rec := range *r.recs {
		fmt.Fprintf(&b, "%s %s", rec.Level, rec.Message)
		rec.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
		b.WriteByte('\n')
	}
	return b.String()
}

func attr(rec slog.Record, key string) slog.Value {
	var v slog.Value
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value
			return false
		}
		return true
	})
	return v
}

// shSupervisor returns a supervisor of `sh -c script DIR` ($0 is the
// state directory) that stops it with SIGTERM. It is ready once the
// script has created DIR/ready-$$. It is closed, and checked to leave no
// process and no goroutine behind, when the test ends.
func shSupervisor(t *testing.T, script string, timeout, minBackoff, maxBackoff time.Duration) (*supervisor, records, string) {
	t.Helper()
	noLeak(t)
	dir := t.TempDir()
	logs := newRecords()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("supervisor log:\n%s", logs)
		}
	})
	s := newSupervisor(procSpec{
		name: "sh", binary: "sh", args: []string{"-c", script, dir},
		dir: dir, pidFile: filepath.Join(dir, "sh.pid"),
		stopSignal: syscall.SIGTERM, timeout: timeout,
		output: func() io.Writer { return &lineLogger{log: slog.New(logs)} },
		ready: func(ctx context.Context, p *proxyProc) error {
			for {
				if _, err := os.Stat(filepath.Join(dir, "ready-"+strconv.Itoa(p.Pid))); err == nil {
					return nil
				}
				select {
				case <-p.exited:
					return fmt.Errorf("sh (pid %d): %w: %v", p.Pid, errExited, p.err)
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(10 * time.Millisecond):
				}
			}
		},
		log: slog.New(logs), minBackoff: minBackoff, maxBackoff: maxBackoff,
	})
	t.Cleanup(func() {
		done := make(chan struct{})
		go func() { s.close(); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * waitTimeout):
			t.Errorf("close did not return within %s", 2*waitTimeout)
		}
		for _, rec := range logs.with("sh started") {
			groupGone(t, int(attr(rec, "pid").Int64()), "no process of the supervised script is left")
		}
	})
	return s, logs, dir
}

// serving is a script that is ready at once and runs until stopped.
const serving = `touch "$0/ready-$$"; while :; do sleep 0.05; done`

func startSh(t *testing.T, s *supervisor) *proxyProc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	p, fresh, err := s.start(ctx)
	if err != nil || !fresh {
		t.Fatalf("start: %v, fresh %v", err, fresh)
	}
	return p
}

// TestSupervisorRestartsWithBackoff: a master that dies before it is
// ready is restarted with a backoff that doubles up to its bound.
func TestSupervisorRestartsWithBackoff(t *testing.T) {
	s, logs, _ := shSupervisor(t, `exit 3`, waitTimeout, 20*time.Millisecond, 80*time.Millisecond)
	_, fresh, err := s.start(context.Background())
	if !fresh || !errors.Is(err, errExited) {
		t.Fatalf("start: %v, fresh %v; want an error saying it exited", err, fresh)
	}
	poll(t, "five restarts", func() string {
		if n := len(logs.with("exited unexpectedly")); n < 5 {
			return fmt.Sprintf("%d restarts", n)
		}
		return ""
	})
	s.close()
	var waits []time.Duration
	for _, rec := range logs.with("exited unexpectedly")[:5] {
		waits = append(waits, attr(rec, "retry-in").Duration())
		if got := attr(rec, "err").String(); !strings.Contains(got, "exit status 3") {
			t.Errorf("logged err %q, want the exit status", got)
		}
	}
	want := []time.Duration{20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond, 80 * time.Millisecond, 80 * time.Millisecond}
	if !slices.Equal(waits, want) {
		t.Errorf("restart waits %v, want %v", waits, want)
	}
}

// TestSupervisorRestartsAfterKill kills the master with SIGKILL, twice: it
// is restarted each time after the shortest backoff, because the one that
// died had been ready; its process group is cleared away.
func TestSupervisorRestartsAfterKill(t *testing.T) {
	// A child in the group that outlives a killed master, as nginx's
	// workers do.
	s, logs, _ := shSupervisor(t, `sleep 600 & touch "$0/ready-$$"; while :; do sleep 0.05; done`, waitTimeout, 50*time.Millisecond, time.Minute)
	p := startSh(t, s)
	for i := range 2 {
		old := p.Pid
		if left := group(t, old); len(left) < 2 {
			t.Fatalf("process group %v: want the script and its sleep", left)
		}
		if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		poll(t, "a new master is running", func() string {
			if p = s.current(); p == nil || p.Pid == old {
				return fmt.Sprintf("master pid %d", s.pid())
			}
			return ""
		})
		groupGone(t, old, "the killed master's group is gone")
		recs := logs.with("exited unexpectedly")
		if len(recs) != i+1 {
			t.Fatalf("%d restarts logged, want %d", len(recs), i+1)
		}
		if got := attr(recs[i], "retry-in").Duration(); got != 50*time.Millisecond {
			t.Errorf("restart %d waited %s, want the shortest backoff: the master had been ready", i+1, got)
		}
		poll(t, "the restarted master is ready", func() string {
			if n := len(logs.with("not ready")); n > 0 {
				return "FAILED: logged not ready"
			}
			if _, err := os.Stat(filepath.Join(s.spec.dir, "ready-"+strconv.Itoa(p.Pid))); err != nil {
				return err.Error()
			}
			return ""
		})
	}
	// start returns the running master instead of a second one.
	if got, fresh, err := s.start(context.Background()); err != nil || fresh || got != p {
		t.Errorf("start while running: %v, fresh %v, err %v; want the running master", got, fresh, err)
	}
}

// TestSupervisorStop: close stops the master with its graceful signal; a
// master that ignores it is killed with its whole process group once the
// timeout has passed.
func TestSupervisorStop(t *testing.T) {
	tests := []struct {
		name     string
		script   string
		graceful bool
	}{
		{name: "graceful", graceful: true,
			script: `trap 'touch "$0/stopped"; exit 0' TERM; touch "$0/ready-$$"; while :; do sleep 0.05; done`},
		{name: "ignores the signal",
			script: `trap '' TERM; sleep 600 & touch "$0/ready-$$"; while :; do sleep 0.05; done`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const timeout = 1500 * time.Millisecond
			s, logs, dir := shSupervisor(t, tt.script, timeout, 0, 0)
			p := startSh(t, s)
			start := time.Now()
			s.close()
			took := time.Since(start)
			groupGone(t, p.Pid, "no process is left after close")
			_, err := os.Stat(filepath.Join(dir, "stopped"))
			killed := len(logs.with("did not stop in time")) > 0
			if tt.graceful {
				if err != nil || killed || took >= timeout {
					t.Errorf("stopped marker: %v, killed %v, close took %s: want a graceful stop", err, killed, took)
				}
				return
			}
			if !killed || took < timeout {
				t.Errorf("killed %v after %s: want a kill once the %s timeout passed", killed, took, timeout)
			}
			if took > timeout+waitTimeout/2 {
				t.Errorf("close took %s with a timeout of %s", took, timeout)
			}
		})
	}
}

// TestSupervisorCloseTwice: close may be called again, and concurrently;
// all calls return once the master is gone. Closing during a restart
// backoff returns at once, without starting another master.
func TestSupervisorCloseTwice(t *testing.T) {
	t.Run("running", func(t *testing.T) {
		s, _, _ := shSupervisor(t, serving, waitTimeout, 0, 0)
		p := startSh(t, s)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(s.close)
		}
		wg.Wait()
		if processAlive(p.Pid) {
			t.Errorf("master %d survives close", p.Pid)
		}
		s.close()
		if _, _, err := s.start(context.Background()); err == nil || !strings.Contains(err.Error(), "sh is closed") {
			t.Errorf("start after close: %v, want an error saying it is closed", err)
		}
	})
	t.Run("during a restart backoff", func(t *testing.T) {
		s, logs, _ := shSupervisor(t, `exit 1`, waitTimeout, time.Hour, time.Hour)
		s.start(context.Background())
		poll(t, "the death is noticed", func() string {
			if len(logs.with("exited unexpectedly")) == 0 {
				return "not yet"
			}
			return ""
		})
		start := time.Now()
		s.close()
		s.close()
		if took := time.Since(start); took > waitTimeout/2 {
			t.Errorf("close during an hour's backoff took %s", took)
		}
		if n := len(logs.with("sh started")); n != 1 {
			t.Errorf("started %d times, want 1", n)
		}
	})
	t.Run("never started", func(t *testing.T) {
		s, _, _ := shSupervisor(t, serving, waitTimeout, 0, 0)
		s.close()
		s.close()
	})
}

func TestNamesDir(t *testing.T) {
	tests := []struct {
		name    string
		cmdline string
		want    bool
	}{
		{name: "argument", cmdline: "haproxy\x00-f\x00/run/s/haproxy.cfg\x00", want: true},
		{name: "socket option", cmdline: "haproxy\x00-S\x00/run/s/master.sock,mode,600\x00", want: true},
		{name: "nginx title", cmdline: "nginx: master process /usr/sbin/nginx -p /run/s/ -c /run/s/nginx.conf", want: true},
		{name: "first", cmdline: "/run/s/x", want: true},
		{name: "other directory", cmdline: "nginx\x00-p\x00/run/s2/\x00", want: false},
		{name: "directory inside a path", cmdline: "nginx\x00-p\x00/x/run/s/\x00", want: false},
		{name: "directory itself, no slash", cmdline: "nginx\x00-p\x00/run/s\x00", want: false},
		{name: "empty", cmdline: "", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := namesDir([]byte(tt.cmdline), "/run/s"); got != tt.want {
				t.Errorf("namesDir(%q) = %v, want %v", tt.cmdline, got, tt.want)
			}
		})
	}
}

// TestSupervisorStalePid: only a live process of the same program that
// names the state directory counts as stale.
func TestSupervisorStalePid(t *testing.T) {
	s, _, dir := shSupervisor(t, serving, waitTimeout, 0, 0)
	spawn := func(t *testing.T, name string, args ...string) int {
		t.Helper()
		cmd := exec.Command(name, args...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		// Until the child has exec'd, /proc shows this test binary and
		// its command line, and the new command line comes a little after
		// the new executable: wait for both.
		want, err := filepath.EvalSymlinks(cmd.Path)
		if err != nil {
			t.Fatal(err)
		}
		last := []byte(args[len(args)-1] + "\x00")
		deadline := time.Now().Add(5 * time.Second)
		for {
			exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid))
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", cmd.Process.Pid))
			if exe == want && bytes.HasSuffix(cmdline, last) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("pid %d runs %q %q, not %s %q, after 5s", cmd.Process.Pid, exe, cmdline, want, args)
			}
			time.Sleep(5 * time.Millisecond)
		}
		return cmd.Process.Pid
	}
	tests := []struct {
		name string
		pid  func(t *testing.T) string
		want bool
	}{
		{name: "same program naming the directory", want: true,
			pid: func(t *testing.T) string { return strconv.Itoa(spawn(t, "sh", "-c", "sleep 600; :", dir+"/")) }},
		{name: "with a newline", want: true,
			pid: func(t *testing.T) string { return strconv.Itoa(spawn(t, "sh", "-c", "sleep 600; :", dir+"/")) + "\n" }},
		{name: "same program, other directory",
			pid: func(t *testing.T) string { return strconv.Itoa(spawn(t, "sh", "-c", "sleep 600; :", t.TempDir())) }},
		{name: "other program naming the directory",
			pid: func(t *testing.T) string {
				// tail -f runs until killed, naming a file in the directory.
				f := filepath.Join(dir, "x")
				if err := os.WriteFile(f, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				return strconv.Itoa(spawn(t, "tail", "-f", f))
			}},
		{name: "this test process", pid: func(t *testing.T) string { return strconv.Itoa(os.Getpid()) }},
		{name: "init", pid: func(t *testing.T) string { return "1" }},
		{name: "a process that is gone", pid: func(t *testing.T) string {
			cmd := exec.Command("sh", "-c", ":", dir)
			if err := cmd.Run(); err != nil {
				t.Fatal(err)
			}
			return strconv.Itoa(cmd.Process.Pid)
		}},
		{name: "garbage", pid: func(t *testing.T) string { return "nginx\n" }},
		{name: "empty", pid: func(t *testing.T) string { return "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			content := tt.pid(t)
			if err := os.WriteFile(s.spec.pidFile, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			pid, ok := s.stalePid()
			if ok != tt.want {
				t.Fatalf("stalePid() = %d, %v with pid file %q, want %v", pid, ok, content, tt.want)
			}
			if ok && strconv.Itoa(pid) != strings.TrimSpace(content) {
				t.Errorf("stalePid() = %d, want %s", pid, content)
			}
		})
	}
	// The pid file is gone.
	os.Remove(s.spec.pidFile)
	if pid, ok := s.stalePid(); ok {
		t.Errorf("stalePid() = %d without a pid file", pid)
	}
}

// managedUnderTest is a ManagedNginx or a ManagedHAProxy, for the tests
// that hold for both.
type managedUnderTest struct {
	sup    *supervisor
	conf   string                                           // the configuration file its master reads
	render func(t *testing.T, port int, body string) []byte // one application on port answering body
	apply  func(t *testing.T, config []byte)
}

var managedProxies = []struct {
	name string
	new  func(t *testing.T) managedUnderTest
}{
	{name: "nginx", new: func(t *testing.T) managedUnderTest {
		n := newManaged(t)
		return managedUnderTest{
			sup: n.sup, conf: n.conf,
			render: func(t *testing.T, port int, body string) []byte {
				return managedConfig(t, n, port, upstream(t, body))
			},
			apply: func(t *testing.T, config []byte) { apply(t, n, config) },
		}
	}},
	{name: "haproxy", new: func(t *testing.T) managedUnderTest {
		h, _ := newManagedHAProxy(t)
		return managedUnderTest{
			sup: h.sup, conf: h.conf,
			render: func(t *testing.T, port int, body string) []byte {
				return hapConfig(t, h, upstream(t, body), port)
			},
			apply: func(t *testing.T, config []byte) { applyHAProxy(t, h, config) },
		}
	}},
}

// startByHand starts the proxy as an earlier scrimp run would have (same
// command line, own process group) from config, and returns it and a
// channel closed once it has exited; it is reaped as init would reap it
// once its parent is gone.
func startByHand(t *testing.T, m managedUnderTest, config []byte) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	if err := WriteAtomic(m.conf, config, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(m.sup.spec.binary, m.sup.spec.args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	poll(t, "the proxy started by hand has written its pid file", func() string {
		b, _ := os.ReadFile(m.sup.spec.pidFile)
		if got := strings.TrimSpace(string(b)); got != strconv.Itoa(cmd.Process.Pid) {
			return fmt.Sprintf("pid file holds %q", got)
		}
		return ""
	})
	return cmd, exited
}

// TestManagedStopsStaleProxy: a scrimp that was killed leaves its proxy
// running (the proxy has its own process group). The next managed proxy
// on that state directory finds it through the pid file and stops it
// instead of failing to bind its ports.
func TestManagedStopsStaleProxy(t *testing.T) {
	for _, kind := range managedProxies {
		t.Run(kind.name, func(t *testing.T) {
			m := kind.new(t)
			port := freePort(t)
			conf := m.render(t, port, "new")
			stale, exited := startByHand(t, m, m.render(t, port, "stale"))
			waitBody(t, port, "stale")

			m.apply(t, conf)
			select {
			case <-exited:
			case <-time.After(2 * waitTimeout):
				t.Fatal("the stale proxy was not stopped")
			}
			groupGone(t, stale.Process.Pid, "the stale proxy's workers are gone")
			waitBody(t, port, "new")
			if pid := m.sup.pid(); pid == 0 || pid == stale.Process.Pid {
				t.Errorf("master pid %d after taking over", pid)
			}
		})
	}
}

// TestManagedLeavesUnrelatedPid: a pid file naming a live process that is
// not this state directory's proxy (the pid was reused by another
// program, or it is the same proxy run from another state directory) must
// not be signalled.
func TestManagedLeavesUnrelatedPid(t *testing.T) {
	for _, kind := range managedProxies {
		t.Run(kind.name, func(t *testing.T) {
			// Each case returns the managed proxy under test, the pid its
			// pid file is to name, and a check that the process is intact.
			// Proxies are created in the order they are closed in reverse,
			// so that each one's goroutine check runs after its Close.
			tests := []struct {
				name  string
				setup func(t *testing.T) (m managedUnderTest, pid int, check func(t *testing.T))
			}{
				{name: "another program naming the state directory", setup: func(t *testing.T) (managedUnderTest, int, func(t *testing.T)) {
					m := kind.new(t)
					cmd := exec.Command("sh", "-c", "sleep 600; :", m.conf)
					if err := cmd.Start(); err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
					return m, cmd.Process.Pid, func(t *testing.T) {}
				}},
				{name: "the same proxy from another state directory", setup: func(t *testing.T) (managedUnderTest, int, func(t *testing.T)) {
					o := kind.new(t)
					port := freePort(t)
					o.apply(t, o.render(t, port, "other"))
					waitBody(t, port, "other")
					pid := o.sup.pid()
					return kind.new(t), pid, func(t *testing.T) {
						if o.sup.pid() != pid {
							t.Errorf("the other proxy's master changed from %d to %d", pid, o.sup.pid())
						}
						waitBody(t, port, "other")
					}
				}},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					m, pid, check := tt.setup(t)
					if err := os.WriteFile(m.sup.spec.pidFile, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
						t.Fatal(err)
					}
					port := freePort(t)
					m.apply(t, m.render(t, port, "mine"))
					waitBody(t, port, "mine")
					if !processAlive(pid) {
						t.Fatalf("process %d named by the pid file was stopped", pid)
					}
					check(t)
				})
			}
		})
	}
}
