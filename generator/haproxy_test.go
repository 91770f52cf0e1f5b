package generator

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
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

// The directories golden files are written with. The real-binary check
// renders with temporary directories instead and expects the same text
// with these in their place.
const (
	hapGoldenStateDir = "/var/lib/scrimp"
	hapGoldenTLSDir   = "/etc/scrimp/tls"
)

func hapNode(name, addr string, apps ...catalog.Application) catalog.Node {
	return catalog.Node{Name: name, Addr: netip.MustParseAddr(addr), Role: catalog.RoleBackend, Applications: apps}
}

func hapApplication(name string, proto catalog.Protocol, listen, port int, domains ...string) catalog.Application {
	return catalog.Application{Name: name, ListenPort: listen, ApplicationPort: port, Protocol: proto, Domains: domains}
}

// hapWith returns a modified copy of a, for the fields a case cares about.
func hapWith(a catalog.Application, f func(*catalog.Application)) catalog.Application {
	f(&a)
	return a
}

// hapTLS is a certificate of a golden case; Cert and Key are file names
// in the case's TLS directory.
type hapTLS struct {
	domains   []string
	cert, key string
}

type hapGoldenCase struct {
	name       string // the golden file is testdata/haproxy-NAME.golden
	options    string // raw generator options; empty for the defaults
	standalone bool
	listen     string
	nodes      []catalog.Node
	retained   []catalog.Application
	tls        []hapTLS
	warnings   []string
	asRoot     bool // Input.AsRoot
	acme       *ACMERoute
}

var (
	hapWeb  = hapApplication("web", catalog.ProtocolHTTP, 8080, 8080, "example.com", "www.example.com")
	hapSite = hapApplication("site", catalog.ProtocolHTTP, 8080, 8000)
)

