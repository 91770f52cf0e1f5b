package generator

import (
	"cmp"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/plugin"
)

func init() { Register("haproxy", newHAProxy) }

// HAProxyOptions are the haproxy generator's "lb.generator-options". Times
// are HAProxy times: 1 to 6 digits (no leading zero) followed by "ms",
// "s", "m" or "h", at most HAProxy's limit of 2147483647 ms (~24.8 days).
type HAProxyOptions struct {
	// MaxConn is the global maxconn of a standalone configuration and the
	// maxconn of every frontend scrimp writes.
	MaxConn int `json:"maxconn"`
	// MaxFails is the default of an application's max-fails: the
	// consecutive failed health checks (fall) and failed connections
	// (observe layer4 error-limit) that take a server out.
	MaxFails int `json:"max-fails"`
	// FailTimeout is the default of an application's fail-timeout: how
	// often a server that is out is checked again (downinter), so it is
	// skipped for about that long.
	FailTimeout string `json:"fail-timeout"`
	// CheckInterval is the interval of active health checks (inter) on a
	// server that is up.
	CheckInterval string `json:"check-interval"`
	// Rise is how many consecutive passing checks bring a server back.
	Rise int `json:"rise"`
	// TimeoutConnect, TimeoutClient, TimeoutServer and TimeoutTunnel are
	// the HAProxy timeouts of the same names; TimeoutTunnel bounds idle
	// WebSocket and long-lived gRPC streams.
	TimeoutConnect string `json:"timeout-connect"`
	TimeoutClient  string `json:"timeout-client"`
	TimeoutServer  string `json:"timeout-server"`
	TimeoutTunnel  string `json:"timeout-tunnel"`
	// HardStopAfter bounds how long the workers of an old configuration
	// may keep serving their connections after a reload (standalone only).
	HardStopAfter string `json:"hard-stop-after"`
	// RetryAfter is the Retry-After, in seconds, of the 503 answered for
	// an application whose backends are all gone.
	RetryAfter int `json:"retry-after"`
	// Retries is how many times a request whose connection to a server
	// failed (or got no response at all) is tried again, each time on
	// another server; 0 turns retries off.
	Retries int `json:"retries"`
	// RuntimeAPI renders every backend section as server slots and lets
	// scrimp apply membership changes through HAProxy's runtime API
	// (set server addr/weight/state) instead of reloading; only a change
	// of the applications, their settings or the number of slots reloads.
	// Managed mode only. Per-backend max-fails and fail-timeout cannot
	// change at runtime: every slot of an application uses the
	// application's values (those of its first backend by node name).
	RuntimeAPI bool `json:"runtime-api"`
	// ServerSlots is the least number of server slots of each backend
	// section in runtime-api mode; a backend that outgrows its slots gets
	// twice as many, with one reload.
	ServerSlots int `json:"server-slots"`
	// User and Group are the user and group HAProxy's workers switch to
	// when scrimp starts HAProxy as root (Input.AsRoot), so that no
	// worker handling traffic runs as root. Debian's haproxy package
	// creates both. Unused otherwise.
	User  string `json:"user"`
	Group string `json:"group"`
}

// DefaultHAProxyOptions returns the haproxy generator's defaults.
func DefaultHAProxyOptions() HAProxyOptions {
	return HAProxyOptions{
		MaxConn: 4096, MaxFails: 3, FailTimeout: "10s", CheckInterval: "2s", Rise: 2,
		TimeoutConnect: "5s", TimeoutClient: "30s", TimeoutServer: "30s", TimeoutTunnel: "1h",
		HardStopAfter: "30s", RetryAfter: 5, Retries: 2, ServerSlots: 32,
		User: "haproxy", Group: "haproxy",
	}
}

// Limits of the haproxy generator's options.
const (
	haproxyMaxMaxConn    = 1_000_000
	haproxyMaxRise       = 100
	haproxyMaxRetryAfter = 86400
	haproxyMaxRetries    = 10
	haproxyMaxSlots      = 4096
	// haproxyMaxTimeMs is the longest time HAProxy accepts anywhere: its
	// timers are signed 32-bit milliseconds.
	haproxyMaxTimeMs = 1<<31 - 1
	// haproxyClampedTime is what a longer per-application fail-timeout is
	// rendered as: the largest whole number of hours within the limit.
	haproxyClampedTime = "596h"
	// haproxyMaxSocketPath is the longest unix socket path HAProxy 2.6
	// binds: it needs room in sun_path for a ".PID.tmp" suffix.
	haproxyMaxSocketPath = 97
	// HAProxy reads at most 64 words per line (and drops the rest with an
	// alert). An ACL line is "acl NAME var(...) -m str" and its hosts;
	// longer lists continue on more lines of the same ACL, which HAProxy
	// ORs. A bind line is "bind ADDR ssl", "crt FILE" per certificate and
	// "alpn h2,http/1.1": 29 certificates make 63 words.
	haproxyACLHosts     = 50
	haproxyMaxBindCerts = 29
)

