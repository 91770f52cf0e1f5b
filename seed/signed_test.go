package seed

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/scrimplb/scrimp/internal/s3test"
	"github.com/scrimplb/scrimp/keyring"
)

// keyedEnv is testEnv with a keyring and a node name.
func keyedEnv(t *testing.T, name string, keys ...[]byte) (Env, *logRecorder) {
	t.Helper()
	env, rec := testEnv(t)
	env.Keys, env.NodeName = keys, name
	return env, rec
}

// TestS3SignedVersitygw checks signed records against a real S3 server:
// what a keyed reader accepts and refuses, key rotation, and that a
// reader without keys still reads signed records (so load balancers can
// get keys before backends).
func TestS3SignedVersitygw(t *testing.T) {
	endpoint := s3test.Start(t)
	section := s3Section(endpoint, map[string]any{"prefix": "signed/"})
	oldKey, newKey, otherKey := keyring.Generate(), keyring.Generate(), keyring.Generate()

	// The backend is mid-rotation: newKey is primary, oldKey still accepted.
	backendEnv, rec := keyedEnv(t, "backend-1", newKey, oldKey)
	backend := newS3Test(t, section, backendEnv)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := backend.client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(testBucket)}); err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	lb := func(name string, keys ...[]byte) *s3Seeds {
		env, _ := keyedEnv(t, name, keys...)
		return newS3Test(t, section, env)
	}

	lbNew := lb("lb-new", newKey, oldKey)
	publish(t, lbNew, "10.0.0.1:7946")
	publish(t, lb("lb-old", oldKey), "10.0.0.2:7946") // not yet given the new key
	publish(t, lb("lb-unsigned"), "10.0.0.3:7946")
	publish(t, lb("lb-other", otherKey), "10.0.0.4:7946")

	// Tampered: one byte of a signed record changed in the store.
	publish(t, lbNew, "10.0.0.5:7946")
	tamperedKey := backend.key("10.0.0.5:7946")
	body := getRaw(t, backend, tamperedKey)
	i := bytes.Index(body, []byte(`"lb-new"`))
	if i < 0 {
		t.Fatalf("record %s does not carry the node name", body)
	}
	body = bytes.Clone(body)
	body[i+len(`"lb-ne`)] = 'x' // lb-new -> lb-nex
	putRaw(t, backend, tamperedKey, body)

	// Copied: a valid record of 10.0.0.1 under the key of another address.
	copiedKey := backend.key("10.0.0.7:7946")
	putRaw(t, backend, copiedKey, getRaw(t, backend, backend.key("10.0.0.1:7946")))

	want := []string{"10.0.0.1:7946", "10.0.0.2:7946"}
	for range 2 { // the second call must not warn again
		if got := seedsNow(t, backend); !sameAddrs(got, want) {
			t.Fatalf("keyed backend: Seeds = %q, want %q", got, want)
		}
	}
	for _, skipped := range []struct{ name, key, err string }{
		{"unsigned", backend.key("10.0.0.3:7946"), "err=unsigned record"},
		{"other cluster's key", backend.key("10.0.0.4:7946"), "err=signature matches no key"},
		{"tampered", tamperedKey, "err=signature matches no key"},
		{"copied to another key", copiedKey, "err=record for 10.0.0.1:7946 (node \"lb-new\") is under the wrong object key"},
	} {
		if n, all := rec.count("WARN", skipped.key, skipped.err), rec.count("WARN", skipped.key); n != 1 || all != 1 {
			t.Errorf("%s: %d warnings saying %q (%d in all), want exactly one", skipped.name, n, skipped.err, all)
		}
	}
	if n := rec.count("WARN"); n != 4 {
		t.Errorf("%d warnings, want 4", n)
	}

	// The record carries the name and address and names no key.
	r := decodeRecord(t, getRaw(t, backend, backend.key("10.0.0.1:7946")))
	if r.Name != "lb-new" || r.Address != "10.0.0.1:7946" || r.Sig == "" {
		t.Errorf("stored record %+v, want name, address and signature", r)
	}

	// Rotation finished: the old key is dropped, and so are its records.
	doneEnv, doneRec := keyedEnv(t, "backend-2", newKey)
	if got, want := seedsNow(t, newS3Test(t, section, doneEnv)), []string{"10.0.0.1:7946"}; !sameAddrs(got, want) {
		t.Errorf("after rotation: Seeds = %q, want %q", got, want)
	}
	if doneRec.count("WARN", backend.key("10.0.0.2:7946"), "signature matches no key") != 1 {
		t.Error("the record signed with the dropped key was not reported")
	}

	// No keyring: nothing is verified (the demo works without keys), but a
	// record still has to sit under its own address's key.
	plainEnv, plainRec := testEnv(t)
	if got, want := seedsNow(t, newS3Test(t, section, plainEnv)), []string{"10.0.0.1:7946", "10.0.0.2:7946", "10.0.0.3:7946", "10.0.0.4:7946", "10.0.0.5:7946"}; !sameAddrs(got, want) {
		t.Errorf("backend without keys: Seeds = %q, want %q", got, want)
	}
	if plainRec.count("WARN", copiedKey, "wrong object key") != 1 || plainRec.count("WARN") != 1 {
		t.Errorf("backend without keys: want one warning, about the copied record")
	}
}

