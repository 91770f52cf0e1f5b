package proxy

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/generator"
	"github.com/scrimplb/scrimp/internal/proctest"
)

// TestKinds checks what every registered kind promises: a registered
// generator, and for managed kinds a binary and state file names.
func TestKinds(t *testing.T) {
	if got, want := KindNames(), []string{"haproxy", "nginx", "template"}; !slices.Equal(got, want) {
		t.Errorf("KindNames() = %v, want %v", got, want)
	}
	for _, name := range KindNames() {
		t.Run(name, func(t *testing.T) {
			k, ok := LookupKind(name)
			if !ok || k.Name != name {
				t.Fatalf("LookupKind(%q) = %+v, %v", name, k, ok)
			}
			if !slices.Contains(generator.Names(), k.Generator) {
				t.Errorf("generator %q is not registered (have %v)", k.Generator, generator.Names())
			}
			if k.NewManaged != nil && (k.Binary == "" || k.ConfigFile == "" || k.PidFile == "") {
				t.Errorf("managed kind without binary %q, config file %q or pid file %q", k.Binary, k.ConfigFile, k.PidFile)
			}
			d := k.External
			if (d.Target == "") != (d.Check == nil) || (d.Target == "") != (len(d.Reload) == 0) {
				t.Errorf("external defaults are all or nothing: target %q, check set %v, reload %q", d.Target, d.Check != nil, d.Reload)
			}
		})
	}
	if _, ok := LookupKind("envoy"); ok {
		t.Error(`LookupKind("envoy") found a kind`)
	}
}

func TestRegisterKindTwicePanics(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), `"nginx" registered twice`) {
			t.Errorf("recovered %v, want a panic about nginx registered twice", r)
		}
		if k, _ := LookupKind("nginx"); k.Binary != "nginx" {
			t.Errorf("the registered nginx kind changed: %+v", k)
		}
	}()
	RegisterKind(Kind{Name: "nginx", Generator: "nginx", Binary: "other"})
}

func TestResolve(t *testing.T) {
	type want struct {
		kind, binary, target string
		check, reload        []string
		problems             []string // "PATH: REASON" prefixes, in order
	}
	tests := []struct {
		name string
		lb   string // the "lb" object
		want want
	}{
		{
			name: "nginx managed",
			lb:   `{}`,
			want: want{kind: "nginx", binary: "nginx"},
		},
		{
			name: "haproxy managed with its own binary",
			lb:   `{"generator": "haproxy", "proxy-binary": "/opt/haproxy/sbin/haproxy"}`,
			want: want{kind: "haproxy", binary: "/opt/haproxy/sbin/haproxy"},
		},
		{
			name: "nginx external defaults",
			lb:   `{"mode": "external"}`,
			want: want{kind: "nginx", target: "/etc/nginx/conf.d/scrimp.conf", check: []string{"nginx", "-t"}, reload: []string{"nginx", "-s", "reload"}},
		},
		{
			name: "haproxy external defaults",
			lb:   `{"generator": "haproxy", "mode": "external"}`,
			want: want{kind: "haproxy", target: "/etc/haproxy/haproxy.cfg",
				check: []string{"haproxy", "-c", "-f", "/etc/haproxy/haproxy.cfg"}, reload: []string{"systemctl", "reload", "haproxy"}},
		},
		{
			name: "haproxy external: the default check checks the configured target",
			lb:   `{"generator": "haproxy", "mode": "external", "generator-target": "/etc/haproxy/scrimp.cfg"}`,
			want: want{kind: "haproxy", target: "/etc/haproxy/scrimp.cfg",
				check: []string{"haproxy", "-c", "-f", "/etc/haproxy/scrimp.cfg"}, reload: []string{"systemctl", "reload", "haproxy"}},
		},
		{
			name: "haproxy external: what is given wins",
			lb: `{"generator": "haproxy", "mode": "external", "generator-target": "/etc/haproxy/conf.d/scrimp.cfg",
				"check-command": ["haproxy", "-c", "-f", "/etc/haproxy/haproxy.cfg", "-f", "/etc/haproxy/conf.d"], "reload-command": ["kill", "-USR2", "1"]}`,
			want: want{kind: "haproxy", target: "/etc/haproxy/conf.d/scrimp.cfg",
				check: []string{"haproxy", "-c", "-f", "/etc/haproxy/haproxy.cfg", "-f", "/etc/haproxy/conf.d"}, reload: []string{"kill", "-USR2", "1"}},
		},
		{
			name: "template external with everything given",
			lb:   `{"generator": "template", "mode": "external", "generator-target": "/etc/caddy/Caddyfile", "check-command": ["caddy", "validate"], "reload-command": ["caddy", "reload"]}`,
			want: want{kind: "template", target: "/etc/caddy/Caddyfile", check: []string{"caddy", "validate"}, reload: []string{"caddy", "reload"}},
		},
		{
			name: "template external has no defaults",
			lb:   `{"generator": "template", "mode": "external", "check-command": ["caddy", "validate"]}`,
			want: want{kind: "template", check: []string{"caddy", "validate"}, problems: []string{
				`lb.generator-target: required in external mode: generator "template" has no default`,
				`lb.reload-command: required in external mode: generator "template" has no default`,
			}},
		},
		{
			name: "template managed",
			lb:   `{"generator": "template"}`,
			want: want{kind: "template", problems: []string{
				`lb.mode: managed mode runs haproxy or nginx; generator "template" needs mode "external"`,
			}},
		},
		{
			name: "unknown kind",
			lb:   `{"generator": "envoy", "mode": "external"}`,
			want: want{problems: []string{`lb.generator: unknown generator "envoy" (known: haproxy, nginx, template)`}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := `{"role": "lb", "node-name": "lb-1", "seed": {"provider": "static"}, "lb": ` + tt.lb + `}`
			cfg, ps := config.Parse("lb.json", []byte(doc))
			if len(ps) > 0 {
				t.Fatalf("config.Parse: %v", ps)
			}
			s, ps := Resolve(cfg)
			var got []string
			for _, p := range ps {
				if p.File != "lb.json" {
					t.Errorf("problem %q names file %q, want lb.json", p, p.File)
				}
				got = append(got, p.Path+": "+p.Reason)
			}
			if !slices.Equal(got, tt.want.problems) {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want.problems, "\n"))
			}
			if s.Kind.Name != tt.want.kind || s.Binary != tt.want.binary || s.Target != tt.want.target ||
				!slices.Equal(s.Check, tt.want.check) || !slices.Equal(s.Reload, tt.want.reload) {
				t.Errorf("setup: kind %q, binary %q, target %q, check %q, reload %q\nwant kind %q, binary %q, target %q, check %q, reload %q",
					s.Kind.Name, s.Binary, s.Target, s.Check, s.Reload,
					tt.want.kind, tt.want.binary, tt.want.target, tt.want.check, tt.want.reload)
			}
		})
	}
}

