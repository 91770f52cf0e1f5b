// Package acme obtains and renews certificates for the load balancer's
// https applications from an ACME CA (Let's Encrypt, or any other) with
// certmagic, answers the CA's HTTP-01 challenges on a loopback handler
// that the proxy routes /.well-known/acme-challenge/ to, and writes each
// certificate and key as files the proxy reads.
//
// Only names that an application advertises AND the operator's allow-list
// matches are ever ordered: a backend cannot make the load balancer order
// certificates for arbitrary names.
package acme

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/scrimplb/scrimp/generator"
)

// Directories of Let's Encrypt.
const (
	LetsEncryptProduction = "https://acme-v02.api.letsencrypt.org/directory"
	LetsEncryptStaging    = "https://acme-staging-v02.api.letsencrypt.org/directory"
)

// Options configure a Manager.
type Options struct {
	// Email is the ACME account's contact; may be empty.
	Email string
	// Directory is the CA's ACME directory URL. Required.
	Directory string
	// CARoots, when not nil, are the roots trusted for the HTTPS
	// connection to Directory (a private CA); nil means the system's.
	CARoots *x509.CertPool
	// AllowList holds exact names and "*.suffix" patterns (any name
	// ending in ".suffix"). Required: only allowed names are ordered.
	AllowList []string
	// HTTPPort is the proxy's plain-HTTP port the CA validates on.
	HTTPPort uint16
	// ProbeAddr is the IP address the proxy's plain-HTTP listener is
	// reached on from this host, used to check that the challenge route is
	// live before ordering; empty means 127.0.0.1.
	ProbeAddr string
	// ProbeTimeout bounds that check; ordering starts anyway after it
	// (0 means one minute).
	ProbeTimeout time.Duration
	// ChallengeAddr is the loopback address the challenge handler listens
	// on; port 0 picks a free port. Empty means 127.0.0.1:0.
	ChallengeAddr string
	// Dir is where certificate (NAME.crt) and key files are written.
	Dir string
	// KeySuffix is appended to Dir/NAME to name the key file: ".key"
	// (the default) or ".crt.key" (HAProxy in external mode).
	KeySuffix string
	// Storage holds certificates, the account, challenge tokens and locks;
	// load balancers sharing it share certificates. Required.
	Storage certmagic.Storage
	// RenewCheckInterval is how often certificates are checked for
	// renewal; 0 means certmagic's default (10 minutes).
	RenewCheckInterval time.Duration
	// RenewalWindowRatio is the part of a certificate's lifetime left when
	// it is renewed; 0 means certmagic's default (1/3).
	RenewalWindowRatio float64
	// Logger receives the manager's and certmagic's logs.
	Logger *slog.Logger
}

// State of a managed name.
type State string

// States reported by Status.
const (
	// StatePlaceholder: no certificate yet; a self-signed one is served.
	StatePlaceholder State = "placeholder"
	// StateValid: a certificate from the CA is served.
	StateValid State = "valid"
	// StateRenewing: a renewal is under way; the current one is served.
	StateRenewing State = "renewing"
	// StateFailed: the last order or renewal failed; the current
	// certificate (or the placeholder) is served.
	StateFailed State = "failed"
)

// DomainStatus is one managed name's state.
type DomainStatus struct {
	Domain    string    `json:"domain"`
	State     State     `json:"state"`
	NotAfter  time.Time `json:"not-after"`
	Issuer    string    `json:"issuer,omitempty"`
	LastError string    `json:"last-error,omitempty"`
	Serial    string    `json:"serial,omitempty"`
}

// Manager keeps certificates for the allowed domains of the applications
// it is given. It is a lb.CertSource. Methods are safe for concurrent use;
// none blocks except Run (until its context ends) and Close.
type Manager struct {
	o        Options
	log      *slog.Logger
	ln       net.Listener
	handler  netip.AddrPort
	srv      *http.Server
	cache    *certmagic.Cache
	cfg      *certmagic.Config
	issuer   *certmagic.ACMEIssuer
	changes  chan struct{}
	export   chan struct{} // wakes the exporter
	failures atomic.Int64
	probes   sync.Map // outstanding probe tokens (probe)

	mu      sync.Mutex
	runCtx  context.Context // nil until Run
	domains map[string]*domain
	wanted  []string // the last SetDomains, allowed names only
	closed  bool

	closeOnce sync.Once
	wg        sync.WaitGroup
}

