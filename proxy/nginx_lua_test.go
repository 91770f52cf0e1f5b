package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/generator"
)

// requireLua skips when Debian's lua module for nginx is missing on a
// developer machine, and fails in CI, where `make test` installs it.
func requireLua(t *testing.T, n *ManagedNginx) {
	t.Helper()
	if !n.LuaBalancer() {
		if os.Getenv("CI") != "" {
			t.Fatal("nginx's lua module is required in CI (apt-get install -y libnginx-mod-http-lua libnginx-mod-http-ndk lua-resty-core)")
		}
		t.Skip("nginx's lua module is not installed (apt-get install -y libnginx-mod-http-lua libnginx-mod-http-ndk lua-resty-core)")
	}
}

// luaBackend is a loopback HTTP server that answers its name; requests to
// /hold wait until release is closed (or the client goes).
type luaBackend struct {
	name    string
	srv     *httptest.Server
	addr    netip.AddrPort
	weight  int
	release chan struct{}
}

func newLuaBackend(t *testing.T, name string) *luaBackend {
	t.Helper()
	b := &luaBackend{name: name, weight: 1, release: make(chan struct{})}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			select {
			case <-b.release:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, name)
	}))
	t.Cleanup(func() {
		b.unblock()
		b.srv.Close()
	})
	b.addr = netip.MustParseAddrPort(b.srv.Listener.Addr().String())
	return b
}

var releaseMu sync.Mutex

func (b *luaBackend) unblock() {
	releaseMu.Lock()
	defer releaseMu.Unlock()
	select {
	case <-b.release:
	default:
		close(b.release)
	}
}

// luaRender renders application "web" on port over backends with the
// nginx generator's options.
func luaRender(t *testing.T, n *ManagedNginx, options string, port int, balance catalog.Balance, hashKey string, backends ...*luaBackend) generator.Output {
	t.Helper()
	g, err := generator.New("nginx", []byte(options))
	if err != nil {
		t.Fatal(err)
	}
	var nodes []catalog.Node
	for _, b := range backends {
		nodes = append(nodes, catalog.Node{Name: b.name, Addr: b.addr.Addr(), Role: catalog.RoleBackend,
			Applications: []catalog.Application{{Name: "web", ListenPort: port, ApplicationPort: int(b.addr.Port()),
				Protocol: catalog.ProtocolHTTP, Balance: balance, HashKey: hashKey, Weight: b.weight}}})
	}
	out, err := g.Render(generator.Input{Snapshot: catalog.NewSnapshot(nodes), ListenAddr: "127.0.0.1", Standalone: true,
		StateDir: n.Dir(), NginxLua: n.LuaBalancer()})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Warnings) > 0 {
		t.Fatalf("warnings: %q", out.Warnings)
	}
	return out
}

func update(t *testing.T, n *ManagedNginx, out generator.Output) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
	defer cancel()
	if out.Runtime == nil {
		t.Fatal("the configuration has no runtime part: not lua mode")
	}
	if err := n.Update(ctx, out.Config, out.Runtime); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

// getPath fetches http://127.0.0.1:port/path with header X-Key: key (if
// not empty) on a new connection.
func getPath(port int, path, key string) (string, error) {
	req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", port, path), nil)
	if err != nil {
		return "", err
	}
	if key != "" {
		req.Header.Set("X-Key", key)
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	return string(body), nil
}

// spread sends n requests and counts the answers by backend; any failure
// fails t.
func spread(t *testing.T, port, n int) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for range n {
		body, err := getPath(port, "/", "")
		if err != nil {
			t.Fatalf("request failed: %v", err)
		}
		counts[body]++
	}
	return counts
}

