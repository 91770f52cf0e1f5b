package generator

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/scrimplb/scrimp/catalog"
)

// acmePlan is Input.ACME after the generator's own checks: what the
// generators add to the plain-HTTP port.
type acmePlan struct {
	// handler is the loopback challenge handler.
	handler netip.AddrPort
	// port is the plain-HTTP listen port.
	port int
	// domains are the challenge domains: valid exact names, sorted,
	// without duplicates.
	domains []string
}

// checkACME re-checks in.ACME (the load balancer builds it, but a
// generator stays safe on its own): a loopback handler, a valid port and
// exact, valid domain names. Wildcard names are left out: the HTTP-01
// challenge cannot validate them (RFC 8555, 8). It returns nil when
// there is no usable route, with warnings saying why.
func checkACME(in Input) (*acmePlan, []string) {
	r := in.ACME
	if r == nil {
		return nil, nil
	}
	var warnings []string
	h := r.Handler
	if !h.IsValid() || h.Port() == 0 || h.Addr().Zone() != "" || !h.Addr().Unmap().IsLoopback() {
		return nil, []string{fmt.Sprintf("acme: challenge handler %q is not a loopback address and port; no challenge routes", h.String())}
	}
	if err := catalog.CheckPort(int(r.Port)); err != nil {
		return nil, []string{fmt.Sprintf("acme: plain-HTTP port: %v; no challenge routes", err)}
	}
	p := &acmePlan{handler: netip.AddrPortFrom(h.Addr().Unmap(), h.Port()), port: int(r.Port)}
	for _, d := range r.Domains {
		if err := catalog.CheckDomain(d); err != nil {
			warnings = append(warnings, fmt.Sprintf("acme: domain %s: %v; no challenge route", strconv.Quote(d), err))
			continue
		}
		if strings.HasPrefix(d, "*.") {
			warnings = append(warnings, fmt.Sprintf("acme: domain %s: a wildcard cannot be validated over HTTP; no challenge route", d))
			continue
		}
		p.domains = append(p.domains, d)
	}
	slices.Sort(p.domains)
	p.domains = slices.Compact(p.domains)
	return p, warnings
}

// isChallengePath reports whether a route's path prefix lies inside the
// challenge path, so that, on a challenge domain, it would take requests
// that belong to the challenge handler.
func isChallengePath(path string) bool {
	return strings.HasPrefix(path, ACMEChallengePrefix)
}

// httpsURLPrefix is where a plain-HTTP request for domain is redirected:
// the https application's listen port, left out when it is 443.
func httpsURLPrefix(domain string, port int) string {
	if port == 443 {
		return "https://" + domain
	}
	return "https://" + domain + ":" + strconv.Itoa(port)
}

// redirectTarget is an exact domain an https application asked to be
// redirected to from plain HTTP.
type redirectTarget struct {
	domain string
	prefix string // httpsURLPrefix
}

// wildcardCovers reports whether the wildcard pattern ("*.example.com")
// matches domain as nginx's server_name and the HAProxy generator's host
// rules do: any name ending in ".example.com".
func wildcardCovers(pattern, domain string) bool {
	suffix, ok := strings.CutPrefix(pattern, "*")
	if !ok {
		return false
	}
	rest, ok := strings.CutSuffix(domain, suffix)
	return ok && rest != ""
}

// redirectNeedsACME is the warning for https applications that ask for a
// redirect when there is no plain-HTTP port to redirect from.
func redirectNeedsACME(app string) string {
	return fmt.Sprintf("application %s: redirect-http needs lb.acme (its plain-HTTP port); not redirected", app)
}

