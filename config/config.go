// Package config defines scrimp's configuration file: one JSON document with
// kebab-case keys, defaults in DefaultConfig, unknown keys rejected, and a
// Validate that reports every problem with its JSON path.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"
)

// Config is the whole configuration of one scrimp node.
type Config struct {
	// File is the path the configuration was read from; it prefixes every
	// problem Validate reports. It is not part of the JSON.
	File string `json:"-"`

	// Role is "lb" or "backend". Required.
	Role string `json:"role"`
	// NodeName names this node in the cluster; it must be unique. Defaults
	// to the host name.
	NodeName string `json:"node-name"`
	// LogLevel is "debug", "info", "warn" or "error".
	LogLevel string `json:"log-level"`
	// MetricsAddr is the IP:port where GET /metrics serves this node's
	// metrics in the Prometheus text format (docs/metrics.md); empty (the
	// default) serves none. Keep it on loopback or a private address, or
	// set MetricsTokenFile.
	MetricsAddr string `json:"metrics-addr"`
	// MetricsTokenFile, if set, holds a bearer token that GET /metrics
	// requires ("Authorization: Bearer TOKEN"): one line of printable
	// ASCII, in a file only its owner may read (mode 0600). Empty (the
	// default) serves the metrics to anyone who reaches metrics-addr.
	MetricsTokenFile string `json:"metrics-token-file,omitempty"`
	// AdminSocket is the unix socket of the node's local admin interface
	// (`scrimp keys` uses it), created mode 0600, its directory 0700 if
	// scrimp creates it. An absolute path of at most 100 bytes; default
	// "/run/scrimp/admin.sock"; empty serves no admin interface. Each node
	// on one host needs its own.
	AdminSocket string `json:"admin-socket"`
	// AdminAddr, if set, is an IP:port where the admin interface is
	// served over TCP as well, to clients sending the bearer token of
	// AdminTokenFile; empty (the default) serves none. Prefer loopback or
	// a private address: the token is sent in the clear.
	AdminAddr string `json:"admin-addr"`
	// AdminTokenFile holds the bearer token of AdminAddr on its first
	// line (at least 16 bytes, e.g. `openssl rand -hex 32`); the file
	// must not be readable by group or others. Required with AdminAddr.
	AdminTokenFile string `json:"admin-token-file"`
	// Cluster configures gossip membership.
	Cluster Cluster `json:"cluster"`
	// Seed says how a node finds the cluster to join.
	Seed Seed `json:"seed"`
	// LB configures a load balancer; present only when Role is "lb".
	LB *LB `json:"lb,omitempty"`
	// Backend configures a backend; present only when Role is "backend".
	Backend *Backend `json:"backend,omitempty"`
	// XDS configures the xDS control plane for proxyless gRPC clients;
	// optional on any node.
	XDS *XDS `json:"xds,omitempty"`
}