// writeSignedList writes a seed file of entries (JSON values) as a JSON
// array, one entry per line, so that line numbers are known: entry i is on
// line i+2.
func writeSignedList(t *testing.T, path string, entries ...string) {
	t.Helper()
	writeFile(t, path, "[\n"+strings.Join(entries, ",\n")+"\n]\n")
}

func TestFileSignedRecords(t *testing.T) {
	oldKey, newKey, otherKey := keyring.Generate(), keyring.Generate(), keyring.Generate()
	tampered := bytes.Replace(signedRecord(t, keyring.Keys{newKey}, "lb-5", "10.0.0.5:7946"),
		[]byte("10.0.0.5"), []byte("10.0.0.6"), 1)
	path := filepath.Join(t.TempDir(), "seeds.json")
	writeSignedList(t, path,
		string(signedRecord(t, keyring.Keys{newKey}, "lb-1", "10.0.0.1:7946")), // line 2
		string(signedRecord(t, keyring.Keys{oldKey}, "lb-2", "10.0.0.2:7946")), // line 3: signed before the rotation
		`"10.0.0.3:7946"`, // line 4: unsigned
		string(signedRecord(t, keyring.Keys{otherKey}, "lb-4", "10.0.0.4:7946")), // line 5
		string(tampered), // line 6
		`{"version":1,"address":"10.0.0.7:7946"}`, // line 7: a record without signature
	)

	tests := []struct {
		name   string
		keys   keyring.Keys
		want   []string
		warned map[string]string // line → what the warning says
	}{
		{
			name: "rotating", keys: keyring.Keys{newKey, oldKey},
			want: []string{"10.0.0.1:7946", "10.0.0.2:7946"},
			warned: map[string]string{
				"line=4": "err=address \"10.0.0.3:7946\": unsigned record",
				"line=5": "signature matches no key",
				"line=6": "signature matches no key",
				"line=7": "unsigned record",
			},
		},
		{
			name: "rotated", keys: keyring.Keys{newKey},
			want: []string{"10.0.0.1:7946"},
			warned: map[string]string{
				"line=3": "signature matches no key", "line=4": "unsigned", "line=5": "signature matches no key",
				"line=6": "signature matches no key", "line=7": "unsigned",
			},
		},
		{
			name: "no keyring", keys: nil,
			want: []string{"10.0.0.1:7946", "10.0.0.2:7946", "10.0.0.3:7946", "10.0.0.4:7946", "10.0.0.6:7946", "10.0.0.7:7946"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, rec := keyedEnv(t, "backend", tt.keys...)
			f := newTestProvider(t, "file", map[string]any{"path": path}, env)
			for range 2 { // the second read must not log again
				if got := seedsNow(t, f); !sameAddrs(got, tt.want) {
					t.Fatalf("Seeds = %q, want %q", got, tt.want)
				}
			}
			for line, says := range tt.warned {
				if n := rec.count("WARN", path, line, says); n != 1 {
					t.Errorf("%d warnings naming %s and saying %q, want 1", n, line, says)
				}
			}
			if n := rec.count("WARN"); n != len(tt.warned) {
				t.Errorf("%d warnings, want %d", n, len(tt.warned))
			}
		})
	}
}

// TestFileSignedLines: records also work in the line format, one per
// line, where a # inside a record is not a comment.
func TestFileSignedLines(t *testing.T) {
	key := keyring.Generate()
	path := filepath.Join(t.TempDir(), "seeds")
	writeFile(t, path, fmt.Sprintf("# load balancers\n%s\n  %s\n10.0.0.3:7946\n",
		signedRecord(t, keyring.Keys{key}, "lb#1", "10.0.0.1:7946"),
		signedRecord(t, keyring.Keys{key}, "lb-2", "[2001:db8::2]:7946")))
	env, rec := keyedEnv(t, "backend", key)
	f := newTestProvider(t, "file", map[string]any{"path": path}, env)
	if got, want := seedsNow(t, f), []string{"10.0.0.1:7946", "[2001:db8::2]:7946"}; !sameAddrs(got, want) {
		t.Fatalf("Seeds = %q, want %q", got, want)
	}
	if rec.count("WARN", "line=4", "unsigned") != 1 || rec.count("WARN") != 1 {
		t.Error("want one warning, about the unsigned line 4")
	}
}

