package node

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/admin"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/internal/loopback"
)

// adminCtx bounds one admin request of a test.
func adminCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// backendState returns the state /v1/apps gives node's instance of app,
// "" when it is not listed.
func backendState(apps admin.AppsResponse, app, node string) string {
	for _, a := range apps.Applications {
		if a.Name != app {
			continue
		}
		for _, b := range a.Backends {
			if b.Node == node {
				return b.State
			}
		}
	}
	return ""
}

// The admin API of a load balancer running managed nginx with two real
// backends: members lists all three alive with the backends' applications,
// status shows the last pass applied by a running nginx, render returns
// the configuration nginx runs, and a drain through a backend's own socket
// shows in the load balancer's apps as draining (and the backend takes no
// more requests) until it is cancelled.
func TestAdminAPI(t *testing.T) {
	tc := newTestCluster(t, "127.0.71", "local")
	tc.lb.Version = "test-1"
	b1, b2 := tc.addBackend(1), tc.addBackend(2)
	tc.waitServed(10*time.Second, "backend-1", "backend-2")
	lbc := admin.NewClient(tc.lb.AdminSocket())

	t.Run("members", func(t *testing.T) {
		var res admin.MembersResponse
		waitFor(t, "three alive members with the backends' applications", 10*time.Second, func() bool {
			var err error
			if res, err = lbc.Members(adminCtx(t)); err != nil {
				t.Fatal(err)
			}
			alive := 0
			for _, m := range res.Members {
				if m.State == "alive" && (m.Role == "lb" || len(m.Applications) == 1 && m.Applications[0] == admin.InstanceState{Name: "web", State: "up"}) {
					alive++
				}
			}
			return alive == 3
		})
		if res.Self != "lb" {
			t.Errorf("self = %q, want lb", res.Self)
		}
		for _, m := range res.Members {
			if m.Self != (m.Name == "lb") || m.LastSeen == nil || m.Addr == "" {
				t.Errorf("member %+v: want self only for lb, a last-seen time and an address", m)
			}
			if m.Name == "backend-1" && m.Addr != b1.node.GossipAddr() {
				t.Errorf("backend-1 at %s, want %s", m.Addr, b1.node.GossipAddr())
			}
		}
	})

	t.Run("status", func(t *testing.T) {
		st, err := lbc.Status(adminCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if st.Name != "lb" || st.Role != "lb" || st.Version != "test-1" || st.Members != 3 || st.GossipAddr != tc.seed || st.Started.IsZero() {
			t.Errorf("status %+v: want lb, role lb, version test-1, 3 members, gossip %s, a start time", st, tc.seed)
		}
		if st.Seeds.Provider != "static" || st.Backend != nil || st.LB == nil {
			t.Fatalf("status %+v: want the static seed provider and an lb part only", st)
		}
		l := st.LB
		if l.Proxy != "nginx" || l.Mode != "managed" || l.ProxyPID <= 0 || l.Reloads < 1 {
			t.Errorf("lb status %+v: want managed nginx with a pid and reloads", l)
		}
		if len(l.History) == 0 || l.History[len(l.History)-1].Result != "applied" || l.Last == nil || l.Last.Error != "" {
			t.Errorf("lb history %+v, last %+v: want the last change applied", l.History, l.Last)
		}
		if len(st.KeyFingerprints) != 0 {
			t.Errorf("key fingerprints %v on plaintext gossip", st.KeyFingerprints)
		}
		bst, err := admin.NewClient(b1.node.AdminSocket()).Status(adminCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if bst.Role != "backend" || bst.Backend == nil || bst.Backend.Draining || len(bst.Backend.Applications) != 1 || bst.Seeds.Last == nil || len(bst.Seeds.Last.Addresses) != 1 {
			t.Errorf("backend status %+v: want a backend not draining with one application, its seed answer with the lb", bst)
		}
	})

	t.Run("render", func(t *testing.T) {
		text, err := lbc.Render(adminCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		running, err := tc.lb.RenderedConfig()
		if err != nil {
			t.Fatal(err)
		}
		if string(text) != string(running) || !strings.Contains(string(text), "# backend-1\n") || !strings.Contains(string(text), "upstream") {
			t.Errorf("render gave %d bytes, not the nginx configuration routing to backend-1 (%d bytes)", len(text), len(running))
		}
		_, err = admin.NewClient(b1.node.AdminSocket()).Render(adminCtx(t))
		if err == nil || !strings.Contains(err.Error(), "HTTP 409") {
			t.Errorf("render on a backend: %v, want a 409", err)
		}
	})

	t.Run("drain", func(t *testing.T) {
		bc := admin.NewClient(b1.node.AdminSocket())
		if _, err := lbc.Drain(adminCtx(t), admin.DrainRequest{}); err == nil || !strings.Contains(err.Error(), "load balancer") {
			t.Errorf("drain on a load balancer: %v, want an error saying so", err)
		}
		res, err := bc.Drain(adminCtx(t), admin.DrainRequest{Wait: true})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Draining || !res.Acknowledged || len(res.Pending) != 0 {
			t.Fatalf("drain: %+v, want draining and acknowledged", res)
		}
		apps, err := lbc.Apps(adminCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if s1, s2 := backendState(apps, "web", "backend-1"), backendState(apps, "web", "backend-2"); s1 != "draining" || s2 != "up" {
			t.Fatalf("apps after the drain: backend-1 %q, backend-2 %q; want draining and up (%+v)", s1, s2, apps)
		}
		if a := apps.Applications[0]; a.Protocol != "http" || a.ListenPort != tc.listenPort {
			t.Errorf("app %+v: want http on port %d", a, tc.listenPort)
		}
		// Acknowledged: the configuration nginx runs leaves it out, and
		// once nginx's old workers are done every request goes to
		// backend-2, while backend-1 still runs.
		if tc.routed("backend-1") {
			t.Fatal("acknowledged, but the running configuration routes to backend-1")
		}
		waitFor(t, "no request to backend-1", 10*time.Second, func() bool {
			counts, errs := tc.burst(10)
			return counts["backend-1"] == 0 && counts["backend-2"] == 10 && len(errs) == 0
		})
		st, err := bc.Status(adminCtx(t))
		if err != nil || st.Backend == nil || !st.Backend.Draining || len(st.Backend.Unacknowledged) != 0 {
			t.Errorf("backend status after the drain: %+v, %v; want draining, nothing unacknowledged", st.Backend, err)
		}
		res, err = bc.Drain(adminCtx(t), admin.DrainRequest{Cancel: true})
		if err != nil || res.Draining || res.Acknowledged {
			t.Fatalf("cancel: %+v, %v", res, err)
		}
		tc.waitServed(10*time.Second, "backend-1")
		apps, err = lbc.Apps(adminCtx(t))
		if err != nil || backendState(apps, "web", "backend-1") != "up" {
			t.Errorf("apps after the cancel: %+v, %v; want backend-1 up", apps, err)
		}
	})

	t.Run("gone member", func(t *testing.T) {
		b2.stop()
		waitFor(t, "backend-2 shown as left", 10*time.Second, func() bool {
			res, err := lbc.Members(adminCtx(t))
			if err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(res.Members, func(m admin.Member) bool { return m.Name == "backend-2" })
			return i >= 0 && res.Members[i].State == "left" && res.Members[i].Since != nil
		})
	})
}

// A socket nobody serves: the error names the socket and why.
func TestAdminMissingSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	_, err := admin.NewClient(sock).Status(adminCtx(t))
	if err == nil || !strings.Contains(err.Error(), sock) || !strings.Contains(err.Error(), "no such socket") {
		t.Fatalf("err = %v, want it to name %s and say there is no such socket", err, sock)
	}
}

// The admin API on TCP answers only requests with the token: none or a
// wrong one get 401, the right one 200. A token file others may read, or
// admin-addr without a token file, stops the node from starting.
func TestAdminTCPToken(t *testing.T) {
	const ip = "127.0.72.1"
	dir := t.TempDir()
	token := "0123456789abcdef0123456789abcdef"
	tokenFile := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	openFile := filepath.Join(dir, "open.token")
	if err := os.WriteFile(openFile, []byte(token+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(openFile, 0o644)
	newConfig := func(tokenFile string) *config.Config {
		t.Helper()
		cfg, err := LocalConfig("tcp-admin", ip, nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Backend = &config.Backend{}
		cfg.Role = "backend"
		cfg.Seed.Sections["static"] = []byte(`{"addresses": []}`)
		port, err := loopback.FreePort(ip)
		if err != nil {
			t.Fatal(err)
		}
		cfg.AdminAddr, cfg.AdminTokenFile = fmt.Sprintf("%s:%d", ip, port), tokenFile
		return cfg
	}
	for _, bad := range []struct{ name, file, want string }{
		{"token file readable by others", openFile, "chmod 600"},
		{"no token file", "", "admin-token-file"},
	} {
		t.Run(bad.name, func(t *testing.T) {
			cfg := newConfig(bad.file)
			n, err := Start(cfg, testLogger(t))
			if err == nil {
				n.Close()
				t.Fatalf("started with %s", bad.name)
			}
			if !strings.Contains(err.Error(), bad.want) || strings.Contains(err.Error(), token) {
				t.Fatalf("err = %v, want it to say %q and not show the token", err, bad.want)
			}
		})
	}

	n := runTestNode(t, newConfig(tokenFile), testLogger(t))
	url := "http://" + n.AdminAddr() + "/v1/status"
	cases := []struct {
		name, header string
		want         int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"wrong token", "Bearer 0123456789abcdef0123456789abcdeX", http.StatusUnauthorized},
		{"token without Bearer", token, http.StatusUnauthorized},
		{"right token", "Bearer " + token, http.StatusOK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			if c.header != "" {
				req.Header.Set("Authorization", c.header)
			}
			res, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != c.want {
				t.Fatalf("status %d, want %d", res.StatusCode, c.want)
			}
		})
	}
	st, err := admin.NewTCPClient(n.AdminAddr(), []byte(token)).Status(adminCtx(t))
	if err != nil || st.Name != "tcp-admin" {
		t.Fatalf("status through the TCP client: %+v, %v", st, err)
	}
}
