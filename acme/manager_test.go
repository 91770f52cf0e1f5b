package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/scrimplb/scrimp/internal/loopback"
	"github.com/scrimplb/scrimp/internal/pebbletest"
	"github.com/scrimplb/scrimp/internal/s3test"
)

// testLogger writes to the test log.
func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// freePort returns a free port on 127.0.0.1 (loopback.FreePort).
func freePort(t *testing.T) int {
	t.Helper()
	port, err := loopback.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// rootsOf reads a PEM file into a pool.
func rootsOf(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		t.Fatalf("%s: no certificate", file)
	}
	return pool
}

type harness struct {
	m      *Manager
	pebble *pebbletest.Server
	dir    string
	cancel context.CancelFunc
	done   chan error
}

// startManager runs a manager whose challenge handler listens on the
// port Pebble validates on (no proxy in between).
func startManager(t *testing.T, pebble *pebbletest.Server, port int, storage certmagic.Storage, mod func(*Options)) *harness {
	t.Helper()
	dir := t.TempDir()
	o := Options{
		Email:         "ops@app.test",
		Directory:     pebble.Directory,
		CARoots:       rootsOf(t, pebble.CARootFile),
		AllowList:     []string{"app.test", "*.apps.test"},
		HTTPPort:      uint16(port),
		ChallengeAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Dir:           dir,
		Storage:       storage,
		Logger:        testLogger(t),
	}
	if mod != nil {
		mod(&o)
	}
	m, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{m: m, pebble: pebble, dir: dir, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- m.Run(ctx) }()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	h.cancel()
	<-h.done
	h.m.Close()
	h.done <- nil // later stops return at once
}

// waitFor polls cond until it returns "" or the deadline passes.
func waitFor(t *testing.T, within time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", within, msg)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// leafOf parses the first certificate of a PEM file.
func leafOf(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	c := firstCert(data)
	if c == nil {
		t.Fatalf("%s: no certificate", file)
	}
	return c
}

// verifyServes serves the files over TLS on loopback and checks that a
// client trusting only Pebble's root verifies them for name.
func verifyServes(t *testing.T, roots *x509.CertPool, crt, key, name string) {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	go srv.Serve(ln)
	defer srv.Close()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: name}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatalf("verified TLS to %s: %v", name, err)
	}
	resp.Body.Close()
}

func TestObtain(t *testing.T) {
	port := freePort(t)
	pebble := pebbletest.Start(t, pebbletest.Options{HTTPPort: port})
	h := startManager(t, pebble, port, &certmagic.FileStorage{Path: t.TempDir()}, nil)
	crt, key := filepath.Join(h.dir, "app.test.crt"), filepath.Join(h.dir, "app.test.key")

	start := time.Now()
	h.m.SetDomains([]string{"app.test", "evil.example", "*.apps.test"})
	// The placeholder is there at once, before any order.
	if leaf := leafOf(t, crt); !isPlaceholder(leaf) {
		t.Fatalf("first certificate: %v, want the placeholder", leaf.Subject)
	}
	certs, route := h.m.Certs()
	if len(certs) != 1 || certs[0].Cert != crt || certs[0].Key != key || route == nil || route.Port != uint16(port) ||
		len(route.Domains) != 1 || route.Domains[0] != "app.test" {
		t.Fatalf("Certs() = %+v, %+v", certs, route)
	}
	select {
	case <-h.m.Changes():
	default:
		t.Fatal("no change signalled for the placeholder")
	}

	waitFor(t, 60*time.Second, func() string {
		if leaf := leafOf(t, crt); isPlaceholder(leaf) {
			return "still the placeholder; status " + statusString(h.m)
		}
		return ""
	})
	t.Logf("certificate for app.test issued and written %s after SetDomains", time.Since(start).Round(time.Millisecond))
	select {
	case <-h.m.Changes():
	case <-time.After(10 * time.Second):
		t.Fatal("no change signalled for the issued certificate")
	}
	fi, err := os.Stat(key)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v, want 0600", fi.Mode().Perm())
	}
	roots, _ := pebble.Roots(t)
	verifyServes(t, roots, crt, key, "app.test")
	st := h.m.Status()
	if len(st) != 1 || st[0].State != StateValid || st[0].NotAfter.IsZero() {
		t.Errorf("Status() = %+v", st)
	}
	if n := pebble.Orders(); n != 1 {
		t.Errorf("Pebble accepted %d orders, want 1 (only the allowed name)", n)
	}
	if _, err := os.Stat(filepath.Join(h.dir, "evil.example.crt")); err == nil {
		t.Error("a file was written for a name outside the allow-list")
	}
}

func statusString(m *Manager) string {
	var b strings.Builder
	for _, s := range m.Status() {
		b.WriteString(s.Domain + "=" + string(s.State) + " " + s.LastError + "; ")
	}
	return b.String()
}

