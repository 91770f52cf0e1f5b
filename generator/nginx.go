package generator

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/plugin"
)

func init() { Register("nginx", newNginx) }

// NginxOptions are the nginx generator's "lb.generator-options".
type NginxOptions struct {
	// WorkerConnections is worker_connections in a standalone config.
	WorkerConnections int `json:"worker-connections"`
	// MaxFails and FailTimeout are the passive health check of every
	// upstream server whose backend does not set its own: after MaxFails
	// failures within FailTimeout nginx stops sending to it for
	// FailTimeout.
	MaxFails    int    `json:"max-fails"`
	FailTimeout string `json:"fail-timeout"`
	// Keepalive is how many idle connections each worker keeps open to
	// each HTTP and gRPC upstream.
	Keepalive int `json:"keepalive"`
	// ConnectTimeout bounds connecting to a backend, so an unreachable
	// one costs this long (not nginx's default 60s) before the request
	// moves on to the next backend.
	ConnectTimeout string `json:"connect-timeout"`
	// NextUpstreamTries bounds how many backends one request or
	// connection is tried on before the client gets an error, 1-100.
	NextUpstreamTries int `json:"next-upstream-tries"`
	// UDPTimeout ends a udp session (client address and port, one
	// upstream socket) after this long without a datagram either way.
	// nginx's default, 10m, would hold a socket and a worker connection
	// per client for ten minutes, and keep an old worker alive that long
	// after each reload.
	UDPTimeout string `json:"udp-timeout"`
	// TCPTimeout ends a tcp connection after this long without data
	// either way (stream proxy_timeout), so an idle connection cannot
	// hold a worker connection, or an old worker, indefinitely.
	TCPTimeout string `json:"tcp-timeout"`
	// WorkerShutdownTimeout bounds how long the workers of an old
	// configuration keep serving their connections after a reload
	// (standalone only): without it, frequent reloads with connections
	// held open pile up old workers and their memory.
	WorkerShutdownTimeout string `json:"worker-shutdown-timeout"`
	// RetryAfter is the Retry-After header, in seconds, of the 503 an
	// application without backends answers with, 1-86400.
	RetryAfter int `json:"retry-after"`
	// StreamModule is the ngx_stream_module file a standalone
	// configuration loads when it has tcp or udp applications; empty for
	// an nginx built with the stream module compiled in.
	StreamModule string `json:"stream-module"`
	// DefaultServer says whether listen directives carry default_server.
	// Unset means yes in standalone (managed) mode, where scrimp owns
	// every listener, and no in include (external) mode; see
	// nginx.defaultServer for why.
	DefaultServer *bool `json:"default-server,omitempty"`
	// SizeNamesHash says whether the configuration sizes nginx's server
	// names hash for its host names (server_names_hash_bucket_size and
	// _max_size). Unset means yes. In include mode the directives land in
	// the system's http block; set it to false if the system nginx.conf
	// sets them itself (nginx rejects a duplicate) — and then make them
	// large enough for host names longer than about 46 characters.
	SizeNamesHash *bool `json:"size-names-hash,omitempty"`
	// StatusPort, if not 0, adds a server on 127.0.0.1:StatusPort (managed
	// mode only) answering nginx's request counters (stub_status) at
	// NginxStatusPath, which the status page shows. Loopback only: it
	// tells anyone who reaches it how busy the proxy is.
	StatusPort int `json:"status-port,omitempty"`
	// Balancer is how membership changes reach a managed nginx:
	// "reload" renders server lines and reloads on every change; "lua"
	// has http and grpc upstreams pick servers in lua from a membership
	// scrimp updates without a reload (see NginxBalancerLua); "auto" is
	// "lua" in managed mode when the runner found the lua module, else
	// "reload". Stream (tcp, udp) applications always reload.
	Balancer string `json:"balancer,omitempty"`
	// LuaModules are the module files a lua-mode configuration loads, in
	// order (ndk first).
	LuaModules []string `json:"lua-modules,omitempty"`
}

// NginxStatusPath is the stub_status location of NginxOptions.StatusPort.
const NginxStatusPath = "/scrimp-stub-status"

// DebianStreamModule is where Debian's libnginx-mod-stream installs the
// stream module.
const DebianStreamModule = "/usr/lib/nginx/modules/ngx_stream_module.so"

