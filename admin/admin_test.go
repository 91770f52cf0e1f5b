package admin

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/cluster"
	"github.com/scrimplb/scrimp/internal/proctest"
	"github.com/scrimplb/scrimp/keyring"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// logBuf collects log output, to check that no key reaches it.
type logBuf = proctest.Buffer

// member starts a real one-node cluster on loopback, with keys (nil:
// plaintext gossip).
func member(t *testing.T, ip string, keys [][]byte) *cluster.Cluster {
	t.Helper()
	c, err := cluster.New(cluster.Config{NodeName: "lb-" + ip, BindAddr: ip, Profile: "local",
		Role: catalog.RoleLB, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Kill() })
	return c
}

// serve starts a Server on a fresh socket and runs it until the test ends.
func serve(t *testing.T, keys KeyManager, logs io.Writer) *Server {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "run", "admin.sock")
	s, err := New(Config{Socket: sock, Keys: keys, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return s
}

// call sends a raw request to the socket and decodes the JSON answer.
func call(t *testing.T, s *Server, method, path, body string) (int, map[string]any, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://x"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	res, err := NewClient(s.Socket()).hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q, body %s", method, path, ct, raw)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s %s: not JSON: %s", method, path, raw)
	}
	return res.StatusCode, m, string(raw)
}

func TestSocketIsPrivate(t *testing.T) {
	s := serve(t, nil, io.Discard)
	fi, err := os.Lstat(s.Socket())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %s, want a socket with 0600", fi.Mode())
	}
	di, err := os.Stat(filepath.Dir(s.Socket()))
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Fatalf("the directory scrimp made has mode %s, want 0700", di.Mode())
	}
	entries, _ := os.ReadDir(filepath.Dir(s.Socket()))
	if len(entries) != 1 {
		t.Fatalf("the directory holds %d entries, want the socket only", len(entries))
	}
}

// The rotation through the HTTP interface on a real (one-node) cluster,
// and every way a request can be wrong. Keys never appear in answers or
// logs.
func TestKeysEndpoints(t *testing.T) {
	old, next := keyring.Generate(), keyring.Generate()
	logs := &logBuf{}
	s := serve(t, member(t, "127.0.0.141", [][]byte{old}), logs)
	body := func(k []byte) string { return `{"key": "` + base64.StdEncoding.EncodeToString(k) + `"}` }
	var answers strings.Builder

	cases := []struct {
		name, method, path, body string
		status                   int
		want                     string // in the answer
	}{
		{"list", "GET", "/v1/keys", "", 200, keyring.Fingerprint(old)},
		{"install", "POST", "/v1/keys/install", body(next), 200, keyring.Fingerprint(next)},
		{"use", "POST", "/v1/keys/use", body(next), 200, `"primaries": {` + "\n" + `    "` + keyring.Fingerprint(next) + `": 1`},
		{"remove the primary", "POST", "/v1/keys/remove", body(next), 409, "removing the primary key is not allowed"},
		{"remove", "POST", "/v1/keys/remove", body(old), 200, `"responded": 1`},
		{"use a key not installed", "POST", "/v1/keys/use", body(old), 409, "not in the keyring"},
		{"short key", "POST", "/v1/keys/install", body([]byte("0123456789")), 400, "10 bytes"},
		{"not base64", "POST", "/v1/keys/install", `{"key": "!!!"}`, 400, "not valid standard base64"},
		{"no key", "POST", "/v1/keys/install", `{}`, 400, `is required`},
		{"unknown field", "POST", "/v1/keys/install", `{"key": "a", "secret": "` + base64.StdEncoding.EncodeToString(old) + `"}`, 400, "unknown field"},
		{"not JSON", "POST", "/v1/keys/install", base64.StdEncoding.EncodeToString(old), 400, "is not"},
		{"two bodies", "POST", "/v1/keys/install", body(next) + body(old), 400, "data after"},
		{"too big", "POST", "/v1/keys/install", `{"key": "` + strings.Repeat("A", maxKeyBody) + `"}`, 413, "body over"},
		{"unknown operation", "POST", "/v1/keys/rotate", body(next), 404, "no endpoint"},
		{"list by POST", "POST", "/v1/keys/list", "", 404, "no endpoint"},
		{"wrong method", "DELETE", "/v1/keys", "", 405, "takes GET"},
		{"GET a change", "GET", "/v1/keys/install", "", 405, "takes POST"},
		{"unknown path", "GET", "/v2/keys", "", 404, "no endpoint /v2/keys"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, m, raw := call(t, s, tc.method, tc.path, tc.body)
			answers.WriteString(raw)
			if status != tc.status || !strings.Contains(raw, tc.want) {
				t.Fatalf("%d %s, want %d with %q", status, raw, tc.status, tc.want)
			}
			if status != 200 {
				if _, ok := m["error"].(string); !ok || len(m) != 1 {
					t.Fatalf("error answer %s is not {\"error\": ...}", raw)
				}
			}
		})
	}
	// The client sees the final state: only the new key, as primary.
	got, err := NewClient(s.Socket()).Keys(context.Background(), "list", nil)
	if err != nil {
		t.Fatal(err)
	}
	fp := keyring.Fingerprint(next)
	if got.Op != "list" || got.Members != 1 || got.Responded != 1 || len(got.Keys) != 1 || got.Keys[fp] != 1 || got.Primaries[fp] != 1 {
		t.Fatalf("list after the rotation: %+v", got)
	}
	for _, k := range [][]byte{old, next} {
		b64 := base64.StdEncoding.EncodeToString(k)
		if strings.Contains(answers.String(), b64) || strings.Contains(logs.String(), b64) {
			t.Fatal("a key is in an answer or the log")
		}
	}
}

