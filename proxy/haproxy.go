package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// haproxyMaxSocketPath is the longest unix socket path HAProxy 2.6 binds:
// it needs room in sun_path for a ".PID.tmp" suffix.
const haproxyMaxSocketPath = 97

// ManagedHAProxy owns a whole HAProxy instance: a complete haproxy.cfg in
// Dir, and `haproxy -W -db -S Dir/master.sock,mode,600 -f Dir/haproxy.cfg
// -p Dir/haproxy.pid` (master-worker, in the foreground) as a supervised
// child. It needs only the haproxy binary: no root, no system config.
//
// Reloads go through the master CLI socket ("reload"), falling back to
// SIGUSR2 when the socket does not answer; either way the master starts
// new workers on the new configuration while the old ones finish their
// connections, and Apply waits until a new worker is up.
//
// The supervisor starts, restarts and stops the master; ManagedHAProxy
// checks, writes, reloads and updates the configuration.
//
// Apply is not safe for concurrent use (the load balancer loop is its only
// caller); Close may be called from any goroutine, more than once.
type ManagedHAProxy struct {
	binary  string
	dir     string
	conf    string
	sock    string // the master CLI socket
	pidFile string
	timeout time.Duration
	log     *slog.Logger
	out     *haproxyOutput
	sup     *supervisor
	// asRoot: scrimp, and so HAProxy's master, runs as root (AsRoot).
	asRoot bool

	warnedRoot bool // Apply's goroutine only

	mu      sync.Mutex
	current []byte // what haproxy.cfg holds
	reloads int
	updates int // successful Updates
	// certUpdates counts successful UpdateCerts.
	certUpdates int

	checked checkedSum // Check's and Apply's goroutine only
}

// NewManagedHAProxy prepares dir (creating it) for an HAProxy run by
// binary. Nothing runs until the first Apply.
func NewManagedHAProxy(binary, dir string, timeout time.Duration, logger *slog.Logger) (*ManagedHAProxy, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if _, err := exec.LookPath(binary); err != nil {
		return nil, fmt.Errorf("proxy: haproxy binary %q not found (install HAProxy, e.g. apt-get install -y haproxy): %w", binary, err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("proxy: state dir %s: %w", dir, err)
	}
	sock := filepath.Join(abs, "master.sock")
	switch {
	case strings.Contains(abs, ","):
		// -S takes "path,option,value…".
		return nil, fmt.Errorf("proxy: state dir %s: HAProxy's -S option cannot take a path with a comma", abs)
	case len(sock) > haproxyMaxSocketPath:
		return nil, fmt.Errorf("proxy: state dir %s: the master socket path %s is longer than the %d characters HAProxy can bind", abs, sock, haproxyMaxSocketPath)
	}
	if err := prepareStateDir(abs, stateDirMode); err != nil {
		return nil, err
	}
	log := logger.With("component", "haproxy")
	h := &ManagedHAProxy{
		binary: binary, dir: abs, conf: filepath.Join(abs, "haproxy.cfg"),
		sock: sock, pidFile: filepath.Join(abs, "haproxy.pid"),
		timeout: timeout, log: log, out: &haproxyOutput{log: log},
		asRoot: os.Geteuid() == 0,
	}
	h.sup = newSupervisor(procSpec{
		name: "haproxy", binary: binary,
		args: []string{"-W", "-db", "-S", h.sock + ",mode,600", "-f", h.conf, "-p", h.pidFile},
		dir:  abs, pidFile: h.pidFile,
		// A soft stop: workers finish their connections, bounded by
		// hard-stop-after.
		stopSignal: syscall.SIGUSR1,
		timeout:    timeout,
		// One writer for both streams and every master: it keeps the
		// alerts that errors quote.
		output: func() io.Writer { return h.out },
		ready:  h.waitStarted,
		attrs:  []any{"conf", h.conf, "master-socket", h.sock},
		log:    log,
	})
	return h, nil
}

// Dir returns the absolute state directory, for generators that write
// paths into the configuration.
func (h *ManagedHAProxy) Dir() string { return h.dir }

// Reloads returns how many reloads HAProxy has been asked for.
func (h *ManagedHAProxy) Reloads() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.reloads
}

// Apply makes config live. It writes config next to haproxy.cfg, has
// HAProxy check that file (`haproxy -c`), and only then renames it over
// haproxy.cfg and reloads HAProxy, waiting until a new worker runs it. A
// configuration HAProxy rejects never replaces the running one; the error
// carries HAProxy's own message. If the reload itself fails (a port taken
// by another process, say), the old workers keep serving and haproxy.cfg
// gets the previous configuration back, so a restart starts from a good
// one. The first Apply starts HAProxy and waits for its first worker.
func (h *ManagedHAProxy) Apply(ctx context.Context, config []byte) error {
	return h.apply(ctx, config, false)
}