// DefaultNginxOptions returns the nginx generator's defaults.
func DefaultNginxOptions() NginxOptions {
	return NginxOptions{
		WorkerConnections: 1024, MaxFails: 1, FailTimeout: "2s", Keepalive: 16,
		ConnectTimeout: "5s", NextUpstreamTries: 3, UDPTimeout: "10s", RetryAfter: 5, StreamModule: DebianStreamModule,
		TCPTimeout: "10m", WorkerShutdownTimeout: "30s",
		Balancer: NginxBalancerAuto, LuaModules: slices.Clone(DebianLuaModules),
	}
}

type nginx struct {
	o   NginxOptions
	lua bool // this render uses the lua balancer (Render sets it on its copy)
}

func newNginx(raw json.RawMessage) (Generator, error) {
	o := DefaultNginxOptions()
	if err := plugin.DecodeOptions(raw, &o); err != nil {
		return nil, err
	}
	switch {
	case o.WorkerConnections < 16:
		return nil, fmt.Errorf("worker-connections: %d, at least 16 needed", o.WorkerConnections)
	case o.MaxFails < 0:
		return nil, fmt.Errorf("max-fails: %d must not be negative", o.MaxFails)
	case o.Keepalive < 0:
		return nil, fmt.Errorf("keepalive: %d must not be negative", o.Keepalive)
	case !isNginxTime(o.FailTimeout):
		return nil, fmt.Errorf("fail-timeout: %q is not an nginx time in whole seconds or minutes such as \"2s\" or \"1m\"", o.FailTimeout)
	case !isNginxTime(o.ConnectTimeout) || strings.Trim(o.ConnectTimeout, "0sm") == "":
		return nil, fmt.Errorf("connect-timeout: %q is not a positive nginx time in whole seconds or minutes such as \"5s\"", o.ConnectTimeout)
	case !isNginxTime(o.UDPTimeout) || strings.Trim(o.UDPTimeout, "0sm") == "":
		return nil, fmt.Errorf("udp-timeout: %q is not a positive nginx time in whole seconds or minutes such as \"10s\"", o.UDPTimeout)
	case !isNginxTime(o.TCPTimeout) || strings.Trim(o.TCPTimeout, "0sm") == "":
		return nil, fmt.Errorf("tcp-timeout: %q is not a positive nginx time in whole seconds or minutes such as \"10m\"", o.TCPTimeout)
	case !isNginxTime(o.WorkerShutdownTimeout) || strings.Trim(o.WorkerShutdownTimeout, "0sm") == "":
		return nil, fmt.Errorf("worker-shutdown-timeout: %q is not a positive nginx time in whole seconds or minutes such as \"30s\"", o.WorkerShutdownTimeout)
	case o.NextUpstreamTries < 1 || o.NextUpstreamTries > 100:
		// 0 would mean "every backend" to nginx: unbounded work per request.
		return nil, fmt.Errorf("next-upstream-tries: %d is not in 1-100", o.NextUpstreamTries)
	case o.RetryAfter < 1 || o.RetryAfter > 86400:
		return nil, fmt.Errorf("retry-after: %d is not a number of seconds in 1-86400", o.RetryAfter)
	case o.StatusPort < 0 || o.StatusPort > 65535:
		return nil, fmt.Errorf("status-port: %d is not a port in 1-65535 (0 for none)", o.StatusPort)
	}
	if o.StreamModule != "" {
		if err := checkConfPath(o.StreamModule); err != nil {
			return nil, fmt.Errorf("stream-module: %w", err)
		}
	}
	if err := o.checkLua(); err != nil {
		return nil, err
	}
	return nginx{o: o}, nil
}

// isNginxTime accepts up to six digits followed by s or m: enough for a
// timeout, and nothing that could escape the directive. fail_timeout is
// parsed in seconds, so nginx rejects "ms" (and any sign) there.
func isNginxTime(s string) bool {
	for _, unit := range []string{"s", "m"} {
		if n, ok := strings.CutSuffix(s, unit); ok {
			return n != "" && len(n) <= 6 && strings.Trim(n, "0123456789") == ""
		}
	}
	return false
}

// unsafeConfChars may not appear in a file path written into nginx.conf:
// white space and quotes would split or open a token, ';' '{' '}' end a
// directive, '#' starts a comment, '$' a variable.
const unsafeConfChars = " \t\n\r\v\f;{}#\"'\\$"

// checkConfPath reports whether p is an absolute path that can be written
// into nginx.conf unquoted without changing its meaning.
func checkConfPath(p string) error {
	switch {
	case !filepath.IsAbs(p):
		return fmt.Errorf("%q must be an absolute path", p)
	case len(p) > 4096:
		return fmt.Errorf("%d characters, at most 4096 allowed", len(p))
	case strings.ContainsAny(p, unsafeConfChars):
		return fmt.Errorf("%q must not contain white space or any of ;{}#\"'\\$", p)
	case strings.ContainsFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Errorf("%q must not contain control characters", p)
	}
	return nil
}