type haproxy struct{ o HAProxyOptions }

func newHAProxy(raw json.RawMessage) (Generator, error) {
	o := DefaultHAProxyOptions()
	if err := plugin.DecodeOptions(raw, &o); err != nil {
		return nil, err
	}
	switch {
	case o.MaxConn < 1 || o.MaxConn > haproxyMaxMaxConn:
		return nil, fmt.Errorf("maxconn: %d is not in 1-%d", o.MaxConn, haproxyMaxMaxConn)
	case o.MaxFails < 1 || o.MaxFails > catalog.MaxMaxFails:
		return nil, fmt.Errorf("max-fails: %d is not in 1-%d (HAProxy needs at least one failure to take a server out)", o.MaxFails, catalog.MaxMaxFails)
	case o.Rise < 1 || o.Rise > haproxyMaxRise:
		return nil, fmt.Errorf("rise: %d is not in 1-%d", o.Rise, haproxyMaxRise)
	case o.RetryAfter < 1 || o.RetryAfter > haproxyMaxRetryAfter:
		return nil, fmt.Errorf("retry-after: %d is not in 1-%d seconds", o.RetryAfter, haproxyMaxRetryAfter)
	case o.Retries < 0 || o.Retries > haproxyMaxRetries:
		return nil, fmt.Errorf("retries: %d is not in 0-%d", o.Retries, haproxyMaxRetries)
	case o.ServerSlots < 1 || o.ServerSlots > haproxyMaxSlots:
		return nil, fmt.Errorf("server-slots: %d is not in 1-%d", o.ServerSlots, haproxyMaxSlots)
	}
	for _, n := range []struct{ name, value string }{{"user", o.User}, {"group", o.Group}} {
		if err := haproxyAccountName(n.value); err != nil {
			return nil, fmt.Errorf("%s: %w", n.name, err)
		}
	}
	for _, t := range []struct{ name, value string }{
		{"fail-timeout", o.FailTimeout}, {"check-interval", o.CheckInterval},
		{"timeout-connect", o.TimeoutConnect}, {"timeout-client", o.TimeoutClient},
		{"timeout-server", o.TimeoutServer}, {"timeout-tunnel", o.TimeoutTunnel},
		{"hard-stop-after", o.HardStopAfter},
	} {
		if _, err := haproxyTimeMs(t.value); err != nil {
			return nil, fmt.Errorf("%s: %w", t.name, err)
		}
	}
	return haproxy{o}, nil
}

// haproxyTimeMs parses an HAProxy time as the generator accepts it: 1 to
// 6 digits without a leading zero and a unit of ms, s, m or h, no longer
// than HAProxy's timer limit. The grammar leaves nothing that could end
// the keyword it is written after.
func haproxyTimeMs(s string) (int64, error) {
	bad := func() error {
		return fmt.Errorf("%q is not an HAProxy time such as \"500ms\", \"10s\", \"1m\" or \"1h\"", s)
	}
	for _, u := range []struct {
		suffix string
		ms     int64
	}{{"ms", 1}, {"s", 1000}, {"m", 60_000}, {"h", 3_600_000}} {
		n, ok := strings.CutSuffix(s, u.suffix)
		if !ok {
			continue
		}
		if n == "" || len(n) > 6 || n[0] == '0' || strings.Trim(n, "0123456789") != "" {
			return 0, bad()
		}
		v, _ := strconv.ParseInt(n, 10, 64)
		if v*u.ms > haproxyMaxTimeMs {
			return 0, fmt.Errorf("%q is longer than HAProxy's limit of %d ms (~24.8 days)", s, int64(haproxyMaxTimeMs))
		}
		return v * u.ms, nil
	}
	return 0, bad()
}

// haproxyAccountName checks a user or group name for the global section:
// a POSIX-style name (letters, digits, '_', '-' and '.', not starting with
// '-', at most 32 characters), so it is one bare word, and not root, which
// would defeat the point of switching.
func haproxyAccountName(s string) error {
	if s == "" || len(s) > 32 || s[0] == '-' || strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") != "" {
		return fmt.Errorf("%q is not a user or group name (letters, digits, '_', '-', '.'; at most 32)", s)
	}
	if s == "root" {
		return fmt.Errorf("%q: HAProxy's workers must not run as root", s)
	}
	return nil
}

// haproxySafePath reports whether p can be written into haproxy.cfg as a
// bare word: absolute, and only characters that HAProxy's parser does not
// treat specially (no white space, quotes, backslash, '#' or '$').
func haproxySafePath(p string) bool {
	if !filepath.IsAbs(p) {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("/._-+,:@=~%", c) >= 0) {
			return false
		}
	}
	return true
}

