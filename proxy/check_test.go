package proxy

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"
)

// TestCheck: Check has the real proxy test a configuration without
// applying it: a broken one is refused with the proxy's message, a good
// one passes, neither reloads or changes what runs, no temp file is left;
// a port another process holds passes (the check does not bind).
func TestCheck(t *testing.T) {
	type managed interface {
		Check(ctx context.Context, config []byte) error
		Apply(ctx context.Context, config []byte) error
		Reloads() int
		Dir() string
	}
	for _, tc := range []struct {
		name   string
		start  func(t *testing.T) (managed, func(port int, body string) []byte)
		broken string
	}{
		{"nginx", func(t *testing.T) (managed, func(int, string) []byte) {
			n := newManaged(t)
			return n, func(port int, body string) []byte { return managedConfig(t, n, port, upstream(t, body)) }
		}, "bogus_directive on;"},
		{"haproxy", func(t *testing.T) (managed, func(int, string) []byte) {
			h, _ := newManagedHAProxy(t)
			return h, func(port int, body string) []byte { return hapConfig(t, h, upstream(t, body), port) }
		}, "bogus_keyword on"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, config := tc.start(t)
			ctx := context.Background()
			port := freePort(t)
			if err := p.Apply(ctx, config(port, "old")); err != nil {
				t.Fatal(err)
			}
			waitBody(t, port, "old")
			reloads := p.Reloads()

			broken := append(config(port, "new"), "\n"+tc.broken+"\n"...)
			err := p.Check(ctx, broken)
			if err == nil || !strings.Contains(err.Error(), "bogus_") {
				t.Errorf("Check of a broken configuration = %v, want the proxy's message naming it", err)
			}
			if err := p.Check(ctx, config(port, "new")); err != nil {
				t.Errorf("Check of a good configuration: %v", err)
			}
			taken, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer taken.Close()
			if err := p.Check(ctx, config(taken.Addr().(*net.TCPAddr).Port, "new")); err != nil {
				t.Errorf("Check of a configuration with a port another process holds: %v; the check does not bind", err)
			}
			if got := p.Reloads(); got != reloads {
				t.Errorf("%d reloads during checks", got-reloads)
			}
			if got, err := get(port); err != nil || got != "old" {
				t.Errorf("after the checks the proxy answered %q, %v; want the running configuration", got, err)
			}
			entries, err := os.ReadDir(p.Dir())
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				if strings.Contains(e.Name(), ".check-") {
					t.Errorf("temp file %s left in the state directory", e.Name())
				}
			}

			// Checked, then applied (without a second check).
			good := config(port, "new")
			if err := p.Check(ctx, good); err != nil {
				t.Fatal(err)
			}
			if err := p.Apply(ctx, good); err != nil {
				t.Fatal(err)
			}
			waitBody(t, port, "new")
		})
	}
}
