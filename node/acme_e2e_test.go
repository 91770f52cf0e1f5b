package node

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/internal/loopback"
	"github.com/scrimplb/scrimp/internal/pebbletest"
)

// TestACMEEndToEnd runs a load balancer with lb.acme against a real Pebble
// that validates HTTP-01 through the load balancer's own plain-HTTP
// listener (and so through the real proxy), and a backend advertising
// app.test over https: a TLS client trusting only Pebble's root gets a
// verified answer from the backend.
func TestACMEEndToEnd(t *testing.T) {
	for _, tt := range []struct{ generator, net string }{
		{"nginx", "127.0.201"},
		{"haproxy", "127.0.202"},
	} {
		t.Run(tt.generator, func(t *testing.T) { testACMEEndToEnd(t, tt.generator, tt.net) })
	}
}

// acmeCluster is a load balancer with lb.acme against a real Pebble.
type acmeCluster struct {
	*testCluster
	pebble *pebbletest.Server
	roots  *x509.CertPool
	addr   string // the https application's address on the load balancer
}

// startACMECluster starts Pebble (certificates valid for validity, 0 for
// 90 days) validating on the load balancer's plain-HTTP port, and the load
// balancer, with edit changing its lb.acme.
func startACMECluster(t *testing.T, generator, netPrefix string, validity time.Duration, edit func(*config.ACME)) *acmeCluster {
	t.Helper()
	lbIP := netPrefix + ".1"
	httpPort, err := loopback.FreePort(lbIP)
	if err != nil {
		t.Fatal(err)
	}
	pebble := pebbletest.Start(t, pebbletest.Options{HTTPPort: httpPort, ValidationIP: lbIP, Validity: validity})
	tc := newTestClusterSetup(t, netPrefix, "local", generator, nil, func(tc *testCluster) {
		tc.edit = func(cfg *config.Config) {
			if cfg.LB == nil {
				return
			}
			a := config.DefaultACME()
			a.Directory, a.CARoot = pebble.Directory, pebble.CARootFile
			a.Domains, a.HTTPPort = []string{"app.test", "*.apps.test"}, httpPort
			if edit != nil {
				edit(&a)
			}
			cfg.LB.ACME = &a
		}
	})
	roots, _ := pebble.Roots(t)
	return &acmeCluster{testCluster: tc, pebble: pebble, roots: roots,
		addr: net.JoinHostPort(lbIP, strconv.Itoa(tc.listenPort))}
}

// addHTTPSBackend starts a backend advertising app "web" over https for
// domains.
func (ac *acmeCluster) addHTTPSBackend(domains ...string) {
	ac.t.Helper()
	ac.addBackendEdit(0, 5*time.Second, 0, func(cfg *config.Config) {
		app := &cfg.Backend.Applications[0].Application
		app.Protocol, app.Domains = catalog.ProtocolHTTPS, domains
	})
}

