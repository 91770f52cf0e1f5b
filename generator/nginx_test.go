package generator

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata from the current output")

// goldenStateDir is the state directory written into golden files; the
// nginx check renders with a real temporary directory instead and expects
// the same text with that directory in its place.
const goldenStateDir = "/var/lib/scrimp"

func backendNode(name, addr string, apps ...catalog.Application) catalog.Node {
	return catalog.Node{Name: name, Addr: netip.MustParseAddr(addr), Role: catalog.RoleBackend, Applications: apps}
}

func lbNode(name, addr string) catalog.Node {
	return catalog.Node{Name: name, Addr: netip.MustParseAddr(addr), Role: catalog.RoleLB}
}

func httpApp(name string, listen, port int, domains ...string) catalog.Application {
	return catalog.Application{Name: name, ListenPort: listen, ApplicationPort: port, Protocol: catalog.ProtocolHTTP, Domains: domains}
}

func protoApp(name string, proto catalog.Protocol, listen, port int) catalog.Application {
	return catalog.Application{Name: name, ListenPort: listen, ApplicationPort: port, Protocol: proto}
}

type goldenCase struct {
	name       string // also the golden file's name
	options    string // raw generator options; empty for the defaults
	standalone bool
	listen     string
	nodes      []catalog.Node
	warnings   []string
}

var goldenCases = []goldenCase{
	{name: "empty_standalone", standalone: true, listen: "0.0.0.0"},
	{name: "empty_include", listen: "0.0.0.0"},
	{
		name: "lb_only_standalone", standalone: true, listen: "0.0.0.0",
		nodes: []catalog.Node{lbNode("lb-1", "10.0.0.100"), lbNode("lb-2", "10.0.0.101")},
	},
	{
		name: "one_app_three_backends", standalone: true, listen: "0.0.0.0",
		nodes: []catalog.Node{
			backendNode("b3", "10.0.0.3", httpApp("web", 8080, 8082)),
			backendNode("b1", "10.0.0.1", httpApp("web", 8080, 8080)),
			lbNode("lb-1", "10.0.0.100"),
			backendNode("b2", "10.0.0.2", httpApp("web", 8080, 8081)),
		},
	},
	{
		name: "one_app_three_backends_include", listen: "127.0.0.1",
		nodes: []catalog.Node{
			backendNode("b1", "10.0.0.1", httpApp("web", 8080, 8080)),
			backendNode("b2", "10.0.0.2", httpApp("web", 8080, 8081)),
			backendNode("b3", "10.0.0.3", httpApp("web", 8080, 8082)),
		},
	},
	{
		name: "shared_port_with_catch_all", listen: "0.0.0.0",
		nodes: []catalog.Node{
			backendNode("b1", "10.0.0.1",
				httpApp("api", 8080, 9000, "api.example.com"),
				httpApp("site", 8080, 8000),
				httpApp("web", 8080, 8080, "example.com", "www.example.com")),
			backendNode("b2", "10.0.0.2",
				httpApp("api", 8080, 9000, "api.example.com"),
				httpApp("web", 8080, 8080, "example.com", "www.example.com")),
		},
	},
	{
		name: "second_catch_all_left_out", listen: "0.0.0.0",
		nodes: []catalog.Node{
			backendNode("b1", "10.0.0.1", httpApp("alpha", 8080, 1000), httpApp("beta", 8080, 2000), httpApp("gamma", 8080, 3000, "gamma.example.com")),
		},
		warnings: []string{"application beta: listen port 8080 already has a catch-all application (no domains); left out"},
	},
	{
		name: "wildcard_domain", standalone: true, listen: "0.0.0.0",
		nodes: []catalog.Node{
			backendNode("b1", "10.0.0.1", httpApp("tenants", 8080, 8080, "*.apps.example.com", "apps.example.com")),
			backendNode("b2", "10.0.0.2", httpApp("tenants", 8080, 8080, "*.apps.example.com", "apps.example.com")),
		},
	},
	{
		name: "conflict", listen: "0.0.0.0",
		nodes: []catalog.Node{
			backendNode("b1", "10.0.0.1", httpApp("web", 8080, 8080)),
			backendNode("b2", "10.0.0.2", protoApp("web", catalog.ProtocolTCP, 8080, 8080)),
			backendNode("b3", "10.0.0.3", httpApp("web", 8081, 8080)),
			backendNode("b4", "10.0.0.4", httpApp("web", 8080, 8080)),
		},
		warnings: []string{
			"application web: backend b2 left out: advertises tcp on listen port 8080, but http on 8080 is in use",
			"application web: backend b3 left out: advertises http on listen port 8081, but http on 8080 is in use",
		},
	},
	{
		name: "unsupported_protocols", standalone: true, listen: "0.0.0.0",
		nodes: []catalog.Node{
			backendNode("b1", "10.0.0.1",
				protoApp("db", catalog.ProtocolTCP, 15432, 5432),
				protoApp("dns", catalog.ProtocolUDP, 10053, 5353),
				protoApp("rpc", catalog.ProtocolGRPC, 50051, 50051),
				protoApp("secure", catalog.ProtocolHTTPS, 8443, 8443),
				httpApp("web", 8080, 8080)),
		},
		warnings: []string{
			"application db: protocol tcp is not supported by the nginx generator yet; left out",
			"application dns: protocol udp is not supported by the nginx generator yet; left out",
			"application rpc: protocol grpc is not supported by the nginx generator yet; left out",
			"application secure: protocol https is not supported by the nginx generator yet; left out",
		},
	},
	{
		name: "only_unsupported_include", listen: "0.0.0.0",
		nodes: []catalog.Node{
			backendNode("b1", "10.0.0.1", protoApp("db", catalog.ProtocolTCP, 15432, 5432)),
		},
		warnings: []string{"application db: protocol tcp is not supported by the nginx generator yet; left out"},
	},
	{
		name: "ipv6", standalone: true, listen: "::",
		nodes: []catalog.Node{
			backendNode("b1", "2001:db8::1", httpApp("web", 8080, 8080, "example.com")),
			backendNode("b2", "10.0.0.2", httpApp("web", 8080, 8080, "example.com")),
			backendNode("b3", "::ffff:10.0.0.3", httpApp("web", 8080, 8080, "example.com")),
		},
	},
	{
		name: "ipv6_include", listen: "::1",
		nodes: []catalog.Node{
			backendNode("b1", "2001:db8::1", httpApp("web", 8443, 8080)),
		},
	},
	{
		name: "options", standalone: true, listen: "127.0.0.1",
		options: `{"worker-connections": 4096, "max-fails": 3, "fail-timeout": "30s", "keepalive": 0}`,
		nodes: []catalog.Node{
			backendNode("b1", "10.0.0.1", httpApp("web", 8080, 8080)),
		},
	},
}