// defaultServer says whether listen directives carry default_server.
//
// In standalone mode scrimp's nginx owns every listener, so each port's
// fallback server (a 404, a TLS handshake rejection, or the port's
// catch-all application) is marked default_server explicitly.
//
// In include mode the fragment joins a system nginx that usually has
// "listen 80 default_server" already (Debian's sites-enabled/default); a
// second default_server on the same address and port is a fatal
// "duplicate default server" error that would make nginx reject the whole
// fragment. So by default it is not emitted there. The fallback server is
// still written first for its port, which makes it nginx's implicit
// default unless the system configuration has an explicit default_server
// (or an earlier server) for the same address and port; then unknown
// hosts reach that one instead, never another application's backends.
// Operators who know their system nginx has no such server can set
// "default-server": true.
func (g nginx) defaultServer(in Input) bool {
	if g.o.DefaultServer != nil {
		return *g.o.DefaultServer
	}
	return in.Standalone
}

// Render writes the nginx configuration for in. Every value it writes is
// validated here against the catalog grammar (names, domains, paths, hash
// keys, timeouts, ports, IP addresses, node names), is a checked file path
// (state directory, certificates, stream module), or is text generated
// here, so nothing from the network can add a directive.
func (g nginx) Render(in Input) (Output, error) {
	listen, err := netip.ParseAddr(in.ListenAddr)
	if err != nil {
		return Output{}, fmt.Errorf("nginx: listen address %q: %w", in.ListenAddr, err)
	}
	if listen.Zone() != "" {
		return Output{}, fmt.Errorf("nginx: listen address %q: nginx cannot listen on an address with a zone", in.ListenAddr)
	}
	if in.Standalone {
		if err := checkConfPath(in.StateDir); err != nil {
			return Output{}, fmt.Errorf("nginx: state dir: %w", err)
		}
	}
	p := g.plan(in)
	lua, why := g.luaMode(in)
	if why != "" {
		p.warnings = append(p.warnings, why)
	}
	g.lua = lua

	w := &writer{b: make([]byte, 0, p.sizeHint())}
	w.line("# Generated by scrimp from the cluster membership. Do not edit: it is rewritten on every change.")
	if in.Standalone {
		if len(p.stream) > 0 && g.o.StreamModule != "" {
			// Only with stream applications: a configuration that does
			// not need the module keeps working where it is not installed.
			w.line("load_module %s;", g.o.StreamModule)
		}
		if g.lua {
			g.luaModules(w)
		}
		g.standaloneHeader(w, in.StateDir)
		w.open("http")
		g.httpSettings(w, in.StateDir, p)
	} else {
		g.namesHash(w, p)
	}
	g.renderHTTP(w, p, listen, g.defaultServer(in))
	luaAt := 0
	if in.Standalone {
		g.statusServer(w)
		if g.lua {
			luaAt = g.luaHTTP(w, in.StateDir)
		}
		w.close()
		g.renderStream(w, p, listen)
	}
	out := Output{Config: w.bytes(), Warnings: p.warnings}
	if g.lua {
		g.luaFinish(&out, luaAt, p)
	}
	return out, nil
}

// statusServer writes the loopback-only stub_status server of
// StatusPort, if set.
func (g nginx) statusServer(w *writer) {
	if g.o.StatusPort == 0 {
		return
	}
	w.open("server")
	w.line("listen 127.0.0.1:%d;", g.o.StatusPort)
	w.line("location = %s { stub_status; allow 127.0.0.1; deny all; }", NginxStatusPath)
	w.line("location / { return 404; }")
	w.close()
}

func (g nginx) standaloneHeader(w *writer, dir string) {
	w.line("worker_processes auto;")
	w.line("worker_shutdown_timeout %s;", g.o.WorkerShutdownTimeout)
	w.line("pid %s;", filepath.Join(dir, "nginx.pid"))
	w.line("error_log stderr warn;")
	w.open("events")
	w.line("worker_connections %d;", g.o.WorkerConnections)
	w.close()
}

func (g nginx) httpSettings(w *writer, dir string, p *ngPlan) {
	w.line("access_log off;")
	w.line("server_tokens off;")
	for _, t := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		w.line("%s_temp_path %s;", t, filepath.Join(dir, "tmp", t))
	}
	g.namesHash(w, p)
}

