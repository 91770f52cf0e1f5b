package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ManagedNginx owns a whole nginx instance: a complete nginx.conf in Dir,
// and `nginx -p Dir -c Dir/nginx.conf -g 'daemon off;'` as a supervised
// child. It needs only the nginx binary: no root, no system config.
//
// Apply is not safe for concurrent use (the load balancer loop is its only
// caller); Close may be called from any goroutine, more than once.
type ManagedNginx struct {
	binary  string
	dir     string
	conf    string
	timeout time.Duration
	log     *slog.Logger

	mu      sync.Mutex
	cmd     *exec.Cmd     // running master, nil before the first Apply
	exited  chan struct{} // closed when cmd exits
	closed  bool
	stop    chan struct{} // closed by Close
	current []byte        // what nginx.conf holds

	reloads int
	wg      sync.WaitGroup
}

// NewManagedNginx prepares dir (creating it) for an nginx run by binary.
// Nothing runs until the first Apply.
func NewManagedNginx(binary, dir string, timeout time.Duration, logger *slog.Logger) (*ManagedNginx, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if _, err := exec.LookPath(binary); err != nil {
		return nil, fmt.Errorf("proxy: nginx binary %q not found (install nginx, e.g. apt-get install -y nginx): %w", binary, err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("proxy: state dir %s: %w", dir, err)
	}
	for _, d := range []string{abs, filepath.Join(abs, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("proxy: state dir: %w", err)
		}
	}
	return &ManagedNginx{
		binary: binary, dir: abs, conf: filepath.Join(abs, "nginx.conf"),
		timeout: timeout, log: logger.With("component", "nginx"),
		stop: make(chan struct{}),
	}, nil
}

// Dir returns the absolute state directory, for generators that write
// paths into the configuration.
func (n *ManagedNginx) Dir() string { return n.dir }

// Reloads returns how many reload signals nginx has been sent.
func (n *ManagedNginx) Reloads() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.reloads
}

// Apply makes config live. It writes config next to nginx.conf, has nginx
// check that file (`nginx -t`), and only then renames it over nginx.conf
// and reloads nginx (SIGHUP: old workers finish their requests, new ones
// take new connections). A configuration nginx rejects never replaces the
// running one; the error carries nginx's own message. The first Apply
// starts nginx.
func (n *ManagedNginx) Apply(ctx context.Context, config []byte) error {
	n.mu.Lock()
	closed, running, same := n.closed, n.cmd != nil, bytes.Equal(n.current, config)
	n.mu.Unlock()
	if closed {
		return errors.New("proxy: nginx is closed")
	}
	if running && same {
		return nil
	}
	next := n.conf + ".next"
	if err := WriteAtomic(next, config, 0o644); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	if _, err := run(ctx, n.timeout, n.binary, "-t", "-q", "-p", n.dir+"/", "-c", next, "-e", "stderr"); err != nil {
		os.Remove(next)
		return fmt.Errorf("proxy: nginx rejected the new configuration, previous one kept: %w", err)
	}
	if err := os.Rename(next, n.conf); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	prev := n.current
	n.current = config
	if n.closed {
		return errors.New("proxy: nginx is closed")
	}
	if n.cmd == nil {
		return n.startLocked()
	}
	pid := n.cmd.Process.Pid
	before, verifiable := workers(pid)
	if err := n.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		return fmt.Errorf("proxy: reload nginx: %w", err)
	}
	n.reloads++
	if !verifiable {
		return nil // no /proc children list: nothing to verify with
	}
	n.mu.Unlock()
	err := n.verifyReload(ctx, pid, before)
	n.mu.Lock() // for the deferred Unlock
	if err != nil && prev != nil {
		// nginx kept the previous configuration: put it back on disk too,
		// so a restart of nginx starts what actually ran.
		if werr := WriteAtomic(n.conf, prev, 0o644); werr == nil {
			n.current = prev
		}
	}
	return err
}

