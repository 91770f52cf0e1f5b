package seed

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// writeFile writes content to path in place.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// replaceFile writes content to a temporary file beside path and renames
// it over path, as editors and configuration management tools do.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	writeFile(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func newFileTest(t *testing.T, path string) (*fileSeeds, *logRecorder) {
	t.Helper()
	env, rec := testEnv(t)
	return newTestProvider(t, "file", map[string]any{"path": path}, env).(*fileSeeds), rec
}

// waitChanged fails unless the provider reports a change within a
// deadline.
func waitChanged(t *testing.T, f *fileSeeds) {
	t.Helper()
	select {
	case <-f.Changed():
	case <-time.After(10 * time.Second):
		t.Fatal("no change notification within 10s")
	}
}

// drainChanged discards a pending notification.
func drainChanged(f *fileSeeds) {
	select {
	case <-f.Changed():
	default:
	}
}

func TestFileFormats(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    []string
		wantErr string
		warned  []string // "line=N" of each entry that must be reported
	}{
		{name: "one per line", content: "10.0.0.1:7000\n10.0.0.2\n", want: []string{"10.0.0.1:7000", "10.0.0.2:7946"}},
		{name: "JSON", content: `["10.0.0.2:1", "10.0.0.1:1"]`, want: []string{"10.0.0.1:1", "10.0.0.2:1"}},
		{name: "comments and blank lines", content: "# load balancers\n\n10.0.0.1:1 # rack 1\n  # 10.0.0.3:1\n", want: []string{"10.0.0.1:1"}},
		{name: "empty", content: "", want: nil},
		{
			name: "bad lines", content: "10.0.0.1:1\nnot an address\n10.0.0.2:99999\n10.0.0.3:3\n",
			want: []string{"10.0.0.1:1", "10.0.0.3:3"}, warned: []string{"line=2", "line=3"},
		},
		{name: "malformed JSON", content: `["10.0.0.1:1",`, wantErr: "JSON list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "seeds")
			writeFile(t, path, tt.content)
			f, rec := newFileTest(t, path)
			for range 2 { // the second read must not log again
				got, err := seedsErr(f)
				wantErr(t, err, tt.wantErr)
				if !sameAddrs(got, tt.want) {
					t.Fatalf("Seeds = %q, want %q", got, tt.want)
				}
			}
			for _, line := range tt.warned {
				if n := rec.count("WARN", path, line); n != 1 {
					t.Errorf("%d warnings naming %s and %s, want 1", n, path, line)
				}
			}
			if n := rec.count("WARN"); n != len(tt.warned) {
				t.Errorf("%d warnings, want %d", n, len(tt.warned))
			}
		})
	}
}

func TestFileReplacedByRename(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seeds")
	writeFile(t, path, "10.0.0.1:1\n")
	f, _ := newFileTest(t, path)
	if got := seedsNow(t, f); !sameAddrs(got, []string{"10.0.0.1:1"}) {
		t.Fatalf("Seeds = %q", got)
	}
	for i, content := range []string{"10.0.0.2:1\n", `["10.0.0.3:1"]`, "10.0.0.4:1\n"} {
		drainChanged(f)
		replaceFile(t, path, content)
		waitChanged(t, f) // the watch survives the file being replaced
		want := []string{fmt.Sprintf("10.0.0.%d:1", i+2)}
		if got := seedsNow(t, f); !sameAddrs(got, want) {
			t.Fatalf("replacement %d: Seeds = %q, want %q", i, got, want)
		}
	}
}

func TestFileEditedInPlace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seeds")
	writeFile(t, path, "10.0.0.1:1\n")
	f, _ := newFileTest(t, path)
	seedsNow(t, f)
	drainChanged(f)
	writeFile(t, path, "10.0.0.1:1\n10.0.0.2:1\n")
	waitChanged(t, f)
	if got, want := seedsNow(t, f), []string{"10.0.0.1:1", "10.0.0.2:1"}; !sameAddrs(got, want) {
		t.Fatalf("Seeds = %q, want %q", got, want)
	}
}

