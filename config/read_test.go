package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/config"
)

// TestConfigLoadBounded: Load reads at most config.MaxFileSize bytes of
// whatever the path names, and says which file was too large; a pipe
// holding a valid configuration still loads.
func TestConfigLoadBounded(t *testing.T) {
	dir := t.TempDir()
	const valid = `{"role": "lb", "node-name": "lb-1", "seed": {"provider": "static"}, "lb": {}}`
	huge := filepath.Join(dir, "huge.json")
	f, err := os.Create(huge)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 30); err != nil { // sparse: nothing written
		t.Fatal(err)
	}
	f.Close()
	// Valid JSON padded with spaces to exactly the limit loads.
	atLimit := filepath.Join(dir, "at-limit.json")
	if err := os.WriteFile(atLimit, []byte(valid+strings.Repeat(" ", config.MaxFileSize-len(valid))), 0o600); err != nil {
		t.Fatal(err)
	}
	// A stream without end: only the limit stops the read.
	endless := filepath.Join(dir, "endless.json")
	if err := syscall.Mkfifo(endless, 0o600); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go func() {
		w, err := os.OpenFile(endless, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		defer w.Close()
		chunk := []byte(strings.Repeat(" ", 64<<10))
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := w.Write(chunk); err != nil {
				return // the reader gave up: what the test wants
			}
		}
	}()
	pipe := filepath.Join(dir, "pipe.json")
	if err := syscall.Mkfifo(pipe, 0o600); err != nil {
		t.Fatal(err)
	}
	go func() {
		w, err := os.OpenFile(pipe, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		w.WriteString(valid)
		w.Close()
	}()

	tests := []struct {
		name, path string
		wantErr    string // empty: loads
	}{
		{"huge regular file", huge, huge + ": larger than the limit of 1048576 bytes (1 MiB) for a configuration file"},
		{"endless pipe", endless, endless + ": larger than the limit of 1048576 bytes (1 MiB) for a configuration file"},
		{"exactly the limit", atLimit, ""},
		{"pipe with a configuration", pipe, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				_, err := config.Load(tt.path)
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(15 * time.Second):
				t.Fatal("Load did not return within 15s")
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Load: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Load error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
