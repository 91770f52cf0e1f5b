package main

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/keyring"
	"github.com/scrimplb/scrimp/node"
	"github.com/scrimplb/scrimp/proxy"
)

// goodConfigs are the shipped example configurations, with the role
// `scrimp validate` must report for each.
var goodConfigs = []struct {
	file string
	role string
}{
	{"../../config.example.json", "lb"},
	{"../../examples/backend.json", "backend"},
	{"../../examples/lb-external.json", "lb"},
	{"../../examples/lb-haproxy.json", "lb"},
	{"../../examples/lb-haproxy-external.json", "lb"},
}

// badConfigs are the files in testdata/bad, each with every line
// `scrimp validate` must print for it, in order and nothing else. Each line
// is written without its "FILE: " prefix and is matched as a prefix of the
// printed line, so a plugin's list of known names may grow.
var badConfigs = []struct {
	file string
	want []string
}{
	{"unknown-fields.json", []string{
		"backend.applications[0].colour: unknown field",
		`cluster.bindPort: unknown field (did you mean "bind-port"?)`,
		"colour: unknown field",
	}},
	{"bad-duration.json", []string{
		`lb.command-timeout: expected a duration string such as "5s", got number 30`,
		`lb.quiet-period: "soon" is not a duration (write e.g. "200ms", "5s")`,
	}},
	{"ports.json", []string{
		"backend.applications[0].application-port: 70000 is not a port in 1-65535",
		"cluster.advertise-port: 70000 is not a port in 1-65535",
		"cluster.bind-port: 0 is not a port in 1-65535",
	}},
	{"wrong-type.json", []string{
		`cluster.bind-port: expected an integer, got string "80"`,
		`lb.reload-command: expected a list, got string "nginx -s reload"`,
	}},
	{"missing-role.json", []string{
		`role: required: "lb" or "backend"`,
	}},
	{"role-proxy.json", []string{
		`role: unknown role "proxy" (want "lb" or "backend")`,
	}},
	{"lb-on-backend.json", []string{
		`lb: only allowed when role is "lb", and role is "backend"`,
	}},
	{"backend-on-lb.json", []string{
		`backend: only allowed when role is "backend", and role is "lb"`,
	}},
	{"missing-lb.json", []string{
		`lb: required when role is "lb"`,
	}},
	{"applications.json", []string{
		`backend.applications[0].domains[0]: "bad domain;": label "bad domain;": only a-z, 0-9 and '-' are allowed`,
		"backend.applications[0].listen-port: 0 is not a port in 1-65535",
		`backend.applications[0].name: "Web": only a-z, 0-9, '-' and '_' are allowed, starting with a letter or digit`,
		`backend.applications[0].protocol: "ftp" is not one of [http https grpc tcp udp]`,
		`backend.applications[1].name: "web app": only a-z, 0-9, '-' and '_' are allowed, starting with a letter or digit`,
		`backend.applications[2].name: "api;": only a-z, 0-9, '-' and '_' are allowed, starting with a letter or digit`,
		`backend.applications[4].name: "api" is also the name of applications[3]`,
	}},
	{"syntax.json", []string{
		`line 4, column 3: invalid JSON: invalid character '"' after object key:value pair`,
	}},
	{"empty.json", []string{
		"empty file: expected a JSON object",
	}},
	{"seed-options.json", []string{
		`seed.addresses: expected an object of options for seed provider "addresses", got a list (did you mean "seed.static.addresses"?)`,
	}},
	// The seed provider and the generator are checked by building them,
	// the proxy kind by proxy.Resolve.
	{"seed-provider.json", []string{
		`seed.provider: unknown provider "dnsx"`,
	}},
	{"generator.json", []string{
		`lb.generator: unknown generator "envoy" (known: haproxy, nginx, template`,
	}},
	{"template-managed.json", []string{
		`lb.mode: managed mode runs haproxy or nginx; generator "template" needs mode "external"`,
	}},
	{"template-external.json", []string{
		`lb.generator-target: required in external mode: generator "template" has no default`,
		`lb.check-command: required in external mode: generator "template" has no default`,
		`lb.reload-command: required in external mode: generator "template" has no default`,
	}},
	{"many.json", []string{
		`backend: only allowed when role is "backend", and role is "lb"`,
		"backend.applications[0].application-port: 0 is not a port in 1-65535",
		`backend.applications[0].listen-port: expected an integer, got string "80"`,
		`backend.applications[0].name: "Web": only a-z, 0-9, '-' and '_' are allowed, starting with a letter or digit`,
		`backend.applications[0].protocol: "ftp" is not one of [http https grpc tcp udp]`,
		"cluster.bind-port: 0 is not a port in 1-65535",
		`cluster.bindPort: unknown field (did you mean "bind-port"?)`,
		`cluster.profile: "fast" is not one of local, lan, wan`,
		"colour: unknown field",
		"lb.listen-addr: expected a string, got number 5",
		`lb.mode: "sidecar" is not one of managed, external`,
		`lb.quiet-period: "soon" is not a duration (write e.g. "200ms", "5s")`,
		`log-level: "verbose" is not one of debug, info, warn, error`,
	}},
}

