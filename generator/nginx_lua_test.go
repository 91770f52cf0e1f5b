package generator

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/scrimplb/scrimp/catalog"
)

// requireLuaModule skips when Debian's lua module for nginx is missing on
// a developer machine, and fails in CI, where `make test` installs it.
func requireLuaModule(t *testing.T) {
	t.Helper()
	for _, m := range DebianLuaModules {
		if _, err := os.Stat(m); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("the nginx lua module is required in CI: %v", err)
			}
			t.Skipf("nginx lua module not installed (apt-get install -y libnginx-mod-http-lua libnginx-mod-http-ndk lua-resty-core): %v", err)
		}
	}
}

// luaGoldenCases are rendered with the lua balancer; their golden files
// are testdata/nginxlua-NAME.golden.
var luaGoldenCases = []goldenCase{
	{name: "empty", options: `{"balancer": "lua"}`, standalone: true, listen: "0.0.0.0"},
	{
		// Every balancing method, a grpc application (lua too), a
		// stream one (server lines: it reloads) and a retained one.
		name: "balance", options: `{"balancer": "lua", "max-fails": 2, "fail-timeout": "1m"}`, standalone: true, listen: "0.0.0.0",
		nodes: []catalog.Node{
			backendNode("b1", "10.0.0.1",
				httpApp("web", 8080, 8080, "example.com"),
				withBalance(httpApp("by-account", 8001, 8080), catalog.BalanceHash, "header:X-Account-Id"),
				withBalance(httpApp("least", 8002, 8080), catalog.BalanceLeastConn, ""),
				withBalance(httpApp("random", 8003, 8080), catalog.BalanceRandom, ""),
				withBalance(grpcApp("rpc", 50051, 50051), catalog.BalanceHash, "cookie:session_ID"),
				protoApp("db", catalog.ProtocolTCP, 15432, 5432)),
			backendNode("b2", "10.0.0.2",
				withServer(httpApp("web", 8080, 8080, "example.com"), 3, 5, "30s"),
				withBalance(httpApp("by-account", 8001, 8080), catalog.BalanceHash, "header:X-Account-Id"),
				protoApp("db", catalog.ProtocolTCP, 15432, 5432)),
		},
		retained: []catalog.Application{httpApp("gone", 8090, 8080)},
	},
	{
		// auto with the module found.
		name: "auto", standalone: true, listen: "127.0.0.1",
		nodes: []catalog.Node{backendNode("b1", "10.0.0.1", httpApp("web", 8080, 8080))},
	},
}

func luaInput(c goldenCase, stateDir string) Input {
	in := c.input(stateDir)
	in.NginxLua = true
	return in
}

func TestNginxLuaGolden(t *testing.T) {
	nginx := findNginx(t)
	for _, tc := range luaGoldenCases {
		t.Run(tc.name, func(t *testing.T) {
			g := newGen(t, tc.options)
			out, err := g.Render(luaInput(tc, goldenStateDir))
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			if !slices.Equal(out.Warnings, tc.warnings) {
				t.Errorf("warnings:\n got %q\nwant %q", out.Warnings, tc.warnings)
			}
			if out.Runtime == nil || out.Runtime.Payload == nil {
				t.Fatalf("lua mode rendered no runtime payload")
			}
			var doc any
			if err := json.Unmarshal(out.Runtime.Payload, &doc); err != nil {
				t.Errorf("payload is not JSON: %v\n%s", err, out.Runtime.Payload)
			}
			golden := filepath.Join("testdata", "nginxlua-"+tc.name+".golden")
			if *update {
				if err := os.WriteFile(golden, out.Config, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./generator -run TestNginxLuaGolden -update to create it)", err)
			}
			if !bytes.Equal(out.Config, want) {
				t.Errorf("output differs from %s (run with -update to accept):\n%s", golden, out.Config)
			}
			if nginx == "" {
				t.Skip("golden file matches; " + noNginx)
			}
			requireLuaModule(t)
			if bytes.Contains(out.Config, []byte("load_module "+DebianStreamModule)) {
				requireStreamModule(t)
			}
			dir := t.TempDir()
			real, err := g.Render(luaInput(tc, dir))
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			if got := strings.ReplaceAll(string(real.Config), dir, goldenStateDir); got != string(want) {
				t.Errorf("output for state dir %s differs from the golden file beyond the paths:\n%s", dir, real.Config)
			}
			// The managed runner creates the socket's directory.
			if err := os.Mkdir(filepath.Join(dir, NginxLuaSocketDir), 0o700); err != nil {
				t.Fatal(err)
			}
			nginxCheckStandalone(t, nginx, dir, real.Config)
		})
	}
}

