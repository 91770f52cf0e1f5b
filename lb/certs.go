package lb

import (
	"bytes"
	"context"
	"time"

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

// CertReloader is a Proxy that can reload the configuration it runs,
// unchanged, so that it reads the certificate files it names again. A
// Proxy's Apply may do nothing for the text it already runs; without
// CertReloader the loop calls Apply with that text all the same.
type CertReloader interface {
	Proxy
	// ReloadCerts checks and reloads the running configuration. It may
	// block; the loop calls it from one goroutine, never concurrently
	// with Apply.
	ReloadCerts(ctx context.Context) error
}

// certsIn returns the certificates of certs whose certificate file config
// names: those the running proxy has loaded and can be given new contents
// of. Others are used by no application (the text would differ if they
// were).
func certsIn(config []byte, certs []generator.TLSCert) []generator.TLSCert {
	var out []generator.TLSCert
	for _, c := range certs {
		if c.Cert != "" && bytes.Contains(config, []byte(c.Cert)) {
			out = append(out, c)
		}
	}
	return out
}

// liveCerts makes the new contents of the certificate files live while
// the configuration text stays the same: through a CertProxy without a
// reload, else (or when that fails) by reloading the running text, within
// the reload limit. It sets o's result and reports whether the proxy was
// asked to do anything. Called from the loop.
func (l *LB) liveCerts(ctx context.Context, certs []generator.TLSCert, o *Outcome) bool {
	start := time.Now()
	if cp, ok := l.cfg.Proxy.(CertProxy); ok {
		used := certsIn(l.applied, certs)
		err := cp.UpdateCerts(ctx, used)
		o.Proxy += time.Since(start)
		if err == nil {
			o.Result = ResultCertsUpdated
			l.certsPending = false
			l.mu.Lock()
			l.stats.CertUpdates++
			l.mu.Unlock()
			l.log.Info("certificates updated without a reload", "certificates", len(used), "took", time.Since(start).Round(time.Microsecond))
			return true
		}
		l.mu.Lock()
		l.stats.CertUpdateFailures++
		l.mu.Unlock()
		l.log.Warn("loading new certificates into the running proxy failed; reloading instead", "err", err)
	}
	if l.limited(o) {
		return false
	}
	began := time.Now()
	l.reloads = l.cfg.ReloadLimit.keep(l.reloads, began)
	var err error
	if r, ok := l.cfg.Proxy.(CertReloader); ok {
		err = r.ReloadCerts(ctx)
	} else {
		err = l.cfg.Proxy.Apply(ctx, l.applied)
	}
	o.Proxy += time.Since(began)
	if err != nil {
		o.Result, o.Error = ResultRejected, err.Error()
		l.backoff = min(max(2*l.backoff, minBackoff), maxBackoff)
		l.mu.Lock()
		l.stats.Rejected++
		l.stats.LastError = err
		l.mu.Unlock()
		l.log.Error("reloading for new certificates failed; the proxy serves the previous ones", "err", err, "retry-in", l.backoff)
		return true
	}
	o.Result = ResultCertsReloaded
	l.certsPending = false
	l.mu.Lock()
	l.stats.CertReloads++
	l.stats.LastError = nil
	l.mu.Unlock()
	l.log.Info("configuration reloaded for new certificates", "took", time.Since(start).Round(time.Microsecond))
	return true
}
