package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/admin"
	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/cluster"
	"github.com/scrimplb/scrimp/keyring"
)

// runKeys runs `scrimp keys args...` in process with stdin.
func runKeys(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := newRootCmd()
	cmd.SetArgs(append([]string{"keys"}, args...))
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	err = cmd.Execute()
	return out.String(), errOut.String(), err
}

func TestKeysGenerate(t *testing.T) {
	a, _, err := runKeys(t, "", "generate")
	if err != nil {
		t.Fatal(err)
	}
	b, _, _ := runKeys(t, "", "generate")
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(a))
	if err != nil || len(key) != 32 || a == b {
		t.Fatalf("generate printed %q then %q, want two different base64 32-byte keys", a, b)
	}
}

// The whole rotation through the command line against two real members,
// the first serving its admin socket; then a member that is gone shows as
// failed and the command fails.
func TestKeysCommand(t *testing.T) {
	dir := t.TempDir()
	old, next := keyring.Generate(), keyring.Generate()
	oldB64, nextB64 := base64.StdEncoding.EncodeToString(old), base64.StdEncoding.EncodeToString(next)
	var members []*cluster.Cluster
	for _, ip := range []string{"127.0.0.151", "127.0.0.152"} {
		c, err := cluster.New(cluster.Config{NodeName: "n-" + ip, BindAddr: ip, Profile: "local", Role: catalog.RoleLB, Keys: [][]byte{old}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Kill() })
		members = append(members, c)
	}
	if _, err := members[1].Join([]string{members[0].LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); members[0].Members() != 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the members never saw each other")
		}
	}
	sock := filepath.Join(dir, "admin.sock")
	srv, err := admin.New(admin.Config{Socket: sock, Keys: members[0]})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	conf := filepath.Join(dir, "lb.json")
	writeJSON(t, conf, fmt.Sprintf(`{"role": "lb", "node-name": "lb", "admin-socket": %q,
  "seed": {"provider": "static", "static": {"addresses": []}}, "lb": {}}`, sock))

	oldFP, nextFP := keyring.Fingerprint(old), keyring.Fingerprint(next)
	steps := []struct {
		name, stdin string
		args        []string
		want        []string // lines of the table, then the summary
	}{
		{"list", "", []string{"list"}, []string{oldFP + "  2/2      2", "list: 2 of 2 members answered, no errors"}},
		{"install from stdin", nextB64 + "\n", []string{"install", "-"}, []string{oldFP + "  2/2      2", nextFP + "  2/2      0", "install: 2 of 2"}},
		{"use from the argument", "", []string{"use", nextB64}, []string{nextFP + "  2/2      2", oldFP + "  2/2      0", "use: 2 of 2"}},
		{"remove", oldB64, []string{"remove", "-"}, []string{nextFP + "  2/2      2", "remove: 2 of 2 members answered, no errors"}},
	}
	for _, st := range steps {
		out, _, err := runKeys(t, st.stdin, append(st.args, "--config", conf)...)
		if err != nil {
			t.Fatalf("%s: %v\n%s", st.name, err, out)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != len(st.want)+1 || !strings.HasPrefix(lines[0], "KEY") {
			t.Fatalf("%s printed\n%s\nwant a header and %q", st.name, out, st.want)
		}
		for i, w := range st.want {
			if !strings.HasPrefix(lines[i+1], w) {
				t.Fatalf("%s: line %d is %q, want %q", st.name, i+2, lines[i+1], w)
			}
		}
		if strings.Contains(out, oldB64) || strings.Contains(out, nextB64) {
			t.Fatalf("%s printed a key", st.name)
		}
	}

	out, _, err := runKeys(t, "", "list", "--json", "--config", conf)
	if err != nil {
		t.Fatal(err)
	}
	var res admin.KeysResponse
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("--json printed %s: %v", out, err)
	}
	if res.Op != "list" || res.Members != 2 || res.Responded != 2 || res.Keys[nextFP] != 2 || len(res.Keys) != 1 {
		t.Fatalf("--json: %+v", res)
	}

	// A member that died (and is not yet declared dead) cannot answer.
	members[1].Kill()
	out, _, err = runKeys(t, "", "list", "--config", conf)
	if err == nil || !strings.Contains(err.Error(), "failed on 1 of 2 members") {
		t.Fatalf("list with a dead member: %v\n%s", err, out)
	}
	if !strings.Contains(out, "1 failed:") || !strings.Contains(out, "n-127.0.0.152: ") {
		t.Fatalf("list with a dead member printed\n%s", out)
	}
}

// Errors name the socket and why it failed, or the key problem without
// the key.
func TestKeysCommandErrors(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "none.sock")
	conf := filepath.Join(dir, "lb.json")
	writeJSON(t, conf, fmt.Sprintf(`{"role": "lb", "node-name": "lb", "admin-socket": %q,
  "seed": {"provider": "static", "static": {"addresses": []}}, "lb": {}}`, sock))
	off := filepath.Join(dir, "off.json")
	writeJSON(t, off, `{"role": "lb", "node-name": "lb", "admin-socket": "",
  "seed": {"provider": "static", "static": {"addresses": []}}, "lb": {}}`)
	short := base64.StdEncoding.EncodeToString([]byte("0123456789"))
	cases := []struct {
		name, stdin string
		args        []string
		want        []string
	}{
		{"no node", "", []string{"list", "--config", conf}, []string{sock, "no such socket"}},
		{"no admin socket", "", []string{"list", "--config", off}, []string{off, "admin-socket is empty"}},
		{"no config", "", []string{"list"}, []string{"--config FILE is required"}},
		{"no key", "", []string{"install", "--config", conf}, []string{"accepts 1 arg"}},
		{"short key", "", []string{"install", short, "--config", conf}, []string{"10 bytes"}},
		{"empty stdin", "", []string{"use", "-", "--config", conf}, []string{"0 bytes"}},
		{"not base64", "not a key!", []string{"remove", "-", "--config", conf}, []string{"not valid standard base64"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := runKeys(t, tc.stdin, tc.args...)
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Fatalf("error %v, want one containing %q", err, w)
				}
			}
			if err != nil && (strings.Contains(err.Error(), short) || strings.Contains(err.Error(), "not a key!")) {
				t.Fatalf("the error quotes the key: %v", err)
			}
		})
	}
}
