package catalog

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// checkErr fails t unless err is nil exactly when wantErr is empty, and
// otherwise mentions wantErr.
func checkErr(t *testing.T, err error, wantErr string) {
	t.Helper()
	switch {
	case wantErr == "" && err != nil:
		t.Errorf("unexpected error: %v", err)
	case wantErr != "" && err == nil:
		t.Errorf("no error, want one containing %q", wantErr)
	case wantErr != "" && !strings.Contains(err.Error(), wantErr):
		t.Errorf("error %q does not contain %q", err, wantErr)
	}
}

func TestCheckName(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{name: "simple", in: "web"},
		{name: "digits and separators", in: "web-2_api"},
		{name: "starts with digit", in: "2fa"},
		{name: "single character", in: "a"},
		{name: "ends with dash", in: "web-"},
		{name: "63 characters", in: strings.Repeat("a", 63)},
		{name: "empty", in: "", wantErr: "must not be empty"},
		{name: "64 characters", in: strings.Repeat("a", 64), wantErr: "64 characters, at most 63"},
		{name: "upper case", in: "Web", wantErr: "only a-z"},
		{name: "leading dash", in: "-web", wantErr: "starting with a letter or digit"},
		{name: "leading underscore", in: "_web", wantErr: "starting with a letter or digit"},
		{name: "dot", in: "web.api", wantErr: "only a-z"},
		{name: "space", in: "web api", wantErr: "only a-z"},
		{name: "semicolon", in: "web;", wantErr: "only a-z"},
		{name: "brace", in: "web{", wantErr: "only a-z"},
		{name: "dollar", in: "$web", wantErr: "only a-z"},
		{name: "quote", in: `we"b`, wantErr: "only a-z"},
		{name: "newline", in: "web\n", wantErr: "only a-z"},
		{name: "NUL", in: "web\x00", wantErr: "only a-z"},
		{name: "non-ASCII", in: "wéb", wantErr: "only a-z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkErr(t, CheckName(tt.in), tt.wantErr)
		})
	}
}

func TestCheckDomain(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	// 63+1+63+1+63+1+61 = 253 characters.
	max := label63 + "." + label63 + "." + label63 + "." + strings.Repeat("b", 61)
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{name: "simple", in: "example.com"},
		{name: "single label", in: "localhost"},
		{name: "digits and dashes", in: "api-2.example-1.com"},
		{name: "label starts with digit", in: "1password.com"},
		{name: "all digits", in: "123.456"},
		{name: "wildcard", in: "*.example.com"},
		{name: "wildcard single label", in: "*.local"},
		{name: "63-character label", in: label63 + ".com"},
		{name: "253 characters", in: max},
		{name: "empty", in: "", wantErr: "must not be empty"},
		{name: "254 characters", in: max + "c", wantErr: "254 characters, at most 253"},
		{name: "wildcard makes it too long", in: "*." + max[2:] + "c", wantErr: "254 characters"},
		{name: "64-character label", in: label63 + "a.com", wantErr: "longer than 63"},
		{name: "upper case", in: "Example.com", wantErr: "only a-z"},
		{name: "space", in: "exa mple.com", wantErr: "only a-z"},
		{name: "semicolon", in: "example.com;", wantErr: "only a-z"},
		{name: "brace", in: "example.com{", wantErr: "only a-z"},
		{name: "closing brace", in: "}.example.com", wantErr: "only a-z"},
		{name: "double quote", in: `"example.com"`, wantErr: "only a-z"},
		{name: "single quote", in: "'example.com'", wantErr: "only a-z"},
		{name: "dollar", in: "$host", wantErr: "only a-z"},
		{name: "hash", in: "example.com#x", wantErr: "only a-z"},
		{name: "backslash", in: `example\.com`, wantErr: "only a-z"},
		{name: "newline", in: "example.com\n", wantErr: "only a-z"},
		{name: "tab", in: "example\t.com", wantErr: "only a-z"},
		{name: "underscore", in: "my_host.com", wantErr: "only a-z"},
		{name: "tilde regex", in: "~^www", wantErr: "only a-z"},
		{name: "non-ASCII", in: "bücher.de", wantErr: "only a-z"},
		{name: "empty label", in: "example..com", wantErr: "empty label"},
		{name: "leading dot", in: ".example.com", wantErr: "empty label"},
		{name: "trailing dot", in: "example.com.", wantErr: "empty label"},
		{name: "only a dot", in: ".", wantErr: "empty label"},
		{name: "label starts with dash", in: "-example.com", wantErr: "starts or ends with '-'"},
		{name: "label ends with dash", in: "example-.com", wantErr: "starts or ends with '-'"},
		{name: "bare wildcard", in: "*", wantErr: "only a-z"},
		{name: "wildcard without domain", in: "*.", wantErr: "needs a domain"},
		{name: "double wildcard", in: "*.*.example.com", wantErr: "only a-z"},
		{name: "wildcard not first", in: "www.*.example.com", wantErr: "only a-z"},
		{name: "trailing wildcard", in: "www.example.*", wantErr: "only a-z"},
		{name: "partial wildcard label", in: "w*.example.com", wantErr: "only a-z"},
		{name: "wildcard then empty label", in: "*..com", wantErr: "empty label"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkErr(t, CheckDomain(tt.in), tt.wantErr)
		})
	}
}

