package cluster

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/catalog"
)

// startMember starts a member from cfg, filling in what every test member
// has (profile, logger), and kills it when the test ends.
func startMember(t *testing.T, cfg Config) *Cluster {
	t.Helper()
	cfg.Profile = "local"
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New %s: %v", cfg.NodeName, err)
	}
	t.Cleanup(func() { c.Kill() })
	return c
}

// serves reports whether lb routes application name to the backend named
// node.
func serves(lb *Cluster, name, node string) bool {
	services, _ := lb.Snapshot().Services()
	for _, s := range services {
		if s.Name != name {
			continue
		}
		for _, srv := range s.Servers {
			if srv.Node == node {
				return true
			}
		}
	}
	return false
}

// neverMember fails the test if node shows up in c's membership within a
// short while: long enough for a join that half worked to show.
func neverMember(t *testing.T, c *Cluster, node string) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		for _, n := range c.Snapshot().Nodes {
			if n.Name == node {
				t.Fatalf("%s is a member of %s's cluster", node, c.LocalName())
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cluster.allowed-cidrs: a node whose address is outside the allowed
// networks never becomes a member and is never routed to. memberlist
// checks the address every node advertises and the source of UDP alive
// messages; it still answers the stranger's TCP push/pull (so Join may
// report success on the stranger's side), which is why the key, not the
// CIDR list, is what keeps a cluster private (docs/security.md).
func TestAllowedCIDRs(t *testing.T) {
	cases := []struct {
		name    string
		allowed []string
		member  bool
	}{
		{"stranger outside the allowed network", []string{"127.0.0.1/32"}, false},
		{"member inside the allowed network", []string{"127.0.0.0/8"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var logs syncBuffer
			lb := startMember(t, Config{NodeName: "lb", BindAddr: "127.0.0.1", Role: catalog.RoleLB, AllowedCIDRs: tc.allowed,
				Logger: slog.New(slog.NewTextHandler(io.MultiWriter(&logs, newTestWriter(t)), nil))})
			b := startMember(t, Config{NodeName: "backend", BindAddr: "127.0.0.2",
				Role: catalog.RoleBackend, Applications: []catalog.Application{app("web", 8080)}})
			_, err := b.Join([]string{lb.LocalAddr()})
			if !tc.member {
				neverMember(t, lb, "backend")
				if serves(lb, "web", "backend") {
					t.Fatal("the load balancer routes to the refused backend")
				}
				if len(logs.lines("127.0.0.2 is not allowed")) == 0 {
					t.Error("the load balancer did not log the refusal")
				}
				return
			}
			if err != nil {
				t.Fatalf("Join: %v", err)
			}
			waitFor(t, "the backend's application at the load balancer", 5*time.Second, func() bool { return serves(lb, "web", "backend") })
		})
	}
}

// A list memberlist cannot parse, or one that leaves out this node's own
// address (memberlist would refuse the node itself), is an error.
func TestAllowedCIDRsInvalid(t *testing.T) {
	cases := []struct {
		name    string
		allowed []string
		want    string
	}{
		{"not a CIDR", []string{"10.0.0.0/8", "not-a-cidr"}, "not-a-cidr"},
		{"without this node", []string{"10.0.0.0/8"}, "this node's own address is outside the allowed CIDRs"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(Config{NodeName: "lb", BindAddr: "127.0.0.1", Profile: "local", Role: catalog.RoleLB, AllowedCIDRs: tc.allowed})
			if err == nil {
				c.Kill()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// transitionMember is one node of TestEncryptionTransition, restarted
// with new gossip settings on the same address and port.
type transitionMember struct {
	name string
	ip   string
	port int
	role catalog.Role
	apps []catalog.Application
	c    *Cluster
}

// gossipStage is one step of turning encryption on in a running cluster.
type gossipStage struct {
	name   string
	keys   [][]byte
	accept bool // AcceptPlaintext (memberlist GossipVerifyIncoming off)
	send   bool // SendPlaintext (memberlist GossipVerifyOutgoing off)
}

func (m *transitionMember) start(t *testing.T, st gossipStage) {
	t.Helper()
	m.c = startMember(t, Config{NodeName: m.name, BindAddr: m.ip, BindPort: m.port, Role: m.role,
		Applications: m.apps, Keys: st.keys, AcceptPlaintext: st.accept, SendPlaintext: st.send})
	if m.port == 0 {
		_, p, _ := net.SplitHostPort(m.c.LocalAddr())
		m.port, _ = strconv.Atoi(p)
	}
}

// Turning encryption on in a running plaintext cluster, node by node,
// the way memberlist's TestMemberlist_EncryptedGossipTransition does:
// plaintext → every node restarted with the key, accepting and sending
// plaintext → sending encrypted, still accepting plaintext → both
// enforced. Two backends serve "web", so while one restarts the load
// balancer keeps routing to the other; after every restart every member
// sees all three and the load balancer routes to both backends. At the
// end a node without the key can no longer join.
func TestEncryptionTransition(t *testing.T) {
	key := bytes.Repeat([]byte{0x5c}, 32)
	members := []*transitionMember{
		{name: "lb", ip: "127.0.0.161", role: catalog.RoleLB},
		{name: "b1", ip: "127.0.0.162", role: catalog.RoleBackend, apps: []catalog.Application{app("web", 8080)}},
		{name: "b2", ip: "127.0.0.163", role: catalog.RoleBackend, apps: []catalog.Application{app("web", 8081)}},
	}
	lb := members[0]
	full := func(step string) {
		t.Helper()
		for _, m := range members {
			waitFor(t, step+": "+m.name+" sees 3 members", 10*time.Second, func() bool {
				return m.c.Members() == 3 && len(m.c.Snapshot().Nodes) == 3
			})
		}
		waitFor(t, step+": the load balancer routes web to b1 and b2", 10*time.Second, func() bool {
			return serves(lb.c, "web", "b1") && serves(lb.c, "web", "b2")
		})
	}

	plain := gossipStage{name: "plaintext"}
	for _, m := range members {
		m.start(t, plain)
	}
	for _, m := range members[1:] {
		if _, err := m.c.Join([]string{lb.c.LocalAddr()}); err != nil {
			t.Fatalf("%s joins: %v", m.name, err)
		}
	}
	full(plain.name)

	stages := []gossipStage{
		{name: "key, plaintext both ways", keys: [][]byte{key}, accept: true, send: true},
		{name: "key, sending encrypted", keys: [][]byte{key}, accept: true},
		{name: "key, enforced", keys: [][]byte{key}},
	}
	for _, st := range stages {
		for i, m := range members {
			step := fmt.Sprintf("%s: %s restarted", st.name, m.name)
			if err := m.c.Close(time.Second); err != nil {
				t.Fatalf("%s: close: %v", step, err)
			}
			// As memberlist's test does: the others see the node gone
			// before it comes back.
			for _, o := range members {
				if o != m {
					waitFor(t, step+": "+o.name+" sees "+m.name+" gone", 10*time.Second, func() bool { return o.c.Members() == 2 })
				}
			}
			if m.role == catalog.RoleBackend {
				// The other backend serves while this one is away.
				other := members[3-i]
				if !serves(lb.c, "web", other.name) {
					t.Fatalf("%s: the load balancer does not route to %s", step, other.name)
				}
			}
			m.start(t, st)
			peer := lb
			if m == lb {
				peer = members[1]
			}
			if _, err := m.c.Join([]string{peer.c.LocalAddr()}); err != nil {
				t.Fatalf("%s: join: %v", step, err)
			}
			full(step)
		}
	}

	// Locked down: a node without the key cannot join, and a node with
	// the key that still sends plaintext is refused too.
	for i, st := range []gossipStage{plain, {name: "key, still sending plaintext", keys: [][]byte{key}, accept: true, send: true}} {
		stranger := startMember(t, Config{NodeName: fmt.Sprintf("late-%d", i), BindAddr: fmt.Sprintf("127.0.0.%d", 164+i),
			Role: catalog.RoleBackend, Applications: []catalog.Application{app("web", 9000)},
			Keys: st.keys, AcceptPlaintext: st.accept, SendPlaintext: st.send})
		if _, err := stranger.Join([]string{lb.c.LocalAddr()}); err == nil {
			t.Fatalf("%s: a node joined the encrypted cluster", st.name)
		}
		neverMember(t, lb.c, stranger.LocalName())
		if serves(lb.c, "web", stranger.LocalName()) {
			t.Fatalf("%s: the load balancer routes to the stranger", st.name)
		}
	}
}
