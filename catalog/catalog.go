// Package catalog holds the value types every scrimp node shares — what a
// backend advertises, what a load balancer renders — and the strict
// validation of anything that arrived over the network.
//
// Everything here is a plain value: no I/O, no goroutines, no locks. A
// Snapshot is immutable once built; callers must not modify the slices it
// hands out.
package catalog

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Role is the part a node plays in the cluster.
type Role uint8

const (
	// RoleUnknown is the zero Role; it never travels on the wire.
	RoleUnknown Role = iota
	// RoleLB marks a load balancer node.
	RoleLB
	// RoleBackend marks a node that advertises applications.
	RoleBackend
)

// String returns the role as written in the configuration file.
func (r Role) String() string {
	switch r {
	case RoleLB:
		return "lb"
	case RoleBackend:
		return "backend"
	default:
		return fmt.Sprintf("role(%d)", uint8(r))
	}
}

// ParseRole parses the configuration spelling of a role.
func ParseRole(s string) (Role, error) {
	switch s {
	case "lb":
		return RoleLB, nil
	case "backend":
		return RoleBackend, nil
	}
	return RoleUnknown, fmt.Errorf("unknown role %q (want \"lb\" or \"backend\")", s)
}

// Protocol is how a load balancer speaks to an application.
type Protocol string

// Protocols an application may declare.
const (
	ProtocolHTTP  Protocol = "http"
	ProtocolHTTPS Protocol = "https"
	ProtocolGRPC  Protocol = "grpc"
	ProtocolTCP   Protocol = "tcp"
	ProtocolUDP   Protocol = "udp"
)

// protocols lists the valid protocols in their wire order: the index is the
// byte sent in metadata, so entries may only ever be appended.
var protocols = []Protocol{ProtocolHTTP, ProtocolHTTPS, ProtocolGRPC, ProtocolTCP, ProtocolUDP}

// Valid reports whether p is a protocol scrimp knows.
func (p Protocol) Valid() bool { return slices.Contains(protocols, p) }

// Application is one service a backend offers: the load balancer listens on
// ListenPort and forwards to the backend's address at ApplicationPort.
type Application struct {
	// Name identifies the application across backends; backends that
	// advertise the same name share one upstream.
	Name string `json:"name"`
	// ListenPort is the port the load balancer accepts traffic on.
	ListenPort int `json:"listen-port"`
	// ApplicationPort is the port the application listens on at the backend.
	ApplicationPort int `json:"application-port"`
	// Protocol is how the load balancer speaks to the application.
	Protocol Protocol `json:"protocol"`
	// Domains are the host names routed to the application (HTTP
	// protocols); a leading "*." matches any single label.
	Domains []string `json:"domains,omitempty"`
	// Paths are URL path prefixes routed to the application (HTTP
	// protocols); none means every path.
	Paths []string `json:"paths,omitempty"`
	// Balance is how requests are spread over backends; empty means
	// round-robin.
	Balance Balance `json:"balance,omitempty"`
	// HashKey is what "hash" balancing hashes: "header:NAME",
	// "cookie:NAME", "query:NAME" or "source-ip". Hashing is consistent:
	// adding or removing one of N backends remaps about 1/N of the keys.
	HashKey string `json:"hash-key,omitempty"`
	// Weight is this backend's share relative to the others, 1-100; 0
	// means 1.
	Weight int `json:"weight,omitempty"`
	// HealthPath is the path the load balancer's active checks request
	// (HTTP protocols); empty means a TCP connect check.
	HealthPath string `json:"health-path,omitempty"`
	// MaxFails and FailTimeout tune the proxy's passive checks: after
	// MaxFails failed attempts within FailTimeout the backend is skipped for
	// FailTimeout. Zero and empty mean the generator's defaults.
	MaxFails    int    `json:"max-fails,omitempty"`
	FailTimeout string `json:"fail-timeout,omitempty"`
	// RedirectHTTP (https only) asks the load balancer to answer plain
	// HTTP requests for the application's exact domains on its plain-HTTP
	// port (lb.acme's) with a 308 redirect to https, except the ACME
	// challenge path; a plain http application serving the same domain
	// there keeps it.
	RedirectHTTP bool `json:"redirect-http,omitempty"`
	// State is the application's health on this backend as the backend
	// sees it; only "up" (or empty) instances receive traffic. It is set by
	// the backend at run time, not in configuration files.
	State State `json:"-"`
}

// State is an application instance's health as its backend advertises it.
type State string

// Instance states.
const (
	// StateUp serves traffic; the empty State means the same.
	StateUp State = "up"
	// StateDraining finishes in-flight requests and takes no new ones: the
	// backend is shutting down gracefully.
	StateDraining State = "draining"
	// StateDown failed its health check.
	StateDown State = "down"
)