// Names the haproxy generator gives its sections. Application names are
// [a-z0-9_-], so the '.' in the generator's own names can never collide
// with an application's backend.
const (
	haproxyDefaults = "scrimp"
	haproxyNotFound = "scrimp.not-found"
	// haproxyHostVar holds the request's host name without port, lower
	// case, for the host rules.
	haproxyHostVar = "txn.scrimp_host"
)

func haproxyBackend(app string) string     { return "scrimp_" + app }
func haproxyFrontend(port int) string      { return "scrimp.port-" + strconv.Itoa(port) }
func haproxyHostACL(app string) string     { return "scrimp_" + app + "_host" }
func haproxySocket(stateDir string) string { return filepath.Join(stateDir, "admin.sock") }

// hapApp is one application the configuration serves: a live service, or
// a retained one without servers.
type hapApp struct {
	catalog.Service
	retained bool
}

// hapRoute is one host and path prefix on an HTTP listen port. An empty
// host is any host; an empty path is any path.
type hapRoute struct {
	app  int // index into the plan's apps
	host string
	path string
}

// kind orders hosts by specificity: exact names first, then wildcards,
// then any host.
func (r hapRoute) kind() int {
	switch {
	case r.host == "":
		return 2
	case strings.HasPrefix(r.host, "*."):
		return 1
	}
	return 0
}

func (r hapRoute) String() string {
	host, path := r.host, r.path
	if host == "" {
		host = "any host"
	}
	if path == "" {
		path = "any path"
	}
	return host + " " + path
}

// hapPort is one frontend.
type hapPort struct {
	port   int
	proto  catalog.Protocol
	owner  string // the application that fixed the port's protocol
	tcpApp int    // the tcp application, -1 for HTTP ports
	routes []hapRoute
	certs  []string // crt files of an https port, the default first
	acme   *hapACME // challenge routes and redirects of the plain-HTTP port
}

// hapPlan is everything Render writes, decided before any text is.
type hapPlan struct {
	apps     []hapApp
	ports    []*hapPort
	used     []bool // apps[i] has a listener
	warnings []string
}

// Render writes the HAProxy configuration for in: one frontend per listen
// port and one backend per application. Every value it writes came through
// catalog validation (names, domains, paths, ports, IP addresses), was
// checked here (the state directory and certificate paths), or is the
// generator's own text, so nothing from the network can add a keyword.
//
// HTTP routing: each request goes to the most specific matching route,
// exact host names before wildcards ("*.example.com" matches any name
// ending in ".example.com") before applications without domains, and
// within those the longest path prefix first. Paths are plain prefixes,
// as in nginx's prefix locations: "/api" also matches "/apiary". A
// request no route matches goes to the port's catch-all application (no
// domains, no paths) or gets a 404.
func (g haproxy) Render(in Input) (Output, error) {
	listen, err := netip.ParseAddr(in.ListenAddr)
	if err != nil {
		return Output{}, fmt.Errorf("haproxy: listen address %q: %w", in.ListenAddr, err)
	}
	if listen.Zone() != "" {
		return Output{}, fmt.Errorf("haproxy: listen address %q: zoned addresses are not supported", in.ListenAddr)
	}
	if in.Standalone {
		if !haproxySafePath(in.StateDir) {
			return Output{}, fmt.Errorf("haproxy: state dir %q: must be an absolute path of letters, digits and /._-+,:@=~%%", in.StateDir)
		}
		if sock := haproxySocket(in.StateDir); len(sock) > haproxyMaxSocketPath {
			return Output{}, fmt.Errorf("haproxy: state dir %q: the stats socket path %s is longer than the %d characters HAProxy can bind", in.StateDir, sock, haproxyMaxSocketPath)
		}
	}
	p := g.plan(in)

	// Sized for the typical line lengths, so the buffer rarely regrows.
	size := 4096
	for _, a := range p.apps {
		size += 512 + 160*len(a.Servers)
	}
	w := &hapWriter{b: make([]byte, 0, size)}
	w.comment("Generated by scrimp from the cluster membership. Do not edit: it is rewritten on every change.")
	if in.Standalone {
		g.global(w, in.StateDir, in.AsRoot)
	} else {
		w.comment("Load it after the system configuration, e.g. haproxy -f /etc/haproxy/haproxy.cfg -f THIS_FILE:")
		w.comment("its defaults section applies to every section that follows it.")
	}
	g.defaults(w)
	notFound := false
	for _, port := range p.ports {
		notFound = g.frontend(w, listen, p, port) || notFound
	}
	var rt *hapRuntime
	switch {
	case g.o.RuntimeAPI && in.Standalone:
		rt = newHAPRuntime(in)
	case g.o.RuntimeAPI:
		p.warnings = append(p.warnings, "runtime-api: only managed mode (lb.mode \"managed\") reaches HAProxy's runtime API; plain server lines are rendered and every change reloads")
	}
	for i, app := range p.apps {
		if p.used[i] {
			g.backend(w, app, rt)
		}
	}
	if notFound {
		w.section("backend " + haproxyNotFound)
		w.line("mode http")
		w.line(`http-request return status 404 content-type text/plain string "scrimp: no application for this host and path"`)
	}
	acmeBackend(w, p)
	out := Output{Config: w.b, Warnings: p.warnings}
	if rt != nil {
		out.Runtime = &Runtime{Skeleton: w.skeleton(), Slots: rt.slots}
	}
	return out, nil
}