// runScrimp runs the command line args in process and returns what it
// wrote to stdout and stderr.
func runScrimp(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := newRootCmd()
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	err = cmd.Execute()
	return out.String(), errOut.String(), err
}

// checkLines asserts that output is exactly one line per want, each line
// starting with prefix followed by that want.
func checkLines(t *testing.T, output, prefix string, want []string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(output, "\n"), "\n")
	ok := len(lines) == len(want)
	for i := 0; ok && i < len(want); i++ {
		ok = strings.HasPrefix(lines[i], prefix+want[i])
	}
	if !ok {
		t.Errorf("output:\n%s\nwant lines starting with:\n%s%s", output, prefix, strings.Join(want, "\n"+prefix))
	}
}

// shippedKeyring is the keyring file every shipped configuration names.
const shippedKeyring = "/etc/scrimp/keyring.json"

// withKeyring copies the shipped configuration file into a temporary
// directory, naming a keyring file created there (mode 0600) instead of
// shippedKeyring, which exists only on a real node. Everything else is
// validated as shipped; a file that does not name shippedKeyring fails
// the test, so every shipped configuration keeps its keyring.
func withKeyring(t *testing.T, file string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ring := filepath.Join(dir, "keyring.json")
	key := base64.StdEncoding.EncodeToString(keyring.Generate())
	if err := os.WriteFile(ring, []byte(`["`+key+`"]`), 0o600); err != nil {
		t.Fatal(err)
	}
	quoted := strconv.Quote(shippedKeyring)
	if bytes.Count(data, []byte(quoted)) != 1 {
		t.Fatalf("%s does not name the keyring file %s once", file, quoted)
	}
	copied := filepath.Join(dir, filepath.Base(file))
	if err := os.WriteFile(copied, bytes.Replace(data, []byte(quoted), []byte(strconv.Quote(ring)), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	return copied
}

func TestValidateCommandGood(t *testing.T) {
	for _, tt := range goodConfigs {
		t.Run(filepath.Base(tt.file), func(t *testing.T) {
			t.Parallel()
			file := withKeyring(t, tt.file)
			stdout, stderr, err := runScrimp(t, "validate", "--config", file)
			if err != nil {
				t.Fatalf("validate: %v\nstderr:\n%s", err, stderr)
			}
			if want := file + ": ok (" + tt.role + ")\n"; stdout != want {
				t.Errorf("stdout = %q, want %q", stdout, want)
			}
			if stderr != "" {
				t.Errorf("stderr = %q, want nothing", stderr)
			}
		})
	}
}

func TestValidateCommandBad(t *testing.T) {
	// Every file in testdata/bad must have expectations, so none is
	// silently left untested.
	files, err := filepath.Glob(filepath.Join("testdata", "bad", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, tt := range badConfigs {
		listed[tt.file] = true
	}
	for _, f := range files {
		if !listed[filepath.Base(f)] {
			t.Errorf("%s has no expectations in badConfigs", f)
		}
	}
	for _, tt := range badConfigs {
		t.Run(strings.TrimSuffix(tt.file, ".json"), func(t *testing.T) {
			t.Parallel()
			file := filepath.Join("testdata", "bad", tt.file)
			stdout, stderr, err := runScrimp(t, "validate", "--config", file)
			if !errors.Is(err, errQuiet) {
				t.Fatalf("validate returned %v, want errQuiet (problems already printed)", err)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
			checkLines(t, stderr, file+": ", tt.want)
		})
	}
}

func TestValidateCommandUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // in the returned error
	}{
		{"no config flag", []string{"validate"}, "--config FILE is required"},
		{"missing file", []string{"validate", "--config", filepath.Join("testdata", "bad", "no-such-file.json")}, "no-such-file.json"},
		{"stray argument", []string{"validate", "--config", "../../config.example.json", "extra"}, "unknown command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, err := runScrimp(t, tt.args...)
			if err == nil {
				t.Fatal("validate succeeded, want an error")
			}
			// Both kinds of failure reach the user: errQuiet ones on
			// stderr already, the rest through main.
			if got := err.Error() + stderr; !strings.Contains(got, tt.want) {
				t.Errorf("error %q, stderr %q: want %q in them", err, stderr, tt.want)
			}
		})
	}
}

// TestValidateExitCode runs the real binary, because only a real process
// shows the exit status main sets.
func TestValidateExitCode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the scrimp binary")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go tool to build scrimp with: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "scrimp")
	build := exec.Command(goTool, "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	lbFile, backendFile := withKeyring(t, "../../config.example.json"), withKeyring(t, "../../examples/backend.json")
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{
			name:       "valid lb config",
			args:       []string{"validate", "--config", lbFile},
			wantCode:   0,
			wantStdout: lbFile + ": ok (lb)\n",
		},
		{
			name:       "valid backend config",
			args:       []string{"validate", "--config", backendFile},
			wantCode:   0,
			wantStdout: backendFile + ": ok (backend)\n",
		},
		{
			name:       "invalid config",
			args:       []string{"validate", "--config", "testdata/bad/ports.json"},
			wantCode:   1,
			wantStderr: "testdata/bad/ports.json: cluster.bind-port: 0 is not a port in 1-65535\n",
		},
		{
			name:       "invalid JSON",
			args:       []string{"validate", "--config", "testdata/bad/syntax.json"},
			wantCode:   1,
			wantStderr: "testdata/bad/syntax.json: line 4, column 3: invalid JSON",
		},
		{
			name:       "missing flag",
			args:       []string{"validate"},
			wantCode:   1,
			wantStderr: "scrimp: --config FILE is required",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(bin, tt.args...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			cmd.Env = append(os.Environ(), "NOTIFY_SOCKET=")
			err := cmd.Run()
			code := 0
			var exitErr *exec.ExitError
			switch {
			case errors.As(err, &exitErr):
				code = exitErr.ExitCode()
			case err != nil:
				t.Fatalf("running scrimp: %v", err)
			}
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, &stdout, &stderr)
			}
			if tt.wantStdout != "" && stdout.String() != tt.wantStdout {
				t.Errorf("stdout = %q, want %q", &stdout, tt.wantStdout)
			}
			if tt.wantCode == 0 && stderr.Len() > 0 {
				t.Errorf("stderr = %q, want nothing", &stderr)
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr = %q, want it to contain %q", &stderr, tt.wantStderr)
			}
		})
	}
}

