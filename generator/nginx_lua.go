package generator

import (
	"crypto/sha256"
	_ "embed" // the lua balancer's source
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/scrimplb/scrimp/catalog"
)

// The nginx generator's balancer modes (NginxOptions.Balancer).
const (
	// NginxBalancerAuto is NginxBalancerLua in managed mode when the
	// runner found the lua module (Input.NginxLua), else
	// NginxBalancerReload.
	NginxBalancerAuto = "auto"
	// NginxBalancerLua has http and grpc upstreams pick their servers
	// in lua (balancer_by_lua) from a shared dict that scrimp updates
	// through a unix socket: membership changes need no reload.
	NginxBalancerLua = "lua"
	// NginxBalancerReload writes server lines: every change reloads.
	NginxBalancerReload = "reload"
)

// NginxLuaSocket is the path, under the state directory, of the unix
// socket on which a lua-mode nginx takes membership updates. Whoever can
// connect to it routes the traffic: the managed runner keeps its
// directory (NginxLuaSocketDir) for scrimp's user only, whatever the
// state directory's mode and the umask nginx binds it with.
const NginxLuaSocket = NginxLuaSocketDir + "/balancer.sock"

// NginxLuaSocketDir is the directory of NginxLuaSocket, under the state
// directory.
const NginxLuaSocketDir = "lua"

// NginxLuaMembershipPath takes the membership of every upstream (POST, the
// body is Runtime.Payload) on NginxLuaSocket; NginxLuaStatePath answers a
// worker's view of it (GET).
const (
	NginxLuaMembershipPath = "/scrimp/membership"
	NginxLuaStatePath      = "/scrimp/state"
)

// DebianLuaModules are the modules a lua-mode configuration loads, as
// Debian's libnginx-mod-http-ndk and libnginx-mod-http-lua install them
// (the lua module needs the ndk one loaded first).
var DebianLuaModules = []string{
	"/usr/lib/nginx/modules/ndk_http_module.so",
	"/usr/lib/nginx/modules/ngx_http_lua_module.so",
}

// nginxLuaDict is the size of the shared dict holding the membership:
// enough for tens of thousands of servers. It is fixed, so that nginx
// keeps the dict across reloads.
const nginxLuaDict = "16m"

// maxUnixSocketPath is the longest path a unix socket can bind on Linux
// (sun_path is 108 bytes with its NUL).
const maxUnixSocketPath = 107

//go:embed lua/balancer.lua
var luaBalancer string

// checkLua validates the lua options.
func (o NginxOptions) checkLua() error {
	switch o.Balancer {
	case NginxBalancerAuto, NginxBalancerLua, NginxBalancerReload:
	default:
		return fmt.Errorf("balancer: %q is not one of auto, lua, reload", o.Balancer)
	}
	for i, m := range o.LuaModules {
		if err := checkConfPath(m); err != nil {
			return fmt.Errorf("lua-modules[%d]: %w", i, err)
		}
	}
	return nil
}

// luaMode reports whether in is rendered with the lua balancer, and
// a warning when the options ask for it but it cannot be used.
func (g nginx) luaMode(in Input) (bool, string) {
	switch {
	case g.o.Balancer == NginxBalancerReload:
		return false, ""
	case !in.Standalone:
		if g.o.Balancer == NginxBalancerLua {
			return false, "balancer: lua needs managed mode (lb.mode \"managed\"), which reaches nginx's lua balancer; server lines are rendered and every change reloads"
		}
		return false, ""
	case g.o.Balancer == NginxBalancerAuto && !in.NginxLua:
		return false, ""
	case len(filepath.Join(in.StateDir, NginxLuaSocket)) > maxUnixSocketPath:
		return false, fmt.Sprintf("balancer: the socket %s is longer than the %d characters a unix socket can bind; server lines are rendered and every change reloads",
			filepath.Join(in.StateDir, NginxLuaSocket), maxUnixSocketPath)
	}
	return true, ""
}

// luaModules writes the lua module's load_module lines.
func (g nginx) luaModules(w *writer) {
	for _, m := range g.o.LuaModules {
		w.line("load_module %s;", m)
	}
}

// luaUpstream writes a lua-mode upstream: a placeholder server nginx
// requires, never used, and the balancer that picks each try's peer from
// the membership. keepalive comes after the balancer, which it wraps.
func (g nginx) luaUpstream(w *writer, a *ngApp) {
	w.open("upstream " + upstreamName(a.Name))
	w.line("server 0.0.0.1; # placeholder: the lua balancer picks the servers")
	w.line("balancer_by_lua_block { require(\"scrimp\").balance(%q) }", upstreamName(a.Name))
	if g.o.Keepalive > 0 {
		w.line("keepalive %d;", g.o.Keepalive)
	}
	w.close()
}