var hapGoldenCases = []hapGoldenCase{
	{name: "empty_standalone", standalone: true, listen: "0.0.0.0"},
	{
		// Server slots: every backend section has at least four, the
		// backends in the slots their names hash to; a retained
		// application keeps its free slots.
		name: "runtime_api", options: `{"runtime-api": true, "server-slots": 4}`, standalone: true, listen: "0.0.0.0",
		nodes: []catalog.Node{
			hapNode("b1", "10.0.0.1", hapWeb,
				hapWith(hapApplication("rpc", catalog.ProtocolGRPC, 9090, 9090), func(a *catalog.Application) { a.HealthPath = "/healthz"; a.MaxFails = 5 }),
				hapApplication("db", catalog.ProtocolTCP, 5432, 5432)),
			hapNode("b2", "10.0.0.2", hapWith(hapWeb, func(a *catalog.Application) { a.Weight = 3 }),
				hapWith(hapApplication("rpc", catalog.ProtocolGRPC, 9090, 9091), func(a *catalog.Application) { a.HealthPath = "/healthz"; a.MaxFails = 5 })),
			hapNode("b3", "10.0.0.3", hapWith(hapWeb, func(a *catalog.Application) { a.State = catalog.StateDraining })),
		},
		retained: []catalog.Application{hapApplication("old", catalog.ProtocolHTTP, 8080, 8080, "old.example.com")},
	},
	{name: "empty_include", listen: "0.0.0.0"},
	{
		// Started as root: the workers switch to the configured user and
		// group; the master keeps root to reload.
		name: "as_root", options: `{"user": "haproxy", "group": "nogroup"}`, standalone: true, listen: "0.0.0.0", asRoot: true,
		nodes: []catalog.Node{hapNode("b1", "10.0.0.1", hapApplication("web", catalog.ProtocolHTTP, 8080, 8080))},
	},
	{
		// AsRoot changes nothing in a fragment: the system's global
		// section decides.
		name: "as_root_include", listen: "0.0.0.0", asRoot: true,
		nodes: []catalog.Node{hapNode("b1", "10.0.0.1", hapApplication("web", catalog.ProtocolHTTP, 8080, 8080))},
	},
	{
		name: "lb_only", standalone: true, listen: "0.0.0.0",
		nodes: []catalog.Node{{Name: "lb-1", Addr: netip.MustParseAddr("10.0.0.100"), Role: catalog.RoleLB}},
	},
	{
		name: "one_app_three_backends", standalone: true, listen: "0.0.0.0",
		nodes: []catalog.Node{
			hapNode("b3", "10.0.0.3", hapApplication("web", catalog.ProtocolHTTP, 8080, 8082)),
			hapNode("b1", "10.0.0.1", hapApplication("web", catalog.ProtocolHTTP, 8080, 8080)),
			{Name: "lb-1", Addr: netip.MustParseAddr("10.0.0.100"), Role: catalog.RoleLB},
			hapNode("b2", "10.0.0.2", hapApplication("web", catalog.ProtocolHTTP, 8080, 8081)),
		},
	},
	{
		name: "one_app_three_backends_include", listen: "127.0.0.1",
		nodes: []catalog.Node{
			hapNode("b1", "10.0.0.1", hapApplication("web", catalog.ProtocolHTTP, 8080, 8080)),
			hapNode("b2", "10.0.0.2", hapApplication("web", catalog.ProtocolHTTP, 8080, 8081)),
			hapNode("b3", "10.0.0.3", hapApplication("web", catalog.ProtocolHTTP, 8080, 8082)),
		},
	},
	{
		// Exact hosts, wildcards of two depths, path prefixes on a shared
		// host and on any host, and a catch-all, all on one port; the
		// order of the use_backend lines is the point.
		name: "http_hosts_paths", standalone: true, listen: "0.0.0.0",
		nodes: []catalog.Node{
			hapNode("b1", "10.0.0.1",
				hapWith(hapApplication("api", catalog.ProtocolHTTP, 8080, 9000, "api.example.com", "example.com"), func(a *catalog.Application) { a.Paths = []string{"/v1", "/v2/beta"} }),
				hapWith(hapApplication("docs", catalog.ProtocolHTTP, 8080, 9100, "example.com"), func(a *catalog.Application) { a.Paths = []string{"/docs"} }),
				hapApplication("eu", catalog.ProtocolHTTP, 8080, 9200, "*.eu.apps.example.com"),
				hapSite,
				hapWith(hapApplication("static", catalog.ProtocolHTTP, 8080, 9300), func(a *catalog.Application) { a.Paths = []string{"/static", "/assets/img"} }),
				hapApplication("tenants", catalog.ProtocolHTTP, 8080, 9400, "*.apps.example.com", "apps.example.com"),
				hapWeb),
			hapNode("b2", "10.0.0.2",
				hapWith(hapApplication("api", catalog.ProtocolHTTP, 8080, 9000, "api.example.com", "example.com"), func(a *catalog.Application) {
					a.Paths = []string{"/v1", "/v2/beta"}
					a.Weight = 3
				}),
				hapWeb),
		},
	},
	{
		name: "no_catch_all_404", listen: "0.0.0.0",
		nodes: []catalog.Node{
			hapNode("b1", "10.0.0.1", hapWeb, hapApplication("admin", catalog.ProtocolHTTP, 9090, 9090, "admin.example.com")),
		},
	},
	{
		name: "https_standalone", standalone: true, listen: "0.0.0.0",
		tls: []hapTLS{
			{domains: []string{"example.com", "www.example.com"}, cert: "example.com.crt", key: "example.com.key"},
			{domains: []string{"*.apps.example.com"}, cert: "apps.pem", key: "apps.pem"},
			{domains: []string{"shop.example.com"}, cert: "shop/fullchain.pem", key: "shop/privkey.pem"},
		},
		nodes: []catalog.Node{
			hapNode("b1", "10.0.0.1",
				hapApplication("secure", catalog.ProtocolHTTPS, 8443, 8080, "example.com", "www.example.com", "*.apps.example.com"),
				hapApplication("shop", catalog.ProtocolHTTPS, 8443, 8081, "shop.example.com"),
				hapApplication("unsigned", catalog.ProtocolHTTPS, 8443, 8082, "nocert.example.com", "www.example.com"),
				hapApplication("fallback", catalog.ProtocolHTTPS, 9443, 8083)),
		},
		warnings: []string{
			"application fallback: certificate " + hapGoldenTLSDir + "/shop/fullchain.pem: HAProxy 2.6 reads its private key from the same file or from " + hapGoldenTLSDir + "/shop/fullchain.pem.key, not from " + hapGoldenTLSDir + "/shop/privkey.pem (move the key there, or concatenate certificate and key into one file and name it as both); certificate left out",
			"application shop: certificate " + hapGoldenTLSDir + "/shop/fullchain.pem: HAProxy 2.6 reads its private key from the same file or from " + hapGoldenTLSDir + "/shop/fullchain.pem.key, not from " + hapGoldenTLSDir + "/shop/privkey.pem (move the key there, or concatenate certificate and key into one file and name it as both); domain shop.example.com left out",
			"application shop: no domain has a certificate HAProxy can load; left out",
			"application unsigned: no certificate for nocert.example.com in lb.tls; domain left out",
			"application unsigned: listen port 8443 already routes www.example.com any path (application secure); left out",
		},
	},
	{
		// An application left out entirely does not claim its port.
		name: "left_out_frees_port", listen: "0.0.0.0",
		nodes: []catalog.Node{
			hapNode("b1", "10.0.0.1",
				hapApplication("aaa-secure", catalog.ProtocolHTTPS, 8444, 8443, "x.example.com"),
				hapApplication("plain", catalog.ProtocolHTTP, 8444, 8080)),
		},
		warnings: []string{
			"application aaa-secure: no certificate for x.example.com in lb.tls; domain left out",
			"application aaa-secure: no domain has a certificate HAProxy can load; left out",
		},
	},
	{
		// 64 domains of 200 characters: HAProxy reads at most 64 words a
		// line, so the host ACL continues on a second line.
		name: "many_long_domains", standalone: true, listen: "0.0.0.0",
		nodes: []catalog.Node{
			hapNode("b1", "10.0.0.1", hapWith(hapApplication("many", catalog.ProtocolHTTP, 8080, 8080, hapLongDomains(64)...), func(a *catalog.Application) {
				a.Paths = []string{"/a", "/b"}
			})),
		},
	},
	{
		// One bind line takes 29 certificates: the 30th and 31st domain of
		// port 8443 are left out, and the catch-all on 9443 is served with
		// the first 29.
		name: "many_certificates", standalone: true, listen: "0.0.0.0",
		tls: hapManyCerts(31),
		nodes: []catalog.Node{
			hapNode("b1", "10.0.0.1", slices.Concat(hapManyHTTPS(31, 8443), []catalog.Application{hapApplication("zz-all", catalog.ProtocolHTTPS, 9443, 9443)})...),
		},
		warnings: []string{
			"application site-29: listen port 8443 has the most certificates one HAProxy bind line takes (29), none for site-29.example.com any path; left out",
			"application site-30: listen port 8443 has the most certificates one HAProxy bind line takes (29), none for site-30.example.com any path; left out",
			"application zz-all: listen port 9443 has the most certificates one HAProxy bind line takes (29), none for 2 of its certificates; those left out",
		},
	},
	{
		// What the catalog would have rejected is left out here too.
		name: "invalid_input", listen: "0.0.0.0",
		nodes: []catalog.Node{
			hapNode("b1", "10.0.0.1", hapApplication("web", catalog.ProtocolHTTP, 8080, 8080, "example.com"),
				hapApplication("bad", catalog.ProtocolHTTP, 8081, 8080, "bad domain;")),
			hapNode("bad node", "10.0.0.2", hapApplication("web", catalog.ProtocolHTTP, 8080, 8080, "example.com")),
			{Name: "zoned", Addr: netip.MustParseAddr("fe80::1%eth0"), Role: catalog.RoleBackend, Applications: []catalog.Application{hapApplication("web", catalog.ProtocolHTTP, 8080, 8080, "example.com")}},
			hapNode("b4", "10.0.0.4", hapWith(hapApplication("web", catalog.ProtocolHTTP, 8080, 8080, "example.com"), func(a *catalog.Application) { a.Weight = 1000 })),
		},
		retained: []catalog.Application{hapApplication("old", catalog.ProtocolHTTP, 8080, 0, "old.example.com")},
		warnings: []string{
			`application "bad": invalid definition left out: domains[0]: "bad domain;": label "bad domain;": only a-z, 0-9 and '-' are allowed`,
			`application web: backend "b4" left out: weight 1000 is not in 1-100`,
			`application web: backend "bad node" left out: node name: "bad node": only letters, digits, '.', '-' and '_' are allowed`,
			`application web: backend "zoned" left out: address "fe80::1%eth0" is not an IP address without zone`,
			`application "old": invalid definition left out: application-port: 0 is not a port in 1-65535`,
		},
	},
	{
		// Include fragments cannot set ssl-load-extra-del-ext, so the
		// key of NAME.crt must be NAME.crt.key.
		name: "https_include", listen: "0.0.0.0",
		tls: []hapTLS{
			{domains: []string{"example.com"}, cert: "example.com.crt", key: "example.com.crt.key"},
			{domains: []string{"www.example.com"}, cert: "www.crt", key: "www.key"},
		},
		nodes: []catalog.Node{
			hapNode("b1", "10.0.0.1", hapApplication("secure", catalog.ProtocolHTTPS, 443, 8080, "example.com", "www.example.com")),
		},
		warnings: []string{
			"application secure: certificate " + hapGoldenTLSDir + "/www.crt: HAProxy 2.6 reads its private key from the same file or from " + hapGoldenTLSDir + "/www.crt.key, not from " + hapGoldenTLSDir + "/www.key (move the key there, or concatenate certificate and key into one file and name it as both); domain www.example.com left out",
		},
	},
	{
		name: "grpc", standalone: true, listen: "0.0.0.0",
		nodes: []catalog.Node{
			hapNode("b1", "10.0.0.1",
				hapApplication("rpc", catalog.ProtocolGRPC, 50051, 50051),
				hapWith(hapApplication("users", catalog.ProtocolGRPC, 50052, 50052, "users.example.com"), func(a *catalog.Application) {
					a.Balance, a.HashKey, a.HealthPath = catalog.BalanceHash, "header:x-user", "/healthz"
				})),
			hapNode("b2", "10.0.0.2", hapApplication("rpc", catalog.ProtocolGRPC, 50051, 50051)),
			hapNode("b3", "10.0.0.3", hapApplication("rpc", catalog.ProtocolGRPC, 50051, 50051)),
		},
	},
	{
		name: "tcp", standalone: true, listen: "0.0.0.0",
		nodes: []catalog.Node{
			hapNode("b1", "10.0.0.1",
				hapWith(hapApplication("db", catalog.ProtocolTCP, 15432, 5432), func(a *catalog.Application) { a.Balance = catalog.BalanceLeastConn }),
				hapApplication("db2", catalog.ProtocolTCP, 15432, 5433),
				hapWith(hapApplication("mqtt", catalog.ProtocolTCP, 1883, 1883), func(a *catalog.Application) {
					a.Balance, a.HashKey = catalog.BalanceHash, "source-ip"
				})),
			hapNode("b2", "10.0.0.2", hapWith(hapApplication("db", catalog.ProtocolTCP, 15432, 5432), func(a *catalog.Application) { a.Balance = catalog.BalanceLeastConn })),
		},
		warnings: []string{"application db2: listen port 15432 already forwards tcp to application db; left out"},
	},
	{
		name: "udp_left_out", standalone: true, listen: "0.0.0.0",
		nodes: []catalog.Node{
			hapNode("b1", "10.0.0.1", hapApplication("dns", catalog.ProtocolUDP, 10053, 5353), hapWeb),
		},
		warnings: []string{"application dns: protocol udp is not supported by the haproxy generator (HAProxy 2.6 has no UDP proxying); left out"},
	},
	{
		name: "balance", listen: "0.0.0.0",
		nodes: []catalog.Node{
			hapNode("b1", "10.0.0.1", hapBalanceApps()...),
			hapNode("b2", "10.0.0.2", hapBalanceApps()...),
		},
	},
	{
		// Retained applications keep their listener and routes and
		// answer 503; a live application wins a port from a retained one.
		name: "retained", standalone: true, listen: "0.0.0.0",
		tls: []hapTLS{{domains: []string{"secure.example.com"}, cert: "secure.crt", key: "secure.key"}},
		nodes: []catalog.Node{
			hapNode("b1", "10.0.0.1", hapWeb),
		},
		retained: []catalog.Application{
			hapApplication("shop", catalog.ProtocolHTTP, 8080, 8080, "shop.example.com"),
			hapApplication("db", catalog.ProtocolTCP, 15432, 5432),
			hapApplication("secure", catalog.ProtocolHTTPS, 8443, 8080, "secure.example.com"),
			hapApplication("rpc", catalog.ProtocolGRPC, 50051, 50051),
			hapApplication("dns", catalog.ProtocolUDP, 10053, 5353),
			hapApplication("raw", catalog.ProtocolTCP, 8080, 9999),
			hapWeb, // also live: the live one wins
		},
		warnings: []string{
			"application dns: protocol udp is not supported by the haproxy generator (HAProxy 2.6 has no UDP proxying); left out",
			"application raw: listen port 8080 already serves http (application web); left out",
		},
	},
	{
		name: "conflicts", listen: "0.0.0.0",
		nodes: []catalog.Node{
			hapNode("b1", "10.0.0.1", hapApplication("alpha", catalog.ProtocolHTTP, 8080, 1000), hapApplication("beta", catalog.ProtocolHTTP, 8080, 2000),
				hapApplication("gamma", catalog.ProtocolHTTP, 8080, 3000, "gamma.example.com"),
				hapWith(hapApplication("delta", catalog.ProtocolHTTP, 8080, 4000, "gamma.example.com", "delta.example.com"), func(a *catalog.Application) { a.Paths = []string{"/d"} }),
				hapWith(hapApplication("epsilon", catalog.ProtocolHTTP, 8080, 5000, "delta.example.com"), func(a *catalog.Application) { a.Paths = []string{"/d", "/e"} }),
				hapApplication("zeta", catalog.ProtocolTCP, 8080, 6000)),
			hapNode("b2", "10.0.0.2", hapApplication("alpha", catalog.ProtocolTCP, 8080, 1000)),
			hapNode("b3", "10.0.0.3", hapApplication("alpha", catalog.ProtocolHTTP, 8081, 1000)),
			hapNode("b4", "10.0.0.4", hapApplication("alpha", catalog.ProtocolHTTP, 8080, 1000)),
		},
		warnings: []string{
			"application alpha: backend b2 left out: advertises tcp on listen port 8080, but http on 8080 is in use",
			"application alpha: backend b3 left out: advertises http on listen port 8081, but http on 8080 is in use",
			"application beta: listen port 8080 already routes any host any path (application alpha); left out",
			"application epsilon: listen port 8080 already routes delta.example.com /d (application delta); those routes are left out",
			"application zeta: listen port 8080 already serves http (application alpha); left out",
		},
	},
	{
		name: "options_and_server_settings", standalone: true, listen: "127.0.0.1",
		options: `{"maxconn": 20000, "max-fails": 5, "fail-timeout": "30s", "check-interval": "500ms", "rise": 1,
			"timeout-connect": "2s", "timeout-client": "1m", "timeout-server": "90s", "timeout-tunnel": "2h",
			"hard-stop-after": "30s", "retry-after": 30}`,
		nodes: []catalog.Node{
			hapNode("b1.example_net", "10.0.0.1", hapWith(hapApplication("web", catalog.ProtocolHTTP, 8080, 8080), func(a *catalog.Application) {
				a.Weight, a.MaxFails, a.FailTimeout, a.HealthPath = 100, 1, "1m", "/healthz"
			})),
			hapNode("b2", "10.0.0.2", hapWith(hapApplication("web", catalog.ProtocolHTTP, 8080, 8080), func(a *catalog.Application) {
				a.FailTimeout = "999999m"
			})),
			hapNode("B-3", "10.0.0.3", hapApplication("web", catalog.ProtocolHTTP, 8080, 8080)),
		},
		retained: []catalog.Application{hapApplication("old", catalog.ProtocolHTTP, 8080, 8080, "old.example.com")},
		warnings: []string{"application web: backend b2: fail-timeout 999999m is longer than HAProxy allows; 596h is used"},
	},
	{
		name: "ipv6", standalone: true, listen: "::",
		nodes: []catalog.Node{
			hapNode("b1", "2001:db8::1", hapApplication("web", catalog.ProtocolHTTP, 8080, 8080, "example.com")),
			hapNode("b2", "10.0.0.2", hapApplication("web", catalog.ProtocolHTTP, 8080, 8080, "example.com")),
			hapNode("b3", "::ffff:10.0.0.3", hapApplication("web", catalog.ProtocolHTTP, 8080, 8080, "example.com")),
		},
	},
	{
		name: "ipv6_include", listen: "::1",
		nodes: []catalog.Node{hapNode("b1", "2001:db8::1", hapApplication("db", catalog.ProtocolTCP, 15432, 5432))},
	},
}

