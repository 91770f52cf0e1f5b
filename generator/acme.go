package generator

import "net/netip"

// ACMERoute routes the ACME HTTP-01 challenge path of certificate-managed
// domains, on the plain-HTTP port, to the load balancer's local challenge
// handler, so the CA's validation request reaches scrimp through the proxy.
type ACMERoute struct {
	// Handler is the loopback address of scrimp's challenge handler.
	Handler netip.AddrPort
	// Port is the plain-HTTP listen port the CA connects to (80 in
	// production).
	Port uint16
	// Domains are the names whose /.well-known/acme-challenge/ path goes to
	// Handler: the allow-listed domains of https applications.
	Domains []string
}

// ACMEChallengePrefix is the HTTP-01 challenge path (RFC 8555, 8.3).
const ACMEChallengePrefix = "/.well-known/acme-challenge/"