// namesHash sizes the server names hash: nginx's defaults (a cache line
// per bucket, 512 buckets) reject a configuration with long host names
// (valid up to 253 characters) or many names on one port.
func (g nginx) namesHash(w *writer, p *ngPlan) {
	if g.o.SizeNamesHash != nil && !*g.o.SizeNamesHash {
		return
	}
	if bucket, size := p.serverNamesHash(); bucket > 0 {
		w.line("server_names_hash_bucket_size %d;", bucket)
		w.line("server_names_hash_max_size %d;", size)
	}
}

// serverNamesHash returns sizes for nginx's server names hash that fit
// every host name of every port, or zeros when no port has any. nginx
// needs a bucket to hold one name's entry plus a pointer: 8 bytes, the
// name and 2 bytes rounded up to 8, and 8 more. The bucket count then
// allows about eight buckets per name on the busiest port, which lets
// nginx find a hash without collisions that overflow a bucket.
func (p *ngPlan) serverNamesHash() (bucket, size int) {
	longest, most := 0, 0
	for _, port := range p.http {
		names := 0
		for h := range port.hosts {
			if h != "" {
				names++
				longest = max(longest, len(h))
			}
		}
		most = max(most, names)
	}
	if most == 0 {
		return 0, 0
	}
	return pow2AtLeast(8+(longest+2+7)/8*8+8, 64), pow2AtLeast(8*most, 512)
}

// pow2AtLeast returns the smallest power of two that is at least n and
// at least floor.
func pow2AtLeast(n, floor int) int {
	p := floor
	for p < n {
		p *= 2
	}
	return p
}

// listenKind is what a listen port speaks. One nginx listener (address and
// port) has one set of listen options, so applications can share a port
// only when they need the same kind.
type listenKind uint8

const (
	// kindHTTP is plain HTTP/1.1 (http applications).
	kindHTTP listenKind = iota + 1
	// kindTLS is TLS with HTTP/2 and HTTP/1.1 by ALPN (https applications).
	kindTLS
	// kindH2C is plaintext HTTP/2 with prior knowledge (grpc
	// applications); nginx then speaks nothing else on the port, so
	// HTTP/1.1 clients of an http application could not share it.
	kindH2C
	// kindTCP and kindUDP are stream proxies (tcp, udp applications).
	kindTCP
	kindUDP
)

func (k listenKind) String() string {
	switch k {
	case kindHTTP:
		return "plain HTTP/1.1 (http)"
	case kindTLS:
		return "TLS (https)"
	case kindH2C:
		return "plaintext HTTP/2 (grpc)"
	case kindTCP:
		return "a tcp stream"
	default:
		return "a udp stream"
	}
}

func kindOf(p catalog.Protocol) listenKind {
	switch p {
	case catalog.ProtocolHTTPS:
		return kindTLS
	case catalog.ProtocolGRPC:
		return kindH2C
	case catalog.ProtocolTCP:
		return kindTCP
	case catalog.ProtocolUDP:
		return kindUDP
	default:
		return kindHTTP
	}
}

// ngApp is one application to render: live with its servers, or retained
// (all backends gone) with none.
type ngApp struct {
	catalog.Application
	servers  []catalog.Server
	retained bool
}

// ngPort is one listen port's servers: every host name routed there (""
// is the default server) and, per host, which application each path
// prefix goes to.
type ngPort struct {
	port  int
	kind  listenKind
	owner string // the first application placed on the port
	hosts map[string]*ngHost
	app   *ngApp // the application of a stream port
}

type ngHost struct {
	cert TLSCert           // kindTLS only
	locs map[string]*ngApp // path prefix → application
	// acme, if valid, is the challenge handler the ACME challenge path
	// goes to (placeACME); redirect, if set, answers paths without a
	// route with a 308 to this URL prefix.
	acme     netip.AddrPort
	redirect string
}

type portKey struct {
	port int
	udp  bool
}

// ngPlan is what Render writes, decided before any text is produced.
type ngPlan struct {
	upstreams []*ngApp // live http, https and grpc applications with routes, by name
	http      []*ngPort
	stream    []*ngPort
	warnings  []string
}

// planner decides what Render writes before any text is produced.
type planner struct {
	in    Input
	p     *ngPlan
	ports map[portKey]*ngPort
}

func (pl *planner) warn(format string, args ...any) {
	pl.p.warnings = append(pl.p.warnings, fmt.Sprintf(format, args...))
}