// hapLongDomains returns n distinct domains of 200 characters.
func hapLongDomains(n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("d%02d.%s.%s.%s.example.com", i, strings.Repeat("a", 60), strings.Repeat("b", 60), strings.Repeat("c", 52)))
	}
	return out
}

// hapManyCerts returns n certificates, site-N.example.com each.
func hapManyCerts(n int) []hapTLS {
	var out []hapTLS
	for i := range n {
		d := fmt.Sprintf("site-%02d.example.com", i)
		out = append(out, hapTLS{domains: []string{d}, cert: d + ".crt", key: d + ".key"})
	}
	return out
}

// hapManyHTTPS returns n https applications on port, one per certificate
// of hapManyCerts.
func hapManyHTTPS(n, port int) []catalog.Application {
	var out []catalog.Application
	for i := range n {
		out = append(out, hapApplication(fmt.Sprintf("site-%02d", i), catalog.ProtocolHTTPS, port, 10000+i, fmt.Sprintf("site-%02d.example.com", i)))
	}
	return out
}

// hapBalanceApps is one application per balancing algorithm and hash key.
func hapBalanceApps() []catalog.Application {
	var apps []catalog.Application
	for _, c := range []struct {
		name    string
		balance catalog.Balance
		key     string
	}{
		{"default", "", ""},
		{"round-robin", catalog.BalanceRoundRobin, ""},
		{"least-conn", catalog.BalanceLeastConn, ""},
		{"random", catalog.BalanceRandom, ""},
		{"hash-header", catalog.BalanceHash, "header:X-User-Id"},
		{"hash-cookie", catalog.BalanceHash, "cookie:session_id"},
		{"hash-query", catalog.BalanceHash, "query:user"},
		{"hash-source", catalog.BalanceHash, "source-ip"},
	} {
		apps = append(apps, hapWith(hapApplication(c.name, catalog.ProtocolHTTP, 8080, 8080, c.name+".example.com"), func(a *catalog.Application) {
			a.Balance, a.HashKey = c.balance, c.key
		}))
	}
	return apps
}