func TestSharedStorage(t *testing.T) {
	endpoint := s3test.Start(t)
	objs := newObjects(t, endpoint, "shared/")
	port := freePort(t)
	pebble := pebbletest.Start(t, pebbletest.Options{HTTPPort: port})
	// A's handler is where Pebble validates; B's is elsewhere, so any
	// order B places is answered by A from the shared storage.
	sa, sb := NewS3Storage(objs, 0, testLogger(t)), NewS3Storage(objs, 0, testLogger(t))
	t.Cleanup(sa.Close)
	t.Cleanup(sb.Close)
	a := startManager(t, pebble, port, sa, nil)
	b := startManager(t, pebble, port, sb, func(o *Options) { o.ChallengeAddr = "127.0.0.1:0" })

	t.Run("token-from-another-lb", func(t *testing.T) {
		// A challenge that B's order stored is answered by A.
		chal := map[string]any{
			"type": "http-01", "url": "https://ca.invalid/chal/1", "status": "pending", "token": "tok-by-b",
			"keyAuthorization": "tok-by-b.thumbprint", "identifier": map[string]string{"type": "dns", "value": "other.apps.test"},
		}
		data, _ := json.Marshal(chal)
		key := path.Join(path.Join("acme", certmagic.StorageKeys.Safe(b.m.issuer.IssuerKey())), "challenge_tokens",
			certmagic.StorageKeys.Safe("other.apps.test")+".json")
		if err := sb.Store(context.Background(), key, data); err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodGet, "http://"+a.m.Handler().String()+"/.well-known/acme-challenge/tok-by-b", nil)
		req.Host = "other.apps.test"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "tok-by-b.thumbprint" {
			t.Fatalf("A answered %s %q, want B's key authorization", resp.Status, body)
		}
		sb.Delete(context.Background(), key)
	})

	t.Run("one-order", func(t *testing.T) {
		start := time.Now()
		a.m.SetDomains([]string{"app.test"})
		b.m.SetDomains([]string{"app.test"})
		for _, h := range []*harness{a, b} {
			waitFor(t, 90*time.Second, func() string {
				if leaf := leafOf(t, filepath.Join(h.dir, "app.test.crt")); isPlaceholder(leaf) {
					return "still the placeholder; status " + statusString(h.m)
				}
				return ""
			})
		}
		t.Logf("both load balancers serve a certificate %s after SetDomains", time.Since(start).Round(time.Millisecond))
		la, lb := leafOf(t, filepath.Join(a.dir, "app.test.crt")), leafOf(t, filepath.Join(b.dir, "app.test.crt"))
		if la.SerialNumber.Cmp(lb.SerialNumber) != 0 {
			t.Errorf("serials differ: %x and %x", la.SerialNumber, lb.SerialNumber)
		}
		if n := pebble.Orders(); n != 1 {
			t.Errorf("Pebble accepted %d orders, want 1", n)
		}
		roots, _ := pebble.Roots(t)
		verifyServes(t, roots, filepath.Join(b.dir, "app.test.crt"), filepath.Join(b.dir, "app.test.key"), "app.test")
	})
}

func TestRenewal(t *testing.T) {
	port := freePort(t)
	pebble := pebbletest.Start(t, pebbletest.Options{HTTPPort: port, Validity: 16 * time.Second})
	h := startManager(t, pebble, port, &certmagic.FileStorage{Path: t.TempDir()}, func(o *Options) {
		o.RenewCheckInterval = time.Second
		o.RenewalWindowRatio = 0.5
	})
	crt := filepath.Join(h.dir, "app.test.crt")
	h.m.SetDomains([]string{"app.test"})
	var first *x509.Certificate
	waitFor(t, 60*time.Second, func() string {
		if first = leafOf(t, crt); isPlaceholder(first) {
			return "still the placeholder; status " + statusString(h.m)
		}
		return ""
	})
	drain(h.m.Changes())
	issued := time.Now()
	var second *x509.Certificate
	waitFor(t, 60*time.Second, func() string {
		if second = leafOf(t, crt); second.SerialNumber.Cmp(first.SerialNumber) == 0 {
			return "not renewed; status " + statusString(h.m)
		}
		return ""
	})
	t.Logf("renewed %s after issuance (lifetime %s): not after %s → %s", time.Since(issued).Round(time.Millisecond),
		first.NotAfter.Sub(first.NotBefore), first.NotAfter.Format(time.TimeOnly), second.NotAfter.Format(time.TimeOnly))
	select {
	case <-h.m.Changes():
	case <-time.After(5 * time.Second):
		t.Fatal("no change signalled for the renewal")
	}

	// The CA goes away: renewals fail, the current certificate stays.
	pebble.Stop()
	waitFor(t, 60*time.Second, func() string {
		if st := h.m.Status(); len(st) != 1 || st[0].State != StateFailed || h.m.Failures() == 0 {
			return "no failure reported; status " + statusString(h.m)
		}
		return ""
	})
	if cur := leafOf(t, crt); cur.SerialNumber.Cmp(second.SerialNumber) != 0 {
		t.Errorf("after a failed renewal the file holds %x, want the current %x", cur.SerialNumber, second.SerialNumber)
	}
	t.Logf("failed renewal reported: %s", statusString(h.m))
}

func drain(c <-chan struct{}) {
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}

// TestChallengeHandlerAnswersOnlyItsOwn checks that the handler reflects
// nothing a request brings: unknown probes and tokens get 404.
func TestChallengeHandlerAnswersOnlyItsOwn(t *testing.T) {
	m, err := New(Options{Directory: "https://ca.invalid/dir", AllowList: []string{"app.test"}, Dir: t.TempDir(),
		Storage: &certmagic.FileStorage{Path: t.TempDir()}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, path := range []string{probePrefix + "<script>", probePrefix + "0123abcd", "/.well-known/acme-challenge/tok", "/"} {
		req, _ := http.NewRequest(http.MethodGet, "http://app.test"+path, nil)
		rec := httptest.NewRecorder()
		m.serveChallenge(rec, req)
		if rec.Code != http.StatusNotFound {
			t.Errorf("GET %s: %d %q, want 404", path, rec.Code, rec.Body)
		}
	}
}
