package generator

import (
	"net/netip"

	"github.com/scrimplb/scrimp/catalog"
)

// The ACME cases join the golden cases of both generators: the challenge
// path on the plain-HTTP port, redirects to https, and what a backend
// cannot do there.
func init() {
	goldenCases = append(goldenCases, acmeNginxCases()...)
	hapGoldenCases = append(hapGoldenCases, acmeHAProxyCases()...)
}

// acmeHandler is the challenge handler of the golden cases.
var acmeHandler = netip.MustParseAddrPort("127.0.0.1:8099")

func redirecting(a catalog.Application) catalog.Application {
	a.RedirectHTTP = true
	return a
}

// acmeRoute is the route of the main case: challenge domains served by
// an exact http application (web), by a wildcard one (blog), by none
// (app.test, shop.example.com), and names the generators must refuse.
func acmeRoute() *ACMERoute {
	return &ACMERoute{Handler: acmeHandler, Port: 80, Domains: []string{
		"shop.example.com", "app.test", "www.example.com", "cat.example.org", "app.test",
		"*.wild.test", "bad;name", "a b",
	}}
}

// acmeApps are the applications of the main case, in the form each
// generator's cases build them.
func acmeApps() []catalog.Application {
	return []catalog.Application{
		httpsApp("app", 443, 8001, "app.test"),
		// pay.example.com is no challenge domain (its certificate is the
		// operator's): it still gets its redirect.
		redirecting(httpsApp("shop", 443, 8002, "shop.example.com", "pay.example.com", "*.shop.example.com")),
		// www.example.com is served over plain HTTP by web: no redirect.
		redirecting(httpsApp("secure", 8443, 8003, "www.example.com")),
		// A backend claiming paths inside the challenge path.
		withPaths(httpApp("web", 80, 8004, "www.example.com"), "/", "/.well-known/acme-challenge/", "/.well-known/acme-challenge/x"),
		httpApp("blog", 80, 8005, "*.example.org"),
	}
}

func acmeCerts() []TLSCert {
	return []TLSCert{
		tlsCert("app", "app.test"),
		tlsCert("shop", "shop.example.com", "pay.example.com", "*.shop.example.com"),
		tlsCert("www", "www.example.com"),
	}
}

var acmeWarnings = []string{
	"acme: domain *.wild.test: a wildcard cannot be validated over HTTP; no challenge route",
	`acme: domain "bad;name": "bad;name": label "bad;name": only a-z, 0-9 and '-' are allowed; no challenge route`,
	`acme: domain "a b": "a b": label "a b": only a-z, 0-9 and '-' are allowed; no challenge route`,
}

func acmeNginxCases() []goldenCase {
	return []goldenCase{
		{
			name: "acme_routes", standalone: true, listen: "0.0.0.0",
			nodes: []catalog.Node{backendNode("b1", "10.0.0.1", acmeApps()...)},
			tls:   acmeCerts(),
			acme:  acmeRoute(),
			warnings: append(append([]string(nil), acmeWarnings...),
				"application web: path /.well-known/acme-challenge/ on www.example.com is the ACME challenge path; that route left out",
				"application web: path /.well-known/acme-challenge/x on www.example.com is the ACME challenge path; that route left out",
				"acme: redirect-http for www.example.com: plain-HTTP port 80 already serves it; not redirected",
			),
		},
		{
			// A catch-all application keeps the other paths of a challenge
			// domain; the route is added in include mode too.
			name: "acme_catch_all_include", listen: "127.0.0.1",
			nodes: []catalog.Node{backendNode("b1", "10.0.0.1", httpApp("site", 8080, 8000))},
			acme:  &ACMERoute{Handler: acmeHandler, Port: 8080, Domains: []string{"app.test"}},
		},
		{
			// The plain-HTTP port is taken by TLS: no route, a warning;
			// without lb.acme a redirect cannot be made.
			name: "acme_port_conflict", standalone: true, listen: "0.0.0.0",
			nodes: []catalog.Node{backendNode("b1", "10.0.0.1", redirecting(httpsApp("app", 8443, 8001, "app.test")))},
			tls:   []TLSCert{tlsCert("app", "app.test")},
			acme:  &ACMERoute{Handler: acmeHandler, Port: 8443, Domains: []string{"app.test"}},
			warnings: []string{
				"acme: plain-HTTP port 8443 is used by application app for TLS (https); no challenge routes or redirects",
			},
		},
		{
			name: "acme_redirect_without_acme", standalone: true, listen: "0.0.0.0",
			nodes:    []catalog.Node{backendNode("b1", "10.0.0.1", redirecting(httpsApp("app", 8443, 8001, "app.test")))},
			tls:      []TLSCert{tlsCert("app", "app.test")},
			warnings: []string{redirectNeedsACME("app")},
		},
		{
			// A handler that is not on loopback is refused.
			name: "acme_handler_not_loopback", standalone: true, listen: "0.0.0.0",
			nodes: []catalog.Node{backendNode("b1", "10.0.0.1", httpApp("site", 80, 8000))},
			acme:  &ACMERoute{Handler: netip.MustParseAddrPort("10.0.0.9:80"), Port: 80, Domains: []string{"app.test"}},
			warnings: []string{
				`acme: challenge handler "10.0.0.9:80" is not a loopback address and port; no challenge routes`,
			},
		},
	}
}

func hapCerts(certs []TLSCert) []hapTLS {
	var out []hapTLS
	for _, c := range certs {
		out = append(out, hapTLS{domains: c.Domains, cert: c.Cert[len(goldenTLSDir)+1:], key: c.Key[len(goldenTLSDir)+1:]})
	}
	return out
}

func acmeHAProxyCases() []hapGoldenCase {
	return []hapGoldenCase{
		{
			name: "acme_routes", standalone: true, listen: "0.0.0.0",
			nodes: []catalog.Node{hapNode("b1", "10.0.0.1", acmeApps()...)},
			tls:   hapCerts(acmeCerts()),
			acme:  acmeRoute(),
			warnings: append(append([]string(nil), acmeWarnings...),
				"acme: redirect-http for www.example.com: plain-HTTP port 80 already serves it; not redirected",
			),
		},
		{
			name: "acme_catch_all_include", listen: "127.0.0.1",
			nodes: []catalog.Node{hapNode("b1", "10.0.0.1", httpApp("site", 8080, 8000))},
			acme:  &ACMERoute{Handler: acmeHandler, Port: 8080, Domains: []string{"app.test"}},
		},
		{
			name: "acme_port_conflict", standalone: true, listen: "0.0.0.0",
			nodes: []catalog.Node{hapNode("b1", "10.0.0.1", redirecting(httpsApp("app", 8443, 8001, "app.test")))},
			tls:   hapCerts([]TLSCert{tlsCert("app", "app.test")}),
			acme:  &ACMERoute{Handler: acmeHandler, Port: 8443, Domains: []string{"app.test"}},
			warnings: []string{
				"acme: plain-HTTP port 8443 already serves https (application app); no challenge routes or redirects",
			},
		},
		{
			name: "acme_redirect_without_acme", standalone: true, listen: "0.0.0.0",
			nodes:    []catalog.Node{hapNode("b1", "10.0.0.1", redirecting(httpsApp("app", 8443, 8001, "app.test")))},
			tls:      hapCerts([]TLSCert{tlsCert("app", "app.test")}),
			warnings: []string{redirectNeedsACME("app")},
		},
	}
}