// apply is Apply; force reloads even when config is what HAProxy runs.
func (h *ManagedHAProxy) apply(ctx context.Context, config []byte, force bool) error {
	if h.sup.isClosed() {
		return h.sup.errClosed()
	}
	h.mu.Lock()
	same := h.current != nil && bytes.Equal(h.current, config)
	h.mu.Unlock()
	if same && h.sup.current() != nil && !force {
		return nil
	}
	if h.asRoot {
		if err := h.checkWorkerUser(config); err != nil {
			return err
		}
	}
	next := h.conf + ".next"
	if err := WriteAtomic(next, config, 0o644); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	if !h.checked.take(config) { // else Check just tested these bytes
		if err := h.check(ctx, next); err != nil {
			os.Remove(next)
			return err
		}
	}
	if err := os.Rename(next, h.conf); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}

	h.mu.Lock()
	prev := h.current
	h.current = config
	h.mu.Unlock()
	p, fresh, err := h.sup.start(ctx)
	if err != nil || fresh {
		return err
	}
	if err := h.reload(ctx, p); err != nil {
		// The old workers still serve prev; put it back in haproxy.cfg so
		// a restart does not try the configuration that failed.
		h.mu.Lock()
		if bytes.Equal(h.current, config) && prev != nil {
			if werr := WriteAtomic(h.conf, prev, 0o644); werr != nil {
				err = fmt.Errorf("%w; and restoring the previous haproxy.cfg failed: %v", err, werr)
			}
			h.current = prev
		}
		h.mu.Unlock()
		return err
	}
	return nil
}

// check runs `haproxy -c -f file`. It does not pass -q, which would
// silence the alerts too; the error keeps only HAProxy's alert lines.
func (h *ManagedHAProxy) check(ctx context.Context, file string) error {
	out, err := run(ctx, h.timeout, h.binary, "-c", "-f", file)
	if err == nil {
		return nil
	}
	if alerts := haproxyAlerts(out); alerts != "" {
		if exit := errors.Unwrap(err); exit != nil {
			err = exit
		}
		return fmt.Errorf("proxy: haproxy rejected the new configuration, previous one kept: %s: %w", alerts, err)
	}
	return fmt.Errorf("proxy: haproxy rejected the new configuration, previous one kept: %w", err)
}

// haproxyAlerts returns the [ALERT] lines of HAProxy's output without
// their "(pid) : " prefix, joined into one line.
func haproxyAlerts(out []byte) string {
	var alerts []string
	for line := range strings.Lines(string(out)) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "[ALERT]") {
			continue
		}
		if _, rest, ok := strings.Cut(line, ") : "); ok {
			line = "[ALERT] " + rest
		}
		alerts = append(alerts, line)
	}
	return strings.Join(alerts, " | ")
}

// waitStarted is the supervisor's readiness check: it waits until master
// p reports a worker, for only then does HAProxy listen. An error means it
// exited first (a port in use, say) or took longer than the timeout.
func (h *ManagedHAProxy) waitStarted(ctx context.Context, p *proxyProc) error {
	mark := h.out.mark()
	var last error
	err := h.poll(ctx, p.exited, func() (bool, error) {
		info, err := h.showProc(ctx)
		last = err
		return err == nil && len(info.workers) > 0, nil
	})
	if err != nil {
		return fmt.Errorf("proxy: haproxy (pid %d) did not start: %w%s (last master CLI error: %v)", p.Pid, err, h.out.alertsSince(mark), last)
	}
	h.log.Info("haproxy is serving", "pid", p.Pid)
	return nil
}