// luaHTTP writes the http-level parts of lua mode: the shared dict, the
// per-worker and per-request hooks, the update endpoint on its unix
// socket and the init block that loads the balancer and the initial
// membership. It returns where in w the membership's lines belong: they
// are left out until luaFinish, so that the skeleton is the text without
// them.
func (g nginx) luaHTTP(w *writer, stateDir string) int {
	w.line("lua_shared_dict scrimp %s;", nginxLuaDict)
	w.line("init_worker_by_lua_block { require(\"scrimp\").init_worker() }")
	w.line("log_by_lua_block { require(\"scrimp\").log() }")
	w.open("server")
	w.line("listen unix:%s;", filepath.Join(stateDir, NginxLuaSocket))
	w.line("allow unix:;")
	w.line("deny all;")
	w.line("client_max_body_size 64m;")
	w.line("client_body_buffer_size 4m;")
	w.line("location = %s { content_by_lua_block { require(\"scrimp\").post() } }", NginxLuaMembershipPath)
	w.line("location = %s { content_by_lua_block { require(\"scrimp\").state() } }", NginxLuaStatePath)
	w.line("location / { return 404; }")
	w.close()
	w.open("init_by_lua_block")
	w.line("package.loaded.scrimp = (function()")
	for line := range strings.Lines(luaBalancer) {
		line = strings.TrimRight(line, "\n")
		if line == "" {
			w.b = append(w.b, '\n')
			continue
		}
		w.line("%s", line)
	}
	w.line("end)()")
	w.line("-- The membership when this configuration was written; scrimp posts")
	w.line("-- every change to %s since.", NginxLuaMembershipPath)
	w.line("require(\"scrimp\").init(table.concat({")
	at := len(w.b)
	w.line("}, \"\\n\"))")
	w.close()
	return at
}

// luaFinish puts the membership's lines into out.Config at at, as Lua
// long strings (one per JSON line, each well below the size of a token
// nginx's lua block parser accepts), and sets out.Runtime: the skeleton
// is the configuration without them, the payload is the membership.
func (g nginx) luaFinish(out *Output, at int, p *ngPlan) {
	lines := g.luaMembership(p)
	skeleton := sha256.Sum256(out.Config)
	var b []byte
	b = append(b, out.Config[:at]...)
	var payload []byte
	for i, l := range lines {
		b = append(b, "        [==["...)
		b = append(b, l.text...)
		b = append(b, "]==],"...)
		if l.node != "" {
			b = append(b, " -- # "...)
			b = append(b, l.node...)
		}
		b = append(b, '\n')
		if i > 0 {
			payload = append(payload, '\n')
		}
		payload = append(payload, l.text...)
	}
	b = append(b, out.Config[at:]...)
	out.Config = b
	out.Runtime = &Runtime{Skeleton: skeleton, Payload: payload}
}

// luaLine is one line of the membership document; node names the server
// it describes, if any.
type luaLine struct{ text, node string }

// luaMembership renders the membership of every lua upstream as JSON, one
// server per line:
//
//	{"tries":3,"upstreams":[
//	{"name":"scrimp_web","balance":"round-robin","hash-var":"","servers":[
//	{"node":"b1","addr":"10.0.0.1:8080","weight":1,"max-fails":1,"fail-timeout":2},
//	…]}]}
//
// Draining backends are not in it: they get no new requests. No string
// holds a ']' (it is escaped), so no line can end the Lua long string
// "[==[…]==]" it is written in.
func (g nginx) luaMembership(p *ngPlan) []luaLine {
	lines := []luaLine{{text: `{"tries":` + strconv.Itoa(g.o.NextUpstreamTries) + `,"upstreams":[`}}
	for i, a := range p.upstreams {
		balance := string(a.Balance.Or(catalog.BalanceRoundRobin))
		lines = append(lines, luaLine{text: `{"name":` + luaJSON(upstreamName(a.Name)) + `,"balance":` + luaJSON(balance) +
			`,"hash-var":` + luaJSON(hashVar(a.Application)) + `,"servers":[`})
		for j, srv := range a.servers {
			maxFails, failTimeout := g.o.MaxFails, g.o.FailTimeout
			if srv.MaxFails > 0 {
				maxFails = srv.MaxFails
			}
			if srv.FailTimeout != "" {
				failTimeout = srv.FailTimeout
			}
			t := `{"node":` + luaJSON(srv.Node) + `,"addr":` + luaJSON(srv.HostPort()) +
				`,"weight":` + strconv.Itoa(srv.Weight) + `,"max-fails":` + strconv.Itoa(maxFails) +
				`,"fail-timeout":` + strconv.Itoa(nginxSeconds(failTimeout)) + `}`
			if j < len(a.servers)-1 {
				t += ","
			}
			lines = append(lines, luaLine{text: t, node: srv.Node})
		}
		end := "]}"
		if i < len(p.upstreams)-1 {
			end += ","
		}
		lines = append(lines, luaLine{text: end})
	}
	lines = append(lines, luaLine{text: "]}"})
	return lines
}

// luaJSON is s as a JSON string whose ']' are escaped.
func luaJSON(s string) string {
	b, _ := json.Marshal(s) // a string always marshals
	return strings.ReplaceAll(string(b), "]", `\u005d`)
}

// nginxSeconds converts a checked nginx time ("2s", "1m") to seconds.
func nginxSeconds(t string) int {
	if n, ok := strings.CutSuffix(t, "m"); ok {
		v, _ := strconv.Atoi(n)
		return 60 * v
	}
	v, _ := strconv.Atoi(strings.TrimSuffix(t, "s"))
	return v
}

// hashVar is the nginx variable (without '$') that hash balancing hashes,
// as balanceDirective names it; "" for other methods.
func hashVar(a catalog.Application) string {
	if a.Balance != catalog.BalanceHash {
		return ""
	}
	kind, name := catalog.HashKeyParts(a.HashKey)
	switch kind {
	case "header":
		return "http_" + strings.ReplaceAll(strings.ToLower(name), "-", "_")
	case "cookie":
		return "cookie_" + name
	case "query":
		return "arg_" + name
	default: // source-ip
		return "remote_addr"
	}
}
