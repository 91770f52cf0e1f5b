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
	"flag"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
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

// goldenTLSDir holds the certificate files named in golden cases. The
// nginx check writes real throwaway certificates to a temporary directory
// and renders with their paths instead, expecting the same text with that
// directory in its place.
const goldenTLSDir = "/etc/scrimp/tls"

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

// httpsApp and grpcApp are httpApp for the other HTTP protocols.
func httpsApp(name string, listen, port int, domains ...string) catalog.Application {
	a := httpApp(name, listen, port, domains...)
	a.Protocol = catalog.ProtocolHTTPS
	return a
}

func grpcApp(name string, listen, port int, domains ...string) catalog.Application {
	a := httpApp(name, listen, port, domains...)
	a.Protocol = catalog.ProtocolGRPC
	return a
}

// withPaths, withBalance and withServer return a with a field set, to keep
// the case tables one application per line.
func withPaths(a catalog.Application, paths ...string) catalog.Application {
	a.Paths = paths
	return a
}

func withBalance(a catalog.Application, b catalog.Balance, hashKey string) catalog.Application {
	a.Balance, a.HashKey = b, hashKey
	return a
}

func withServer(a catalog.Application, weight, maxFails int, failTimeout string) catalog.Application {
	a.Weight, a.MaxFails, a.FailTimeout = weight, maxFails, failTimeout
	return a
}

// longDomain is a 253-character host name (the longest valid one) that
// starts with prefix.
func longDomain(prefix string) string {
	label := func(c string, n int) string { return strings.Repeat(c, n) }
	d := prefix + label("x", 63-len(prefix)) + "." + label("y", 63) + "." + label("z", 63) + "." + label("w", 61)
	if err := catalog.CheckDomain(d); err != nil || len(d) != catalog.MaxDomainLen {
		panic(fmt.Sprintf("longDomain(%q) = %d characters: %v", prefix, len(d), err))
	}
	return d
}

// tlsCert is a certificate under goldenTLSDir named file.crt and file.key.
func tlsCert(file string, domains ...string) TLSCert {
	return TLSCert{Domains: domains, Cert: goldenTLSDir + "/" + file + ".crt", Key: goldenTLSDir + "/" + file + ".key"}
}