func TestCheckPort(t *testing.T) {
	tests := []struct {
		name    string
		in      int
		wantErr string
	}{
		{name: "lowest", in: 1},
		{name: "http", in: 80},
		{name: "highest", in: 65535},
		{name: "zero", in: 0, wantErr: "0 is not a port"},
		{name: "negative", in: -1, wantErr: "-1 is not a port"},
		{name: "too high", in: 65536, wantErr: "65536 is not a port"},
		{name: "far too high", in: 1 << 40, wantErr: "is not a port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkErr(t, CheckPort(tt.in), tt.wantErr)
		})
	}
}

func TestCheckNodeName(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{name: "host name", in: "lb-1"},
		{name: "fqdn", in: "node1.example.com"},
		{name: "upper case and underscore", in: "Node_1"},
		{name: "leading dot and dash", in: ".-_"},
		{name: "128 characters", in: strings.Repeat("n", 128)},
		{name: "empty", in: "", wantErr: "must not be empty"},
		{name: "129 characters", in: strings.Repeat("n", 129), wantErr: "129 characters, at most 128"},
		{name: "space", in: "node 1", wantErr: "only letters"},
		{name: "semicolon", in: "node;", wantErr: "only letters"},
		{name: "brace", in: "node}", wantErr: "only letters"},
		{name: "hash", in: "node#1", wantErr: "only letters"},
		{name: "quote", in: "node'", wantErr: "only letters"},
		{name: "dollar", in: "$node", wantErr: "only letters"},
		{name: "newline", in: "node\n", wantErr: "only letters"},
		{name: "colon", in: "node:1", wantErr: "only letters"},
		{name: "slash", in: "a/b", wantErr: "only letters"},
		{name: "non-ASCII", in: "nöde", wantErr: "only letters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkErr(t, CheckNodeName(tt.in), tt.wantErr)
		})
	}
}

