package generator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"text/template"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/plugin"
)

func init() { Register("template", newTemplate) }

// TemplateOptions are the template generator's "lb.generator-options".
type TemplateOptions struct {
	// Path is the Go text/template file to render (required). It is read
	// and parsed once, when the generator is built; edit it and restart
	// scrimp (or run `scrimp validate`) to use a new version.
	Path string `json:"path"`
}

// TemplateData is what a template renders: the root value, ".", of every
// template file. It is a documented, stable model (see docs/templates.md):
// fields may be added, none will be renamed or removed.
//
// Every string in it came through catalog validation (application names,
// domains, paths, hash keys, node names) or from the load balancer's own
// configuration (ListenAddr, TLS), so no gossip peer can put configuration
// syntax into it.
type TemplateData struct {
	// ListenAddr is lb.listen-addr, the IP address the proxy accepts
	// application traffic on, e.g. "0.0.0.0" or "::".
	ListenAddr string
	// Services are the applications with at least one live backend, sorted
	// by name. Backends whose definition conflicts with the one in use are
	// left out (and reported as warnings).
	Services []TemplateService
	// Retained are applications that lost their last backend less than
	// lb.retain-empty ago, sorted by name. Their Servers are empty: a
	// template should keep their listeners and answer 503 with Retry-After
	// rather than refuse connections. A template that ignores them drops
	// the application at once.
	Retained []TemplateService
	// Ports groups Services and Retained by listen port, ascending: what a
	// proxy needs to write one listener with several virtual hosts.
	Ports []TemplatePort
	// Nodes are all live cluster members, load balancers included, sorted
	// by name.
	Nodes []catalog.Node
	// TLS are the certificates of lb.tls (files on the load balancer).
	TLS []TLSCert
}

// TemplateService is one application as a template sees it: every field of
// catalog.Application (Name, ListenPort, ApplicationPort, Protocol,
// Domains, Paths, Balance, HashKey, Weight, HealthPath, MaxFails,
// FailTimeout) plus where to listen and the backends serving it.
type TemplateService struct {
	catalog.Application
	// Listen is ListenAddr and ListenPort as "host:port", IPv6 bracketed:
	// "0.0.0.0:80", "[::]:443".
	Listen string
	// Servers are the live backends, sorted by node name; empty for a
	// retained application. Each carries its own Weight (1-100), MaxFails
	// and FailTimeout (zero and empty mean the proxy's defaults).
	Servers []catalog.Server
}

// TemplatePort is one listen port and the applications on it.
type TemplatePort struct {
	// Port is the listen port.
	Port int
	// Listen is ListenAddr and Port as "host:port", IPv6 bracketed.
	Listen string
	// Services are the applications with backends on this port, sorted by
	// name.
	Services []TemplateService
	// Retained are the applications without backends on this port, sorted
	// by name.
	Retained []TemplateService
}

// templateFuncs returns the helper functions every template can call, in
// addition to text/template's built-ins. None of them does I/O or depends
// on anything but its arguments, so rendering stays deterministic.
func templateFuncs() template.FuncMap {
	return template.FuncMap{
		// list ITEM...: a list of strings, e.g. a fallback:
		// {{ range .Paths | default (list "/") }}.
		"list": func(items ...string) []string { return items },
		// uniq LIST: LIST without repeats, in order. Validation allows an
		// application to list a domain or path twice; most proxies refuse
		// a duplicate location or site address.
		"uniq": func(list []string) []string {
			var out []string
			for _, s := range list {
				if !slices.Contains(out, s) {
					out = append(out, s)
				}
			}
			return out
		},
		// join SEP LIST: the strings of LIST separated by SEP.
		"join": func(sep string, list []string) string { return strings.Join(list, sep) },
		// hostport SERVER: "ip:port", IPv6 bracketed.
		"hostport": func(s catalog.Server) string { return s.HostPort() },
		// upstream NAME: the identifier scrimp's own generators use for an
		// application, "scrimp_" + NAME. Names are already [a-z0-9_-], so
		// the result is an identifier in nginx, HAProxy, Caddy and Envoy
		// alike; '-' is kept so that "a-b" and "a_b" stay distinct.
		"upstream": templateUpstream,
		"lower":    strings.ToLower,
		"upper":    strings.ToUpper,
		// replace OLD NEW S: S with every OLD replaced by NEW, so that it
		// pipes: {{ .Name | replace "-" "_" }}.
		"replace":    func(old, new, s string) string { return strings.ReplaceAll(s, old, new) },
		"hasPrefix":  func(prefix, s string) bool { return strings.HasPrefix(s, prefix) },
		"hasSuffix":  func(suffix, s string) bool { return strings.HasSuffix(s, suffix) },
		"trimPrefix": func(prefix, s string) string { return strings.TrimPrefix(s, prefix) },
		"trimSuffix": func(suffix, s string) string { return strings.TrimSuffix(s, suffix) },
		// hashKind KEY and hashName KEY split a hash key: "header:X-Id"
		// gives "header" and "X-Id"; "source-ip" gives "source-ip" and "".
		"hashKind": func(key string) string { kind, _ := catalog.HashKeyParts(key); return kind },
		"hashName": func(key string) string { _, name := catalog.HashKeyParts(key); return name },
		// certFor TLS DOMAIN: the certificate serving DOMAIN (exact match
		// first, then wildcard), or nil, so that {{ with certFor $.TLS . }}
		// renders only when there is one.
		"certFor": func(certs []TLSCert, domain string) *TLSCert {
			if c, ok := CertFor(certs, domain); ok {
				return &c
			}
			return nil
		},
		// default DEF VALUE: VALUE, or DEF when VALUE is empty the way
		// {{ if }} sees it (false, 0, "", an empty list, nil):
		// {{ .FailTimeout | default "2s" }}.
		"default": func(def, value any) any {
			if isEmpty(reflect.ValueOf(value)) {
				return def
			}
			return value
		},
	}
}

