package proxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/generator"
	"github.com/scrimplb/scrimp/lb"
)

// The proxies' certificate interfaces, as the load balancer loop uses them.
var (
	_ lb.CertProxy    = (*ManagedHAProxy)(nil)
	_ lb.CertReloader = (*ManagedHAProxy)(nil)
	_ lb.CertReloader = (*ManagedNginx)(nil)
	_ lb.CertReloader = (*External)(nil)
)

// selfSigned writes a self-signed certificate for domain, with the given
// serial, and its key; blank adds an empty line between the two PEM
// blocks of the key file, as some tools write.
func selfSigned(t *testing.T, certFile, keyFile, domain string, serial int64, blank bool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: domain}, DNSNames: []string{domain},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if blank {
		keyPEM = append([]byte("\n\r\n"), keyPEM...)
	}
	if err := WriteAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteAtomic(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
}

// servedSerial returns the serial of the certificate a new TLS handshake
// for domain gets at addr.
func servedSerial(t *testing.T, addr, domain string) int64 {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: domain, InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("handshake with %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// TestManagedHAProxyUpdateCerts loads new certificate contents into a real
// HAProxy without a reload, and checks what makes UpdateCerts fail (and
// the loop reload instead): a file HAProxy has not loaded, a key that does
// not fit the certificate. A failed update leaves the certificate served
// before, and a later update still works.
func TestManagedHAProxyUpdateCerts(t *testing.T) {
	h, _ := newManagedHAProxy(t)
	tlsDir := t.TempDir()
	crt, key := filepath.Join(tlsDir, "app.test.crt"), filepath.Join(tlsDir, "app.test.key")
	selfSigned(t, crt, key, "app.test", 1, false)
	backend := upstream(t, "app")
	ap := netip.MustParseAddrPort(backend.Listener.Addr().String())
	port := freePort(t)
	g, err := generator.New("haproxy", nil)
	if err != nil {
		t.Fatal(err)
	}
	cert := generator.TLSCert{Domains: []string{"app.test"}, Cert: crt, Key: key}
	out, err := g.Render(generator.Input{
		Snapshot: catalog.NewSnapshot([]catalog.Node{{Name: "b1", Addr: ap.Addr(), Role: catalog.RoleBackend, Applications: []catalog.Application{
			{Name: "app", ListenPort: port, ApplicationPort: int(ap.Port()), Protocol: catalog.ProtocolHTTPS, Domains: []string{"app.test"}},
		}}}),
		ListenAddr: "127.0.0.1", Standalone: true, StateDir: h.Dir(), TLS: []generator.TLSCert{cert},
	})
	if err != nil || len(out.Warnings) > 0 {
		t.Fatalf("render: %v %q", err, out.Warnings)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
	defer cancel()
	if err := h.UpdateCerts(ctx, []generator.TLSCert{cert}); err == nil {
		t.Errorf("UpdateCerts before HAProxy runs: no error")
	}
	applyHAProxy(t, h, out.Config)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if got := servedSerial(t, addr, "app.test"); got != 1 {
		t.Fatalf("serial %d served, want 1", got)
	}
	reloads := h.Reloads()

	// A new certificate and key, with a blank line between them.
	selfSigned(t, crt, key, "app.test", 2, true)
	if err := h.UpdateCerts(ctx, []generator.TLSCert{cert}); err != nil {
		t.Fatalf("UpdateCerts: %v", err)
	}
	if got := servedSerial(t, addr, "app.test"); got != 2 {
		t.Errorf("serial %d served after UpdateCerts, want 2", got)
	}

	// A file the configuration does not name.
	other := generator.TLSCert{Domains: []string{"new.test"}, Cert: filepath.Join(tlsDir, "new.test.crt"), Key: filepath.Join(tlsDir, "new.test.key")}
	selfSigned(t, other.Cert, other.Key, "new.test", 3, false)
	if err := h.UpdateCerts(ctx, []generator.TLSCert{other}); !errors.Is(err, ErrCertNotLoaded) {
		t.Errorf("UpdateCerts of a file not loaded: %v, want ErrCertNotLoaded", err)
	}

	// A key of another certificate: refused at commit, aborted.
	selfSigned(t, crt, filepath.Join(tlsDir, "other.key"), "app.test", 4, false)
	if err := h.UpdateCerts(ctx, []generator.TLSCert{cert}); err == nil || !strings.Contains(err.Error(), "commit ssl cert") {
		t.Errorf("UpdateCerts with a key that does not fit: %v, want a commit error", err)
	}
	if got := servedSerial(t, addr, "app.test"); got != 2 {
		t.Errorf("serial %d served after a failed update, want 2 still", got)
	}
	// Unreadable files fail before HAProxy is asked.
	if err := h.UpdateCerts(ctx, []generator.TLSCert{{Cert: filepath.Join(tlsDir, "missing.crt"), Key: filepath.Join(tlsDir, "missing.key")}}); err == nil {
		t.Errorf("UpdateCerts of a missing file: no error")
	}

	// The aborted transaction does not block the next update.
	selfSigned(t, crt, key, "app.test", 5, false)
	if err := h.UpdateCerts(ctx, []generator.TLSCert{cert}); err != nil {
		t.Fatalf("UpdateCerts after a failed one: %v", err)
	}
	if got := servedSerial(t, addr, "app.test"); got != 5 {
		t.Errorf("serial %d served, want 5", got)
	}
	if got := h.Reloads(); got != reloads {
		t.Errorf("%d reloads during the updates, want none", got-reloads)
	}
	if got := h.CertUpdates(); got != 2 {
		t.Errorf("CertUpdates %d, want 2", got)
	}

	// ReloadCerts reloads the same configuration, which reads the files.
	selfSigned(t, crt, key, "app.test", 6, false)
	if err := h.ReloadCerts(ctx); err != nil {
		t.Fatalf("ReloadCerts: %v", err)
	}
	if got := h.Reloads(); got != reloads+1 {
		t.Errorf("%d reloads after ReloadCerts, want 1", got-reloads)
	}
	poll(t, "the reloaded HAProxy serves serial 6", func() string {
		if got := servedSerial(t, addr, "app.test"); got != 6 {
			return "serial " + strconv.FormatInt(got, 10)
		}
		return ""
	})
}

func TestCertPayload(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name      string
		cert, key string
		want      string
		wantErr   string
	}{
		{name: "cert and key", cert: write("a.crt", "C1\nC2\n"), key: write("a.key", "K1\nK2"), want: "C1\nC2\nK1\nK2\n"},
		{name: "blank lines and CRLF dropped", cert: write("b.crt", "C1\r\n\r\n  \nC2"), key: write("b.key", "\nK1\n\n"), want: "C1\nC2\nK1\n"},
		{name: "key in the same file", cert: write("c.pem", "C\nK\n"), key: filepath.Join(dir, "c.pem"), want: "C\nK\n"},
		{name: "missing key", cert: write("d.crt", "C\n"), key: filepath.Join(dir, "none.key"), wantErr: "key of"},
		{name: "empty", cert: write("e.pem", "\n\n"), key: filepath.Join(dir, "e.pem"), wantErr: "is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := certPayload(generator.TLSCert{Cert: tt.cert, Key: tt.key})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// TestExternalReloadCerts checks and reloads a system proxy without
// writing its file; a failed check means no reload.
func TestExternalReloadCerts(t *testing.T) {
	tests := []struct {
		name      string
		check     string
		wantErr   string
		wantCalls string
	}{
		{name: "checked and reloaded", check: `echo check >> "$LOG"`, wantCalls: "check\nreload\n"},
		{name: "check fails: no reload", check: `echo check >> "$LOG"; echo "bad certificate" >&2; exit 1`, wantErr: "bad certificate", wantCalls: "check\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			log := filepath.Join(dir, "log")
			t.Setenv("LOG", log)
			target := filepath.Join(dir, "scrimp.conf")
			if err := os.WriteFile(target, []byte("running\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			e := &External{Target: target, Check: script(t, dir, "check", tt.check), Reload: script(t, dir, "reload", `echo reload >> "$LOG"`), Timeout: 10 * time.Second}
			err := e.ReloadCerts(context.Background())
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("ReloadCerts: %v, want error %q", err, tt.wantErr)
			}
			calls, _ := os.ReadFile(log)
			if string(calls) != tt.wantCalls {
				t.Errorf("calls %q, want %q", calls, tt.wantCalls)
			}
			if got, _ := os.ReadFile(target); string(got) != "running\n" {
				t.Errorf("target changed to %q", got)
			}
		})
	}
}
