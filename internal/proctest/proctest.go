// Package proctest runs a helper server (versitygw, Pebble,
// pebble-challtestsrv) as a child process of a test: it finds the binary,
// starts the child on loopback, waits until it listens, retries when
// another process took the picked port first, and kills the child when
// the test ends, showing its output if the test failed.
package proctest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Binary finds name in PATH or in $(go env GOPATH)/bin, where
// `go install` (Makefile deps-go) puts it.
func Binary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err != nil {
		return "", fmt.Errorf("%s is not in PATH, and go env GOPATH failed: %w", name, err)
	}
	for _, dir := range filepath.SplitList(string(bytes.TrimSpace(out))) {
		p := filepath.Join(dir, "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is not in PATH nor in GOPATH/bin", name)
}

// Need returns Binary(name). When it is missing it skips the test outside
// CI, telling how to install it (pkg@version for go install), and fails
// it in CI, where a skip would hide that the test never ran.
func Need(t testing.TB, name, pkg string) string {
	t.Helper()
	bin, err := Binary(name)
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("%v; install it with: go install %s", err, pkg)
		}
		t.Fatal(err)
	}
	return bin
}

// FreeAddr returns a TCP address on 127.0.0.1 that nothing listens on (as
// far as anyone can tell: another process may take it before the caller
// binds it, which Start's retries cover).
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Proc is a child started by Start.
type Proc struct {
	// Out is the child's stdout and stderr so far.
	Out *Buffer

	cmd    *exec.Cmd
	exited chan struct{}
	once   sync.Once
}

// Stop kills the child and waits until it is reaped (safe twice).
func (p *Proc) Stop() {
	p.once.Do(func() {
		p.cmd.Process.Kill()
		<-p.exited
	})
}

// Start runs a child until the test ends. build returns the command and
// the addresses it will listen on (TCP), picking fresh ones at each call;
// Start waits up to 30 seconds for each address to accept connections.
// Up to three attempts are made, as a picked port may be taken before the
// child binds it. name names the child in messages.
func Start(t testing.TB, name string, build func() (cmd *exec.Cmd, listen []string)) *Proc {
	t.Helper()
	for attempt := 1; ; attempt++ {
		cmd, listen := build()
		p := &Proc{Out: &Buffer{}, cmd: cmd, exited: make(chan struct{})}
		cmd.Stdout, cmd.Stderr = p.Out, p.Out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { cmd.Wait(); close(p.exited) }()
		up := true
		for _, addr := range listen {
			if up = WaitListening(addr, p.exited, 30*time.Second); !up {
				break
			}
		}
		if up {
			t.Cleanup(func() {
				p.Stop()
				if t.Failed() {
					t.Logf("%s output:\n%s", name, p.Out)
				}
			})
			return p
		}
		p.Stop()
		if attempt == 3 {
			t.Fatalf("%s did not start on %s:\n%s", name, strings.Join(listen, " and "), p.Out)
		}
	}
}

// WaitListening polls addr until it accepts connections (true), the
// process whose exit closes exited ends, or within passes (false).
func WaitListening(addr string, exited <-chan struct{}, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// Buffer collects a child's output; it is safe for concurrent use (the
// child's stdout and stderr are copied by separate goroutines).
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