// states lists the states in wire order (append only); index 0 is empty.
var states = []State{"", StateUp, StateDraining, StateDown}

// Valid reports whether s is a known state or empty.
func (s State) Valid() bool { return slices.Contains(states, s) }

// Serving reports whether an instance in state s takes traffic.
func (s State) Serving() bool { return s == "" || s == StateUp }

// Balance is a load-balancing algorithm.
type Balance string

// Balancing algorithms.
const (
	BalanceRoundRobin Balance = "round-robin"
	BalanceLeastConn  Balance = "least-conn"
	BalanceRandom     Balance = "random"
	BalanceHash       Balance = "hash"
)

// balances lists the algorithms in wire order (index = byte on the wire;
// append only). Index 0 is the empty default.
var balances = []Balance{"", BalanceRoundRobin, BalanceLeastConn, BalanceRandom, BalanceHash}

// Valid reports whether b is a known algorithm or empty.
func (b Balance) Valid() bool { return slices.Contains(balances, b) }

// Or returns b, or def when b is empty.
func (b Balance) Or(def Balance) Balance {
	if b == "" {
		return def
	}
	return b
}

// IsHTTP reports whether the protocol is spoken as HTTP by the load
// balancer, so host names, paths and header keys mean something.
func (p Protocol) IsHTTP() bool {
	return p == ProtocolHTTP || p == ProtocolHTTPS || p == ProtocolGRPC
}

// Validate checks every field of a against the strict grammar that keeps it
// safe to place in a proxy configuration file. It returns every problem,
// each prefixed with the field's JSON name.
func (a Application) Validate() []error {
	var errs []error
	if err := CheckName(a.Name); err != nil {
		errs = append(errs, fmt.Errorf("name: %w", err))
	}
	if err := CheckPort(a.ListenPort); err != nil {
		errs = append(errs, fmt.Errorf("listen-port: %w", err))
	}
	if err := CheckPort(a.ApplicationPort); err != nil {
		errs = append(errs, fmt.Errorf("application-port: %w", err))
	}
	if !a.Protocol.Valid() {
		errs = append(errs, fmt.Errorf("protocol: %q is not one of %v", a.Protocol, protocols))
	}
	if len(a.Domains) > MaxDomains {
		errs = append(errs, fmt.Errorf("domains: %d domains, at most %d allowed", len(a.Domains), MaxDomains))
	}
	for i, d := range a.Domains {
		if err := CheckDomain(d); err != nil {
			errs = append(errs, fmt.Errorf("domains[%d]: %w", i, err))
		}
	}
	httpOnly := func(field string, set bool) {
		if set && a.Protocol.Valid() && !a.Protocol.IsHTTP() {
			errs = append(errs, fmt.Errorf("%s: only for http, https and grpc, not %s", field, a.Protocol))
		}
	}
	httpOnly("domains", len(a.Domains) > 0)
	httpOnly("paths", len(a.Paths) > 0)
	httpOnly("health-path", a.HealthPath != "")
	if a.RedirectHTTP && a.Protocol != ProtocolHTTPS {
		errs = append(errs, fmt.Errorf("redirect-http: only for https, not %s", a.Protocol))
	}
	if len(a.Paths) > MaxPaths {
		errs = append(errs, fmt.Errorf("paths: %d paths, at most %d allowed", len(a.Paths), MaxPaths))
	}
	for i, p := range a.Paths {
		if err := CheckPath(p); err != nil {
			errs = append(errs, fmt.Errorf("paths[%d]: %w", i, err))
		}
	}
	if a.HealthPath != "" {
		if err := CheckPath(a.HealthPath); err != nil {
			errs = append(errs, fmt.Errorf("health-path: %w", err))
		}
	}
	switch {
	case !a.Balance.Valid():
		errs = append(errs, fmt.Errorf("balance: %q is not one of round-robin, least-conn, random, hash", a.Balance))
	case a.Balance == BalanceHash && a.HashKey == "":
		errs = append(errs, errors.New(`hash-key: required with balance "hash" (header:NAME, cookie:NAME, query:NAME or source-ip)`))
	case a.Balance != BalanceHash && a.HashKey != "":
		errs = append(errs, errors.New(`hash-key: only used with balance "hash"`))
	case a.HashKey != "":
		if err := CheckHashKey(a.HashKey, a.Protocol); err != nil {
			errs = append(errs, fmt.Errorf("hash-key: %w", err))
		}
	}
	if a.Weight < 0 || a.Weight > MaxWeight {
		errs = append(errs, fmt.Errorf("weight: %d is not in 1-%d (0 means 1)", a.Weight, MaxWeight))
	}
	if a.MaxFails < 0 || a.MaxFails > MaxMaxFails {
		errs = append(errs, fmt.Errorf("max-fails: %d is not in 0-%d", a.MaxFails, MaxMaxFails))
	}
	if a.FailTimeout != "" {
		if err := CheckTimeout(a.FailTimeout); err != nil {
			errs = append(errs, fmt.Errorf("fail-timeout: %w", err))
		}
	}
	if !a.State.Valid() {
		errs = append(errs, fmt.Errorf("state: %q is not one of up, draining, down", a.State))
	}
	return errs
}

