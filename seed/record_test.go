package seed

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/internal/s3test"
	"github.com/scrimplb/scrimp/keyring"
)

// signedRecord returns SignRecord's output and fails the test on error.
func signedRecord(t *testing.T, keys keyring.Keys, name, addr string) []byte {
	t.Helper()
	b, err := SignRecord(keys, name, addr, time.Now())
	if err != nil {
		t.Fatalf("SignRecord(%s): %v", addr, err)
	}
	return b
}

func decodeRecord(t *testing.T, b []byte) record {
	t.Helper()
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return r
}

func mustSigner(t *testing.T, keys keyring.Keys) *signer {
	t.Helper()
	s, err := newSigner(keys)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSignerVerify(t *testing.T) {
	old, cur, other := keyring.Generate(), keyring.Generate(), keyring.Generate()
	reader := mustSigner(t, keyring.Keys{cur, old}) // rotation in progress: cur is primary, old still accepted
	base := decodeRecord(t, signedRecord(t, keyring.Keys{cur}, "lb-1", "10.0.0.1:7946"))

	tests := []struct {
		name    string
		keys    keyring.Keys // signing keyring; nil: unsigned
		edit    func(r *record)
		wantErr error
	}{
		{name: "signed with the primary", keys: keyring.Keys{cur}},
		{name: "signed with the old key", keys: keyring.Keys{old, cur}},
		{name: "signed by another cluster", keys: keyring.Keys{other}, wantErr: errBadSig},
		{name: "unsigned", keys: nil, wantErr: errUnsigned},
		{name: "address changed", keys: keyring.Keys{cur}, edit: func(r *record) { r.Address = "10.0.0.66:7946" }, wantErr: errBadSig},
		{name: "name changed", keys: keyring.Keys{cur}, edit: func(r *record) { r.Name = "lb-2" }, wantErr: errBadSig},
		{name: "time changed", keys: keyring.Keys{cur}, edit: func(r *record) { r.Updated = time.Now().Add(time.Hour).Format(time.RFC3339Nano) }, wantErr: errBadSig},
		// Length prefixes: moving bytes between fields changes the message.
		{name: "bytes moved between fields", keys: keyring.Keys{cur}, edit: func(r *record) { r.Name, r.Address = "lb-110.0.0.1:7946", "" }, wantErr: errBadSig},
		{name: "signature truncated", keys: keyring.Keys{cur}, edit: func(r *record) { r.Sig = r.Sig[:20] }, wantErr: errBadSig},
		{name: "signature not base64", keys: keyring.Keys{cur}, edit: func(r *record) { r.Sig = "***" }, wantErr: errBadSig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := base
			r.Sig = ""
			mustSigner(t, tt.keys).sign(&r)
			if tt.edit != nil {
				tt.edit(&r)
			}
			if err := reader.verify(&r); !errors.Is(err, tt.wantErr) {
				t.Errorf("verify = %v, want %v", err, tt.wantErr)
			}
			// Without a keyring nothing is checked: every record passes.
			if err := (*signer)(nil).verify(&r); err != nil {
				t.Errorf("unsigned mode: verify = %v, want nil", err)
			}
		})
	}
}

func TestSignerDoesNotUseTheKeyDirectly(t *testing.T) {
	key := keyring.Generate()
	s := mustSigner(t, keyring.Keys{key})
	keys := *s.keys.Load()
	if bytes.Equal(keys[0], key) || !bytes.Equal(keys[0], keyring.Derive(key, "scrimp seed record v1")) {
		t.Error("the record key must be keyring.Derive(key, \"scrimp seed record v1\"), not the key")
	}
}

func TestSignRecord(t *testing.T) {
	key := keyring.Generate()
	at := time.Date(2026, 1, 2, 15, 4, 5, 6, time.FixedZone("x", 3600))
	b, err := SignRecord(keyring.Keys{key}, "lb-1", "10.0.0.1:7946", at)
	if err != nil {
		t.Fatal(err)
	}
	r := decodeRecord(t, b)
	if r.Version != 1 || r.Name != "lb-1" || r.Address != "10.0.0.1:7946" || r.Updated != "2026-01-02T14:04:05.000000006Z" || r.Sig == "" {
		t.Errorf("record %+v", r)
	}
	if strings.Contains(string(b), keyring.Fingerprint(key)) {
		t.Error("a record should not name its key")
	}
	unsigned, err := SignRecord(nil, "lb-1", "10.0.0.1:7946", at)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(unsigned), `"sig"`) {
		t.Errorf("record without keys is signed: %s", unsigned)
	}
	for name, call := range map[string]func() error{
		"bad address": func() error { _, err := SignRecord(nil, "lb", "no-port", at); return err },
		"bad name":    func() error { _, err := SignRecord(nil, "lb\n1", "10.0.0.1:1", at); return err },
		"bad key":     func() error { _, err := SignRecord(keyring.Keys{[]byte("short")}, "lb", "10.0.0.1:1", at); return err },
	} {
		if err := call(); err == nil {
			t.Errorf("%s: SignRecord succeeded", name)
		}
	}
}

// TestProvidersRejectBadKeys: a keyring that is not valid is a
// configuration error of every provider that signs, not a silent fallback
// to unsigned records.
func TestProvidersRejectBadKeys(t *testing.T) {
	s3test.Env(t)
	env, _ := testEnv(t)
	env.Keys = keyring.Keys{[]byte("short")}
	for name, section := range map[string]any{
		"s3":   map[string]any{"bucket": "b"},
		"file": map[string]any{"path": "/nonexistent/seeds"},
		"exec": map[string]any{"command": []string{"/bin/true"}},
	} {
		_, err := newFromSection(name, section, env)
		if err == nil || !strings.Contains(err.Error(), "keys: [0]: key is 5 bytes") {
			t.Errorf("%s: error %v, want one naming the bad key", name, err)
		}
	}
}
