package proxy

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
)

// checkFile writes config to a temp file in dir (next to the proxy's own
// configuration, so relative paths resolve the same), runs test on it and
// removes it. Nothing the proxy runs is touched.
func checkFile(dir, base string, config []byte, test func(file string) error) error {
	f, err := os.CreateTemp(dir, "."+base+".check-*")
	if err != nil {
		return fmt.Errorf("proxy: check: %w", err)
	}
	name := f.Name()
	defer os.Remove(name)
	_, werr := f.Write(config)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("proxy: check: write %s: %w", name, werr)
	}
	return test(filepath.Clean(name))
}

// checkedSum remembers the configuration whose check passed last, so that
// Apply of those very bytes need not check them again.
type checkedSum struct {
	sum [32]byte
	ok  bool
}

func (c *checkedSum) set(config []byte) { c.sum, c.ok = sha256.Sum256(config), true }

// take reports whether config is the one checked last, and forgets it:
// a check vouches for one Apply.
func (c *checkedSum) take(config []byte) bool {
	hit := c.ok && c.sum == sha256.Sum256(config)
	c.ok = false
	return hit
}

// Check has nginx test config (`nginx -t` on a temp file in the state
// directory) without applying it: the load balancer uses it to find which
// applications a refused configuration cannot have. It does not bind
// listeners, so a port another process holds passes here and fails only
// in Apply. An Apply of the same bytes right after a passing Check skips
// its own test. Like Apply, not safe for concurrent use.
func (n *ManagedNginx) Check(ctx context.Context, config []byte) error {
	if n.sup.isClosed() {
		return n.sup.errClosed()
	}
	err := checkFile(n.dir, "nginx.conf", config, func(file string) error {
		if _, err := run(ctx, n.timeout, n.binary, "-t", "-q", "-p", n.dir+"/", "-c", file, "-e", "stderr"); err != nil {
			return fmt.Errorf("proxy: nginx rejected the configuration: %w", err)
		}
		return nil
	})
	if err == nil {
		n.checked.set(config)
	}
	return err
}

// Check has HAProxy test config (`haproxy -c` on a temp file in the state
// directory) without applying it; see ManagedNginx.Check. It does not
// bind listeners either. Like Apply, not safe for concurrent use.
func (h *ManagedHAProxy) Check(ctx context.Context, config []byte) error {
	if h.sup.isClosed() {
		return h.sup.errClosed()
	}
	if h.asRoot {
		if err := h.checkWorkerUser(config); err != nil {
			return err
		}
	}
	err := checkFile(h.dir, "haproxy.cfg", config, func(file string) error { return h.check(ctx, file) })
	if err == nil {
		h.checked.set(config)
	}
	return err
}