// plan decides which application gets which listener and routes; every
// application or route it leaves out gets a warning.
func (g haproxy) plan(in Input) hapPlan {
	var p hapPlan
	services, conflicts := in.Snapshot.Services()
	for _, c := range conflicts {
		p.warnings = append(p.warnings, fmt.Sprintf("application %s: backend %s left out: %s", c.Application, c.Node, c.Reason))
	}
	// The catalog validated everything on arrival; checking again here
	// keeps the generator safe on its own, whoever builds its Input.
	live := make(map[string]bool, len(services))
	for _, s := range services {
		live[s.Name] = true
		if errs := s.Validate(); len(errs) > 0 {
			p.warnings = append(p.warnings, fmt.Sprintf("application %s: invalid definition left out: %v", strconv.Quote(s.Name), errs[0]))
			continue
		}
		servers := make([]catalog.Server, 0, len(s.Servers))
		for _, srv := range s.Servers {
			if err := checkServer(srv); err != nil {
				p.warnings = append(p.warnings, fmt.Sprintf("application %s: backend %s left out: %v", s.Name, strconv.Quote(srv.Node), err))
				continue
			}
			servers = append(servers, srv)
		}
		if len(servers) > 0 {
			s.Servers = servers
			p.apps = append(p.apps, hapApp{Service: s})
		}
	}
	// Live applications come first, so a retained one can never take a
	// listen port from one that has backends. One that has backends again,
	// or is listed twice, is not retained (the first listing counts).
	retained := slices.Clone(in.Retained)
	slices.SortStableFunc(retained, func(a, b catalog.Application) int { return cmp.Compare(a.Name, b.Name) })
	for i, a := range retained {
		if live[a.Name] || i > 0 && retained[i-1].Name == a.Name {
			continue
		}
		if errs := a.Validate(); len(errs) > 0 {
			p.warnings = append(p.warnings, fmt.Sprintf("application %s: invalid definition left out: %v", strconv.Quote(a.Name), errs[0]))
			continue
		}
		p.apps = append(p.apps, hapApp{Service: catalog.Service{Application: a}, retained: true})
	}
	p.used = make([]bool, len(p.apps))

	byPort := map[int]*hapPort{}
	// claimed maps a port's routes to the application that has them.
	claimed := map[int]map[hapRoute]int{}
	for i, app := range p.apps {
		if app.Protocol == catalog.ProtocolUDP {
			p.warnings = append(p.warnings, fmt.Sprintf("application %s: protocol udp is not supported by the haproxy generator (HAProxy 2.6 has no UDP proxying); left out", app.Name))
			continue
		}
		port, ok := byPort[app.ListenPort]
		if !ok {
			port = &hapPort{port: app.ListenPort, proto: app.Protocol, owner: app.Name, tcpApp: -1}
			byPort[app.ListenPort] = port
			claimed[app.ListenPort] = map[hapRoute]int{}
		}
		switch {
		case port.proto != app.Protocol:
			p.warnings = append(p.warnings, fmt.Sprintf("application %s: listen port %d already serves %s (application %s); left out", app.Name, app.ListenPort, port.proto, port.owner))
		case app.Protocol == catalog.ProtocolTCP && port.tcpApp >= 0:
			p.warnings = append(p.warnings, fmt.Sprintf("application %s: listen port %d already forwards tcp to application %s; left out", app.Name, app.ListenPort, port.owner))
		case app.Protocol == catalog.ProtocolTCP:
			port.tcpApp = i
			p.used[i] = true
		default:
			p.used[i] = g.planHTTP(&p, in, i, port, claimed[app.ListenPort])
			if !p.used[i] && len(port.routes) == 0 {
				// Left out entirely, it must not decide the port's
				// protocol for the applications after it.
				delete(byPort, app.ListenPort)
				delete(claimed, app.ListenPort)
			}
		}
	}
	for i, app := range p.apps {
		for _, s := range app.Servers {
			if !p.used[i] || s.FailTimeout == "" {
				continue
			}
			if ms, err := haproxyTimeMs(s.FailTimeout); err != nil || ms > haproxyMaxTimeMs {
				p.warnings = append(p.warnings, fmt.Sprintf("application %s: backend %s: fail-timeout %s is longer than HAProxy allows; %s is used", app.Name, s.Node, s.FailTimeout, haproxyClampedTime))
			}
		}
	}
	g.planACME(&p, in, byPort)
	for _, port := range byPort {
		if port.tcpApp >= 0 || len(port.routes) > 0 || port.acme != nil {
			p.ports = append(p.ports, port)
		}
	}
	slices.SortFunc(p.ports, func(a, b *hapPort) int { return cmp.Compare(a.port, b.port) })
	for _, port := range p.ports {
		slices.SortStableFunc(port.routes, compareRoutes)
	}
	return p
}

