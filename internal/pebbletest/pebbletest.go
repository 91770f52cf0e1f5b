// Package pebbletest runs a real ACME server for tests: Pebble
// (github.com/letsencrypt/pebble/v2) with pebble-challtestsrv as its DNS
// server, both on loopback with free ports. Every name resolves to
// Options.ValidationIP (127.0.0.1), so Pebble validates HTTP-01 challenges
// by connecting to that address and Options.HTTPPort. Install the binaries with `make deps-go`.
package pebbletest

import (
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
	"testing"
	"time"

	"github.com/scrimplb/scrimp/internal/loopback"
	"github.com/scrimplb/scrimp/internal/proctest"
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
	proc   *proctest.Proc
}

// Start runs challtestsrv and Pebble until the test ends. It skips the
// test when the binaries are missing (outside CI).
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	var bins [2]string
	for i, name := range []string{"pebble", "pebble-challtestsrv"} {
		bins[i] = proctest.Need(t, name, "github.com/letsencrypt/pebble/v2/cmd/"+name+"@"+Version)
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
	s := &Server{CARootFile: rootFile}
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(rootFile)
	pool.AppendCertsFromPEM(pem)
	s.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	s.proc = proctest.Start(t, "pebble", func() (*exec.Cmd, []string) {
		listen, mgmt := proctest.FreeAddr(t), proctest.FreeAddr(t)
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
		s.Directory, s.mgmt = "https://"+listen+"/dir", mgmt
		cmd := exec.Command(bins[0], "-config", cfgFile, "-dnsserver", dnsAddr)
		cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
		return cmd, []string{listen, mgmt}
	})
	return s
}

// Stop ends Pebble (safe twice); the ACME directory stops answering.
func (s *Server) Stop() { s.proc.Stop() }

// Orders is how many orders Pebble accepted so far (from its log).
func (s *Server) Orders() int {
	return strings.Count(s.proc.Out.String(), "Added order ")
}

// Log is Pebble's output so far.
func (s *Server) Log() string { return s.proc.Out.String() }

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
	var dns string
	proctest.Start(t, "challtestsrv", func() (*exec.Cmd, []string) {
		port, err := loopback.FreePort("127.0.0.1") // DNS needs UDP and TCP
		if err != nil {
			t.Fatal(err)
		}
		dns = fmt.Sprintf("127.0.0.1:%d", port)
		return exec.Command(bin, "-dnsserver", dns, "-management", proctest.FreeAddr(t), "-defaultIPv4", ip,
			"-defaultIPv6", "", "-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", ""), []string{dns}
	})
	return dns
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
