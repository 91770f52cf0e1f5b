package keyring

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testKey returns a key of n bytes whose content is recognisable, so a
// leak can be searched for.
func testKey(n int, fill byte) []byte { return bytes.Repeat([]byte{fill}, n) }

func b64(key []byte) string { return base64.StdEncoding.EncodeToString(key) }

// writeKeyFile writes content to a file with the given mode in a fresh
// directory and returns its path.
func writeKeyFile(t *testing.T, content string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keyring.json")
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // WriteFile's mode is masked by umask
		t.Fatal(err)
	}
	return path
}

func jsonList(keys ...string) string {
	b, _ := json.Marshal(keys)
	return string(b)
}

func TestLoad(t *testing.T) {
	k16, k24, k32 := testKey(16, 0xa1), testKey(24, 0xb2), testKey(32, 0xc3)
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		want    Keys
		wantErr []string // substrings the error must contain; nil means success
	}{
		{name: "one key", content: jsonList(b64(k32)), mode: 0o600, want: Keys{k32}},
		{name: "three lengths, primary first", content: jsonList(b64(k24), b64(k16), b64(k32)), mode: 0o600, want: Keys{k24, k16, k32}},
		{name: "read-only for the owner", content: jsonList(b64(k32)), mode: 0o400, want: Keys{k32}},
		{name: "group readable", content: jsonList(b64(k32)), mode: 0o640, wantErr: []string{"mode 0640", "chmod 600 "}},
		{name: "world readable", content: jsonList(b64(k32)), mode: 0o644, wantErr: []string{"mode 0644", "chmod 600 "}},
		{name: "group writable", content: jsonList(b64(k32)), mode: 0o620, wantErr: []string{"mode 0620"}},
		{name: "bad base64", content: jsonList(b64(k32), b64(k16), "not*base64!"), mode: 0o600, wantErr: []string{"[2]: not valid base64"}},
		{name: "wrong length", content: jsonList(b64(k32), b64(testKey(20, 1))), mode: 0o600, wantErr: []string{"[1]: key is 20 bytes; want 16, 24 or 32"}},
		{name: "empty key", content: jsonList(""), mode: 0o600, wantErr: []string{"[0]: key is 0 bytes"}},
		{name: "duplicate", content: jsonList(b64(k32), b64(k16), b64(k32)), mode: 0o600, wantErr: []string{"[2]: same key as [0]"}},
		{name: "every bad key named", content: jsonList("!!", b64(k16), "??"), mode: 0o600, wantErr: []string{"[0]: not valid base64", "[2]: not valid base64"}},
		{name: "empty array", content: "[]", mode: 0o600, wantErr: []string{"no keys"}},
		{name: "empty file", content: "", mode: 0o600, wantErr: []string{"not a JSON array"}},
		{name: "not an array", content: `{"keys": []}`, mode: 0o600, wantErr: []string{"not a JSON array"}},
		{name: "not a string", content: `["` + b64(k32) + `", 42]`, mode: 0o600, wantErr: []string{"[1]: not a string"}},
		{name: "syntax error", content: `["` + b64(k32) + `";]`, mode: 0o600, wantErr: []string{"syntax error at byte"}},
		{name: "truncated", content: `["` + b64(k32) + `"`, mode: 0o600, wantErr: []string{"truncated"}},
		{name: "data after the array", content: jsonList(b64(k32)) + ` []`, mode: 0o600, wantErr: []string{"data after the JSON array"}},
		{name: "too large", content: jsonList(b64(k32)) + strings.Repeat(" ", MaxFileSize), mode: 0o600, wantErr: []string{"more than the 65536 bytes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeKeyFile(t, tt.content, tt.mode)
			got, err := Load(path)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if len(got) != len(tt.want) {
					t.Fatalf("Load returned %d keys, want %d", len(got), len(tt.want))
				}
				for i := range got {
					if !bytes.Equal(got[i], tt.want[i]) {
						t.Errorf("key [%d] differs (fingerprint %s, want %s)", i, Fingerprint(got[i]), Fingerprint(tt.want[i]))
					}
				}
				return
			}
			if err == nil {
				t.Fatalf("Load succeeded, want an error containing %q", tt.wantErr)
			}
			msg := err.Error()
			if !strings.Contains(msg, path) {
				t.Errorf("error %q does not name the file", msg)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not contain %q", msg, want)
				}
			}
			for _, key := range []string{b64(k16), b64(k24), b64(k32)} {
				if strings.Contains(msg, key) {
					t.Errorf("error %q contains a key", msg)
				}
			}
		})
	}
}

