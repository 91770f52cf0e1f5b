// Package s3test runs a real S3-protocol server for tests: versitygw on
// loopback, storing in a temporary directory, with fixed credentials that
// the AWS SDK is pointed at (and nothing else it could read, so that no
// test can reach AWS).
package s3test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Version is the pinned versitygw release (Makefile deps-go installs it).
const Version = "v1.8.0"

// Credentials the server accepts.
const (
	AccessKey = "AKIDSCRIMPTEST"
	SecretKey = "scrimp-test-secret"
)

// Env gives the AWS SDK the fixed credentials and hides the user's AWS
// configuration for the rest of the test.
func Env(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID":                      AccessKey,
		"AWS_SECRET_ACCESS_KEY":                  SecretKey,
		"AWS_SESSION_TOKEN":                      "",
		"AWS_EC2_METADATA_DISABLED":              "true",
		"AWS_CONFIG_FILE":                        filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE":            filepath.Join(dir, "credentials"),
		"AWS_PROFILE":                            "",
		"AWS_DEFAULT_PROFILE":                    "",
		"AWS_REGION":                             "",
		"AWS_DEFAULT_REGION":                     "",
		"AWS_ENDPOINT_URL":                       "",
		"AWS_ENDPOINT_URL_S3":                    "",
		"AWS_ROLE_ARN":                           "",
		"AWS_WEB_IDENTITY_TOKEN_FILE":            "",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI":     "",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "",
	} {
		t.Setenv(k, v)
	}
}

func binary() (string, error) {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err != nil {
		return "", fmt.Errorf("versitygw is not in PATH, and go env GOPATH failed: %w", err)
	}
	for _, dir := range filepath.SplitList(string(bytes.TrimSpace(out))) {
		p := filepath.Join(dir, "bin", "versitygw")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("versitygw is not in PATH nor in GOPATH/bin")
}

// Start runs versitygw until the test ends and returns its endpoint
// (http://127.0.0.1:PORT). It calls Env. It skips the test when versitygw
// is missing (outside CI).
func Start(t *testing.T) string {
	t.Helper()
	Env(t)
	bin, err := binary()
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("%v; install it with: go install github.com/versity/versitygw/cmd/versitygw@%s", err, Version)
		}
		t.Fatal(err)
	}
	for attempt := 1; ; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		out := &syncBuffer{}
		cmd := exec.Command(bin, "--access", AccessKey, "--secret", SecretKey, "--port", addr, "--quiet", "posix", t.TempDir())
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		stop := func() { cmd.Process.Kill(); <-exited }
		if waitListening(addr, exited, 30*time.Second) {
			t.Cleanup(func() {
				stop()
				if t.Failed() {
					t.Logf("versitygw output:\n%s", out)
				}
			})
			return "http://" + addr
		}
		stop()
		if attempt == 3 {
			t.Fatalf("versitygw did not start on %s:\n%s", addr, out)
		}
	}
}

func waitListening(addr string, exited <-chan struct{}, within time.Duration) bool {
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

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