func newHAProxyGen(t testing.TB, options string) Generator {
	t.Helper()
	var raw json.RawMessage
	if options != "" {
		raw = json.RawMessage(options)
	}
	g, err := New("haproxy", raw)
	if err != nil {
		t.Fatalf("New(haproxy, %s): %v", options, err)
	}
	return g
}

func (c hapGoldenCase) input(stateDir, tlsDir string) Input {
	in := Input{Snapshot: catalog.NewSnapshot(c.nodes), ListenAddr: c.listen, Standalone: c.standalone, Retained: c.retained, AsRoot: c.asRoot, ACME: c.acme}
	if c.standalone {
		in.StateDir = stateDir
	}
	for _, t := range c.tls {
		in.TLS = append(in.TLS, TLSCert{Domains: t.domains, Cert: filepath.Join(tlsDir, t.cert), Key: filepath.Join(tlsDir, t.key)})
	}
	return in
}

func TestHAProxyGolden(t *testing.T) {
	bin := findHAProxy(t)
	for _, tc := range hapGoldenCases {
		t.Run(tc.name, func(t *testing.T) {
			g := newHAProxyGen(t, tc.options)
			out, err := g.Render(tc.input(hapGoldenStateDir, hapGoldenTLSDir))
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			if !slices.Equal(out.Warnings, tc.warnings) {
				t.Errorf("warnings:\n got %q\nwant %q", out.Warnings, tc.warnings)
			}
			golden := filepath.Join("testdata", "haproxy-"+tc.name+".golden")
			if *update {
				if err := os.WriteFile(golden, out.Config, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./generator -run TestHAProxyGolden -update to create it)", err)
			}
			if !bytes.Equal(out.Config, want) {
				t.Errorf("output differs from %s (run with -update to accept):\n%s", golden, out.Config)
			}
			hapAssertStructure(t, out.Config)

			// The same case rendered for real directories must be the
			// golden text with those directories, and HAProxy must accept
			// it without a warning.
			if bin == "" {
				t.Skip("golden file matches; " + noHAProxy)
			}
			dir := hapShortTempDir(t)
			stateDir, tlsDir := filepath.Join(dir, "state"), filepath.Join(dir, "tls")
			hapWriteCerts(t, tlsDir, tc.tls)
			real, err := g.Render(tc.input(stateDir, tlsDir))
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			got := strings.NewReplacer(stateDir, hapGoldenStateDir, tlsDir, hapGoldenTLSDir).Replace(string(real.Config))
			if got != string(want) {
				t.Errorf("output for %s differs from the golden file beyond the directories:\n%s", dir, real.Config)
			}
			if tc.standalone {
				hapCheck(t, bin, hapWrite(t, dir, "haproxy.cfg", real.Config))
			} else {
				hapCheck(t, bin, hapSystemConfig(t, dir), hapWrite(t, dir, "scrimp.cfg", real.Config))
			}
		})
	}
}