// A plaintext node answers 409 naming the setting to use; the client's
// error carries it and the socket.
func TestKeysWithoutKeyring(t *testing.T) {
	s := serve(t, member(t, "127.0.0.142", nil), io.Discard)
	_, err := NewClient(s.Socket()).Keys(context.Background(), "install", keyring.Generate())
	if err == nil || !strings.Contains(err.Error(), "cluster.keyring-file") || !strings.Contains(err.Error(), s.Socket()) || !strings.Contains(err.Error(), "409") {
		t.Fatalf("Keys = %v, want a 409 naming cluster.keyring-file and the socket", err)
	}
}

func TestClientErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "none.sock")
	_, err := NewClient(missing).Keys(context.Background(), "list", nil)
	if err == nil || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "no such socket") {
		t.Fatalf("missing socket: %v", err)
	}
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	_, err = NewClient(stale).Keys(context.Background(), "list", nil)
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("stale socket: %v", err)
	}
}

// What New finds at the socket path: a stale socket is replaced, anything
// else is left alone and reported.
func TestSocketPathInUse(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	s, err := New(Config{Socket: stale})
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	// A live socket (this server's) is not taken over.
	if _, err := New(Config{Socket: stale}); err == nil || !strings.Contains(err.Error(), "listening on it") {
		t.Fatalf("second server on a live socket: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Close left the socket: %v", err)
	}

	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, path, want string }{
		{"a regular file", file, "not a socket"},
		{"relative", "admin.sock", "not an absolute path"},
		{"too long", "/" + strings.Repeat("d", MaxSocketPath), "at most 100"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(Config{Socket: tc.path}); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want an error with %q", err, tc.want)
			}
		})
	}
	if b, _ := os.ReadFile(file); string(b) != "keep me" {
		t.Fatal("the regular file was touched")
	}
}

// Run and Close in any order and any number of times return, and leave
// no goroutine (TestMain checks).
func TestRunClose(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "a.sock")
	s, err := New(Config{Socket: sock})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	// Once it answers, it runs.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := NewClient(sock).Keys(context.Background(), "list", nil); err != nil && strings.Contains(err.Error(), "501") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server never answered")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.Run(context.Background()); err == nil {
		t.Fatal("a second Run did not fail")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run after Close: %v", err)
	}

	never, err := New(Config{Socket: filepath.Join(t.TempDir(), "b.sock")})
	if err != nil {
		t.Fatal(err)
	}
	if err := never.Close(); err != nil {
		t.Fatal(err)
	}
	if err := never.Run(context.Background()); err != nil {
		t.Fatalf("Run after Close: %v", err)
	}
}
