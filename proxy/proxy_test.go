package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
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
	"github.com/scrimplb/scrimp/internal/loopback"
	"github.com/scrimplb/scrimp/internal/proctest"
)

// waitTimeout bounds every wait for nginx to change state. It is generous
// because a busy 2-core CI machine can be slow to start processes; polls
// return as soon as the condition holds.
const waitTimeout = 30 * time.Second

// poll calls cond until it returns "" (success) or waitTimeout passes, and
// then fails t with the last reason cond gave.
func poll(t *testing.T, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		reason := cond()
		if reason == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %s: %s", what, waitTimeout, reason)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// --- WriteAtomic ---

// leftovers returns the temp files WriteAtomic may have left in dir.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(dir, ".*.tmp-*"))
	if err != nil {
		t.Fatal(err)
	}
	return matches
}

func TestWriteAtomic(t *testing.T) {
	tests := []struct {
		name     string
		existing []byte // nil: no file before
		data     []byte
		perm     os.FileMode
	}{
		{name: "new file", data: []byte("hello\n"), perm: 0o644},
		{name: "replace", existing: []byte("old content that is longer\n"), data: []byte("new\n"), perm: 0o644},
		{name: "empty data", existing: []byte("x"), data: []byte{}, perm: 0o644},
		{name: "private", data: []byte("secret"), perm: 0o600},
		{name: "executable", data: []byte("#!/bin/sh\n"), perm: 0o755},
		{name: "permission changes on replace", existing: []byte("a"), data: []byte("b"), perm: 0o640},
		{name: "large", data: bytes.Repeat([]byte("0123456789abcdef"), 1<<16), perm: 0o644},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "scrimp.conf")
			if tt.existing != nil {
				if err := os.WriteFile(path, tt.existing, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if err := WriteAtomic(path, tt.data, tt.perm); err != nil {
				t.Fatalf("WriteAtomic: %v", err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.data) {
				t.Errorf("content %q, want %q", truncate(got), truncate(tt.data))
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != tt.perm || !fi.Mode().IsRegular() {
				t.Errorf("mode %v, want regular file %v", fi.Mode(), tt.perm)
			}
			if l := leftovers(t, dir); len(l) > 0 {
				t.Errorf("temp files left behind: %v", l)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				t.Errorf("directory holds %d entries, want only the target", len(entries))
			}
		})
	}
}

func TestWriteAtomicErrors(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string) string // returns the path to write
		wantErr string
	}{
		{
			name:    "missing directory",
			setup:   func(t *testing.T, dir string) string { return filepath.Join(dir, "nope", "f.conf") },
			wantErr: "no such file or directory",
		},
		{
			name: "target is a non-empty directory",
			setup: func(t *testing.T, dir string) string {
				p := filepath.Join(dir, "conf.d")
				if err := os.MkdirAll(filepath.Join(p, "inner"), 0o755); err != nil {
					t.Fatal(err)
				}
				return p
			},
			wantErr: "rename",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := tt.setup(t, dir)
			err := WriteAtomic(path, []byte("data"), 0o644)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
			if l := leftovers(t, filepath.Dir(path)); len(l) > 0 {
				t.Errorf("temp files left behind: %v", l)
			}
		})
	}
}

// TestWriteAtomicReadersSeeWholeFiles reads the target while it is being
// rewritten: every read must see one complete version.
func TestWriteAtomicReadersSeeWholeFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	a, b := bytes.Repeat([]byte("a"), 256<<10), bytes.Repeat([]byte("b"), 256<<10)
	if err := WriteAtomic(path, a, 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	var bad []string
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			got, err := os.ReadFile(path)
			if err != nil || !(bytes.Equal(got, a) || bytes.Equal(got, b)) {
				bad = append(bad, fmt.Sprintf("read %d bytes, err %v", len(got), err))
				return
			}
		}
	})
	for i := range 20 {
		data := a
		if i%2 == 0 {
			data = b
		}
		if err := WriteAtomic(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("a reader saw a partial file: %v", bad)
	}
}

