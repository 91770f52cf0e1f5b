package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/internal/proctest"
)

// A managed proxy creates its state directory private (0700; 0711 for
// nginx started by root, whose workers must reach their temp
// directories), accepts an existing one others cannot write, and refuses
// one that group or others can write, naming the directory, its mode
// and the fix.
func TestStateDirMode(t *testing.T) {
	kinds := []struct {
		name    string
		new     func(dir string) (io.Closer, error)
		created fs.FileMode
	}{
		{"nginx", func(dir string) (io.Closer, error) { return NewManagedNginx("/bin/sh", dir, time.Second, nil) }, nginxStateDirMode()},
		{"haproxy", func(dir string) (io.Closer, error) { return NewManagedHAProxy("/bin/sh", dir, time.Second, nil) }, stateDirMode},
	}
	cases := []struct {
		name     string
		existing fs.FileMode // 0: the directory does not exist yet
		refused  bool
	}{
		{"created", 0, false},
		{"existing 0700", 0o700, false},
		{"existing 0755", 0o755, false},
		{"existing 0770", 0o770, true},
		{"existing 0757", 0o757, true},
		{"existing 0777", 0o777, true},
	}
	for _, k := range kinds {
		for _, tc := range cases {
			t.Run(k.name+"/"+tc.name, func(t *testing.T) {
				dir := filepath.Join(t.TempDir(), "state")
				if tc.existing != 0 {
					if err := os.Mkdir(dir, 0o700); err != nil {
						t.Fatal(err)
					}
					if err := os.Chmod(dir, tc.existing); err != nil {
						t.Fatal(err)
					}
				}
				p, err := k.new(dir)
				if tc.refused {
					want := []string{dir, fmt.Sprintf("mode %04o", tc.existing), "group or others can write it", "chmod 700 " + dir}
					if err == nil {
						p.Close()
						t.Fatal("an existing state dir others can write was accepted")
					}
					for _, w := range want {
						if !strings.Contains(err.Error(), w) {
							t.Errorf("error %q does not contain %q", err, w)
						}
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				defer p.Close()
				want := tc.existing
				if want == 0 {
					want = k.created
				}
				fi, err := os.Stat(dir)
				if err != nil {
					t.Fatal(err)
				}
				if got := fi.Mode().Perm(); got != want {
					t.Errorf("state dir mode %04o, want %04o", got, want)
				}
				if k.name == "nginx" && tc.existing == 0 {
					if fi, err := os.Stat(filepath.Join(dir, "tmp")); err != nil || fi.Mode().Perm() != k.created {
						t.Errorf("tmp: %v, mode %v; want %04o", err, fi, k.created)
					}
				}
			})
		}
	}
}

// The reason for 0711 under root: nginx's workers then run as "nobody"
// and spill large responses to tmp/proxy under the state directory. A
// response far larger than the socket buffers, read by a client that
// waits first, arrives whole.
func TestManagedNginxBuffersToDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root makes nginx run its workers as another user")
	}
	noLeak(t)
	bin := nginxBinary(t)
	// t.TempDir's directories are 0700; the state directory below them
	// must be reachable the way /var/lib is.
	base := t.TempDir() // TMPDIR/TestName123/001
	for _, d := range []string{base, filepath.Dir(base)} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	logs := &proctest.Buffer{}
	n, err := NewManagedNginx(bin, filepath.Join(base, "state"), waitTimeout, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeBounded(t, n) })
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB
	big := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	t.Cleanup(big.Close)
	port := freePort(t)
	apply(t, n, managedConfig(t, n, port, big))

	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
	// Not reading yet: nginx fills the socket buffers, then its temp file.
	poll(t, "nginx buffering the response to a temporary file", func() string {
		if strings.Contains(logs.String(), "buffered to a temporary file") || strings.Contains(logs.String(), "Permission denied") {
			return ""
		}
		return "not yet"
	})
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	if err != nil || len(got) != len(body) {
		t.Fatalf("read %d of %d bytes (%v); nginx log:\n%s", len(got), len(body), err, logs.String())
	}
	if strings.Contains(logs.String(), "Permission denied") {
		t.Errorf("nginx could not write its temp file:\n%s", logs.String())
	}
}