// TestExecSignedRecords: a publish-command that stores SCRIMP_SEED_RECORD
// and a command that prints what was stored make a signed exec registry.
func TestExecSignedRecords(t *testing.T) {
	key, otherKey := keyring.Generate(), keyring.Generate()
	store := filepath.Join(t.TempDir(), "records")
	section := map[string]any{
		"command":         []string{writeScript(t, "cat "+store+"\n")},
		"publish-command": []string{writeScript(t, `printf '%s\n' "$SCRIMP_SEED_RECORD" >> `+store+"\n")},
	}
	lbEnv, _ := keyedEnv(t, "lb-1", key)
	publish(t, newTestProvider(t, "exec", section, lbEnv).(Publisher), "10.0.0.1:7946")
	otherEnv, _ := keyedEnv(t, "lb-9", otherKey)
	publish(t, newTestProvider(t, "exec", section, otherEnv).(Publisher), "10.0.0.9:7946")

	env, rec := keyedEnv(t, "backend", key)
	if got, want := seedsNow(t, newTestProvider(t, "exec", section, env)), []string{"10.0.0.1:7946"}; !sameAddrs(got, want) {
		t.Fatalf("Seeds = %q, want %q", got, want)
	}
	if rec.count("WARN", "line=2", "signature matches no key") != 1 || rec.count("WARN") != 1 {
		t.Error("want one warning, about the record signed with another key")
	}
	data, err := os.ReadFile(store)
	if err != nil {
		t.Fatal(err)
	}
	if r := decodeRecord(t, bytes.SplitN(data, []byte("\n"), 2)[0]); r.Name != "lb-1" || r.Address != "10.0.0.1:7946" || r.Sig == "" {
		t.Errorf("published record %+v", r)
	}
}

// TestRekey: after a rotation of the cluster's keyring, a provider signs
// with the new primary and checks records against the new keys only, so
// that a node started later with only the new key finds the load
// balancers, and records signed with a removed key are skipped.
func TestRekey(t *testing.T) {
	oldKey, newKey := keyring.Generate(), keyring.Generate()
	store := filepath.Join(t.TempDir(), "records")
	section := map[string]any{
		"command":         []string{writeScript(t, "cat "+store+"\n")},
		"publish-command": []string{writeScript(t, `printf '%s\n' "$SCRIMP_SEED_RECORD" > `+store+"\n")},
	}
	lbEnv, _ := keyedEnv(t, "lb-1", oldKey)
	lb := newTestProvider(t, "exec", section, lbEnv)
	publish(t, lb.(Publisher), "10.0.0.1:7946")
	readerEnv, _ := keyedEnv(t, "backend", oldKey)
	reader := newTestProvider(t, "exec", section, readerEnv)
	if got := seedsNow(t, reader); !sameAddrs(got, []string{"10.0.0.1:7946"}) {
		t.Fatalf("before the rotation: Seeds = %q", got)
	}

	// install + use: both keys, the new one primary.
	for _, p := range []Provider{lb, reader} {
		if err := p.(Rekeyer).Rekey(keyring.Keys{newKey, oldKey}); err != nil {
			t.Fatal(err)
		}
	}
	publish(t, lb.(Publisher), "10.0.0.1:7946")
	newOnlyEnv, _ := keyedEnv(t, "late", newKey)
	if got := seedsNow(t, newTestProvider(t, "exec", section, newOnlyEnv)); !sameAddrs(got, []string{"10.0.0.1:7946"}) {
		t.Fatalf("a node with only the new key: Seeds = %q (the record is not signed with the new primary)", got)
	}

	// remove: a record signed with the old key no longer counts.
	if err := reader.(Rekeyer).Rekey(keyring.Keys{newKey}); err != nil {
		t.Fatal(err)
	}
	oldEnv, _ := keyedEnv(t, "lb-old", oldKey)
	publish(t, newTestProvider(t, "exec", section, oldEnv).(Publisher), "10.0.0.1:7946")
	if got := seedsNow(t, reader); len(got) != 0 {
		t.Fatalf("after the old key was removed: Seeds = %q, want none", got)
	}

	// A node that started without a keyring cannot be rekeyed.
	plainEnv, _ := testEnv(t)
	if err := newTestProvider(t, "exec", section, plainEnv).(Rekeyer).Rekey(keyring.Keys{newKey}); err == nil {
		t.Error("Rekey of a provider without a keyring succeeded")
	}
}
