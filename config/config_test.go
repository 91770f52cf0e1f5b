package config_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/config"
)

// testFile is the name every parsed document claims to come from; each
// problem must carry it.
const testFile = "test.json"

// Fragments of documents; each test case writes out the part it is about.
const (
	seedOK = `"seed": {"provider": "static"}`
	lbHead = `"role": "lb", "node-name": "lb-1", ` + seedOK
	beHead = `"role": "backend", "node-name": "app-1", ` + seedOK
	appOK  = `{"name": "web", "listen-port": 80, "application-port": 8080, "protocol": "http"}`
)

// want is one expected problem: its exact JSON path and a part of its
// reason.
type want struct {
	path   string
	reason string
}

// checkProblems asserts that got is exactly want, in order, each problem
// naming testFile.
func checkProblems(t *testing.T, got config.Problems, want []want) {
	t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		g, w := got[i], want[i]
		ok = g.File == testFile && g.Path == w.path && strings.Contains(g.Reason, w.reason)
	}
	if ok {
		return
	}
	var b strings.Builder
	b.WriteString("problems differ\ngot:\n")
	for _, p := range got {
		b.WriteString("\t" + p.String() + "\n")
	}
	b.WriteString("want:\n")
	for _, w := range want {
		b.WriteString("\t" + testFile + ": " + w.path + ": …" + w.reason + "…\n")
	}
	t.Error(b.String())
}