// plan validates every application and backend, places each on its listen
// port and routes, and records what was left out and why. Live
// applications are placed before retained ones (each in name order), so a
// retained application can never take a port or route from a live one.
func (g nginx) plan(in Input) *ngPlan {
	pl := &planner{in: in, p: &ngPlan{}, ports: map[portKey]*ngPort{}}
	for _, a := range pl.apps() {
		if a.Protocol == catalog.ProtocolTCP || a.Protocol == catalog.ProtocolUDP {
			pl.placeStream(a)
		} else {
			pl.placeHTTP(a)
		}
	}
	pl.placeACME()
	p := pl.p
	for _, use := range pl.ports {
		if use.kind == kindTCP || use.kind == kindUDP {
			p.stream = append(p.stream, use)
		} else {
			p.http = append(p.http, use)
		}
	}
	byPort := func(a, b *ngPort) int {
		if a.port != b.port {
			return a.port - b.port
		}
		return int(a.kind) - int(b.kind) // tcp before udp
	}
	slices.SortFunc(p.http, byPort)
	slices.SortFunc(p.stream, byPort)
	slices.SortFunc(p.upstreams, func(a, b *ngApp) int { return strings.Compare(a.Name, b.Name) })
	return p
}

// apps returns the applications to place: the live ones with their valid
// backends, then the retained ones, each in name order.
func (pl *planner) apps() []*ngApp {
	services, conflicts := pl.in.Snapshot.Services()
	for _, c := range conflicts {
		pl.warn("application %s: backend %s left out: %s", c.Application, c.Node, c.Reason)
	}
	apps := make([]*ngApp, 0, len(services)+len(pl.in.Retained))
	live := make(map[string]bool, len(services))
	for _, s := range services {
		live[s.Name] = true
		if errs := s.Validate(); len(errs) > 0 {
			pl.warn("application %s: invalid definition left out: %v", strconv.Quote(s.Name), errs[0])
			continue
		}
		a := &ngApp{Application: s.Application, servers: make([]catalog.Server, 0, len(s.Servers))}
		for _, srv := range s.Servers {
			if err := checkServer(srv); err != nil {
				pl.warn("application %s: backend %s left out: %v", s.Name, strconv.Quote(srv.Node), err)
				continue
			}
			a.servers = append(a.servers, srv)
		}
		if len(a.servers) > 0 {
			apps = append(apps, a)
		}
	}
	retained := slices.Clone(pl.in.Retained)
	slices.SortStableFunc(retained, func(a, b catalog.Application) int { return strings.Compare(a.Name, b.Name) })
	for i, r := range retained {
		// An application that has backends again, or is listed twice,
		// is not retained (the first listing counts).
		if live[r.Name] || i > 0 && retained[i-1].Name == r.Name {
			continue
		}
		if errs := r.Validate(); len(errs) > 0 {
			pl.warn("application %s: invalid definition left out: %v", strconv.Quote(r.Name), errs[0])
			continue
		}
		apps = append(apps, &ngApp{Application: r, retained: true})
	}
	return apps
}

// placeStream gives a tcp or udp application its listen port, which no
// other application may share.
func (pl *planner) placeStream(a *ngApp) {
	kind := kindOf(a.Protocol)
	key := portKey{a.ListenPort, kind == kindUDP}
	if !pl.in.Standalone {
		pl.warn("application %s: %s needs nginx's stream module, which a file included inside http {} cannot configure (use managed mode); left out", a.Name, a.Protocol)
		return
	}
	if use := pl.ports[key]; use != nil {
		pl.warn("application %s: listen port %s is already used by application %s for %s; left out", a.Name, portLabel(key), use.owner, use.kind)
		return
	}
	pl.ports[key] = &ngPort{port: a.ListenPort, kind: kind, owner: a.Name, app: a}
}