const noHAProxy = "haproxy not in PATH, so haproxy -c cannot check the output; set CI=1 to make this a failure"

// findHAProxy returns the haproxy binary to check configurations with, or
// "" if there is none. With CI set a missing haproxy fails the test: CI
// must check what is rendered.
func findHAProxy(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"haproxy", "/usr/sbin/haproxy"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("haproxy is not installed, and CI is set: the rendered configurations must be checked by haproxy")
	}
	return ""
}

// hapShortTempDir returns a temporary directory with a short path:
// HAProxy refuses unix socket paths longer than 97 characters, and a
// t.TempDir under a long test name can come close.
func hapShortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "scrimp-hap-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func hapWrite(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// hapSystemConfig writes the kind of haproxy.cfg an include fragment is
// loaded after: a global section, a defaults section in TCP mode (so a
// fragment that relied on it would be caught) and a listener of its own.
func hapSystemConfig(t *testing.T, dir string) string {
	t.Helper()
	return hapWrite(t, dir, "system.cfg", []byte("global\n    maxconn 100\n\ndefaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1s\n    timeout server 1s\n\nfrontend system\n    bind 127.0.0.1:1\n    tcp-request connection reject\n"))
}

// hapCheck runs `haproxy -c` on files (loaded in order) and fails t with
// HAProxy's own message if it rejects them or warns about anything.
func hapCheck(t *testing.T, bin string, files ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := []string{"-c"}
	for _, f := range files {
		args = append(args, "-f", f)
	}
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("[WARNING]")) || bytes.Contains(out, []byte("[ALERT]")) {
		text, _ := os.ReadFile(files[len(files)-1])
		t.Fatalf("haproxy -c %v: %v\n%s\n--- %s:\n%s", files, err, out, files[len(files)-1], text)
	}
}

// hapWriteCerts writes a self-signed certificate and its key for each of
// certs, in the file layout the case names (one file when cert and key
// are the same).
func hapWriteCerts(t *testing.T, dir string, certs []hapTLS) {
	t.Helper()
	for _, c := range certs {
		certPEM, keyPEM := hapSelfSigned(t, c.domains)
		if c.cert == c.key {
			hapWrite(t, dir, c.cert, append(certPEM, keyPEM...))
			continue
		}
		hapWrite(t, dir, c.cert, certPEM)
		hapWrite(t, dir, c.key, keyPEM)
	}
}

func hapSelfSigned(t *testing.T, domains []string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: domains[0]},
		DNSNames:     domains,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// hapKeywords are the first words every line inside a section may start
// with; anything else means a value split a line or added a keyword.
var hapKeywords = []string{
	"#", "user", "group", "maxconn", "stats", "hard-stop-after", "ssl-load-extra-del-ext", "ssl-load-extra-files",
	"mode", "timeout", "retries", "option", "retry-on", "bind", "http-request", "acl",
	"use_backend", "default_backend", "balance", "hash-type", "server", "http-error",
}

// hapAssertStructure checks the shape every rendering must have: only
// scrimp's own sections, only known keywords in them, and quotes only in
// the generator's own return lines.
func hapAssertStructure(t *testing.T, config []byte) {
	t.Helper()
	for i, line := range strings.Split(strings.TrimSuffix(string(config), "\n"), "\n") {
		switch {
		case line == "" || strings.HasPrefix(line, "# "):
		case strings.HasPrefix(line, "    "):
			word, _, _ := strings.Cut(strings.TrimPrefix(line, "    "), " ")
			if !slices.Contains(hapKeywords, word) {
				t.Errorf("line %d %q: unexpected keyword %q", i+1, line, word)
			}
			if strings.ContainsAny(line, `"'\$`) && !strings.HasPrefix(line, "    http-request return ") && !strings.HasPrefix(line, "    http-error status 503 ") {
				t.Errorf("line %d %q: quote, backslash or '$' outside the generator's return lines", i+1, line)
			}
		case line == "global" || line == "defaults scrimp" || strings.HasPrefix(line, "frontend scrimp.port-") ||
			strings.HasPrefix(line, "backend scrimp_") || line == "backend scrimp.not-found" || line == "backend "+haproxyACMEBackend:
			if strings.Count(line, " ") > 1 {
				t.Errorf("line %d %q: a section header with more than a name", i+1, line)
			}
		default:
			t.Errorf("line %d %q: not a scrimp section, keyword or comment", i+1, line)
		}
	}
}