func TestConfigParseProblems(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []want
	}{
		{
			name: "unknown field at top level",
			doc:  `{` + lbHead + `, "lb": {}, "colour": "blue"}`,
			want: []want{{"colour", "unknown field"}},
		},
		{
			name: "unknown nested field suggests the kebab-case name",
			doc:  `{` + lbHead + `, "lb": {}, "cluster": {"bindPort": 7000}}`,
			want: []want{{"cluster.bindPort", `unknown field (did you mean "bind-port"?)`}},
		},
		{
			name: "unknown field in an application",
			doc:  `{` + beHead + `, "backend": {"applications": [` + appOK + `, {"name": "api", "listen-port": 81, "application-port": 9000, "protocol": "http", "colour": "red"}]}}`,
			want: []want{{"backend.applications[1].colour", "unknown field"}},
		},
		{
			name: "unknown key differing only in case does not set the field",
			doc:  `{"Role": "lb", "node-name": "lb-1", ` + seedOK + `, "lb": {}}`,
			want: []want{
				{"Role", `unknown field (did you mean "role"?)`},
				{"role", "required"},
			},
		},
		{
			name: "bad duration",
			doc:  `{` + lbHead + `, "lb": {"quiet-period": "soon"}}`,
			want: []want{{"lb.quiet-period", `"soon" is not a duration`}},
		},
		{
			name: "empty duration",
			doc:  `{` + lbHead + `, "lb": {"max-wait": ""}}`,
			want: []want{{"lb.max-wait", `"" is not a duration`}},
		},
		{
			name: "duration as a number",
			doc:  `{` + lbHead + `, "lb": {}, "cluster": {"leave-timeout": 3}}`,
			want: []want{{"cluster.leave-timeout", `expected a duration string such as "5s", got number 3`}},
		},
		{
			name: "negative duration",
			doc:  `{` + lbHead + `, "lb": {"command-timeout": "-1s"}}`,
			want: []want{{"lb.command-timeout", "must not be negative"}},
		},
		{
			name: "zero duration where a positive one is needed",
			doc:  `{` + lbHead + `, "lb": {}, "cluster": {"rejoin-interval": "0s"}}`,
			want: []want{{"cluster.rejoin-interval", "must be positive"}},
		},
		{
			name: "zero quiet period is allowed",
			doc:  `{` + lbHead + `, "lb": {"quiet-period": "0s"}}`,
		},
		{
			name: "max-wait less than quiet-period",
			doc:  `{` + lbHead + `, "lb": {"quiet-period": "2s", "max-wait": "1s"}}`,
			want: []want{{"lb.max-wait", "must not be less than quiet-period"}},
		},
		{
			name: "join-backoff-max less than join-backoff-min",
			doc:  `{` + lbHead + `, "lb": {}, "cluster": {"join-backoff-min": "1m"}}`,
			want: []want{{"cluster.join-backoff-max", "must not be less than join-backoff-min"}},
		},
		{
			name: "bind-port 0",
			doc:  `{` + lbHead + `, "lb": {}, "cluster": {"bind-port": 0}}`,
			want: []want{{"cluster.bind-port", "0 is not a port in 1-65535"}},
		},
		{
			name: "bind-port 70000",
			doc:  `{` + lbHead + `, "lb": {}, "cluster": {"bind-port": 70000}}`,
			want: []want{{"cluster.bind-port", "70000 is not a port in 1-65535"}},
		},
		{
			name: "bind-port as a string",
			doc:  `{` + lbHead + `, "lb": {}, "cluster": {"bind-port": "80"}}`,
			want: []want{{"cluster.bind-port", `expected an integer, got string "80"`}},
		},
		{
			name: "port as a fraction",
			doc:  `{` + lbHead + `, "lb": {}, "cluster": {"advertise-port": 80.5}}`,
			want: []want{{"cluster.advertise-port", "expected an integer, got number 80.5"}},
		},
		{
			name: "wrong type inside a list keeps the index",
			doc:  `{` + beHead + `, "backend": {"applications": [` + appOK + `, {"name": "api", "listen-port": "81", "application-port": 9000, "protocol": "http"}]}}`,
			want: []want{{"backend.applications[1].listen-port", `expected an integer, got string "81"`}},
		},
		{
			name: "wrong type of a section is reported once",
			doc:  `{` + lbHead + `, "lb": "nginx"}`,
			want: []want{{"lb", `expected an object, got string "nginx"`}},
		},
		{
			name: "command as a string instead of a list",
			doc:  `{` + lbHead + `, "lb": {"mode": "external", "reload-command": "nginx -s reload"}}`,
			want: []want{{"lb.reload-command", `expected a list, got string "nginx -s reload"`}},
		},
		{
			name: "missing role",
			doc:  `{"node-name": "lb-1", ` + seedOK + `, "lb": {}}`,
			want: []want{{"role", `required: "lb" or "backend"`}},
		},
		{
			name: "role proxy",
			doc:  `{"role": "proxy", "node-name": "lb-1", ` + seedOK + `, "lb": {}}`,
			want: []want{{"role", `unknown role "proxy"`}},
		},
		{
			name: "lb section on a backend",
			doc:  `{` + beHead + `, "lb": {}, "backend": {"applications": [` + appOK + `]}}`,
			want: []want{{"lb", `only allowed when role is "lb", and role is "backend"`}},
		},
		{
			name: "backend section on an lb",
			doc:  `{` + lbHead + `, "lb": {}, "backend": {"applications": [` + appOK + `]}}`,
			want: []want{{"backend", `only allowed when role is "backend", and role is "lb"`}},
		},
		{
			name: "missing lb section",
			doc:  `{` + lbHead + `}`,
			want: []want{{"lb", `required when role is "lb"`}},
		},
		{
			name: "null lb section",
			doc:  `{` + lbHead + `, "lb": null}`,
			want: []want{{"lb", `required when role is "lb"`}},
		},
		{
			name: "missing backend section",
			doc:  `{` + beHead + `}`,
			want: []want{{"backend", `required when role is "backend"`}},
		},
		{
			name: "missing seed provider",
			doc:  `{"role": "lb", "node-name": "lb-1", "lb": {}}`,
			want: []want{{"seed.provider", "required"}},
		},
		{
			name: "seed provider of the wrong type",
			doc:  `{"role": "lb", "node-name": "lb-1", "lb": {}, "seed": {"provider": 1}}`,
			want: []want{{"seed.provider", "expected a string, got number 1"}},
		},
		{
			name: "seed options written outside the provider's section",
			doc:  `{"role": "lb", "node-name": "lb-1", "lb": {}, "seed": {"provider": "static", "addresses": ["10.0.0.5:7946"]}}`,
			want: []want{{"seed.addresses", `expected an object of options for seed provider "addresses", got a list (did you mean "seed.static.addresses"?)`}},
		},
		{
			name: "seed section with an invalid name",
			doc:  `{"role": "lb", "node-name": "lb-1", "lb": {}, "seed": {"provider": "static", "Static": {}}}`,
			want: []want{{"seed.Static", "unknown field"}},
		},
		{
			name: "invalid node name, log level, profile and advertise address",
			doc:  `{"role": "lb", "node-name": "lb 1", "log-level": "verbose", ` + seedOK + `, "lb": {}, "cluster": {"profile": "lan-fast", "advertise-addr": "0.0.0.0", "bind-addr": "localhost"}}`,
			want: []want{
				{"cluster.advertise-addr", "0.0.0.0 cannot be reached by other nodes"},
				{"cluster.bind-addr", `"localhost" is not an IP address`},
				{"cluster.profile", `"lan-fast" is not one of local, lan, wan`},
				{"log-level", `"verbose" is not one of debug, info, warn, error`},
				{"node-name", `"lb 1": only letters, digits`},
			},
		},
		{
			name: "generator options twice",
			doc:  `{` + lbHead + `, "lb": {"generator": "haproxy", "haproxy": {"retries": 1}, "generator-options": {"retries": 2}}}`,
			want: []want{{"lb.haproxy", `the options of generator "haproxy" are given here and in lb.generator-options; keep one`}},
		},
		{
			name: "options of a generator not chosen",
			doc:  `{` + lbHead + `, "lb": {"generator": "nginx", "haproxy": {"retries": 1}}}`,
			want: []want{{"lb.haproxy", "unknown field"}},
		},
		{
			name: "metrics address without a port",
			doc:  `{` + lbHead + `, "metrics-addr": "localhost", "lb": {}}`,
			want: []want{{"metrics-addr", `"localhost" is not an IP:port`}},
		},
		{
			name: "admin address without a token file",
			doc:  `{` + lbHead + `, "admin-addr": "127.0.0.1:9947", "lb": {}}`,
			want: []want{{"admin-token-file", "required with admin-addr"}},
		},
		{
			name: "admin address without a port",
			doc:  `{` + lbHead + `, "admin-addr": "localhost", "admin-token-file": "/etc/scrimp/admin.token", "lb": {}}`,
			want: []want{{"admin-addr", `"localhost" is not an IP:port`}},
		},
		{
			name: "metrics token without a metrics address",
			doc:  `{` + lbHead + `, "metrics-token-file": "/etc/scrimp/metrics.token", "lb": {}}`,
			want: []want{{"metrics-token-file", "set, but metrics-addr is empty"}},
		},
		{
			name: "relative admin socket",
			doc:  `{` + lbHead + `, "admin-socket": "run/admin.sock", "lb": {}}`,
			want: []want{{"admin-socket", `"run/admin.sock" is not an absolute path`}},
		},
		{
			name: "admin socket too long for sun_path",
			doc:  `{` + lbHead + `, "admin-socket": "/` + strings.Repeat("d", 100) + `", "lb": {}}`,
			want: []want{{"admin-socket", "101 bytes long; a unix socket path may have at most 100"}},
		},
		{
			name: "invalid lb mode and listen address",
			doc:  `{` + lbHead + `, "lb": {"mode": "sidecar", "listen-addr": "*", "generator": ""}}`,
			want: []want{
				{"lb.generator", "required"},
				{"lb.listen-addr", `"*" is not an IP address`},
				{"lb.mode", `"sidecar" is not one of managed, external`},
			},
		},
		{
			name: "invalid listen ports",
			doc:  `{` + lbHead + `, "lb": {"listen-ports": [80, "1024-65535", 0, "9000-8000", "http", 70000, "1-2-3", 8.5, true, null]}}`,
			want: []want{
				{"lb.listen-ports[2]", `"0": ports are in 1-65535`},
				{"lb.listen-ports[3]", `"9000-8000": the range ends before it starts`},
				{"lb.listen-ports[4]", `"http" is not a port or a range`},
				{"lb.listen-ports[5]", `"70000": ports are in 1-65535`},
				{"lb.listen-ports[6]", `"1-2-3" is not a port or a range`},
				{"lb.listen-ports[7]", `"8.5" is not a port or a range`},
				{"lb.listen-ports[8]", `expected a port or a range "lo-hi", got true`},
				{"lb.listen-ports[9]", `"" is not a port or a range`},
			},
		},
		{
			name: "invalid limits",
			doc: `{` + lbHead + `, "lb": {"limits": {"apps-per-member": 0, "domains-per-app": -1, "paths-per-app": 1000001,
				"domains-per-member": 0, "listen-ports-per-member": 0, "upstream-servers": 0, "listeners": 0,
				"reloads-per-minute": -1}}}`,
			want: []want{
				{"lb.limits.apps-per-member", "0 is not in 1-1000000"},
				{"lb.limits.domains-per-app", "-1 is not in 1-1000000"},
				{"lb.limits.domains-per-member", "0 is not in"},
				{"lb.limits.listen-ports-per-member", "0 is not in"},
				{"lb.limits.listeners", "0 is not in"},
				{"lb.limits.paths-per-app", "1000001 is not in"},
				{"lb.limits.reloads-per-minute", "-1 is not in 0-6000"},
				{"lb.limits.upstream-servers", "0 is not in"},
			},
		},
		{
			name: "unknown limit",
			doc:  `{` + lbHead + `, "lb": {"limits": {"apps": 5}}}`,
			want: []want{{"lb.limits.apps", "unknown field"}},
		},
		{
			name: "no listen port allowed",
			doc:  `{` + lbHead + `, "lb": {"listen-ports": []}}`,
			want: []want{{"lb.listen-ports", "must allow at least one port"}},
		},
		{
			name: "invalid application rules",
			doc: `{` + lbHead + `, "lb": {"applications": [
				{"name": "web", "domains": ["example.com", "*.example.com"], "backends": ["web-*"]},
				{},
				{"name": "[web", "domains": ["bad domain"], "backends": ["", "web-["]},
				{"name": "web", "colour": "red"}
			]}}`,
			want: []want{
				{"lb.applications[1]", "a rule needs a name, domains or backends"},
				{"lb.applications[2].backends[0]", `"" is not a valid pattern`},
				{"lb.applications[2].backends[1]", `"web-[" is not a valid pattern`},
				{"lb.applications[2].domains[0]", `"bad domain"`},
				{"lb.applications[2].name", `"[web" is not a valid pattern`},
				{"lb.applications[3].colour", "unknown field"},
			},
		},
		{
			// Empty target and commands take the proxy kind's defaults
			// (proxy.Resolve); an empty program is wrong for every kind.
			name: "external mode with empty programs",
			doc:  `{` + lbHead + `, "lb": {"mode": "external", "generator-target": "", "check-command": [""], "reload-command": ["", "reload"]}}`,
			want: []want{
				{"lb.check-command[0]", "the program to run must not be empty"},
				{"lb.reload-command[0]", "the program to run must not be empty"},
			},
		},
		{
			name: "allowed CIDRs, one not a CIDR",
			doc:  `{` + lbHead + `, "cluster": {"allowed-cidrs": ["10.0.0.0/8", "10.0.0.0", "fd00::/8", "300.1.2.3/8"]}, "lb": {}}`,
			want: []want{
				{"cluster.allowed-cidrs[1]", `"10.0.0.0" is not a CIDR such as "10.0.0.0/8"`},
				{"cluster.allowed-cidrs[3]", `"300.1.2.3/8" is not a CIDR`},
			},
		},
		{
			name: "allowed CIDRs without this node's address",
			doc:  `{` + lbHead + `, "cluster": {"advertise-addr": "203.0.113.10", "allowed-cidrs": ["10.0.0.0/8"]}, "lb": {}}`,
			want: []want{{"cluster.allowed-cidrs", "none of them holds this node's own address 203.0.113.10"}},
		},
		{
			name: "gossip verify incoming without outgoing",
			doc:  `{` + lbHead + `, "cluster": {"gossip-verify-outgoing": false}, "lb": {}}`,
			want: []want{{"cluster.gossip-verify-incoming", "must be false while gossip-verify-outgoing is false"}},
		},
		{
			name: "managed mode without state dir",
			doc:  `{` + lbHead + `, "lb": {"state-dir": "", "generator": "haproxy"}}`,
			want: []want{
				{"lb.state-dir", "required in managed mode"},
			},
		},
		{
			name: "invalid application fields",
			doc: `{` + beHead + `, "backend": {"applications": [
				{"name": "Web", "listen-port": 0, "application-port": 8080, "protocol": "ftp", "domains": ["example.com", "bad domain;"]},
				{"name": "web app", "listen-port": 81, "application-port": 70000, "protocol": "http"},
				{"name": "web;drop", "listen-port": 82, "application-port": 8082, "protocol": "tcp"}
			]}}`,
			want: []want{
				{"backend.applications[0].domains[1]", `"bad domain;": label "bad domain;": only a-z, 0-9 and '-' are allowed`},
				{"backend.applications[0].listen-port", "0 is not a port in 1-65535"},
				{"backend.applications[0].name", `"Web": only a-z, 0-9, '-' and '_' are allowed`},
				{"backend.applications[0].protocol", `"ftp" is not one of`},
				{"backend.applications[1].application-port", "70000 is not a port in 1-65535"},
				{"backend.applications[1].name", `"web app": only a-z`},
				{"backend.applications[2].name", `"web;drop": only a-z`},
			},
		},
		{
			name: "duplicate application names",
			doc:  `{` + beHead + `, "backend": {"applications": [` + appOK + `, {"name": "web", "listen-port": 81, "application-port": 8081, "protocol": "http"}]}}`,
			want: []want{{"backend.applications[1].name", `"web" is also the name of applications[0]`}},
		},
		{
			name: "duplicate key",
			doc:  `{` + lbHead + `, "lb": {"mode": "external", "mode": "managed"}}`,
			want: []want{{"lb.mode", "duplicate key"}},
		},
		{
			name: "invalid JSON syntax reports line and column",
			doc:  "{\n  \"role\": \"lb\",\n  \"node-name\" \"lb-1\"\n}\n",
			want: []want{{"", `line 3, column 15: invalid JSON: invalid character '"' after object key`}},
		},
		{
			name: "newline inside a string",
			doc:  "{\n  \"role\": \"lb\n}\n",
			want: []want{{"", `line 2, column 14: invalid JSON: invalid character '\n' in string literal`}},
		},
		{
			name: "file ends too soon",
			doc:  `{"role": "lb"`,
			want: []want{{"", "line 1, column 14: invalid JSON: unexpected end of JSON input"}},
		},
		{
			name: "trailing garbage",
			doc:  "{}\n}",
			want: []want{{"", "line 2, column 1: invalid JSON: invalid character '}' after top-level value"}},
		},
		{
			name: "empty file",
			doc:  " \n",
			want: []want{{"", "empty file: expected a JSON object"}},
		},
		{
			name: "not an object",
			doc:  `["lb"]`,
			want: []want{{"", "expected an object, got a list"}},
		},
		{
			name: "unknown field in a health check",
			doc:  `{` + beHead + `, "backend": {"applications": [{"name": "web", "listen-port": 80, "application-port": 8080, "protocol": "http", "health-check": {"intervall": "1s"}}]}}`,
			want: []want{{"backend.applications[0].health-check.intervall", "unknown field"}},
		},
		{
			name: "health check values of the wrong type",
			doc: `{` + beHead + `, "backend": {"applications": [{"name": "web", "listen-port": 80, "application-port": 8080, "protocol": "http",
				"health-check": {"interval": 2, "rise": "2", "expect-status": "200"}}]}}`,
			want: []want{
				{"backend.applications[0].health-check.expect-status", `expected a status code or a list of them, got string "200"`},
				{"backend.applications[0].health-check.interval", `expected a duration string such as "5s", got number 2`},
				{"backend.applications[0].health-check.rise", `expected an integer, got string "2"`},
			},
		},
		{
			name: "health check with invalid values",
			doc: `{` + beHead + `, "backend": {"applications": [{"name": "web", "listen-port": 80, "application-port": 8080, "protocol": "http",
				"health-check": {"path": "healthz", "expect-status": [200, 700, "x"], "interval": "5ms", "timeout": "1s", "rise": 0, "fall": 101}}]}}`,
			want: []want{
				{"backend.applications[0].health-check.expect-status[1]", "700 is not an HTTP status code (100-599)"},
				{"backend.applications[0].health-check.expect-status[2]", `expected an integer, got string "x"`},
				{"backend.applications[0].health-check.fall", "101 is not in 1-100"},
				{"backend.applications[0].health-check.interval", "5ms is shorter than the minimum 10ms"},
				{"backend.applications[0].health-check.path", `"healthz" must start with '/'`},
				{"backend.applications[0].health-check.rise", "0 is not in 1-100"},
				{"backend.applications[0].health-check.timeout", "must not be longer than interval"},
			},
		},
		{
			name: "health check type against the protocol",
			doc: `{` + beHead + `, "backend": {"applications": [
				{"name": "a", "listen-port": 80, "application-port": 8080, "protocol": "grpc", "health-check": {"type": "http"}},
				{"name": "b", "listen-port": 81, "application-port": 8081, "protocol": "udp", "health-check": {}},
				{"name": "c", "listen-port": 82, "application-port": 8082, "protocol": "tcp", "health-check": {"path": "/", "expect-status": 200}},
				{"name": "d", "listen-port": 83, "application-port": 8083, "protocol": "http", "health-check": {"type": "icmp", "expect-status": []}}
			]}}`,
			want: []want{
				{"backend.applications[0].health-check.type", `"http" checks need protocol http or https; use "tcp" for grpc`},
				{"backend.applications[1].health-check", "not supported for udp applications"},
				{"backend.applications[2].health-check.expect-status", `only for "http" checks`},
				{"backend.applications[2].health-check.path", `only for "http" checks`},
				{"backend.applications[3].health-check.type", `"icmp" is not one of http, tcp`},
			},
		},
		{
			name: "explicitly empty expect-status",
			doc:  `{` + beHead + `, "backend": {"applications": [{"name": "web", "listen-port": 80, "application-port": 8080, "protocol": "http", "health-check": {"expect-status": []}}]}}`,
			want: []want{{"backend.applications[0].health-check.expect-status", "must list at least one status code"}},
		},
		{
			name: "health check address",
			doc:  `{` + beHead + `, "backend": {"health-check-addr": "::", "applications": [` + appOK + `]}}`,
			want: []want{{"backend.health-check-addr", ":: cannot be connected to"}},
		},
		{
			name: "health check address that is not an IP",
			doc:  `{` + beHead + `, "backend": {"health-check-addr": "localhost", "application-config-dir": 5}}`,
			want: []want{
				{"backend.application-config-dir", "expected a string, got number 5"},
				{"backend.health-check-addr", `"localhost" is not an IP address`},
			},
		},
		{
			name: "state cannot be set in a configuration file",
			doc:  `{` + beHead + `, "backend": {"applications": [{"name": "web", "listen-port": 80, "application-port": 8080, "protocol": "http", "state": "down"}]}}`,
			want: []want{{"backend.applications[0].state", "unknown field"}},
		},
		{
			name: "every problem at once",
			doc: `{
				"role": "lb",
				"node-name": "lb-1",
				"colour": "blue",
				"cluster": {"bindPort": 7000, "bind-port": 0, "join-backoff-min": 5},
				"seed": {"provider": "static"},
				"lb": {"quiet-period": "soon", "listen-addr": 5},
				"backend": {"applications": [
					{"name": "Web", "listen-port": "80", "application-port": 0, "protocol": "ftp", "colour": "red"}
				]}
			}`,
			want: []want{
				{"backend", `only allowed when role is "backend"`},
				{"backend.applications[0].application-port", "0 is not a port"},
				{"backend.applications[0].colour", "unknown field"},
				{"backend.applications[0].listen-port", `expected an integer, got string "80"`},
				{"backend.applications[0].name", `"Web": only a-z`},
				{"backend.applications[0].protocol", `"ftp" is not one of`},
				{"cluster.bind-port", "0 is not a port"},
				{"cluster.bindPort", `unknown field (did you mean "bind-port"?)`},
				{"cluster.join-backoff-min", "expected a duration string"},
				{"colour", "unknown field"},
				{"lb.listen-addr", "expected a string, got number 5"},
				{"lb.quiet-period", `"soon" is not a duration`},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, got := config.Parse(testFile, []byte(tt.doc))
			checkProblems(t, got, tt.want)
		})
	}
}