func TestFileMissingThenCreated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seeds")
	f, _ := newFileTest(t, path)
	_, err := seedsErr(f)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: error %v, want one wrapping fs.ErrNotExist", err)
	}
	replaceFile(t, path, "10.0.0.1:1\n")
	waitChanged(t, f)
	if got := seedsNow(t, f); !sameAddrs(got, []string{"10.0.0.1:1"}) {
		t.Fatalf("Seeds = %q", got)
	}
	// Deleted and created again with the same content: read afresh.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := seedsErr(f); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("deleted file: error %v", err)
	}
	writeFile(t, path, "10.0.0.1:1\n")
	if got := seedsNow(t, f); !sameAddrs(got, []string{"10.0.0.1:1"}) {
		t.Fatalf("recreated: Seeds = %q", got)
	}
}

func TestFileSameContentIsNoChange(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "seeds")
	writeFile(t, path, "10.0.0.1:1\n")
	f, _ := newFileTest(t, path)
	seedsNow(t, f)
	// Events for other files in the directory and rewrites with the same
	// bytes must not count as changes (whoever reads first, the watcher
	// or this test, the content is the same).
	writeFile(t, filepath.Join(dir, "other"), "x")
	replaceFile(t, path, "10.0.0.1:1\n")
	if changed, err := f.reload(); changed || err != nil {
		t.Fatalf("reload after a same-content rewrite = %t, %v; want no change", changed, err)
	}
}

func TestFileDirectoryMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "not-yet", "seeds")
	f, rec := newFileTest(t, path)
	if f.watcher != nil || rec.count("WARN", "cannot watch") != 1 {
		t.Fatalf("watching a missing directory: watcher %v, warnings %d; want none and one warning", f.watcher, rec.count("WARN", "cannot watch"))
	}
	if _, err := seedsErr(f); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("error %v, want fs.ErrNotExist", err)
	}
	// Without a watcher, Seeds still reads the file every time.
	if err := os.Mkdir(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, "10.0.0.1:1\n")
	if got := seedsNow(t, f); !sameAddrs(got, []string{"10.0.0.1:1"}) {
		t.Fatalf("Seeds = %q", got)
	}
}

func TestFileClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seeds")
	writeFile(t, path, "10.0.0.1:1\n")
	env, _ := testEnv(t)
	p, err := newFromSection("file", map[string]any{"path": path}, env)
	if err != nil {
		t.Fatal(err)
	}
	f := p.(*fileSeeds)
	// Close waits for the watcher goroutine: if it did not stop, Close
	// would not return. Concurrent and repeated calls are fine.
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() {
				if err := f.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
		}
		wg.Wait()
		if err := f.Close(); err != nil {
			t.Errorf("Close again: %v", err)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	if got := seedsNow(t, f); !sameAddrs(got, []string{"10.0.0.1:1"}) {
		t.Fatalf("Seeds after Close = %q", got)
	}
}

func TestFileOptions(t *testing.T) {
	tests := []struct {
		name    string
		section any
		wantErr string
	}{
		{name: "no section", section: nil, wantErr: "seed.file: path: required"},
		{name: "empty path", section: map[string]any{"path": ""}, wantErr: "path: required"},
		{name: "unknown field", section: map[string]any{"path": "x", "watch": true}, wantErr: `unknown field "watch"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, _ := testEnv(t)
			_, err := newFromSection("file", tt.section, env)
			wantErr(t, err, tt.wantErr)
		})
	}
}

func TestFileRelativePath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	writeFile(t, "seeds", "10.0.0.1:1\n")
	f, _ := newFileTest(t, "seeds")
	if f.path != filepath.Join(dir, "seeds") {
		t.Errorf("path %q, want it made absolute", f.path)
	}
	if got := seedsNow(t, f); !sameAddrs(got, []string{"10.0.0.1:1"}) {
		t.Fatalf("Seeds = %q", got)
	}
}