type goldenCase struct {
	name       string // also the golden file's name: testdata/nginx-NAME.golden
	options    string // raw generator options; empty for the defaults
	standalone bool
	listen     string
	nodes      []catalog.Node
	tls        []TLSCert             // paths under goldenTLSDir
	retained   []catalog.Application // applications without backends
	acme       *ACMERoute
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
		// Standalone without stream applications: no load_module.
		name: "one_app_three_backends", standalone: true, listen: "0.0.0.0",
		nodes: []catalog.Node{
			backendNode("b3", "10.0.0.3", httpApp("web", 8080, 8082)),
			backendNode("b1", "10.0.0.1", httpApp("web", 8080, 8080)),
			lbNode("lb-1", "10.0.0.100"),
			backendNode("b2", "10.0.0.2", httpApp("web", 8080, 8081)),
		},
	},
	{
		// Include mode: no default_server; the fallback comes first.
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
		warnings: []string{"application beta: listen port 8080: already routed to other applications: (any host)/ to alpha; left out"},
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
		// Host names and path prefixes: hosts that route alike share a
		// server block; a host without "/" answers 404 for other paths;
		// a catch-all path application joins the default server.
		name: "http_hosts_paths", standalone: true, listen: "0.0.0.0",
		nodes: []catalog.Node{
			backendNode("b1", "10.0.0.1",
				withPaths(httpApp("api", 8080, 9000, "example.com", "www.example.com"), "/api", "/v2/api", "/api"),
				httpApp("blog", 8080, 7000, "blog.example.com"),
				withPaths(httpApp("docs", 8080, 6000), "/docs"),
				withPaths(httpApp("shop", 8080, 5000, "shop.example.com"), "/cart", "/checkout"),
				httpApp("web", 8080, 8080, "example.com", "www.example.com")),
			backendNode("b2", "10.0.0.2",
				withPaths(httpApp("api", 8080, 9000, "example.com", "www.example.com"), "/api", "/v2/api", "/api"),
				httpApp("web", 8080, 8080, "example.com", "www.example.com")),
		},
	},
	{
		// Two applications asking for the same host and path: the first
		// by name keeps it, the other keeps only what is still free.
		name: "route_conflicts", listen: "0.0.0.0",
		nodes: []catalog.Node{
			backendNode("b1", "10.0.0.1",
				httpApp("alpha", 8080, 1000, "a.example.com", "b.example.com"),
				httpApp("beta", 8080, 2000, "b.example.com", "c.example.com"),
				withPaths(httpApp("delta", 8080, 4000, "a.example.com"), "/x"),
				withPaths(httpApp("epsilon", 8080, 5000, "a.example.com"), "/x", "/y"),
				httpApp("gamma", 8080, 3000, "a.example.com", "b.example.com", "c.example.com", "d.example.com", "e.example.com"),
				httpApp("zeta", 8080, 6000, "a.example.com", "b.example.com", "c.example.com", "d.example.com", "e.example.com")),
		},
		warnings: []string{
			"application beta: listen port 8080: already routed to other applications: b.example.com/ to alpha; those routes left out",
			"application epsilon: listen port 8080: already routed to other applications: a.example.com/x to delta; those routes left out",
			"application gamma: listen port 8080: already routed to other applications: a.example.com/ to alpha, b.example.com/ to alpha, c.example.com/ to beta; those routes left out",
			"application zeta: listen port 8080: already routed to other applications: a.example.com/ to alpha, b.example.com/ to alpha, c.example.com/ to beta and 2 more; left out",
		},
	},
	{
		// TLS terminated at nginx: exact and wildcard certificates,
		// domains without one left out, a port that is TLS cannot also
		// serve plain http.
		name: "https_tls", standalone: true, listen: "0.0.0.0",
		nodes: []catalog.Node{
			backendNode("b1", "10.0.0.1",
				httpsApp("anon", 8443, 8000),
				httpsApp("nocert", 8443, 8001, "missing.example.org"),
				httpsApp("pay", 8443, 8002, "pay.example.com", "nocert.example.com"),
				withPaths(httpsApp("shop", 8443, 8003, "shop.example.com", "www.shop.example.com"), "/", "/cart"),
				httpsApp("tenants", 8443, 8004, "*.apps.example.com", "one.apps.example.com"),
				httpApp("web", 8443, 8005, "web.example.com"),
				httpApp("www", 8080, 8006, "shop.example.com")),
			backendNode("b2", "10.0.0.2",
				withPaths(httpsApp("shop", 8443, 8003, "shop.example.com", "www.shop.example.com"), "/", "/cart")),
		},
		tls: []TLSCert{
			tlsCert("shop", "shop.example.com", "www.shop.example.com"),
			tlsCert("apps-wildcard", "*.apps.example.com"),
			tlsCert("pay", "pay.example.com"),
		},
		warnings: []string{
			"application anon: https needs domains to choose a certificate by; left out",
			"application nocert: no usable certificate in lb.tls for missing.example.org; left out",
			"application pay: no usable certificate in lb.tls for nocert.example.com; those domains left out",
			"application web: listen port 8443 is already used by application pay for TLS (https), which plain HTTP/1.1 (http) cannot share; left out",
		},
	},
	{
		// Include mode with every HTTP kind: no default_server anywhere.
		name: "https_include", listen: "127.0.0.1",
		nodes: []catalog.Node{
			backendNode("b1", "10.0.0.1",
				grpcApp("rpc", 50051, 50051),
				httpsApp("shop", 8443, 8003, "shop.example.com"),
				httpApp("web", 8080, 8080, "shop.example.com")),
		},
		tls: []TLSCert{tlsCert("shop", "shop.example.com")},
	},
	{
		name: "include_default_server", listen: "127.0.0.1", options: `{"default-server": true}`,
		nodes: []catalog.Node{
			backendNode("b1", "10.0.0.1", grpcApp("rpc", 50051, 50051), httpApp("web", 8080, 8080, "example.com")),
		},
	},
	{
		// gRPC over plaintext HTTP/2; a plain http application cannot
		// share its port, whichever comes first.
		name: "grpc", standalone: true, listen: "0.0.0.0",
		nodes: []catalog.Node{
			backendNode("b1", "10.0.0.1",
				httpApp("alpha", 50053, 8080),
				grpcApp("beta", 50053, 50053),
				grpcApp("rpc", 50051, 50051),
				withPaths(grpcApp("users", 50052, 50052, "users.example.com"), "/users.Users", "/users.Admin"),
				httpApp("web", 50051, 8080)),
			backendNode("b2", "10.0.0.2", grpcApp("rpc", 50051, 50051), withPaths(grpcApp("users", 50052, 50052, "users.example.com"), "/users.Users", "/users.Admin")),
			backendNode("b3", "10.0.0.3", grpcApp("rpc", 50051, 50051)),
		},
		warnings: []string{
			"application beta: listen port 50053 is already used by application alpha for plain HTTP/1.1 (http), which plaintext HTTP/2 (grpc) cannot share; left out",
			"application web: listen port 50051 is already used by application rpc for plaintext HTTP/2 (grpc), which plain HTTP/1.1 (http) cannot share; left out",
		},
	},
	{
		// Stream applications: load_module, tcp and udp on one port
		// number, and conflicts on one port and protocol.
		name: "tcp_udp", standalone: true, listen: "0.0.0.0",
		nodes: []catalog.Node{
			backendNode("b1", "10.0.0.1",
				protoApp("db", catalog.ProtocolTCP, 15432, 5432),
				protoApp("db2", catalog.ProtocolTCP, 15432, 5433),
				protoApp("dns", catalog.ProtocolUDP, 10053, 53),
				protoApp("dns-tcp", catalog.ProtocolTCP, 10053, 53),
				protoApp("dns2", catalog.ProtocolUDP, 10053, 5353),
				httpApp("web", 15432, 8080)),
			backendNode("b2", "10.0.0.2",
				protoApp("db", catalog.ProtocolTCP, 15432, 5432),
				protoApp("dns", catalog.ProtocolUDP, 10053, 53)),
		},
		warnings: []string{
			"application db2: listen port 15432 is already used by application db for a tcp stream; left out",
			"application dns2: listen port 10053/udp is already used by application dns for a udp stream; left out",
			"application web: listen port 15432 is already used by application db for a tcp stream, which plain HTTP/1.1 (http) cannot share; left out",
		},
	},
	{
		name: "stream_include", listen: "0.0.0.0",
		nodes: []catalog.Node{
			backendNode("b1", "10.0.0.1",
				protoApp("db", catalog.ProtocolTCP, 15432, 5432),
				protoApp("dns", catalog.ProtocolUDP, 10053, 53),
				httpApp("web", 8080, 8080)),
		},
		retained: []catalog.Application{protoApp("cache", catalog.ProtocolTCP, 16379, 6379)},
		warnings: []string{
			"application db: tcp needs nginx's stream module, which a file included inside http {} cannot configure (use managed mode); left out",
			"application dns: udp needs nginx's stream module, which a file included inside http {} cannot configure (use managed mode); left out",
			"application cache: tcp needs nginx's stream module, which a file included inside http {} cannot configure (use managed mode); left out",
		},
	},
	{
		// Every protocol at once in a managed nginx.
		name: "mixed_protocols", standalone: true, listen: "0.0.0.0",
		nodes: []catalog.Node{
			backendNode("b1", "10.0.0.1",
				protoApp("db", catalog.ProtocolTCP, 15432, 5432),
				protoApp("dns", catalog.ProtocolUDP, 10053, 5353),
				protoApp("rpc", catalog.ProtocolGRPC, 50051, 50051),
				httpsApp("secure", 8443, 8443, "secure.example.com"),
				httpApp("web", 8080, 8080)),
		},
		tls: []TLSCert{tlsCert("secure", "secure.example.com")},
	},
	{
		name: "balance_modes", standalone: true, listen: "127.0.0.1",
		nodes: []catalog.Node{
			backendNode("b1", "10.0.0.1",
				withBalance(httpApp("by-account", 8001, 8080), catalog.BalanceHash, "header:X-Account-Id"),
				withBalance(httpApp("by-cookie", 8002, 8080), catalog.BalanceHash, "cookie:session_ID"),
				withBalance(httpApp("by-ip", 8003, 8080), catalog.BalanceHash, "source-ip"),
				withBalance(httpApp("by-query", 8004, 8080), catalog.BalanceHash, "query:user_id"),
				withBalance(grpcApp("grpc-tenant", 8005, 50051), catalog.BalanceHash, "header:x-tenant"),
				withBalance(httpApp("least", 8006, 8080), catalog.BalanceLeastConn, ""),
				withBalance(httpApp("random", 8007, 8080), catalog.BalanceRandom, ""),
				httpApp("rr-default", 8008, 8080),
				withBalance(httpApp("rr-explicit", 8009, 8080), catalog.BalanceRoundRobin, ""),
				withBalance(protoApp("tcp-ip", catalog.ProtocolTCP, 8010, 5432), catalog.BalanceHash, "source-ip"),
				withBalance(protoApp("tcp-least", catalog.ProtocolTCP, 8011, 5432), catalog.BalanceLeastConn, ""),
				withBalance(protoApp("udp-random", catalog.ProtocolUDP, 8012, 53), catalog.BalanceRandom, "")),
			backendNode("b2", "10.0.0.2",
				withBalance(httpApp("by-account", 8001, 8080), catalog.BalanceHash, "header:X-Account-Id"),
				withBalance(protoApp("tcp-ip", catalog.ProtocolTCP, 8010, 5432), catalog.BalanceHash, "source-ip")),
		},
	},
	{
		// Per-backend weight and passive-check settings, falling back to
		// the generator's defaults.
		name: "server_settings", standalone: true, listen: "0.0.0.0",
		nodes: []catalog.Node{
			backendNode("b1", "10.0.0.1", withServer(httpApp("web", 8080, 8080), 5, 3, "30s")),
			backendNode("b2", "10.0.0.2", httpApp("web", 8080, 8080)),
			backendNode("b3", "10.0.0.3", withServer(httpApp("web", 8080, 8080), 100, 0, "1m")),
			backendNode("b4", "10.0.0.4", withServer(protoApp("db", catalog.ProtocolTCP, 15432, 5432), 2, 5, "")),
		},
	},
	{
		// Applications whose backends are all gone keep their listeners
		// and answer 503 with Retry-After (HTTP) or close at once
		// (stream); they never take a port or route from a live one.
		name: "retained", standalone: true, listen: "0.0.0.0",
		nodes: []catalog.Node{
			backendNode("b1", "10.0.0.1", httpApp("web", 8080, 8080, "example.com")),
		},
		tls: []TLSCert{tlsCert("secure", "secure.example.com")},
		retained: []catalog.Application{
			withPaths(httpApp("old-api", 8080, 9000, "example.com"), "/api"),
			httpApp("gone", 8080, 8080, "gone.example.com"),
			httpApp("gone-root", 8081, 8080),
			grpcApp("rpc", 50051, 50051),
			httpsApp("secure", 8443, 8443, "secure.example.com"),
			protoApp("db", catalog.ProtocolTCP, 15432, 5432),
			protoApp("dns", catalog.ProtocolUDP, 10053, 53),
			httpApp("web", 8080, 9999, "example.com"), // live again: not retained
			httpApp("aaa-late", 8080, 8080, "example.com"),
		},
		warnings: []string{
			"application aaa-late: listen port 8080: already routed to other applications: example.com/ to web; left out",
		},
	},
	{
		// Values that bypassed catalog validation never reach the file.
		name: "invalid_input", standalone: true, listen: "0.0.0.0",
		nodes: []catalog.Node{
			backendNode("b1", "10.0.0.1", httpApp("web", 8080, 8080, "example.com")),
			backendNode("bad node; include /etc/passwd", "10.0.0.2", httpApp("web", 8080, 8080, "example.com")),
			backendNode("b3", "10.0.0.3", httpApp("Web;", 8081, 8080)),
			backendNode("b4", "10.0.0.4", withServer(httpApp("web", 8080, 8080, "example.com"), 1, 0, "5s; include x")),
			backendNode("b5", "10.0.0.5", httpsApp("secure", 8443, 8443, "secure.example.com")),
		},
		tls: []TLSCert{{Domains: []string{"secure.example.com"}, Cert: "/etc/x.crt; include /etc/passwd", Key: "/etc/x.key"}},
		retained: []catalog.Application{
			httpApp("evil", 8080, 8080, "evil.example.com; include /etc/passwd"),
			withPaths(httpApp("evil2", 8080, 8080, "evil.example.com"), "/a { return 200; }"),
		},
		warnings: []string{
			`application "Web;": invalid definition left out: name: "Web;": only a-z, 0-9, '-' and '_' are allowed, starting with a letter or digit`,
			`application web: backend "b4" left out: fail-timeout: "5s; include x" is not a timeout such as "10s" or "1m"`,
			`application web: backend "bad node; include /etc/passwd" left out: node name: "bad node; include /etc/passwd": only letters, digits, '.', '-' and '_' are allowed`,
			`application "evil": invalid definition left out: domains[0]: "evil.example.com; include /etc/passwd": label "com; include /etc/passwd": only a-z, 0-9 and '-' are allowed`,
			`application "evil2": invalid definition left out: paths[0]: "/a { return 200; }": only letters, digits and /._~- are allowed`,
			"application secure: no usable certificate in lb.tls for secure.example.com; left out",
		},
	},
	{
		// Host names up to 253 characters on a shared port: the server
		// names hash is sized for them.
		name: "long_host_names", standalone: true, listen: "0.0.0.0",
		nodes: []catalog.Node{
			backendNode("b1", "10.0.0.1",
				httpApp("long", 8080, 8080, longDomain("a"), "*."+longDomain("b")[2:]),
				httpApp("short", 8080, 8081, "example.com")),
		},
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
		options: `{"worker-connections": 4096, "max-fails": 3, "fail-timeout": "30s", "keepalive": 0,
			"connect-timeout": "1m", "next-upstream-tries": 1, "udp-timeout": "2s", "retry-after": 120, "default-server": false,
			"status-port": 8089}`,
		nodes: []catalog.Node{
			backendNode("b1", "10.0.0.1", httpApp("web", 8080, 8080), grpcApp("rpc", 50051, 50051),
				protoApp("db", catalog.ProtocolTCP, 15432, 5432), protoApp("dns", catalog.ProtocolUDP, 10053, 53)),
		},
		retained: []catalog.Application{httpApp("gone", 8080, 8080, "gone.example.com")},
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

// input is the case's Input with its state directory at stateDir and its
// certificates at their golden paths.
func (c goldenCase) input(stateDir string) Input {
	return c.inputTLS(stateDir, goldenTLSDir)
}

// inputTLS is input with the certificate files moved to tlsDir.
func (c goldenCase) inputTLS(stateDir, tlsDir string) Input {
	var certs []TLSCert
	for _, tc := range c.tls {
		tc.Cert = strings.Replace(tc.Cert, goldenTLSDir, tlsDir, 1)
		tc.Key = strings.Replace(tc.Key, goldenTLSDir, tlsDir, 1)
		certs = append(certs, tc)
	}
	return Input{
		Snapshot: catalog.NewSnapshot(c.nodes), ListenAddr: c.listen, Standalone: c.standalone,
		StateDir: stateDir, TLS: certs, Retained: c.retained, ACME: c.acme,
	}
}

func goldenPath(name string) string { return filepath.Join("testdata", "nginx-"+name+".golden") }

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
			golden := goldenPath(tc.name)
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
			if bytes.Contains(out.Config, []byte("passwd")) {
				t.Errorf("an invalid value reached the configuration:\n%s", out.Config)
			}

			// The same case rendered for a real state directory and real
			// certificate files must be the golden text with those paths,
			// and nginx must accept it.
			if nginx == "" {
				t.Skip("golden file matches; " + noNginx)
			}
			if netip.MustParseAddr(tc.listen).Is6() && !ipv6Loopback() {
				t.Skip("golden file matches; no IPv6 on this host, so nginx cannot bind the listen address to check it")
			}
			if bytes.Contains(out.Config, []byte("load_module "+DebianStreamModule)) {
				requireStreamModule(t)
			}
			dir := t.TempDir()
			tlsDir := filepath.Join(dir, "tls")
			writeTestCerts(t, tlsDir, tc.tls)
			real, err := g.Render(tc.inputTLS(dir, tlsDir))
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			got := strings.ReplaceAll(string(real.Config), tlsDir, goldenTLSDir)
			if got = strings.ReplaceAll(got, dir, goldenStateDir); got != string(want) {
				t.Errorf("output for state dir %s differs from the golden file beyond the paths:\n%s", dir, real.Config)
			}
			if tc.standalone {
				nginxCheckStandalone(t, nginx, dir, real.Config)
			} else {
				nginxCheckInclude(t, nginx, dir, real.Config)
			}
		})
	}
}

