// Package e2e holds end-to-end tests of generated configuration through
// real proxies (nginx, HAProxy) on loopback, and the harness they share:
// backends that answer with their name over HTTP, gRPC, TCP and UDP, a test
// certificate authority, and clients that report which backend answered.
// The bench (cmd/scrimp-bench) uses its gRPC test server too; the free-port
// finder it shares with the bench, the node tests and the demo is
// internal/loopback's.
//
// Every backend gets its own loopback address (127.0.x.y); Linux routes all
// of 127.0.0.0/8 to the loopback interface. Nothing here talks to any other
// address.
package e2e

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/generator"
	"github.com/scrimplb/scrimp/internal/loopback"
)

// RequireBinary skips the test when name is not installed on a developer
// machine, and fails it in CI, where `make test` installs it.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is required in CI (make test installs it): %v", name, err)
		}
		t.Skipf("%s not installed (make test installs it): %v", name, err)
	}
	return path
}

// RequireNginxLua skips the test when nginx or its lua modules
// (generator.DebianLuaModules) are missing on a developer machine, and
// fails it in CI, where `make test` installs them.
func RequireNginxLua(t testing.TB) {
	t.Helper()
	RequireBinary(t, "nginx")
	for _, m := range generator.DebianLuaModules {
		if _, err := os.Stat(m); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("nginx's lua module is required in CI: %v", err)
			}
			t.Skipf("nginx's lua module is not installed (apt-get install -y libnginx-mod-http-lua libnginx-mod-http-ndk lua-resty-core): %v", err)
		}
	}
}

// Backend is a test backend on its own loopback address. Its HTTP server
// answers every request with "NAME\n" (and the request's Host and path in
// headers X-Host and X-Path); its gRPC server answers UnaryCall with
// Hostname NAME; its TCP and UDP servers answer any input with "NAME\n".
type Backend struct {
	Name string
	IP   netip.Addr
	// Ports of the four servers.
	HTTP, GRPC, TCP, UDP int
}

// StartBackend starts a backend's four servers on ip; they stop at test
// cleanup.
func StartBackend(t testing.TB, name, ip string) *Backend {
	t.Helper()
	b := &Backend{Name: name, IP: netip.MustParseAddr(ip)}

	httpLn := listen(t, ip)
	hs := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Host", r.Host)
		w.Header().Set("X-Path", r.URL.Path)
		fmt.Fprintf(w, "%s\n", name)
	})}
	go hs.Serve(httpLn)
	t.Cleanup(func() { hs.Close() })
	b.HTTP = port(httpLn.Addr())

	grpcLn := listen(t, ip)
	gs := NewGRPCServer(name)
	go gs.Serve(grpcLn)
	t.Cleanup(gs.Stop)
	b.GRPC = port(grpcLn.Addr())

	tcpLn := listen(t, ip)
	go serveTCP(tcpLn, name)
	t.Cleanup(func() { tcpLn.Close() })
	b.TCP = port(tcpLn.Addr())

	pc, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("backend %s: udp: %v", name, err)
	}
	go serveUDP(pc, name)
	t.Cleanup(func() { pc.Close() })
	b.UDP = pc.LocalAddr().(*net.UDPAddr).Port
	return b
}

// Node returns the backend as a cluster member advertising apps, each with
// its ApplicationPort set to the backend's server for its protocol.
func (b *Backend) Node(apps ...catalog.Application) catalog.Node {
	out := make([]catalog.Application, len(apps))
	for i, a := range apps {
		switch a.Protocol {
		case catalog.ProtocolGRPC:
			a.ApplicationPort = b.GRPC
		case catalog.ProtocolTCP:
			a.ApplicationPort = b.TCP
		case catalog.ProtocolUDP:
			a.ApplicationPort = b.UDP
		default:
			a.ApplicationPort = b.HTTP
		}
		out[i] = a
	}
	return catalog.Node{Name: b.Name, Addr: b.IP, Role: catalog.RoleBackend, Applications: out}
}

func listen(t testing.TB, ip string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	return ln
}

func port(a net.Addr) int { return a.(*net.TCPAddr).Port }

// NewGRPCServer returns a gRPC server whose test service (grpc_testing's
// TestService) answers UnaryCall with Hostname name; GRPCCall calls it.
// The caller serves it on a listener and stops it.
func NewGRPCServer(name string) *grpc.Server {
	gs := grpc.NewServer()
	testpb.RegisterTestServiceServer(gs, testService{name: name})
	return gs
}