// placeACME adds the challenge routes and redirects to the plain-HTTP
// port, after every application is placed. A challenge domain the port
// already serves (by its exact name, a wildcard or the default server)
// keeps its routes, minus any inside the challenge path; one it does not
// serve gets a server with only the challenge route, and for other paths
// a redirect (if an https application asked for it) or a 404.
func (pl *planner) placeACME() {
	ac, warnings := checkACME(pl.in)
	pl.p.warnings = append(pl.p.warnings, warnings...)
	redirects := pl.redirects(ac)
	if ac == nil {
		return
	}
	key := portKey{ac.port, false}
	port := pl.ports[key]
	if port != nil && port.kind != kindHTTP {
		pl.warn("acme: plain-HTTP port %d is used by application %s for %s; no challenge routes or redirects", ac.port, port.owner, port.kind)
		return
	}
	if port == nil {
		if len(ac.domains) == 0 && len(redirects) == 0 {
			return
		}
		port = &ngPort{port: ac.port, kind: kindHTTP, owner: "acme", hosts: map[string]*ngHost{}}
		pl.ports[key] = port
	}
	for _, d := range ac.domains {
		vh := port.hosts[d]
		if vh == nil {
			vh = &ngHost{locs: map[string]*ngApp{}}
			if from := servingHost(port, d); from != nil {
				for path, a := range from.locs {
					vh.locs[path] = a
				}
			} else {
				vh.redirect = redirects[d]
			}
			port.hosts[d] = vh
		}
		for _, path := range sortedPaths(vh) {
			if a := vh.locs[path]; isChallengePath(path) {
				pl.warn("application %s: path %s on %s is the ACME challenge path; that route left out", a.Name, path, d)
				delete(vh.locs, path)
			}
		}
		vh.acme = ac.handler
	}
	domains := make([]string, 0, len(redirects))
	for d := range redirects {
		domains = append(domains, d)
	}
	slices.Sort(domains)
	for _, d := range domains {
		prefix := redirects[d]
		if port.hosts[d] != nil || servingHost(port, d) != nil {
			if port.hosts[d] == nil || port.hosts[d].redirect == "" {
				pl.warn("acme: redirect-http for %s: plain-HTTP port %d already serves it; not redirected", d, ac.port)
			}
			continue
		}
		port.hosts[d] = &ngHost{locs: map[string]*ngApp{}, redirect: prefix}
	}
}

// servingHost returns the server of port that nginx would pick for
// domain, which has no server of its own: the longest matching wildcard,
// else the default server; nil when none.
func servingHost(port *ngPort, domain string) *ngHost {
	best := ""
	for h := range port.hosts {
		if wildcardCovers(h, domain) && len(h) > len(best) {
			best = h
		}
	}
	if best != "" {
		return port.hosts[best]
	}
	return port.hosts[""]
}

// redirects returns the URL prefix for each exact domain of an https
// application with RedirectHTTP (the first, in port order, when several
// ports serve one). Without an ACME route there is no plain-HTTP port:
// it warns and returns nothing.
func (pl *planner) redirects(ac *acmePlan) map[string]string {
	keys := make([]portKey, 0, len(pl.ports))
	for k, port := range pl.ports {
		if port.kind == kindTLS {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b portKey) int { return a.port - b.port })
	out := map[string]string{}
	warned := map[string]bool{}
	for _, k := range keys {
		port := pl.ports[k]
		hosts := make([]string, 0, len(port.hosts))
		for h := range port.hosts {
			hosts = append(hosts, h)
		}
		slices.Sort(hosts)
		for _, h := range hosts {
			for _, path := range sortedPaths(port.hosts[h]) {
				a := port.hosts[h].locs[path]
				if !a.RedirectHTTP {
					continue
				}
				switch {
				case ac == nil:
					if !warned[a.Name] {
						warned[a.Name] = true
						pl.warn("%s", redirectNeedsACME(a.Name))
					}
				case h == "" || strings.HasPrefix(h, "*."):
					// Only exact names: the redirect's host is written
					// into the configuration, never taken from a request.
				case out[h] == "":
					out[h] = httpsURLPrefix(h, port.port)
				}
			}
		}
	}
	return out
}

// acmeLocation writes the nginx location of the challenge path. "^~" and
// placeACME, which leaves out longer routes inside the path, make it win
// over every other location of the server. The Host header goes along:
// the handler answers only for the domain of the challenge.
func acmeLocation(w *writer, handler netip.AddrPort) {
	w.open("location ^~ " + ACMEChallengePrefix)
	w.line("proxy_pass http://%s;", handler)
	w.line("proxy_set_header Host $host;")
	w.line("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;")
	w.close()
}

// hapACME is what the HAProxy frontend of the plain-HTTP port adds before
// its own routes.
type hapACME struct {
	handler   netip.AddrPort
	domains   []string         // challenge domains
	redirects []redirectTarget // by domain
}