func TestRole(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Role
		wantErr string
	}{
		{name: "lb", in: "lb", want: RoleLB},
		{name: "backend", in: "backend", want: RoleBackend},
		{name: "empty", in: "", wantErr: "unknown role"},
		{name: "upper case", in: "LB", wantErr: "unknown role"},
		{name: "unknown", in: "proxy", wantErr: "unknown role"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRole(tt.in)
			checkErr(t, err, tt.wantErr)
			if got != tt.want {
				t.Errorf("ParseRole(%q) = %v, want %v", tt.in, got, tt.want)
			}
			if err == nil && got.String() != tt.in {
				t.Errorf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
	if s := Role(7).String(); s != "role(7)" {
		t.Errorf("Role(7).String() = %q", s)
	}
}

func TestProtocolValid(t *testing.T) {
	for _, p := range []Protocol{ProtocolHTTP, ProtocolHTTPS, ProtocolGRPC, ProtocolTCP, ProtocolUDP} {
		if !p.Valid() {
			t.Errorf("%q not valid", p)
		}
	}
	for _, p := range []Protocol{"", "HTTP", "http2", "sctp", "http "} {
		if p.Valid() {
			t.Errorf("%q valid", p)
		}
	}
}

func validApp() Application {
	return Application{Name: "web", ListenPort: 80, ApplicationPort: 8080, Protocol: ProtocolHTTP, Domains: []string{"example.com", "*.example.com"}}
}

func TestApplicationValidate(t *testing.T) {
	tooMany := make([]string, MaxDomains+1)
	for i := range tooMany {
		tooMany[i] = "d.example.com"
	}
	tests := []struct {
		name   string
		modify func(a *Application)
		// want are substrings of the errors, in order; none means valid.
		want []string
	}{
		{name: "valid", modify: func(*Application) {}},
		{name: "no domains", modify: func(a *Application) { a.Domains = nil }},
		{name: "udp without domains is accepted", modify: func(a *Application) { a.Protocol = ProtocolUDP; a.Domains = nil }},
		{name: "redirect-http on http", modify: func(a *Application) { a.RedirectHTTP = true }, want: []string{"redirect-http: only for https, not http"}},
		{name: "domains on tcp", modify: func(a *Application) { a.Protocol = ProtocolTCP }, want: []string{"domains: only for http, https and grpc, not tcp"}},
		{name: "paths and health path", modify: func(a *Application) { a.Paths = []string{"/api/", "/v1.2/x_y~z"}; a.HealthPath = "/healthz" }},
		{name: "dot-dot path", modify: func(a *Application) { a.Paths = []string{"/a/../b"} }, want: []string{"paths[0]: "}},
		{name: "path injecting a directive", modify: func(a *Application) { a.Paths = []string{"/x { return 200; }"} }, want: []string{"paths[0]: "}},
		{name: "relative path", modify: func(a *Application) { a.HealthPath = "healthz" }, want: []string{"health-path: "}},
		{name: "hash on a header", modify: func(a *Application) { a.Balance = BalanceHash; a.HashKey = "header:X-Account-Id" }},
		{name: "hash on a cookie", modify: func(a *Application) { a.Balance = BalanceHash; a.HashKey = "cookie:session_id" }},
		{name: "hash without key", modify: func(a *Application) { a.Balance = BalanceHash }, want: []string{"hash-key: required"}},
		{name: "key without hash", modify: func(a *Application) { a.HashKey = "source-ip" }, want: []string{"hash-key: only used"}},
		{name: "cookie name with dash", modify: func(a *Application) { a.Balance = BalanceHash; a.HashKey = "cookie:a-b" }, want: []string{"hash-key: "}},
		{name: "header key on tcp", modify: func(a *Application) {
			a.Protocol, a.Domains, a.Balance, a.HashKey = ProtocolTCP, nil, BalanceHash, "header:X"
		}, want: []string{"hash-key: "}},
		{name: "unknown balance", modify: func(a *Application) { a.Balance = "fastest" }, want: []string{"balance: "}},
		{name: "weight and passive checks", modify: func(a *Application) { a.Weight, a.MaxFails, a.FailTimeout = 100, 3, "10s" }},
		{name: "weight too big", modify: func(a *Application) { a.Weight = 101 }, want: []string{"weight: "}},
		{name: "fail timeout in ms", modify: func(a *Application) { a.FailTimeout = "500ms" }, want: []string{"fail-timeout: "}},
		{name: "64 domains", modify: func(a *Application) { a.Domains = tooMany[:MaxDomains] }},
		{name: "bad name", modify: func(a *Application) { a.Name = "Web" }, want: []string{"name: "}},
		{name: "empty name", modify: func(a *Application) { a.Name = "" }, want: []string{"name: must not be empty"}},
		{name: "bad listen port", modify: func(a *Application) { a.ListenPort = 0 }, want: []string{"listen-port: 0 is not a port"}},
		{name: "bad application port", modify: func(a *Application) { a.ApplicationPort = 70000 }, want: []string{"application-port: 70000"}},
		{name: "unknown protocol", modify: func(a *Application) { a.Protocol = "ftp" }, want: []string{`protocol: "ftp" is not one of`}},
		{name: "empty protocol", modify: func(a *Application) { a.Protocol = "" }, want: []string{`protocol: "" is not one of`}},
		{name: "too many domains", modify: func(a *Application) { a.Domains = tooMany }, want: []string{"domains: 65 domains, at most 64"}},
		{name: "bad domain", modify: func(a *Application) { a.Domains = []string{"ok.com", "bad;com"} }, want: []string{"domains[1]: "}},
		{
			name: "every problem reported",
			modify: func(a *Application) {
				*a = Application{Name: "-", ListenPort: -1, ApplicationPort: 0, Protocol: "x", Domains: []string{"", "A"}}
			},
			want: []string{"name: ", "listen-port: ", "application-port: ", "protocol: ", "domains[0]: ", "domains[1]: "},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := validApp()
			tt.modify(&a)
			errs := a.Validate()
			if len(errs) != len(tt.want) {
				t.Fatalf("got %d errors %v, want %d", len(errs), errs, len(tt.want))
			}
			for i, err := range errs {
				if !strings.Contains(err.Error(), tt.want[i]) {
					t.Errorf("error %d %q does not contain %q", i, err, tt.want[i])
				}
			}
		})
	}
}

func TestServerHostPort(t *testing.T) {
	tests := []struct {
		name string
		addr string
		port int
		want string
	}{
		{name: "IPv4", addr: "10.0.0.1", port: 8080, want: "10.0.0.1:8080"},
		{name: "IPv6", addr: "2001:db8::1", port: 443, want: "[2001:db8::1]:443"},
		{name: "IPv6 loopback", addr: "::1", port: 1, want: "[::1]:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Server{Node: "n", Addr: netip.MustParseAddr(tt.addr), Port: tt.port}
			if got := s.HostPort(); got != tt.want {
				t.Errorf("HostPort() = %q, want %q", got, tt.want)
			}
		})
	}
}

