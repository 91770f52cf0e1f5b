// Package s3test runs a real S3-protocol server for tests: versitygw on
// loopback, storing in a temporary directory, with fixed credentials that
// the AWS SDK is pointed at (and nothing else it could read, so that no
// test can reach AWS).
package s3test

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/scrimplb/scrimp/internal/proctest"
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

// Start runs versitygw until the test ends and returns its endpoint
// (http://127.0.0.1:PORT). It calls Env. It skips the test when versitygw
// is missing (outside CI).
func Start(t *testing.T) string {
	t.Helper()
	Env(t)
	bin := proctest.Need(t, "versitygw", "github.com/versity/versitygw/cmd/versitygw@"+Version)
	var addr string
	proctest.Start(t, "versitygw", func() (*exec.Cmd, []string) {
		addr = proctest.FreeAddr(t)
		return exec.Command(bin, "--access", AccessKey, "--secret", SecretKey, "--port", addr, "--quiet", "posix", t.TempDir()), []string{addr}
	})
	return "http://" + addr
}