// planHTTP adds application i's routes to port and reports whether any
// remain. Routes another application already has are left out, and so
// are, on https ports, domains without a certificate HAProxy can load.
func (g haproxy) planHTTP(p *hapPlan, in Input, i int, port *hapPort, claimed map[hapRoute]int) bool {
	app := p.apps[i]
	hosts := app.Domains
	if len(hosts) == 0 {
		hosts = []string{""}
	}
	var crts [][]string // for https: the crt files each of hosts needs
	if app.Protocol == catalog.ProtocolHTTPS {
		hosts, crts = g.certificates(p, in, app)
		if len(hosts) == 0 {
			p.warnings = append(p.warnings, fmt.Sprintf("application %s: no domain has a certificate HAProxy can load; left out", app.Name))
			return false
		}
	}
	paths := app.Paths
	if len(paths) == 0 {
		paths = []string{""}
	}
	var taken, full []string
	added := 0
	for h, host := range hosts {
		var need []string // certificates this host adds to the port
		if crts != nil {
			for _, c := range crts[h] {
				if !slices.Contains(port.certs, c) {
					need = append(need, c)
				}
			}
			if room := haproxyMaxBindCerts - len(port.certs); len(need) > room {
				// A catch-all makes do with the certificates that fit, as
				// long as it has one; a domain needs its own.
				if host != "" || room+len(crts[h])-len(need) == 0 {
					full = append(full, hapRoute{host: host}.String())
					continue
				}
				full = append(full, fmt.Sprintf("%d of its certificates", len(need)-room))
				need = need[:room]
			}
		}
		hostAdded := false
		for _, path := range paths {
			r := hapRoute{app: i, host: host, path: path}
			key := hapRoute{app: -1, host: host, path: path}
			if owner, dup := claimed[key]; dup {
				taken = append(taken, fmt.Sprintf("%s (application %s)", r, p.apps[owner].Name))
				continue
			}
			claimed[key] = i
			port.routes = append(port.routes, r)
			added++
			hostAdded = true
		}
		if hostAdded {
			port.certs = append(port.certs, need...)
		}
	}
	if len(full) > 0 {
		what := "those left out"
		if added == 0 {
			what = "left out"
		}
		p.warnings = append(p.warnings, fmt.Sprintf("application %s: listen port %d has the most certificates one HAProxy bind line takes (%d), none for %s; %s",
			app.Name, port.port, haproxyMaxBindCerts, strings.Join(full, ", "), what))
	}
	if len(taken) > 0 {
		what := "those routes are left out"
		if added == 0 && len(full) == 0 {
			what = "left out"
		}
		if len(taken) > 10 {
			taken = append(taken[:10], fmt.Sprintf("and %d more", len(taken)-10))
		}
		p.warnings = append(p.warnings, fmt.Sprintf("application %s: listen port %d already routes %s; %s", app.Name, port.port, strings.Join(taken, ", "), what))
	}
	return added > 0
}

// certificates returns the hosts of an https application that have a
// certificate HAProxy can load, and for each the crt files it needs. An
// application without domains is served with every usable certificate
// (HAProxy picks one by SNI, the first when the client sends none).
func (g haproxy) certificates(p *hapPlan, in Input, app hapApp) (hosts []string, crts [][]string) {
	if len(app.Domains) == 0 {
		var all []string
		for _, c := range in.TLS {
			crt, problem := haproxyCrt(c, in.Standalone)
			if problem != "" {
				p.warnings = append(p.warnings, fmt.Sprintf("application %s: %s; certificate left out", app.Name, problem))
				continue
			}
			if !slices.Contains(all, crt) {
				all = append(all, crt)
			}
		}
		if len(all) == 0 {
			return nil, nil
		}
		return []string{""}, [][]string{all}
	}
	for _, d := range app.Domains {
		c, ok := CertFor(in.TLS, d)
		if !ok {
			p.warnings = append(p.warnings, fmt.Sprintf("application %s: no certificate for %s in lb.tls; domain left out", app.Name, d))
			continue
		}
		crt, problem := haproxyCrt(c, in.Standalone)
		if problem != "" {
			p.warnings = append(p.warnings, fmt.Sprintf("application %s: %s; domain %s left out", app.Name, problem, d))
			continue
		}
		hosts = append(hosts, d)
		crts = append(crts, []string{crt})
	}
	return hosts, crts
}

