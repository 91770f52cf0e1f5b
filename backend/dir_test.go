package backend

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/config"
)

func TestIsAppFile(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"web.json", true},
		{"web-2.json", true},
		{".web.json.swp", false},
		{".web.json", false},
		{"web.json~", false},
		{"#web.json#", false},
		{".#web.json", false},
		{"web.json.tmp", false},
		{"web.JSON", false},
		{"web", false},
		{".json", false},
		{"..data", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := isAppFile(tt.name); got != tt.want {
				t.Errorf("isAppFile(%q) = %v, want %v", tt.name, got, tt.want)
			}
		})
	}
}

func TestCheckDir(t *testing.T) {
	// problem is one expected problem: file name (relative to the
	// directory), JSON path and part of the reason.
	type problem struct{ file, path, reason string }
	tests := []struct {
		name   string
		files  map[string]string
		static []config.Application
		dir    func(t *testing.T, dir string) string // the path to check; nil: dir
		want   []problem
	}{
		{
			name:  "valid files",
			files: map[string]string{"web.json": appJSON("web", 8080, ""), "api.json": appJSON("api", 8081, `, "health-check": {"path": "/healthz"}`)},
		},
		{
			name: "missing directory is not a problem",
			dir:  func(_ *testing.T, dir string) string { return filepath.Join(dir, "not-yet") },
		},
		{
			name: "a file where the directory should be",
			dir: func(t *testing.T, dir string) string {
				path := filepath.Join(dir, "file")
				writeFile(t, path, "")
				return path
			},
			want: []problem{{"file", "", "cannot read application directory"}},
		},
		{
			name: "every problem with its file, path and reason",
			files: map[string]string{
				"good.json":   appJSON("good", 8080, ""),
				"syntax.json": "{\n\"name\": \"x\",,\n}",
				"field.json":  appJSON("field", 8081, `, "colour": "red"`),
				"value.json":  appJSON("value", 0, ""),
				"check.json":  appJSON("check", 8082, `, "health-check": {"interval": "soon"}`),
				"base.json":   appJSON("base", 8083, ""),
				"a-twin.json": appJSON("twin", 8084, ""),
				"b-twin.json": appJSON("twin", 8085, ""),
				".x.json.swp": "garbage",
				"x.json~":     "garbage",
			},
			static: []config.Application{staticApp("base", 7000)},
			want: []problem{
				{"b-twin.json", "name", `"twin" is also defined in ` + "DIR/a-twin.json; this file is ignored"},
				{"base.json", "name", `"base" is also defined in backend.applications[0] of the main configuration; this file is ignored`},
				{"check.json", "health-check.interval", `"soon" is not a duration`},
				{"field.json", "colour", "unknown field"},
				{"syntax.json", "", "line 2, column 13: invalid JSON"},
				{"value.json", "application-port", "0 is not a port in 1-65535"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tt.files {
				writeFile(t, filepath.Join(dir, name), content)
			}
			path := dir
			if tt.dir != nil {
				path = tt.dir(t, dir)
			}
			got := CheckDir(path, tt.static)
			ok := len(got) == len(tt.want)
			for i := 0; ok && i < len(got); i++ {
				w := tt.want[i]
				reason := strings.ReplaceAll(w.reason, "DIR", dir)
				ok = got[i].File == filepath.Join(dir, w.file) && got[i].Path == w.path && strings.Contains(got[i].Reason, reason)
			}
			if !ok {
				t.Errorf("CheckDir =\n%v\nwant (file, path, reason):\n%v", got, tt.want)
			}
			// Each problem prints as FILE: PATH: REASON for `scrimp validate`.
			for _, p := range got {
				if s := p.String(); !strings.HasPrefix(s, p.File+": ") {
					t.Errorf("problem %q does not start with its file", s)
				}
			}
		})
	}
	t.Run("empty path", func(t *testing.T) {
		if got := CheckDir("", nil); got != nil {
			t.Errorf("CheckDir(\"\") = %v", got)
		}
	})
	t.Run("unreadable file", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root reads any file")
		}
		dir := t.TempDir()
		path := filepath.Join(dir, "web.json")
		writeFile(t, path, appJSON("web", 8080, ""))
		if err := os.Chmod(path, 0); err != nil {
			t.Fatal(err)
		}
		got := CheckDir(dir, nil)
		if len(got) != 1 || got[0].File != path || !strings.Contains(got[0].Reason, "cannot read") {
			t.Errorf("CheckDir = %v, want one problem naming %s", got, path)
		}
	})
}