// verifyReload waits until the master pid has started a worker that was
// not there before the reload: nginx starts new workers only once it has
// read the new configuration and opened its listeners, so a reload that
// failed inside nginx (a port taken since the check, say) leaves the old
// workers alone. It signals once more before giving up.
func (n *ManagedNginx) verifyReload(ctx context.Context, pid int, before map[int]bool) error {
	wait := min(n.timeout, 5*time.Second)
	for attempt := 0; attempt < 2; attempt++ {
		deadline := time.Now().Add(wait)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			now, ok := workers(pid)
			if !ok {
				return fmt.Errorf("proxy: nginx (pid %d) exited during a reload; it is restarted with the last good configuration", pid)
			}
			for w := range now {
				if !before[w] {
					return nil
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		if attempt == 0 {
			n.log.Warn("nginx started no new workers after a reload; signalling again", "pid", pid, "waited", wait)
			syscall.Kill(pid, syscall.SIGHUP)
		}
	}
	return fmt.Errorf("proxy: nginx started no new workers within %s of a reload: it still runs the previous configuration (see its error log above)", 2*wait)
}

// workers returns the child processes of pid, from /proc; ok is false
// when the list cannot be read (no such process, or a kernel without it).
func workers(pid int) (map[int]bool, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil, false
	}
	out := map[int]bool{}
	for _, f := range strings.Fields(string(b)) {
		if w, err := strconv.Atoi(f); err == nil {
			out[w] = true
		}
	}
	return out, true
}

// startLocked starts the nginx master and a goroutine that restarts it
// with backoff, from the last good nginx.conf, if it dies. n.mu is held.
func (n *ManagedNginx) startLocked() error {
	n.stopStale()
	cmd := exec.Command(n.binary, "-p", n.dir+"/", "-c", n.conf, "-e", "stderr", "-g", "daemon off;")
	cmd.Stdout = &lineLogger{log: n.log}
	cmd.Stderr = &lineLogger{log: n.log}
	// Its own process group: a Ctrl-C on scrimp's terminal reaches scrimp,
	// which then stops nginx gracefully instead of nginx dying mid-request.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Workers orphaned by a master that died hold its output pipes open;
	// without a WaitDelay, Wait would not return until they exit, and they
	// never do on their own.
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("proxy: start nginx: %w", err)
	}
	n.log.Info("nginx started", "pid", cmd.Process.Pid, "conf", n.conf)
	n.cmd = cmd
	exited := make(chan struct{})
	n.exited = exited
	n.wg.Add(1)
	go n.supervise(cmd, exited)
	return nil
}

// stopStale stops an nginx left running from this state directory by a
// scrimp that was killed (nginx runs in its own process group, so it
// survives its parent): it would hold the listen ports and the new master
// could not bind them. Only a process that is nginx is signalled.
func (n *ManagedNginx) stopStale() {
	b, err := os.ReadFile(filepath.Join(n.dir, "nginx.pid"))
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 || (n.cmd != nil && n.cmd.Process.Pid == pid) {
		return
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(comm), "nginx") {
		return
	}
	n.log.Warn("stopping an nginx left running from this state directory", "pid", pid)
	syscall.Kill(pid, syscall.SIGQUIT)
	deadline := time.Now().Add(n.timeout)
	for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if syscall.Kill(pid, 0) == nil {
		syscall.Kill(-pid, syscall.SIGKILL)
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

func (n *ManagedNginx) supervise(cmd *exec.Cmd, exited chan struct{}) {
	defer n.wg.Done()
	err := cmd.Wait()
	// A master that died without stopping its workers (SIGKILL, a crash)
	// leaves them serving the old configuration and holding the listening
	// sockets, so no new master could bind. Kill whatever is left of its
	// process group; after a graceful exit the group is already empty.
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	close(exited)
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.log.Error("nginx exited unexpectedly; restarting with the last good configuration", "err", err)
	n.cmd = nil
	n.mu.Unlock()

	backoff := 500 * time.Millisecond
	for {
		select {
		case <-time.After(backoff):
		case <-n.stop:
			return
		}
		n.mu.Lock()
		// An Apply during the backoff may have started nginx already;
		// starting a second master would lose track of that one.
		if n.closed || n.cmd != nil {
			n.mu.Unlock()
			return
		}
		err := n.startLocked()
		n.mu.Unlock()
		if err == nil {
			return
		}
		n.log.Error("restarting nginx failed", "err", err, "retry-in", backoff)
		backoff = min(backoff*2, 30*time.Second)
	}
}

// Close stops nginx gracefully (SIGQUIT: workers finish in-flight
// requests), killing it if it has not exited within the timeout, and waits
// for the supervisor to finish. It is safe to call more than once.
func (n *ManagedNginx) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		n.wg.Wait()
		return nil
	}
	n.closed = true
	close(n.stop) // a supervisor waiting to restart nginx gives up at once
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	if cmd != nil {
		cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-exited:
		case <-time.After(n.timeout):
			n.log.Warn("nginx did not stop in time; killing it")
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}
	n.wg.Wait()
	return nil
}

// lineLogger logs each line a proxy writes, at the level the proxy's own
// "[level]" tag names. exec copies the child's output into it from one
// goroutine, so it needs no lock.
type lineLogger struct {
	log *slog.Logger
	buf []byte
}

func (w *lineLogger) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := string(w.buf[:i])
		w.buf = w.buf[i+1:]
		w.log.Log(context.Background(), nginxLevel(line), line)
	}
	if len(w.buf) > 64<<10 { // a runaway line: log what there is
		w.log.Warn(string(w.buf))
		w.buf = w.buf[:0]
	}
	return len(p), nil
}

// nginxLevel maps nginx's "[notice]"-style tag to a slog level.
func nginxLevel(line string) slog.Level {
	for tag, level := range map[string]slog.Level{
		"[debug]": slog.LevelDebug, "[info]": slog.LevelInfo, "[notice]": slog.LevelInfo,
		"[warn]": slog.LevelWarn, "[error]": slog.LevelError, "[crit]": slog.LevelError,
		"[alert]": slog.LevelError, "[emerg]": slog.LevelError,
	} {
		if strings.Contains(line, tag) {
			return level
		}
	}
	return slog.LevelWarn
}
