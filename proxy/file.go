// Package proxy runs and reconfigures the proxy processes scrimp drives:
// it writes configuration atomically, has the proxy check it, and only then
// makes it live. It is the one place that starts, signals and supervises
// proxy processes.
package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// WriteAtomic replaces path with data so that readers see the old or the
// new content, never a mix: it writes a temp file in the same directory,
// fsyncs it, renames it over path, and fsyncs the directory.
func WriteAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	name := tmp.Name()
	defer os.Remove(name) // no-op after a successful rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("chmod %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("fsync %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", name, err)
	}
	if err := os.Rename(name, path); err != nil {
		return fmt.Errorf("rename %s to %s: %w", name, path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync() // best effort: not every file system supports it
		d.Close()
	}
	return nil
}

// run executes argv with a timeout and returns its combined output. A
// timeout kills the whole process group, so a hung script's children do
// not linger.
func run(ctx context.Context, timeout time.Duration, argv ...string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, errors.New("empty command")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("timed out after %s", timeout)
	}
	if err != nil {
		return out.Bytes(), fmt.Errorf("%s: %w: %s", argv[0], err, firstLines(out.Bytes()))
	}
	return out.Bytes(), nil
}

// firstLines trims a proxy's output to what fits in one log line.
func firstLines(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) > 2000 {
		b = append(b[:2000:2000], "…"...)
	}
	return string(bytes.ReplaceAll(b, []byte("\n"), []byte(" | ")))
}
