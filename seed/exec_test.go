//go:build unix

package seed

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writeScript writes an executable shell script to a temporary directory.
func writeScript(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "seeds.sh")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestExecRegistered(t *testing.T) {
	if !slices.Contains(Providers(), "exec") {
		t.Errorf("Providers() = %v, missing exec", Providers())
	}
}

func TestExecSeeds(t *testing.T) {
	tests := []struct {
		name    string
		script  string
		args    []string
		want    []string
		wantErr string
		warned  []string
	}{
		{name: "lines", script: "echo 10.0.0.2:7000\necho 10.0.0.1\n", want: []string{"10.0.0.1:7946", "10.0.0.2:7000"}},
		{name: "JSON", script: `echo '["10.0.0.1:1", "[2001:db8::1]:2"]'` + "\n", want: []string{"10.0.0.1:1", "[2001:db8::1]:2"}},
		{name: "arguments passed", script: `for a in "$@"; do echo "$a"; done` + "\n", args: []string{"10.0.0.1:1", "a b:2"}, want: []string{"10.0.0.1:1"}, warned: []string{"line=2"}},
		{name: "nothing yet", script: "exit 0\n", want: nil},
		{
			name:   "junk skipped",
			script: "echo '# discovered'\necho 10.0.0.1:1\necho 'Warning: cache stale'\necho 10.0.0.2:99999\n",
			want:   []string{"10.0.0.1:1"}, warned: []string{"line=3", "line=4"},
		},
		{
			name:    "failing",
			script:  "echo 10.0.0.1:1\necho 'cannot reach the API' >&2\nexit 3\n",
			wantErr: `exit status 3; stderr: "cannot reach the API"`,
		},
		{name: "failing silently", script: "exit 1\n", wantErr: "exit status 1"},
		{name: "malformed JSON", script: `echo '["10.0.0.1:1"'` + "\n", wantErr: "JSON list"},
		{name: "too much output", script: "head -c 2000000 /dev/zero\n", wantErr: "output is larger than"},
		{name: "killed by a signal", script: "kill -9 $$\n", wantErr: "signal: killed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, rec := testEnv(t)
			command := append([]string{writeScript(t, tt.script)}, tt.args...)
			p := newTestProvider(t, "exec", map[string]any{"command": command}, env)
			got, err := seedsErr(p)
			wantErr(t, err, tt.wantErr)
			if !sameAddrs(got, tt.want) {
				t.Errorf("Seeds = %q, want %q", got, tt.want)
			}
			for _, line := range tt.warned {
				if rec.count("WARN", "seeds.sh", line) != 1 {
					t.Errorf("no warning naming the command and %s", line)
				}
			}
			if n := rec.count("WARN"); n != len(tt.warned) {
				t.Errorf("%d warnings, want %d", n, len(tt.warned))
			}
		})
	}
}

func TestExecStderrIsShortened(t *testing.T) {
	env, _ := testEnv(t)
	script := writeScript(t, "head -c 5000 /dev/zero | tr '\\0' x >&2\nexit 2\n")
	p := newTestProvider(t, "exec", map[string]any{"command": []string{script}}, env)
	_, err := seedsErr(p)
	wantErr(t, err, "exit status 2")
	if n := len(err.Error()); n > 400 {
		t.Errorf("error is %d bytes long, want stderr cut to about 200: %s", n, err)
	}
}

func TestExecJunkWarnedOncePerOutput(t *testing.T) {
	env, rec := testEnv(t)
	script := writeScript(t, "echo 'some junk'\necho 10.0.0.1:1\n")
	p := newTestProvider(t, "exec", map[string]any{"command": []string{script}}, env)
	for range 3 {
		seedsNow(t, p)
	}
	if n := rec.count("WARN", "some junk"); n != 1 {
		t.Errorf("%d warnings over 3 identical runs, want 1", n)
	}
}

// alive reports whether pid is a live process (not gone, not a zombie
// waiting for a parent that does not reap).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ESRCH)
	}
	// The state follows the parenthesised command name.
	if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}