// haproxyCrt returns the file to name in a bind line's "crt" for c, or why
// HAProxy 2.6 cannot load c. HAProxy 2.6 has no keyword for a key file
// (crt-store arrived in 3.0): it reads the key from the certificate's PEM
// file, or else from a file next to it. Standalone configurations set
// ssl-load-extra-del-ext, so the key of NAME.crt is NAME.key; the key of
// any other certificate file, and of every certificate in an include
// fragment (the system's global section decides there, and its default is
// to append), is CERT.key. A key anywhere else needs the two files
// concatenated into one, which the generator cannot do: it does no I/O.
func haproxyCrt(c TLSCert, standalone bool) (crt, problem string) {
	if !haproxySafePath(c.Cert) || !haproxySafePath(c.Key) {
		return "", fmt.Sprintf("certificate %q or key %q is not an absolute path of letters, digits and /._-+,:@=~%%", c.Cert, c.Key)
	}
	want := c.Cert + ".key"
	if base, ok := strings.CutSuffix(c.Cert, ".crt"); ok && standalone {
		want = base + ".key"
	}
	if c.Key != c.Cert && c.Key != want {
		return "", fmt.Sprintf("certificate %s: HAProxy 2.6 reads its private key from the same file or from %s, not from %s (move the key there, or concatenate certificate and key into one file and name it as both)", c.Cert, want, c.Key)
	}
	return c.Cert, ""
}

// compareRoutes orders routes as HAProxy must try them: exact hosts, then
// wildcards (longer suffixes first), then any host; within those, longer
// path prefixes first and "any path" last. Ties keep the application
// order.
func compareRoutes(a, b hapRoute) int {
	if c := cmp.Compare(a.kind(), b.kind()); c != 0 {
		return c
	}
	if a.kind() == 1 {
		if c := cmp.Compare(len(b.host), len(a.host)); c != 0 {
			return c
		}
	}
	if c := cmp.Compare(len(b.path), len(a.path)); c != 0 {
		return c
	}
	if c := cmp.Compare(a.app, b.app); c != 0 {
		return c
	}
	if c := strings.Compare(a.host, b.host); c != 0 {
		return c
	}
	return strings.Compare(a.path, b.path)
}

func (g haproxy) global(w *hapWriter, stateDir string, asRoot bool) {
	w.section("global")
	if asRoot {
		// The master keeps root to reload; the workers, which handle
		// the traffic, switch to an unprivileged user once they have
		// their listeners.
		w.line("user %s", g.o.User)
		w.line("group %s", g.o.Group)
	}
	w.line("maxconn %d", g.o.MaxConn)
	// The runtime API, for tools and for scrimp's later use; the master
	// process has its own CLI socket, given on the command line (-S).
	w.line("stats socket %s mode 600 level admin", haproxySocket(stateDir))
	w.line("hard-stop-after %s", g.o.HardStopAfter)
	// Certificate keys: NAME.key next to NAME.crt (see haproxyCrt), and no
	// lookups of OCSP, issuer or SCT files scrimp does not manage.
	w.line("ssl-load-extra-del-ext")
	w.line("ssl-load-extra-files key")
}

func (g haproxy) defaults(w *hapWriter) {
	w.section("defaults " + haproxyDefaults)
	w.line("mode http")
	w.line("maxconn %d", g.o.MaxConn)
	w.line("timeout connect %s", g.o.TimeoutConnect)
	w.line("timeout client %s", g.o.TimeoutClient)
	w.line("timeout server %s", g.o.TimeoutServer)
	w.line("timeout tunnel %s", g.o.TimeoutTunnel)
	w.line("timeout http-request 10s")
	// A request whose connection to a server fails is retried, each time
	// on another server, so a backend that just went away costs no request.
	w.line("retries %d", g.o.Retries)
	if g.o.Retries > 0 {
		w.line("option redispatch 1")
		w.line("retry-on conn-failure empty-response")
	}
}

