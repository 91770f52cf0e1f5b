package lb

import (
	"context"

	"github.com/scrimplb/scrimp/generator"
)

// CertSource supplies certificates that change while the loop runs (ACME):
// they are added to Input.TLS, and the challenge route to Input.ACME, on
// every render.
type CertSource interface {
	// Certs returns the current certificate files and the challenge
	// route (nil when none) without blocking; the results are the
	// caller's.
	Certs() ([]generator.TLSCert, *generator.ACMERoute)
	// Changes receives a value after a certificate file was replaced or
	// the set of certificates changed; one receive may stand for many.
	Changes() <-chan struct{}
}

// CertProxy is a Proxy that can load new contents of certificate files it
// already serves without a reload (HAProxy's runtime API: set ssl cert,
// commit ssl cert). Without it, a replaced certificate is made live by a
// forced Apply (an nginx reload).
type CertProxy interface {
	Proxy
	// UpdateCerts loads the current contents of certs' files into the
	// running proxy. It may block; the loop calls it from one goroutine,
	// never concurrently with Apply or Update.
	UpdateCerts(ctx context.Context, certs []generator.TLSCert) error
}