func truncate(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "…"
	}
	return string(b)
}

// --- External ---

// script writes a shell script into dir and returns the argv that runs it.
// It runs via /bin/sh rather than exec'ing the file, so a concurrent fork
// elsewhere in the test binary cannot make it fail with ETXTBSY.
func script(t *testing.T, dir, name, body string) []string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"/bin/sh", path}
}

func TestExternalApply(t *testing.T) {
	const (
		okCheck   = `echo "check $*" >> "$LOG"; cp "$TARGET" "$SEEN"`
		okReload  = `echo "reload $*" >> "$LOG"`
		badCheck  = `echo "check" >> "$LOG"; echo 'nginx: [emerg] unknown directive "bogus" in scrimp.conf:1' >&2; echo "test failed"; exit 1`
		badReload = `echo "reload" >> "$LOG"; echo "reload exploded" >&2; exit 3`
	)
	tests := []struct {
		name         string
		previous     *string // content of Target before Apply; nil: absent
		config       string
		check        string
		reload       string
		wantErr      []string // substrings of the error; nil: success
		wantCalls    string   // the call log
		wantTarget   *string  // Target after Apply; nil: absent
		wantSeen     string   // what the check saw in Target
		checkArgs    []string // extra argv for the check command
		wantNoReload bool
	}{
		{
			name: "accepted, no previous file", config: "new config\n",
			check: okCheck, reload: okReload,
			wantCalls: "check \nreload \n", wantTarget: ptr("new config\n"), wantSeen: "new config\n",
		},
		{
			name: "accepted, replaces previous", previous: ptr("old\n"), config: "new\n",
			check: okCheck, reload: okReload, checkArgs: []string{"-t", "-q"},
			wantCalls: "check -t -q\nreload \n", wantTarget: ptr("new\n"), wantSeen: "new\n",
		},
		{
			name: "identical bytes do nothing", previous: ptr("same\n"), config: "same\n",
			check: okCheck, reload: okReload,
			wantCalls: "", wantTarget: ptr("same\n"),
		},
		{
			name: "rejected, previous restored", previous: ptr("good old\n"), config: "bad new\n",
			check: badCheck, reload: okReload,
			wantErr:   []string{"check rejected the new configuration, previous one kept", `unknown directive "bogus"`, "test failed", "exit status 1"},
			wantCalls: "check\n", wantTarget: ptr("good old\n"),
		},
		{
			name: "rejected, new file removed", config: "bad new\n",
			check: badCheck, reload: okReload,
			wantErr:   []string{"check rejected", `unknown directive "bogus"`},
			wantCalls: "check\n", wantTarget: nil,
		},
		{
			name: "reload fails", previous: ptr("old\n"), config: "new\n",
			check: okCheck, reload: badReload,
			wantErr:   []string{"proxy: reload:", "reload exploded", "exit status 3"},
			wantCalls: "check \nreload\n", wantTarget: ptr("new\n"), wantSeen: "new\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			target := filepath.Join(dir, "conf.d", "scrimp.conf")
			if err := os.Mkdir(filepath.Dir(target), 0o755); err != nil {
				t.Fatal(err)
			}
			log, seen := filepath.Join(dir, "calls.log"), filepath.Join(dir, "seen")
			t.Setenv("LOG", log)
			t.Setenv("TARGET", target)
			t.Setenv("SEEN", seen)
			if tt.previous != nil {
				if err := os.WriteFile(target, []byte(*tt.previous), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			e := &External{
				Target:  target,
				Check:   append(script(t, dir, "check.sh", tt.check), tt.checkArgs...),
				Reload:  script(t, dir, "reload.sh", tt.reload),
				Timeout: waitTimeout,
			}
			err := e.Apply(context.Background(), []byte(tt.config))
			if tt.wantErr == nil && err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if tt.wantErr != nil && err == nil {
				t.Fatal("Apply succeeded, want an error")
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			if got := readOr(t, log, ""); got != tt.wantCalls {
				t.Errorf("calls %q, want %q", got, tt.wantCalls)
			}
			if got := readOr(t, seen, ""); got != tt.wantSeen {
				t.Errorf("check saw %q in the target, want %q", got, tt.wantSeen)
			}
			got, err := os.ReadFile(target)
			switch {
			case tt.wantTarget == nil && !errors.Is(err, fs.ErrNotExist):
				t.Errorf("target exists (%q, %v), want it removed", got, err)
			case tt.wantTarget != nil && string(got) != *tt.wantTarget:
				t.Errorf("target %q (%v), want %q", got, err, *tt.wantTarget)
			}
			if l := leftovers(t, filepath.Dir(target)); len(l) > 0 {
				t.Errorf("temp files left behind: %v", l)
			}
			if err := e.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
}

func ptr(s string) *string { return &s }

func readOr(t *testing.T, path, absent string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return absent
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestExternalCommandProblems(t *testing.T) {
	tests := []struct {
		name    string
		check   func(t *testing.T, dir string) []string
		timeout time.Duration
		wantErr []string
		// maxTime bounds how long Apply may take.
		maxTime time.Duration
	}{
		{
			name: "hung check times out",
			check: func(t *testing.T, dir string) []string {
				// The sleep runs in the background so its pid can be
				// recorded; the script then waits for it.
				return script(t, dir, "check.sh", `sleep 60 & echo $! > "$SLEEP_PID"; echo "checking..."; wait`)
			},
			timeout: 500 * time.Millisecond,
			wantErr: []string{"check rejected", "timed out after 500ms", "checking..."},
			maxTime: 15 * time.Second,
		},
		{
			name:    "check command missing",
			check:   func(_ *testing.T, dir string) []string { return []string{filepath.Join(dir, "no-such-check")} },
			timeout: waitTimeout,
			wantErr: []string{"check rejected", "no-such-check"},
			maxTime: waitTimeout,
		},
		{
			name:    "check command empty",
			check:   func(*testing.T, string) []string { return nil },
			timeout: waitTimeout,
			wantErr: []string{"check rejected", "empty command"},
			maxTime: waitTimeout,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			target := filepath.Join(dir, "scrimp.conf")
			sleepPid := filepath.Join(dir, "sleep.pid")
			t.Setenv("SLEEP_PID", sleepPid)
			if err := os.WriteFile(target, []byte("previous\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			reloaded := filepath.Join(dir, "reloaded")
			e := &External{
				Target:  target,
				Check:   tt.check(t, dir),
				Reload:  []string{"/bin/sh", "-c", "touch " + reloaded},
				Timeout: tt.timeout,
			}
			start := time.Now()
			err := e.Apply(context.Background(), []byte("next\n"))
			elapsed := time.Since(start)
			if err == nil {
				t.Fatal("Apply succeeded, want an error")
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			if elapsed > tt.maxTime {
				t.Errorf("Apply took %s, want at most %s", elapsed, tt.maxTime)
			}
			if got := readOr(t, target, "<absent>"); got != "previous\n" {
				t.Errorf("target %q, want the previous content back", got)
			}
			if _, err := os.Stat(reloaded); err == nil {
				t.Error("reload ran after a failed check")
			}
			if s := readOr(t, sleepPid, ""); s != "" {
				pid, err := strconv.Atoi(strings.TrimSpace(s))
				if err != nil {
					t.Fatal(err)
				}
				poll(t, "the hung check's child is killed", func() string {
					if alive(pid) {
						return fmt.Sprintf("sleep (pid %d) still running", pid)
					}
					return ""
				})
			}
		})
	}
}

func TestExternalApplyCanceledContext(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "scrimp.conf")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e := &External{Target: target, Check: []string{"/bin/true"}, Reload: []string{"/bin/true"}, Timeout: waitTimeout}
	if err := e.Apply(ctx, []byte("x")); err == nil {
		t.Fatal("Apply with a canceled context succeeded")
	}
	if _, err := os.Stat(target); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("target left in place after a failed check: %v", err)
	}
}

// --- helpers for processes ---

// procState returns the state letter of pid from /proc ("" if it is gone).
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// pid (comm) state ppid pgrp ...; comm may contain spaces and ')'.
	rest := string(b[bytes.LastIndexByte(b, ')')+1:])
	f := strings.Fields(rest)
	if len(f) < 1 {
		return ""
	}
	return f[0]
}

// alive reports whether pid is a live process; zombies count as gone (an
// orphan's zombie may wait for a reaper that a container lacks).
func alive(pid int) bool {
	s := procState(pid)
	return s != "" && s != "Z" && s != "X"
}

// group returns the live processes whose process group is pgid.
func group(t *testing.T, pgid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, _ := strconv.Atoi(f[2]); g == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// groupGone polls until no live process is left in process group pgid: a
// SIGKILLed process can take a moment to be torn down.
func groupGone(t *testing.T, pgid int, what string) {
	t.Helper()
	poll(t, what, func() string {
		if left := group(t, pgid); len(left) > 0 {
			return fmt.Sprintf("processes %v still in process group %d", left, pgid)
		}
		return ""
	})
}

// nginxProcs returns the live processes that belong to the nginx instances
// of state directory dir: every master whose command line names dir, and
// every process in its process group or in one of groups.
func nginxProcs(t *testing.T, dir string, groups ...int) []int {
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
		}
	}
	var pids []int
	for g := range pgids {
		pids = append(pids, group(t, g)...)
	}
	return pids
}

// killNginx kills every process nginxProcs finds, so that a failing test
// leaves nothing behind.
func killNginx(t *testing.T, dir string, groups ...int) {
	t.Helper()
	for _, pid := range nginxProcs(t, dir, groups...) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// closeBounded calls n.Close and fails t if it does not return in time; it
// then kills nginx itself so that Close, and the test, can finish.
func closeBounded(t *testing.T, n *ManagedNginx) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- n.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
		return
	case <-time.After(2 * waitTimeout):
	}
	t.Errorf("Close did not return within %s; nginx processes %v", 2*waitTimeout, nginxProcs(t, n.Dir(), masterPid(n)))
	killNginx(t, n.Dir(), masterPid(n))
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Errorf("Close still blocked after nginx was killed")
	}
}

// --- ManagedNginx ---

func nginxBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal("nginx is not installed, and CI is set: the managed proxy must be tested against it")
	}
	t.Skip("nginx not in PATH; set CI=1 to make this a failure")
	return ""
}

