package generator

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/plugin"
)

// The example templates shipped for users; the tests render them, so an
// example that stops working fails here.
const (
	tmplCaddyExample = "../examples/templates/caddy.tmpl"
	tmplNginxExample = "../examples/templates/nginx.tmpl"
)

// tmplTLSDir is where the certificates of the template fixture live in
// golden files; checks with a real proxy render with a temporary directory
// holding real certificates and expect the same text with it in its place.
const tmplTLSDir = "/etc/scrimp/tls"

// tmplBackend and tmplApp build fixture values; they are separate from the
// nginx tests' helpers so that either file can change alone.
func tmplBackend(name, addr string, apps ...catalog.Application) catalog.Node {
	return catalog.Node{Name: name, Addr: netip.MustParseAddr(addr), Role: catalog.RoleBackend, Applications: apps}
}

func tmplApp(name string, proto catalog.Protocol, listen, port int, domains ...string) catalog.Application {
	return catalog.Application{Name: name, ListenPort: listen, ApplicationPort: port, Protocol: proto, Domains: domains}
}

// tmplWith returns a with f applied, for one-off fixture fields.
func tmplWith(a catalog.Application, f func(*catalog.Application)) catalog.Application {
	f(&a)
	return a
}

// tmplFixture is a cluster that reaches every branch of the example
// templates: every protocol and balance mode, paths, health paths, weights
// that differ between backends, an IPv6 backend, a shared port with and
// without a catch-all, https with and without a certificate, a protocol
// clash on a port, a conflicting backend, and retained applications.
func tmplFixture(tlsDir string) Input {
	web := tmplWith(tmplApp("web", catalog.ProtocolHTTP, 8080, 3000, "example.com", "www.example.com"), func(a *catalog.Application) {
		a.Balance, a.HealthPath, a.MaxFails, a.FailTimeout = catalog.BalanceLeastConn, "/healthz", 3, "10s"
	})
	api := tmplWith(tmplApp("api", catalog.ProtocolHTTP, 8080, 9000, "api.example.com"), func(a *catalog.Application) {
		a.Paths, a.Balance, a.HashKey = []string{"/v1/", "/v2"}, catalog.BalanceHash, "header:X-Account-Id"
	})
	heavy := func(a catalog.Application, w int) catalog.Application {
		return tmplWith(a, func(a *catalog.Application) { a.Weight = w })
	}
	site := tmplApp("site", catalog.ProtocolHTTP, 8081, 8000)
	shop := tmplWith(tmplApp("shop", catalog.ProtocolHTTPS, 8443, 8443, "shop.example.com", "*.shop.example.com"), func(a *catalog.Application) {
		a.Balance, a.HashKey = catalog.BalanceHash, "cookie:session_id"
	})
	admin := tmplApp("admin", catalog.ProtocolHTTPS, 8443, 8444, "admin.example.com") // no certificate
	rpc := tmplWith(tmplApp("rpc", catalog.ProtocolGRPC, 50051, 50051, "rpc.example.com"), func(a *catalog.Application) {
		a.Balance = catalog.BalanceRandom
	})
	search := tmplWith(tmplApp("search", catalog.ProtocolGRPC, 50052, 50052), func(a *catalog.Application) {
		a.Balance, a.HashKey = catalog.BalanceHash, "query:tenant"
	})
	stray := tmplApp("stray", catalog.ProtocolHTTPS, 8081, 8001, "stray.example.com") // https on an http port
	db := tmplWith(tmplApp("db", catalog.ProtocolTCP, 15432, 5432), func(a *catalog.Application) {
		a.Balance, a.HashKey = catalog.BalanceHash, "source-ip"
	})
	dns := tmplApp("dns", catalog.ProtocolUDP, 10053, 5353)
	return Input{
		Snapshot: catalog.NewSnapshot([]catalog.Node{
			tmplBackend("b1", "10.0.0.1", heavy(api, 3), db, dns, rpc, search, shop, heavy(site, 2), stray, web),
			tmplBackend("b2", "10.0.0.2", api, rpc, shop, site, web),
			tmplBackend("b3", "2001:db8::3", admin, web),
			tmplBackend("b4", "10.0.0.4", tmplApp("web", catalog.ProtocolTCP, 8080, 3000)), // conflicts
			{Name: "lb-1", Addr: netip.MustParseAddr("10.0.0.100"), Role: catalog.RoleLB},
		}),
		ListenAddr: "0.0.0.0",
		TLS: []TLSCert{
			{Domains: []string{"shop.example.com", "*.shop.example.com"}, Cert: filepath.Join(tlsDir, "shop.pem"), Key: filepath.Join(tlsDir, "shop.key")},
			{Domains: []string{"legacy.example.com"}, Cert: filepath.Join(tlsDir, "legacy.pem"), Key: filepath.Join(tlsDir, "legacy.key")},
		},
		Retained: []catalog.Application{
			tmplApp("old-web", catalog.ProtocolHTTP, 8080, 3000, "old.example.com"),
			tmplApp("legacy", catalog.ProtocolHTTPS, 8443, 8443, "legacy.example.com"),
			tmplApp("fallback", catalog.ProtocolHTTP, 8082, 8000),
			tmplApp("cache", catalog.ProtocolTCP, 16379, 6379),
		},
	}
}