func TestConfigParseValid(t *testing.T) {
	tests := []struct {
		name  string
		doc   string
		check func(t *testing.T, c *config.Config)
	}{
		{
			name: "minimal lb",
			doc:  `{"role": "lb", "node-name": "lb-1", "seed": {"provider": "static"}, "lb": {}}`,
			check: func(t *testing.T, c *config.Config) {
				if c.Role != "lb" || c.NodeName != "lb-1" || c.Seed.Provider != "static" {
					t.Errorf("role, node-name, seed.provider = %q, %q, %q", c.Role, c.NodeName, c.Seed.Provider)
				}
				if c.LB == nil || !reflect.DeepEqual(*c.LB, config.DefaultLB()) {
					t.Errorf("lb = %+v, want the defaults %+v", c.LB, config.DefaultLB())
				}
				if c.Backend != nil {
					t.Errorf("backend = %+v, want nil", c.Backend)
				}
			},
		},
		{
			name: "a partial limits object keeps the other defaults",
			doc:  `{` + lbHead + `, "lb": {"limits": {"apps-per-member": 8, "listeners": 32, "reloads-per-minute": 0}}}`,
			check: func(t *testing.T, c *config.Config) {
				want := config.DefaultLBLimits()
				want.AppsPerMember, want.Listeners, want.ReloadsPerMinute = 8, 32, 0
				if c.LB.Limits != want {
					t.Errorf("limits = %+v, want %+v", c.LB.Limits, want)
				}
				if d := config.DefaultLBLimits(); d.AppsPerMember != 64 || d.ListenPortsPerMember != 16 || d.UpstreamServers != 4096 || d.Listeners != 256 || d.ReloadsPerMinute != 60 {
					t.Errorf("default limits = %+v", d)
				}
			},
		},
		{
			name: "listen ports and application rules",
			doc: `{` + lbHead + `, "lb": {"listen-ports": [443, "8000-8999", "9000"],
				"applications": [{"name": "web-*", "domains": ["*.example.com"], "backends": ["web-?"]}, {"backends": ["db-1"]}]}}`,
			check: func(t *testing.T, c *config.Config) {
				if want := []config.PortRange{"443", "8000-8999", "9000"}; !reflect.DeepEqual(c.LB.ListenPorts, want) {
					t.Errorf("listen-ports = %q, want %q", c.LB.ListenPorts, want)
				}
				if lo, hi, err := c.LB.ListenPorts[1].Bounds(); lo != 8000 || hi != 8999 || err != nil {
					t.Errorf("bounds of %q = %d, %d, %v", c.LB.ListenPorts[1], lo, hi, err)
				}
				want := []config.AppRule{{Name: "web-*", Domains: []string{"*.example.com"}, Backends: []string{"web-?"}}, {Backends: []string{"db-1"}}}
				if !reflect.DeepEqual(c.LB.Applications, want) {
					t.Errorf("applications = %+v, want %+v", c.LB.Applications, want)
				}
				// The default allows the usual HTTP ports and every
				// unprivileged one.
				if want := []config.PortRange{"80", "443", "1024-65535"}; !reflect.DeepEqual(config.DefaultLB().ListenPorts, want) {
					t.Errorf("default listen-ports = %q, want %q", config.DefaultLB().ListenPorts, want)
				}
			},
		},
		{
			name: "minimal backend",
			doc: `{"role": "backend", "node-name": "app-1", "seed": {"provider": "static", "static": {"addresses": ["10.0.0.5:7946"]}},
				"backend": {"applications": [{"name": "web", "listen-port": 80, "application-port": 8080, "protocol": "http", "domains": ["example.com", "*.example.org"]}]}}`,
			check: func(t *testing.T, c *config.Config) {
				wantApps := []config.Application{{Application: catalog.Application{Name: "web", ListenPort: 80, ApplicationPort: 8080, Protocol: catalog.ProtocolHTTP, Domains: []string{"example.com", "*.example.org"}}}}
				if c.Backend == nil || !reflect.DeepEqual(c.Backend.Applications, wantApps) {
					t.Errorf("backend = %+v, want applications %+v", c.Backend, wantApps)
				}
				if c.LB != nil {
					t.Errorf("lb = %+v, want nil", c.LB)
				}
				// Seed sections are kept verbatim for the provider.
				if got := string(c.Seed.Section()); got != `{"addresses": ["10.0.0.5:7946"]}` {
					t.Errorf("seed section = %s", got)
				}
			},
		},
		{
			name: "defaults fill a partial lb section",
			doc:  `{"role": "lb", "node-name": "lb-1", "seed": {"provider": "static"}, "lb": {"mode": "external", "quiet-period": "500ms", "reload-command": ["systemctl", "reload", "nginx"]}}`,
			check: func(t *testing.T, c *config.Config) {
				wantLB := config.DefaultLB()
				wantLB.Mode = "external"
				wantLB.QuietPeriod = config.D(500 * time.Millisecond)
				wantLB.ReloadCommand = []string{"systemctl", "reload", "nginx"}
				if c.LB == nil || !reflect.DeepEqual(*c.LB, wantLB) {
					t.Errorf("lb = %+v\nwant %+v", c.LB, wantLB)
				}
				if !reflect.DeepEqual(c.Cluster, config.DefaultCluster()) {
					t.Errorf("cluster = %+v\nwant the defaults %+v", c.Cluster, config.DefaultCluster())
				}
				if c.LogLevel != "info" {
					t.Errorf("log-level = %q, want the default info", c.LogLevel)
				}
			},
		},
		{
			name: "defaults fill a partial cluster section",
			doc:  `{"role": "lb", "node-name": "lb-1", "seed": {"provider": "static"}, "lb": {}, "cluster": {"bind-port": 8000, "leave-timeout": "1s"}}`,
			check: func(t *testing.T, c *config.Config) {
				wantCluster := config.DefaultCluster()
				wantCluster.BindPort = 8000
				wantCluster.LeaveTimeout = config.D(time.Second)
				if !reflect.DeepEqual(c.Cluster, wantCluster) {
					t.Errorf("cluster = %+v\nwant %+v", c.Cluster, wantCluster)
				}
			},
		},
		{
			name: "generator options under the generator's name",
			doc:  `{` + lbHead + `, "lb": {"generator": "haproxy", "haproxy": {"runtime-api": true}}}`,
			check: func(t *testing.T, c *config.Config) {
				if got := string(compact(t, c.LB.GeneratorOptions)); got != `{"runtime-api":true}` {
					t.Errorf("generator-options = %s, want the lb.haproxy section", got)
				}
			},
		},
		{
			name: "the default generator's options under its name",
			doc:  `{` + lbHead + `, "lb": {"nginx": {"keepalive": 4}}}`,
			check: func(t *testing.T, c *config.Config) {
				if got := string(compact(t, c.LB.GeneratorOptions)); got != `{"keepalive":4}` {
					t.Errorf("generator-options = %s, want the lb.nginx section", got)
				}
			},
		},
		{
			name: "null leaves the default",
			doc:  `{"role": "lb", "node-name": "lb-1", "log-level": null, "seed": {"provider": "static"}, "lb": {"max-wait": null}}`,
			check: func(t *testing.T, c *config.Config) {
				if c.LogLevel != "info" || c.LB.MaxWait != config.DefaultLB().MaxWait {
					t.Errorf("log-level %q, lb.max-wait %v: want the defaults", c.LogLevel, c.LB.MaxWait)
				}
			},
		},
		{
			name: "backend with an application directory and health checks",
			doc: `{"role": "backend", "node-name": "app-1", "seed": {"provider": "static"}, "backend": {
				"application-config-dir": "/etc/scrimp/apps.d", "health-check-addr": "10.0.0.21",
				"applications": [
					{"name": "web", "listen-port": 80, "application-port": 8080, "protocol": "http", "health-check": {}},
					{"name": "api", "listen-port": 81, "application-port": 8081, "protocol": "http",
					 "health-check": {"type": "http", "path": "/healthz", "expect-status": 204, "interval": "500ms", "timeout": "200ms", "rise": 1, "fall": 5}},
					{"name": "db", "listen-port": 5432, "application-port": 5432, "protocol": "tcp", "health-check": null}
				]}}`,
			check: func(t *testing.T, c *config.Config) {
				if c.Backend.ApplicationConfigDir != "/etc/scrimp/apps.d" || c.Backend.HealthCheckAddr != "10.0.0.21" {
					t.Errorf("application-config-dir %q, health-check-addr %q", c.Backend.ApplicationConfigDir, c.Backend.HealthCheckAddr)
				}
				apps := c.Backend.Applications
				if len(apps) != 3 {
					t.Fatalf("%d applications, want 3", len(apps))
				}
				if def := config.DefaultHealthCheck(); apps[0].HealthCheck == nil || !reflect.DeepEqual(*apps[0].HealthCheck, def) {
					t.Errorf("empty health-check = %+v, want the defaults %+v", apps[0].HealthCheck, def)
				}
				want := config.HealthCheck{Type: "http", Path: "/healthz", ExpectStatus: config.StatusCodes{204},
					Interval: config.D(500 * time.Millisecond), Timeout: config.D(200 * time.Millisecond), Rise: 1, Fall: 5}
				if apps[1].HealthCheck == nil || !reflect.DeepEqual(*apps[1].HealthCheck, want) {
					t.Errorf("health-check = %+v, want %+v", apps[1].HealthCheck, want)
				}
				if apps[2].HealthCheck != nil {
					t.Errorf("null health-check = %+v, want nil", apps[2].HealthCheck)
				}
				if got := config.CatalogApplications(apps); len(got) != 3 || got[1].Name != "api" || got[1].ApplicationPort != 8081 {
					t.Errorf("CatalogApplications = %+v", got)
				}
			},
		},
		{
			name: "generator options are kept for the generator",
			doc:  `{"role": "lb", "node-name": "lb-1", "seed": {"provider": "static"}, "lb": {"generator-options": {"keepalive": 4, "anything": [1.5]}}}`,
			check: func(t *testing.T, c *config.Config) {
				var got map[string]any
				if err := json.Unmarshal(c.LB.GeneratorOptions, &got); err != nil {
					t.Fatal(err)
				}
				want := map[string]any{"keepalive": 4.0, "anything": []any{1.5}}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("generator-options = %s", c.LB.GeneratorOptions)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, problems := config.Parse(testFile, []byte(tt.doc))
			checkProblems(t, problems, nil)
			if c.File != testFile {
				t.Errorf("File = %q, want %q", c.File, testFile)
			}
			tt.check(t, c)
		})
	}
}

