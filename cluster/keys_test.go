package cluster

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/keyring"
)

// keyedNode is testNode with a gossip keyring and label.
func keyedNode(t *testing.T, ip int, role catalog.Role, keys [][]byte, label string, apps ...catalog.Application) *Cluster {
	t.Helper()
	c, err := New(Config{
		NodeName:     fmt.Sprintf("%s-%d", role, ip),
		BindAddr:     fmt.Sprintf("127.0.0.%d", ip),
		Profile:      "local",
		Role:         role,
		Applications: apps,
		Keys:         keys,
		Label:        label,
		Logger:       testLogger(t),
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Kill() })
	return c
}

// A node without the cluster's key, with another key or with another label
// cannot join, and its applications never reach the load balancer; a node
// with the key (primary or not) and the label joins and is routed.
func TestKeyringAndLabelKeepStrangersOut(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	other := bytes.Repeat([]byte{9}, 32)
	lb := keyedNode(t, 101, catalog.RoleLB, [][]byte{key}, "prod")
	cases := []struct {
		name  string
		ip    int
		keys  [][]byte
		label string
		joins bool
	}{
		{"no key", 102, nil, "prod", false},
		{"wrong key", 103, [][]byte{other}, "prod", false},
		{"wrong label", 104, [][]byte{key}, "staging", false},
		{"no label", 105, [][]byte{key}, "", false},
		{"same primary, another key installed too", 106, [][]byte{key, other}, "prod", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := keyedNode(t, tc.ip, catalog.RoleBackend, tc.keys, tc.label, app("web-"+fmt.Sprint(tc.ip), 8080))
			_, err := b.Join([]string{lb.LocalAddr()})
			if tc.joins {
				if err != nil {
					t.Fatalf("Join: %v", err)
				}
				waitFor(t, "the backend's application at the load balancer", 5*time.Second, func() bool {
					services, _ := lb.Snapshot().Services()
					for _, s := range services {
						if s.Name == "web-"+fmt.Sprint(tc.ip) && len(s.Servers) == 1 {
							return true
						}
					}
					return false
				})
				return
			}
			if err == nil {
				t.Fatalf("Join succeeded")
			}
			// Give gossip a moment in which a join that half worked
			// would show; the stranger must never appear.
			deadline := time.Now().Add(500 * time.Millisecond)
			for time.Now().Before(deadline) {
				for _, n := range lb.Snapshot().Nodes {
					if n.Name == b.LocalName() {
						t.Fatalf("%s is a member of the load balancer's cluster", n.Name)
					}
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// capture collects log output, to check that no key reaches it.
type capture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

func (c *capture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// rotatingNode is keyedNode whose keyring is saved to file, as node does,
// and whose log also goes to logs.
func rotatingNode(t *testing.T, ip int, role catalog.Role, keys [][]byte, file string, logs *capture) *Cluster {
	t.Helper()
	if err := keyring.Save(file, keys); err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{
		NodeName: fmt.Sprintf("%s-%d", role, ip),
		BindAddr: fmt.Sprintf("127.0.0.%d", ip),
		Profile:  "local",
		Role:     role,
		Keys:     keys,
		Label:    "prod",
		SaveKeys: func(keys [][]byte) error { return keyring.Save(file, keys) },
		Logger:   slog.New(slog.NewTextHandler(io.MultiWriter(newTestWriter(t), logs), &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Kill() })
	return c
}

// Rotating the key across three nodes: install the new key everywhere, use
// it, remove the old one. Every node stays a member throughout, every key
// file follows, a node with only the new key can join afterwards and one
// with only the old key cannot. Keys never reach the logs.
func TestKeyRotation(t *testing.T) {
	old, next := keyring.Generate(), keyring.Generate()
	oldFP, nextFP := keyring.Fingerprint(old), keyring.Fingerprint(next)
	dir := t.TempDir()
	logs := &capture{}
	var nodes []*Cluster
	var files []string
	for i, ip := range []int{121, 122, 123} {
		role := catalog.RoleBackend
		if i == 0 {
			role = catalog.RoleLB
		}
		files = append(files, filepath.Join(dir, fmt.Sprintf("keys-%d.json", ip)))
		nodes = append(nodes, rotatingNode(t, ip, role, [][]byte{old}, files[i], logs))
		if i > 0 {
			if _, err := nodes[i].Join([]string{nodes[0].LocalAddr()}); err != nil {
				t.Fatalf("Join: %v", err)
			}
		}
	}
	allMembers := func() bool {
		for _, n := range nodes {
			if n.Members() != 3 {
				return false
			}
		}
		return true
	}
	waitFor(t, "3 members everywhere", 5*time.Second, allMembers)

	// Watch membership during the whole rotation.
	stop := make(chan struct{})
	lost := make(chan string, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			for _, n := range nodes {
				if m := n.Members(); m != 3 {
					select {
					case lost <- fmt.Sprintf("%s saw %d members", n.LocalName(), m):
					default:
					}
				}
			}
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	steps := []struct {
		name      string
		from      int
		op        KeyOpKind
		key       []byte
		keys      map[string]int
		primaries map[string]int
		file      [][]byte
	}{
		{"list", 1, KeyList, nil, map[string]int{oldFP: 3}, map[string]int{oldFP: 3}, [][]byte{old}},
		{"install", 1, KeyInstall, next, map[string]int{oldFP: 3, nextFP: 3}, map[string]int{oldFP: 3}, [][]byte{old, next}},
		{"install again", 2, KeyInstall, next, map[string]int{oldFP: 3, nextFP: 3}, map[string]int{oldFP: 3}, [][]byte{old, next}},
		{"use", 0, KeyUse, next, map[string]int{oldFP: 3, nextFP: 3}, map[string]int{nextFP: 3}, [][]byte{next, old}},
		{"remove", 2, KeyRemove, old, map[string]int{nextFP: 3}, map[string]int{nextFP: 3}, [][]byte{next}},
	}
	for _, st := range steps {
		res, err := nodes[st.from].KeyOp(ctx, st.op, st.key)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if res.Members != 3 || res.Responded != 3 || len(res.Errors) != 0 {
			t.Fatalf("%s: %+v, want 3 members, 3 answers, no errors", st.name, res)
		}
		if !maps.Equal(res.Keys, st.keys) || !maps.Equal(res.Primaries, st.primaries) {
			t.Fatalf("%s: keys %v primaries %v, want %v and %v", st.name, res.Keys, res.Primaries, st.keys, st.primaries)
		}
		for _, f := range files {
			got, err := keyring.Load(f)
			if err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			if !slices.EqualFunc(got, st.file, bytes.Equal) {
				t.Fatalf("%s: %s holds %v, want %v", st.name, f, got, keyring.Keys(st.file))
			}
		}
	}
	close(stop)
	wg.Wait()
	select {
	case why := <-lost:
		t.Fatalf("membership changed during the rotation: %s", why)
	default:
	}

	// The primary cannot be removed; nothing is sent then.
	if _, err := nodes[1].KeyOp(ctx, KeyRemove, next); !errors.Is(err, ErrKeyRefused) {
		t.Fatalf("removing the primary: %v, want ErrKeyRefused", err)
	}
	if _, err := nodes[1].KeyOp(ctx, KeyInstall, []byte("short")); !errors.Is(err, ErrBadKey) {
		t.Fatalf("installing a 5-byte key: %v, want ErrBadKey", err)
	}

	// Newcomers: only the new key gets in.
	joiner := rotatingNode(t, 124, catalog.RoleBackend, [][]byte{next}, filepath.Join(dir, "new.json"), logs)
	if _, err := joiner.Join([]string{nodes[0].LocalAddr()}); err != nil {
		t.Fatalf("a node with the new key cannot join: %v", err)
	}
	waitFor(t, "4 members", 5*time.Second, func() bool { return nodes[0].Members() == 4 })
	stale := rotatingNode(t, 125, catalog.RoleBackend, [][]byte{old}, filepath.Join(dir, "old.json"), logs)
	if _, err := stale.Join([]string{nodes[0].LocalAddr()}); err == nil {
		t.Fatal("a node with only the old key joined")
	}
	if m := nodes[0].Members(); m != 4 {
		t.Fatalf("%d members after the stale node's attempt, want 4", m)
	}

	out := logs.String()
	if !strings.Contains(out, "gossip keyring changed") {
		t.Fatal("no log line about the keyring change")
	}
	for _, k := range [][]byte{old, next} {
		for _, form := range []string{base64.StdEncoding.EncodeToString(k), hex.EncodeToString(k), string(k)} {
			if strings.Contains(out, form) {
				t.Fatal("a key is in the log")
			}
		}
	}
}

// A node gossiping in plaintext refuses key operations, naming the setting.
func TestKeyOpWithoutKeyring(t *testing.T) {
	c := keyedNode(t, 126, catalog.RoleLB, nil, "")
	_, err := c.KeyOp(context.Background(), KeyList, nil)
	if !errors.Is(err, ErrNoKeyring) || !strings.Contains(err.Error(), "cluster.keyring-file") {
		t.Fatalf("KeyOp = %v, want ErrNoKeyring naming cluster.keyring-file", err)
	}
}

// A key operation recorded and replayed later is refused: one issued too
// long ago (or too far ahead), and one whose id was applied already.
func TestKeyOpReplay(t *testing.T) {
	k1, k2, k3 := keyring.Generate(), keyring.Generate(), keyring.Generate()
	dir := t.TempDir()
	logs := &capture{}
	a := rotatingNode(t, 127, catalog.RoleLB, [][]byte{k1, k2}, filepath.Join(dir, "a.json"), logs)
	b := rotatingNode(t, 128, catalog.RoleBackend, [][]byte{k1, k2}, filepath.Join(dir, "b.json"), logs)
	if _, err := b.Join([]string{a.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b knows a", 5*time.Second, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		_, ok := b.members[a.LocalName()]
		return ok
	})
	holds := func(key []byte) bool {
		return slices.ContainsFunc(b.keyring.GetKeys(), func(k []byte) bool { return bytes.Equal(k, key) })
	}
	refusals := func() int { return strings.Count(logs.String(), "refusing key operation") }

	now := time.Now().Unix()
	for i, issued := range []int64{now - 600, now + 600} {
		b.handleMsg(encodeMessage(keyOpMsg{From: a.LocalName(), ID: [keyOpIDLen]byte{byte(i)}, Issued: issued, Op: KeyUse, Key: k2}))
		waitFor(t, "the stale operation refused", 5*time.Second, func() bool { return refusals() == i+1 })
		if !bytes.Equal(b.keyring.GetPrimaryKey(), k1) {
			t.Fatalf("an operation issued at %d changed the primary", issued)
		}
	}

	install := encodeMessage(keyOpMsg{From: a.LocalName(), ID: [keyOpIDLen]byte{9}, Issued: now, Op: KeyInstall, Key: k3})
	b.handleMsg(install)
	waitFor(t, "the fresh install applied", 5*time.Second, func() bool { return holds(k3) })
	if _, err := b.KeyOp(context.Background(), KeyRemove, k3); err != nil {
		t.Fatal(err)
	}
	b.handleMsg(install)
	waitFor(t, "the replay refused", 5*time.Second, func() bool { return refusals() == 3 })
	if holds(k3) || !strings.Contains(logs.String(), "applied already") {
		t.Fatal("the replayed install was applied")
	}
}

// Answers count only for a pending operation, from a member it asked,
// once; and no more than maxKeyOps operations wait at once.
func TestKeyResultsAndBounds(t *testing.T) {
	c := keyedNode(t, 129, catalog.RoleLB, [][]byte{keyring.Generate()}, "")
	id := [keyOpIDLen]byte{1}
	col := &keyCollect{want: map[string]bool{"b-1": true, "b-2": true}, results: make(chan keyResultMsg, 2)}
	c.mu.Lock()
	c.keyOps[id] = col
	c.mu.Unlock()
	for _, m := range []keyResultMsg{
		{From: "b-3", ID: id},                    // not asked
		{From: "b-1", ID: [keyOpIDLen]byte{2}},   // no such operation
		{From: "b-1", ID: id, Error: "first"},    // counts
		{From: "b-1", ID: id, Error: "repeated"}, // answered already
		{From: "b-2", ID: id, Error: "second"},   // counts
		{From: "b-2", ID: id, Error: "repeated"}, // answered already
	} {
		c.handleMsg(encodeMessage(m))
	}
	var got []string
	for len(col.results) > 0 {
		got = append(got, (<-col.results).Error)
	}
	if !slices.Equal(got, []string{"first", "second"}) {
		t.Fatalf("accepted answers %q, want first and second", got)
	}

	c.mu.Lock()
	for i := range maxKeyOps - 1 {
		c.keyOps[[keyOpIDLen]byte{0xff, byte(i)}] = &keyCollect{}
	}
	c.mu.Unlock()
	if _, err := c.KeyOp(context.Background(), KeyList, nil); !errors.Is(err, ErrKeyOpsBusy) {
		t.Fatalf("KeyOp with %d operations pending: %v, want ErrKeyOpsBusy", maxKeyOps, err)
	}
}
