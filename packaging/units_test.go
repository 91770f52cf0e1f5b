package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/config"
)

// unitRoot makes a root directory for systemd-analyze --root: the host's
// unit directory (for the targets the units name), a real scrimp binary
// at /usr/bin/scrimp and /bin/kill, which ExecStart and ExecReload name.
func unitRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"usr/lib/systemd", "usr/bin", "bin", "etc/systemd/system"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	run(t, "cp", "-a", "/usr/lib/systemd/system", filepath.Join(root, "usr/lib/systemd/"))
	run(t, "cp", "/bin/kill", filepath.Join(root, "bin/kill"))
	cmd := exec.Command("go", "build", "-o", filepath.Join(root, "usr/bin/scrimp"), "./cmd/scrimp")
	cmd.Dir = repoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return root
}

// verify runs systemd-analyze verify on a unit in root and returns what
// it printed; it prints nothing for a unit without problems (unknown keys
// and bad values are only warnings, exit status 0).
func verify(t *testing.T, root, unit string) (string, error) {
	t.Helper()
	out, err := exec.Command("systemd-analyze", "verify", "--root="+root,
		filepath.Join(root, "usr/lib/systemd/system", unit)).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func installUnit(t *testing.T, root, src, name string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "usr/lib/systemd/system", name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestUnitsVerify: systemd-analyze verify finds nothing to say about the
// units (nor the load balancer's external-mode drop-in), and their
// exposure (systemd-analyze security) stays low.
func TestUnitsVerify(t *testing.T) {
	requireTool(t, "systemd-analyze", "systemd")
	root := unitRoot(t)
	units := []string{"scrimp-lb.service", "scrimp-backend.service"}
	for _, u := range units {
		installUnit(t, root, filepath.Join(repoRoot(t), "systemd", u), u)
	}
	for _, u := range units {
		t.Run(u, func(t *testing.T) {
			out, err := verify(t, root, u)
			if err != nil || out != "" {
				t.Fatalf("systemd-analyze verify %s: %v\n%s", u, err, out)
			}
			t.Logf("systemd-analyze verify %s: no output, exit 0", u)
			sec, err := exec.Command("systemd-analyze", "security", "--offline=yes", "--root="+root,
				"--threshold=20", u).CombinedOutput()
			lines := strings.Split(strings.TrimSpace(string(sec)), "\n")
			last := lines[len(lines)-1]
			if err != nil {
				t.Fatalf("systemd-analyze security %s: exposure above 2.0: %v\n%s", u, err, last)
			}
			t.Log(last)
		})
	}
	t.Run("external-mode drop-in", func(t *testing.T) {
		dir := filepath.Join(root, "etc/systemd/system/scrimp-lb.service.d")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(repoRoot(t), "systemd/scrimp-lb-external.conf"))
		if err != nil {
			t.Fatal(err)
		}
		conf := filepath.Join(dir, "external.conf")
		if err := os.WriteFile(conf, b, 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		if out, err := verify(t, root, "scrimp-lb.service"); err != nil || out != "" {
			t.Fatalf("systemd-analyze verify with the drop-in: %v\n%s", err, out)
		}
		// The check sees drop-ins: a bad key in one is reported.
		if err := os.WriteFile(conf, append(b, "NoSuchSetting=1\n"...), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, _ := verify(t, root, "scrimp-lb.service"); !strings.Contains(out, "NoSuchSetting") {
			t.Fatalf("a bad key in the drop-in went unreported: %q", out)
		}
	})
	t.Run("a broken unit is reported", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(repoRoot(t), "systemd/scrimp-lb.service"))
		if err != nil {
			t.Fatal(err)
		}
		bad := strings.Replace(string(b), "ProtectSystem=strict", "ProtectSystem=strict\nProtectHome=perhaps", 1)
		if err := os.WriteFile(filepath.Join(root, "usr/lib/systemd/system/scrimp-broken.service"), []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, _ := verify(t, root, "scrimp-broken.service"); !strings.Contains(out, "perhaps") {
			t.Fatalf("systemd-analyze verify did not report a bad value: %q", out)
		}
	})
}

// TestUnitSettings checks the settings the service relies on, and that a
// backend's stop timeout leaves room for its default drain.
func TestUnitSettings(t *testing.T) {
	common := map[string]string{
		"Type": "notify", "Restart": "on-failure", "User": "scrimp", "Group": "scrimp",
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
		"ExecReload": "/bin/kill -HUP $MAINPID", "StateDirectory": "scrimp", "RuntimeDirectory": "scrimp",
		"RuntimeDirectoryPreserve": "yes", "ReadWritePaths": "-/etc/scrimp", "KillMode": "mixed",
		"LimitNOFILE": "65536", "WantedBy": "multi-user.target",
	}
	cfg := config.DefaultConfig()
	be := config.DefaultBackend()
	drain := be.DrainTimeout.Duration + be.DrainGrace.Duration + cfg.Cluster.LeaveTimeout.Duration
	cases := []struct {
		unit, config string
		caps         string
		minStop      time.Duration
	}{
		{"scrimp-lb.service", "/etc/scrimp/lb.json", "CAP_NET_BIND_SERVICE", 30 * time.Second},
		{"scrimp-backend.service", "/etc/scrimp/backend.json", "", drain + 10*time.Second},
	}
	for _, c := range cases {
		t.Run(c.unit, func(t *testing.T) {
			m := unitSettings(t, filepath.Join(repoRoot(t), "systemd", c.unit))
			want := map[string]string{
				"ExecStart":             "/usr/bin/scrimp --config " + c.config,
				"CapabilityBoundingSet": c.caps, "AmbientCapabilities": c.caps,
			}
			for k, v := range common {
				want[k] = v
			}
			for k, v := range want {
				if got := m[k]; len(got) != 1 || got[0] != v {
					t.Errorf("%s=%q, want %q", k, got, v)
				}
			}
			stop, err := time.ParseDuration(strings.Join(m["TimeoutStopSec"], ""))
			if err != nil {
				t.Fatalf("TimeoutStopSec: %v", err)
			}
			if stop < c.minStop {
				t.Errorf("TimeoutStopSec=%s, want at least %s", stop, c.minStop)
			}
		})
	}
}