// frontend writes port's frontend and reports whether it sends unknown
// hosts to the 404 backend.
func (g haproxy) frontend(w *hapWriter, listen netip.Addr, p hapPlan, port *hapPort) (notFound bool) {
	addr := netip.AddrPortFrom(listen, uint16(port.port)).String()
	w.section("frontend " + haproxyFrontend(port.port))
	if port.tcpApp >= 0 {
		w.line("mode tcp")
		w.line("bind %s", addr)
		w.line("default_backend %s", haproxyBackend(p.apps[port.tcpApp].Name))
		return false
	}
	w.line("mode http")
	switch port.proto {
	case catalog.ProtocolHTTPS:
		w.start("bind %s ssl", addr)
		for _, c := range port.certs {
			w.add(" crt %s", c)
		}
		w.add(" alpn h2,http/1.1")
		w.end()
	case catalog.ProtocolGRPC:
		// Cleartext HTTP/2 (h2c with prior knowledge), as gRPC clients
		// speak it; HAProxy balances each request (stream) on its own.
		w.line("bind %s proto h2", addr)
	default:
		w.line("bind %s", addr)
	}
	w.line("option forwardfor")
	scheme := "http"
	if port.proto == catalog.ProtocolHTTPS {
		scheme = "https"
	}
	w.line("http-request set-header X-Forwarded-Proto %s", scheme)

	hostRules := slices.ContainsFunc(port.routes, func(r hapRoute) bool { return r.host != "" }) || port.acme != nil
	if hostRules {
		// The Host header (HTTP/2's :authority) without its port, in lower
		// case like every validated domain.
		w.line("http-request set-var(%s) req.hdr(host),field(1,:),lower", haproxyHostVar)
	}
	acmeRules(w, port.acme)
	// One ACL per application for its exact host names, in application
	// order; wildcards get one condition each, since they are ordered by
	// suffix length across applications.
	exactHosts := map[int][]string{}
	var exactApps []int
	for _, r := range port.routes {
		if r.kind() != 0 {
			continue
		}
		hosts, ok := exactHosts[r.app]
		if !ok {
			exactApps = append(exactApps, r.app)
		}
		if !slices.Contains(hosts, r.host) {
			exactHosts[r.app] = append(hosts, r.host)
		}
	}
	slices.Sort(exactApps)
	for _, i := range exactApps {
		for hosts := range slices.Chunk(exactHosts[i], haproxyACLHosts) {
			w.line("acl %s var(%s) -m str %s", haproxyHostACL(p.apps[i].Name), haproxyHostVar, strings.Join(hosts, " "))
		}
	}
	defaultBackend := haproxyNotFound
	// The exact hosts of an application share one ACL, so its routes for
	// one path differ only in the host and need only one rule.
	exactDone := map[hapRoute]bool{}
	for _, r := range port.routes {
		name := p.apps[r.app].Name
		var cond []string
		switch r.kind() {
		case 0:
			key := hapRoute{app: r.app, path: r.path}
			if exactDone[key] {
				continue
			}
			exactDone[key] = true
			cond = append(cond, haproxyHostACL(name))
		case 1:
			cond = append(cond, fmt.Sprintf("{ var(%s) -m end %s }", haproxyHostVar, strings.TrimPrefix(r.host, "*")))
		}
		if r.path != "" {
			cond = append(cond, fmt.Sprintf("{ path_beg %s }", r.path))
		}
		if len(cond) == 0 {
			defaultBackend = haproxyBackend(name)
			continue
		}
		w.line("use_backend %s if %s", haproxyBackend(name), strings.Join(cond, " "))
	}
	w.line("default_backend %s", defaultBackend)
	return defaultBackend == haproxyNotFound
}

func (g haproxy) backend(w *hapWriter, app hapApp, rt *hapRuntime) {
	w.section("backend " + haproxyBackend(app.Name))
	if app.Protocol == catalog.ProtocolTCP {
		w.line("mode tcp")
	} else {
		w.line("mode http")
	}
	if rt != nil && app.Protocol != catalog.ProtocolTCP {
		// With slots, an application that lost every backend keeps its
		// section (so that losing and regaining them needs no reload);
		// HAProxy's own 503 for "no server available" then answers like
		// a retained application. (Not "http-request return … if
		// { nbsrv eq 0 }": a worker just started by a reload counts no
		// usable server for a moment, and that failed requests.)
		w.line(`http-error status 503 content-type text/plain hdr Retry-After %d string "scrimp: %s has no live backend, retry later"`, g.o.RetryAfter, app.Name)
	}
	if app.retained && rt == nil {
		w.line("# Every backend of %s is gone; it is kept until they return or lb.retain-empty passes.", app.Name)
		if app.Protocol != catalog.ProtocolTCP {
			w.line(`http-request return status 503 content-type text/plain hdr Retry-After %d string "scrimp: %s has no live backend, retry later"`, g.o.RetryAfter, app.Name)
		}
		return
	}
	switch app.Balance.Or(catalog.BalanceRoundRobin) {
	case catalog.BalanceRoundRobin:
		w.line("balance roundrobin")
	case catalog.BalanceLeastConn:
		w.line("balance leastconn")
	case catalog.BalanceRandom:
		w.line("balance random")
	case catalog.BalanceHash:
		switch kind, name := catalog.HashKeyParts(app.HashKey); kind {
		case "header":
			w.line("balance hdr(%s)", name)
		case "cookie":
			w.line("balance hash req.cook(%s)", name)
		case "query":
			w.line("balance url_param %s", name)
		default:
			w.line("balance source")
		}
		// Consistent: adding or removing one of N servers remaps about
		// 1/N of the keys. avalanche mixes the key's hash before it is
		// placed on the ring; without it similar keys (user-1, user-2…)
		// fall on one server.
		w.line("hash-type consistent sdbm avalanche")
	}
	if app.HealthPath != "" {
		w.line("option httpchk GET %s", app.HealthPath)
	}
	if rt != nil {
		g.slots(w, app, rt)
		return
	}
	ids := haproxyServerIDs(app.Servers)
	for i, s := range app.Servers {
		g.server(w, app, s, ids[i])
	}
}