// Node is what one cluster member says about itself.
type Node struct {
	// Name is the member's unique node name.
	Name string
	// Addr is the member's advertised IP address; backends are reached on it.
	Addr netip.Addr
	// Role is the part the member plays.
	Role Role
	// Applications are the services a backend offers, sorted by name. Load
	// balancers advertise none.
	Applications []Application
	// Digest identifies the application set (see DigestOf); a load
	// balancer acknowledges a draining backend by it.
	Digest Digest
}

// Server is one backend instance of an application as a generator renders it.
type Server struct {
	// Node is the backend's node name.
	Node string
	// Addr is the backend's IP address.
	Addr netip.Addr
	// Port is the application's port on that backend.
	Port int
	// Weight is the backend's share, 1-100.
	Weight int
	// MaxFails and FailTimeout are the backend's passive-check settings;
	// zero and empty mean the generator's defaults.
	MaxFails    int
	FailTimeout string
}

// HostPort formats the server as host:port, bracketing IPv6 addresses.
func (s Server) HostPort() string {
	return netip.AddrPortFrom(s.Addr, uint16(s.Port)).String()
}

// Service is one application with every live backend that serves it.
type Service struct {
	// Application is the definition taken from the first backend (by node
	// name) that advertises it; its ApplicationPort is that backend's. A
	// load balancer admits one definition per name before it groups
	// services (lb's admission: the incumbent keeps it), so node names
	// never decide the protocol, listen port, domains or paths; only the
	// remaining settings (balance, health-path, ...) come from that first
	// backend.
	Application
	// Servers are the backends serving it, sorted by node name.
	Servers []Server
}

// Snapshot is an immutable, deterministically ordered view of the cluster.
type Snapshot struct {
	// Nodes are the live members, sorted by name.
	Nodes []Node
}

// NewSnapshot returns a snapshot of nodes sorted by name. It copies the slice
// header order only; callers hand over ownership of the nodes.
func NewSnapshot(nodes []Node) Snapshot {
	sorted := slices.Clone(nodes)
	slices.SortFunc(sorted, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	return Snapshot{Nodes: sorted}
}

// Backends returns the number of live backend nodes.
func (s Snapshot) Backends() int {
	n := 0
	for _, node := range s.Nodes {
		if node.Role == RoleBackend {
			n++
		}
	}
	return n
}

// Conflict describes a backend whose definition of an application disagrees
// with the one in use, so that backend is left out of that application.
type Conflict struct {
	// Application is the application's name.
	Application string
	// Node is the backend that was left out.
	Node string
	// Reason says what differs.
	Reason string
}

// Services groups the snapshot's backends by application, sorted by
// application name. Only instances whose State is serving count: an
// application none of whose instances serves is absent (the load balancer
// then keeps it as retained, answering 503). The first backend (by node name) that advertises an
// application defines its listen port, protocol and domains; later backends
// that disagree on listen port or protocol are left out and reported as
// conflicts, because one listener cannot speak two protocols. Services is
// deterministic: the same snapshot always yields the same result.
func (s Snapshot) Services() ([]Service, []Conflict) {
	byName := map[string]*Service{}
	var conflicts []Conflict
	for _, node := range s.Nodes {
		if node.Role != RoleBackend {
			continue
		}
		for _, app := range node.Applications {
			if !app.State.Serving() {
				continue
			}
			svc, ok := byName[app.Name]
			if !ok {
				svc = &Service{Application: app}
				byName[app.Name] = svc
			} else if svc.ListenPort != app.ListenPort || svc.Protocol != app.Protocol {
				conflicts = append(conflicts, Conflict{
					Application: app.Name,
					Node:        node.Name,
					Reason: fmt.Sprintf("advertises %s on listen port %d, but %s on %d is in use",
						app.Protocol, app.ListenPort, svc.Protocol, svc.ListenPort),
				})
				continue
			}
			svc.Servers = append(svc.Servers, Server{
				Node: node.Name, Addr: node.Addr, Port: app.ApplicationPort,
				Weight: max(app.Weight, 1), MaxFails: app.MaxFails, FailTimeout: app.FailTimeout,
			})
		}
	}
	out := make([]Service, 0, len(byName))
	for _, svc := range byName {
		out = append(out, *svc)
	}
	slices.SortFunc(out, func(a, b Service) int { return cmp.Compare(a.Name, b.Name) })
	return out, conflicts
}
