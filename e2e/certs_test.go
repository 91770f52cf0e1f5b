package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/generator"
	"github.com/scrimplb/scrimp/internal/proctest"
	"github.com/scrimplb/scrimp/lb"
	"github.com/scrimplb/scrimp/proxy"
)

// The certificate tests use loopback addresses 127.0.22.0/24 only: the
// load balancers listen on 127.0.22.1x, the backends on 127.0.22.1xx.

// certWait bounds every wait for a proxy or the loop; polls return as
// soon as their condition holds.
const certWait = 30 * time.Second

// staticMembers is a membership that never changes.
type staticMembers struct{ snap catalog.Snapshot }

func (m staticMembers) Snapshot() catalog.Snapshot { return m.snap }
func (m staticMembers) Changes() <-chan struct{}   { return nil }

// fileCerts is a CertSource over fixed certificate files whose contents
// the test replaces, as the ACME manager does after a renewal.
type fileCerts struct {
	certs   []generator.TLSCert
	route   *generator.ACMERoute
	changes chan struct{}
}

func (f *fileCerts) Certs() ([]generator.TLSCert, *generator.ACMERoute) {
	return slices.Clone(f.certs), f.route
}

func (f *fileCerts) Changes() <-chan struct{} { return f.changes }

// replaced says that the files got new contents.
func (f *fileCerts) replaced() {
	select {
	case f.changes <- struct{}{}:
	default:
	}
}

// certProxy is what the tests need of a managed proxy.
type certProxy interface {
	lb.Proxy
	Reloads() int
	Dir() string
	Close() error
}

// certKinds are the managed proxies the tests run, each with its
// generator and a listen address of its own.
var certKinds = []struct {
	name   string
	listen string
	start  func(t *testing.T, dir string, log *slog.Logger) certProxy
}{
	{"haproxy", "127.0.22.11", func(t *testing.T, dir string, log *slog.Logger) certProxy {
		p, err := proxy.NewManagedHAProxy(RequireBinary(t, "haproxy"), dir, certWait, log)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}},
	{"nginx", "127.0.22.12", func(t *testing.T, dir string, log *slog.Logger) certProxy {
		p, err := proxy.NewManagedNginx(RequireBinary(t, "nginx"), dir, certWait, log)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}},
}

// startProxy starts kind's managed proxy in a short temporary directory
// (HAProxy's socket paths are limited); its log is shown if the test
// fails.
func startProxy(t *testing.T, kind int) certProxy {
	t.Helper()
	dir, err := os.MkdirTemp("", "scrimp-cert-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	logs := &proctest.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log:\n%s", certKinds[kind].name, logs.String())
		}
	})
	p := certKinds[kind].start(t, filepath.Join(dir, "state"), slog.New(slog.NewTextHandler(logs, nil)))
	t.Cleanup(func() { p.Close() })
	return p
}

