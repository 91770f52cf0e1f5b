package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/scrimplb/scrimp/generator"
)

// ManagedNginx owns a whole nginx instance: a complete nginx.conf in Dir,
// and `nginx -p Dir -c Dir/nginx.conf -g 'daemon off;'` as a supervised
// child. It needs only the nginx binary: no root, no system config. The
// supervisor starts, restarts and stops the master; ManagedNginx checks,
// writes and reloads the configuration.
//
// Apply is not safe for concurrent use (the load balancer loop is its only
// caller); Close may be called from any goroutine, more than once.
type ManagedNginx struct {
	binary  string
	dir     string
	conf    string
	timeout time.Duration
	log     *slog.Logger
	sup     *supervisor

	mu      sync.Mutex
	current []byte // what nginx.conf holds
	reloads int
	updates int // successful Updates (nginx_lua.go)

	luaOnce sync.Once // LuaBalancer's probe
	luaOK   bool

	checked checkedSum // Check's and Apply's goroutine only

	emergs emergLog // nginx's [emerg] lines, to explain a failed reload
}

// emergLog keeps the last [emerg] lines nginx wrote, counted, so that a
// reload can tell the ones written since it signalled.
type emergLog struct {
	mu    sync.Mutex
	n     int      // lines seen
	lines []string // the last maxEmergs
}

const maxEmergs = 16

// emergPid is the "pid#tid: " after nginx's level tag.
var emergPid = regexp.MustCompile(`^(\[emerg\] )\d+#\d+: `)

// note records line if it is an [emerg] one. Called from the output's
// copying goroutine.
func (e *emergLog) note(line string) {
	i := strings.Index(line, "[emerg]")
	if i < 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n++
	// "[emerg] 12#12: bind()…" → "[emerg] bind()…"
	e.lines = append(e.lines, emergPid.ReplaceAllString(line[i:], "$1"))
	if len(e.lines) > maxEmergs {
		e.lines = e.lines[1:]
	}
}

func (e *emergLog) mark() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n
}

// since returns the first [emerg] line written after mark ("" if none)
// and whether nginx gave up binding a listener since then ("still could
// not bind()"): it then keeps its previous configuration.
func (e *emergLog) since(mark int) (first string, gaveUp bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	fresh := min(e.n-mark, len(e.lines))
	if fresh <= 0 {
		return "", false
	}
	tail := e.lines[len(e.lines)-fresh:]
	for _, l := range tail {
		if strings.Contains(l, "still could not bind()") {
			gaveUp = true
		}
	}
	return tail[0], gaveUp
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
		if err := prepareStateDir(d, nginxStateDirMode()); err != nil {
			return nil, err
		}
		if fi, err := os.Stat(d); err == nil && os.Geteuid() == 0 && fi.Mode().Perm()&0o001 == 0 {
			logger.Warn("nginx's workers (run as another user under root) cannot reach their temp files here, so responses nginx must buffer to disk are cut short; fix it with: chmod 711 "+d,
				"state-dir", d, "mode", fmt.Sprintf("%04o", fi.Mode().Perm()))
		}
	}
	// The lua balancer's socket directory is scrimp's alone: nginx's
	// master binds the socket there, its workers only inherit it.
	if err := prepareStateDir(filepath.Join(abs, generator.NginxLuaSocketDir), stateDirMode); err != nil {
		return nil, err
	}
	n := &ManagedNginx{
		binary: binary, dir: abs, conf: filepath.Join(abs, "nginx.conf"),
		timeout: timeout, log: logger.With("component", "nginx"),
	}
	n.sup = newSupervisor(procSpec{
		name: "nginx", binary: binary,
		args: []string{"-p", abs + "/", "-c", n.conf, "-e", "stderr", "-g", "daemon off;"},
		dir:  abs,
		// Where the generator's "pid" directive puts it.
		pidFile:     filepath.Join(abs, "nginx.pid"),
		stopSignal:  syscall.SIGQUIT, // workers finish in-flight requests
		timeout:     timeout,
		output:      func() io.Writer { return &lineLogger{log: n.log, note: n.emergs.note} },
		ready:       n.waitStarted,
		beforeStart: n.removeStaleSocket,
		attrs:       []any{"conf", n.conf},
		log:         n.log,
	})
	return n, nil
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
// starts nginx and waits until it runs workers.
func (n *ManagedNginx) Apply(ctx context.Context, config []byte) error {
	return n.apply(ctx, config, false)
}