// TestHAProxyDeterministic renders the same cluster repeatedly, from
// nodes and retained applications in different orders and concurrently:
// the bytes never change.
func TestHAProxyDeterministic(t *testing.T) {
	for _, tc := range hapGoldenCases {
		t.Run(tc.name, func(t *testing.T) {
			g := newHAProxyGen(t, tc.options)
			first, err := g.Render(tc.input(hapGoldenStateDir, hapGoldenTLSDir))
			if err != nil {
				t.Fatal(err)
			}
			orders := hapPermutations(tc.nodes)
			if len(orders) > 24 {
				orders = orders[:24]
			}
			for i, nodes := range orders {
				c := tc
				c.nodes = nodes
				c.retained = slices.Clone(tc.retained)
				if i%2 == 1 {
					slices.Reverse(c.retained)
				}
				out, err := g.Render(c.input(hapGoldenStateDir, hapGoldenTLSDir))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(out.Config, first.Config) || !slices.Equal(out.Warnings, first.Warnings) {
					t.Fatalf("order %d gives different output:\n%s\nwant\n%s", i, out.Config, first.Config)
				}
			}
			in := tc.input(hapGoldenStateDir, hapGoldenTLSDir)
			var wg sync.WaitGroup
			var mu sync.Mutex
			var bad int
			for range 4 {
				wg.Go(func() {
					for range 20 {
						out, err := g.Render(in)
						if err != nil || !bytes.Equal(out.Config, first.Config) {
							mu.Lock()
							bad++
							mu.Unlock()
						}
					}
				})
			}
			wg.Wait()
			if bad > 0 {
				t.Errorf("%d concurrent renders differ", bad)
			}
		})
	}
}

func hapPermutations(nodes []catalog.Node) [][]catalog.Node {
	if len(nodes) <= 1 {
		return [][]catalog.Node{slices.Clone(nodes)}
	}
	var out [][]catalog.Node
	for i := range nodes {
		rest := slices.Concat(nodes[:i:i], nodes[i+1:])
		for _, p := range hapPermutations(rest) {
			out = append(out, append([]catalog.Node{nodes[i]}, p...))
		}
	}
	return out
}

func TestHAProxyRenderErrors(t *testing.T) {
	g := newHAProxyGen(t, "")
	tests := []struct {
		name       string
		listen     string
		standalone bool
		stateDir   string
		wantErr    string
	}{
		{name: "empty listen", listen: "", wantErr: `listen address ""`},
		{name: "host name", listen: "localhost", wantErr: `listen address "localhost"`},
		{name: "with port", listen: "127.0.0.1:80", wantErr: "listen address"},
		{name: "zoned", listen: "fe80::1%eth0", wantErr: "zoned"},
		{name: "injection", listen: "127.0.0.1 ssl crt /etc/passwd", wantErr: "listen address"},
		{name: "relative state dir", listen: "0.0.0.0", standalone: true, stateDir: "var/lib/scrimp", wantErr: "state dir"},
		{name: "empty state dir", listen: "0.0.0.0", standalone: true, stateDir: "", wantErr: "state dir"},
		{name: "state dir with space", listen: "0.0.0.0", standalone: true, stateDir: "/var/lib/scrimp x", wantErr: "state dir"},
		{name: "state dir with newline", listen: "0.0.0.0", standalone: true, stateDir: "/var/lib\n    bind :1", wantErr: "state dir"},
		{name: "state dir with quote", listen: "0.0.0.0", standalone: true, stateDir: `/var/"lib`, wantErr: "state dir"},
		{name: "state dir with comment", listen: "0.0.0.0", standalone: true, stateDir: "/var/lib#x", wantErr: "state dir"},
		{name: "state dir too long for a socket", listen: "0.0.0.0", standalone: true, stateDir: "/" + strings.Repeat("d", 90), wantErr: "longer than the 97 characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := g.Render(Input{ListenAddr: tt.listen, Standalone: tt.standalone, StateDir: tt.stateDir})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "haproxy: ") {
				t.Fatalf("error %v, want one starting with \"haproxy: \" and containing %q", err, tt.wantErr)
			}
			if out.Config != nil {
				t.Errorf("an error came with configuration:\n%s", out.Config)
			}
		})
	}
}