func TestResolveWithoutLB(t *testing.T) {
	_, ps := Resolve(&config.Config{File: "backend.json"})
	if len(ps) != 1 || ps[0].Path != "lb" {
		t.Errorf("Resolve without lb = %v, want one problem at lb", ps)
	}
}

// kindBinary returns the path of a kind's proxy, skipping the test when it
// is not installed (failing it when CI is set).
func kindBinary(t *testing.T, name string) string {
	t.Helper()
	for _, p := range []string{name, "/usr/sbin/" + name} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not installed, and CI is set", name)
	}
	t.Skipf("%s not installed; set CI=1 to make this a failure", name)
	return ""
}

// kindConfig renders, with the kind's generator, application "web" on
// listen port served by backend.
func kindConfig(t *testing.T, k Kind, in generator.Input, port int, backend *httptest.Server) []byte {
	t.Helper()
	g, err := generator.New(k.Generator, nil)
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(backend.Listener.Addr().String())
	in.ListenAddr = "127.0.0.1"
	in.Snapshot = catalog.NewSnapshot([]catalog.Node{{
		Name: "backend-1", Addr: ap.Addr(), Role: catalog.RoleBackend,
		Applications: []catalog.Application{{Name: "web", ListenPort: port, ApplicationPort: int(ap.Port()), Protocol: catalog.ProtocolHTTP}},
	}})
	out, err := g.Render(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Warnings) > 0 {
		t.Fatalf("warnings: %q", out.Warnings)
	}
	return out.Config
}

