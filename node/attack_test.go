package node

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/cluster"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/keyring"
	"github.com/scrimplb/scrimp/seed"
)

// The attacks of issue 12, tried against real nodes on loopback with a
// real nginx: strangers without the cluster's key or label join nothing,
// advertise nothing and get no request; a backend pointed at a load
// balancer it cannot authenticate keeps looking for the real one.

// writeKeyFile writes a keyring file (mode 0600) holding keys, primary
// first, and returns its path.
func writeKeyFile(t *testing.T, keys ...[]byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keyring.json")
	if err := keyring.Save(path, keyring.Keys(keys)); err != nil {
		t.Fatal(err)
	}
	return path
}

// withKeys returns a configuration edit that sets the gossip keyring file
// ("" for none) and label ("" for none).
func withKeys(keyFile, label string) func(*config.Config) {
	return func(cfg *config.Config) {
		cfg.Cluster.KeyringFile, cfg.Cluster.Label = keyFile, label
	}
}

// webFor returns a backend edit: the application "web" (the harness's)
// serves domain with weight.
func webFor(domain string, weight int) func(*config.Config) {
	return func(cfg *config.Config) {
		app := &cfg.Backend.Applications[0]
		app.Domains, app.Weight = []string{domain}, weight
	}
}

// both applies the edits in order.
func both(edits ...func(*config.Config)) func(*config.Config) {
	return func(cfg *config.Config) {
		for _, e := range edits {
			e(cfg)
		}
	}
}

// logTap is a slog.Handler that passes records on and keeps, for each, its
// message and attributes as text, so tests can wait for what a node logs
// (a failed join, a skipped seed entry, a refused packet).
type logTap struct {
	next  slog.Handler
	attrs string // the With attributes, as " key=value"...
	lines *tapLines
}

type tapLines struct {
	mu    sync.Mutex
	lines []string
}

// tapLogger wraps logger in a new tap.
func tapLogger(logger *slog.Logger) (*slog.Logger, *tapLines) {
	lines := &tapLines{}
	return slog.New(&logTap{next: logger.Handler(), lines: lines}), lines
}

func (h *logTap) Enabled(ctx context.Context, l slog.Level) bool { return true }