// Cluster configures the gossip layer.
type Cluster struct {
	// BindAddr is the IP address gossip listens on.
	BindAddr string `json:"bind-addr"`
	// BindPort is the TCP and UDP port gossip listens on.
	BindPort int `json:"bind-port"`
	// AdvertiseAddr is the IP address other nodes reach this one at, and the
	// address load balancers send application traffic to on backends. Empty
	// means BindAddr, or a private address of this host when BindAddr is
	// unspecified.
	AdvertiseAddr string `json:"advertise-addr"`
	// AdvertisePort is the gossip port other nodes reach this one at; 0
	// means BindPort.
	AdvertisePort int `json:"advertise-port"`
	// Profile tunes failure detection: "local" (loopback, fastest), "lan"
	// or "wan".
	Profile string `json:"profile"`
	// JoinBackoffMin is the first wait between failed join attempts.
	JoinBackoffMin Duration `json:"join-backoff-min"`
	// JoinBackoffMax caps the wait between failed join attempts.
	JoinBackoffMax Duration `json:"join-backoff-max"`
	// RejoinInterval is how often a node that finds itself alone asks its
	// seed provider again.
	RejoinInterval Duration `json:"rejoin-interval"`
	// LeaveTimeout bounds how long a graceful leave waits for the cluster to
	// hear of it.
	LeaveTimeout Duration `json:"leave-timeout"`
	// KeyringFile is a JSON array of base64 gossip keys, primary first,
	// readable by its owner only. Empty: gossip is not encrypted, which is
	// only safe on loopback or a private network nobody else reaches.
	KeyringFile string `json:"keyring-file,omitempty"`
	// Label is bound into every gossip packet; nodes with another label
	// are refused. Empty: no label.
	Label string `json:"label,omitempty"`
	// AllowedCIDRs, when not empty, are the only networks a member's
	// address may be in: memberlist refuses other nodes and their alive
	// messages (defence in depth beside the key; it still answers their
	// TCP push/pull). Empty: any address.
	AllowedCIDRs []string `json:"allowed-cidrs,omitempty"`
	// GossipVerifyIncoming refuses gossip that is not encrypted with a key
	// of the keyring. Off only while turning encryption on in a running
	// plaintext cluster (docs/security.md); no effect without a keyring.
	GossipVerifyIncoming bool `json:"gossip-verify-incoming"`
	// GossipVerifyOutgoing encrypts the gossip this node sends. Off only
	// while turning encryption on in a running plaintext cluster, before
	// every node holds the key; no effect without a keyring.
	GossipVerifyOutgoing bool `json:"gossip-verify-outgoing"`
}

// Seed chooses a seed provider and holds each provider's own section
// verbatim, so that providers are plugins: each one decodes and validates
// its section itself.
type Seed struct {
	// Provider names the registered seed provider, e.g. "static".
	Provider string
	// Sections holds the other keys of the "seed" object, each a provider's
	// options keyed by provider name.
	Sections map[string]json.RawMessage
}

// UnmarshalJSON reads "provider" and keeps every other key raw.
func (s *Seed) UnmarshalJSON(b []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	s.Sections = map[string]json.RawMessage{}
	for k, v := range m {
		if k == "provider" {
			if err := json.Unmarshal(v, &s.Provider); err != nil {
				return fmt.Errorf("seed.provider: %w", err)
			}
			continue
		}
		s.Sections[k] = v
	}
	return nil
}

// MarshalJSON writes the provider and its sections back as one object.
func (s Seed) MarshalJSON() ([]byte, error) {
	m := map[string]any{"provider": s.Provider}
	for k, v := range s.Sections {
		m[k] = v
	}
	return json.Marshal(m)
}

// Section returns the raw options of the chosen provider, or nil.
func (s Seed) Section() json.RawMessage { return s.Sections[s.Provider] }

