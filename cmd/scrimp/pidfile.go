package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// maxPidFileSize bounds what is read of a pid file: a pid and a newline.
const maxPidFileSize = 64

// writePidFile writes this process's id to path. It never follows a
// symbolic link (one at path is refused, so a link planted in a shared
// directory cannot make scrimp overwrite what it points to) and replaces
// the file atomically: the id goes to a new file created exclusively in
// the same directory, which is renamed over path. A rename replaces a
// link itself, so one made after the check is no way around it either.
func writePidFile(path string) error {
	if fi, err := os.Lstat(path); err == nil {
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			return fmt.Errorf("pid file %s: is a symbolic link; refusing to follow it (remove it or choose another path)", path)
		case !fi.Mode().IsRegular():
			return fmt.Errorf("pid file %s: exists and is not a regular file (%s)", path, fi.Mode().Type())
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("pid file %s: %w", path, err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("pid file %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("pid file %s: %w", path, err)
	}
	return nil
}

// removePidFile removes path if it still names this process, so that
// scrimp never removes a file someone else put there since.
func removePidFile(path string) {
	if pid, err := readPidFile(path); err == nil && pid == os.Getpid() {
		os.Remove(path)
	}
}

// readPidFile reads the process id in path without following a symbolic
// link, and at most maxPidFileSize bytes of it.
func readPidFile(path string) (int, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, syscall.ELOOP) {
		return 0, fmt.Errorf("pid file %s: is a symbolic link; refusing to follow it", path)
	}
	if err != nil {
		return 0, fmt.Errorf("pid file: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("pid file %s: not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxPidFileSize+1))
	if err != nil {
		return 0, fmt.Errorf("pid file %s: %w", path, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if len(b) > maxPidFileSize || err != nil || pid <= 1 {
		return 0, fmt.Errorf("%s: no process id in it", path)
	}
	return pid, nil
}

// checkScrimp returns nil if process pid runs scrimp: its executable is
// this very file, or (after an upgrade replaced the binary) one named
// scrimp. The kernel's /proc/PID/exe says so, not anything the process
// can set about itself, so a stale pid file whose id now belongs to
// another program cannot make scrimp drain signal that program.
func checkScrimp(pid int) error {
	link := fmt.Sprintf("/proc/%d/exe", pid)
	target, err := os.Readlink(link)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("process %d is not running", pid)
	case err != nil:
		return fmt.Errorf("cannot tell whether process %d is scrimp: %w", pid, err)
	}
	if self, err := os.Executable(); err == nil {
		running, err1 := os.Stat(link)
		want, err2 := os.Stat(self)
		if err1 == nil && err2 == nil && os.SameFile(running, want) {
			return nil
		}
	}
	if filepath.Base(strings.TrimSuffix(target, " (deleted)")) == "scrimp" {
		return nil
	}
	return fmt.Errorf("process %d runs %s, not scrimp: not signalling it (is the pid file stale?)", pid, target)
}
