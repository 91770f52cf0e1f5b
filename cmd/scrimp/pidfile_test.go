package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestWritePidFile: the pid file is written as a new regular file, an old
// one is replaced, and a symbolic link is refused without touching its
// target.
func TestWritePidFile(t *testing.T) {
	dir := t.TempDir()
	self := strconv.Itoa(os.Getpid()) + "\n"
	t.Run("new file", func(t *testing.T) {
		path := filepath.Join(dir, "new.pid")
		if err := writePidFile(path); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(path); err != nil || string(b) != self {
			t.Errorf("pid file holds %q, %v; want %q", b, err, self)
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("pid file mode %v, %v; want 0644", fi.Mode(), err)
		}
		removePidFile(path)
		if _, err := os.Lstat(path); !os.IsNotExist(err) {
			t.Errorf("removePidFile left the file: %v", err)
		}
	})
	t.Run("stale file replaced", func(t *testing.T) {
		path := filepath.Join(dir, "stale.pid")
		writeJSON(t, path, "12345\n")
		if err := writePidFile(path); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(path); string(b) != self {
			t.Errorf("pid file holds %q, want %q", b, self)
		}
	})
	t.Run("symbolic link refused", func(t *testing.T) {
		target := filepath.Join(dir, "precious")
		writeJSON(t, target, "do not overwrite\n")
		path := filepath.Join(dir, "link.pid")
		if err := os.Symlink(target, path); err != nil {
			t.Fatal(err)
		}
		err := writePidFile(path)
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "symbolic link") {
			t.Errorf("writePidFile error %v, want a refusal naming %s", err, path)
		}
		if b, _ := os.ReadFile(target); string(b) != "do not overwrite\n" {
			t.Errorf("the link's target now holds %q", b)
		}
		if _, err := readPidFile(path); err == nil || !strings.Contains(err.Error(), "symbolic link") {
			t.Errorf("readPidFile error %v, want a refusal to follow the link", err)
		}
	})
	t.Run("removePidFile leaves another process's file", func(t *testing.T) {
		path := filepath.Join(dir, "other.pid")
		writeJSON(t, path, "12345\n")
		removePidFile(path)
		if _, err := os.Stat(path); err != nil {
			t.Errorf("removePidFile removed a file naming another process: %v", err)
		}
	})
	t.Run("no entry left behind", func(t *testing.T) {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if strings.Contains(e.Name(), ".tmp") {
				t.Errorf("temporary file %s left behind", e.Name())
			}
		}
	})
}

// TestDrainChecksTheProcess: scrimp drain signals only a scrimp process.
// A pid file naming a `sleep` child is refused and the child lives on; a
// symbolic link as pid file is refused; this test binary's own pid passes
// the check, since it runs the same executable.
func TestDrainChecksTheProcess(t *testing.T) {
	sleepBin, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	dir := t.TempDir()
	sleep := exec.Command(sleepBin, "60")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- sleep.Wait() }()
	t.Cleanup(func() {
		sleep.Process.Kill()
		<-exited
	})
	pidFile := filepath.Join(dir, "sleep.pid")
	writeJSON(t, pidFile, strconv.Itoa(sleep.Process.Pid)+"\n")

	_, _, err = runScrimp(t, "drain", "--pid-file", pidFile, "--timeout", "2s")
	if err == nil || !strings.Contains(err.Error(), "not scrimp") || !strings.Contains(err.Error(), "sleep") {
		t.Errorf("drain error %v, want a refusal: the process runs sleep, not scrimp", err)
	}
	select {
	case err := <-exited:
		t.Fatalf("the sleep process ended (%v): scrimp drain signalled it", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := sleep.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the sleep process is gone: %v", err)
	}

	link := filepath.Join(dir, "link.pid")
	if err := os.Symlink(pidFile, link); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runScrimp(t, "drain", "--pid-file", link); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("drain through a link: error %v, want a refusal", err)
	}

	if err := checkScrimp(os.Getpid()); err != nil {
		t.Errorf("checkScrimp(own pid): %v", err)
	}
	if err := checkScrimp(sleep.Process.Pid); err == nil {
		t.Error("checkScrimp(sleep) passed")
	}
}