// specialEntries makes, in dir, one entry of each kind that has an
// application file's name but is not a regular file, and returns their
// names with the kind the backend must name when it skips them.
func specialEntries(t *testing.T, dir string) map[string]string {
	t.Helper()
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo.json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "dir.json"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Unix socket paths are short: listen from inside dir.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "sock.json"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo-target"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("fifo-target", filepath.Join(dir, "link-to-fifo.json")); err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"fifo.json":         "named pipe",
		"dir.json":          "directory",
		"sock.json":         "socket",
		"link-to-fifo.json": "named pipe",
	}
}

// withTimeout runs f and fails the test if it does not return within
// waitLimit: reading a FIFO blocks forever, and the test must say so
// rather than hang.
func withTimeout(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(waitLimit):
		t.Fatalf("%s did not return within %v: blocked on a special file", what, waitLimit)
	}
}

// TestReadAppFile checks each kind of entry readAppFile meets: special
// files are refused without blocking and without being read, links to
// regular files are followed, and size is bounded.
func TestReadAppFile(t *testing.T) {
	dir := t.TempDir()
	special := specialEntries(t, dir)
	writeFile(t, filepath.Join(dir, "real"), appJSON("web", 8080, ""))
	if err := os.Symlink("real", filepath.Join(dir, "link.json")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("nowhere", filepath.Join(dir, "dangling.json")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "max.json"), strings.Repeat(" ", maxFileSize))
	huge, err := os.Create(filepath.Join(dir, "huge.json"))
	if err != nil {
		t.Fatal(err)
	}
	// Sparse: 1 GiB without writing it.
	if err := huge.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	huge.Close()

	for name, kind := range special {
		t.Run(name, func(t *testing.T) {
			withTimeout(t, "readAppFile", func() {
				_, err := readAppFile(filepath.Join(dir, name))
				if !errors.Is(err, errNotAppFile) || !strings.Contains(err.Error(), kind) {
					t.Errorf("readAppFile(%s) error %v, want errNotAppFile naming %q", name, err, kind)
				}
			})
		})
	}
	t.Run("link to a regular file is followed", func(t *testing.T) {
		data, err := readAppFile(filepath.Join(dir, "link.json"))
		if err != nil || string(data) != appJSON("web", 8080, "") {
			t.Errorf("readAppFile = %q, %v; want the target's content", data, err)
		}
	})
	t.Run("dangling link is absent", func(t *testing.T) {
		if _, err := readAppFile(filepath.Join(dir, "dangling.json")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("readAppFile error %v, want ErrNotExist", err)
		}
	})
	t.Run("exactly the limit is read", func(t *testing.T) {
		data, err := readAppFile(filepath.Join(dir, "max.json"))
		if err != nil || len(data) != maxFileSize {
			t.Errorf("readAppFile = %d bytes, %v; want %d bytes", len(data), err, maxFileSize)
		}
	})
	t.Run("huge file is refused", func(t *testing.T) {
		_, err := readAppFile(filepath.Join(dir, "huge.json"))
		if err == nil || !strings.Contains(err.Error(), "larger than the limit of 1048576 bytes") {
			t.Errorf("readAppFile error %v, want the size limit", err)
		}
	})

	t.Run("CheckDir skips special files and names the huge one", func(t *testing.T) {
		var got config.Problems
		withTimeout(t, "CheckDir", func() { got = CheckDir(dir, nil) })
		// max.json is 1 MiB of spaces: read, and reported as no object.
		want := []struct{ file, reason string }{
			{"huge.json", "cannot read: larger than the limit of 1048576 bytes"},
			{"max.json", "expected a JSON object"},
		}
		ok := len(got) == len(want)
		for i := 0; ok && i < len(got); i++ {
			ok = got[i].File == filepath.Join(dir, want[i].file) && strings.Contains(got[i].Reason, want[i].reason)
		}
		if !ok {
			t.Errorf("CheckDir =\n%v\nwant (file, reason) %v", got, want)
		}
	})
}