var tmplFixtureWarnings = []string{"application web: backend b4 left out: advertises tcp on listen port 8080, but http on 8080 is in use"}

func newTmplGen(t testing.TB, path string) Generator {
	t.Helper()
	raw, err := json.Marshal(TemplateOptions{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	g, err := New("template", raw)
	if err != nil {
		t.Fatalf("New(template, %s): %v", raw, err)
	}
	return g
}

// tmplCheckGolden compares got with testdata/name, rewriting it under -update.
func tmplCheckGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	golden := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./generator -run TestTemplateGolden -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (run with -update to accept):\n%s", golden, got)
	}
}

// tmplProxyCheck checks a rendering with a real proxy; dir is a fresh
// temporary directory for its files.
type tmplProxyCheck func(t *testing.T, bin, dir string, config []byte)

// tmplGoldenCase is a template rendered over tmplFixture and compared with
// a golden file.
type tmplGoldenCase struct {
	name   string
	path   string
	golden string // file name in testdata
	proxy  string // binary to check the output with, if any
	check  tmplProxyCheck
}

var tmplGoldenCases = []tmplGoldenCase{
	{name: "caddy example", path: tmplCaddyExample, golden: "template-caddy.golden", proxy: "caddy", check: tmplCaddyAdapt},
	{name: "nginx example", path: tmplNginxExample, golden: "template-nginx.golden", proxy: "nginx", check: tmplNginxInclude},
	{name: "data model", path: "testdata/template-datamodel.tmpl", golden: "template-datamodel.golden"},
}

// TestTemplateGoldenFilesUsed keeps testdata free of template golden
// files no case writes any more.
func TestTemplateGoldenFilesUsed(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "template-*.golden"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !slices.ContainsFunc(tmplGoldenCases, func(c tmplGoldenCase) bool { return c.golden == filepath.Base(f) }) {
			t.Errorf("%s belongs to no golden case; delete it", f)
		}
	}
}

func TestTemplateGolden(t *testing.T) {
	for _, tt := range tmplGoldenCases {
		t.Run(tt.name, func(t *testing.T) {
			g := newTmplGen(t, tt.path)
			out, err := g.Render(tmplFixture(tmplTLSDir))
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			if !slices.Equal(out.Warnings, tmplFixtureWarnings) {
				t.Errorf("warnings:\n got %q\nwant %q", out.Warnings, tmplFixtureWarnings)
			}
			tmplCheckGolden(t, tt.golden, out.Config)
			if tt.check == nil {
				return
			}
			// Caddy is no test dependency: CI does not install it.
			bin := tmplLookProxy(t, tt.proxy, tt.proxy != "caddy")
			if bin == "" {
				t.Skipf("golden file matches; %s is not in PATH to check it", tt.proxy)
			}
			dir := t.TempDir()
			tlsDir := filepath.Join(dir, "tls")
			tmplWriteCerts(t, tlsDir, "shop", "legacy")
			real, err := g.Render(tmplFixture(tlsDir))
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			if got := strings.ReplaceAll(string(real.Config), tlsDir, tmplTLSDir); got != string(out.Config) {
				t.Errorf("output for TLS directory %s differs from the golden file beyond the directory:\n%s", tlsDir, real.Config)
			}
			tt.check(t, bin, dir, real.Config)
		})
	}
}