// haproxyACMEBackend is the backend of the challenge handler; the '.'
// keeps it apart from every application's backend.
const (
	haproxyACMEBackend = "scrimp.acme"
	haproxyACMEACL     = "scrimp.acme_host"
)

// planACME gives the plain-HTTP port its challenge routes and redirects,
// after every application is placed. The challenge rule comes before
// every application's, so a backend can never take the challenge path of
// a challenge domain. A redirect is added only for a domain that no route
// of the port serves (exact, wildcard or any host).
func (g haproxy) planACME(p *hapPlan, in Input, byPort map[int]*hapPort) {
	ac, warnings := checkACME(in)
	p.warnings = append(p.warnings, warnings...)

	ports := make([]*hapPort, 0, len(byPort))
	for _, port := range byPort {
		if port.proto == catalog.ProtocolHTTPS {
			ports = append(ports, port)
		}
	}
	slices.SortFunc(ports, func(a, b *hapPort) int { return a.port - b.port })
	var redirects []redirectTarget
	warned := map[int]bool{}
	for _, port := range ports {
		for _, r := range port.routes {
			app := p.apps[r.app]
			switch {
			case !app.RedirectHTTP:
			case ac == nil:
				if !warned[r.app] {
					warned[r.app] = true
					p.warnings = append(p.warnings, redirectNeedsACME(app.Name))
				}
			case r.kind() == 0 && !slices.ContainsFunc(redirects, func(t redirectTarget) bool { return t.domain == r.host }):
				// Only exact names: the redirect's host is written into
				// the configuration, never taken from a request.
				redirects = append(redirects, redirectTarget{domain: r.host, prefix: httpsURLPrefix(r.host, port.port)})
			}
		}
	}
	if ac == nil {
		return
	}
	port := byPort[ac.port]
	if port != nil && (port.proto != catalog.ProtocolHTTP || port.tcpApp >= 0) {
		p.warnings = append(p.warnings, fmt.Sprintf("acme: plain-HTTP port %d already serves %s (application %s); no challenge routes or redirects", ac.port, port.proto, port.owner))
		return
	}
	acme := &hapACME{handler: ac.handler, domains: ac.domains}
	for _, t := range redirects {
		if port != nil && slices.ContainsFunc(port.routes, func(r hapRoute) bool {
			return r.host == "" || r.host == t.domain || wildcardCovers(r.host, t.domain)
		}) {
			p.warnings = append(p.warnings, fmt.Sprintf("acme: redirect-http for %s: plain-HTTP port %d already serves it; not redirected", t.domain, ac.port))
			continue
		}
		acme.redirects = append(acme.redirects, t)
	}
	slices.SortFunc(acme.redirects, func(a, b redirectTarget) int { return strings.Compare(a.domain, b.domain) })
	if len(acme.domains) == 0 && len(acme.redirects) == 0 {
		return
	}
	if port == nil {
		port = &hapPort{port: ac.port, proto: catalog.ProtocolHTTP, owner: "acme", tcpApp: -1}
		byPort[ac.port] = port
	}
	port.acme = acme
}

// acmeRules writes the plain-HTTP port's redirects and challenge rule,
// before the applications' rules.
func acmeRules(w *hapWriter, a *hapACME) {
	if a == nil {
		return
	}
	for _, t := range a.redirects {
		w.line("http-request redirect prefix %s code 308 if { var(%s) -m str %s } !{ path_beg %s }", t.prefix, haproxyHostVar, t.domain, ACMEChallengePrefix)
	}
	if len(a.domains) == 0 {
		return
	}
	for hosts := range slices.Chunk(a.domains, haproxyACLHosts) {
		w.line("acl %s var(%s) -m str %s", haproxyACMEACL, haproxyHostVar, strings.Join(hosts, " "))
	}
	w.line("use_backend %s if %s { path_beg %s }", haproxyACMEBackend, haproxyACMEACL, ACMEChallengePrefix)
}

// acmeBackend writes the challenge handler's backend if a port routes to
// it.
func acmeBackend(w *hapWriter, p hapPlan) {
	for _, port := range p.ports {
		if port.acme == nil || len(port.acme.domains) == 0 {
			continue
		}
		w.section("backend " + haproxyACMEBackend)
		w.line("mode http")
		w.line("server challenge %s", port.acme.handler)
		return
	}
}