// server writes one server line. Its id fixes the server's points on the
// consistent-hash ring (HAProxy 2.6 derives them from the id, and would
// otherwise number servers in order, so a backend joining in the middle
// would move the keys of every later one).
func (g haproxy) server(w *hapWriter, app hapApp, s catalog.Server, id int) {
	// Appended piece by piece rather than formatted: a large cluster has
	// tens of thousands of server lines.
	b := append(w.b, "    server "...)
	b = append(b, s.Node...)
	b = append(b, ' ')
	b = netip.AddrPortFrom(s.Addr, uint16(s.Port)).AppendTo(b)
	b = append(b, " id "...)
	b = strconv.AppendInt(b, int64(id), 10)
	b = append(b, " weight "...)
	b = strconv.AppendInt(b, int64(s.Weight), 10)
	w.b = b
	g.serverChecks(w, app, s.MaxFails, s.FailTimeout)
	w.end()
}

// serverChecks appends a server line's health-check and protocol options:
// maxFails and failTimeout are the backend's own, zero and empty meaning
// the generator's defaults.
func (g haproxy) serverChecks(w *hapWriter, app hapApp, maxFails int, failTimeout string) {
	fall := g.o.MaxFails
	if maxFails > 0 {
		fall = maxFails
	}
	down := g.o.FailTimeout
	if failTimeout != "" {
		down = failTimeout
		// catalog allows up to 999999m; HAProxy's timers stop at ~24.8
		// days, and a longer value would make it reject the whole file.
		if ms, err := haproxyTimeMs(down); err != nil || ms > haproxyMaxTimeMs {
			down = haproxyClampedTime
		}
	}
	b := append(w.b, " check inter "...)
	b = append(b, g.o.CheckInterval...)
	b = append(b, " fall "...)
	b = strconv.AppendInt(b, int64(fall), 10)
	b = append(b, " rise "...)
	b = strconv.AppendInt(b, int64(g.o.Rise), 10)
	b = append(b, " downinter "...)
	b = append(b, down...)
	b = append(b, " observe layer4 error-limit "...)
	b = strconv.AppendInt(b, int64(fall), 10)
	b = append(b, " on-error mark-down"...)
	w.b = b
	if app.Protocol == catalog.ProtocolGRPC {
		w.add(" proto h2")
		if app.HealthPath != "" {
			w.add(" check-proto h2")
		}
	}
}

// haproxyIDRange bounds server ids: the ring points of a server are
// hash(id*4096 + n) in 32 bits, so ids below 2^20 never share points.
const haproxyIDRange = 1<<20 - 1

// haproxyServerIDs derives each server's id from its node name, so it is
// the same on every load balancer and whatever other servers exist. The
// rare collision within one backend takes the next free id, in node name
// order.
func haproxyServerIDs(servers []catalog.Server) []int {
	ids := make([]int, len(servers))
	taken := make(map[int]bool, len(servers))
	for i, s := range servers {
		h := fnv.New32a()
		h.Write([]byte(s.Node))
		id := int(h.Sum32()%haproxyIDRange) + 1
		for taken[id] {
			id = id%haproxyIDRange + 1
		}
		taken[id] = true
		ids[i] = id
	}
	return ids
}

// hapWriter builds HAProxy configuration text: section headers at the
// margin, keywords indented under them.
type hapWriter struct {
	b []byte
	// masks are the byte ranges of slot values (address, weight, state),
	// which the skeleton leaves out.
	masks [][2]int
}

// mask marks b[from:] as a slot value.
func (w *hapWriter) mask(from int) { w.masks = append(w.masks, [2]int{from, len(w.b)}) }

// skeleton hashes the text outside the masks.
func (w *hapWriter) skeleton() [32]byte {
	h := sha256.New()
	pos := 0
	for _, m := range w.masks {
		h.Write(w.b[pos:m[0]])
		h.Write([]byte{0}) // where a value was: moving text across it changes the hash
		pos = m[1]
	}
	h.Write(w.b[pos:])
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

func (w *hapWriter) section(header string) {
	w.b = append(w.b, '\n')
	w.b = append(w.b, header...)
	w.b = append(w.b, '\n')
}

func (w *hapWriter) line(format string, args ...any) {
	w.start(format, args...)
	w.end()
}

// start, add and end write one keyword line in pieces.
func (w *hapWriter) start(format string, args ...any) {
	w.b = append(w.b, "    "...)
	w.add(format, args...)
}

func (w *hapWriter) add(format string, args ...any) {
	if len(args) == 0 {
		w.b = append(w.b, format...)
		return
	}
	w.b = fmt.Appendf(w.b, format, args...)
}

func (w *hapWriter) end() { w.b = append(w.b, '\n') }

func (w *hapWriter) comment(format string, args ...any) {
	w.b = append(w.b, "# "...)
	w.add(format, args...)
	w.end()
}