// LB configures a load balancer node.
type LB struct {
	// Generator names the proxy kind, and with it the registered
	// configuration generator: "nginx", "haproxy" or "template". The kind
	// decides the defaults below that depend on the proxy.
	Generator string `json:"generator"`
	// GeneratorOptions are the generator's own options, decoded and
	// validated by the generator.
	GeneratorOptions json.RawMessage `json:"generator-options,omitempty"`
	// Mode is "managed" (scrimp runs its own proxy instance from a complete
	// configuration under StateDir) or "external" (scrimp writes one include
	// file for a system proxy and runs CheckCommand and ReloadCommand).
	Mode string `json:"mode"`
	// ListenAddr is the IP address the proxy accepts application traffic on.
	ListenAddr string `json:"listen-addr"`
	// StateDir holds the managed proxy's configuration, pid and temp files.
	StateDir string `json:"state-dir"`
	// ProxyBinary is the proxy executable for managed mode; empty means
	// the kind's proxy found in PATH ("nginx" or "haproxy").
	ProxyBinary string `json:"proxy-binary"`
	// GeneratorTarget is the file external mode writes; empty means the
	// kind's default (nginx: /etc/nginx/conf.d/scrimp.conf, haproxy:
	// /etc/haproxy/haproxy.cfg; template has none).
	GeneratorTarget string `json:"generator-target"`
	// CheckCommand validates the proxy configuration in external mode;
	// argv form, no shell. Empty means the kind's default (nginx:
	// nginx -t, haproxy: haproxy -c -f TARGET; template has none).
	CheckCommand []string `json:"check-command"`
	// ReloadCommand makes the proxy load the new configuration in external
	// mode; argv form, no shell. Empty means the kind's default (nginx:
	// nginx -s reload, haproxy: systemctl reload haproxy; template has
	// none).
	ReloadCommand []string `json:"reload-command"`
	// CommandTimeout bounds each check and reload.
	CommandTimeout Duration `json:"command-timeout"`
	// QuietPeriod is how long membership must stay unchanged after a busy
	// spell before the next reload; a change that finds the load balancer
	// idle is applied at once.
	QuietPeriod Duration `json:"quiet-period"`
	// MaxWait caps how long a stream of changes can postpone a reload.
	MaxWait Duration `json:"max-wait"`
	// ResyncInterval is how often the configuration is rendered again from
	// the full membership even without events, so a missed event cannot
	// leave it stale.
	ResyncInterval Duration `json:"resync-interval"`
	// RetainEmpty is how long an application whose backends are all gone
	// keeps its listener (answering 503 with Retry-After) before it is
	// forgotten.
	RetainEmpty Duration `json:"retain-empty"`
	// Checks are the load balancer's own active checks of every backend
	// instance it routes to, which take a crashed backend out well before
	// gossip failure detection.
	Checks LBChecks `json:"checks"`
	// MassLossGuard keeps most of an application's backends in the
	// configuration, behind the proxy's passive checks, when they vanish
	// at once — more often this load balancer's own network trouble than
	// a real mass failure.
	MassLossGuard MassLossGuard `json:"mass-loss-guard"`
	// TLS lists certificates for https applications, by domain. They stay
	// on the load balancer; nothing about them travels in gossip.
	TLS []TLSCert `json:"tls,omitempty"`
	// ListenPorts are the listen ports members' applications may use:
	// ports (443) and ranges ("1024-65535"). The ports scrimp itself uses
	// on this load balancer (gossip, metrics) are never allowed, whatever
	// this says. An application on another port is refused and reported.
	ListenPorts []PortRange `json:"listen-ports"`
	// Applications, when not empty, pins who may advertise what: an
	// application instance is routed only if a rule allows it, and
	// refused (reported, routed nowhere) otherwise. Empty (the default)
	// lets any member advertise; the first to have an application name,
	// domain and path or listen port keeps it either way.
	Applications []AppRule `json:"applications,omitempty"`
	// Limits bound what one member, and all members together, can make
	// the proxy carry, so that a misconfigured or hostile member cannot
	// exhaust the load balancer's memory; what exceeds them is refused
	// and reported.
	Limits LBLimits `json:"limits"`
	// ACME, when set, obtains and renews certificates for the allowed
	// domains of https applications from an ACME CA (docs/acme.md).
	ACME *ACME `json:"acme,omitempty"`
}

// LBLimits are the admission limits (lb.limits) and the reload limit.
// Each admission limit is at least 1; ReloadsPerMinute may be 0.
type LBLimits struct {
	// AppsPerMember bounds the applications one backend may have routed;
	// beyond it the excess, last by application name, is refused.
	AppsPerMember int `json:"apps-per-member"`
	// DomainsPerApp and PathsPerApp bound one application's domains and
	// paths; an application over either is refused.
	DomainsPerApp int `json:"domains-per-app"`
	PathsPerApp   int `json:"paths-per-app"`
	// DomainsPerMember bounds the distinct domains of one backend's
	// applications together.
	DomainsPerMember int `json:"domains-per-member"`
	// ListenPortsPerMember bounds the distinct listen ports of one
	// backend's applications.
	ListenPortsPerMember int `json:"listen-ports-per-member"`
	// UpstreamServers bounds the application instances routed in total;
	// a newcomer beyond it is refused, incumbents stay.
	UpstreamServers int `json:"upstream-servers"`
	// Listeners bounds the proxy's listeners (listen port and transport)
	// in total; a newcomer needing another one beyond it is refused.
	Listeners int `json:"listeners"`
	// ReloadsPerMinute bounds the proxy's reloads in any 60 s window
	// (every reload starts new workers while the old ones finish their
	// connections); a third may come at once, the rest are spread over
	// the minute; changes beyond it wait and are applied together.
	// Runtime updates without a reload do not count. 0 means no limit.
	ReloadsPerMinute int `json:"reloads-per-minute"`
}