// domain is one managed name.
type domain struct {
	cancel   context.CancelFunc // stops its management; nil until started
	status   DomainStatus
	hash     string // certmagic hash of the certificate written, "" for the placeholder
	written  bool   // files exist
	obtained bool   // a CA certificate was written once
}

// New checks o, writes nothing yet, and binds the challenge handler's
// listener (so Certs returns the route at once). Run serves it.
func New(o Options) (*Manager, error) {
	if o.Directory == "" {
		return nil, errors.New("acme: directory: required")
	}
	if len(o.AllowList) == 0 {
		return nil, errors.New("acme: domains: the allow-list must not be empty")
	}
	if o.Storage == nil {
		return nil, errors.New("acme: storage: required")
	}
	if o.Dir == "" {
		return nil, errors.New("acme: certificate directory: required")
	}
	if o.KeySuffix == "" {
		o.KeySuffix = ".key"
	}
	if o.ChallengeAddr == "" {
		o.ChallengeAddr = "127.0.0.1:0"
	}
	if o.ProbeAddr == "" {
		o.ProbeAddr = "127.0.0.1"
	}
	if o.ProbeTimeout <= 0 {
		o.ProbeTimeout = time.Minute
	}
	if o.HTTPPort == 0 {
		o.HTTPPort = 80
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("acme: certificate directory: %w", err)
	}
	ln, err := net.Listen("tcp", o.ChallengeAddr)
	if err != nil {
		return nil, fmt.Errorf("acme: challenge handler: %w", err)
	}
	ap, err := netip.ParseAddrPort(ln.Addr().String())
	if err != nil || !ap.Addr().IsLoopback() {
		ln.Close()
		return nil, fmt.Errorf("acme: challenge-addr %s: must be a loopback address", o.ChallengeAddr)
	}
	m := &Manager{
		o: o, log: o.Logger, ln: ln, handler: ap,
		changes: make(chan struct{}, 1), export: make(chan struct{}, 1),
		domains: map[string]*domain{},
	}
	zl := zapLogger(o.Logger)
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return m.cfg, nil },
		RenewCheckInterval: o.RenewCheckInterval,
		Logger:             zl,
	})
	m.cfg = certmagic.New(m.cache, certmagic.Config{
		Storage:            o.Storage,
		RenewalWindowRatio: o.RenewalWindowRatio,
		OnEvent:            m.onEvent,
		OCSP:               certmagic.OCSPConfig{DisableStapling: true},
		Logger:             zl,
	})
	tmpl := certmagic.ACMEIssuer{
		CA:                      o.Directory,
		Email:                   o.Email,
		Agreed:                  true,
		TrustedRoots:            o.CARoots,
		DisableTLSALPNChallenge: true,
		// certmagic's own challenge server would bind this address; ours
		// already does, and certmagic then leaves the answering to it.
		ListenHost:  ap.Addr().String(),
		AltHTTPPort: int(ap.Port()),
		Logger:      zl,
	}
	if o.Directory != LetsEncryptProduction {
		// Never fall back to Let's Encrypt's staging CA on retries.
		tmpl.TestCA = o.Directory
	}
	m.issuer = certmagic.NewACMEIssuer(m.cfg, tmpl)
	m.cfg.Issuers = []certmagic.Issuer{m.issuer}
	m.srv = &http.Server{Handler: http.HandlerFunc(m.serveChallenge), ReadHeaderTimeout: 10 * time.Second}
	return m, nil
}

// probePrefix marks the manager's own probes of the challenge route.
const probePrefix = generator.ACMEChallengePrefix + "scrimp-probe-"

// serveChallenge answers HTTP-01 challenges, from this load balancer's
// orders or (through the shared storage) any other's, and the probes.
func (m *Manager) serveChallenge(w http.ResponseWriter, r *http.Request) {
	if token, ok := strings.CutPrefix(r.URL.Path, probePrefix); ok && r.Method == http.MethodGet {
		// Only the manager's own outstanding probes are answered: the
		// handler never reflects what a request brings.
		if _, mine := m.probes.Load(token); mine {
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, token)
			return
		}
		http.NotFound(w, r)
		return
	}
	if m.issuer.HandleHTTPChallenge(w, r) {
		return
	}
	http.NotFound(w, r)
}

