package packaging

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakeInstall runs `make install` into a DESTDIR and checks the
// binary, the units (ExecStart pointing at the installed binary) and the
// examples land where the PREFIX conventions say.
func TestMakeInstall(t *testing.T) {
	requireTool(t, "make", "make")
	dest := t.TempDir()
	run(t, "make", "-C", repoRoot(t), "install", "DESTDIR="+dest, "PREFIX=/opt/scrimp")
	for _, f := range []string{
		"opt/scrimp/bin/scrimp",
		"opt/scrimp/lib/systemd/system/scrimp-lb.service",
		"opt/scrimp/lib/systemd/system/scrimp-backend.service",
		"opt/scrimp/share/doc/scrimp/README.md",
		"opt/scrimp/share/doc/scrimp/examples/scrimp-lb-external.conf",
		"etc/scrimp/examples/lb.json",
		"etc/scrimp/examples/backend.json",
		"etc/scrimp/examples/templates/nginx.tmpl",
	} {
		if _, err := os.Stat(filepath.Join(dest, f)); err != nil {
			t.Errorf("make install: %v", err)
		}
	}
	if out := run(t, filepath.Join(dest, "opt/scrimp/bin/scrimp"), "version"); !strings.HasPrefix(out, "scrimp ") {
		t.Errorf("installed scrimp version: %q", out)
	}
	m := unitSettings(t, filepath.Join(dest, "opt/scrimp/lib/systemd/system/scrimp-lb.service"))
	if got := strings.Join(m["ExecStart"], ""); got != "/opt/scrimp/bin/scrimp --config /etc/scrimp/lb.json" {
		t.Errorf("installed unit: ExecStart=%s", got)
	}
	run(t, "make", "-C", repoRoot(t), "uninstall", "DESTDIR="+dest, "PREFIX=/opt/scrimp")
	for _, f := range []string{"opt/scrimp/bin/scrimp", "opt/scrimp/lib/systemd/system/scrimp-lb.service", "etc/scrimp/examples"} {
		if _, err := os.Stat(filepath.Join(dest, f)); err == nil {
			t.Errorf("make uninstall left %s", f)
		}
	}
}