// freePort returns a port on 127.0.0.1 that nothing held a moment ago,
// below the ephemeral range (loopback.FreePort).
func freePort(t *testing.T) int {
	t.Helper()
	port, err := loopback.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// upstream starts an HTTP server on 127.0.0.1 that answers body.
func upstream(t *testing.T, body string) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, body)
	}))
	t.Cleanup(s.Close)
	return s
}

// newManaged returns a ManagedNginx in a temp dir that is closed, and
// checked to leave no process behind, when the test ends.
func newManaged(t *testing.T) *ManagedNginx {
	t.Helper()
	noLeak(t)
	bin := nginxBinary(t)
	logs := &proctest.Buffer{}
	// Registered first so it runs last, after Close has joined the
	// goroutines that write logs.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("nginx log:\n%s", logs.String())
		}
	})
	n, err := NewManagedNginx(bin, t.TempDir(), waitTimeout, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pid := masterPid(n)
		// Whatever happens, a failing test leaves no nginx behind.
		defer killNginx(t, n.Dir(), pid)
		closeBounded(t, n)
		poll(t, "no nginx process is left after Close", func() string {
			if left := nginxProcs(t, n.Dir(), pid); len(left) > 0 {
				return fmt.Sprintf("processes %v still running", left)
			}
			return ""
		})
	})
	return n
}