// TestValidateExternalHAProxyDefaults: an external-mode HAProxy load
// balancer that leaves target and commands empty is valid and gets
// HAProxy's defaults, never nginx's (which once made scrimp write HAProxy
// text into /etc/nginx/conf.d and run nginx -t on it).
func TestValidateExternalHAProxyDefaults(t *testing.T) {
	file := withKeyring(t, "../../examples/lb-haproxy-external.json")
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Check(cfg); err != nil {
		t.Fatalf("node.Check: %v", err)
	}
	setup, ps := proxy.Resolve(cfg)
	if len(ps) > 0 {
		t.Fatalf("Resolve: %v", ps)
	}
	want := proxy.Setup{
		Target: "/etc/haproxy/haproxy.cfg",
		Check:  []string{"haproxy", "-c", "-f", "/etc/haproxy/haproxy.cfg"},
		Reload: []string{"systemctl", "reload", "haproxy"},
	}
	if setup.Kind.Name != "haproxy" || setup.Kind.Generator != "haproxy" {
		t.Errorf("kind %q with generator %q, want haproxy", setup.Kind.Name, setup.Kind.Generator)
	}
	if setup.Target != want.Target || !slices.Equal(setup.Check, want.Check) || !slices.Equal(setup.Reload, want.Reload) {
		t.Errorf("external mode: target %q, check %q, reload %q\nwant target %q, check %q, reload %q",
			setup.Target, setup.Check, setup.Reload, want.Target, want.Check, want.Reload)
	}
	for _, arg := range slices.Concat([]string{setup.Target}, setup.Check, setup.Reload) {
		if strings.Contains(arg, "nginx") {
			t.Errorf("HAProxy setup %+v mentions nginx", setup)
		}
	}
}

// A shipped configuration validated where its keyring file does not
// exist fails on that alone, naming the field and the file: a node could
// not start there.
func TestValidateMissingKeyring(t *testing.T) {
	if _, err := os.Stat(shippedKeyring); err == nil {
		t.Skipf("%s exists on this machine", shippedKeyring)
	}
	const file = "../../examples/backend.json"
	stdout, stderr, err := runScrimp(t, "validate", "--config", file)
	if !errors.Is(err, errQuiet) {
		t.Fatalf("validate returned %v, want errQuiet", err)
	}
	if stdout != "" {
		t.Errorf("stdout = %q, want nothing", stdout)
	}
	checkLines(t, stderr, file+": ", []string{"cluster.keyring-file: keyring: open " + shippedKeyring + ": no such file or directory"})
}