// waitVerified polls until a client trusting only Pebble's root gets the
// backend's answer for app.test, and returns the serial it was served.
func (ac *acmeCluster) waitVerified(t *testing.T, within time.Duration) *big.Int {
	t.Helper()
	var lastErr error
	deadline := time.Now().Add(within)
	for {
		body, serial, err := verifiedGet(ac.roots, ac.addr, "app.test")
		if err == nil && strings.HasPrefix(body, loopback.AppAnswer+"backend-0") {
			return serial
		}
		if err == nil {
			err = fmt.Errorf("answer %q", body)
		}
		lastErr = err
		if time.Now().After(deadline) {
			t.Fatalf("no verified HTTPS answer for app.test within %s: %v; acme status %+v", within, lastErr, ac.lb.ACMEStatus())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func testACMEEndToEnd(t *testing.T, generator, netPrefix string) {
	ac := startACMECluster(t, generator, netPrefix, 0, nil)
	start := time.Now()
	ac.addHTTPSBackend("app.test", "evil.example")
	ac.waitVerified(t, 90*time.Second)
	t.Logf("%s: app advertised → first verified HTTPS answer in %s; Pebble orders: %d",
		generator, time.Since(start).Round(time.Millisecond), ac.pebble.Orders())
	if n := ac.pebble.Orders(); n != 1 {
		t.Errorf("Pebble accepted %d orders, want 1 (evil.example is not allowed)", n)
	}
	st := ac.lb.ACMEStatus()
	if len(st) != 1 || st[0].Domain != "app.test" || st[0].State != "valid" {
		t.Errorf("ACME status = %+v, want app.test valid", st)
	}
}

// TestACMERenewalUnderLoad renews short-lived certificates while clients
// trusting only Pebble's root send a steady HTTPS load: no request fails,
// the renewed certificate is served on new connections, and HAProxy takes
// it through its runtime API without a reload.
func TestACMERenewalUnderLoad(t *testing.T) {
	for _, tt := range []struct{ generator, net string }{
		{"nginx", "127.0.203"},
		{"haproxy", "127.0.204"},
	} {
		t.Run(tt.generator, func(t *testing.T) {
			ac := startACMECluster(t, tt.generator, tt.net, 16*time.Second, func(a *config.ACME) {
				a.RenewCheckInterval, a.RenewRatio = config.D(time.Second), 0.5
			})
			ac.addHTTPSBackend("app.test")
			first := ac.waitVerified(t, 90*time.Second)
			reloads := ac.lb.ProxyReloads()
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ac.roots, ServerName: "app.test"}, MaxIdleConnsPerHost: 4}
			defer tr.CloseIdleConnections()
			tlsClient := &http.Client{Transport: tr, Timeout: 5 * time.Second}
			// The bench's steady load (startLoad), with a client that
			// trusts Pebble's root.
			res := loopback.StartLoad(4, 2*time.Millisecond, func(*http.Client) error {
				req, err := http.NewRequest(http.MethodGet, "https://"+ac.addr+"/", nil)
				if err != nil {
					return err
				}
				req.Host = "app.test"
				resp, err := tlsClient.Do(req)
				if err != nil {
					return err
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("status %d", resp.StatusCode)
				}
				return nil
			})
			res.Count(true)
			// A renewal seen on new connections.
			seen := []*big.Int{first}
			deadline := time.Now().Add(90 * time.Second)
			for len(seen) < 2 {
				if time.Now().After(deadline) {
					res.Stop()
					t.Fatalf("served serials %x; want a renewal within 90s; acme status %+v", seen, ac.lb.ACMEStatus())
				}
				if _, serial, err := verifiedGet(ac.roots, ac.addr, "app.test"); err == nil && serial.Cmp(seen[len(seen)-1]) != 0 {
					seen = append(seen, serial)
				}
				time.Sleep(100 * time.Millisecond)
			}
			r := res.Stop()
			stats := ac.lb.lb.Stats()
			t.Logf("%s: %d renewals served; %d requests over %s, %d failed; proxy reloads during the run %d; runtime certificate updates %d, reloads for certificates %d; Pebble orders %d",
				tt.generator, len(seen)-1, r.Sent, r.Window.Round(time.Millisecond), r.Failed, ac.lb.ProxyReloads()-reloads,
				stats.CertUpdates, stats.CertReloads, ac.pebble.Orders())
			if r.Failed != 0 {
				t.Errorf("%d of %d requests failed: %+v", r.Failed, r.Sent, r.Failures)
			}
			if tt.generator == "haproxy" {
				if n := ac.lb.ProxyReloads() - reloads; n != 0 {
					t.Errorf("HAProxy reloaded %d times for renewals, want 0 (runtime API)", n)
				}
				if stats.CertUpdates < 2 { // the first certificate, then the renewal
					t.Errorf("%d runtime certificate updates, want at least 2", stats.CertUpdates)
				}
			}
		})
	}
}

// verifiedGet sends one HTTPS request to addr with SNI and Host name on a
// new connection, verifying the certificate against roots, and returns
// the answer and the served certificate's serial.
func verifiedGet(roots *x509.CertPool, addr, name string) (string, *big.Int, error) {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: name}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	req, err := http.NewRequest(http.MethodGet, "https://"+addr+"/", nil)
	if err != nil {
		return "", nil, err
	}
	req.Host = name
	resp, err := c.Do(req)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), resp.TLS.PeerCertificates[0].SerialNumber, err
}