func backend(name, addr string, apps ...Application) Node {
	return Node{Name: name, Addr: netip.MustParseAddr(addr), Role: RoleBackend, Applications: apps}
}

func app(name string, listen, port int, proto Protocol, domains ...string) Application {
	return Application{Name: name, ListenPort: listen, ApplicationPort: port, Protocol: proto, Domains: domains}
}

func TestNewSnapshot(t *testing.T) {
	in := []Node{backend("c", "10.0.0.3"), backend("a", "10.0.0.1"), {Name: "b", Role: RoleLB}}
	s := NewSnapshot(in)
	var names []string
	for _, n := range s.Nodes {
		names = append(names, n.Name)
	}
	if want := []string{"a", "b", "c"}; !slices.Equal(names, want) {
		t.Errorf("nodes %v, want %v", names, want)
	}
	if in[0].Name != "c" || in[1].Name != "a" {
		t.Errorf("NewSnapshot reordered its input: %v", in)
	}
	if got := s.Backends(); got != 2 {
		t.Errorf("Backends() = %d, want 2", got)
	}
	if got := NewSnapshot(nil).Backends(); got != 0 {
		t.Errorf("empty Backends() = %d", got)
	}
}

func TestSnapshotServices(t *testing.T) {
	web := app("web", 80, 8080, ProtocolHTTP, "example.com")
	tests := []struct {
		name          string
		nodes         []Node
		want          []Service
		wantConflicts []Conflict
	}{
		{name: "empty", want: []Service{}},
		{
			name:  "load balancers are ignored",
			nodes: []Node{{Name: "lb1", Role: RoleLB, Addr: netip.MustParseAddr("10.0.0.9"), Applications: []Application{web}}},
			want:  []Service{},
		},
		{
			name:  "backend without applications",
			nodes: []Node{backend("b1", "10.0.0.1")},
			want:  []Service{},
		},
		{
			name: "grouped by name, servers sorted by node",
			nodes: []Node{
				backend("b2", "10.0.0.2", web),
				backend("b1", "10.0.0.1", app("web", 80, 9090, ProtocolHTTP, "example.com")),
				{Name: "lb", Role: RoleLB, Addr: netip.MustParseAddr("10.0.0.9")},
			},
			want: []Service{{
				Application: app("web", 80, 9090, ProtocolHTTP, "example.com"),
				Servers: []Server{
					{Node: "b1", Addr: netip.MustParseAddr("10.0.0.1"), Port: 9090, Weight: 1},
					{Node: "b2", Addr: netip.MustParseAddr("10.0.0.2"), Port: 8080, Weight: 1},
				},
			}},
		},
		{
			name: "services sorted by application name",
			nodes: []Node{
				backend("b1", "10.0.0.1", app("zeta", 81, 1, ProtocolHTTP), app("alpha", 82, 2, ProtocolTCP)),
				backend("b2", "2001:db8::2", app("mid", 83, 3, ProtocolGRPC)),
			},
			want: []Service{
				{Application: app("alpha", 82, 2, ProtocolTCP), Servers: []Server{{Node: "b1", Addr: netip.MustParseAddr("10.0.0.1"), Port: 2, Weight: 1}}},
				{Application: app("mid", 83, 3, ProtocolGRPC), Servers: []Server{{Node: "b2", Addr: netip.MustParseAddr("2001:db8::2"), Port: 3, Weight: 1}}},
				{Application: app("zeta", 81, 1, ProtocolHTTP), Servers: []Server{{Node: "b1", Addr: netip.MustParseAddr("10.0.0.1"), Port: 1, Weight: 1}}},
			},
		},
		{
			name: "first backend defines domains; differing domains are no conflict",
			nodes: []Node{
				backend("b1", "10.0.0.1", web),
				backend("b2", "10.0.0.2", app("web", 80, 8080, ProtocolHTTP, "other.example.com")),
			},
			want: []Service{{
				Application: web,
				Servers: []Server{
					{Node: "b1", Addr: netip.MustParseAddr("10.0.0.1"), Port: 8080, Weight: 1},
					{Node: "b2", Addr: netip.MustParseAddr("10.0.0.2"), Port: 8080, Weight: 1},
				},
			}},
		},
		{
			name: "protocol conflict leaves the later backend out",
			nodes: []Node{
				backend("b1", "10.0.0.1", web),
				backend("b2", "10.0.0.2", app("web", 80, 8080, ProtocolTCP)),
				backend("b3", "10.0.0.3", web),
			},
			want: []Service{{
				Application: web,
				Servers: []Server{
					{Node: "b1", Addr: netip.MustParseAddr("10.0.0.1"), Port: 8080, Weight: 1},
					{Node: "b3", Addr: netip.MustParseAddr("10.0.0.3"), Port: 8080, Weight: 1},
				},
			}},
			wantConflicts: []Conflict{{Application: "web", Node: "b2", Reason: "advertises tcp on listen port 80, but http on 80 is in use"}},
		},
		{
			name: "listen port conflict",
			nodes: []Node{
				backend("b1", "10.0.0.1", web),
				backend("b2", "10.0.0.2", app("web", 81, 8080, ProtocolHTTP, "example.com")),
			},
			want: []Service{{
				Application: web,
				Servers:     []Server{{Node: "b1", Addr: netip.MustParseAddr("10.0.0.1"), Port: 8080, Weight: 1}},
			}},
			wantConflicts: []Conflict{{Application: "web", Node: "b2", Reason: "advertises http on listen port 81, but http on 80 is in use"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, conflicts := NewSnapshot(tt.nodes).Services()
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("services:\n got %+v\nwant %+v", got, tt.want)
			}
			if !reflect.DeepEqual(conflicts, tt.wantConflicts) {
				t.Errorf("conflicts:\n got %+v\nwant %+v", conflicts, tt.wantConflicts)
			}
		})
	}
}