// placeHTTP routes an http, https or grpc application's host names and
// path prefixes on its listen port. Routes another application already
// has stay with it; an application left without any route, or whose port
// speaks another kind of HTTP, is left out.
func (pl *planner) placeHTTP(a *ngApp) {
	kind := kindOf(a.Protocol)
	key := portKey{a.ListenPort, false}
	use := pl.ports[key]
	if use != nil && use.kind != kind {
		pl.warn("application %s: listen port %s is already used by application %s for %s, which %s cannot share; left out", a.Name, portLabel(key), use.owner, use.kind, kind)
		return
	}
	hosts := a.Domains
	if len(hosts) == 0 {
		hosts = []string{""}
	}
	var certs map[string]TLSCert
	if kind == kindTLS {
		if len(a.Domains) == 0 {
			pl.warn("application %s: https needs domains to choose a certificate by; left out", a.Name)
			return
		}
		var missing []string
		certs, hosts, missing = certsFor(pl.in.TLS, a.Domains)
		if len(hosts) == 0 {
			pl.warn("application %s: no usable certificate in lb.tls for %s; left out", a.Name, strings.Join(missing, ", "))
			return
		}
		if len(missing) > 0 {
			pl.warn("application %s: no usable certificate in lb.tls for %s; those domains left out", a.Name, strings.Join(missing, ", "))
		}
	}
	paths := a.Paths
	if len(paths) == 0 {
		paths = []string{"/"}
	}

	var lost []string
	won := 0
	for _, h := range hosts {
		for _, path := range paths {
			if use != nil && use.hosts[h] != nil && use.hosts[h].locs[path] != nil {
				lost = append(lost, fmt.Sprintf("%s%s to %s", hostLabel(h), path, use.hosts[h].locs[path].Name))
				continue
			}
			won++
		}
	}
	if len(lost) > 0 {
		what := "those routes left out"
		if won == 0 {
			what = "left out"
		}
		pl.warn("application %s: listen port %s: already routed to other applications: %s; %s", a.Name, portLabel(key), summarize(lost), what)
	}
	if won == 0 {
		return
	}

	if use == nil {
		use = &ngPort{port: a.ListenPort, kind: kind, owner: a.Name, hosts: map[string]*ngHost{}}
		pl.ports[key] = use
	}
	for _, h := range hosts {
		vh := use.hosts[h]
		if vh == nil {
			vh = &ngHost{cert: certs[h], locs: map[string]*ngApp{}}
			use.hosts[h] = vh
		}
		for _, path := range paths {
			if vh.locs[path] == nil { // the first of duplicate paths or domains
				vh.locs[path] = a
			}
		}
	}
	if !a.retained {
		pl.p.upstreams = append(pl.p.upstreams, a)
	}
}

func portLabel(k portKey) string {
	if k.udp {
		return strconv.Itoa(k.port) + "/udp"
	}
	return strconv.Itoa(k.port)
}

// sizeHint estimates the configuration's size, so the text is built
// without repeatedly growing (and copying) a buffer of megabytes.
func (p *ngPlan) sizeHint() int {
	n := 2048
	for _, a := range p.upstreams {
		n += 1024 + 90*len(a.servers)
	}
	for _, port := range p.stream {
		n += 256 + 90*len(port.app.servers)
	}
	return n
}

// certsFor finds a usable certificate for each domain: the domains that
// have one, and those that do not (or whose file paths cannot be written
// into nginx.conf).
func certsFor(all []TLSCert, domains []string) (certs map[string]TLSCert, found, missing []string) {
	certs = make(map[string]TLSCert, len(domains))
	for _, d := range domains {
		c, ok := CertFor(all, d)
		if !ok || checkConfPath(c.Cert) != nil || checkConfPath(c.Key) != nil {
			missing = append(missing, d)
			continue
		}
		certs[d] = c
		found = append(found, d)
	}
	return certs, found, missing
}

func hostLabel(h string) string {
	if h == "" {
		return "(any host)"
	}
	return h
}

// summarize lists at most three items, so one warning stays one line even
// for an application with 64 domains and 16 paths.
func summarize(items []string) string {
	if len(items) <= 3 {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:3], ", "), len(items)-3)
}

// renderHTTP writes one upstream per live application and the servers of
// every listen port: first the port's fallback (default) server — the
// catch-all applications' routes, else a 404 (or, on a TLS port, a
// rejected handshake for an unknown name) — then one server per set of
// host names that route alike.
func (g nginx) renderHTTP(w *writer, p *ngPlan, listen netip.Addr, defaultServer bool) {
	if len(p.http) == 0 {
		return
	}
	// Websocket upgrades pass through; other requests keep upstream
	// connections alive.
	w.line("map $http_upgrade $scrimp_connection { default upgrade; '' ''; }")
	for _, a := range p.upstreams {
		if g.lua {
			g.luaUpstream(w, a)
		} else {
			g.upstream(w, a, true)
		}
	}
	for _, port := range p.http {
		addr := netip.AddrPortFrom(listen, uint16(port.port)).String()
		params := ""
		switch port.kind {
		case kindTLS:
			params = " ssl http2"
		case kindH2C:
			params = " http2"
		}
		def := ""
		if defaultServer {
			def = " default_server"
		}

		w.open("server")
		w.line("listen %s%s%s;", addr, params, def)
		if port.kind == kindTLS {
			// No certificate fits a name nobody configured: refuse the
			// handshake rather than present another application's.
			w.line("ssl_reject_handshake on;")
			w.line("ssl_protocols TLSv1.2 TLSv1.3;")
		}
		if vh := port.hosts[""]; vh != nil {
			g.serverBody(w, port.kind, vh)
		} else {
			w.line("return 404;")
		}
		w.close()

		for _, grp := range groupHosts(port) {
			w.open("server")
			w.line("listen %s%s;", addr, params)
			w.line("server_name %s;", strings.Join(grp.names, " "))
			if port.kind == kindTLS {
				w.line("ssl_certificate %s;", grp.host.cert.Cert)
				w.line("ssl_certificate_key %s;", grp.host.cert.Key)
				w.line("ssl_protocols TLSv1.2 TLSv1.3;")
			}
			g.serverBody(w, port.kind, grp.host)
			w.close()
		}
	}
}

