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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Restart backoff of a proxy that died: it starts at minBackoff and doubles
// with every death or failed start until the proxy has been ready once.
const (
	defaultMinBackoff = 500 * time.Millisecond
	defaultMaxBackoff = 30 * time.Second
)

// procSpec is what a supervisor needs to know about one kind of proxy.
type procSpec struct {
	// name names the proxy in logs and errors ("nginx").
	name string
	// binary and args start the master in the foreground. The master
	// reads its configuration from a file its managed type keeps holding
	// the last good configuration, so a restart starts from that.
	binary string
	args   []string
	// dir is the state directory. A stale master found through pidFile
	// is only stopped if its command line names a path under dir.
	dir     string
	pidFile string
	// stopSignal stops the master gracefully: its workers finish their
	// requests (nginx SIGQUIT, HAProxy master-worker SIGUSR1).
	stopSignal syscall.Signal
	// timeout bounds a graceful stop (then the process group is killed)
	// and a wait for readiness.
	timeout time.Duration
	// output returns where the master's stdout and stderr go, once per
	// start; exec writes to it from one goroutine.
	output func() io.Writer
	// ready returns nil once the master p serves, and an error when it
	// exits first, ctx ends or it takes longer than the timeout.
	ready func(ctx context.Context, p *proxyProc) error
	// beforeStart, if set, runs before each start of the master (after
	// a stale one was stopped), with the supervisor's lock held.
	beforeStart func()
	// attrs are logged with "started".
	attrs []any
	log   *slog.Logger
	// minBackoff and maxBackoff bound the restart backoff; zero means
	// defaultMinBackoff and defaultMaxBackoff.
	minBackoff, maxBackoff time.Duration
}

// proxyProc is one started master.
type proxyProc struct {
	*os.Process
	exited <-chan struct{} // closed once it has exited and been reaped
	err    error           // how it exited; read it only after exited
}

// supervisor owns the master process of one managed proxy: it starts it in
// its own process group (a Ctrl-C on scrimp's terminal reaches scrimp only,
// which then stops the proxy gracefully), first stopping a master that an
// earlier run left behind; it waits on it and restarts it with backoff
// when it dies; and close stops it gracefully, killing its process group
// after the timeout. All methods are safe for concurrent use; close may be
// called more than once and leaves no goroutine behind.
type supervisor struct {
	spec     procSpec
	exe      string          // spec.binary resolved, to recognise a stale master
	stop     chan struct{}   // closed by close
	stopCtx  context.Context // canceled by close
	cancelFn context.CancelFunc

	mu      sync.Mutex
	cur     *proxyProc // the running master; nil before the first start and while restarting
	closed  bool
	looping bool          // the restart loop runs
	backoff time.Duration // wait before the next restart
	wg      sync.WaitGroup
}

func newSupervisor(spec procSpec) *supervisor {
	if spec.minBackoff <= 0 {
		spec.minBackoff = defaultMinBackoff
	}
	if spec.maxBackoff <= 0 {
		spec.maxBackoff = defaultMaxBackoff
	}
	exe, err := exec.LookPath(spec.binary)
	if err == nil {
		exe, err = filepath.Abs(exe)
	}
	if err == nil {
		exe, err = filepath.EvalSymlinks(exe)
	}
	if err != nil {
		exe = "" // no stale master can be recognised; the start will say why
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &supervisor{
		spec: spec, exe: exe, stop: make(chan struct{}), stopCtx: ctx, cancelFn: cancel,
		backoff: spec.minBackoff,
	}
}

func (s *supervisor) errClosed() error { return fmt.Errorf("proxy: %s is closed", s.spec.name) }

// stopped is closed by close.
func (s *supervisor) stopped() <-chan struct{} { return s.stop }

// isClosed reports whether close was called.
func (s *supervisor) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// current returns the running master (or, after close, the last one), nil
// before the first start and while a restart waits.
func (s *supervisor) current() *proxyProc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// pid returns the running master's pid, 0 if none runs.
func (s *supervisor) pid() int {
	if p := s.current(); p != nil {
		return p.Pid
	}
	return 0
}

// start returns the running master, or starts one (fresh is then true)
// and waits until it is ready. It fails once close was called. A master
// that was started but is not ready is still supervised: the error says
// why it is not serving yet, and it is restarted if it dies.
func (s *supervisor) start(ctx context.Context) (p *proxyProc, fresh bool, err error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, false, s.errClosed()
	}
	if s.cur != nil {
		p := s.cur
		s.mu.Unlock()
		return p, false, nil
	}
	p, err = s.startLocked()
	s.mu.Unlock()
	if err != nil {
		return nil, false, err
	}
	return p, true, s.waitReady(ctx, p)
}