// masterPid returns the running master's pid, 0 if none is running.
func masterPid(n *ManagedNginx) int { return n.sup.pid() }

// managedConfig renders a realistic standalone configuration with the
// nginx generator: one application "web" on listen port, served by the
// given upstream.
func managedConfig(t *testing.T, n *ManagedNginx, port int, backend *httptest.Server) []byte {
	t.Helper()
	g, err := generator.New("nginx", nil)
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(backend.Listener.Addr().String())
	snap := catalog.NewSnapshot([]catalog.Node{{
		Name: "backend-1", Addr: ap.Addr(), Role: catalog.RoleBackend,
		Applications: []catalog.Application{{Name: "web", ListenPort: port, ApplicationPort: int(ap.Port()), Protocol: catalog.ProtocolHTTP}},
	}})
	out, err := g.Render(generator.Input{Snapshot: snap, ListenAddr: "127.0.0.1", Standalone: true, StateDir: n.Dir()})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Warnings) > 0 {
		t.Fatalf("warnings: %q", out.Warnings)
	}
	return out.Config
}

var client = &http.Client{
	Timeout:   5 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
}

// get fetches http://127.0.0.1:port/ and returns the body, or a
// description of what went wrong.
func get(port int) (string, error) { return getWith(client, port) }

// waitBody polls until nginx on port answers want.
func waitBody(t *testing.T, port int, want string) {
	t.Helper()
	poll(t, fmt.Sprintf("127.0.0.1:%d answers %q", port, want), func() string {
		got, err := get(port)
		switch {
		case err != nil:
			return err.Error()
		case got != want:
			return fmt.Sprintf("answered %q", got)
		}
		return ""
	})
}