func newGen(t testing.TB, options string) Generator {
	t.Helper()
	var raw json.RawMessage
	if options != "" {
		raw = json.RawMessage(options)
	}
	g, err := New("nginx", raw)
	if err != nil {
		t.Fatalf("New(nginx, %s): %v", options, err)
	}
	return g
}

func (c goldenCase) input(stateDir string) Input {
	return Input{Snapshot: catalog.NewSnapshot(c.nodes), ListenAddr: c.listen, Standalone: c.standalone, StateDir: stateDir}
}

func TestNginxGolden(t *testing.T) {
	nginx := findNginx(t)
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			g := newGen(t, tc.options)
			out, err := g.Render(tc.input(goldenStateDir))
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			if !slices.Equal(out.Warnings, tc.warnings) {
				t.Errorf("warnings:\n got %q\nwant %q", out.Warnings, tc.warnings)
			}
			golden := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(golden, out.Config, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./generator -run TestNginxGolden -update to create it)", err)
			}
			if !bytes.Equal(out.Config, want) {
				t.Errorf("output differs from %s (run with -update to accept):\n%s", golden, out.Config)
			}
			assertNoInjection(t, out.Config)

			// The same case rendered for a real state directory must be
			// the golden text with that directory, and nginx must accept it.
			if nginx == "" {
				t.Skip("golden file matches; " + noNginx)
			}
			if netip.MustParseAddr(tc.listen).Is6() && !ipv6Loopback() {
				t.Skip("golden file matches; no IPv6 on this host, so nginx cannot bind the listen address to check it")
			}
			dir := t.TempDir()
			if tc.standalone {
				real, err := g.Render(tc.input(dir))
				if err != nil {
					t.Fatalf("Render: %v", err)
				}
				if got := strings.ReplaceAll(string(real.Config), dir, goldenStateDir); got != string(want) {
					t.Errorf("output for state dir %s differs from the golden file beyond the directory:\n%s", dir, real.Config)
				}
				nginxCheckStandalone(t, nginx, dir, real.Config)
			} else {
				nginxCheckInclude(t, nginx, dir, out.Config)
			}
		})
	}
}

