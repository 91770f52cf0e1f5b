// Package pebbletest runs a real ACME server for tests: Pebble
// (github.com/letsencrypt/pebble/v2) with pebble-challtestsrv as its DNS
// server, both on loopback with free ports. Every name resolves to
// Options.ValidationIP (127.0.0.1), so Pebble validates HTTP-01 challenges
// by connecting to that address and Options.HTTPPort. Install the binaries with `make deps-go`.
package pebbletest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/internal/loopback"
)

// Version is the pinned Pebble release (Makefile deps-go installs it).
const Version = "v2.10.3"

// Options shape the server.
type Options struct {
	// HTTPPort is where Pebble connects to validate HTTP-01 challenges
	// (on 127.0.0.1). Required.
	HTTPPort int
	// Validity is the lifetime of issued certificates; 0 means 90 days.
	Validity time.Duration
	// ValidationIP is the loopback address every name resolves to, where
	// Pebble connects to validate; empty means 127.0.0.1.
	ValidationIP string
}

// Server is a running Pebble.
type Server struct {
	// Directory is the ACME directory URL.
	Directory string
	// CARootFile is a PEM file holding the root of Pebble's own HTTPS
	// certificate (the directory's), for the ACME client.
	CARootFile string

	mgmt   string
	client *http.Client
	out    *syncBuffer
	cmd    *exec.Cmd
	exited chan struct{}
	once   sync.Once
}

// Binary finds name in PATH or in $(go env GOPATH)/bin.
func Binary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err != nil {
		return "", fmt.Errorf("%s is not in PATH, and go env GOPATH failed: %w", name, err)
	}
	for _, dir := range filepath.SplitList(string(bytes.TrimSpace(out))) {
		p := filepath.Join(dir, "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is not in PATH nor in GOPATH/bin", name)
}

// Start runs challtestsrv and Pebble until the test ends. It skips the
// test when the binaries are missing (outside CI).
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	var bins [2]string
	for i, name := range []string{"pebble", "pebble-challtestsrv"} {
		b, err := Binary(name)
		if err != nil {
			if os.Getenv("CI") == "" {
				t.Skipf("%v; install it with: go install github.com/letsencrypt/pebble/v2/cmd/%s@%s", err, name, Version)
			}
			t.Fatal(err)
		}
		bins[i] = b
	}
	dir := t.TempDir()
	rootFile, certFile, keyFile := writeTLS(t, dir)

	ip := o.ValidationIP
	if ip == "" {
		ip = "127.0.0.1"
	}
	dnsAddr := startChallSrv(t, bins[1], ip)
	validity := o.Validity
	if validity <= 0 {
		validity = 90 * 24 * time.Hour
	}
	for attempt := 1; ; attempt++ {
		listen, mgmt := freeAddr(t), freeAddr(t)
		cfg := map[string]any{"pebble": map[string]any{
			"listenAddress":           listen,
			"managementListenAddress": mgmt,
			"certificate":             certFile,
			"privateKey":              keyFile,
			"httpPort":                o.HTTPPort,
			"tlsPort":                 0,
			"keyAlgorithm":            "ecdsa",
			"retryAfter":              map[string]int{"authz": 1, "order": 1},
			"profiles": map[string]any{"default": map[string]any{
				"description":    "test",
				"validityPeriod": int(validity / time.Second),
			}},
		}}
		data, _ := json.Marshal(cfg)
		cfgFile := filepath.Join(dir, "pebble.json")
		if err := os.WriteFile(cfgFile, data, 0o600); err != nil {
			t.Fatal(err)
		}
		s := &Server{
			Directory:  "https://" + listen + "/dir",
			CARootFile: rootFile,
			mgmt:       mgmt,
			out:        &syncBuffer{},
			exited:     make(chan struct{}),
		}
		pool := x509.NewCertPool()
		pem, _ := os.ReadFile(rootFile)
		pool.AppendCertsFromPEM(pem)
		s.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		s.cmd = exec.Command(bins[0], "-config", cfgFile, "-dnsserver", dnsAddr)
		s.cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
		s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
		if err := s.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { s.cmd.Wait(); close(s.exited) }()
		if waitListening(listen, s.exited, 30*time.Second) && waitListening(mgmt, s.exited, 10*time.Second) {
			t.Cleanup(func() {
				s.Stop()
				if t.Failed() {
					t.Logf("pebble output:\n%s", s.out)
				}
			})
			return s
		}
		s.Stop()
		if attempt == 3 {
			t.Fatalf("pebble did not start on %s:\n%s", listen, s.out)
		}
	}
}

// Stop ends Pebble (safe twice); the ACME directory stops answering.
func (s *Server) Stop() {
	s.once.Do(func() {
		s.cmd.Process.Kill()
		<-s.exited
	})
}

// Orders is how many orders Pebble accepted so far (from its log).
func (s *Server) Orders() int {
	return strings.Count(s.out.String(), "Added order ")
}

// Log is Pebble's output so far.
func (s *Server) Log() string { return s.out.String() }

// Roots returns Pebble's issuing root (it changes at every start): the
// pool a TLS client verifies issued certificates against, and its PEM.
func (s *Server) Roots(t testing.TB) (*x509.CertPool, []byte) {
	t.Helper()
	resp, err := s.client.Get("https://" + s.mgmt + "/roots/0")
	if err != nil {
		t.Fatalf("pebble roots: %v", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pebble roots: %s %v", resp.Status, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		t.Fatalf("pebble roots: no certificate in %q", data)
	}
	return pool, data
}

// startChallSrv runs pebble-challtestsrv as a DNS server answering
// ip for every A query and nothing for AAAA, and returns its
// address. Its challenge servers are off.
func startChallSrv(t testing.TB, bin, ip string) string {
	t.Helper()
	for attempt := 1; ; attempt++ {
		port, err := loopback.FreePort("127.0.0.1") // DNS needs UDP and TCP
		if err != nil {
			t.Fatal(err)
		}
		dns := fmt.Sprintf("127.0.0.1:%d", port)
		mgmt := freeAddr(t)
		out := &syncBuffer{}
		cmd := exec.Command(bin, "-dnsserver", dns, "-management", mgmt, "-defaultIPv4", ip,
			"-defaultIPv6", "", "-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "")
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		stop := func() { cmd.Process.Kill(); <-exited }
		if waitListening(dns, exited, 30*time.Second) {
			t.Cleanup(func() {
				stop()
				if t.Failed() {
					t.Logf("challtestsrv output:\n%s", out)
				}
			})
			return dns
		}
		stop()
		if attempt == 3 {
			t.Fatalf("challtestsrv did not start on %s:\n%s", dns, out)
		}
	}
}

// writeTLS makes a CA and a certificate for localhost and 127.0.0.1 that
// Pebble serves its directory with, and returns the files.
func writeTLS(t testing.TB, dir string) (root, cert, key string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pebbletest root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	root, cert, key = filepath.Join(dir, "root.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for file, block := range map[string]*pem.Block{
		root: {Type: "CERTIFICATE", Bytes: caDER},
		cert: {Type: "CERTIFICATE", Bytes: leafDER},
		key:  {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return root, cert, key
}

// freeAddr returns a free TCP address on 127.0.0.1.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitListening polls addr until it accepts connections, the process
// exits, or within passes.
func waitListening(addr string, exited <-chan struct{}, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// syncBuffer collects a child's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