// apply is Apply; force reloads even when config is what nginx runs.
func (n *ManagedNginx) apply(ctx context.Context, config []byte, force bool) error {
	if n.sup.isClosed() {
		return n.sup.errClosed()
	}
	n.mu.Lock()
	same := bytes.Equal(n.current, config)
	n.mu.Unlock()
	if same && n.sup.current() != nil && !force {
		return nil
	}
	next := n.conf + ".next"
	if err := WriteAtomic(next, config, 0o644); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	if !n.checked.take(config) { // else Check just tested these bytes
		if _, err := run(ctx, n.timeout, n.binary, "-t", "-q", "-p", n.dir+"/", "-c", next, "-e", "stderr"); err != nil {
			os.Remove(next)
			return fmt.Errorf("proxy: nginx rejected the new configuration, previous one kept: %w", err)
		}
	}
	if err := os.Rename(next, n.conf); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	n.mu.Lock()
	prev := n.current
	n.current = config
	n.mu.Unlock()
	p, fresh, err := n.sup.start(ctx)
	if err != nil || fresh {
		return err
	}
	before, verifiable := workers(p.Pid)
	mark := n.emergs.mark()
	if err := p.Signal(syscall.SIGHUP); err != nil {
		return fmt.Errorf("proxy: reload nginx: %w", err)
	}
	n.mu.Lock()
	n.reloads++
	n.mu.Unlock()
	if !verifiable {
		return nil // no /proc children list: nothing to verify with
	}
	if err := n.verifyReload(ctx, p, before, mark); err != nil {
		// nginx kept the previous configuration: put it back on disk too,
		// so a restart of nginx starts what actually ran.
		if prev != nil {
			if werr := WriteAtomic(n.conf, prev, 0o644); werr == nil {
				n.mu.Lock()
				n.current = prev
				n.mu.Unlock()
			}
		}
		return err
	}
	return nil
}

// waitStarted is the supervisor's readiness check: nginx forks its first
// workers only once it has read its configuration and bound its
// listeners. Without a /proc children list it cannot tell, and takes the
// master's start for readiness.
func (n *ManagedNginx) waitStarted(ctx context.Context, p *proxyProc) error {
	deadline := time.NewTimer(n.timeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.exited:
			return fmt.Errorf("proxy: nginx (pid %d) did not start: %w: %v (see its log above)", p.Pid, errExited, p.err)
		default:
		}
		w, ok := workers(p.Pid)
		if ok && len(w) > 0 || !ok && processAlive(p.Pid) {
			return nil
		}
		select {
		case <-tick.C:
		case <-p.exited:
		case <-ctx.Done():
			return fmt.Errorf("proxy: nginx (pid %d) did not start: %w", p.Pid, ctx.Err())
		case <-deadline.C:
			return fmt.Errorf("proxy: nginx (pid %d) started no workers within %s", p.Pid, n.timeout)
		}
	}
}

// verifyReload waits until master p has started a worker that was not
// there before the reload: nginx starts new workers only once it has read
// the new configuration and opened its listeners, so a reload that failed
// inside nginx (a port taken since the check, say) leaves the old workers
// alone. It signals once more before giving up, unless nginx said it
// could not bind a listener (after its own retries); the error quotes
// nginx's first [emerg] line since mark.
func (n *ManagedNginx) verifyReload(ctx context.Context, p *proxyProc, before map[int]bool, mark int) error {
	wait := min(n.timeout, 5*time.Second)
	for attempt := 0; attempt < 2; attempt++ {
		deadline := time.Now().Add(wait)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			now, ok := workers(p.Pid)
			if !ok {
				return fmt.Errorf("proxy: nginx (pid %d) exited during a reload; it is restarted with the last good configuration", p.Pid)
			}
			for w := range now {
				if !before[w] {
					n.awaitOldWorkers(ctx, before)
					return nil
				}
			}
			if first, gaveUp := n.emergs.since(mark); gaveUp {
				return fmt.Errorf("proxy: nginx could not load the new configuration, it still runs the previous one: %s", first)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if attempt == 0 {
			n.log.Warn("nginx started no new workers after a reload; signalling again", "pid", p.Pid, "waited", wait)
			p.Signal(syscall.SIGHUP)
		}
	}
	if first, _ := n.emergs.since(mark); first != "" {
		return fmt.Errorf("proxy: nginx started no new workers within %s of a reload: it still runs the previous configuration: %s", 2*wait, first)
	}
	return fmt.Errorf("proxy: nginx started no new workers within %s of a reload: it still runs the previous configuration (see its error log above)", 2*wait)
}

// oldWorkerWait bounds how long a reload waits for the old workers to
// stop accepting connections.
const oldWorkerWait = time.Second

// awaitOldWorkers waits, at most oldWorkerWait, until none of the workers
// in old still accepts connections: each has exited or has been told to
// shut down (nginx retitles it "worker process is shutting down"). The
// master starts the new workers first and tells the old ones only about
// 100 ms later, and until then they take new connections with the old
// configuration; a reload is not done before that.
func (n *ManagedNginx) awaitOldWorkers(ctx context.Context, old map[int]bool) {
	deadline := time.Now().Add(oldWorkerWait)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		accepting := false
		for w := range old {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", w))
			if err == nil && len(b) > 0 && !bytes.Contains(b, []byte("shutting down")) {
				accepting = true
				break
			}
		}
		if !accepting {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	n.log.Debug("old nginx workers still accept connections after a reload", "waited", oldWorkerWait)
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

// Close stops nginx gracefully (SIGQUIT: workers finish in-flight
// requests), killing it if it has not exited within the timeout, and waits
// for the supervisor to finish. It is safe to call more than once.
func (n *ManagedNginx) Close() error {
	n.sup.close()
	return nil
}

// lineLogger logs each line a proxy writes, at the level the proxy's own
// "[level]" tag names. exec copies the child's output into it from one
// goroutine, so it needs no lock.
type lineLogger struct {
	log  *slog.Logger
	note func(line string) // if set, sees every line too
	buf  []byte
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
		if w.note != nil {
			w.note(line)
		}
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