func apply(t *testing.T, n *ManagedNginx, config []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
	defer cancel()
	if err := n.Apply(ctx, config); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

func TestManagedNginxLifecycle(t *testing.T) {
	n := newManaged(t)
	one, two := upstream(t, "one"), upstream(t, "two")
	port := freePort(t)
	confOne := managedConfig(t, n, port, one)
	confTwo := managedConfig(t, n, port, two)
	confFile := filepath.Join(n.Dir(), "nginx.conf")

	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"first Apply starts nginx", func(t *testing.T) {
			if masterPid(n) != 0 {
				t.Fatal("nginx runs before the first Apply")
			}
			apply(t, n, confOne)
			if masterPid(n) == 0 {
				t.Fatal("no nginx master after the first Apply")
			}
			waitBody(t, port, "one")
			if got := n.Reloads(); got != 0 {
				t.Errorf("Reloads() = %d after starting, want 0", got)
			}
			if got := readOr(t, confFile, ""); got != string(confOne) {
				t.Errorf("nginx.conf does not hold the applied configuration")
			}
		}},
		{"changed config reloads", func(t *testing.T) {
			pid := masterPid(n)
			apply(t, n, confTwo)
			if got := n.Reloads(); got != 1 {
				t.Errorf("Reloads() = %d, want 1", got)
			}
			waitBody(t, port, "two")
			if masterPid(n) != pid {
				t.Errorf("master pid changed from %d to %d: a reload must not restart nginx", pid, masterPid(n))
			}
		}},
		{"identical bytes do nothing", func(t *testing.T) {
			before := n.Reloads()
			apply(t, n, bytes.Clone(confTwo))
			if got := n.Reloads(); got != before {
				t.Errorf("Reloads() = %d, want %d unchanged", got, before)
			}
		}},
		{"rejected config keeps the running one", func(t *testing.T) {
			before, pid := n.Reloads(), masterPid(n)
			bad := bytes.Replace(confOne, []byte("server_tokens off;"), []byte("server_tokens off;\n    scrimp_bogus_directive on;"), 1)
			err := n.Apply(context.Background(), bad)
			if err == nil {
				t.Fatal("Apply accepted a configuration with an unknown directive")
			}
			for _, want := range []string{"nginx rejected the new configuration, previous one kept", `unknown directive "scrimp_bogus_directive"`} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if got := readOr(t, confFile, ""); got != string(confTwo) {
				t.Errorf("nginx.conf changed after a rejected Apply:\n%s", got)
			}
			if _, err := os.Stat(confFile + ".next"); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("nginx.conf.next left behind: %v", err)
			}
			if l := leftovers(t, n.Dir()); len(l) > 0 {
				t.Errorf("temp files left behind: %v", l)
			}
			if got := n.Reloads(); got != before {
				t.Errorf("Reloads() = %d, want %d unchanged", got, before)
			}
			if masterPid(n) != pid {
				t.Error("the master changed after a rejected Apply")
			}
			waitBody(t, port, "two")
		}},
		{"good config after a rejected one", func(t *testing.T) {
			apply(t, n, confOne)
			waitBody(t, port, "one")
		}},
		{"Close stops nginx and is idempotent", func(t *testing.T) {
			pid := masterPid(n)
			closeBounded(t, n)
			if alive(pid) {
				t.Errorf("master %d still running after Close", pid)
			}
			groupGone(t, pid, "no nginx process is left after Close")
			if _, err := get(port); err == nil {
				t.Error("port still answers after Close")
			}
			if err := n.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			if err := n.Apply(context.Background(), confTwo); err == nil || !strings.Contains(err.Error(), "closed") {
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

func TestManagedNginxFirstApplyRejected(t *testing.T) {
	n := newManaged(t)
	err := n.Apply(context.Background(), []byte("events {}\nhttp { nonsense; }\n"))
	if err == nil || !strings.Contains(err.Error(), `unknown directive "nonsense"`) {
		t.Fatalf("Apply: %v, want nginx's unknown directive message", err)
	}
	if masterPid(n) != 0 {
		t.Error("nginx started from a rejected configuration")
	}
	if _, err := os.Stat(filepath.Join(n.Dir(), "nginx.conf")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("nginx.conf exists after a rejected first Apply: %v", err)
	}
}

// TestManagedNginxRestartsAfterKill kills the master with SIGKILL: its
// workers are orphaned, still holding the listening sockets and nginx's
// output pipe. The supervisor must notice, clear them away and start a new
// master from the last good configuration.
func TestManagedNginxRestartsAfterKill(t *testing.T) {
	n := newManaged(t)
	port := freePort(t)
	conf := managedConfig(t, n, port, upstream(t, "alive"))
	apply(t, n, conf)
	waitBody(t, port, "alive")
	old := masterPid(n)
	if left := group(t, old); len(left) < 2 {
		t.Fatalf("nginx process group %v: want a master and workers", left)
	}

	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	poll(t, "a new master is running and has written its pid file", func() string {
		pid := masterPid(n)
		if pid == 0 || pid == old {
			return fmt.Sprintf("master pid %d", pid)
		}
		pidFile := strings.TrimSpace(readOr(t, filepath.Join(n.Dir(), "nginx.pid"), ""))
		if pidFile != strconv.Itoa(pid) {
			return fmt.Sprintf("nginx.pid holds %q, want %d", pidFile, pid)
		}
		return ""
	})
	groupGone(t, old, "the killed master's workers are gone")
	waitBody(t, port, "alive")

	// The restarted master is the one Apply reloads.
	next := managedConfig(t, n, port, upstream(t, "after restart"))
	apply(t, n, next)
	waitBody(t, port, "after restart")
}

// TestManagedNginxApplyDuringRestart applies a new configuration while the
// supervisor waits to restart a dead master. Apply starts nginx itself;
// the supervisor must then not start a second master, which would lose
// track of the first (Close could not stop it).
func TestManagedNginxApplyDuringRestart(t *testing.T) {
	n := newManaged(t)
	port := freePort(t)
	apply(t, n, managedConfig(t, n, port, upstream(t, "first")))
	waitBody(t, port, "first")
	old := masterPid(n)
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	poll(t, "the supervisor notices the dead master", func() string {
		if pid := masterPid(n); pid != 0 {
			return fmt.Sprintf("master pid %d", pid)
		}
		return ""
	})
	apply(t, n, managedConfig(t, n, port, upstream(t, "second")))
	started := masterPid(n)
	if started == 0 || started == old {
		t.Fatalf("Apply during the restart backoff left master pid %d", started)
	}
	waitBody(t, port, "second")
	// The supervisor's first restart attempt comes 500ms after the death;
	// watch well past it that the master Apply started stays the one.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if pid := masterPid(n); pid != started {
			t.Fatalf("master changed from %d (started by Apply) to %d: two masters were started", started, pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !alive(started) {
		t.Fatalf("master %d died", started)
	}
	closeBounded(t, n)
	groupGone(t, started, "the master Apply started is stopped by Close")
}

func TestManagedNginxCloseWithoutApply(t *testing.T) {
	n := newManaged(t)
	for i := range 3 {
		if err := n.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	if err := n.Apply(context.Background(), []byte("events {}\n")); err == nil {
		t.Error("Apply after Close succeeded")
	}
	if masterPid(n) != 0 {
		t.Error("Apply after Close started nginx")
	}
}

func TestManagedNginxConcurrentClose(t *testing.T) {
	n := newManaged(t)
	port := freePort(t)
	apply(t, n, managedConfig(t, n, port, upstream(t, "x")))
	waitBody(t, port, "x")
	pid := masterPid(n)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { closeBounded(t, n) })
	}
	wg.Wait()
	if alive(pid) {
		t.Errorf("master %d survives Close", pid)
	}
	groupGone(t, pid, "no nginx process is left after concurrent Closes")
}

func TestNewManagedNginx(t *testing.T) {
	tests := []struct {
		name    string
		binary  string
		dir     func(t *testing.T) string
		wantErr string
	}{
		{
			name: "missing binary", binary: "scrimp-no-such-nginx",
			dir: func(t *testing.T) string { return t.TempDir() }, wantErr: `nginx binary "scrimp-no-such-nginx" not found`,
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
			name: "creates the state dir and tmp", binary: "/bin/sh",
			dir: func(t *testing.T) string { return filepath.Join(t.TempDir(), "a", "b") },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.dir(t)
			n, err := NewManagedNginx(tt.binary, dir, time.Second, nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			if !filepath.IsAbs(n.Dir()) || n.Dir() != filepath.Clean(dir) {
				t.Errorf("Dir() = %q, want absolute %q", n.Dir(), dir)
			}
			if fi, err := os.Stat(filepath.Join(dir, "tmp")); err != nil || !fi.IsDir() {
				t.Errorf("tmp not created: %v", err)
			}
		})
	}
}

// --- small helpers of the package ---

func TestNginxLevel(t *testing.T) {
	tests := []struct {
		name string
		line string
		want slog.Level
	}{
		{name: "emerg", line: `2024/01/01 00:00:00 [emerg] 1#1: bind() failed`, want: slog.LevelError},
		{name: "alert", line: `[alert] x`, want: slog.LevelError},
		{name: "crit", line: `[crit] x`, want: slog.LevelError},
		{name: "error", line: `[error] x`, want: slog.LevelError},
		{name: "warn", line: `[warn] conflicting server name`, want: slog.LevelWarn},
		{name: "notice", line: `[notice] signal process started`, want: slog.LevelInfo},
		{name: "info", line: `[info] x`, want: slog.LevelInfo},
		{name: "debug", line: `[debug] x`, want: slog.LevelDebug},
		{name: "untagged", line: `nginx: configuration file test failed`, want: slog.LevelWarn},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nginxLevel(tt.line); got != tt.want {
				t.Errorf("nginxLevel(%q) = %v, want %v", tt.line, got, tt.want)
			}
		})
	}
}

func TestLineLogger(t *testing.T) {
	var buf bytes.Buffer
	w := &lineLogger{log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))}
	for _, chunk := range []string{"[warn] first ", "line\n[error] sec", "ond\n[notice] partial"} {
		if n, err := w.Write([]byte(chunk)); err != nil || n != len(chunk) {
			t.Fatalf("Write(%q) = %d, %v", chunk, n, err)
		}
	}
	want := "level=WARN msg=\"[warn] first line\"\nlevel=ERROR msg=\"[error] second\"\n"
	if buf.String() != want {
		t.Errorf("logged\n%s\nwant\n%s", buf.String(), want)
	}
	buf.Reset()
	w.Write(bytes.Repeat([]byte("x"), 65<<10))
	if !strings.Contains(buf.String(), "level=WARN") || len(w.buf) != 0 {
		t.Errorf("a runaway line was not flushed (buffer %d bytes)", len(w.buf))
	}
}

