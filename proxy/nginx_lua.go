package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/scrimplb/scrimp/generator"
)

// LuaBalancer reports whether this nginx can run the nginx generator's
// lua balancer: the modules of generator.DebianLuaModules load and
// lua-resty-core's ngx.balancer is found (`nginx -t` of a small
// configuration, once; later calls return the first answer). The node
// passes it to the generator as Input.NginxLua.
func (n *ManagedNginx) LuaBalancer() bool {
	n.luaOnce.Do(func() {
		err := n.probeLua()
		n.luaOK = err == nil
		if err != nil {
			n.log.Info("nginx's lua balancer is not available; membership changes reload nginx (apt-get install -y libnginx-mod-http-lua libnginx-mod-http-ndk lua-resty-core)", "err", err)
		}
	})
	return n.luaOK
}

// probeLua has nginx check a configuration that loads the lua modules
// and the balancer API.
func (n *ManagedNginx) probeLua() error {
	for _, m := range generator.DebianLuaModules {
		if _, err := os.Stat(m); err != nil {
			return err
		}
	}
	f, err := os.CreateTemp(n.dir, "lua-probe-*.conf")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	var b strings.Builder
	for _, m := range generator.DebianLuaModules {
		fmt.Fprintf(&b, "load_module %s;\n", m)
	}
	fmt.Fprintf(&b, "pid %s;\nerror_log stderr;\nevents {}\nhttp {\n", filepath.Join(n.dir, "lua-probe.pid"))
	for _, t := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&b, "    %s_temp_path %s;\n", t, filepath.Join(n.dir, "tmp", t))
	}
	b.WriteString("    lua_shared_dict scrimp_probe 64k;\n    init_by_lua_block { require(\"ngx.balancer\") }\n}\n")
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	_, err = run(context.Background(), n.timeout, n.binary, "-t", "-q", "-p", n.dir+"/", "-c", f.Name(), "-e", "stderr")
	return err
}

// luaSocket is the unix socket of a lua-mode nginx's update endpoint.
func (n *ManagedNginx) luaSocket() string { return filepath.Join(n.dir, generator.NginxLuaSocket) }

// removeStaleSocket removes the update endpoint's socket before nginx
// starts: a master that was killed leaves it behind, and nginx cannot
// bind over it.
func (n *ManagedNginx) removeStaleSocket() {
	if err := os.Remove(n.luaSocket()); err != nil && !errors.Is(err, os.ErrNotExist) {
		n.log.Warn("removing the lua balancer's socket before nginx starts", "err", err)
	}
}

// Update makes config live without a reload: it posts rt.Payload, the
// membership of every upstream, to the running nginx's lua balancer
// (generator.NginxLuaMembershipPath on generator.NginxLuaSocket), which
// checks it and swaps it in for every worker at once; then it writes
// config as nginx.conf, without a reload, so that a restart starts from
// the same membership. A request that arrives after Update returns is
// balanced over the new membership.
//
// Update must only be given a configuration whose skeleton is the
// running one's; nginx refuses a payload it cannot use, and the caller
// reloads then. Like Apply it is not safe for concurrent use.
func (n *ManagedNginx) Update(ctx context.Context, config []byte, rt *generator.Runtime) error {
	switch {
	case n.sup.isClosed():
		return n.sup.errClosed()
	case n.sup.current() == nil:
		return errors.New("proxy: nginx update: nginx is not running")
	case rt == nil || rt.Payload == nil:
		return errors.New("proxy: nginx update: the configuration has no lua membership")
	}
	start := time.Now()
	version, err := n.postMembership(ctx, rt.Payload)
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if !bytes.Equal(n.current, config) {
		if err := WriteAtomic(n.conf, config, 0o644); err != nil {
			return fmt.Errorf("proxy: nginx update: the membership changed but nginx.conf was not written: %w", err)
		}
		n.current = config
	}
	n.updates++
	n.log.Debug("nginx updated without a reload", "version", version, "bytes", len(rt.Payload), "took", time.Since(start).Round(time.Microsecond))
	return nil
}

// postMembership posts payload to the update endpoint and returns the
// membership version nginx stored.
func (n *ManagedNginx) postMembership(ctx context.Context, payload []byte) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, n.timeout)
	defer cancel()
	sock := n.luaSocket()
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://scrimp"+generator.NginxLuaMembershipPath, bytes.NewReader(payload))
	if err != nil {
		return 0, fmt.Errorf("proxy: nginx update: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("proxy: nginx update: post to %s: %w", sock, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return 0, fmt.Errorf("proxy: nginx update: reading the answer of %s: %w", sock, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("proxy: nginx update: %s answered %s: %s", sock, resp.Status, bytes.TrimSpace(body))
	}
	var ans struct {
		Version int64 `json:"version"`
	}
	if err := json.Unmarshal(body, &ans); err != nil || ans.Version < 1 {
		return 0, fmt.Errorf("proxy: nginx update: %s answered %q, not a membership version", sock, bytes.TrimSpace(body))
	}
	return ans.Version, nil
}

// Updates returns how many Updates succeeded.
func (n *ManagedNginx) Updates() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.updates
}