// Handler is the challenge handler's address (for tests and status).
func (m *Manager) Handler() netip.AddrPort { return m.handler }

// Allowed reports whether name matches the allow-list.
func (m *Manager) Allowed(name string) bool { return Allowed(m.o.AllowList, name) }

// Allowed reports whether name matches one of the exact names or
// "*.suffix" patterns (any name ending in ".suffix") of list. Wildcard
// names themselves are never allowed (HTTP-01 cannot prove them).
func Allowed(list []string, name string) bool {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if name == "" || strings.ContainsAny(name, "*/\\ ") {
		return false
	}
	for _, p := range list {
		p = strings.ToLower(p)
		if suffix, ok := strings.CutPrefix(p, "*."); ok {
			if strings.HasSuffix(name, "."+suffix) {
				return true
			}
		} else if p == name {
			return true
		}
	}
	return false
}

// SetDomains sets the names the applications advertise; only allowed ones
// are managed (the others are logged at debug level and ignored). Names no
// longer given stop being managed and leave Certs. It never blocks on the
// network.
func (m *Manager) SetDomains(names []string) {
	var allowed []string
	for _, n := range names {
		n = strings.ToLower(strings.TrimSuffix(n, "."))
		if !m.Allowed(n) {
			m.log.Debug("acme: domain not in lb.acme.domains; no certificate is ordered", "domain", n)
			continue
		}
		allowed = append(allowed, n)
	}
	slices.Sort(allowed)
	allowed = slices.Compact(allowed)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || slices.Equal(allowed, m.wanted) {
		return
	}
	m.wanted = allowed
	m.reconcileLocked()
}

// reconcileLocked starts and stops management to match m.wanted; before
// Run it only writes placeholders.
func (m *Manager) reconcileLocked() {
	changed := false
	for name, d := range m.domains {
		if !slices.Contains(m.wanted, name) {
			if d.cancel != nil {
				d.cancel()
			}
			m.cache.RemoveManaged([]certmagic.SubjectIssuer{{Subject: name}})
			delete(m.domains, name)
			changed = true
		}
	}
	for _, name := range m.wanted {
		d := m.domains[name]
		if d == nil {
			d = &domain{status: DomainStatus{Domain: name, State: StatePlaceholder}}
			m.domains[name] = d
			if err := m.ensureFile(name, d); err != nil {
				m.log.Error("acme: writing the certificate files", "domain", name, "err", err)
				d.status.LastError = err.Error()
			}
			changed = true
		}
		if d.cancel == nil && m.runCtx != nil {
			ctx, cancel := context.WithCancel(m.runCtx)
			d.cancel = cancel
			m.wg.Go(func() { m.manage(ctx, name) })
		}
	}
	if changed {
		m.signal()
	}
}

// ensureFile keeps a usable certificate from an earlier run, or writes a
// placeholder.
func (m *Manager) ensureFile(name string, d *domain) error {
	crt, key := m.paths(name)
	if data, err := os.ReadFile(crt); err == nil {
		if leaf := firstCert(data); leaf != nil && time.Now().Before(leaf.NotAfter) {
			if _, err := os.Stat(key); err == nil {
				d.written = true
				d.status.NotAfter = leaf.NotAfter
				d.status.Serial = leaf.SerialNumber.Text(16)
				if !isPlaceholder(leaf) {
					d.status.State = StateValid
					d.status.Issuer = leaf.Issuer.CommonName
				}
				return nil
			}
		}
	}
	certPEM, keyPEM, leaf, err := placeholder(name)
	if err != nil {
		return err
	}
	if err := writeAtomic(key, keyPEM, 0o600); err != nil {
		return err
	}
	if err := writeAtomic(crt, certPEM, 0o644); err != nil {
		return err
	}
	d.written = true
	d.status.NotAfter = leaf.NotAfter
	d.status.Serial = leaf.SerialNumber.Text(16)
	return nil
}

func (m *Manager) paths(name string) (crt, key string) {
	base := filepath.Join(m.o.Dir, name)
	return base + ".crt", base + m.o.KeySuffix
}

// manage checks that the challenge route answers, then hands name to
// certmagic (which obtains, loads from storage, and renews it) until ctx
// ends.
func (m *Manager) manage(ctx context.Context, name string) {
	m.probe(ctx, name)
	if ctx.Err() != nil {
		return
	}
	if err := m.cfg.ManageAsync(ctx, []string{name}); err != nil {
		m.log.Error("acme: managing a certificate", "domain", name, "err", err)
		m.setFailed(name, err)
	}
}