func TestFirstLines(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{name: "empty", in: "", want: ""},
		{name: "trimmed", in: "  one line \n", want: "one line"},
		{name: "joined", in: "a\nb\nc\n", want: "a | b | c"},
		{name: "long", in: strings.Repeat("x", 3000), want: strings.Repeat("x", 2000) + "…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := firstLines([]byte(tt.in)); got != tt.want {
				t.Errorf("firstLines = %q, want %q", truncate([]byte(got)), truncate([]byte(tt.want)))
			}
		})
	}
}

// TestManagedNginxReloadIsVerified: nginx checks a configuration without
// binding its ports, so a reload can still fail inside nginx (here: a
// port another process holds). Apply notices that no new workers started
// and says so; the old configuration keeps serving.
func TestManagedNginxReloadIsVerified(t *testing.T) {
	n := newManaged(t)
	port := freePort(t)
	apply(t, n, managedConfig(t, n, port, upstream(t, "old")))
	waitBody(t, port, "old")

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	busy := taken.Addr().(*net.TCPAddr).Port
	// The same application, now also listening on the port another
	// process holds: nginx -t passes, the reload cannot bind.
	two := []byte(strings.Replace(string(managedConfig(t, n, port, upstream(t, "new"))), fmt.Sprintf("listen 127.0.0.1:%d", port),
		fmt.Sprintf("listen 127.0.0.1:%d;\n        listen 127.0.0.1:%d", port, busy), 1))
	ctx, cancel := context.WithTimeout(context.Background(), 4*waitTimeout)
	defer cancel()
	began := time.Now()
	err = n.Apply(ctx, two)
	// nginx's own words, naming the port, once it gave up binding it.
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("bind() to 127.0.0.1:%d failed", busy)) {
		t.Fatalf("Apply = %v, want a reload failure naming the port", err)
	}
	t.Logf("failed reload reported after %v: %v", time.Since(began).Round(time.Millisecond), err)
	for range 10 {
		if got, err := get(port); err != nil || got != "old" {
			t.Fatalf("after the failed reload nginx answered %q, %v; want the old configuration", got, err)
		}
	}
	if strings.Contains(readOr(t, filepath.Join(n.Dir(), "nginx.conf"), ""), strconv.Itoa(busy)) {
		t.Error("nginx.conf still holds the configuration nginx could not load")
	}

	// A crash now restarts nginx with the configuration that ran, not the
	// one it could not load.
	old := masterPid(n)
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	poll(t, "a new master is running", func() string {
		if pid := masterPid(n); pid == 0 || pid == old {
			return fmt.Sprintf("master pid %d", pid)
		}
		return ""
	})
	groupGone(t, old, "the killed master's workers are gone")
	waitBody(t, port, "old")
}
