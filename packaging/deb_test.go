package packaging

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The paths the package installs or postinst makes.
var (
	installedFiles = []string{
		"/usr/bin/scrimp",
		"/lib/systemd/system/scrimp-lb.service",
		"/lib/systemd/system/scrimp-backend.service",
		"/usr/share/doc/scrimp/README.md",
		"/usr/share/doc/scrimp/examples/scrimp-lb-external.conf",
	}
	exampleConfigs = []string{"lb.json", "backend.json", "lb-external.json", "lb-haproxy.json", "lb-haproxy-external.json"}
	// left is everything that must be gone after a purge.
	left = []string{"/etc/scrimp", "/var/lib/scrimp", "/usr/share/doc/scrimp"}
)

// dpkg runs dpkg, waiting while another process (an apt-get of another
// test run) holds its lock.
func dpkg(t *testing.T, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		out, err := exec.Command("dpkg", args...).CombinedOutput()
		if err == nil {
			return string(out)
		}
		if !strings.Contains(string(out), "lock") || time.Now().After(deadline) {
			t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		time.Sleep(2 * time.Second)
	}
}

// installed reports the package's dpkg status ("" when dpkg knows nothing).
func installed() string {
	out, _ := exec.Command("dpkg-query", "-W", "-f=${db:Status-Abbrev}", "scrimp").Output()
	return strings.TrimSpace(string(out))
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func hasUser(name string) bool { return exec.Command("getent", "passwd", name).Run() == nil }

func hasGroup(name string) bool { return exec.Command("getent", "group", name).Run() == nil }

// TestDebianPackage builds the package with `make deb`, installs it with
// dpkg -i, checks what it put in place (binary, units, examples, user,
// state directory), validates the examples with the installed binary as
// the service user, runs a load balancer and a backend from it the way
// the units do, and removes and purges it, checking nothing is left. It
// needs root and leaves the machine as it found it.
func TestDebianPackage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("installs a package: needs root")
	}
	requireTool(t, "dpkg", "dpkg")
	requireTool(t, "setpriv", "util-linux")
	if s := installed(); s != "" || hasUser("scrimp") || hasGroup("scrimp") || exists("/etc/scrimp") || exists("/var/lib/scrimp") {
		msg := fmt.Sprintf("scrimp is already on this machine (dpkg status %q, or the scrimp user or /etc/scrimp or /var/lib/scrimp exists): not touching it", s)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	root := repoRoot(t)
	version := strings.TrimSpace(run(t, filepath.Join(root, "packaging/version.sh")))
	dist := t.TempDir()
	run(t, "make", "-C", root, "deb", "DEB_DIR="+dist, "VERSION="+version)
	debs, _ := filepath.Glob(filepath.Join(dist, "scrimp_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %v, want one scrimp_*.deb", debs)
	}
	deb := debs[0]
	if got := strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, "Version")); got != version {
		t.Fatalf("package version %q, want %q", got, version)
	}
	conffiles := run(t, "dpkg-deb", "-I", deb, "conffiles")
	for _, e := range exampleConfigs {
		if !strings.Contains(conffiles, "/etc/scrimp/examples/"+e+"\n") {
			t.Errorf("/etc/scrimp/examples/%s is not a conffile:\n%s", e, conffiles)
		}
	}

	t.Cleanup(func() {
		// Whatever happened, purge: leave the machine as it was.
		os.Remove("/etc/scrimp/keyring.json")
		os.Remove("/etc/scrimp/lb.json")
		os.Remove("/etc/scrimp/backend.json")
		if installed() != "" {
			if out, err := exec.Command("dpkg", "-P", "scrimp").CombinedOutput(); err != nil {
				t.Errorf("cleanup: dpkg -P scrimp: %v\n%s", err, out)
			}
		}
	})
	t.Logf("dpkg -i %s", filepath.Base(deb))
	dpkg(t, "-i", deb)
	if s := installed(); s != "ii" {
		t.Fatalf("after dpkg -i: status %q, want ii", s)
	}

	// What the package put in place.
	for _, f := range installedFiles {
		if !exists(f) {
			t.Errorf("%s is missing", f)
		}
	}
	for _, e := range exampleConfigs {
		if !exists("/etc/scrimp/examples/" + e) {
			t.Errorf("/etc/scrimp/examples/%s is missing", e)
		}
	}
	for _, u := range []string{"scrimp-lb.service", "scrimp-backend.service"} {
		want, _ := os.ReadFile(filepath.Join(root, "systemd", u))
		got, err := os.ReadFile("/lib/systemd/system/" + u)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("/lib/systemd/system/%s differs from systemd/%s (%v)", u, u, err)
		}
	}
	if out := run(t, "/usr/bin/scrimp", "version"); !strings.Contains(out, version) {
		t.Errorf("scrimp version: %q, want %q in it", out, version)
	}
	passwd := strings.Split(strings.TrimSpace(run(t, "getent", "passwd", "scrimp")), ":")
	if len(passwd) != 7 || passwd[5] != "/var/lib/scrimp" || passwd[6] != "/usr/sbin/nologin" {
		t.Errorf("scrimp user: %q, want home /var/lib/scrimp and shell /usr/sbin/nologin", passwd)
	}
	checkDir(t, "/var/lib/scrimp", "scrimp", "scrimp", 0o700)
	checkDir(t, "/etc/scrimp", "root", "scrimp", 0o770|fs.ModeSticky)
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		for _, u := range []string{"scrimp-lb.service", "scrimp-backend.service"} {
			out, err := exec.Command("systemd-analyze", "verify", "/lib/systemd/system/"+u).CombinedOutput()
			if err != nil || len(bytes.TrimSpace(out)) > 0 {
				t.Errorf("systemd-analyze verify /lib/systemd/system/%s: %v\n%s", u, err, out)
			}
		}
	}

	// The examples validate with the installed binary, run as the service
	// user, once the keyring they name exists (owned by scrimp, 0600).
	key := strings.TrimSpace(run(t, "/usr/bin/scrimp", "keys", "generate"))
	writeFile(t, "/etc/scrimp/keyring.json", fmt.Sprintf("[%q]\n", key), 0o600, true)
	for _, e := range exampleConfigs {
		out, err := asScrimp("/usr/bin/scrimp", "validate", "--config", "/etc/scrimp/examples/"+e).CombinedOutput()
		if err != nil {
			t.Errorf("scrimp validate --config /etc/scrimp/examples/%s as scrimp: %v\n%s", e, err, out)
		}
	}
	// And it is a real check: a broken file fails, naming the field.
	writeFile(t, "/etc/scrimp/lb.json", `{"role": "lb", "seed": {"provider": "static"}, "no-such-field": 1}`, 0o644, false)
	out, err := asScrimp("/usr/bin/scrimp", "validate", "--config", "/etc/scrimp/lb.json").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no-such-field") {
		t.Errorf("validate of a broken file: %v, %q; want a failure naming no-such-field", err, out)
	}

	t.Run("runs as the service user", func(t *testing.T) { runAsService(t) })

	// A reinstall runs postinst again and keeps an edited example.
	edited := "/etc/scrimp/examples/backend.json"
	orig, _ := os.ReadFile(edited)
	mine := bytes.Replace(orig, []byte(`"app-1"`), []byte(`"app-mine"`), 1)
	writeFile(t, edited, string(mine), 0o644, false)
	dpkg(t, "--force-confold", "-i", deb)
	if got, _ := os.ReadFile(edited); !bytes.Equal(got, mine) {
		t.Errorf("reinstall overwrote the edited %s", edited)
	}

	// dpkg -r: program and units gone; configuration and user kept.
	dpkg(t, "-r", "scrimp")
	for _, f := range installedFiles {
		if exists(f) {
			t.Errorf("after dpkg -r: %s is still there", f)
		}
	}
	if !exists("/etc/scrimp/lb.json") || !exists(edited) || !hasUser("scrimp") {
		t.Errorf("dpkg -r removed configuration or the user (only a purge should)")
	}

	// dpkg -P: everything gone.
	os.Remove("/etc/scrimp/keyring.json")
	os.Remove("/etc/scrimp/lb.json")
	os.Remove("/etc/scrimp/backend.json")
	dpkg(t, "-P", "scrimp")
	for _, f := range left {
		if exists(f) {
			t.Errorf("after dpkg -P: %s is still there", f)
		}
	}
	if hasUser("scrimp") || hasGroup("scrimp") {
		t.Errorf("after dpkg -P: the scrimp user or group is still there")
	}
	if out, _ := exec.Command("dpkg-statoverride", "--list", "/etc/scrimp").Output(); len(out) > 0 {
		t.Errorf("after dpkg -P: dpkg-statoverride still lists %s", out)
	}
	if s := installed(); s != "" {
		t.Errorf("after dpkg -P: dpkg status %q, want none", s)
	}
}