type testService struct {
	testpb.UnimplementedTestServiceServer
	name string
}

func (s testService) UnaryCall(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{Hostname: s.name}, nil
}

func serveTCP(ln net.Listener, name string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			r := bufio.NewReader(c)
			for {
				if _, err := r.ReadString('\n'); err != nil {
					return
				}
				if _, err := fmt.Fprintf(c, "%s\n", name); err != nil {
					return
				}
			}
		}()
	}
}

func serveUDP(pc net.PacketConn, name string) {
	buf := make([]byte, 1500)
	for {
		_, addr, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		pc.WriteTo([]byte(name+"\n"), addr)
	}
}

// FreePort returns a port free for TCP and UDP on ip (loopback.FreePort),
// failing the test if there is none.
func FreePort(t testing.TB, ip string) int {
	t.Helper()
	p, err := loopback.FreePort(ip)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// HTTPClient returns a client without keep-alive (each request a new
// connection) that trusts roots (nil: system roots) and dials every host
// name at dialAddr, so tests can use real domain names on loopback.
func HTTPClient(dialAddr string, roots *x509.CertPool) *http.Client {
	d := &net.Dialer{Timeout: 2 * time.Second}
	return &http.Client{
		Timeout: 3 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, dialAddr)
			},
			TLSClientConfig: &tls.Config{RootCAs: roots},
		},
	}
}

// Get requests url and returns the status code, the body's first line
// (the backend's name for a 200) and the response.
func Get(c *http.Client, url string, header ...string) (int, string, *http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", nil, err
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Host" {
			req.Host = header[i+1]
			continue
		}
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return resp.StatusCode, "", resp, err
	}
	line, _, _ := strings.Cut(string(body), "\n")
	return resp.StatusCode, line, resp, nil
}

// GRPCConn opens ONE plaintext HTTP/2 connection to addr; every call on it
// shares that connection.
func GRPCConn(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// GRPCCall makes one unary call and returns the answering backend's name.
func GRPCCall(ctx context.Context, conn *grpc.ClientConn) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := testpb.NewTestServiceClient(conn).UnaryCall(ctx, &testpb.SimpleRequest{})
	if err != nil {
		return "", err
	}
	return resp.GetHostname(), nil
}

// TCPAsk opens a TCP connection to addr, sends one line and returns the
// backend's name.
func TCPAsk(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, "who\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// UDPAsk sends one datagram to addr and returns the backend's name.
func UDPAsk(addr string) (string, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("who\n")); err != nil {
		return "", err
	}
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

// Eventually polls f until it returns nil or timeout passes, and returns
// the last error.
func Eventually(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// CA is a certificate authority made for one test.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	Pool *x509.CertPool
}

// NewCA makes a fresh CA.
func NewCA(t testing.TB) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "scrimp test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{cert: cert, key: key, Pool: pool}
}

// Issue writes a certificate for domains and its key as PEM files in dir
// and returns their paths.
func (ca *CA) Issue(t testing.TB, dir string, domains ...string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: domains[0]},
		DNSNames:     domains,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(dir, strings.ReplaceAll(domains[0], "*", "wildcard"))
	certFile, keyFile = base+".crt", base+".key"
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// Spread counts answers per backend name.
type Spread map[string]int

// Within reports whether every one of names got an equal share of total
// within ±tolerance (0.10 = 10%), and describes the spread.
func (s Spread) Within(names []string, tolerance float64) (bool, string) {
	total := 0
	for _, n := range s {
		total += n
	}
	if total == 0 || len(names) == 0 {
		return false, "no answers"
	}
	want := float64(total) / float64(len(names))
	ok := true
	var parts []string
	for _, n := range names {
		got := float64(s[n])
		if got < want*(1-tolerance) || got > want*(1+tolerance) {
			ok = false
		}
		parts = append(parts, fmt.Sprintf("%s=%d", n, s[n]))
	}
	return ok, fmt.Sprintf("%s (ideal %.1f each, ±%.0f%%)", strings.Join(parts, " "), want, tolerance*100)
}

// ErrNotReady is returned by pollers while a proxy has not picked up a
// configuration yet.
var ErrNotReady = errors.New("not ready")