// TestSnapshotServicesDeterministic checks that the input order of nodes
// does not matter and that repeated calls agree, including which backend
// wins a conflict.
func TestSnapshotServicesDeterministic(t *testing.T) {
	nodes := []Node{
		backend("b1", "10.0.0.1", app("api", 81, 9000, ProtocolHTTP, "api.example.com"), app("web", 80, 8080, ProtocolHTTP)),
		backend("b2", "10.0.0.2", app("api", 81, 9001, ProtocolGRPC), app("db", 5432, 5432, ProtocolTCP)),
		backend("b3", "2001:db8::3", app("web", 80, 8081, ProtocolHTTP, "www.example.com")),
		backend("b4", "10.0.0.4", app("api", 82, 9000, ProtocolHTTP), app("web", 80, 8080, ProtocolHTTP)),
		{Name: "lb1", Role: RoleLB, Addr: netip.MustParseAddr("10.0.0.100")},
	}
	want, wantConflicts := NewSnapshot(nodes).Services()
	if len(want) != 3 || len(wantConflicts) != 2 {
		t.Fatalf("got %d services and %d conflicts, want 3 and 2", len(want), len(wantConflicts))
	}
	perm := slices.Clone(nodes)
	for i := range 50 {
		// A deterministic sequence of different orders: rotate and swap.
		perm = append(perm[1:], perm[0])
		if i%3 == 0 {
			perm[0], perm[len(perm)-1] = perm[len(perm)-1], perm[0]
		}
		got, conflicts := NewSnapshot(perm).Services()
		if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(conflicts, wantConflicts) {
			t.Fatalf("order %d gave a different result:\n got %+v %+v\nwant %+v %+v", i, got, conflicts, want, wantConflicts)
		}
	}
}

func TestServicesSkipInstancesThatDoNotServe(t *testing.T) {
	web := func(state State) Application {
		return Application{Name: "web", ListenPort: 80, ApplicationPort: 8080, Protocol: ProtocolHTTP, State: state}
	}
	node := func(name, addr string, a Application) Node {
		return Node{Name: name, Addr: netip.MustParseAddr(addr), Role: RoleBackend, Applications: []Application{a}}
	}
	tests := []struct {
		name string
		in   []Node
		want []string // serving node names, nil when the app is absent
	}{
		{"empty state serves", []Node{node("a", "10.0.0.1", web(""))}, []string{"a"}},
		{"draining and down are left out", []Node{
			node("a", "10.0.0.1", web(StateDraining)), node("b", "10.0.0.2", web(StateUp)), node("c", "10.0.0.3", web(StateDown)),
		}, []string{"b"}},
		{"no serving instance means no service", []Node{node("a", "10.0.0.1", web(StateDraining))}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			services, _ := NewSnapshot(tt.in).Services()
			var got []string
			for _, s := range services {
				for _, srv := range s.Servers {
					got = append(got, srv.Node)
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("serving = %v, want %v", got, tt.want)
			}
		})
	}
}