// waitReady waits for p to be ready, bounded by ctx and close, and resets
// the backoff once it is.
func (s *supervisor) waitReady(ctx context.Context, p *proxyProc) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.stopCtx, cancel)()
	if err := s.spec.ready(ctx, p); err != nil {
		return err
	}
	s.mu.Lock()
	s.backoff = s.spec.minBackoff
	s.mu.Unlock()
	return nil
}

// startLocked stops a stale master, starts a new one, and a goroutine that
// reaps it; the first start also starts the restart loop. s.mu is held.
func (s *supervisor) startLocked() (*proxyProc, error) {
	s.stopStale()
	if s.spec.beforeStart != nil {
		s.spec.beforeStart()
	}
	cmd := exec.Command(s.spec.binary, s.spec.args...)
	out := s.spec.output()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Workers orphaned by a master that died hold its output pipe open;
	// without a WaitDelay, Wait would not return until they exit, and
	// they never do on their own.
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("proxy: start %s: %w", s.spec.name, err)
	}
	exited := make(chan struct{})
	p := &proxyProc{Process: cmd.Process, exited: exited}
	s.cur = p
	s.spec.log.Info(s.spec.name+" started", append([]any{"pid", p.Pid}, s.spec.attrs...)...)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		p.err = cmd.Wait()
		// A master that died without stopping its workers (SIGKILL, a
		// crash) leaves them holding the listening sockets, so no new
		// master could bind. Kill whatever is left of its process group;
		// after a graceful exit the group is already empty.
		syscall.Kill(-p.Pid, syscall.SIGKILL)
		close(exited)
	}()
	if !s.looping {
		s.looping = true
		s.wg.Add(1)
		go s.loop()
	}
	return p, nil
}

// loop restarts the master whenever it dies, until close. It runs from the
// first start on; s.cur is nil only while loop is restarting.
func (s *supervisor) loop() {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		p := s.cur
		s.mu.Unlock()
		select {
		case <-p.exited:
		case <-s.stop:
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return
		}
		s.cur = nil
		wait := s.nextBackoffLocked()
		s.mu.Unlock()
		s.spec.log.Error(s.spec.name+" exited unexpectedly; restarting with the last good configuration", "err", p.err, "pid", p.Pid, "retry-in", wait)
		if !s.restart(wait) {
			return
		}
	}
}

// nextBackoffLocked returns the wait before the next restart and doubles
// it for the one after. s.mu is held.
func (s *supervisor) nextBackoffLocked() time.Duration {
	wait := s.backoff
	s.backoff = min(2*s.backoff, s.spec.maxBackoff)
	return wait
}

// restart waits, then starts a new master unless one runs already (an
// Apply during the wait started it: a second master would lose track of
// it), retrying with backoff. It returns false when close was called.
func (s *supervisor) restart(wait time.Duration) bool {
	for {
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-s.stop:
			timer.Stop()
			return false
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return false
		}
		if s.cur != nil {
			s.mu.Unlock()
			return true
		}
		p, err := s.startLocked()
		if err != nil {
			wait = s.nextBackoffLocked()
			s.mu.Unlock()
			s.spec.log.Error("restarting "+s.spec.name+" failed", "err", err, "retry-in", wait)
			continue
		}
		s.mu.Unlock()
		if err := s.waitReady(s.stopCtx, p); err != nil {
			// If it died, loop restarts it with a longer backoff.
			s.spec.log.Warn("restarted "+s.spec.name+" is not ready", "pid", p.Pid, "err", err)
		}
		return true
	}
}

// close stops the master gracefully, killing its process group if it has
// not exited within the timeout, and waits until every goroutine of the
// supervisor has returned. Later and concurrent calls wait for the same.
func (s *supervisor) close() {
	s.mu.Lock()
	first := !s.closed
	if first {
		s.closed = true
		close(s.stop) // a restart waiting for its backoff gives up at once
		s.cancelFn()
	}
	p := s.cur
	s.mu.Unlock()
	if first && p != nil {
		s.stopProc(p)
	}
	s.wg.Wait()
}

// stopProc sends p the graceful stop signal, again every second (a master
// that is starting up or re-executing itself for a reload can lose it, and
// a second one does no harm), and kills its process group once the
// timeout has passed.
func (s *supervisor) stopProc(p *proxyProc) {
	deadline := time.NewTimer(s.spec.timeout)
	defer deadline.Stop()
	resend := time.NewTicker(time.Second)
	defer resend.Stop()
	p.Signal(s.spec.stopSignal)
	for {
		select {
		case <-p.exited:
			s.spec.log.Info(s.spec.name+" stopped", "pid", p.Pid)
			return
		case <-resend.C:
			p.Signal(s.spec.stopSignal)
		case <-deadline.C:
			s.spec.log.Warn(s.spec.name+" did not stop in time; killing it", "pid", p.Pid, "waited", s.spec.timeout)
			syscall.Kill(-p.Pid, syscall.SIGKILL)
			<-p.exited
			return
		}
	}
}