// tmplLookProxy returns the path of a proxy binary, or "" when it is not in
// PATH (nor in /usr/sbin, where Debian puts nginx and haproxy outside
// root's PATH). A required binary that is missing fails the test when CI
// is set: CI must check what is rendered.
func tmplLookProxy(t testing.TB, name string, required bool) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if p := filepath.Join("/usr/sbin", name); tmplFileExists(p) {
		return p
	}
	if required && os.Getenv("CI") != "" {
		t.Fatalf("%s is not in PATH, and CI is set: the rendered configuration must be checked by it", name)
	}
	return ""
}

func tmplFileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// tmplRunProxy runs a proxy's check and returns an error carrying its output.
func tmplRunProxy(bin string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return nil
}

// tmplNginxInclude checks an include file the way a system nginx uses
// it: included in the http block of a minimal main configuration.
func tmplNginxInclude(t *testing.T, nginx, dir string, fragment []byte) {
	t.Helper()
	if err := tmplNginxIncludeTest(nginx, dir, fragment); err != nil {
		t.Fatalf("nginx rejected the include: %v\n--- include:\n%s", err, fragment)
	}
}

func tmplNginxIncludeTest(nginx, dir string, fragment []byte) error {
	include := filepath.Join(dir, "scrimp.conf")
	var main bytes.Buffer
	fmt.Fprintf(&main, "pid %s;\nerror_log stderr;\nevents {}\nhttp {\n", filepath.Join(dir, "nginx.pid"))
	for _, tmp := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&main, "    %s_temp_path %s;\n", tmp, filepath.Join(dir, "tmp", tmp))
	}
	fmt.Fprintf(&main, "    include %s;\n}\n", include)
	conf := filepath.Join(dir, "nginx.conf")
	for _, err := range []error{
		os.MkdirAll(filepath.Join(dir, "tmp"), 0o755),
		os.WriteFile(include, fragment, 0o644),
		os.WriteFile(conf, main.Bytes(), 0o644),
	} {
		if err != nil {
			return err
		}
	}
	return tmplRunProxy(nginx, "-t", "-q", "-p", dir+"/", "-c", conf, "-e", "stderr")
}

// tmplCaddyAdapt has Caddy parse the Caddyfile and validate the JSON it
// becomes (modules, policies, matchers), without binding or loading
// certificates.
func tmplCaddyAdapt(t *testing.T, caddy, dir string, caddyfile []byte) {
	t.Helper()
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, caddyfile, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := tmplRunProxy(caddy, "adapt", "--config", file, "--adapter", "caddyfile", "--validate"); err != nil {
		t.Fatalf("caddy rejected the Caddyfile: %v\n--- Caddyfile:\n%s", err, caddyfile)
	}
}

// tmplWriteCerts writes a self-signed certificate and its key for each
// name into dir, as NAME.pem (both), NAME.crt and NAME.key: proxies load
// them when they check a configuration.
func tmplWriteCerts(t testing.TB, dir string, names ...string) {
	t.Helper()
	if err := tmplCerts(dir, names...); err != nil {
		t.Fatal(err)
	}
}

func tmplCerts(dir string, names ...string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "scrimp test"},
		DNSNames:     []string{"example.com", "*.example.com"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("marshal key: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	for _, name := range names {
		// NAME.pem holds both, for a certificate whose key is in the same
		// file (what HAProxy 2.6 reads best); NAME.crt and NAME.key
		// hold one each.
		for file, data := range map[string][]byte{
			name + ".pem": append(slices.Clone(certPEM), keyPEM...),
			name + ".crt": certPEM,
			name + ".key": keyPEM,
		} {
			if err := os.WriteFile(filepath.Join(dir, file), data, 0o600); err != nil {
				return err
			}
		}
	}
	return nil
}