// reload asks master p to reload and waits until a new worker runs.
func (h *ManagedHAProxy) reload(ctx context.Context, p *proxyProc) error {
	start := time.Now()
	mark := h.out.mark()
	pid, exited := p.Pid, p.exited
	before, beforeErr := h.showProc(ctx)
	// A master the supervisor has just restarted may not listen on its CLI
	// yet, and would lose a signal too: give it a moment.
	for wait := time.Now().Add(min(h.timeout, 2*time.Second)); beforeErr != nil && time.Now().Before(wait); {
		select {
		case <-time.After(50 * time.Millisecond):
		case <-exited:
			return errors.New("proxy: reload haproxy: haproxy exited")
		case <-ctx.Done():
			return fmt.Errorf("proxy: reload haproxy: %w", ctx.Err())
		}
		before, beforeErr = h.showProc(ctx)
	}
	children := haproxyChildren(pid)
	method := "master CLI"
	if _, err := h.masterCommand(ctx, "reload"); err != nil {
		// The master re-executes itself on "reload" and closes the
		// connection without a reply (2.6), so only a failure to connect
		// or send lands here.
		h.log.Warn("the master CLI did not take the reload; sending SIGUSR2 instead", "err", err, "socket", h.sock)
		method = "SIGUSR2"
		if err := p.Signal(syscall.SIGUSR2); err != nil {
			return fmt.Errorf("proxy: reload haproxy: SIGUSR2 to pid %d: %w", pid, err)
		}
	}
	h.mu.Lock()
	h.reloads++
	h.mu.Unlock()

	// Done when the master counts one more reload and a worker it did
	// not have before runs; failed when it counts a failed one. The CLI
	// does not answer while the master re-executes itself, and the master
	// forks the new worker before it listens again; waiting for its answer
	// also means it is ready for the next signal or command. Only when the
	// CLI did not work before the reload is a new child of the master
	// taken as the new worker: the master forks it only after loading the
	// configuration.
	var worker int
	err := h.poll(ctx, exited, func() (bool, error) {
		if beforeErr != nil {
			for _, c := range haproxyChildren(pid) {
				if !slices.Contains(children, c) {
					worker = c
					return true, nil
				}
			}
			return false, nil
		}
		info, err := h.showProc(ctx)
		switch {
		case err != nil:
			return false, nil
		case info.failed > before.failed:
			return false, errors.New("haproxy could not load it; the previous workers keep serving")
		case info.reloads > before.reloads:
			for _, w := range info.workers {
				if !slices.Contains(before.workers, w) {
					worker = w
					return true, nil
				}
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("proxy: reload haproxy (%s): %w%s", method, err, h.out.alertsSince(mark))
	}
	h.log.Info("haproxy reloaded", "via", method, "worker", worker, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// poll calls cond every 20ms until it reports done or an error, the
// master exits, Close is called, ctx ends or the timeout passes.
func (h *ManagedHAProxy) poll(ctx context.Context, exited <-chan struct{}, cond func() (bool, error)) error {
	deadline := time.NewTimer(h.timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		done, err := cond()
		if err != nil || done {
			return err
		}
		select {
		case <-tick.C:
		case <-exited:
			return errors.New("haproxy exited")
		case <-h.sup.stopped():
			return errors.New("haproxy is closed")
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("no new worker within %s", h.timeout)
		}
	}
}

// haproxyProcs is what the master CLI's "show proc" says.
type haproxyProcs struct {
	reloads, failed int   // the master's reload counters
	workers         []int // current workers (not old ones finishing)
	old             []int // old workers, finishing their connections
	// age is each worker's reload count: how many reloads it has
	// outlived, 0 for the newest.
	age map[int]int
}

// newest returns the current worker that has outlived the fewest reloads:
// the one running the latest configuration, even if an old one is still
// listed among the current for a moment. ok is false without workers.
func (p haproxyProcs) newest() (pid int, ok bool) {
	for _, w := range p.workers {
		if !ok || p.age[w] < p.age[pid] {
			pid, ok = w, true
		}
	}
	return pid, ok
}

func (h *ManagedHAProxy) showProc(ctx context.Context) (haproxyProcs, error) {
	out, err := h.masterCommand(ctx, "show proc")
	if err != nil {
		return haproxyProcs{}, err
	}
	return parseShowProc(out)
}

// parseShowProc reads HAProxy 2.6's "show proc":
//
//	#<PID>          <type>          <reloads>       <uptime>        <version>
//	7767            master          1 [failed: 0]   0d00h10m13s     2.6.12
//	# workers
//	19885           worker          0               0d00h00m01s     2.6.12
//	# old workers
//	7770            worker          1               0d00h10m13s     2.6.12
//	# programs
func parseShowProc(out string) (haproxyProcs, error) {
	var p haproxyProcs
	section, master := "", false
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
		case strings.HasPrefix(f[0], "#"):
			section = strings.TrimSpace(strings.TrimPrefix(line, "#"))
		case len(f) >= 3 && f[1] == "master":
			n, err := strconv.Atoi(f[2])
			if err != nil {
				return p, fmt.Errorf("show proc: master line %q: %w", strings.TrimSpace(line), err)
			}
			p.reloads, master = n, true
			if len(f) >= 5 && f[3] == "[failed:" {
				p.failed, _ = strconv.Atoi(strings.TrimSuffix(f[4], "]"))
			}
		case (section == "workers" || section == "old workers") && len(f) >= 2 && f[1] == "worker":
			pid, err := strconv.Atoi(f[0])
			if err != nil {
				return p, fmt.Errorf("show proc: worker line %q: %w", strings.TrimSpace(line), err)
			}
			if section == "workers" {
				p.workers = append(p.workers, pid)
			} else {
				p.old = append(p.old, pid)
			}
			if len(f) >= 3 {
				if n, err := strconv.Atoi(f[2]); err == nil {
					if p.age == nil {
						p.age = map[int]int{}
					}
					p.age[pid] = n
				}
			}
		}
	}
	if !master {
		return p, fmt.Errorf("show proc: no master line in %q", out)
	}
	return p, nil
}

// masterCommand sends one command to the master CLI and returns the
// reply. The master answers once the write side is shut; a reply longer
// than 1 MiB is cut there.
func (h *ManagedHAProxy) masterCommand(ctx context.Context, command string) (string, error) {
	return h.masterCommandLimit(ctx, command, 1<<20)
}

// masterCommandLimit is masterCommand with a reply of at most limit bytes.
func (h *ManagedHAProxy) masterCommandLimit(ctx context.Context, command string, limit int64) (string, error) {
	return h.socketCommand(ctx, h.sock, "master CLI", command, limit)
}

// socketCommand sends command (one line, or a command with a payload) to
// the CLI socket at path, named what in errors, and returns the reply,
// at most limit bytes.
func (h *ManagedHAProxy) socketCommand(ctx context.Context, path, what, command string, limit int64) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, min(h.timeout, 5*time.Second))
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if _, err := io.WriteString(conn, command+"\n"); err != nil {
		return "", fmt.Errorf("%s %q: %w", what, firstLine(command), err)
	}
	if err := conn.(*net.UnixConn).CloseWrite(); err != nil {
		return "", fmt.Errorf("%s %q: %w", what, firstLine(command), err)
	}
	reply, err := io.ReadAll(io.LimitReader(conn, limit))
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		return "", fmt.Errorf("%s %q: %w", what, firstLine(command), err)
	}
	return string(reply), nil
}