func checkDir(t *testing.T, path, owner, group string, mode fs.FileMode) {
	t.Helper()
	out := strings.TrimSpace(run(t, "stat", "-c", "%U %G", path))
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode() & (fs.ModePerm | fs.ModeSticky); out != owner+" "+group || !fi.IsDir() || got != mode {
		t.Errorf("%s: %s %s, want a directory %s %s %s", path, out, fi.Mode(), owner, group, mode)
	}
}

// writeFile writes a file as root, owned by scrimp when scrimpOwned.
func writeFile(t *testing.T, path, content string, mode fs.FileMode, scrimpOwned bool) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	if scrimpOwned {
		run(t, "chown", "scrimp:scrimp", path)
	}
}

// asScrimp runs a command the way the units run scrimp: as the scrimp
// user, no new privileges, only CAP_NET_BIND_SERVICE (ambient, so that a
// managed proxy started by scrimp has it too), the units' PATH.
func asScrimp(name string, args ...string) *exec.Cmd {
	cmd := exec.Command("setpriv", append([]string{"--reuid=scrimp", "--regid=scrimp", "--init-groups",
		"--no-new-privs", "--inh-caps=+net_bind_service", "--ambient-caps=+net_bind_service",
		"--bounding-set=-all,+net_bind_service", name}, args...)...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	return cmd
}
