package node

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scrimplb/scrimp/keyring"
)

// A keyring file that others may read stops the node with an error naming
// the file and the key; one with the right mode passes. (LocalConfig's
// bare load balancer has other problems; only keyring ones count here.)
func TestCheckKeyringFile(t *testing.T) {
	dir := t.TempDir()
	key := base64.StdEncoding.EncodeToString(keyring.Generate())
	write := func(name string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(`["`+key+`"]`), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name, file string
		want       string // "" = no problem
	}{
		{"owner only", write("good.json", 0o600), ""},
		{"readable by others", write("open.json", 0o644), "cluster.keyring-file"},
		{"missing", filepath.Join(dir, "none.json"), "cluster.keyring-file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := LocalConfig("lb", "127.0.0.1", nil)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Cluster.KeyringFile = tc.file
			err = Check(cfg)
			switch {
			case tc.want == "" && err != nil && strings.Contains(err.Error(), "keyring"):
				t.Fatalf("Check: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.file)):
				t.Fatalf("Check = %v, want an error naming %s and %s", err, tc.want, tc.file)
			case err != nil && strings.Contains(err.Error(), key):
				t.Fatalf("the error shows the key: %v", err)
			}
		})
	}
}