// TestConfigExamples checks that the shipped examples are valid, and that
// config.example.json, which spells out every lb, cluster and xds field, still
// shows the defaults.
func TestConfigExamples(t *testing.T) {
	files, err := filepath.Glob("../examples/*.json")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../config.example.json")
	if len(files) < 3 {
		t.Fatalf("found only %v", files)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			c, err := config.Load(file)
			if err != nil {
				t.Fatal(err)
			}
			if filepath.Base(file) != "config.example.json" {
				return
			}
			gotLB := *c.LB
			gotLB.GeneratorOptions = nil
			if !reflect.DeepEqual(gotLB, config.DefaultLB()) {
				t.Errorf("lb section differs from DefaultLB:\n got %+v\nwant %+v", gotLB, config.DefaultLB())
			}
			wantCluster := config.DefaultCluster()
			wantCluster.AdvertiseAddr = "203.0.113.10"
			// Not defaults: every shipped configuration encrypts and
			// labels its gossip.
			wantCluster.KeyringFile, wantCluster.Label = "/etc/scrimp/keyring.json", "prod"
			if !reflect.DeepEqual(c.Cluster, wantCluster) {
				t.Errorf("cluster section differs from DefaultCluster:\n got %+v\nwant %+v", c.Cluster, wantCluster)
			}
			if c.XDS == nil || !reflect.DeepEqual(*c.XDS, config.DefaultXDS()) {
				t.Errorf("xds section differs from DefaultXDS:\n got %+v\nwant %+v", c.XDS, config.DefaultXDS())
			}
		})
	}
}

func TestConfigLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(t *testing.T, name, content string) string {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	t.Run("valid", func(t *testing.T) {
		path := write(t, "ok.json", `{"role": "lb", "node-name": "lb-1", "seed": {"provider": "static"}, "lb": {}}`)
		c, err := config.Load(path)
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		if c.File != path {
			t.Errorf("File = %q, want %q", c.File, path)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		path := write(t, "bad.json", `{"role": "lb", "node-name": "lb-1", "seed": {"provider": "static"}, "lb": {}, "cluster": {"bind-port": 0, "profile": "moon"}}`)
		_, err := config.Load(path)
		var ps config.Problems
		if !errors.As(err, &ps) {
			t.Fatalf("Load error %v (%T), want Problems", err, err)
		}
		wantMsg := path + ": cluster.bind-port: 0 is not a port in 1-65535\n" +
			path + `: cluster.profile: "moon" is not one of local, lan, wan`
		if err.Error() != wantMsg {
			t.Errorf("error:\n%s\nwant:\n%s", err, wantMsg)
		}
	})
	t.Run("missing", func(t *testing.T) {
		path := filepath.Join(dir, "missing.json")
		_, err := config.Load(path)
		if err == nil || !strings.Contains(err.Error(), path) || !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Load error %v, want one naming %s and wrapping ErrNotExist", err, path)
		}
	})
}