// TestTemplateDeterministic renders the fixture repeatedly, from nodes and
// retained applications in different orders and concurrently: the bytes
// never change.
func TestTemplateDeterministic(t *testing.T) {
	for _, path := range []string{tmplCaddyExample, tmplNginxExample, "testdata/template-datamodel.tmpl"} {
		t.Run(filepath.Base(path), func(t *testing.T) {
			g := newTmplGen(t, path)
			in := tmplFixture(tmplTLSDir)
			want, err := g.Render(in)
			if err != nil {
				t.Fatal(err)
			}
			shuffled := in
			nodes := slices.Clone(in.Snapshot.Nodes)
			slices.Reverse(nodes)
			shuffled.Snapshot = catalog.NewSnapshot(nodes)
			shuffled.Retained = slices.Clone(in.Retained)
			slices.Reverse(shuffled.Retained)

			var wg sync.WaitGroup
			errs := make(chan string, 16)
			for i := range 8 {
				input := in
				if i%2 == 1 {
					input = shuffled
				}
				wg.Go(func() {
					for range 20 {
						out, err := g.Render(input)
						if err != nil || !bytes.Equal(out.Config, want.Config) || !slices.Equal(out.Warnings, want.Warnings) {
							errs <- fmt.Sprintf("render differs (err %v):\n%s", err, out.Config)
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for e := range errs {
				t.Error(e)
			}
		})
	}
}

// tmplWrite writes text to a template file in a new temporary
// directory and returns its path.
func tmplWrite(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "test.tmpl")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestTemplateReadOnce shows that the file is read when the generator is
// built and never again: Render does no I/O, so editing or deleting the
// file changes nothing until the next start.
func TestTemplateReadOnce(t *testing.T) {
	path := tmplWrite(t, "first {{ .ListenAddr }}\n")
	g := newTmplGen(t, path)
	if err := os.WriteFile(path, []byte("second\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := g.Render(Input{ListenAddr: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	again, err := g.Render(Input{ListenAddr: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if string(out.Config) != "first 127.0.0.1\n" || !bytes.Equal(again.Config, out.Config) {
		t.Errorf("renders %q and %q, want the text read when the generator was built", out.Config, again.Config)
	}
}

func TestNewTemplateOptions(t *testing.T) {
	good := tmplWrite(t, "ok\n")
	tests := []struct {
		name    string
		raw     string // %s is replaced by the path of a valid template
		wantErr string
	}{
		{name: "valid", raw: `{"path": %q}`},
		{name: "absent", raw: ``, wantErr: "path: required"},
		{name: "empty object", raw: `{}`, wantErr: "path: required"},
		{name: "empty path", raw: `{"path": ""}`, wantErr: "path: required"},
		{name: "null", raw: `null`, wantErr: "path: required"},
		{name: "unknown field", raw: `{"path": %q, "delims": ["<<", ">>"]}`, wantErr: `unknown field "delims"`},
		{name: "misspelt field", raw: `{"file": %q}`, wantErr: `unknown field "file"`},
		{name: "wrong type", raw: `{"path": 7}`, wantErr: "cannot unmarshal"},
		{name: "not an object", raw: `["x"]`, wantErr: "cannot unmarshal"},
		{name: "missing file", raw: `{"path": "/nonexistent/scrimp/caddy.tmpl"}`, wantErr: "open /nonexistent/scrimp/caddy.tmpl: no such file or directory"},
		{name: "directory", raw: fmt.Sprintf(`{"path": %q}`, t.TempDir()), wantErr: "is a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := tt.raw
			if strings.Contains(raw, "%q") {
				raw = fmt.Sprintf(raw, good)
			}
			g, err := New("template", json.RawMessage(raw))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if out, err := g.Render(Input{ListenAddr: "::"}); err != nil || string(out.Config) != "ok\n" {
					t.Errorf("Render = %q, %v", out.Config, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), "lb.generator-options (template)") {
				t.Errorf("error %q does not name the generator's options", err)
			}
		})
	}
}

func TestTemplateUnreadableFile(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads files whatever their mode")
	}
	path := tmplWrite(t, "secret\n")
	if err := os.Chmod(path, 0); err != nil {
		t.Fatal(err)
	}
	_, err := New("template", json.RawMessage(fmt.Sprintf(`{"path": %q}`, path)))
	if err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("error %v, want permission denied", err)
	}
}

// TestTemplateParseErrors: a template that does not parse stops the
// generator from being built (so `scrimp validate` and startup fail), and
// the error names the file and line.
func TestTemplateParseErrors(t *testing.T) {
	tests := []struct {
		name     string
		text     string
		wantLine int
		wantErr  string
	}{
		{name: "unclosed action", text: "a\nb\n{{ .ListenAddr\n", wantLine: 4, wantErr: "unclosed action started at"},
		{name: "unknown function", text: "ok\n{{ env \"HOME\" }}\n", wantLine: 2, wantErr: `function "env" not defined`},
		{name: "no file functions", text: "{{ readFile \"/etc/passwd\" }}", wantLine: 1, wantErr: `function "readFile" not defined`},
		{name: "missing end", text: "{{ range .Services }}\n{{ .Name }}\n", wantLine: 3, wantErr: "unexpected EOF"},
		{name: "stray end", text: "x\n\n\n{{ end }}", wantLine: 4, wantErr: "unexpected {{end}}"},
		{name: "bad pipeline", text: "\n\n{{ .Services | 3 }}", wantLine: 3, wantErr: "non executable command in pipeline"},
		{name: "undefined variable", text: "\n{{ $x }}", wantLine: 2, wantErr: "undefined variable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tmplWrite(t, tt.text)
			_, err := New("template", json.RawMessage(fmt.Sprintf(`{"path": %q}`, path)))
			if err == nil {
				t.Fatal("New accepted a template that does not parse")
			}
			if want := fmt.Sprintf("%s:%d:", path, tt.wantLine); !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not name %s", err, want)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestTemplateRenderErrors: errors that only execution finds come from
// Render, name the file, line and column, and carry no configuration, so
// the load balancer keeps the running one. Most depend on the data: the
// same template renders an empty cluster fine.
func TestTemplateRenderErrors(t *testing.T) {
	fixture := tmplFixture(tmplTLSDir)
	tests := []struct {
		name      string
		text      string
		in        Input
		wantPlace string // line:col
		wantErr   string
		failEmpty bool // the template fails on an empty cluster too
	}{
		{
			name: "missing field", text: "{{ .ListenAddr }}\n{{ .Listen }}", in: fixture, failEmpty: true,
			wantPlace: "2:3", wantErr: `can't evaluate field Listen in type generator.TemplateData`,
		},
		{
			name: "missing field of a service", text: "{{ range .Services }}{{ .Upstream }}{{ end }}", in: fixture,
			wantPlace: "1:24", wantErr: "can't evaluate field Upstream in type generator.TemplateService",
		},
		{
			name: "index out of range", text: "{{ range .Services }}\n  {{ index .Domains 1 }}\n{{ end }}", in: fixture,
			wantPlace: "2:5", wantErr: "error calling index: reflect: slice index out of range",
		},
		{
			name: "no certificate", text: `{{ range .Services }}{{ (certFor $.TLS "nowhere.example").Cert }}{{ end }}`, in: fixture,
			wantPlace: "1:", wantErr: "nil pointer evaluating *generator.TLSCert.Cert",
		},
		{
			name: "wrong argument type", text: "{{ range .Services }}{{ join \", \" .Name }}{{ end }}", in: fixture,
			wantPlace: "1:", wantErr: "wrong type for value; expected []string; got string",
		},
		{
			name: "bad listen address", text: "{{ .ListenAddr }}", in: Input{ListenAddr: "localhost"}, failEmpty: true,
			wantErr: `listen address "localhost"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tmplWrite(t, tt.text)
			g := newTmplGen(t, path)
			if !tt.failEmpty {
				if _, err := g.Render(Input{ListenAddr: "0.0.0.0"}); err != nil {
					t.Fatalf("an empty cluster does not render: %v", err)
				}
			}
			out, err := g.Render(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
			if tt.wantPlace != "" && !strings.Contains(err.Error(), path+":"+tt.wantPlace) {
				t.Errorf("error %q does not name %s:%s", err, path, tt.wantPlace)
			}
			if out.Config != nil || out.Warnings != nil {
				t.Errorf("an error came with output %+v", out)
			}
		})
	}
}

// TestTemplateMissingKey: with missingkey=error a key missing from a map
// fails the render instead of printing "<no value>". The data model has no
// maps today; this keeps the option from being dropped unnoticed before one
// is added.
func TestTemplateMissingKey(t *testing.T) {
	g := newTmplGen(t, tmplWrite(t, `{{ .missing }}`))
	tg := g.(*templateGenerator)
	var b bytes.Buffer
	err := tg.t.Execute(&b, map[string]string{"present": "x"})
	if err == nil || !strings.Contains(err.Error(), `map has no entry for key "missing"`) {
		t.Fatalf("error %v, want the missing key reported (output %q)", err, b.String())
	}
}

func TestTemplateFuncs(t *testing.T) {
	tests := []struct {
		name string
		text string
		want string
	}{
		{name: "join", text: `{{ join ", " (list "a" "b" "c") }}`, want: "a, b, c"},
		{name: "uniq", text: `{{ join " " (uniq (list "/a" "/b" "/a" "/b" "/c")) }}`, want: "/a /b /c"},
		{name: "join empty", text: `[{{ join " " (list) }}]`, want: "[]"},
		{name: "hostport v4", text: `{{ range .Services }}{{ if eq .Name "api" }}{{ range .Servers }}{{ hostport . }} {{ end }}{{ end }}{{ end }}`, want: "10.0.0.1:9000 10.0.0.2:9000 "},
		{name: "hostport v6", text: `{{ range .Services }}{{ range .Servers }}{{ if .Addr.Is6 }}{{ hostport . }} {{ end }}{{ end }}{{ end }}`, want: "[2001:db8::3]:8444 [2001:db8::3]:3000 "},
		{name: "upstream", text: `{{ upstream "old-web" }} {{ upstream "a_b" }}`, want: "scrimp_old-web scrimp_a_b"},
		{name: "lower upper", text: `{{ lower "X-Account-Id" }} {{ upper "abc" }}`, want: "x-account-id ABC"},
		{name: "replace pipes", text: `{{ "X-Account-Id" | lower | replace "-" "_" }}`, want: "x_account_id"},
		{name: "prefixes and suffixes", text: `{{ hasPrefix "*." "*.a.io" }} {{ trimPrefix "*." "*.a.io" }} {{ hasSuffix "/" "/v1/" }} {{ trimSuffix "/" "/v1/" }}`, want: "true a.io true /v1"},
		{name: "hash key header", text: `{{ hashKind "header:X-Id" }} {{ hashName "header:X-Id" }}`, want: "header X-Id"},
		{name: "hash key source-ip", text: `{{ hashKind "source-ip" }}[{{ hashName "source-ip" }}]`, want: "source-ip[]"},
		{name: "certFor exact", text: `{{ with certFor .TLS "legacy.example.com" }}{{ .Cert }} {{ .Key }}{{ end }}`, want: "/etc/scrimp/tls/legacy.pem /etc/scrimp/tls/legacy.key"},
		{name: "certFor wildcard", text: `{{ (certFor .TLS "a.shop.example.com").Cert }}`, want: "/etc/scrimp/tls/shop.pem"},
		{name: "certFor none", text: `[{{ with certFor .TLS "example.org" }}{{ .Cert }}{{ end }}]`, want: "[]"},
		{name: "default on empty", text: `{{ "" | default "2s" }} {{ 0 | default 1 }} {{ (list) | default (list "/") }}`, want: "2s 1 [/]"},
		{name: "default on set", text: `{{ "10s" | default "2s" }} {{ 3 | default 1 }}`, want: "10s 3"},
		{name: "default on a field", text: `{{ range .Retained }}{{ .FailTimeout | default "2s" }}{{ .Balance | default "round-robin" }} {{ end }}`, want: "2sround-robin 2sround-robin 2sround-robin 2sround-robin "},
		{name: "protocol method", text: `{{ range .Services }}{{ if not .Protocol.IsHTTP }}{{ .Name }} {{ end }}{{ end }}`, want: "db dns "},
	}
	in := tmplFixture(tmplTLSDir)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newTmplGen(t, tmplWrite(t, tt.text))
			out, err := g.Render(in)
			if err != nil {
				t.Fatal(err)
			}
			if string(out.Config) != tt.want {
				t.Errorf("got %q, want %q", out.Config, tt.want)
			}
		})
	}
}

// TestTemplateData checks the model's structure directly: what goes where
// and in which order.
func TestTemplateData(t *testing.T) {
	d, warnings, err := templateData(tmplFixture(tmplTLSDir))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(warnings, tmplFixtureWarnings) {
		t.Errorf("warnings %q", warnings)
	}
	names := func(ss []TemplateService) []string {
		var out []string
		for _, s := range ss {
			out = append(out, s.Name)
		}
		return out
	}
	if got, want := names(d.Services), []string{"admin", "api", "db", "dns", "rpc", "search", "shop", "site", "stray", "web"}; !slices.Equal(got, want) {
		t.Errorf("services %v, want %v", got, want)
	}
	if got, want := names(d.Retained), []string{"cache", "fallback", "legacy", "old-web"}; !slices.Equal(got, want) {
		t.Errorf("retained %v, want %v", got, want)
	}
	var ports []string
	for _, p := range d.Ports {
		ports = append(ports, fmt.Sprintf("%s=%v+%v", p.Listen, names(p.Services), names(p.Retained)))
	}
	want := []string{
		"0.0.0.0:8080=[api web]+[old-web]",
		"0.0.0.0:8081=[site stray]+[]",
		"0.0.0.0:8082=[]+[fallback]",
		"0.0.0.0:8443=[admin shop]+[legacy]",
		"0.0.0.0:10053=[dns]+[]",
		"0.0.0.0:15432=[db]+[]",
		"0.0.0.0:16379=[]+[cache]",
		"0.0.0.0:50051=[rpc]+[]",
		"0.0.0.0:50052=[search]+[]",
	}
	if !slices.Equal(ports, want) {
		t.Errorf("ports:\n got %q\nwant %q", ports, want)
	}
	for _, s := range d.Retained {
		if s.Servers != nil {
			t.Errorf("retained %s has servers %v", s.Name, s.Servers)
		}
	}
	if len(d.Nodes) != 5 || d.Nodes[4].Name != "lb-1" {
		t.Errorf("nodes %v, want all five members by name", d.Nodes)
	}

	v6, _, err := templateData(Input{ListenAddr: "::", Retained: []catalog.Application{tmplApp("x", catalog.ProtocolHTTP, 80, 80)}})
	if err != nil {
		t.Fatal(err)
	}
	if v6.Retained[0].Listen != "[::]:80" || v6.Ports[0].Listen != "[::]:80" {
		t.Errorf("IPv6 listen %q, %q, want [::]:80", v6.Retained[0].Listen, v6.Ports[0].Listen)
	}
}

// TestTemplateDocsConfig checks the complete example configuration in
// docs/templates.md: it must pass the configuration checks, and its
// generator options must build the template generator once the path points
// at the shipped example.
func TestTemplateDocsConfig(t *testing.T) {
	doc, err := os.ReadFile("../docs/templates.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```json\n(.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/templates.md has no ```json block")
	}
	cfg, problems := config.Parse("docs/templates.md", m[1])
	if len(problems) > 0 {
		t.Fatalf("the example configuration has problems:\n%v", problems)
	}
	if cfg.LB == nil || cfg.LB.Generator != "template" || cfg.LB.Mode != "external" {
		t.Fatalf("the example is not an external-mode template load balancer: %+v", cfg.LB)
	}
	// The documented path is on a load balancer, not here: build the
	// generator from the shipped example of the same name instead.
	var o TemplateOptions
	if err := plugin.DecodeOptions(cfg.LB.GeneratorOptions, &o); err != nil || o.Path == "" {
		t.Fatalf("generator-options %s: %v", cfg.LB.GeneratorOptions, err)
	}
	newTmplGen(t, filepath.Join("../examples/templates", filepath.Base(o.Path)))
}