func TestExecTimeoutKillsProcessGroup(t *testing.T) {
	env, _ := testEnv(t)
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	// A hung script whose child would outlive it if only the script were
	// killed.
	script := writeScript(t, "sleep 60 &\necho $! > "+pidFile+"\nwait\n")
	p := newTestProvider(t, "exec", map[string]any{"command": []string{script}, "timeout": "300ms"}, env)

	start := time.Now()
	_, err := seedsErr(p)
	wantErr(t, err, "timed out after 300ms")
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, errTimedOut) {
		t.Errorf("error %v does not wrap context.DeadlineExceeded and errTimedOut", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Seeds took %s with a 300ms timeout", d)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("the script did not record its child: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	eventually(t, 10*time.Second, func() string {
		if alive(pid) {
			return "the script's child (pid " + strconv.Itoa(pid) + ") is still running"
		}
		return ""
	})
}

func TestExecHonoursContext(t *testing.T) {
	env, _ := testEnv(t)
	script := writeScript(t, "exec sleep 60\n")
	p := newTestProvider(t, "exec", map[string]any{"command": []string{script}, "timeout": "1m"}, env)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := p.Seeds(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errTimedOut) {
		t.Errorf("error %v, want the caller's context error, not the provider's timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Seeds took %s after a 200ms context", d)
	}
}

func TestExecPublish(t *testing.T) {
	env, _ := testEnv(t)
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	record := writeScript(t, `echo "$*" >> `+log+"\n")
	p := newTestProvider(t, "exec", map[string]any{
		"command":          []string{writeScript(t, "echo 10.0.0.1:1\n")},
		"publish-command":  []string{record, "publish", "--cluster=a b"},
		"withdraw-command": []string{record, "withdraw"},
	}, env)
	pub, ok := p.(Publisher)
	if !ok {
		t.Fatal("exec with publish-command does not implement Publisher")
	}
	publish(t, pub, "10.0.0.9:7946")
	publish(t, pub, "10.0.0.9:7946")
	withdrawNow(t, pub, "10.0.0.9:7946")
	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	want := "publish --cluster=a b 10.0.0.9:7946\npublish --cluster=a b 10.0.0.9:7946\nwithdraw 10.0.0.9:7946\n"
	if string(data) != want {
		t.Errorf("commands ran as\n%s\nwant\n%s", data, want)
	}
	if got := seedsNow(t, p); !sameAddrs(got, []string{"10.0.0.1:1"}) {
		t.Errorf("Seeds = %q", got)
	}
}

func TestExecPublishFailure(t *testing.T) {
	env, _ := testEnv(t)
	p := newTestProvider(t, "exec", map[string]any{
		"command":         []string{writeScript(t, "exit 0\n")},
		"publish-command": []string{writeScript(t, "echo 'registry is read-only' >&2\nexit 4\n")},
	}, env).(Publisher)
	err := p.Publish(context.Background(), "10.0.0.9:7946")
	wantErr(t, err, `exit status 4; stderr: "registry is read-only"`)
	// Without a withdraw-command, Withdraw has nothing to do.
	if err := p.Withdraw(context.Background(), "10.0.0.9:7946"); err != nil {
		t.Errorf("Withdraw without withdraw-command: %v", err)
	}
}

func TestExecWithoutPublishCommandIsNoPublisher(t *testing.T) {
	env, _ := testEnv(t)
	p := newTestProvider(t, "exec", map[string]any{"command": []string{writeScript(t, "exit 0\n")}}, env)
	if _, ok := p.(Publisher); ok {
		t.Error("exec without publish-command claims to be a Publisher")
	}
}

func TestExecOptions(t *testing.T) {
	ok := writeScript(t, "exit 0\n")
	tests := []struct {
		name    string
		section any
		wantErr string
	}{
		{name: "no section", section: nil, wantErr: "command: required"},
		{name: "empty command", section: map[string]any{"command": []string{}}, wantErr: "command: required"},
		{name: "empty program", section: map[string]any{"command": []string{""}}, wantErr: "command[0]: empty program name"},
		{name: "unknown program", section: map[string]any{"command": []string{"/nonexistent/seeds"}}, wantErr: "command[0]:"},
		{name: "shell string is not argv", section: map[string]any{"command": "seeds.sh --list"}, wantErr: "cannot unmarshal"},
		{name: "unknown field", section: map[string]any{"command": []string{ok}, "shell": true}, wantErr: `unknown field "shell"`},
		{name: "bad timeout", section: map[string]any{"command": []string{ok}, "timeout": "soon"}, wantErr: `timeout: "soon" is not a duration`},
		{name: "withdraw without publish", section: map[string]any{"command": []string{ok}, "withdraw-command": []string{ok}}, wantErr: "withdraw-command: needs publish-command"},
		{name: "unknown publish program", section: map[string]any{"command": []string{ok}, "publish-command": []string{"/nonexistent/pub"}}, wantErr: "publish-command[0]:"},
		{name: "program from PATH", section: map[string]any{"command": []string{"sh", "-c", "echo 10.0.0.1:1"}}},
		{name: "everything", section: map[string]any{"command": []string{ok}, "timeout": "1s", "publish-command": []string{ok}, "withdraw-command": []string{ok}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, _ := testEnv(t)
			_, err := newFromSection("exec", tt.section, env)
			wantErr(t, err, tt.wantErr)
		})
	}
}

func TestFirstBytes(t *testing.T) {
	tests := []struct {
		name, in string
		n        int
		want     string
	}{
		{name: "short", in: "  oops\n", n: 10, want: "oops"},
		{name: "cut", in: "abcdefgh", n: 3, want: "abc…"},
		{name: "cut before a multi-byte rune", in: "ab€cd", n: 3, want: "ab…"},
		{name: "empty", in: "\n", n: 10, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := firstBytes([]byte(tt.in), tt.n); got != tt.want {
				t.Errorf("firstBytes(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
			}
		})
	}
}