// TestNginxGoldenFilesUsed keeps testdata free of nginx golden files no
// case writes any more (for example after a case was renamed).
func TestNginxGoldenFilesUsed(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "nginx-*.golden"))
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, tc := range goldenCases {
		if used[goldenPath(tc.name)] {
			t.Errorf("two golden cases are named %s", tc.name)
		}
		used[goldenPath(tc.name)] = true
	}
	for _, f := range files {
		if !used[f] {
			t.Errorf("%s belongs to no golden case; delete it", f)
		}
	}
}

// requireStreamModule skips a check that loads Debian's stream module
// where it is not installed, and fails it in CI (make test installs it).
func requireStreamModule(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(DebianStreamModule); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("the nginx stream module is required in CI: %v", err)
		}
		t.Skipf("golden file matches; nginx -t cannot load the stream module: %v (apt-get install libnginx-mod-stream)", err)
	}
}

// writeTestCerts writes a throwaway self-signed certificate and key for
// each of certs into dir, under the file names the certs give below
// goldenTLSDir, so nginx -t can load them.
func writeTestCerts(t *testing.T, dir string, certs []TLSCert) {
	t.Helper()
	if len(certs) == 0 {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range certs {
		if checkConfPath(c.Cert) != nil || checkConfPath(c.Key) != nil {
			continue // a case about unusable paths: nothing to write
		}
		certPEM, keyPEM := selfSigned(t, c.Domains)
		for file, data := range map[string][]byte{c.Cert: certPEM, c.Key: keyPEM} {
			path := filepath.Join(dir, strings.TrimPrefix(file, goldenTLSDir+"/"))
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// selfSigned returns a PEM certificate for domains and its PEM key.
func selfSigned(t *testing.T, domains []string) (certPEM, keyPEM []byte) {
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
		NotAfter:     time.Now().Add(time.Hour),
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
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
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
// and retained applications given in different orders and concurrently:
// the bytes never change.
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
			reversed := slices.Clone(tc.retained)
			slices.Reverse(reversed)
			for i, nodes := range permutations(tc.nodes) {
				c := tc
				c.nodes = nodes
				if i%2 == 1 {
					c.retained = reversed
				}
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

// permutations returns every order of nodes, or for more than five nodes
// (720 orders and up) every rotation of them and of their reverse.
func permutations(nodes []catalog.Node) [][]catalog.Node {
	if len(nodes) > 5 {
		reversed := slices.Clone(nodes)
		slices.Reverse(reversed)
		var out [][]catalog.Node
		for _, base := range [][]catalog.Node{nodes, reversed} {
			for i := range base {
				out = append(out, slices.Concat(base[i:], base[:i]))
			}
		}
		return out
	}
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
	i := slices.IndexFunc(goldenCases, func(c goldenCase) bool { return c.name == "mixed_protocols" })
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
		in      Input
		wantErr string
	}{
		{name: "empty", in: Input{ListenAddr: ""}, wantErr: `listen address ""`},
		{name: "host name", in: Input{ListenAddr: "localhost"}, wantErr: `listen address "localhost"`},
		{name: "with port", in: Input{ListenAddr: "127.0.0.1:80"}, wantErr: "listen address"},
		{name: "injection", in: Input{ListenAddr: "127.0.0.1; include /etc/passwd"}, wantErr: "listen address"},
		{name: "zone", in: Input{ListenAddr: "fe80::1%eth0"}, wantErr: "zone"},
		{name: "zone injection", in: Input{ListenAddr: "fe80::1%x;include"}, wantErr: "zone"},
		{name: "no state dir", in: Input{ListenAddr: "127.0.0.1", Standalone: true}, wantErr: "state dir"},
		{name: "relative state dir", in: Input{ListenAddr: "127.0.0.1", Standalone: true, StateDir: "var/scrimp"}, wantErr: "absolute"},
		{name: "state dir injection", in: Input{ListenAddr: "127.0.0.1", Standalone: true, StateDir: "/var/x; include /etc/passwd"}, wantErr: "state dir"},
		{name: "state dir newline", in: Input{ListenAddr: "127.0.0.1", Standalone: true, StateDir: "/var/x\ninclude"}, wantErr: "state dir"},
		{name: "state dir control", in: Input{ListenAddr: "127.0.0.1", Standalone: true, StateDir: "/var/x\x00"}, wantErr: "control"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := g.Render(tt.in)
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
	yes, no := true, false
	with := func(f func(*NginxOptions)) NginxOptions {
		o := DefaultNginxOptions()
		f(&o)
		return o
	}
	tests := []struct {
		name    string
		raw     string
		want    NginxOptions
		wantErr string
	}{
		{name: "absent", raw: "", want: DefaultNginxOptions()},
		{name: "empty object", raw: "{}", want: DefaultNginxOptions()},
		{name: "null", raw: "null", want: DefaultNginxOptions()},
		{
			name: "all set",
			raw: `{"worker-connections": 16, "max-fails": 0, "fail-timeout": "10m", "keepalive": 0, "connect-timeout": "1s",
				"next-upstream-tries": 100, "udp-timeout": "1m", "retry-after": 86400, "stream-module": "/opt/nginx/stream.so", "default-server": true,
				"tcp-timeout": "2m", "worker-shutdown-timeout": "5s", "balancer": "reload", "lua-modules": ["/opt/nginx/lua.so"]}`,
			want: NginxOptions{WorkerConnections: 16, MaxFails: 0, FailTimeout: "10m", Keepalive: 0, ConnectTimeout: "1s",
				NextUpstreamTries: 100, UDPTimeout: "1m", RetryAfter: 86400, StreamModule: "/opt/nginx/stream.so", DefaultServer: &yes,
				TCPTimeout: "2m", WorkerShutdownTimeout: "5s", Balancer: NginxBalancerReload, LuaModules: []string{"/opt/nginx/lua.so"}},
		},
		{name: "minutes", raw: `{"fail-timeout": "999999m"}`, want: with(func(o *NginxOptions) { o.FailTimeout = "999999m" })},
		{name: "zero time", raw: `{"fail-timeout": "0s"}`, want: with(func(o *NginxOptions) { o.FailTimeout = "0s" })},
		{name: "stream module built in", raw: `{"stream-module": ""}`, want: with(func(o *NginxOptions) { o.StreamModule = "" })},
		{name: "no default server", raw: `{"default-server": false}`, want: with(func(o *NginxOptions) { o.DefaultServer = &no })},
		{name: "default server automatic", raw: `{"default-server": null}`, want: DefaultNginxOptions()},
		{name: "one try", raw: `{"next-upstream-tries": 1}`, want: with(func(o *NginxOptions) { o.NextUpstreamTries = 1 })},
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
		{name: "zero connect timeout", raw: `{"connect-timeout": "0s"}`, wantErr: "connect-timeout"},
		{name: "zeros connect timeout", raw: `{"connect-timeout": "000m"}`, wantErr: "connect-timeout"},
		{name: "connect timeout without unit", raw: `{"connect-timeout": "5"}`, wantErr: "connect-timeout"},
		{name: "connect timeout injection", raw: `{"connect-timeout": "5s; include x"}`, wantErr: "connect-timeout"},
		{name: "zero udp timeout", raw: `{"udp-timeout": "0m"}`, wantErr: "udp-timeout"},
		{name: "udp timeout in hours", raw: `{"udp-timeout": "1h"}`, wantErr: "udp-timeout"},
		{name: "udp timeout injection", raw: `{"udp-timeout": "1s;"}`, wantErr: "udp-timeout"},
		{name: "zero tcp timeout", raw: `{"tcp-timeout": "0s"}`, wantErr: "tcp-timeout"},
		{name: "tcp timeout injection", raw: `{"tcp-timeout": "1m; x"}`, wantErr: "tcp-timeout"},
		{name: "zero worker shutdown timeout", raw: `{"worker-shutdown-timeout": "0s"}`, wantErr: "worker-shutdown-timeout"},
		{name: "worker shutdown timeout injection", raw: `{"worker-shutdown-timeout": "30s;"}`, wantErr: "worker-shutdown-timeout"},
		{name: "unbounded tries", raw: `{"next-upstream-tries": 0}`, wantErr: "next-upstream-tries: 0"},
		{name: "too many tries", raw: `{"next-upstream-tries": 101}`, wantErr: "next-upstream-tries: 101"},
		{name: "zero retry-after", raw: `{"retry-after": 0}`, wantErr: "retry-after: 0"},
		{name: "huge retry-after", raw: `{"retry-after": 86401}`, wantErr: "retry-after: 86401"},
		{name: "status-port out of range", raw: `{"status-port": 65536}`, wantErr: "status-port: 65536"},
		{name: "relative stream module", raw: `{"stream-module": "modules/stream.so"}`, wantErr: "stream-module"},
		{name: "stream module injection", raw: `{"stream-module": "/x.so; include /etc/passwd"}`, wantErr: "stream-module"},
		{name: "stream module newline", raw: `{"stream-module": "/x.so\ninclude"}`, wantErr: "stream-module"},
		{name: "stream module variable", raw: `{"stream-module": "/$x.so"}`, wantErr: "stream-module"},
		{name: "default server as string", raw: `{"default-server": "yes"}`, wantErr: "cannot unmarshal"},
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
			if got := g.(nginx).o; !reflect.DeepEqual(got, tt.want) {
				t.Errorf("options %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestNginxStreamModule checks when load_module is written: only in a
// standalone configuration with a stream application, and never for an
// nginx with the module built in.
func TestNginxStreamModule(t *testing.T) {
	tcp := backendNode("b1", "10.0.0.1", protoApp("db", catalog.ProtocolTCP, 15432, 5432))
	web := backendNode("b2", "10.0.0.2", httpApp("web", 8080, 8080))
	tests := []struct {
		name       string
		options    string
		standalone bool
		nodes      []catalog.Node
		retained   []catalog.Application
		want       string // the load_module line, or "" for none
		stream     bool   // whether a stream block is written
	}{
		{name: "stream app", standalone: true, nodes: []catalog.Node{tcp, web}, want: "load_module " + DebianStreamModule + ";", stream: true},
		{name: "only a retained stream app", standalone: true, nodes: []catalog.Node{web},
			retained: []catalog.Application{protoApp("dns", catalog.ProtocolUDP, 10053, 53)}, want: "load_module " + DebianStreamModule + ";", stream: true},
		{name: "custom path", options: `{"stream-module": "/opt/nginx/modules/stream.so"}`, standalone: true, nodes: []catalog.Node{tcp}, want: "load_module /opt/nginx/modules/stream.so;", stream: true},
		{name: "built in", options: `{"stream-module": ""}`, standalone: true, nodes: []catalog.Node{tcp}, stream: true},
		{name: "no stream app", standalone: true, nodes: []catalog.Node{web}},
		{name: "include mode", nodes: []catalog.Node{tcp, web}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := newGen(t, tt.options).Render(Input{
				Snapshot: catalog.NewSnapshot(tt.nodes), Retained: tt.retained,
				ListenAddr: "0.0.0.0", Standalone: tt.standalone, StateDir: goldenStateDir,
			})
			if err != nil {
				t.Fatal(err)
			}
			var got string
			for _, line := range strings.Split(string(out.Config), "\n") {
				if strings.HasPrefix(line, "load_module") {
					got = line
				}
			}
			if got != tt.want {
				t.Errorf("load_module line %q, want %q", got, tt.want)
			}
			if stream := bytes.Contains(out.Config, []byte("\nstream {")); stream != tt.stream {
				t.Errorf("stream block written: %v, want %v", stream, tt.stream)
			}
		})
	}
}

func TestNginxBalanceDirective(t *testing.T) {
	tests := []struct {
		name    string
		balance catalog.Balance
		key     string
		want    string
	}{
		{name: "default", want: ""},
		{name: "round-robin", balance: catalog.BalanceRoundRobin, want: ""},
		{name: "least-conn", balance: catalog.BalanceLeastConn, want: "least_conn;"},
		{name: "random", balance: catalog.BalanceRandom, want: "random two least_conn;"},
		{name: "header", balance: catalog.BalanceHash, key: "header:X-Account-Id", want: "hash $http_x_account_id consistent;"},
		{name: "lower-case header", balance: catalog.BalanceHash, key: "header:tenant", want: "hash $http_tenant consistent;"},
		{name: "cookie", balance: catalog.BalanceHash, key: "cookie:session_id", want: "hash $cookie_session_id consistent;"},
		{name: "query", balance: catalog.BalanceHash, key: "query:user", want: "hash $arg_user consistent;"},
		{name: "source-ip", balance: catalog.BalanceHash, key: "source-ip", want: "hash $remote_addr consistent;"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := withBalance(httpApp("web", 80, 80), tt.balance, tt.key)
			if errs := a.Validate(); len(errs) > 0 {
				t.Fatalf("test application is invalid: %v", errs)
			}
			if got := balanceDirective(a); got != tt.want {
				t.Errorf("balanceDirective = %q, want %q", got, tt.want)
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

// TestNginxManyLongHostNames puts 1,000 of the longest host names nginx
// can be given on one listen port: nginx must accept the configuration.
func TestNginxManyLongHostNames(t *testing.T) {
	nginx := nginxBinary(t)
	var apps []catalog.Application
	for i := range 500 {
		p := fmt.Sprintf("app%04d", i)
		apps = append(apps, httpApp(p, 8080, 10000+i, longDomain(p), "*."+longDomain(p)[2:]))
	}
	dir := t.TempDir()
	out, err := newGen(t, "").Render(Input{
		Snapshot:   catalog.NewSnapshot([]catalog.Node{backendNode("b1", "10.0.0.1", apps...)}),
		ListenAddr: "127.0.0.1", Standalone: true, StateDir: dir,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Warnings) > 0 {
		t.Fatalf("warnings: %q", out.Warnings[:min(3, len(out.Warnings))])
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
