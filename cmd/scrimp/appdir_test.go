package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/internal/loopback"
	"github.com/scrimplb/scrimp/internal/proctest"
	"github.com/scrimplb/scrimp/node"
)

// badAppDir writes a backend configuration whose application directory
// holds a good file, a bad one and a FIFO, and returns the configuration
// file and the bad file's path.
func badAppDir(t *testing.T) (file, bad string) {
	t.Helper()
	dir := t.TempDir()
	apps := filepath.Join(dir, "apps")
	if err := os.Mkdir(apps, 0o755); err != nil {
		t.Fatal(err)
	}
	writeJSON(t, filepath.Join(apps, "good.json"), `{"name": "good", "listen-port": 80, "application-port": 8080, "protocol": "http"}`)
	bad = filepath.Join(apps, "bad.json")
	writeJSON(t, bad, `{"name": "bad", "listen-port": 0, "application-port": 8081, "protocol": "http"}`)
	if err := syscall.Mkfifo(filepath.Join(apps, "fifo.json"), 0o644); err != nil {
		t.Fatal(err)
	}
	port, err := loopback.FreePort("127.0.34.1")
	if err != nil {
		t.Fatal(err)
	}
	file = filepath.Join(dir, "backend.json")
	writeJSON(t, file, fmt.Sprintf(`{
  "role": "backend", "node-name": "backend-v",
  "cluster": {"bind-addr": "127.0.34.1", "bind-port": %d, "profile": "local"},
  "seed": {"provider": "static", "static": {"addresses": []}},
  "backend": {"application-config-dir": %q}
}`, port, apps))
	return file, bad
}

// TestValidateApplicationDir: `scrimp validate` reads the application
// directory as a backend does, reports the bad file with its field and
// reason and fails; the FIFO beside it neither blocks it nor counts as a
// problem.
func TestValidateApplicationDir(t *testing.T) {
	file, bad := badAppDir(t)
	done := make(chan struct{})
	var (
		stdout, stderr string
		err            error
	)
	go func() {
		defer close(done)
		stdout, stderr, err = runScrimp(t, "validate", "--config", file)
	}()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("validate did not return within 15s")
	}
	if !errors.Is(err, errQuiet) {
		t.Fatalf("validate returned %v, want errQuiet (problems printed)\nstderr:\n%s", err, stderr)
	}
	if stdout != "" {
		t.Errorf("stdout = %q, want nothing", stdout)
	}
	want := bad + ": listen-port: 0 is not a port in 1-65535\n"
	if stderr != want {
		t.Errorf("stderr = %q, want %q", stderr, want)
	}
}

// TestStartWithBadApplicationFile: a backend whose directory holds a bad
// file starts (it once refused to), logs the bad file with its field and
// reason, and advertises the good application.
func TestStartWithBadApplicationFile(t *testing.T) {
	file, bad := badAppDir(t)
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	var logs proctest.Buffer
	n, err := node.StartLocal(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("Start refused a backend with one bad application file: %v", err)
	}
	t.Cleanup(func() { n.Close() })
	for _, want := range []string{"application file: invalid", "file=" + bad, "field=listen-port", "0 is not a port"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, &logs)
		}
	}
	var got []string
	for _, m := range n.Snapshot().Nodes {
		for _, a := range m.Applications {
			got = append(got, m.Name+"/"+a.Name)
		}
	}
	if strings.Join(got, " ") != "backend-v/good" {
		t.Errorf("the cluster sees %v, want [backend-v/good]", got)
	}
}
