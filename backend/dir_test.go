package backend

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

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