// TestConfigValidateInCode checks Validate on a Config built in Go, as the
// demo does: no file name, yet problems still read well.
func TestConfigValidateInCode(t *testing.T) {
	c := config.DefaultConfig()
	c.Role = "backend"
	c.NodeName = "app-1"
	c.Seed = config.Seed{Provider: "static"}
	c.Backend = &config.Backend{Applications: []config.Application{{Application: catalog.Application{Name: "web", ListenPort: 80, ApplicationPort: 0, Protocol: "http"}}}}
	got := c.Validate()
	want := "backend.applications[0].application-port: 0 is not a port in 1-65535"
	if got.Error() != want {
		t.Errorf("Validate() = %q, want %q", got.Error(), want)
	}
}

func TestConfigProblemString(t *testing.T) {
	tests := []struct {
		name string
		p    config.Problem
		want string
	}{
		{"file, path and reason", config.Problem{File: "a.json", Path: "lb.mode", Reason: "bad"}, "a.json: lb.mode: bad"},
		{"whole file", config.Problem{File: "a.json", Reason: "empty"}, "a.json: empty"},
		{"no file", config.Problem{Path: "role", Reason: "required"}, "role: required"},
		{"reason only", config.Problem{Reason: "broken"}, "broken"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
	ps := config.Problems{tests[0].p, tests[1].p}
	if got, want := ps.Error(), "a.json: lb.mode: bad\na.json: empty"; got != want {
		t.Errorf("Problems.Error() = %q, want %q", got, want)
	}
}

func TestConfigDurationJSON(t *testing.T) {
	type doc struct {
		D config.Duration `json:"d"`
	}
	tests := []struct {
		name    string
		in      string
		want    time.Duration
		invalid bool
	}{
		{"duration string", `{"d": "1m30s"}`, 90 * time.Second, false},
		{"null keeps the value", `{"d": null}`, time.Hour, false},
		{"absent keeps the value", `{}`, time.Hour, false},
		{"bad string", `{"d": "soon"}`, time.Hour, true},
		{"empty string", `{"d": ""}`, time.Hour, true},
		{"number", `{"d": 5}`, time.Hour, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := doc{D: config.D(time.Hour)}
			if err := json.Unmarshal([]byte(tt.in), &v); err != nil {
				t.Fatalf("Unmarshal: %v (a bad duration is for Validate to report)", err)
			}
			if v.D.Duration != tt.want {
				t.Errorf("Duration = %v, want %v", v.D.Duration, tt.want)
			}
			// Validate is what reports a bad duration; use it through a
			// config whose only problem can be this duration.
			c := config.DefaultConfig()
			c.Role, c.NodeName, c.Seed.Provider = "lb", "lb-1", "static"
			lb := config.DefaultLB()
			lb.CommandTimeout = v.D
			c.LB = &lb
			ps := c.Validate()
			if tt.invalid != (len(ps) > 0) {
				t.Errorf("Validate() = %v, want a problem: %v", ps, tt.invalid)
			}
		})
	}
	b, err := json.Marshal(doc{D: config.D(1500 * time.Millisecond)})
	if err != nil || string(b) != `{"d":"1.5s"}` {
		t.Errorf("Marshal = %s, %v; want {\"d\":\"1.5s\"}", b, err)
	}
}

// TestConfigRoundTrip checks that a parsed configuration marshals back to
// JSON that parses to the same configuration.
func TestConfigRoundTrip(t *testing.T) {
	c, err := config.Load("../config.example.json")
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	again, problems := config.Parse(c.File, b)
	if len(problems) > 0 {
		t.Fatalf("re-parsing the marshalled config: %v\n%s", problems, b)
	}
	// Raw sections come back compacted; compare them as values.
	for _, cfg := range []*config.Config{c, again} {
		cfg.LB.GeneratorOptions = compact(t, cfg.LB.GeneratorOptions)
		for k, v := range cfg.Seed.Sections {
			cfg.Seed.Sections[k] = compact(t, v)
		}
	}
	if !reflect.DeepEqual(c, again) {
		t.Errorf("round trip changed the config:\n got %+v\nwant %+v", again, c)
	}
}

func compact(t *testing.T, raw json.RawMessage) json.RawMessage {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConfigParseApplication(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []want
	}{
		{
			name: "valid application with a health check",
			doc:  `{"name": "web", "listen-port": 80, "application-port": 8080, "protocol": "http", "domains": ["example.com"], "weight": 5, "health-check": {"path": "/healthz"}}`,
		},
		{
			// The fields of the embedded catalog.Application are known
			// to the shape walk, and suggested like any other.
			name: "unknown field beside the embedded fields",
			doc:  `{"name": "web", "listenPort": 80, "listen-port": 80, "application-port": 8080, "protocol": "http", "colour": "red"}`,
			want: []want{
				{"colour", "unknown field"},
				{"listenPort", `unknown field (did you mean "listen-port"?)`},
			},
		},
		{
			name: "embedded field of the wrong type",
			doc:  `{"name": "web", "listen-port": "80", "application-port": 8080, "protocol": "http"}`,
			want: []want{{"listen-port", `expected an integer, got string "80"`}},
		},
		{
			name: "invalid values with their paths",
			doc:  `{"name": "Web", "listen-port": 80, "application-port": 0, "protocol": "http", "health-check": {"rise": 0}}`,
			want: []want{
				{"application-port", "0 is not a port in 1-65535"},
				{"health-check.rise", "0 is not in 1-100"},
				{"name", `"Web": only a-z`},
			},
		},
		{
			name: "state is not a field",
			doc:  `{"name": "web", "listen-port": 80, "application-port": 8080, "protocol": "http", "state": "up"}`,
			want: []want{{"state", "unknown field"}},
		},
		{
			name: "duplicate key",
			doc:  `{"name": "web", "name": "api", "listen-port": 80, "application-port": 8080, "protocol": "http"}`,
			want: []want{{"name", "duplicate key"}},
		},
		{
			name: "syntax error",
			doc:  "{\n  \"name\": \"web\",\n}",
			want: []want{{"", "line 3, column 1: invalid JSON"}},
		},
		{
			name: "empty file",
			doc:  "",
			want: []want{{"", "empty file"}},
		},
		{
			name: "not an object",
			doc:  `[{"name": "web"}]`,
			want: []want{{"", "expected an object, got a list"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app, got := config.ParseApplication(testFile, []byte(tt.doc))
			checkProblems(t, got, tt.want)
			if len(tt.want) == 0 && (app.Name != "web" || app.HealthCheck == nil || app.HealthCheck.Path != "/healthz" || app.Weight != 5) {
				t.Errorf("ParseApplication = %+v", app)
			}
		})
	}
}

func TestConfigHealthCheckResolve(t *testing.T) {
	app := func(p catalog.Protocol, healthPath string) catalog.Application {
		return catalog.Application{Name: "web", Protocol: p, HealthPath: healthPath}
	}
	def := config.DefaultHealthCheck()
	withType := func(typ string) config.HealthCheck { h := def; h.Type = typ; return h }
	tests := []struct {
		name     string
		hc       config.HealthCheck
		app      catalog.Application
		wantType string
		wantPath string
		want     config.StatusCodes
	}{
		{"http application: http check of /", def, app(catalog.ProtocolHTTP, ""), "http", "/", config.StatusCodes{200}},
		{"https application: http check of health-path", def, app(catalog.ProtocolHTTPS, "/ready"), "http", "/ready", config.StatusCodes{200}},
		{"grpc application: tcp check", def, app(catalog.ProtocolGRPC, ""), "tcp", "", nil},
		{"tcp application: tcp check", def, app(catalog.ProtocolTCP, ""), "tcp", "", nil},
		{"explicit tcp check of an http application", withType("tcp"), app(catalog.ProtocolHTTP, "/ready"), "tcp", "", nil},
		{"explicit path and status kept", config.HealthCheck{Type: "http", Path: "/x", ExpectStatus: config.StatusCodes{204}}, app(catalog.ProtocolHTTP, "/ready"), "http", "/x", config.StatusCodes{204}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.hc.Resolve(tt.app)
			if got.Type != tt.wantType || got.Path != tt.wantPath || !reflect.DeepEqual(got.ExpectStatus, tt.want) {
				t.Errorf("Resolve = type %q path %q expect %v; want %q %q %v", got.Type, got.Path, got.ExpectStatus, tt.wantType, tt.wantPath, tt.want)
			}
			if got.Interval != tt.hc.Interval || got.Rise != tt.hc.Rise {
				t.Errorf("Resolve changed the timings: %+v", got)
			}
		})
	}
}

// TestConfigBackendRoundTrip checks that a backend section with health
// checks marshals back to JSON that parses to the same configuration.
func TestConfigBackendRoundTrip(t *testing.T) {
	doc := `{"role": "backend", "node-name": "app-1", "seed": {"provider": "static"}, "backend": {
		"application-config-dir": "/etc/scrimp/apps.d",
		"applications": [{"name": "web", "listen-port": 80, "application-port": 8080, "protocol": "http",
			"health-check": {"expect-status": [200, 204], "interval": "1s", "timeout": "500ms"}}]}}`
	c, problems := config.Parse(testFile, []byte(doc))
	checkProblems(t, problems, nil)
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	again, problems := config.Parse(testFile, b)
	checkProblems(t, problems, nil)
	if !reflect.DeepEqual(c.Backend, again.Backend) {
		t.Errorf("round trip changed the backend section:\n got %+v\nwant %+v\n%s", again.Backend, c.Backend, b)
	}
}

func TestConfigBackendValidate(t *testing.T) {
	tests := []struct {
		name string
		b    config.Backend
		want string
	}{
		{"valid", config.Backend{Applications: []config.Application{{Application: catalog.Application{Name: "web", ListenPort: 80, ApplicationPort: 8080, Protocol: "http"}}}}, ""},
		{"invalid application", config.Backend{Applications: []config.Application{{Application: catalog.Application{Name: "web", ListenPort: 80, Protocol: "http"}}}},
			"main.json: backend.applications[0].application-port: 0 is not a port in 1-65535"},
		{"invalid health check in code", config.Backend{Applications: []config.Application{{
			Application: catalog.Application{Name: "web", ListenPort: 80, ApplicationPort: 8080, Protocol: "http"},
			HealthCheck: &config.HealthCheck{Type: "http"}}}},
			"main.json: backend.applications[0].health-check.interval: must be positive\n" +
				"main.json: backend.applications[0].health-check.timeout: must be positive\n" +
				"main.json: backend.applications[0].health-check.rise: 0 is not in 1-100\n" +
				"main.json: backend.applications[0].health-check.fall: 0 is not in 1-100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.b.Validate("main.json")
			if got := got.Error(); got != tt.want {
				t.Errorf("Validate =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

// Gossip verification is on by default; the two transition stages
// (both off, then only incoming off) are valid.
func TestGossipVerifySettings(t *testing.T) {
	cases := []struct {
		name         string
		cluster      string
		wantIncoming bool
		wantOutgoing bool
	}{
		{"default", `{}`, true, true},
		{"key installed, plaintext both ways", `{"gossip-verify-incoming": false, "gossip-verify-outgoing": false}`, false, false},
		{"sending encrypted", `{"gossip-verify-incoming": false}`, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := `{"role": "lb", "node-name": "lb-1", "seed": {"provider": "static"}, "cluster": ` + tc.cluster + `, "lb": {}}`
			c, ps := config.Parse("test.json", []byte(doc))
			if len(ps) > 0 {
				t.Fatalf("problems: %v", ps)
			}
			if c.Cluster.GossipVerifyIncoming != tc.wantIncoming || c.Cluster.GossipVerifyOutgoing != tc.wantOutgoing {
				t.Errorf("incoming %v, outgoing %v; want %v, %v", c.Cluster.GossipVerifyIncoming, c.Cluster.GossipVerifyOutgoing,
					tc.wantIncoming, tc.wantOutgoing)
			}
		})
	}
}