// TestManagedNginxLuaUpdate: membership changes reach a running nginx
// through Update, without a reload; a join is served at once; nginx.conf
// follows, so a restarted nginx starts from the last membership.
func TestManagedNginxLuaUpdate(t *testing.T) {
	n := newManaged(t)
	requireLua(t, n)
	port := freePort(t)
	b := []*luaBackend{newLuaBackend(t, "b1"), newLuaBackend(t, "b2"), newLuaBackend(t, "b3"), newLuaBackend(t, "b4")}
	first := luaRender(t, n, "", port, "", "", b[:3]...)
	apply(t, n, first.Config)
	waitBody(t, port, "b1")
	if got := spread(t, port, 30); got["b1"] != 10 || got["b2"] != 10 || got["b3"] != 10 {
		// Two workers each go round the three: any 30 consecutive
		// requests give each backend 10, give or take the worker split.
		if got["b1"] < 6 || got["b2"] < 6 || got["b3"] < 6 {
			t.Errorf("round-robin over 3 backends: %v", got)
		}
	}

	// A join: the new backend enters the round at its front, so the first
	// request after Update returns is its (whichever worker takes it);
	// over the next rounds the four share evenly.
	joined := luaRender(t, n, "", port, "", "", b...)
	if joined.Runtime.Skeleton != first.Runtime.Skeleton {
		t.Fatal("a join changed the skeleton")
	}
	start := time.Now()
	update(t, n, joined)
	took := time.Since(start)
	body, err := getPath(port, "/", "")
	if err != nil {
		t.Fatalf("request after the join: %v", err)
	}
	if body != "b4" {
		t.Errorf("the first request after the join went to %s; want b4, the new backend", body)
	}
	t.Logf("join: Update took %s; first answer %s after Update was called", took.Round(time.Microsecond), time.Since(start).Round(time.Microsecond))
	if got := spread(t, port, 40); got["b1"] < 7 || got["b2"] < 7 || got["b3"] < 7 || got["b4"] < 7 || got["b4"] > 13 {
		t.Errorf("40 requests after the join: %v; want about 10 each", got)
	}

	// A leave and a weight change.
	b[1].weight = 3
	changed := luaRender(t, n, "", port, "", "", b[1], b[2], b[3])
	update(t, n, changed)
	got := spread(t, port, 50)
	if got["b1"] != 0 || got["b2"] < 2*got["b3"] || got["b2"] < 2*got["b4"] || got["b3"] == 0 || got["b4"] == 0 {
		t.Errorf("after b1 left and b2 got weight 3: %v; want no b1 and about 3:1:1", got)
	}
	if r := n.Reloads(); r != 0 {
		t.Errorf("%d reloads; want none", r)
	}
	if u := n.Updates(); u != 2 {
		t.Errorf("%d updates; want 2", u)
	}
	disk, err := os.ReadFile(n.conf)
	if err != nil || string(disk) != string(changed.Config) {
		t.Errorf("nginx.conf is not the last updated configuration (err %v)", err)
	}

	// A killed master is restarted from nginx.conf, over the socket it
	// left behind, and takes updates again.
	old := masterPid(n)
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	poll(t, "a new master serves the last membership", func() string {
		if pid := masterPid(n); pid == 0 || pid == old {
			return "not restarted yet"
		}
		got, err := getPath(port, "/", "")
		switch {
		case err != nil:
			return err.Error()
		case got == "b1":
			return "b1 answered: the restart used an older membership"
		}
		return ""
	})
	if got := spread(t, port, 20); got["b1"] != 0 || got["b2"] == 0 {
		t.Errorf("after the restart: %v", got)
	}
	update(t, n, luaRender(t, n, "", port, "", "", b[0]))
	if got := spread(t, port, 5); got["b1"] != 5 {
		t.Errorf("after an update of the restarted nginx: %v; want b1 only", got)
	}

	// A membership nginx cannot use is refused; the last one stays.
	for _, bad := range []string{`{"upstreams":[`, `{"upstreams":[{"name":"scrimp_web","servers":[{"addr":"nowhere","weight":1}]}]}`, `[]`} {
		rt := &generator.Runtime{Payload: []byte(bad)}
		if err := n.Update(context.Background(), []byte("unused"), rt); err == nil {
			t.Errorf("Update accepted the membership %s", bad)
		}
	}
	if got := spread(t, port, 5); got["b1"] != 5 {
		t.Errorf("after refused updates: %v; want b1 only", got)
	}

	// A backend of weight 1 joining one of weight 3 is still first, and
	// then takes its quarter.
	b[0].weight, b[1].weight = 3, 1
	update(t, n, luaRender(t, n, "", port, "", "", b[0], b[1]))
	if body, err := getPath(port, "/", ""); err != nil || body != "b2" {
		t.Errorf("the first request after b2 joined: %q, %v; want b2", body, err)
	}
	if got := spread(t, port, 40); got["b1"] < 26 || got["b2"] < 6 || got["b2"] > 14 {
		t.Errorf("40 requests over weights 3 and 1: %v; want about 30 and 10", got)
	}
}

