package proxy

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/user"
	"strings"
	"testing"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/generator"
)

// hapRootConfig renders a standalone configuration for h as node.buildLB
// does: generator options raw, Input.AsRoot from h; application "web" on
// port, served by backend.
func hapRootConfig(t *testing.T, h *ManagedHAProxy, raw string, backend string, port int) []byte {
	t.Helper()
	g, err := generator.New("haproxy", []byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(backend)
	apps := []catalog.Application{{Name: "web", ListenPort: port, ApplicationPort: int(ap.Port()), Protocol: catalog.ProtocolHTTP}}
	snap := catalog.NewSnapshot([]catalog.Node{{Name: "backend-1", Addr: ap.Addr(), Role: catalog.RoleBackend, Applications: apps}})
	out, err := g.Render(generator.Input{Snapshot: snap, ListenAddr: "127.0.0.1", Standalone: true, StateDir: h.Dir(), AsRoot: h.AsRoot()})
	if err != nil {
		t.Fatal(err)
	}
	return out.Config
}

// procIDs returns the real, effective, saved and filesystem ids of pid's
// "Uid:" or "Gid:" line in /proc/PID/status.
func procIDs(t *testing.T, pid int, key string) []string {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), key+":"); ok {
			return strings.Fields(rest)
		}
	}
	t.Fatalf("no %s line in /proc/%d/status", key, pid)
	return nil
}

// TestManagedHAProxyWorkersNotRoot: started as root, as CI runs it, HAProxy
// serves traffic from workers whose every uid and gid is the configured
// unprivileged account's, before and after a reload, while the master
// keeps root to reload. Skipped when not root: HAProxy cannot switch users
// then, and its workers run as the user already.
func TestManagedHAProxyWorkersNotRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: checks that HAProxy started as root runs its workers as another user")
	}
	u, err := user.Lookup("haproxy")
	if err != nil {
		t.Skipf("no haproxy user (the haproxy package creates it): %v", err)
	}
	g, err := user.LookupGroup("haproxy")
	if err != nil {
		t.Skipf("no haproxy group: %v", err)
	}
	h, logs := newManagedHAProxy(t)
	if !h.AsRoot() {
		t.Fatal("AsRoot() = false under root")
	}
	// The state directory as private as a hardened one: the workers need
	// nothing in it once started.
	if err := os.Chmod(h.Dir(), 0o700); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	for i, body := range []string{"one", "two"} {
		up := upstream(t, body)
		conf := hapRootConfig(t, h, "", up.Listener.Addr().String(), port)
		if !strings.Contains(string(conf), "\n    user haproxy\n    group haproxy\n") {
			t.Fatalf("the configuration does not switch users:\n%s", conf)
		}
		applyHAProxy(t, h, conf)
		waitBody(t, port, body)
		master := hapMasterPid(h)
		if ids := procIDs(t, master, "Uid"); ids[1] != "0" {
			t.Errorf("master uids %v, want root (it reloads)", ids)
		}
		workers := hapShowProc(t, h).workers
		if len(workers) == 0 {
			t.Fatal("no worker")
		}
		newest := workers[len(workers)-1]
		for _, w := range workers {
			for _, key := range []string{"Uid", "Gid"} {
				want := u.Uid
				if key == "Gid" {
					want = g.Gid
				}
				for _, id := range procIDs(t, w, key) {
					if id != want {
						t.Errorf("apply %d: worker %d has %s line %v, want every id %s (the haproxy account), never 0", i, w, key, procIDs(t, w, key), want)
						break
					}
				}
			}
		}
		t.Logf("apply %d: master %d uid %v; newest worker %d uid %v gid %v", i, master, procIDs(t, master, "Uid"), newest, procIDs(t, newest, "Uid"), procIDs(t, newest, "Gid"))
	}
	if strings.Contains(logs.String(), "names no user") {
		t.Error("warned about a configuration without a user")
	}
}

// TestManagedHAProxyWorkerUserChecked: as root, a configuration whose
// workers would switch to an account that does not exist, or to root, is
// refused before HAProxy starts, naming the account.
func TestManagedHAProxyWorkerUserChecked(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the check applies to HAProxy started as root")
	}
	tests := []struct {
		name, options, want string
	}{
		{"missing user", `{"user": "scrimp-no-such-user"}`, `user "scrimp-no-such-user"`},
		{"missing group", `{"group": "scrimp-no-such-group"}`, `group "scrimp-no-such-group"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := newManagedHAProxy(t)
			conf := hapRootConfig(t, h, tt.options, "127.0.0.1:1", freePort(t))
			err := h.Apply(context.Background(), conf)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Apply error %v, want one naming %s", err, tt.want)
			}
			if hapMasterPid(h) != 0 {
				t.Error("haproxy started anyway")
			}
		})
	}
	t.Run("an alias of root", func(t *testing.T) {
		h, _ := newManagedHAProxy(t)
		// The generator refuses "root" itself; a hand-made
		// configuration naming uid 0's account is refused here.
		conf := []byte("global\n    user root\n    group haproxy\n")
		if err := h.Apply(context.Background(), conf); err == nil || !strings.Contains(err.Error(), "uid 0") {
			t.Fatalf("Apply error %v, want a refusal of root", err)
		}
	})
}

func TestHAProxyGlobalAccount(t *testing.T) {
	tests := []struct {
		name, config, user, group string
	}{
		{"none", "global\n    maxconn 1\n", "", ""},
		{"both", "# c\nglobal\n    user haproxy\n    group nogroup\n    maxconn 1\n", "haproxy", "nogroup"},
		{"outside global", "global\n    maxconn 1\n\nbackend b\n    user x\n", "", ""},
		{"commented", "global\n    # user haproxy\n", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if u, g := haproxyGlobalAccount([]byte(tt.config)); u != tt.user || g != tt.group {
				t.Errorf("= %q, %q; want %q, %q", u, g, tt.user, tt.group)
			}
		})
	}
}