// haproxyChildren returns the live child processes of pid, from /proc.
func haproxyChildren(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may contain spaces and ')'.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) >= 2 && f[0] != "Z" && f[0] != "X" && f[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}

// Close stops HAProxy gracefully (SIGUSR1 to the master: workers finish
// their connections, bounded by hard-stop-after), killing it if it has not
// exited within the timeout, and waits for the supervisor to finish. It is
// safe to call more than once.
func (h *ManagedHAProxy) Close() error {
	h.sup.close()
	return nil
}

// haproxyOutput logs each line HAProxy writes, at the level its own
// "[LEVEL]" tag names, and remembers the latest alerts so that errors can
// quote them.
type haproxyOutput struct {
	log *slog.Logger

	mu     sync.Mutex
	buf    []byte
	alerts []string // the latest alert lines, oldest first
	seen   int      // alert lines ever written
}

const haproxyKeptAlerts = 20

func (w *haproxyOutput) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.lineLocked(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > 64<<10 { // a runaway line: log what there is
		w.lineLocked(string(w.buf))
		w.buf = w.buf[:0]
	}
	return len(p), nil
}

func (w *haproxyOutput) lineLocked(line string) {
	level := haproxyLevel(line)
	w.log.Log(context.Background(), level, line)
	if level == slog.LevelError {
		w.seen++
		w.alerts = append(w.alerts, line)
		if len(w.alerts) > haproxyKeptAlerts {
			w.alerts = slices.Delete(w.alerts, 0, len(w.alerts)-haproxyKeptAlerts)
		}
	}
}

// mark returns a position to pass to alertsSince.
func (w *haproxyOutput) mark() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seen
}

// alertsSince returns the alerts written after mark, as ": a | b", or "".
func (w *haproxyOutput) alertsSince(mark int) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := min(w.seen-mark, len(w.alerts))
	if n <= 0 {
		return ""
	}
	return ": " + haproxyAlerts([]byte(strings.Join(w.alerts[len(w.alerts)-n:], "\n")))
}

// haproxyLevel maps HAProxy's "[NOTICE]"-style tag to a slog level.
func haproxyLevel(line string) slog.Level {
	switch {
	case strings.HasPrefix(line, "[ALERT]"), strings.HasPrefix(line, "[EMERG]"):
		return slog.LevelError
	case strings.HasPrefix(line, "[WARNING]"):
		return slog.LevelWarn
	case strings.HasPrefix(line, "[NOTICE]"):
		return slog.LevelInfo
	case strings.HasPrefix(line, "[DEBUG]"):
		return slog.LevelDebug
	}
	return slog.LevelInfo
}