// TestManagedNginxLuaHash: the lua balancer's consistent hash maps keys
// as nginx's own "hash … consistent" does, and a backend that joins takes
// keys only for itself, about 1/n of them.
func TestManagedNginxLuaHash(t *testing.T) {
	n := newManaged(t)
	requireLua(t, n)
	port := freePort(t)
	var b []*luaBackend
	for i := range 6 {
		b = append(b, newLuaBackend(t, "b"+strconv.Itoa(i+1)))
	}
	const keys = 300
	mapping := func() []string {
		t.Helper()
		m := make([]string, keys)
		for k := range keys {
			body, err := getPath(port, "/", "key-"+strconv.Itoa(k))
			if err != nil {
				t.Fatalf("key %d: %v", k, err)
			}
			m[k] = body
		}
		return m
	}
	reload := luaRender(t, n, `{"balancer":"reload"}`, port, catalog.BalanceHash, "header:X-Key", b[:5]...)
	apply(t, n, reload.Config)
	waitBody(t, port, mapping()[0])
	byNginx := mapping()

	lua := luaRender(t, n, "", port, catalog.BalanceHash, "header:X-Key", b[:5]...)
	apply(t, n, lua.Config)
	poll(t, "the lua configuration runs", func() string {
		if n.sup.current() == nil {
			return "not running"
		}
		if _, err := n.postMembership(context.Background(), lua.Runtime.Payload); err != nil {
			return err.Error()
		}
		return ""
	})
	byLua := mapping()
	differ := 0
	for k := range keys {
		if byLua[k] != byNginx[k] {
			differ++
		}
	}
	if differ > 0 {
		t.Errorf("%d of %d keys map to another backend than nginx's hash consistent", differ, keys)
	}

	update(t, n, luaRender(t, n, "", port, catalog.BalanceHash, "header:X-Key", b...))
	after := mapping()
	moved, wrong := 0, 0
	for k := range keys {
		if after[k] != byLua[k] {
			moved++
			if after[k] != "b6" {
				wrong++
			}
		}
	}
	t.Logf("a 6th backend joined: %d of %d keys moved (1/6 = %d)", moved, keys, keys/6)
	if wrong > 0 || moved == 0 || moved > keys/6+keys/10 {
		t.Errorf("%d of %d keys moved, %d of them not to the new backend; want about 1/6, all to it", moved, keys, wrong)
	}
	// Removing it again restores the mapping.
	update(t, n, luaRender(t, n, "", port, catalog.BalanceHash, "header:X-Key", b[:5]...))
	back := mapping()
	for k := range keys {
		if back[k] != byLua[k] {
			t.Fatalf("key %d maps to %s after the 6th backend left, %s before it joined", k, back[k], byLua[k])
		}
	}
}

// TestManagedNginxLuaLeastConn: least-conn sends new requests to the idle
// backend while the other holds requests; random (two choices, least
// loaded) does too, mostly.
func TestManagedNginxLuaLeastConn(t *testing.T) {
	n := newManaged(t)
	requireLua(t, n)
	port := freePort(t)
	for _, balance := range []catalog.Balance{catalog.BalanceLeastConn, catalog.BalanceRandom} {
		busy, idle := newLuaBackend(t, "busy"), newLuaBackend(t, "idle")
		out := luaRender(t, n, "", port, balance, "", busy, idle)
		apply(t, n, out.Config)
		update(t, n, out)
		waitBody(t, port, "idle")
		// Hold requests until a few sit on busy (each worker counts its
		// own); then every new request should go to idle.
		var held sync.WaitGroup
		heldOn := make(chan string, 64)
		for range 8 {
			held.Go(func() {
				body, err := getPath(port, "/hold", "")
				if err == nil {
					heldOn <- body
				}
			})
		}
		// idle answers /hold at once only after it is released; release
		// it now so that only busy holds.
		idle.unblock()
		poll(t, "every held request is on busy or answered by idle", func() string {
			held := luaInflight(t, n, "scrimp_web", busy.addr.String())
			if held+len(heldOn) != 8 {
				return fmt.Sprintf("%d held by busy, %d answered", held, len(heldOn))
			}
			return ""
		})
		got := spread(t, port, 40)
		busy.unblock()
		held.Wait()
		close(heldOn)
		t.Logf("%s: with requests held by busy, 40 new requests went %v", balance, got)
		if got["busy"] > 4 {
			t.Errorf("%s: %d of 40 new requests went to the busy backend; want nearly none", balance, got["busy"])
		}
	}
}

// luaInflight reads the requests in flight to addr of upstream from the
// balancer's state endpoint.
func luaInflight(t *testing.T, n *ManagedNginx, upstream, addr string) int {
	t.Helper()
	hc := &http.Client{Timeout: waitTimeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", n.luaSocket())
		},
		DisableKeepAlives: true,
	}}
	resp, err := hc.Get("http://scrimp" + generator.NginxLuaStatePath)
	if err != nil {
		t.Fatalf("balancer state: %v", err)
	}
	defer resp.Body.Close()
	var state struct {
		Upstreams map[string][]struct {
			Addr  string `json:"addr"`
			Conns int    `json:"conns"`
		} `json:"upstreams"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&state); err != nil {
		t.Fatalf("balancer state: %v", err)
	}
	for _, p := range state.Upstreams[upstream] {
		if p.Addr == addr {
			return p.Conns
		}
	}
	return 0
}

// TestManagedNginxLuaFailover: a backend that refuses connections costs
// no failed request; the balancer moves each try to the next backend and
// marks the dead one failed for its fail-timeout.
func TestManagedNginxLuaFailover(t *testing.T) {
	n := newManaged(t)
	requireLua(t, n)
	port := freePort(t)
	b := []*luaBackend{newLuaBackend(t, "b1"), newLuaBackend(t, "b2"), newLuaBackend(t, "b3")}
	out := luaRender(t, n, `{"fail-timeout": "30s"}`, port, "", "", b...)
	apply(t, n, out.Config)
	update(t, n, out)
	waitBody(t, port, "b1")
	b[1].srv.Close() // refuses connections from now on
	got := spread(t, port, 100)
	t.Logf("100 requests with b2 dead: %v", got)
	if got["b2"] != 0 || got["b1"] == 0 || got["b3"] == 0 {
		t.Errorf("answers %v; want b1 and b3", got)
	}
}
