package node

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
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

func testACMEEndToEnd(t *testing.T, generator, netPrefix string) {
	lbIP := netPrefix + ".1"
	httpPort, err := loopback.FreePort(lbIP)
	if err != nil {
		t.Fatal(err)
	}
	pebble := pebbletest.Start(t, pebbletest.Options{HTTPPort: httpPort, ValidationIP: lbIP})
	tc := newTestClusterSetup(t, netPrefix, "local", generator, nil, func(tc *testCluster) {
		tc.edit = func(cfg *config.Config) {
			if cfg.LB == nil {
				return
			}
			a := config.DefaultACME()
			a.Directory, a.CARoot = pebble.Directory, pebble.CARootFile
			a.Domains, a.HTTPPort = []string{"app.test", "*.apps.test"}, httpPort
			cfg.LB.ACME = &a
		}
	})
	roots, _ := pebble.Roots(t)

	start := time.Now()
	tc.addBackendEdit(0, 5*time.Second, 0, func(cfg *config.Config) {
		app := &cfg.Backend.Applications[0].Application
		app.Protocol, app.Domains = catalog.ProtocolHTTPS, []string{"app.test", "evil.example"}
	})
	addr := net.JoinHostPort(lbIP, strconv.Itoa(tc.listenPort))
	var lastErr error
	deadline := time.Now().Add(90 * time.Second)
	for {
		body, err := verifiedGet(roots, addr, "app.test")
		if err == nil && strings.HasPrefix(body, loopback.AppAnswer+"backend-0") {
			break
		}
		if err == nil {
			err = fmt.Errorf("answer %q", body)
		}
		lastErr = err
		if time.Now().After(deadline) {
			t.Fatalf("no verified HTTPS answer for app.test within 90s: %v; acme status %+v", lastErr, tc.lb.ACMEStatus())
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%s: app advertised → first verified HTTPS answer in %s; Pebble orders: %d",
		generator, time.Since(start).Round(time.Millisecond), pebble.Orders())
	if n := pebble.Orders(); n != 1 {
		t.Errorf("Pebble accepted %d orders, want 1 (evil.example is not allowed)", n)
	}
	st := tc.lb.ACMEStatus()
	if len(st) != 1 || st[0].Domain != "app.test" || st[0].State != "valid" {
		t.Errorf("ACME status = %+v, want app.test valid", st)
	}
}

// verifiedGet sends one HTTPS request to addr with SNI and Host name,
// verifying the certificate against roots.
func verifiedGet(roots *x509.CertPool, addr, name string) (string, error) {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: name}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	req, err := http.NewRequest(http.MethodGet, "https://"+addr+"/", nil)
	if err != nil {
		return "", err
	}
	req.Host = name
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}