// hostGroup is host names of one port that route every path alike (and,
// for TLS, use the same certificate): one server block serves them all.
type hostGroup struct {
	names []string
	host  *ngHost
}

func groupHosts(port *ngPort) []hostGroup {
	names := make([]string, 0, len(port.hosts))
	for h := range port.hosts {
		if h != "" {
			names = append(names, h)
		}
	}
	slices.Sort(names)
	var groups []hostGroup
	index := map[string]int{}
	var sig []byte
	for _, h := range names {
		vh := port.hosts[h]
		sig = append(sig[:0], vh.cert.Cert...)
		sig = append(sig, 0)
		sig = append(sig, vh.cert.Key...)
		sig = append(sig, 0)
		sig = vh.acme.AppendTo(sig)
		sig = append(sig, 0)
		sig = append(sig, vh.redirect...)
		for _, path := range sortedPaths(vh) {
			a := vh.locs[path]
			sig = append(sig, 0)
			sig = append(sig, path...)
			sig = append(sig, 0)
			sig = append(sig, a.Name...)
		}
		if i, ok := index[string(sig)]; ok {
			groups[i].names = append(groups[i].names, h)
			continue
		}
		index[string(sig)] = len(groups)
		groups = append(groups, hostGroup{names: []string{h}, host: vh})
	}
	return groups
}

func sortedPaths(vh *ngHost) []string {
	paths := make([]string, 0, len(vh.locs))
	for path := range vh.locs {
		paths = append(paths, path)
	}
	slices.Sort(paths)
	return paths
}

// serverBody writes a server's proxy settings (once, inherited by its
// locations) and one location per path prefix. A host without a "/" route
// answers 404 for other paths rather than fall through to nginx's static
// file root.
func (g nginx) serverBody(w *writer, kind listenKind, vh *ngHost) {
	paths := sortedPaths(vh)
	proxied := false
	for _, a := range vh.locs {
		proxied = proxied || !a.retained
	}
	if proxied {
		if kind == kindH2C {
			g.grpcSettings(w)
		} else {
			g.proxySettings(w)
		}
	}
	if vh.acme.IsValid() {
		acmeLocation(w, vh.acme)
	}
	if vh.locs["/"] == nil {
		w.open("location /")
		if vh.redirect != "" {
			w.line("return 308 %s$request_uri;", vh.redirect)
		} else {
			w.line("return 404;")
		}
		w.close()
	}
	for _, path := range paths {
		a := vh.locs[path]
		w.open("location " + path)
		switch {
		case a.retained:
			// Every backend is gone, maybe only for a restart: tell
			// clients to come back rather than refuse or misroute them.
			w.line("add_header Retry-After %d always;", g.o.RetryAfter)
			w.line("return 503;")
		case kind == kindH2C:
			w.line("grpc_pass grpc://%s;", upstreamName(a.Name))
		default:
			w.line("proxy_pass http://%s;", upstreamName(a.Name))
		}
		w.close()
	}
}

func (g nginx) proxySettings(w *writer) {
	w.line("proxy_http_version 1.1;")
	w.line("proxy_set_header Host $host;")
	w.line("proxy_set_header Upgrade $http_upgrade;")
	w.line("proxy_set_header Connection $scrimp_connection;")
	w.line("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;")
	w.line("proxy_set_header X-Forwarded-Proto $scheme;")
	w.line("proxy_connect_timeout %s;", g.o.ConnectTimeout)
	// A backend that refuses, times out or answers 502-504 is skipped for
	// the next one. nginx never resends a non-idempotent request (POST,
	// PATCH) that reached a backend, and this keeps that default.
	w.line("proxy_next_upstream error timeout http_502 http_503 http_504;")
	w.line("proxy_next_upstream_tries %d;", g.o.NextUpstreamTries)
}