// stopStale stops a master left running from this state directory by a
// scrimp that was killed: the master runs in its own process group, so it
// survives its parent, and it would hold the listen ports the new master
// needs. Only a live process of the same binary whose command line names
// the state directory is signalled; it is only called while no master of
// this supervisor runs. It blocks for at most about twice the timeout. s.mu is held.
func (s *supervisor) stopStale() {
	pid, ok := s.stalePid()
	if !ok {
		return
	}
	s.spec.log.Warn("stopping a "+s.spec.name+" left running from this state directory", "pid", pid, "pid-file", s.spec.pidFile)
	syscall.Kill(pid, s.spec.stopSignal)
	if waitGone(pid, s.spec.timeout) {
		waitGroupGone(pid, s.spec.timeout)
		return
	}
	s.spec.log.Warn("the stale "+s.spec.name+" did not stop in time; killing it", "pid", pid, "waited", s.spec.timeout)
	if pgid, err := syscall.Getpgid(pid); err == nil && pgid == pid {
		syscall.Kill(-pid, syscall.SIGKILL)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	waitGone(pid, s.spec.timeout)
	waitGroupGone(pid, s.spec.timeout)
}

// stalePid returns the pid the pid file names if it is a live master of
// this binary and state directory.
func (s *supervisor) stalePid() (int, bool) {
	b, err := os.ReadFile(s.spec.pidFile)
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, false
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid <= 1 || pid == os.Getpid() || !processAlive(pid) {
		return 0, false
	}
	if !sameExecutable(pid, s.exe) {
		s.spec.log.Debug("the pid file names a process of another program; leaving it alone", "pid", pid, "pid-file", s.spec.pidFile)
		return 0, false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !namesDir(cmdline, s.spec.dir) {
		s.spec.log.Debug("the pid file names a "+s.spec.name+" of another state directory; leaving it alone", "pid", pid, "pid-file", s.spec.pidFile)
		return 0, false
	}
	return pid, true
}

// sameExecutable reports whether process pid runs the file exe: the same
// file, or (after a package upgrade replaced it) one with the same path.
func sameExecutable(pid int, exe string) bool {
	if exe == "" {
		return false
	}
	link := fmt.Sprintf("/proc/%d/exe", pid)
	running, err1 := os.Stat(link)
	want, err2 := os.Stat(exe)
	if err1 == nil && err2 == nil && os.SameFile(running, want) {
		return true
	}
	path, err := os.Readlink(link)
	return err == nil && strings.TrimSuffix(path, " (deleted)") == exe
}

// namesDir reports whether a /proc cmdline has an argument (or, as nginx
// rewrites its title into one string, a word) that is a path under dir.
func namesDir(cmdline []byte, dir string) bool {
	prefix := []byte(dir + "/")
	for i := 0; ; {
		j := bytes.Index(cmdline[i:], prefix)
		if j < 0 {
			return false
		}
		if at := i + j; at == 0 || cmdline[at-1] == 0 || cmdline[at-1] == ' ' {
			return true
		}
		i += j + 1
	}
}

// processAlive reports whether pid is a live process; a zombie counts as
// gone (an orphan's zombie may wait for a reaper that a container lacks).
func processAlive(pid int) bool {
	state, _, ok := procStat(pid)
	return ok && state != "Z" && state != "X"
}

// procStat returns the state and the process group of pid, from /proc.
func procStat(pid int) (state string, pgid int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, false
	}
	// pid (comm) state ppid pgrp …; comm may contain spaces and ')'.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 3 {
		return "", 0, false
	}
	pgid, _ = strconv.Atoi(f[2])
	return f[0], pgid, true
}

// waitGone polls until pid is gone or a zombie; false if it still lives
// after timeout.
func waitGone(pid int, timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); processAlive(pid); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// waitGroupGone polls until no live process is left in process group pgid
// (a killed process's sockets close only once it is torn down), at most
// for timeout.
func waitGroupGone(pgid int, timeout time.Duration) {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if !groupAlive(pgid) {
			return
		}
	}
}

// groupAlive reports whether a live process is in process group pgid.
func groupAlive(pgid int) bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if state, g, ok := procStat(pid); ok && g == pgid && state != "Z" && state != "X" {
			return true
		}
	}
	return false
}

// errExited is what a readiness wait returns when the master exits first.
var errExited = errors.New("it exited")