func TestNewHAProxyOptions(t *testing.T) {
	def := DefaultHAProxyOptions()
	set := func(f func(*HAProxyOptions)) HAProxyOptions {
		o := def
		f(&o)
		return o
	}
	tests := []struct {
		name    string
		raw     string
		want    HAProxyOptions
		wantErr string
	}{
		{name: "absent", raw: "", want: def},
		{name: "empty object", raw: "{}", want: def},
		{
			name: "all set",
			raw: `{"maxconn": 1, "max-fails": 100, "fail-timeout": "1h", "check-interval": "100ms", "rise": 100,
				"timeout-connect": "1s", "timeout-client": "2m", "timeout-server": "3m", "timeout-tunnel": "596h",
				"hard-stop-after": "999999ms", "retry-after": 86400, "retries": 10,
				"runtime-api": true, "server-slots": 4096, "user": "www-data", "group": "www-data"}`,
			want: HAProxyOptions{MaxConn: 1, MaxFails: 100, FailTimeout: "1h", CheckInterval: "100ms", Rise: 100,
				TimeoutConnect: "1s", TimeoutClient: "2m", TimeoutServer: "3m", TimeoutTunnel: "596h",
				HardStopAfter: "999999ms", RetryAfter: 86400, Retries: 10, RuntimeAPI: true, ServerSlots: 4096,
				User: "www-data", Group: "www-data"},
		},
		{name: "largest maxconn", raw: `{"maxconn": 1000000}`, want: set(func(o *HAProxyOptions) { o.MaxConn = 1_000_000 })},
		{name: "unknown field", raw: `{"max_conn": 4}`, wantErr: "unknown field"},
		{name: "nginx option", raw: `{"worker-connections": 1024}`, wantErr: "unknown field"},
		{name: "not an object", raw: `[]`, wantErr: "cannot unmarshal"},
		{name: "wrong type", raw: `{"maxconn": "many"}`, wantErr: "cannot unmarshal"},
		{name: "zero maxconn", raw: `{"maxconn": 0}`, wantErr: "maxconn: 0"},
		{name: "huge maxconn", raw: `{"maxconn": 1000001}`, wantErr: "maxconn: 1000001"},
		{name: "zero max-fails", raw: `{"max-fails": 0}`, wantErr: "max-fails: 0"},
		{name: "too many max-fails", raw: `{"max-fails": 101}`, wantErr: "max-fails: 101"},
		{name: "zero rise", raw: `{"rise": 0}`, wantErr: "rise: 0"},
		{name: "zero retry-after", raw: `{"retry-after": 0}`, wantErr: "retry-after: 0"},
		{name: "retries off", raw: `{"retries": 0}`, want: set(func(o *HAProxyOptions) { o.Retries = 0 })},
		{name: "negative retries", raw: `{"retries": -1}`, wantErr: "retries: -1"},
		{name: "too many retries", raw: `{"retries": 11}`, wantErr: "retries: 11"},
		{name: "zero server-slots", raw: `{"server-slots": 0}`, wantErr: "server-slots: 0"},
		{name: "too many server-slots", raw: `{"server-slots": 4097}`, wantErr: "server-slots: 4097"},
		{name: "runtime-api not a bool", raw: `{"runtime-api": "yes"}`, wantErr: "cannot unmarshal"},
		{name: "retry-after over a day", raw: `{"retry-after": 86401}`, wantErr: "retry-after: 86401"},
		{name: "time without unit", raw: `{"check-interval": "2"}`, wantErr: "check-interval"},
		{name: "time in days", raw: `{"timeout-tunnel": "1d"}`, wantErr: "timeout-tunnel"},
		{name: "zero time", raw: `{"timeout-client": "0s"}`, wantErr: "timeout-client"},
		{name: "leading zero", raw: `{"timeout-server": "05s"}`, wantErr: "timeout-server"},
		{name: "empty time", raw: `{"fail-timeout": ""}`, wantErr: "fail-timeout"},
		{name: "unit only", raw: `{"fail-timeout": "ms"}`, wantErr: "fail-timeout"},
		{name: "fractional", raw: `{"timeout-connect": "1.5s"}`, wantErr: "timeout-connect"},
		{name: "negative", raw: `{"timeout-connect": "-1s"}`, wantErr: "timeout-connect"},
		{name: "seven digits", raw: `{"hard-stop-after": "1000000ms"}`, wantErr: "hard-stop-after"},
		{name: "over HAProxy's timer limit", raw: `{"timeout-tunnel": "597h"}`, wantErr: "longer than HAProxy's limit"},
		{name: "minutes over the limit", raw: `{"fail-timeout": "999999m"}`, wantErr: "longer than HAProxy's limit"},
		{name: "injecting a keyword", raw: `{"timeout-client": "1s\n    bind :1"}`, wantErr: "timeout-client"},
		{name: "trailing space", raw: `{"timeout-client": "1s "}`, wantErr: "timeout-client"},
		{name: "user root", raw: `{"user": "root"}`, wantErr: "user: \"root\": HAProxy's workers must not run as root"},
		{name: "group root", raw: `{"group": "root"}`, wantErr: "group: \"root\""},
		{name: "empty user", raw: `{"user": ""}`, wantErr: "user: \"\" is not a user or group name"},
		{name: "user with a space", raw: `{"user": "haproxy nobody"}`, wantErr: "user:"},
		{name: "user injecting a keyword", raw: `{"user": "haproxy\n    bind :1"}`, wantErr: "user:"},
		{name: "group starting with a dash", raw: `{"group": "-x"}`, wantErr: "group:"},
		{name: "user too long", raw: `{"user": "` + strings.Repeat("u", 33) + `"}`, wantErr: "user:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var raw json.RawMessage
			if tt.raw != "" {
				raw = json.RawMessage(tt.raw)
			}
			g, err := New("haproxy", raw)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			case tt.wantErr != "":
				if !strings.Contains(err.Error(), "(haproxy)") {
					t.Errorf("error %q does not name the generator", err)
				}
				return
			}
			if got := g.(haproxy).o; got != tt.want {
				t.Errorf("options %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestHAProxyRegistered(t *testing.T) {
	if names := Names(); !slices.Contains(names, "haproxy") {
		t.Errorf("Names() = %v, want haproxy among them", names)
	}
}

func TestHAProxyCrt(t *testing.T) {
	tests := []struct {
		name       string
		cert, key  string
		standalone bool
		wantCrt    string
		wantProb   string
	}{
		{name: "combined PEM", cert: "/tls/a.pem", key: "/tls/a.pem", standalone: true, wantCrt: "/tls/a.pem"},
		{name: "combined PEM, include", cert: "/tls/a.pem", key: "/tls/a.pem", wantCrt: "/tls/a.pem"},
		{name: "NAME.crt and NAME.key", cert: "/tls/a.crt", key: "/tls/a.key", standalone: true, wantCrt: "/tls/a.crt"},
		{name: "NAME.crt and NAME.key, include", cert: "/tls/a.crt", key: "/tls/a.key", wantProb: "from /tls/a.crt.key, not from /tls/a.key"},
		{name: "NAME.crt.key, include", cert: "/tls/a.crt", key: "/tls/a.crt.key", wantCrt: "/tls/a.crt"},
		{name: "NAME.crt.key, standalone (del-ext looks for NAME.key)", cert: "/tls/a.crt", key: "/tls/a.crt.key", standalone: true, wantProb: "from /tls/a.key, not from /tls/a.crt.key"},
		{name: "pem with appended .key", cert: "/tls/a.pem", key: "/tls/a.pem.key", standalone: true, wantCrt: "/tls/a.pem"},
		{name: "certbot layout", cert: "/etc/letsencrypt/live/x/fullchain.pem", key: "/etc/letsencrypt/live/x/privkey.pem", standalone: true, wantProb: "concatenate certificate and key"},
		{name: "relative", cert: "a.pem", key: "a.pem", standalone: true, wantProb: "not an absolute path"},
		{name: "space", cert: "/tls/a b.pem", key: "/tls/a b.pem", standalone: true, wantProb: "not an absolute path"},
		{name: "keyword injection", cert: "/tls/a.pem\n    bind :1", key: "/tls/a.pem", standalone: true, wantProb: "not an absolute path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			crt, problem := haproxyCrt(TLSCert{Cert: tt.cert, Key: tt.key}, tt.standalone)
			if crt != tt.wantCrt || (tt.wantProb == "") != (problem == "") || !strings.Contains(problem, tt.wantProb) {
				t.Errorf("haproxyCrt = %q, %q; want %q and a problem containing %q", crt, problem, tt.wantCrt, tt.wantProb)
			}
		})
	}
}

func TestHAProxyTimeMs(t *testing.T) {
	tests := []struct {
		in   string
		want int64 // -1: rejected
	}{
		{"1ms", 1}, {"500ms", 500}, {"2s", 2000}, {"1m", 60_000}, {"1h", 3_600_000},
		{"596h", 596 * 3_600_000}, {"35791m", 35791 * 60_000}, {"999999s", 999_999_000},
		{"597h", -1}, {"35792m", -1}, {"0ms", -1}, {"", -1}, {"s", -1}, {"1d", -1}, {"1us", -1},
		{"1 s", -1}, {"+1s", -1}, {"1sm", -1}, {"1000000s", -1},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := haproxyTimeMs(tt.in)
			if tt.want < 0 {
				if err == nil {
					t.Errorf("haproxyTimeMs(%q) = %d, want an error", tt.in, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("haproxyTimeMs(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

// TestHAProxyServerIDs checks what keeps consistent hashing stable: a
// server's id depends on its node name alone, whatever servers join or
// leave, and ids within a backend are distinct and in range.
func TestHAProxyServerIDs(t *testing.T) {
	servers := func(names ...string) []catalog.Server {
		var out []catalog.Server
		for _, n := range names {
			out = append(out, catalog.Server{Node: n})
		}
		slices.SortFunc(out, func(a, b catalog.Server) int { return strings.Compare(a.Node, b.Node) })
		return out
	}
	idOf := func(ss []catalog.Server) map[string]int {
		ids := haproxyServerIDs(ss)
		m := map[string]int{}
		for i, s := range ss {
			m[s.Node] = ids[i]
		}
		return m
	}
	three := idOf(servers("b-1", "b-3", "b-5"))
	four := idOf(servers("b-1", "b-2", "b-3", "b-5"))
	for n, id := range three {
		if four[n] != id {
			t.Errorf("server %s: id %d with three servers, %d after b-2 joined", n, id, four[n])
		}
	}

	// Find two names whose hashes collide, to see the collision handled.
	seen := map[int]string{}
	var a, b string
	for i := 0; a == ""; i++ {
		n := fmt.Sprintf("n-%d", i)
		id := haproxyServerIDs(servers(n))[0]
		if other, ok := seen[id]; ok {
			a, b = other, n
		}
		seen[id] = n
	}
	ids := haproxyServerIDs(servers(a, b))
	if ids[0] == ids[1] {
		t.Fatalf("colliding names %s and %s got the same id %d", a, b, ids[0])
	}
	for _, id := range ids {
		if id < 1 || id > haproxyIDRange {
			t.Errorf("id %d out of 1-%d", id, haproxyIDRange)
		}
	}
}

// hapBenchSnapshot is apps applications, each served by every one of
// backends backends, spread over 50 listen ports with two domains each.
func hapBenchSnapshot(apps, backends int) catalog.Snapshot {
	nodes := make([]catalog.Node, 0, backends)
	for b := range backends {
		var list []catalog.Application
		for a := range apps {
			list = append(list, hapApplication(fmt.Sprintf("app-%04d", a), catalog.ProtocolHTTP, 8000+a%50, 10000+a,
				fmt.Sprintf("app-%04d.example.com", a), fmt.Sprintf("*.app-%04d.example.com", a)))
		}
		addr := netip.AddrFrom4([4]byte{10, 1, byte(b >> 8), byte(b)})
		nodes = append(nodes, catalog.Node{Name: fmt.Sprintf("backend-%03d", b), Addr: addr, Role: catalog.RoleBackend, Applications: list})
	}
	return catalog.NewSnapshot(nodes)
}

// TestHAProxyBenchSnapshotRenders checks that the benchmark's cluster
// renders completely and that HAProxy accepts the result.
func TestHAProxyBenchSnapshotRenders(t *testing.T) {
	bin := findHAProxy(t)
	if bin == "" {
		t.Skip(noHAProxy)
	}
	g := newHAProxyGen(t, "")
	dir := hapShortTempDir(t)
	out, err := g.Render(Input{Snapshot: hapBenchSnapshot(1000, 10), ListenAddr: "127.0.0.1", Standalone: true, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Warnings) != 0 {
		t.Errorf("warnings: %q", out.Warnings[:min(3, len(out.Warnings))])
	}
	if n := bytes.Count(out.Config, []byte("\nbackend scrimp_")); n != 1000 {
		t.Errorf("%d backends, want 1000", n)
	}
	if n := bytes.Count(out.Config, []byte("\n    server ")); n != 10_000 {
		t.Errorf("%d servers, want 10000", n)
	}
	if n := bytes.Count(out.Config, []byte("\nfrontend ")); n != 50 {
		t.Errorf("%d frontends, want 50", n)
	}
	hapCheck(t, bin, hapWrite(t, dir, "haproxy.cfg", out.Config))
}

func BenchmarkHAProxyRender(b *testing.B) {
	g := newHAProxyGen(b, "")
	in := Input{Snapshot: hapBenchSnapshot(1000, 10), ListenAddr: "0.0.0.0", Standalone: true, StateDir: hapGoldenStateDir}
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