func (g nginx) grpcSettings(w *writer) {
	w.line("grpc_set_header X-Forwarded-For $proxy_add_x_forwarded_for;")
	w.line("grpc_connect_timeout %s;", g.o.ConnectTimeout)
	// Every gRPC call is a POST, so only calls that never reached a
	// backend (connect errors and timeouts) move on to the next one.
	w.line("grpc_next_upstream error timeout;")
	w.line("grpc_next_upstream_tries %d;", g.o.NextUpstreamTries)
	// A streaming call's body has no natural size; nginx's 1m default
	// would end long client streams with 413.
	w.line("client_max_body_size 0;")
}

// upstream writes an application's upstream block. The balancing method
// comes first: nginx requires it before keepalive.
func (g nginx) upstream(w *writer, a *ngApp, keepalive bool) {
	w.open("upstream " + upstreamName(a.Name))
	if b := balanceDirective(a.Application); b != "" {
		w.line("%s", b)
	}
	for _, srv := range a.servers {
		maxFails, failTimeout := g.o.MaxFails, g.o.FailTimeout
		if srv.MaxFails > 0 {
			maxFails = srv.MaxFails
		}
		if srv.FailTimeout != "" {
			failTimeout = srv.FailTimeout
		}
		w.line("server %s weight=%d max_fails=%d fail_timeout=%s; # %s", srv.HostPort(), srv.Weight, maxFails, failTimeout, srv.Node)
	}
	if keepalive && g.o.Keepalive > 0 {
		w.line("keepalive %d;", g.o.Keepalive)
	}
	w.close()
}

// balanceDirective is the upstream's balancing method; "" for nginx's
// default, weighted round-robin. Hashing is consistent (ketama), so adding
// or removing one of N backends remaps about 1/N of the keys. A request
// without the hashed header, cookie or query parameter hashes the empty
// string, so all such requests share one backend.
func balanceDirective(a catalog.Application) string {
	switch a.Balance {
	case catalog.BalanceLeastConn:
		return "least_conn;"
	case catalog.BalanceRandom:
		return "random two least_conn;"
	case catalog.BalanceHash:
		kind, name := catalog.HashKeyParts(a.HashKey)
		var v string
		switch kind {
		case "header":
			v = "$http_" + strings.ReplaceAll(strings.ToLower(name), "-", "_")
		case "cookie":
			v = "$cookie_" + name
		case "query":
			v = "$arg_" + name
		default: // source-ip
			v = "$remote_addr"
		}
		return "hash " + v + " consistent;"
	}
	return ""
}

// renderStream writes the stream block: an upstream and a server per tcp
// or udp application. An application without backends keeps its listener
// and closes each connection at once (a udp datagram gets no answer).
func (g nginx) renderStream(w *writer, p *ngPlan, listen netip.Addr) {
	if len(p.stream) == 0 {
		return
	}
	w.open("stream")
	live := make([]*ngApp, 0, len(p.stream))
	for _, port := range p.stream {
		if !port.app.retained {
			live = append(live, port.app)
		}
	}
	slices.SortFunc(live, func(a, b *ngApp) int { return strings.Compare(a.Name, b.Name) })
	for _, a := range live {
		g.upstream(w, a, false)
	}
	for _, port := range p.stream {
		a := port.app
		w.open("server")
		udp := ""
		if port.kind == kindUDP {
			udp = " udp"
		}
		w.line("listen %s%s; # %s", netip.AddrPortFrom(listen, uint16(port.port)), udp, a.Name)
		if a.retained {
			w.line(`return "";`)
		} else {
			w.line("proxy_pass %s;", upstreamName(a.Name))
			if port.kind == kindTCP {
				w.line("proxy_connect_timeout %s;", g.o.ConnectTimeout)
				w.line("proxy_timeout %s;", g.o.TCPTimeout)
			} else {
				w.line("proxy_timeout %s;", g.o.UDPTimeout)
			}
			w.line("proxy_next_upstream_tries %d;", g.o.NextUpstreamTries)
		}
		w.close()
	}
	w.close()
}

func upstreamName(app string) string { return "scrimp_" + app }

// writer builds indented configuration text.
type writer struct {
	b     []byte
	depth int
}

func (w *writer) line(format string, args ...any) {
	for range w.depth {
		w.b = append(w.b, "    "...)
	}
	w.b = fmt.Appendf(w.b, format, args...)
	w.b = append(w.b, '\n')
}

func (w *writer) open(block string) {
	w.line("%s {", block)
	w.depth++
}

func (w *writer) close() {
	w.depth--
	w.line("}")
}

func (w *writer) bytes() []byte { return w.b }