// Without a keyring, validate passes with a warning naming
// cluster.keyring-file: a mild one on loopback, a loud one, naming the
// address and port, anywhere else. With a keyring there is none.
func TestValidateWarnsWithoutKeyring(t *testing.T) {
	dir := t.TempDir()
	ring := filepath.Join(dir, "keyring.json")
	if err := os.WriteFile(ring, []byte(`["`+base64.StdEncoding.EncodeToString(keyring.Generate())+`"]`), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		cluster string
		want    []string // in the one warning line; none when empty
		notWant string
	}{
		{"loopback", `{"bind-addr": "127.0.0.1"}`, []string{"warning: cluster.keyring-file: not set", "only because it listens on loopback"}, "ANYONE"},
		{"all addresses", `{"bind-addr": "0.0.0.0"}`, []string{"warning: cluster.keyring-file: NOT SET while gossip listens on 0.0.0.0 port 7946", "ANYONE", "scrimp keys generate", "cluster.label"}, "loopback"},
		{"public address", `{"bind-addr": "203.0.113.10", "bind-port": 7000}`, []string{"NOT SET while gossip listens on 203.0.113.10 port 7000"}, ""},
		{"keyring", `{"bind-addr": "0.0.0.0", "keyring-file": ` + strconv.Quote(ring) + `, "label": "prod"}`, nil, ""},
		{"keyring, transition", `{"keyring-file": ` + strconv.Quote(ring) + `, "gossip-verify-incoming": false}`,
			[]string{"warning: cluster.gossip-verify-incoming: false: plaintext gossip is still accepted"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "lb.json")
			doc := `{"role": "lb", "node-name": "lb-1", "seed": {"provider": "static", "static": {"addresses": []}}, "cluster": ` +
				tc.cluster + `, "lb": {}}`
			if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
				t.Fatal(err)
			}
			stdout, stderr, err := runScrimp(t, "validate", "--config", file)
			if err != nil {
				t.Fatalf("validate: %v\nstderr:\n%s", err, stderr)
			}
			if want := file + ": ok (lb)\n"; stdout != want {
				t.Errorf("stdout = %q, want %q", stdout, want)
			}
			if len(tc.want) == 0 {
				if stderr != "" {
					t.Errorf("stderr = %q, want nothing", stderr)
				}
				return
			}
			if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, file+": warning: ") {
				t.Fatalf("stderr = %q, want one warning line", stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr = %q, want %q in it", stderr, w)
				}
			}
			if tc.notWant != "" && strings.Contains(stderr, tc.notWant) {
				t.Errorf("stderr = %q, want no %q in it", stderr, tc.notWant)
			}
		})
	}
}

// `scrimp validate` never prints a key: not for a good keyring, nor for
// one others can read, one cut short, one with a key of the wrong size or
// one that is not base64.
func TestValidateShowsNoKeys(t *testing.T) {
	key := keyring.Generate()
	b64 := base64.StdEncoding.EncodeToString(key)
	cases := []struct {
		name    string
		content string
		mode    os.FileMode
		ok      bool
	}{
		{"good", `["` + b64 + `"]`, 0o600, true},
		{"readable by others", `["` + b64 + `"]`, 0o644, false},
		{"cut short", `["` + b64, 0o600, false},
		{"wrong size", `["` + base64.StdEncoding.EncodeToString(key[:20]) + `"]`, 0o600, false},
		{"not base64", `["` + b64 + `!"]`, 0o600, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ring := filepath.Join(dir, "keyring.json")
			if err := os.WriteFile(ring, []byte(tc.content), tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(ring, tc.mode); err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(dir, "lb.json")
			doc := `{"role": "lb", "node-name": "lb-1", "log-level": "debug", "seed": {"provider": "static", "static": {"addresses": []}},
				"cluster": {"keyring-file": ` + strconv.Quote(ring) + `, "label": "prod"}, "lb": {}}`
			if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
				t.Fatal(err)
			}
			stdout, stderr, err := runScrimp(t, "validate", "--config", file)
			if (err == nil) != tc.ok {
				t.Fatalf("validate: %v, want ok %v\nstderr: %s", err, tc.ok, stderr)
			}
			out := stdout + stderr
			if !tc.ok && !strings.Contains(out, "cluster.keyring-file") {
				t.Errorf("output %q does not name cluster.keyring-file", out)
			}
			for _, s := range []string{b64, base64.RawStdEncoding.EncodeToString(key), base64.StdEncoding.EncodeToString(key[:20]),
				string(key), fmt.Sprint(key), fmt.Sprintf("%x", key)} {
				if strings.Contains(out, s) {
					t.Errorf("output shows the key:\n%s", out)
				}
			}
		})
	}
}
