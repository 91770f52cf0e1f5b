package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"time"
)

// External drives a proxy that scrimp does not run (a system nginx): it
// writes one file that the proxy's own configuration includes, runs a check
// command, and on success a reload command. Apply is not safe for
// concurrent use; the load balancer loop is its only caller.
type External struct {
	// Target is the file written, e.g. /etc/nginx/conf.d/scrimp.conf.
	Target string
	// Check and Reload are argv commands (no shell).
	Check, Reload []string
	// Timeout bounds each command.
	Timeout time.Duration
	// Logger receives what the proxy says.
	Logger *slog.Logger
}

// Apply writes config to Target, checks it, and reloads. When the check
// fails it puts the previous content back (or removes a file that did not
// exist), so the proxy's next reload still finds a good configuration, and
// returns an error carrying the check's own output.
func (e *External) Apply(ctx context.Context, config []byte) error {
	prev, err := os.ReadFile(e.Target)
	existed := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("proxy: read %s: %w", e.Target, err)
	}
	if existed && bytes.Equal(prev, config) {
		return nil
	}
	if err := WriteAtomic(e.Target, config, 0o644); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	if _, err := run(ctx, e.Timeout, e.Check...); err != nil {
		var restore error
		if existed {
			restore = WriteAtomic(e.Target, prev, 0o644)
		} else {
			restore = os.Remove(e.Target)
		}
		if restore != nil {
			return fmt.Errorf("proxy: check rejected the new configuration: %w; and restoring the previous one failed: %v", err, restore)
		}
		return fmt.Errorf("proxy: check rejected the new configuration, previous one kept: %w", err)
	}
	if _, err := run(ctx, e.Timeout, e.Reload...); err != nil {
		return fmt.Errorf("proxy: reload: %w", err)
	}
	return nil
}

// Close does nothing: the proxy is not scrimp's to stop.
func (e *External) Close() error { return nil }