// DefaultLBLimits returns the default lb.limits.
func DefaultLBLimits() LBLimits {
	return LBLimits{
		AppsPerMember:        64,   // a real backend runs a few applications
		DomainsPerApp:        64,   // an application's names, not a tenant list
		PathsPerApp:          64,   // path prefixes of one application
		DomainsPerMember:     256,  // all applications of one backend together
		ListenPortsPerMember: 16,   // each one a listener on the proxy
		UpstreamServers:      4096, // instances routed, all members together
		Listeners:            256,  // listeners, all members together
		ReloadsPerMinute:     60,   // 20 at once, then one every 1.5 s; bursts are coalesced anyway
	}
}

// LBChecks tunes the load balancer's active checks (TCP connect, or GET of
// the application's health-path).
type LBChecks struct {
	// Disabled turns the checks off.
	Disabled bool `json:"disabled"`
	// Interval is the time between two checks of one instance while its
	// state is settled; a check that disagrees with the state is followed
	// by another 100 ms later (lb.CheckConfig.FastInterval).
	Interval Duration `json:"interval"`
	// Timeout bounds one check.
	Timeout Duration `json:"timeout"`
	// Fall consecutive failures take an instance out of routing.
	Fall int `json:"fall"`
	// Rise consecutive passes bring it back.
	Rise int `json:"rise"`
	// HoldInterval is the time between two checks of an instance while
	// the load balancer holds an idle connection open to it, which tells
	// a crash at once (lb.CheckConfig.HoldInterval).
	HoldInterval Duration `json:"hold-interval"`
	// NoHold turns the held connections off: every instance is checked
	// every Interval.
	NoHold bool `json:"no-hold"`
}

// MassLossGuard tunes the mass-loss guard.
type MassLossGuard struct {
	// Disabled turns the guard off.
	Disabled bool `json:"disabled"`
	// Share: the guard acts when more than this share of an
	// application's backends is lost within Window.
	Share float64 `json:"share"`
	// Min is the smallest number of backends the guard protects.
	Min int `json:"min"`
	// Window is how close together the losses must be.
	Window Duration `json:"window"`
	// Grace is how long lost backends are kept.
	Grace Duration `json:"grace"`
}

// TLSCert is one certificate and its key for a set of domains.
type TLSCert struct {
	// Domains the certificate serves; a leading "*." matches one label.
	Domains []string `json:"domains"`
	// Certificate is the PEM certificate (chain) file.
	Certificate string `json:"certificate"`
	// Key is the PEM private key file.
	Key string `json:"key"`
}

// Backend configures a backend node.
type Backend struct {
	// Applications are the services this backend advertises, listed in the
	// main configuration file.
	Applications []Application `json:"applications"`
	// ApplicationConfigDir is a directory of application files, one JSON
	// file per application, watched for changes at run time. Its
	// applications are advertised together with Applications; a name may be
	// defined in only one place. Empty means none. A relative path is
	// resolved against the working directory.
	ApplicationConfigDir string `json:"application-config-dir,omitempty"`
	// HealthCheckAddr is the IP address health checks connect to, with each
	// application's application-port. Empty means 127.0.0.1.
	HealthCheckAddr string `json:"health-check-addr,omitempty"`
	// DrainTimeout bounds how long a shutting-down backend waits for every
	// load balancer to acknowledge that it no longer routes to it.
	DrainTimeout Duration `json:"drain-timeout"`
	// DrainGrace is how long a backend keeps serving after the load
	// balancers have acknowledged its drain, for requests already in
	// flight, before it leaves the cluster.
	DrainGrace Duration `json:"drain-grace"`
}