func templateUpstream(name string) string { return "scrimp_" + name }

// isEmpty reports whether v is false for text/template's {{ if }}, so that
// default agrees with it: a non-nil empty list is empty too.
func isEmpty(v reflect.Value) bool {
	if !v.IsValid() {
		return true
	}
	switch v.Kind() {
	case reflect.Array, reflect.Map, reflect.Slice, reflect.String:
		return v.Len() == 0
	case reflect.Pointer, reflect.Interface, reflect.Func, reflect.Chan:
		return v.IsNil()
	case reflect.Struct:
		return false
	default:
		return v.IsZero()
	}
}

// templateGenerator renders a user's template. The parsed template is
// never modified after newTemplate, and text/template allows concurrent
// executions, so Render is safe for concurrent use.
type templateGenerator struct {
	t *template.Template
}

// newTemplate reads and parses the template once: Render must do no I/O,
// and a syntax error should stop `scrimp validate` and startup, not show
// up later as a failed render.
func newTemplate(raw json.RawMessage) (Generator, error) {
	var o TemplateOptions
	if err := plugin.DecodeOptions(raw, &o); err != nil {
		return nil, err
	}
	if o.Path == "" {
		return nil, errors.New(`path: required: the template file, e.g. {"path": "/etc/scrimp/caddy.tmpl"}`)
	}
	text, err := os.ReadFile(o.Path)
	if err != nil {
		return nil, fmt.Errorf("path: %w", err)
	}
	// The template is named by its path, so parse and execution errors
	// read "template: /etc/scrimp/caddy.tmpl:12: ...". missingkey=error
	// makes a misspelt map key an error instead of "<no value>"; misspelt
	// fields are errors anyway.
	t, err := template.New(o.Path).Option("missingkey=error").Funcs(templateFuncs()).Parse(string(text))
	if err != nil {
		return nil, fmt.Errorf("path: %w", err)
	}
	return &templateGenerator{t: t}, nil
}

// Render executes the template over in. An execution error (a missing
// field, an index out of range, a nil certificate) returns no output: the
// load balancer keeps the running configuration and logs the error, which
// names the template file, line and column.
func (g *templateGenerator) Render(in Input) (Output, error) {
	data, warnings, err := templateData(in)
	if err != nil {
		return Output{}, fmt.Errorf("template generator: %w", err)
	}
	var b bytes.Buffer
	if err := g.t.Execute(&b, data); err != nil {
		return Output{}, fmt.Errorf("template generator: %w", err)
	}
	return Output{Config: b.Bytes(), Warnings: warnings}, nil
}

// templateData builds the data a template renders from in, and the
// warnings about backends left out because their definition conflicts
// with the one in use. It fails only on a listen address that is not an
// IP address.
func templateData(in Input) (TemplateData, []string, error) {
	listen, err := netip.ParseAddr(in.ListenAddr)
	if err != nil {
		return TemplateData{}, nil, fmt.Errorf("listen address %q: %w", in.ListenAddr, err)
	}
	hostPort := func(port int) string { return netip.AddrPortFrom(listen, uint16(port)).String() }
	services, conflicts := in.Snapshot.Services()
	var warnings []string
	for _, c := range conflicts {
		warnings = append(warnings, fmt.Sprintf("application %s: backend %s left out: %s", c.Application, c.Node, c.Reason))
	}
	d := TemplateData{ListenAddr: in.ListenAddr, Nodes: in.Snapshot.Nodes, TLS: in.TLS}
	byPort := map[int]*TemplatePort{}
	port := func(p int) *TemplatePort {
		tp, ok := byPort[p]
		if !ok {
			tp = &TemplatePort{Port: p, Listen: hostPort(p)}
			byPort[p] = tp
		}
		return tp
	}
	for _, s := range services {
		ts := TemplateService{Application: s.Application, Listen: hostPort(s.ListenPort), Servers: s.Servers}
		d.Services = append(d.Services, ts)
		tp := port(s.ListenPort)
		tp.Services = append(tp.Services, ts)
	}
	// The load balancer hands Retained over sorted, but sort anyway: the
	// output must not depend on the caller's order.
	retained := slices.SortedFunc(slices.Values(in.Retained), func(a, b catalog.Application) int {
		return strings.Compare(a.Name, b.Name)
	})
	for _, a := range retained {
		ts := TemplateService{Application: a, Listen: hostPort(a.ListenPort)}
		d.Retained = append(d.Retained, ts)
		tp := port(a.ListenPort)
		tp.Retained = append(tp.Retained, ts)
	}
	for _, p := range slices.Sorted(maps.Keys(byPort)) {
		d.Ports = append(d.Ports, *byPort[p])
	}
	return d, warnings, nil
}