// TestNginxLuaMode: which inputs get the lua balancer.
func TestNginxLuaMode(t *testing.T) {
	nodes := []catalog.Node{backendNode("b1", "10.0.0.1", httpApp("web", 8080, 8080))}
	long := "/" + strings.Repeat("d", 100)
	cases := []struct {
		name, options string
		standalone    bool
		found         bool // Input.NginxLua
		stateDir      string
		lua           bool
		warn          string
	}{
		{name: "auto found", standalone: true, found: true, lua: true},
		{name: "auto not found", standalone: true},
		{name: "auto include", found: true},
		{name: "lua forced", options: `{"balancer":"lua"}`, standalone: true, lua: true},
		{name: "lua include", options: `{"balancer":"lua"}`, found: true, warn: "balancer: lua needs managed mode"},
		{name: "reload", options: `{"balancer":"reload"}`, standalone: true, found: true},
		{name: "socket too long", options: `{"balancer":"lua"}`, standalone: true, stateDir: long, warn: "longer than the 107 characters"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.stateDir
			if dir == "" {
				dir = goldenStateDir
			}
			out, err := newGen(t, tc.options).Render(Input{Snapshot: catalog.NewSnapshot(nodes), ListenAddr: "0.0.0.0",
				Standalone: tc.standalone, StateDir: dir, NginxLua: tc.found})
			if err != nil {
				t.Fatal(err)
			}
			lua := bytes.Contains(out.Config, []byte("balancer_by_lua_block"))
			if lua != tc.lua || (out.Runtime != nil) != tc.lua {
				t.Errorf("lua balancer %v, runtime %v; want %v", lua, out.Runtime != nil, tc.lua)
			}
			if got := strings.Join(out.Warnings, "; "); tc.warn == "" && got != "" || !strings.Contains(got, tc.warn) {
				t.Errorf("warnings %q; want %q", got, tc.warn)
			}
		})
	}
	for _, bad := range []string{`{"balancer":"fast"}`, `{"lua-modules":["relative.so"]}`, `{"lua-modules":["/a b.so"]}`} {
		if _, err := New("nginx", json.RawMessage(bad)); err == nil {
			t.Errorf("New(nginx, %s) accepted it", bad)
		}
	}
}

// TestNginxLuaSkeleton: membership changes (joins, leaves, drains,
// weights, failure settings, balancing method) change only the payload;
// listeners, domains and options change the skeleton.
func TestNginxLuaSkeleton(t *testing.T) {
	g := newGen(t, `{"balancer":"lua"}`)
	render := func(nodes ...catalog.Node) Output {
		t.Helper()
		out, err := g.Render(Input{Snapshot: catalog.NewSnapshot(nodes), ListenAddr: "0.0.0.0", Standalone: true, StateDir: goldenStateDir})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	web := func(port int) catalog.Application { return httpApp("web", 8080, port, "example.com") }
	draining := web(8080)
	draining.State = catalog.StateDraining
	base := render(backendNode("b1", "10.0.0.1", web(8080)), backendNode("b2", "10.0.0.2", web(8080)))
	same := map[string]Output{
		"join":         render(backendNode("b1", "10.0.0.1", web(8080)), backendNode("b2", "10.0.0.2", web(8080)), backendNode("b3", "10.0.0.3", web(8080))),
		"leave":        render(backendNode("b1", "10.0.0.1", web(8080))),
		"drain":        render(backendNode("b1", "10.0.0.1", web(8080)), backendNode("b2", "10.0.0.2", draining)),
		"weight":       render(backendNode("b1", "10.0.0.1", withServer(web(8080), 5, 0, "")), backendNode("b2", "10.0.0.2", web(8080))),
		"fail-timeout": render(backendNode("b1", "10.0.0.1", withServer(web(8080), 1, 3, "9s")), backendNode("b2", "10.0.0.2", web(8080))),
		"port":         render(backendNode("b1", "10.0.0.1", web(9090)), backendNode("b2", "10.0.0.2", web(8080))),
	}
	for name, out := range same {
		if out.Runtime.Skeleton != base.Runtime.Skeleton {
			t.Errorf("%s changed the skeleton", name)
		}
		if bytes.Equal(out.Runtime.Payload, base.Runtime.Payload) {
			t.Errorf("%s did not change the payload", name)
		}
	}
	if strings.Contains(string(same["drain"].Runtime.Payload), `"b2"`) {
		t.Errorf("a draining backend is in the membership:\n%s", same["drain"].Runtime.Payload)
	}
	other := map[string]Output{
		"domain":   render(backendNode("b1", "10.0.0.1", httpApp("web", 8080, 8080, "example.org"))),
		"listener": render(backendNode("b1", "10.0.0.1", httpApp("web", 8081, 8080, "example.com"))),
		"new app":  render(backendNode("b1", "10.0.0.1", web(8080), httpApp("api", 8082, 8080))),
	}
	for name, out := range other {
		if out.Runtime.Skeleton == base.Runtime.Skeleton {
			t.Errorf("%s kept the skeleton", name)
		}
	}
}

// TestNginxLuaPayloadEscapes: no value can end the Lua long string a
// membership line is written in.
func TestNginxLuaPayloadEscapes(t *testing.T) {
	if got := luaJSON("a]==]b"); strings.Contains(got, "]") {
		t.Errorf("luaJSON kept a ']': %s", got)
	}
	var s string
	if err := json.Unmarshal([]byte(luaJSON("a]==]b")), &s); err != nil || s != "a]==]b" {
		t.Errorf("luaJSON does not round-trip: %q, %v", s, err)
	}
	if _, err := exec.LookPath("true"); err != nil {
		t.Skip()
	}
}