// assertNoInjection checks the structure every rendering must have: braces
// balance and every directive line ends in ';', '{' or '}' (or is a
// comment), so values cannot have split a directive.
func assertNoInjection(t *testing.T, config []byte) {
	t.Helper()
	depth := 0
	for i, line := range strings.Split(strings.TrimSuffix(string(config), "\n"), "\n") {
		line = strings.TrimSpace(line)
		depth += strings.Count(line, "{") - strings.Count(line, "}")
		if depth < 0 {
			t.Fatalf("line %d: unbalanced '}'", i+1)
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		if code, _, _ := strings.Cut(line, " # "); !strings.HasSuffix(code, ";") && !strings.HasSuffix(code, "{") && code != "}" && !strings.HasSuffix(code, "}") {
			t.Errorf("line %d %q does not end a directive or block", i+1, line)
		}
	}
	if depth != 0 {
		t.Errorf("unbalanced braces: depth %d at the end", depth)
	}
}

// findNginx returns the nginx binary to check configurations with, or ""
// if there is none in PATH. With CI set a missing nginx fails the test:
// CI must check what is rendered.
func findNginx(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal("nginx is not in PATH, and CI is set: the rendered configurations must be checked by nginx")
	}
	return ""
}

const noNginx = "nginx not in PATH, so nginx -t cannot check the output; set CI=1 to make this a failure"

// nginxBinary is findNginx for tests that need nginx: it skips them when
// there is none.
func nginxBinary(t *testing.T) string {
	t.Helper()
	p := findNginx(t)
	if p == "" {
		t.Skip(noNginx)
	}
	return p
}

// ipv6Loopback reports whether this host can listen on IPv6 at all
// (`nginx -t` binds the listen addresses).
func ipv6Loopback() bool {
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// nginxTest runs `nginx -t` on conf with prefix dir and fails t with
// nginx's own message if it rejects it.
func nginxTest(t *testing.T, nginx, dir, conf string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, nginx, "-t", "-q", "-p", dir+"/", "-c", conf, "-e", "stderr")
	if out, err := cmd.CombinedOutput(); err != nil {
		text, _ := os.ReadFile(conf)
		t.Fatalf("nginx -t rejected the configuration: %v\n%s\n--- %s:\n%s", err, out, conf, text)
	}
}

func nginxCheckStandalone(t *testing.T, nginx, dir string, config []byte) {
	t.Helper()
	if err := os.Mkdir(filepath.Join(dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, config, 0o644); err != nil {
		t.Fatal(err)
	}
	nginxTest(t, nginx, dir, conf)
}

// nginxCheckInclude checks an include fragment the way a system nginx uses
// it: included in the http block of a minimal main configuration.
func nginxCheckInclude(t *testing.T, nginx, dir string, fragment []byte) {
	t.Helper()
	include := filepath.Join(dir, "scrimp.conf")
	if err := os.WriteFile(include, fragment, 0o644); err != nil {
		t.Fatal(err)
	}
	var main bytes.Buffer
	fmt.Fprintf(&main, "pid %s;\nerror_log stderr;\nevents {}\nhttp {\n", filepath.Join(dir, "nginx.pid"))
	for _, tmp := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&main, "    %s_temp_path %s;\n", tmp, filepath.Join(dir, "tmp", tmp))
	}
	fmt.Fprintf(&main, "    include %s;\n}\n", include)
	if err := os.Mkdir(filepath.Join(dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, main.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	nginxTest(t, nginx, dir, conf)
}

// TestNginxDeterministic renders the same cluster repeatedly, from nodes
// given in different orders and concurrently: the bytes never change.
func TestNginxDeterministic(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			g := newGen(t, tc.options)
			first, err := g.Render(tc.input(goldenStateDir))
			if err != nil {
				t.Fatal(err)
			}
			second, err := g.Render(tc.input(goldenStateDir))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(first.Config, second.Config) || !slices.Equal(first.Warnings, second.Warnings) {
				t.Fatal("two renders of the same input differ")
			}
			for i, nodes := range permutations(tc.nodes) {
				c := tc
				c.nodes = nodes
				out, err := g.Render(c.input(goldenStateDir))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(out.Config, first.Config) || !slices.Equal(out.Warnings, first.Warnings) {
					t.Fatalf("node order %d gives different output:\n%s\nwant\n%s", i, out.Config, first.Config)
				}
			}
		})
	}
}