// probe polls the challenge path of name through the proxy's plain-HTTP
// port until this handler answers it, so that the first validation does
// not arrive before the proxy routes it (a failed order is retried only
// after a minute). It gives up after ProbeTimeout.
func (m *Manager) probe(ctx context.Context, name string) {
	var b [8]byte
	rand.Read(b[:])
	token := fmt.Sprintf("%x", b)
	m.probes.Store(token, struct{}{})
	defer m.probes.Delete(token)
	url := "http://" + net.JoinHostPort(m.o.ProbeAddr, strconv.Itoa(int(m.o.HTTPPort))) + probePrefix + token
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(m.o.ProbeTimeout)
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return
		}
		req.Host = name
		if resp, err := client.Do(req); err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && string(body) == token {
				return
			}
		}
		if time.Now().After(deadline) {
			m.log.Warn("acme: the challenge path does not reach scrimp through the proxy yet; ordering anyway",
				"domain", name, "url", url)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// onEvent follows certmagic's events; it never blocks and never vetoes.
func (m *Manager) onEvent(_ context.Context, event string, data map[string]any) error {
	name, _ := data["identifier"].(string)
	switch event {
	case "cert_obtaining":
		m.mu.Lock()
		if d := m.domains[name]; d != nil && d.obtained {
			d.status.State = StateRenewing
		}
		m.mu.Unlock()
	case "cert_obtained", "cached_managed_cert":
		m.wake()
	case "cert_failed":
		err, _ := data["error"].(error)
		if err == nil {
			err = errors.New("unknown error")
		}
		m.failures.Add(1)
		m.log.Warn("acme: obtaining a certificate failed; the current one is served", "domain", name,
			"renewal", data["renewal"], "err", err)
		m.setFailed(name, err)
	}
	return nil
}

func (m *Manager) setFailed(name string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if d := m.domains[name]; d != nil {
		d.status.State = StateFailed
		d.status.LastError = err.Error()
	}
}

func (m *Manager) wake() {
	select {
	case m.export <- struct{}{}:
	default:
	}
}

func (m *Manager) signal() {
	select {
	case m.changes <- struct{}{}:
	default:
	}
}

// Run serves the challenge handler and manages the domains until ctx
// ends; then it stops certmagic and returns. It is called once.
func (m *Manager) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return errors.New("acme: manager closed")
	}
	m.runCtx = ctx
	m.reconcileLocked()
	m.mu.Unlock()

	serveErr := make(chan error, 1)
	go func() { serveErr <- m.srv.Serve(m.ln) }()
	// Certificates replaced in the cache (obtained, renewed, loaded from
	// the shared storage) are exported on events and, as a safety net,
	// on a timer.
	sweep := time.NewTicker(min(max(m.o.RenewCheckInterval, time.Second), 30*time.Second))
	defer sweep.Stop()
	// Events come just before the cache is updated: look again shortly.
	again := time.NewTimer(time.Hour)
	again.Stop()
	defer again.Stop()
	var err error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err = <-serveErr:
			err = fmt.Errorf("acme: challenge handler: %w", err)
			break loop
		case <-m.export:
			again.Reset(300 * time.Millisecond)
		case <-again.C:
		case <-sweep.C:
		}
		m.exportAll()
	}
	cancel()
	m.srv.Close()
	m.wg.Wait()
	return err
}