// DefaultBackend returns the backend defaults, applied when a "backend"
// section is present.
func DefaultBackend() Backend {
	return Backend{
		DrainTimeout: D(30 * time.Second),
		DrainGrace:   D(5 * time.Second),
	}
}

// UnmarshalJSON fills defaults before reading the section.
func (b *Backend) UnmarshalJSON(data []byte) error {
	*b = DefaultBackend()
	type plain Backend
	return json.Unmarshal(data, (*plain)(b))
}

// DefaultConfig returns the defaults for every field that has one. Role and
// the seed provider have none: a node must say what it is and how to join.
func DefaultConfig() *Config {
	host, _ := os.Hostname()
	return &Config{
		NodeName:    host,
		LogLevel:    "info",
		AdminSocket: "/run/scrimp/admin.sock",
		Cluster:     DefaultCluster(),
	}
}

// DefaultCluster returns the gossip defaults.
func DefaultCluster() Cluster {
	return Cluster{
		BindAddr:       "0.0.0.0",
		BindPort:       7946,
		Profile:        "lan",
		JoinBackoffMin: D(200 * time.Millisecond),
		JoinBackoffMax: D(30 * time.Second),
		RejoinInterval: D(10 * time.Second),
		LeaveTimeout:   D(3 * time.Second),
		// With a keyring, gossip is encrypted both ways unless a node is
		// in the middle of the plaintext-to-encrypted transition.
		GossipVerifyIncoming: true,
		GossipVerifyOutgoing: true,
	}
}

// DefaultLB returns the load balancer defaults, applied when an "lb"
// section is present.
func DefaultLB() LB {
	return LB{
		Generator:  "nginx",
		Mode:       "managed",
		ListenAddr: "0.0.0.0",
		StateDir:   "/var/lib/scrimp",
		// The proxy binary, generator target, check and reload commands
		// depend on the proxy kind: empty takes the kind's (see LB).
		ProxyBinary:     "",
		GeneratorTarget: "",
		CheckCommand:    []string{},
		ReloadCommand:   []string{},
		CommandTimeout:  D(30 * time.Second),
		QuietPeriod:     D(200 * time.Millisecond),
		MaxWait:         D(1 * time.Second),
		ResyncInterval:  D(30 * time.Second),
		RetainEmpty:     D(time.Hour),
		Checks:          LBChecks{Interval: D(900 * time.Millisecond), Timeout: D(400 * time.Millisecond), Fall: 2, Rise: 2, HoldInterval: D(5 * time.Second)},
		MassLossGuard:   MassLossGuard{Share: 0.5, Min: 2, Window: D(10 * time.Second), Grace: D(time.Minute)},
		// The usual HTTP ports and every unprivileged one.
		ListenPorts: []PortRange{"80", "443", "1024-65535"},
		// Per member and in total; see DefaultLBLimits.
		Limits: DefaultLBLimits(),
	}
}

// UnmarshalJSON fills defaults before reading the section, so a partial
// "lb" object keeps the defaults for what it leaves out.
func (l *LB) UnmarshalJSON(b []byte) error {
	*l = DefaultLB()
	type plain LB
	return json.Unmarshal(b, (*plain)(l))
}

// Load reads and validates the configuration file at path. The error, if
// any, is a Problems listing everything wrong with the file.
func Load(path string) (*Config, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	cfg, problems := Parse(path, data)
	if len(problems) > 0 {
		return cfg, problems
	}
	return cfg, nil
}