// runLoop runs a load balancer loop for p until the test ends and returns
// it with the outcomes it recorded.
func runLoop(t *testing.T, kind int, p certProxy, nodes []catalog.Node, certs lb.CertSource) (*lb.LB, func() []lb.Outcome) {
	t.Helper()
	gen, err := generator.New(certKinds[kind].name, nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var outcomes []lb.Outcome
	l := lb.New(lb.Config{
		Members: staticMembers{catalog.NewSnapshot(nodes)}, Generator: gen, Proxy: p, Certs: certs,
		Input:  generator.Input{ListenAddr: certKinds[kind].listen, Standalone: true, StateDir: p.Dir()},
		Timing: lb.Timing{Quiet: 10 * time.Millisecond, MaxWait: 50 * time.Millisecond},
		Checks: lb.CheckConfig{Disabled: true},
		OnOutcome: func(o lb.Outcome) {
			mu.Lock()
			outcomes = append(outcomes, o)
			mu.Unlock()
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return l, func() []lb.Outcome {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(outcomes)
	}
}

// serialOf returns the serial number of a certificate file.
func serialOf(t *testing.T, certFile string) *big.Int {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(certFile, strings.TrimSuffix(certFile, ".crt")+".key")
	if err != nil {
		t.Fatal(err)
	}
	return pair.Leaf.SerialNumber
}

// copyFile writes src's contents over dst atomically.
func copyFile(t *testing.T, src, dst string, perm os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := proxy.WriteAtomic(dst, data, perm); err != nil {
		t.Fatal(err)
	}
}

// hapProcs returns the master's and the current workers' pids from
// HAProxy's master CLI ("show proc"). The master re-executes itself after
// it started its first worker, refusing connections for a moment: it is
// asked until it answers.
func hapProcs(t *testing.T, sock string) (master string, workers []string) {
	t.Helper()
	err := Eventually(certWait, func() error {
		c, err := net.DialTimeout("unix", sock, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		io.WriteString(c, "show proc\n")
		c.(*net.UnixConn).CloseWrite()
		reply, err := io.ReadAll(c)
		if err != nil {
			return err
		}
		master, workers = "", nil
		cur, _, _ := strings.Cut(string(reply), "# old workers")
		for line := range strings.Lines(cur) {
			f := strings.Fields(line)
			if len(f) >= 2 && f[1] == "master" {
				master = f[0]
			}
			if len(f) >= 2 && f[1] == "worker" {
				workers = append(workers, f[0])
			}
		}
		if master == "" || len(workers) == 0 {
			return fmt.Errorf("show proc: no master or worker in %q", reply)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return master, workers
}

// httpsLoad sends requests to url until stopped: keepAlive clients each
// on one connection, and fresh clients each request on a new connection
// (a new TLS handshake), recording which certificate every new handshake
// saw and when.
type httpsLoad struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	// handshakes are the new connections' certificate serials, with the
	// time each request started.
	handshakes []handshake
	stop       chan struct{}
	wg         sync.WaitGroup
}

type handshake struct {
	at     time.Time
	serial *big.Int
}

func startHTTPSLoad(ca *CA, dialAddr, url string, keepAlive, fresh int) *httpsLoad {
	l := &httpsLoad{stop: make(chan struct{})}
	client := func(keep bool) *http.Client {
		d := &net.Dialer{Timeout: 5 * time.Second}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DisableKeepAlives: !keep, MaxIdleConnsPerHost: 1,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, dialAddr)
			},
			TLSClientConfig: &tls.Config{RootCAs: ca.Pool},
		}}
	}
	run := func(c *http.Client, record bool) {
		defer l.wg.Done()
		defer c.CloseIdleConnections()
		for {
			select {
			case <-l.stop:
				return
			default:
			}
			start := time.Now()
			status, body, resp, err := Get(c, url)
			if err == nil && (status != 200 || body != "app") {
				err = fmt.Errorf("status %d body %q", status, body)
			}
			l.mu.Lock()
			if err != nil {
				l.failed.Add(1)
				if len(l.errs) < 10 {
					l.errs = append(l.errs, err.Error())
				}
			} else {
				l.ok.Add(1)
				if record && resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
					l.handshakes = append(l.handshakes, handshake{start, resp.TLS.PeerCertificates[0].SerialNumber})
				}
			}
			l.mu.Unlock()
		}
	}
	for range keepAlive {
		l.wg.Add(1)
		go run(client(true), false)
	}
	for range fresh {
		l.wg.Add(1)
		go run(client(false), true)
	}
	return l
}

func (l *httpsLoad) finish() {
	close(l.stop)
	l.wg.Wait()
}

// TestCertSwapUnderLoad replaces the certificate of an https application
// under steady HTTPS load (keep-alive and new connections) through the
// load balancer loop, as an ACME renewal does: HAProxy takes the new one
// through its runtime API without a reload (same master, same worker);
// nginx reloads. No request fails, and every handshake that starts after
// the swap sees the new certificate.
func TestCertSwapUnderLoad(t *testing.T) {
	for kind := range certKinds {
		t.Run(certKinds[kind].name, func(t *testing.T) {
			name, listen := certKinds[kind].name, certKinds[kind].listen
			ca := NewCA(t)
			dirA, dirB, live := t.TempDir(), t.TempDir(), t.TempDir()
			crtA, keyA := ca.Issue(t, dirA, "app.test")
			crtB, keyB := ca.Issue(t, dirB, "app.test")
			serialA, serialB := serialOf(t, crtA), serialOf(t, crtB)
			crt, key := filepath.Join(live, "app.test.crt"), filepath.Join(live, "app.test.key")
			copyFile(t, crtA, crt, 0o644)
			copyFile(t, keyA, key, 0o600)

			backend := StartBackend(t, "app", fmt.Sprintf("127.0.22.1%02d", kind))
			port := FreePort(t, listen)
			src := &fileCerts{certs: []generator.TLSCert{{Domains: []string{"app.test"}, Cert: crt, Key: key}}, changes: make(chan struct{}, 1)}
			p := startProxy(t, kind)
			l, outcomes := runLoop(t, kind, p, []catalog.Node{backend.Node(hapApp("app", catalog.ProtocolHTTPS, port, "app.test"))}, src)

			dial := net.JoinHostPort(listen, strconv.Itoa(port))
			url := fmt.Sprintf("https://app.test:%d/", port)
			probe := HTTPClient(dial, ca.Pool)
			if err := Eventually(certWait, func() error {
				_, body, resp, err := Get(probe, url)
				switch {
				case err != nil:
					return err
				case body != "app":
					return fmt.Errorf("answered by %q", body)
				case resp.TLS.PeerCertificates[0].SerialNumber.Cmp(serialA) != 0:
					return fmt.Errorf("not certificate A")
				}
				return nil
			}); err != nil {
				t.Fatalf("https before the swap: %v", err)
			}
			reloadsBefore := p.Reloads()
			var master string
			var workers []string
			if name == "haproxy" {
				master, workers = hapProcs(t, filepath.Join(p.Dir(), "master.sock"))
			}

			load := startHTTPSLoad(ca, dial, url, 4, 2)
			time.Sleep(500 * time.Millisecond) // load before the swap
			before := load.ok.Load()
			copyFile(t, crtB, crt, 0o644)
			copyFile(t, keyB, key, 0o600)
			swapStart := time.Now()
			src.replaced()
			if err := Eventually(certWait, func() error {
				if s := l.Stats(); s.CertUpdates+s.CertReloads == 0 {
					return fmt.Errorf("not made live yet: %+v", s)
				}
				return nil
			}); err != nil {
				load.finish()
				t.Fatal(err)
			}
			swapped := time.Now()
			time.Sleep(time.Second) // load after the swap
			load.finish()

			var sawA, sawB, lateA int
			for _, h := range load.handshakes {
				switch {
				case h.serial.Cmp(serialB) == 0:
					sawB++
				case h.serial.Cmp(serialA) == 0:
					sawA++
					if h.at.After(swapped) {
						lateA++
					}
				}
			}
			s := l.Stats()
			t.Logf("%s: %d requests (%d before the swap), %d failed; new handshakes: %d with A, %d with B; swap took %s; reloads %d -> %d; stats: cert updates %d, cert reloads %d, update failures %d",
				name, load.ok.Load()+load.failed.Load(), before, load.failed.Load(), sawA, sawB, swapped.Sub(swapStart).Round(time.Millisecond),
				reloadsBefore, p.Reloads(), s.CertUpdates, s.CertReloads, s.CertUpdateFailures)
			if n := load.failed.Load(); n > 0 {
				t.Errorf("%d requests failed during the swap, e.g. %q", n, load.errs)
			}
			if sawB == 0 || lateA > 0 {
				t.Errorf("%d handshakes after the swap still saw certificate A; %d saw B", lateA, sawB)
			}
			last := outcomes()[len(outcomes())-1]
			switch name {
			case "haproxy":
				if last.Result != lb.ResultCertsUpdated || s.CertUpdates != 1 || s.CertReloads != 0 {
					t.Errorf("last outcome %s, stats %+v: want the certificate updated without a reload", last.Result, s)
				}
				if got := p.Reloads(); got != reloadsBefore {
					t.Errorf("haproxy reloaded %d times during the swap", got-reloadsBefore)
				}
				m, w := hapProcs(t, filepath.Join(p.Dir(), "master.sock"))
				if m != master || !slices.Equal(w, workers) {
					t.Errorf("haproxy master %s workers %v after the swap, want %s %v", m, w, master, workers)
				}
			case "nginx":
				if last.Result != lb.ResultCertsReloaded || s.CertReloads != 1 {
					t.Errorf("last outcome %s, stats %+v: want one reload", last.Result, s)
				}
				if got := p.Reloads() - reloadsBefore; got != 1 {
					t.Errorf("nginx reloaded %d times, want 1", got)
				}
			}
		})
	}
}

// challengeHandler stands in for scrimp's own HTTP-01 challenge handler
// on loopback: it answers a token's key authorization, for the
// challenge domains only, as certmagic's handler does.
func challengeHandler(t *testing.T, ip string, domains ...string) *net.TCPAddr {
	t.Helper()
	ln := listen(t, ip)
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		token, ok := strings.CutPrefix(r.URL.Path, generator.ACMEChallengePrefix)
		if !ok || !slices.Contains(domains, host) {
			http.Error(w, "not a challenge", http.StatusTeapot)
			return
		}
		fmt.Fprintf(w, "keyauth %s %s\n", host, token)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr)
}

// TestChallengeRoute serves the ACME challenge path on the plain-HTTP
// port through real nginx and HAProxy: for a domain only an https
// application has (redirected, or not), and for one a backend's plain
// http application serves, whose other paths stay its own.
func TestChallengeRoute(t *testing.T) {
	for kind := range certKinds {
		t.Run(certKinds[kind].name, func(t *testing.T) {
			name, listen := certKinds[kind].name, certKinds[kind].listen
			ca := NewCA(t)
			dir := t.TempDir()
			appCrt, appKey := ca.Issue(t, dir, "app.test")
			shopCrt, shopKey := ca.Issue(t, dir, "shop.test")
			handler := challengeHandler(t, fmt.Sprintf("127.0.22.12%d", kind), "app.test", "shop.test", "www.test")
			backend := StartBackend(t, "site", fmt.Sprintf("127.0.22.13%d", kind))
			secure := StartBackend(t, "secure", fmt.Sprintf("127.0.22.14%d", kind))
			httpPort, httpsPort := FreePort(t, listen), FreePort(t, listen)

			app := hapApp("app", catalog.ProtocolHTTPS, httpsPort, "app.test")
			app.RedirectHTTP = true
			site := hapApp("site", catalog.ProtocolHTTP, httpPort, "www.test")
			// A backend trying to take the challenge path of its domain.
			site.Paths = []string{"/", generator.ACMEChallengePrefix}
			gen, err := generator.New(name, nil)
			if err != nil {
				t.Fatal(err)
			}
			p := startProxy(t, kind)
			out, err := gen.Render(generator.Input{
				Snapshot: catalog.NewSnapshot([]catalog.Node{
					secure.Node(app, hapApp("shop", catalog.ProtocolHTTPS, httpsPort, "shop.test")),
					backend.Node(site),
				}),
				ListenAddr: listen, Standalone: true, StateDir: p.Dir(),
				TLS: []generator.TLSCert{
					{Domains: []string{"app.test"}, Cert: appCrt, Key: appKey},
					{Domains: []string{"shop.test"}, Cert: shopCrt, Key: shopKey},
				},
				ACME: &generator.ACMERoute{Handler: handler.AddrPort(), Port: uint16(httpPort), Domains: []string{"app.test", "shop.test", "www.test"}},
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("warnings: %q", out.Warnings)
			ctx, cancel := context.WithTimeout(context.Background(), certWait)
			defer cancel()
			if err := p.Apply(ctx, out.Config); err != nil {
				t.Fatalf("apply: %v\n%s", err, out.Config)
			}

			client := HTTPClient(net.JoinHostPort(listen, strconv.Itoa(httpPort)), nil)
			client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
			base := fmt.Sprintf("http://%s/", net.JoinHostPort(listen, strconv.Itoa(httpPort)))
			token := "tok-EN_123"
			tests := []struct {
				name     string
				host     string
				path     string
				status   int
				body     string
				location string
			}{
				{name: "challenge of a redirected domain", host: "app.test", path: ".well-known/acme-challenge/" + token, status: 200, body: "keyauth app.test " + token},
				{name: "challenge with the port in Host", host: fmt.Sprintf("app.test:%d", httpPort), path: ".well-known/acme-challenge/" + token, status: 200, body: "keyauth app.test " + token},
				{name: "challenge of a domain without redirect", host: "shop.test", path: ".well-known/acme-challenge/" + token, status: 200, body: "keyauth shop.test " + token},
				{name: "challenge of a backend's domain", host: "www.test", path: ".well-known/acme-challenge/" + token, status: 200, body: "keyauth www.test " + token},
				{name: "other path redirected", host: "app.test", path: "some/where?q=1", status: 308, location: fmt.Sprintf("https://app.test:%d/some/where?q=1", httpsPort)},
				{name: "other path not redirected", host: "shop.test", path: "some/where", status: 404},
				{name: "backend keeps its other paths", host: "www.test", path: "some/where", status: 200, body: "site"},
				{name: "no challenge route for another domain", host: "other.test", path: ".well-known/acme-challenge/" + token, status: 404},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					var status int
					var body string
					var resp *http.Response
					// The first requests may race the proxy's start.
					err := Eventually(certWait, func() error {
						var err error
						status, body, resp, err = Get(client, base+tt.path, "Host", tt.host)
						return err
					})
					if err != nil {
						t.Fatal(err)
					}
					if status != tt.status || tt.body != "" && body != tt.body {
						t.Errorf("got %d %q, want %d %q", status, body, tt.status, tt.body)
					}
					if got := resp.Header.Get("Location"); got != tt.location {
						t.Errorf("Location %q, want %q", got, tt.location)
					}
				})
			}
		})
	}
}

// certSourceIsCertSource keeps fileCerts in step with the interface.
var _ lb.CertSource = (*fileCerts)(nil)