// permutations returns every order of nodes (there are at most a handful).
func permutations(nodes []catalog.Node) [][]catalog.Node {
	if len(nodes) <= 1 {
		return [][]catalog.Node{slices.Clone(nodes)}
	}
	var out [][]catalog.Node
	for i := range nodes {
		rest := slices.Concat(nodes[:i:i], nodes[i+1:])
		for _, p := range permutations(rest) {
			out = append(out, append([]catalog.Node{nodes[i]}, p...))
		}
	}
	return out
}

func TestNginxRenderConcurrent(t *testing.T) {
	g := newGen(t, "")
	i := slices.IndexFunc(goldenCases, func(c goldenCase) bool { return c.name == "shared_port_with_catch_all" })
	tc := goldenCases[i]
	want, err := g.Render(tc.input(goldenStateDir))
	if err != nil {
		t.Fatal(err)
	}
	in := tc.input(goldenStateDir)
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for range 8 {
		wg.Go(func() {
			for range 50 {
				out, err := g.Render(in)
				if err != nil || !bytes.Equal(out.Config, want.Config) {
					errs <- fmt.Sprintf("concurrent render differs (err %v)", err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestNginxRenderErrors(t *testing.T) {
	g := newGen(t, "")
	tests := []struct {
		name    string
		listen  string
		wantErr string
	}{
		{name: "empty", listen: "", wantErr: `listen address ""`},
		{name: "host name", listen: "localhost", wantErr: `listen address "localhost"`},
		{name: "with port", listen: "127.0.0.1:80", wantErr: "listen address"},
		{name: "injection", listen: "127.0.0.1; include /etc/passwd", wantErr: "listen address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := g.Render(Input{ListenAddr: tt.listen})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
			if out.Config != nil {
				t.Errorf("an error came with configuration:\n%s", out.Config)
			}
		})
	}
}

func TestNewNginxOptions(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    NginxOptions
		wantErr string
	}{
		{name: "absent", raw: "", want: DefaultNginxOptions()},
		{name: "empty object", raw: "{}", want: DefaultNginxOptions()},
		{
			name: "all set", raw: `{"worker-connections": 16, "max-fails": 0, "fail-timeout": "10m", "keepalive": 0}`,
			want: NginxOptions{WorkerConnections: 16, MaxFails: 0, FailTimeout: "10m", Keepalive: 0},
		},
		{name: "minutes", raw: `{"fail-timeout": "999999m"}`, want: NginxOptions{WorkerConnections: 1024, MaxFails: 1, FailTimeout: "999999m", Keepalive: 16}},
		{name: "zero time", raw: `{"fail-timeout": "0s"}`, want: NginxOptions{WorkerConnections: 1024, MaxFails: 1, FailTimeout: "0s", Keepalive: 16}},
		{name: "unknown field", raw: `{"workers": 4}`, wantErr: "unknown field"},
		{name: "not an object", raw: `[]`, wantErr: "cannot unmarshal"},
		{name: "too few worker connections", raw: `{"worker-connections": 15}`, wantErr: "worker-connections: 15"},
		{name: "negative max-fails", raw: `{"max-fails": -1}`, wantErr: "max-fails: -1"},
		{name: "negative keepalive", raw: `{"keepalive": -1}`, wantErr: "keepalive: -1"},
		{name: "milliseconds (nginx rejects them in fail_timeout)", raw: `{"fail-timeout": "500ms"}`, wantErr: "fail-timeout"},
		{name: "time without unit", raw: `{"fail-timeout": "2"}`, wantErr: "fail-timeout"},
		{name: "time in hours", raw: `{"fail-timeout": "2h"}`, wantErr: "fail-timeout"},
		{name: "empty time", raw: `{"fail-timeout": ""}`, wantErr: "fail-timeout"},
		{name: "unit only", raw: `{"fail-timeout": "ms"}`, wantErr: "fail-timeout"},
		{name: "fractional time", raw: `{"fail-timeout": "1.5s"}`, wantErr: "fail-timeout"},
		{name: "negative time", raw: `{"fail-timeout": "-1s"}`, wantErr: "fail-timeout"},
		{name: "negative zero time", raw: `{"fail-timeout": "-0s"}`, wantErr: "fail-timeout"},
		{name: "signed time", raw: `{"fail-timeout": "+5s"}`, wantErr: "fail-timeout"},
		{name: "huge time", raw: `{"fail-timeout": "1000000s"}`, wantErr: "fail-timeout"},
		{name: "time with spaces", raw: `{"fail-timeout": " 2s"}`, wantErr: "fail-timeout"},
		{name: "time injecting a directive", raw: `{"fail-timeout": "2s; include x; 1s"}`, wantErr: "fail-timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var raw json.RawMessage
			if tt.raw != "" {
				raw = json.RawMessage(tt.raw)
			}
			g, err := New("nginx", raw)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			case tt.wantErr != "":
				if !strings.Contains(err.Error(), "nginx") {
					t.Errorf("error %q does not name the generator", err)
				}
				return
			}
			if got := g.(nginx).o; got != tt.want {
				t.Errorf("options %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRegistry(t *testing.T) {
	if names := Names(); !slices.Contains(names, "nginx") || !slices.IsSorted(names) {
		t.Errorf("Names() = %v, want a sorted list with nginx", names)
	}
	if _, err := New("haproxy-nonexistent", nil); err == nil || !strings.Contains(err.Error(), `unknown generator "haproxy-nonexistent"`) {
		t.Errorf("New of an unknown generator: %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("registering nginx twice did not panic")
		}
	}()
	Register("nginx", newNginx)
}

// benchSnapshot is apps applications, each served by every one of
// backends backends, spread over 50 listen ports with two domains each.
func benchSnapshot(apps, backends int) catalog.Snapshot {
	nodes := make([]catalog.Node, 0, backends)
	for b := range backends {
		var list []catalog.Application
		for a := range apps {
			list = append(list, httpApp(fmt.Sprintf("app-%04d", a), 8000+a%50, 10000+a,
				fmt.Sprintf("app-%04d.example.com", a), fmt.Sprintf("*.app-%04d.example.com", a)))
		}
		addr := netip.AddrFrom4([4]byte{10, 1, byte(b >> 8), byte(b)})
		nodes = append(nodes, catalog.Node{Name: fmt.Sprintf("backend-%03d", b), Addr: addr, Role: catalog.RoleBackend, Applications: list})
	}
	return catalog.NewSnapshot(nodes)
}

func TestBenchSnapshotRenders(t *testing.T) {
	nginx := nginxBinary(t)
	g := newGen(t, "")
	dir := t.TempDir()
	out, err := g.Render(Input{Snapshot: benchSnapshot(1000, 10), ListenAddr: "127.0.0.1", Standalone: true, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Warnings) != 0 {
		t.Errorf("warnings: %q", out.Warnings[:min(3, len(out.Warnings))])
	}
	if n := bytes.Count(out.Config, []byte("\n    upstream ")); n != 1000 {
		t.Errorf("%d upstreams, want 1000", n)
	}
	if n := bytes.Count(out.Config, []byte(" max_fails=")); n != 10_000 {
		t.Errorf("%d upstream servers, want 10000", n)
	}
	nginxCheckStandalone(t, nginx, dir, out.Config)
}

func BenchmarkNginxRender(b *testing.B) {
	g := newGen(b, "")
	in := Input{Snapshot: benchSnapshot(1000, 10), ListenAddr: "0.0.0.0", Standalone: true, StateDir: goldenStateDir}
	out, err := g.Render(in)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(out.Config)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := g.Render(in); err != nil {
			b.Fatal(err)
		}
	}
}