// Parse decodes data (read from file) over DefaultConfig and validates it.
// It returns every problem found, sorted by JSON path: syntax errors, keys
// no field matches, duplicate keys, values of the wrong JSON type and
// invalid values, each with its file and JSON path. A value of the wrong
// type is reported once and its field keeps the default, so it causes no
// further problems.
func Parse(file string, data []byte) (*Config, Problems) {
	cfg := DefaultConfig()
	cfg.File = file
	problems, mistyped, ok := decodeStrict(file, data, cfg)
	if !ok {
		return cfg, problems
	}
	for _, p := range cfg.Validate() {
		if !under(p.Path, mistyped) {
			problems = append(problems, p)
		}
	}
	slices.SortStableFunc(problems, func(a, b Problem) int { return strings.Compare(a.Path, b.Path) })
	return cfg, problems
}

// decodeStrict decodes the JSON document data, read from file, over the
// value dst points to. It returns every problem with the document's form
// (syntax, keys no field matches, duplicate keys, values of the wrong JSON
// type) and, among them, the mistyped values, under which the caller should
// not report validation problems: a mistyped field keeps its default. ok is
// false when nothing was decoded: the document is empty, not JSON or not
// of dst's type.
func decodeStrict(file string, data []byte, dst any) (problems, mistyped Problems, ok bool) {
	if len(bytes.TrimSpace(data)) == 0 {
		return Problems{{File: file, Reason: "empty file: expected a JSON object"}}, nil, false
	}
	var raw json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return Problems{{File: file, Reason: syntaxReason(data, err)}}, nil, false
	}
	var tree any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&tree); err != nil {
		return Problems{{File: file, Reason: "invalid JSON: " + err.Error()}}, nil, false
	}
	var sh shape
	if !sh.check(file, "", tree, reflect.TypeOf(dst)) {
		return sh.mistyped, sh.mistyped, false
	}
	problems = slices.Concat(sh.unknown, sh.mistyped, duplicateKeys(file, data))
	var err error
	if len(sh.unknown)+len(sh.mistyped) > 0 || sh.moved {
		// Decode the pruned (or rearranged) tree, which holds only known
		// keys with values of the right type.
		data, err = json.Marshal(tree)
	}
	if err == nil {
		// Raw sections (seed, generator-options) keep the file's bytes
		// unless the tree was pruned.
		err = json.Unmarshal(data, dst)
	}
	if err != nil {
		// Unreachable unless shape.check misses a case; report it anyway.
		problems = append(problems, decodeProblem(file, err))
	}
	return problems, sh.mistyped, true
}

// under reports whether path is one of the problems' paths or inside one.
func under(path string, ps Problems) bool {
	for _, p := range ps {
		if path == p.Path || strings.HasPrefix(path, p.Path+".") || strings.HasPrefix(path, p.Path+"[") {
			return true
		}
	}
	return false
}

// syntaxReason locates a JSON syntax error by the line and column (both
// from 1, the column counted in bytes) of the byte that is wrong, or of the
// end of the file when it ends too soon.
func syntaxReason(data []byte, err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) && se.Offset > 0 && se.Offset <= int64(len(data)) {
		at := int(se.Offset) - 1 // se.Offset counts the bytes read, the bad one included
		if se.Offset == int64(len(data)) && strings.Contains(se.Error(), "unexpected end") {
			at = len(data)
		}
		line := 1 + bytes.Count(data[:at], []byte("\n"))
		col := at - bytes.LastIndexByte(data[:at], '\n')
		return fmt.Sprintf("line %d, column %d: invalid JSON: %v", line, col, err)
	}
	return "invalid JSON: " + err.Error()
}

func decodeProblem(file string, err error) Problem {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return Problem{File: file, Path: te.Field, Reason: fmt.Sprintf("expected %s, got JSON %s", te.Type, te.Value)}
	}
	msg := err.Error()
	if path, reason, ok := strings.Cut(msg, ": "); ok && !strings.Contains(path, " ") {
		return Problem{File: file, Path: path, Reason: reason}
	}
	return Problem{File: file, Reason: msg}
}