// exportAll writes the files of every name whose certificate in the cache
// differs from the one written.
func (m *Manager) exportAll() {
	m.mu.Lock()
	names := make([]string, 0, len(m.domains))
	for n := range m.domains {
		names = append(names, n)
	}
	m.mu.Unlock()
	changed := false
	for _, name := range names {
		var best certmagic.Certificate
		for _, c := range m.cache.AllMatchingCertificates(name) {
			if c.Leaf == nil || !slices.Contains(c.Names, name) {
				continue
			}
			if best.Leaf == nil || c.Leaf.NotAfter.After(best.Leaf.NotAfter) {
				best = c
			}
		}
		if best.Leaf == nil {
			continue
		}
		m.mu.Lock()
		d := m.domains[name]
		same := d == nil || d.hash == best.Hash()
		m.mu.Unlock()
		if same {
			continue
		}
		if err := m.write(name, best); err != nil {
			m.log.Error("acme: writing the certificate files", "domain", name, "err", err)
			continue
		}
		m.mu.Lock()
		if d := m.domains[name]; d != nil {
			d.hash = best.Hash()
			d.obtained = true
			d.status.State = StateValid
			d.status.NotAfter = best.Leaf.NotAfter
			d.status.Issuer = best.Leaf.Issuer.CommonName
			d.status.Serial = best.Leaf.SerialNumber.Text(16)
			d.status.LastError = ""
		}
		m.mu.Unlock()
		m.log.Info("acme: certificate written", "domain", name, "not_after", best.Leaf.NotAfter, "serial", best.Leaf.SerialNumber.Text(16))
		changed = true
	}
	if changed {
		m.signal()
	}
}

// write stores c's chain and key atomically: key first, so that the
// certificate file never names a key that is not there yet.
func (m *Manager) write(name string, c certmagic.Certificate) error {
	var chain bytes.Buffer
	for _, der := range c.Certificate.Certificate {
		pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		return fmt.Errorf("encode the key of %s: %w", name, err)
	}
	crt, key := m.paths(name)
	if err := writeAtomic(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return writeAtomic(crt, chain.Bytes(), 0o644)
}

// Certs implements lb.CertSource: the files of the managed names, and the
// challenge route.
func (m *Manager) Certs() ([]generator.TLSCert, *generator.ACMERoute) {
	m.mu.Lock()
	defer m.mu.Unlock()
	names := make([]string, 0, len(m.domains))
	for n, d := range m.domains {
		if d.written {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	certs := make([]generator.TLSCert, 0, len(names))
	for _, n := range names {
		crt, key := m.paths(n)
		certs = append(certs, generator.TLSCert{Domains: []string{n}, Cert: crt, Key: key})
	}
	if len(names) == 0 {
		return certs, nil
	}
	return certs, &generator.ACMERoute{Handler: m.handler, Port: m.o.HTTPPort, Domains: names}
}

// Changes implements lb.CertSource.
func (m *Manager) Changes() <-chan struct{} { return m.changes }

// Failures counts failed orders and renewals since the start.
func (m *Manager) Failures() int64 { return m.failures.Load() }

// Status returns the managed names' states, sorted by name.
func (m *Manager) Status() []DomainStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]DomainStatus, 0, len(m.domains))
	for _, d := range m.domains {
		out = append(out, d.status)
	}
	slices.SortFunc(out, func(a, b DomainStatus) int { return strings.Compare(a.Domain, b.Domain) })
	return out
}

// Close stops management and the challenge handler (if Run did not) and
// the certificate cache's maintenance; safe twice. Run's context should be
// cancelled first; Close does not wait for Run.
func (m *Manager) Close() error {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.closed = true
		for _, d := range m.domains {
			if d.cancel != nil {
				d.cancel()
			}
		}
		m.mu.Unlock()
		m.srv.Close()
		m.ln.Close()
		m.cache.Stop()
		// Stop keeping the storage's locks fresh (S3Storage).
		if c, ok := m.o.Storage.(interface{ Close() }); ok {
			c.Close()
		}
	})
	return nil
}

// placeholderOrg marks self-signed placeholders.
const placeholderOrg = "scrimp placeholder"

func isPlaceholder(c *x509.Certificate) bool {
	return slices.Contains(c.Subject.Organization, placeholderOrg)
}

// placeholder makes a self-signed certificate for name, valid for a week.
func placeholder(name string) (certPEM, keyPEM []byte, leaf *x509.Certificate, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{placeholderOrg}},
		DNSNames:     []string{name},
		NotBefore:    now.Add(-time.Minute), NotAfter: now.Add(7 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("placeholder for %s: %w", name, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, nil, nil, err
	}
	leaf, _ = x509.ParseCertificate(der)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), leaf, nil
}

func firstCert(data []byte) *x509.Certificate {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil
	}
	return c
}

// writeAtomic replaces file with data: a temporary file in the same
// directory, synced, renamed over it, and the directory synced.
func writeAtomic(file string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(file)
	f, err := os.CreateTemp(dir, "."+filepath.Base(file)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", file, err)
	}
	if err := f.Chmod(perm); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, file); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", file, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