func TestLoadMissingAndDirectory(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "absent")); err == nil || !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("missing file: error %v, want not-exist", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: error %v, want not a regular file", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok || u.Unwrap() == nil {
			return err
		}
		err = u.Unwrap()
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keyring.json")
	first := Keys{Generate(), testKey(16, 7)}
	if err := Save(path, first); err != nil {
		t.Fatal(err)
	}
	// Rotation: a new primary in front, the old keys kept; Save replaces.
	second := append(Keys{Generate()}, first...)
	if err := Save(path, second); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("mode after Save %04o, want 0600", perm)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatalf("Load after Save: %v", err)
	}
	if len(got) != len(second) {
		t.Fatalf("%d keys, want %d", len(got), len(second))
	}
	for i := range got {
		if !bytes.Equal(got[i], second[i]) {
			t.Errorf("key [%d] differs", i)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries after Save, want only the key file (no temporary left)", len(entries))
	}
}

func TestSaveRefusesInvalid(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyring.json")
	for name, keys := range map[string]Keys{
		"empty":      nil,
		"bad length": {testKey(15, 1)},
		"duplicate":  {testKey(16, 1), testKey(16, 1)},
	} {
		if err := Save(path, keys); err == nil {
			t.Errorf("%s: Save succeeded", name)
		}
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("a refused Save left a file: %v", err)
	}
}

func TestGenerate(t *testing.T) {
	a, b := Generate(), Generate()
	if len(a) != 32 || Check(a) != nil {
		t.Fatalf("Generate returned %d bytes, want 32", len(a))
	}
	if bytes.Equal(a, b) {
		t.Fatal("two generated keys are equal")
	}
	if bytes.Equal(a, make([]byte, 32)) {
		t.Fatal("generated key is all zeros")
	}
}

func TestFingerprint(t *testing.T) {
	key := testKey(32, 0x11)
	fp := Fingerprint(key)
	if len(fp) != 16 {
		t.Fatalf("Fingerprint %q: want 16 hex digits", fp)
	}
	if _, err := hex.DecodeString(fp); err != nil {
		t.Fatalf("Fingerprint %q is not hex", fp)
	}
	if fp != Fingerprint(bytes.Clone(key)) || fp == Fingerprint(testKey(32, 0x12)) {
		t.Error("Fingerprint must depend on the key's content only")
	}
	if strings.Contains(fp, hex.EncodeToString(key[:8])) {
		t.Error("Fingerprint shows key bytes")
	}
}

func TestDerive(t *testing.T) {
	k1, k2 := testKey(32, 1), testKey(32, 2)
	a := Derive(k1, "scrimp seed record v1")
	if len(a) != 32 {
		t.Fatalf("Derive returned %d bytes, want 32", len(a))
	}
	if !bytes.Equal(a, Derive(k1, "scrimp seed record v1")) {
		t.Error("Derive is not deterministic")
	}
	for name, other := range map[string][]byte{
		"other purpose": Derive(k1, "scrimp seed record v2"),
		"other key":     Derive(k2, "scrimp seed record v1"),
		"the key":       k1,
	} {
		if bytes.Equal(a, other) {
			t.Errorf("derived key equals the %s", name)
		}
	}
	// RFC 5869 test case 3 (SHA-256, empty salt and info), truncated to
	// 32 bytes: pins the construction, not just its properties.
	ikm := bytes.Repeat([]byte{0x0b}, 22)
	want := "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
	if got := hex.EncodeToString(Derive(ikm, "")); got != want {
		t.Errorf("Derive(RFC 5869 case 3) = %s, want %s", got, want)
	}
}

// TestRedaction checks that no way of printing or logging a keyring shows
// key material, in base64, hex or raw form.
func TestRedaction(t *testing.T) {
	keys := Keys{testKey(32, 0xab), testKey(16, 0xcd)}
	var forbidden []string
	for _, k := range keys {
		forbidden = append(forbidden, b64(k), hex.EncodeToString(k), string(k), fmt.Sprint([]byte(k)), fmt.Sprint(k[:4]))
	}
	check := func(t *testing.T, what, out string) {
		t.Helper()
		for _, f := range forbidden {
			if strings.Contains(out, f) {
				t.Errorf("%s prints key material: %q", what, out)
				return
			}
		}
		if !strings.Contains(out, Fingerprint(keys[0])) {
			t.Errorf("%s = %q, want the primary's fingerprint", what, out)
		}
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%q", "%d"} {
		check(t, "Sprintf("+verb+")", fmt.Sprintf(verb, keys))
	}
	check(t, "inside a struct", fmt.Sprintf("%+v", struct{ Keys Keys }{keys}))
	check(t, "String", keys.String())
	b, err := json.Marshal(struct{ Keys Keys }{keys})
	if err != nil {
		t.Fatal(err)
	}
	check(t, "json.Marshal", string(b))

	for name, newHandler := range map[string]func(*bytes.Buffer) slog.Handler{
		"text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		"json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var buf bytes.Buffer
		logger := slog.New(newHandler(&buf))
		logger.Info("loaded", "keys", keys)
		logger.Info("loaded", slog.Any("keys", keys))
		logger.Info("struct", "v", struct{ Keys Keys }{keys})
		check(t, name+" handler", buf.String())
		if strings.Count(buf.String(), Fingerprint(keys[1])) < 2 {
			t.Errorf("%s handler: want every key's fingerprint logged:\n%s", name, buf.String())
		}
	}
}