func (h *logTap) Handle(ctx context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	b.WriteString(h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	h.lines.mu.Lock()
	h.lines.lines = append(h.lines.lines, b.String())
	h.lines.mu.Unlock()
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h *logTap) WithAttrs(as []slog.Attr) slog.Handler {
	s := h.attrs
	for _, a := range as {
		s += fmt.Sprintf(" %s=%v", a.Key, a.Value)
	}
	return &logTap{next: h.next.WithAttrs(as), attrs: s, lines: h.lines}
}

func (h *logTap) WithGroup(name string) slog.Handler {
	return &logTap{next: h.next.WithGroup(name), attrs: h.attrs, lines: h.lines}
}

// count is how many lines logged so far contain every one of parts.
func (l *tapLines) count(parts ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

// waitLogged polls until at least n lines contain every one of parts,
// calling check (if not nil) on every round so that an invariant is held
// the whole time, not only at the end.
func (l *tapLines) waitLogged(t *testing.T, timeout time.Duration, n int, check func(), parts ...string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if check != nil {
			check()
		}
		if l.count(parts...) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s, %d log lines with %q; want %d", timeout, l.count(parts...), parts, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hasNode reports whether the snapshot lists a node named name.
func hasNode(s catalog.Snapshot, name string) bool {
	for _, n := range s.Nodes {
		if n.Name == name {
			return true
		}
	}
	return false
}

// hasLB reports whether the snapshot lists a load balancer.
func hasLB(s catalog.Snapshot) bool {
	for _, n := range s.Nodes {
		if n.Role == catalog.RoleLB {
			return true
		}
	}
	return false
}

// refusals counts the streams and packets memberlist on the node named
// node logged as refused: undecryptable, unencrypted, or with another
// label.
func refusals(l *tapLines, node string) int {
	return l.count("node="+node, "memberlist: failed to receive") +
		l.count("node="+node, "memberlist: discarding") +
		l.count("node="+node, "memberlist: Decrypt packet failed")
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// failedJoin is what a backend logs each time its join attempt fails
// (cluster.Maintain).
const failedJoin = "cannot join the cluster"

// A load balancer with a keyring and a label, a real nginx and one
// legitimate backend for example.com. Each stranger runs a real scrimp
// backend advertising the same application and domain with weight 100 and
// its own app, and tries to join through the load balancer's gossip
// address: it is never a member and gets none of the requests sent
// through nginx. The last case, with the right key and label, is the
// control that the same joiner does get traffic.
func TestStrangersGetNoTraffic(t *testing.T) {
	key, other := keyring.Generate(), keyring.Generate()
	keys, wrong := writeKeyFile(t, key), writeKeyFile(t, other)
	var logs *tapLines
	tc := newTestClusterSetup(t, "127.0.41", "local", "nginx", nil, func(tc *testCluster) {
		tc.edit = withKeys(keys, "prod")
		tc.host = "example.com"
		tc.logger, logs = tapLogger(tc.logger)
	})
	legit := tc.addBackendEdit(1, 5*time.Second, 0, webFor("example.com", 1))
	tc.waitServed(10*time.Second, legit.name)

	cases := []struct {
		name, keyFile, label string
		served               bool
	}{
		{"no key", "", "prod", false},
		{"wrong key", wrong, "prod", false},
		{"right key, wrong label", keys, "staging", false},
		{"right key, no label", keys, "", false},
		{"right key and label (control)", keys, "prod", true},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			joiner := tc.addBackendEdit(10+i, 5*time.Second, 0,
				both(webFor("example.com", 100), withKeys(c.keyFile, c.label)))
			t.Cleanup(joiner.stop)
			refused := refusals(logs, "lb")
			if c.served {
				tc.waitServed(10*time.Second, joiner.name)
				counts, errs := tc.burst(24)
				if len(errs) > 0 || counts[joiner.name] == 0 || counts[legit.name]+counts[joiner.name] != 24 {
					t.Fatalf("answers %v, %d failures (first: %v); want the keyed joiner to get a share", counts, len(errs), first(errs))
				}
				t.Logf("control: a keyed joiner with weight 100 got %d of 24 requests", counts[joiner.name])
				return
			}
			// The joiner keeps trying; two failed attempts show it
			// reached the load balancer and was refused. All the while
			// it must not be a member.
			notMember := func() {
				if hasNode(tc.lb.Snapshot(), joiner.name) || tc.routed(joiner.name) {
					t.Fatalf("%s is a member of the load balancer's cluster or in its nginx configuration", joiner.name)
				}
			}
			logs.waitLogged(t, 15*time.Second, 2, notMember, "node="+joiner.name, failedJoin)
			// The load balancer logged what it refused (its line may come
			// just after the joiner's own for the same attempt).
			waitFor(t, "two refusals logged by the load balancer", 5*time.Second, func() bool {
				notMember()
				return refusals(logs, "lb") >= refused+2
			})
			counts, errs := tc.burst(24)
			if len(errs) > 0 || counts[legit.name] != 24 {
				t.Fatalf("answers %v, %d failures (first: %v); want all 24 from %s", counts, len(errs), first(errs), legit.name)
			}
			notMember()
			if n := tc.lb.Members(); n != 2 {
				t.Errorf("the load balancer sees %d members, want 2 (itself and %s)", n, legit.name)
			}
			if n := joiner.node.Members(); n != 1 {
				t.Errorf("the stranger sees %d members, want 1 (itself)", n)
			}
		})
	}
}

// writeSeeds replaces the seed file at path with lines, atomically (a
// rename, as configuration management does).
func writeSeeds(t *testing.T, path string, lines ...string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// signedRecord is the seed record a load balancer named name at addr
// publishes with keys.
func signedRecord(t *testing.T, keys keyring.Keys, name, addr string) string {
	t.Helper()
	b, err := seed.SignRecord(keys, name, addr, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// tampered returns record with its address replaced by addr, the
// signature left as it was.
func tampered(t *testing.T, record, addr string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(record), &m); err != nil {
		t.Fatal(err)
	}
	m["address"] = addr
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A keyed backend whose seed file first names an impostor "load balancer"
// (in a record signed with the cluster's key, as when an attacker takes
// over an address a real load balancer once published) beside unsigned,
// bare and tampered entries for the real one: it skips the bad entries
// with one log line each, never gets into the impostor's cluster or its
// nginx, and keeps trying. Once the file names the real load balancer in
// a signed record, the backend is served through the real nginx.
func TestBackendKeepsLookingWithoutAuthenticatedLB(t *testing.T) {
	key := keyring.Generate()
	keyFile, otherFile := writeKeyFile(t, key), writeKeyFile(t, keyring.Generate())
	cases := []struct {
		name, impostorKeys string
	}{
		{"impostor without a keyring", ""},
		{"impostor with another key", otherFile},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var logs *tapLines
			real := newTestClusterSetup(t, fmt.Sprintf("127.0.%d", 43+2*i), "local", "nginx", nil, func(tc *testCluster) {
				tc.edit = withKeys(keyFile, "prod")
				tc.host = "example.com"
				tc.logger, logs = tapLogger(tc.logger)
			})
			// The attacker knows the label: labels are not secret.
			impostor := newTestClusterSetup(t, fmt.Sprintf("127.0.%d", 44+2*i), "local", "nginx", nil, func(tc *testCluster) {
				tc.edit = withKeys(c.impostorKeys, "prod")
				tc.host = "example.com"
			})
			seeds := filepath.Join(t.TempDir(), "seeds")
			good := signedRecord(t, keyring.Keys{key}, "lb", impostor.seed)
			writeSeeds(t, seeds,
				"# the impostor holds an address a signed record names",
				good,
				"# the real load balancer, in entries a keyed node must skip",
				signedRecord(t, nil, "lb", real.seed), // unsigned
				real.seed,                             // a bare address
				tampered(t, good, real.seed),          // signature of another address
			)
			b := real.addBackendEdit(1, 5*time.Second, 0, both(webFor("example.com", 1), func(cfg *config.Config) {
				cfg.Seed = config.Seed{Provider: "file", Sections: map[string]json.RawMessage{
					"file": json.RawMessage(fmt.Sprintf(`{"path": %q}`, seeds)),
				}}
			}))

			apart := func() {
				if hasNode(impostor.lb.Snapshot(), b.name) || impostor.routed(b.name) || impostor.lb.Members() != 1 {
					t.Fatalf("%s got into the impostor's cluster (it sees %d members) or its nginx", b.name, impostor.lb.Members())
				}
			}
			// Three failed attempts: the backend is not settled, it keeps
			// asking the seeds.
			logs.waitLogged(t, 20*time.Second, 3, func() {
				apart()
				if hasLB(b.node.Snapshot()) || real.routed(b.name) {
					t.Fatalf("%s joined a load balancer through a seed entry it should have skipped", b.name)
				}
			}, "node="+b.name, failedJoin)
			if n := b.node.Members(); n != 1 {
				t.Errorf("the backend sees %d members before the seed file names the real load balancer, want 1", n)
			}
			// Each bad entry is logged once, however often the file is read.
			if n := logs.count("node="+b.name, "seed: skipping entry"); n != 3 {
				t.Errorf("%d log lines about skipped seed entries, want 3 (unsigned, bare address, tampered)", n)
			}
			if _, err := impostor.get(); err == nil {
				t.Errorf("the impostor's nginx serves example.com")
			}

			writeSeeds(t, seeds, good, signedRecord(t, keyring.Keys{key}, "lb", real.seed))
			t.Logf("served through the real load balancer %s after the seed file named it",
				real.waitServed(15*time.Second, b.name).Round(time.Millisecond))
			counts, errs := real.burst(20)
			if len(errs) > 0 || counts[b.name] != 20 {
				t.Fatalf("through the real nginx: answers %v, %d failures (first: %v)", counts, len(errs), first(errs))
			}
			apart()
			if n := logs.count("node="+b.name, "seed: skipping entry"); n != 3 {
				t.Errorf("%d log lines about skipped seed entries after the rewrite, want still 3", n)
			}
		})
	}
}

// A gossip node without the cluster's key or label, set up as a load
// balancer (the role that fetches application sets), contacts a keyed
// backend's gossip port directly: the backend logs the stream as refused,
// the stranger learns no member and no application, and the backend's
// cluster is unchanged. The control, with the key and the label, does
// read the backend's application set the same way.
func TestWrongKeyCannotReadApplicationSets(t *testing.T) {
	key := keyring.Generate()
	keys := writeKeyFile(t, key)
	var logs *tapLines
	tc := newTestClusterSetup(t, "127.0.49", "local", "nginx", nil, func(tc *testCluster) {
		tc.edit = withKeys(keys, "prod")
		tc.host = "example.com"
		tc.logger, logs = tapLogger(tc.logger)
	})
	b := tc.addBackendEdit(1, 5*time.Second, 0, webFor("example.com", 1))
	tc.waitServed(10*time.Second, b.name)

	cases := []struct {
		name  string
		keys  keyring.Keys
		label string
		reads bool
	}{
		{"no key", nil, "prod", false},
		{"wrong key", keyring.Keys{keyring.Generate()}, "prod", false},
		{"right key, wrong label", keyring.Keys{key}, "staging", false},
		{"right key and label (control)", keyring.Keys{key}, "prod", true},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			name := fmt.Sprintf("stranger-%d", i)
			stranger, err := cluster.New(cluster.Config{
				NodeName: name, BindAddr: fmt.Sprintf("127.0.49.%d", 20+i), Profile: "local",
				Role: catalog.RoleLB, Keys: c.keys, Label: c.label,
				Logger: tc.logger.With("node", name, "component", "cluster"),
			})
			if err != nil {
				t.Fatal(err)
			}
			// Leave, not vanish: the backend must not wait for it.
			t.Cleanup(func() { stranger.Close(time.Second) })
			apps := func() int {
				services, _ := stranger.Snapshot().Services()
				n := 0
				for _, s := range services {
					n += len(s.Servers)
				}
				return n
			}
			before := refusals(logs, b.name)
			_, err = stranger.Join([]string{b.node.GossipAddr()})
			if c.reads {
				if err != nil {
					t.Fatalf("Join: %v", err)
				}
				waitFor(t, "the backend's application set at the keyed stranger", 10*time.Second, func() bool { return apps() == 1 })
				return
			}
			if err == nil {
				t.Fatalf("the stranger joined the backend")
			}
			waitFor(t, "the backend to log the refused stream", 5*time.Second, func() bool { return refusals(logs, b.name) > before })
			if n := apps(); n != 0 || stranger.Members() != 1 || hasNode(stranger.Snapshot(), b.name) {
				t.Fatalf("the stranger sees %d members and %d application instances, want only itself and none", stranger.Members(), n)
			}
			if hasNode(b.node.Snapshot(), name) || b.node.Members() != 2 {
				t.Fatalf("the backend sees %d members (the stranger among them: %v), want 2", b.node.Members(), hasNode(b.node.Snapshot(), name))
			}
		})
	}
}

// pingPacket is a memberlist UDP ping (message type 0) for the node named
// node, as a stranger would hand-craft it: the msgpack map {SeqNo, Node},
// encrypted with key (AES-GCM, memberlist's version 1 format, the label
// as additional data) unless key is nil, behind a label header unless
// label is "". A node that accepts it answers with an ack to the sender.
func pingPacket(t *testing.T, node string, seq uint8, key []byte, label string) []byte {
	t.Helper()
	if len(node) > 31 || seq > 127 {
		t.Fatalf("pingPacket: name %q or sequence %d too long for a fixed-size msgpack encoding", node, seq)
	}
	msg := []byte{0, 0x82, 0xa5}
	msg = append(msg, "SeqNo"...)
	msg = append(msg, seq, 0xa4)
	msg = append(msg, "Node"...)
	msg = append(msg, 0xa0|byte(len(node)))
	msg = append(msg, node...)
	if key != nil {
		block, err := aes.NewCipher(key)
		if err != nil {
			t.Fatal(err)
		}
		gcm, err := cipher.NewGCM(block)
		if err != nil {
			t.Fatal(err)
		}
		nonce := make([]byte, gcm.NonceSize())
		rand.Read(nonce)
		msg = gcm.Seal(append([]byte{1}, nonce...), nonce, msg, []byte(label))
	}
	if label == "" {
		return msg
	}
	return append(append([]byte{244, byte(len(label))}, label...), msg...)
}

// Hand-made UDP packets, the kind a forged "dead" or "leave" would be,
// sent straight to a keyed node's gossip port: without the key, or
// without the label, the node logs the packet as refused and does not
// answer. The control, a ping encrypted with the key behind the label,
// is answered, so the packets are well formed and only the key or label
// keeps the others out.
func TestWrongKeyPacketsGetNoAnswer(t *testing.T) {
	key := keyring.Generate()
	logger, logs := tapLogger(testLogger(t))
	target, err := cluster.New(cluster.Config{
		NodeName: "target", BindAddr: "127.0.49.40", Profile: "local", Role: catalog.RoleBackend,
		Keys: keyring.Keys{key}, Label: "prod", Logger: logger.With("node", "target"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { target.Kill() })
	conn, err := net.ListenPacket("udp", "127.0.49.41:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	to, err := net.ResolveUDPAddr("udp", target.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		key      []byte
		label    string
		answered bool
	}{
		{"plaintext, no label", nil, "", false},
		{"plaintext with the label", nil, "prod", false},
		{"wrong key", keyring.Generate(), "prod", false},
		{"right key, wrong label", key, "staging", false},
		{"right key, no label", key, "", false},
		{"right key and label (control)", key, "prod", true},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := refusals(logs, "target")
			if _, err := conn.WriteTo(pingPacket(t, "target", uint8(i+1), c.key, c.label), to); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 2048)
			if c.answered {
				conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, from, err := conn.ReadFrom(buf)
				if err != nil || n == 0 || from.String() != to.String() {
					t.Fatalf("no answer from %s to a ping with the key and label: %d bytes from %v, %v", to, n, from, err)
				}
				if refusals(logs, "target") != before {
					t.Fatalf("the target logged the keyed ping as refused")
				}
				return
			}
			waitFor(t, "refusal logged by the target", 5*time.Second, func() bool { return refusals(logs, "target") > before })
			// The refusal is logged before any answer could be sent;
			// give a stray one a moment to arrive anyway.
			conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if n, _, err := conn.ReadFrom(buf); err == nil {
				t.Fatalf("the target answered a stranger's packet with %d bytes", n)
			}
		})
	}
}