// TestKindManaged runs every managed kind through its registration: the
// runner NewManaged builds serves what the kind's generator renders, and
// keeps its configuration and pid in the files the kind names.
func TestKindManaged(t *testing.T) {
	for _, name := range KindNames() {
		k, _ := LookupKind(name)
		if k.NewManaged == nil {
			continue
		}
		t.Run(name, func(t *testing.T) {
			bin := kindBinary(t, k.Binary)
			logs := &proctest.Buffer{}
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("%s log:\n%s", name, logs)
				}
			})
			m, err := k.NewManaged(bin, t.TempDir(), waitTimeout, slog.New(slog.NewTextHandler(logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			pid := 0
			t.Cleanup(func() {
				if err := m.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
				if err := m.Close(); err != nil {
					t.Errorf("second Close: %v", err)
				}
				if pid > 0 {
					poll(t, "the proxy is gone after Close", func() string {
						if syscall.Kill(pid, 0) == nil {
							return fmt.Sprintf("pid %d still runs", pid)
						}
						return ""
					})
				}
			})
			port := freePort(t)
			conf := kindConfig(t, k, generator.Input{Standalone: true, StateDir: m.Dir()}, port, upstream(t, "web via "+name))
			ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
			defer cancel()
			if err := m.Apply(ctx, conf); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			waitBody(t, port, "web via "+name)
			if got, err := os.ReadFile(filepath.Join(m.Dir(), k.ConfigFile)); err != nil || !bytes.Equal(got, conf) {
				t.Errorf("%s: %v; holds the applied configuration: %v", k.ConfigFile, err, bytes.Equal(got, conf))
			}
			poll(t, k.PidFile+" names the running proxy", func() string {
				b, err := os.ReadFile(filepath.Join(m.Dir(), k.PidFile))
				if err != nil {
					return err.Error()
				}
				pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
				if err != nil {
					return err.Error()
				}
				if err := syscall.Kill(pid, 0); err != nil {
					return fmt.Sprintf("pid %d: %v", pid, err)
				}
				return ""
			})
		})
	}
}

// TestExternalHAProxy drives a real HAProxy in external mode with the
// haproxy kind's default check: HAProxy runs as a system service would
// (master-worker, loading the target file), External writes the target,
// checks it with `haproxy -c -f TARGET` and reloads with SIGUSR2 to the
// master, which the packaged service's reload also sends (the test cannot
// use systemctl). A configuration HAProxy rejects is never loaded: the
// previous file is put back and traffic keeps flowing.
func TestExternalHAProxy(t *testing.T) {
	bin := kindBinary(t, "haproxy")
	// The kind's default check runs "haproxy" from PATH.
	if _, err := exec.LookPath("haproxy"); err != nil {
		t.Setenv("PATH", filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
	if _, err := exec.LookPath("kill"); err != nil {
		t.Skipf("no kill command to reload with: %v", err)
	}
	k, ok := LookupKind("haproxy")
	if !ok {
		t.Fatal("haproxy kind not registered")
	}
	dir := t.TempDir()
	target := filepath.Join(dir, "haproxy.cfg")
	port := freePort(t)
	external := generator.Input{} // an include, not a standalone configuration
	first := kindConfig(t, k, external, port, upstream(t, "first"))
	second := kindConfig(t, k, external, port, upstream(t, "second"))

	// HAProxy starts from a file already there, as a service does.
	if err := os.WriteFile(target, first, 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &proctest.Buffer{}
	cmd := exec.Command(bin, "-W", "-db", "-f", target, "-p", filepath.Join(dir, "haproxy.pid"))
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	master := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		syscall.Kill(master, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(waitTimeout):
			t.Errorf("haproxy did not stop on SIGTERM")
		}
		syscall.Kill(-master, syscall.SIGKILL) // workers, should any be left
		if t.Failed() {
			t.Logf("haproxy output:\n%s", logs)
		}
	})
	waitBody(t, port, "first")

	e := &External{
		Target:  target,
		Check:   k.External.Check(target),
		Reload:  []string{"kill", "-USR2", strconv.Itoa(master)},
		Timeout: waitTimeout,
		Logger:  slog.New(slog.NewTextHandler(logs, nil)),
	}
	if want := []string{"haproxy", "-c", "-f", target}; !slices.Equal(e.Check, want) {
		t.Fatalf("default check %q, want %q", e.Check, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
	defer cancel()
	if err := e.Apply(ctx, second); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	waitBody(t, port, "second")
	if got, _ := os.ReadFile(target); !bytes.Equal(got, second) {
		t.Errorf("target holds:\n%s\nwant the applied configuration", got)
	}

	bad := append(slices.Clip(second), "\nfrontend broken\n    no-such-keyword here\n"...)
	err := e.Apply(ctx, bad)
	if err == nil || !strings.Contains(err.Error(), "previous one kept") || !strings.Contains(err.Error(), "no-such-keyword") {
		t.Fatalf("Apply of a broken configuration = %v, want the check's rejection quoting HAProxy", err)
	}
	if got, _ := os.ReadFile(target); !bytes.Equal(got, second) {
		t.Errorf("after the rejection target holds:\n%s\nwant the previous configuration", got)
	}
	select {
	case err := <-exited:
		t.Fatalf("haproxy exited: %v", err)
	default:
	}
	for range 5 {
		if got, err := get(port); err != nil || got != "second" {
			t.Fatalf("after the rejection: %q, %v; want \"second\"", got, err)
		}
	}
}
