package cluster

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"math"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/memberlist"

	"github.com/scrimplb/scrimp/catalog"
)

// forgedDead is memberlist's dead message (net.go): From is who declares
// Node dead; From == Node says Node left.
type forgedDead struct {
	Incarnation uint32
	Node        string
	From        string
}

// memberlist's wire constants (net.go, security.go) that a forger needs.
const (
	deadMsgType       = 5 // deadMsg in memberlist's messageType list
	encryptionVersion = 1 // AES-GCM without padding
	gcmNonceSize      = 12
)

// forgeDeadPacket builds the UDP packet a holder of key would send to
// declare node dead (or left) at incarnation inc, as memberlist builds
// one: the message type, the msgpack-encoded message (encode in util.go),
// encrypted (encryptPayload, version 1, with the label as additional
// data), then the label header (the transport adds it last).
func forgeDeadPacket(t *testing.T, key []byte, label string, d forgedDead) []byte {
	t.Helper()
	var plain bytes.Buffer
	plain.WriteByte(deadMsgType)
	if err := codec.NewEncoder(&plain, &codec.MsgpackHandle{}).Encode(d); err != nil {
		t.Fatalf("encode dead message: %v", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, gcmNonceSize)
	if _, err := rand.Read(nonce); err != nil {
		t.Fatal(err)
	}
	packet := append([]byte{encryptionVersion}, nonce...)
	packet = gcm.Seal(packet, nonce, plain.Bytes(), []byte(label))
	packet, err = memberlist.AddLabelHeaderToPacket(packet, label)
	if err != nil {
		t.Fatal(err)
	}
	return packet
}

// sendUDP sends one packet to addr (host:port) from loopback.
func sendUDP(t *testing.T, addr string, packet []byte) {
	t.Helper()
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(packet); err != nil {
		t.Fatalf("send forged packet: %v", err)
	}
}

// routed reports whether lb routes to backend's application name.
func routed(lb *Cluster, backend, name string) bool {
	services, _ := lb.Snapshot().Services()
	for _, s := range services {
		if s.Name != name {
			continue
		}
		for _, srv := range s.Servers {
			if srv.Node == backend {
				return true
			}
		}
	}
	return false
}

// rejoinBound is how soon a live backend declared dead or left must be
// routed again on the local profile: GossipToTheDeadTime (3s), the probe
// round that forgets it (1s per live member), then a rejoin attempt (the
// first one after that is at most 2s later) and a gossip round. Measured
// on loopback (go test -run 'TestForged' -v ./cluster/): 5.5s with
// 2^32-1, 0.2s (dead) and 1.1s (left) with a refutable incarnation.
const rejoinBound = 10 * time.Second

// A member holding the cluster's key and label forges a "dead" or "left"
// message for a live backend and sends it to the load balancer: the
// backend disappears from the load balancer's snapshot, and comes back by
// itself within rejoinBound, even when the forged incarnation is 2^32-1,
// which memberlist cannot refute.
func TestForgedDeathDoesNotKeepALiveNodeOut(t *testing.T) {
	key := bytes.Repeat([]byte{3}, 32)
	const label = "prod"
	cases := []struct {
		name        string
		ip          int // the load balancer's; the backend's is ip+1
		left        bool
		incarnation uint32
	}{
		{"dead at incarnation 2^32-1", 111, false, math.MaxUint32},
		{"left at incarnation 2^32-1", 113, true, math.MaxUint32},
		{"dead at a normal incarnation", 115, false, 100},
		{"left at a normal incarnation", 117, true, 100},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			lb := keyedNode(t, tc.ip, catalog.RoleLB, [][]byte{key}, label)
			appName := fmt.Sprintf("web-%d", tc.ip)
			b := keyedNode(t, tc.ip+1, catalog.RoleBackend, [][]byte{key}, label, app(appName, 8080))
			if _, err := b.Join([]string{lb.LocalAddr()}); err != nil {
				t.Fatalf("Join: %v", err)
			}
			victim := b.LocalName()
			waitFor(t, "the load balancer routes to the backend", 5*time.Second, func() bool { return routed(lb, victim, appName) })

			from := "mallory"
			if tc.left {
				from = victim
			}
			packet := forgeDeadPacket(t, key, label, forgedDead{Incarnation: tc.incarnation, Node: victim, From: from})
			sent := time.Now()
			sendUDP(t, lb.LocalAddr(), packet)
			waitFor(t, "the forged message to remove the backend", 2*time.Second, func() bool { return !routed(lb, victim, appName) })
			gone := time.Since(sent)

			waitFor(t, "the backend to be routed again", rejoinBound, func() bool { return routed(lb, victim, appName) })
			back := time.Since(sent)
			t.Logf("%s: removed after %v, routed again %v after the forged packet", tc.name, gone.Round(time.Millisecond), back.Round(time.Millisecond))
			// And the backend sees the load balancer throughout or again.
			waitFor(t, "the backend to see the load balancer", 5*time.Second, func() bool {
				return slices.ContainsFunc(b.Snapshot().Nodes, func(n catalog.Node) bool { return n.Name == lb.LocalName() })
			})
		})
	}
}

// A member that really died is tried only a couple of times: the rejoin
// attempts end once its address refuses them twice.
func TestRejoinGivesUpOnAGoneMember(t *testing.T) {
	lb := testNode(t, 121, catalog.RoleLB)
	b := testNode(t, 122, catalog.RoleBackend, app("web", 8080))
	if _, err := b.Join([]string{lb.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the backend at the load balancer", 5*time.Second, func() bool { return routed(lb, b.LocalName(), "web") })
	if err := b.Kill(); err != nil {
		t.Fatal(err)
	}
	attempting := func() bool {
		lb.mu.Lock()
		defer lb.mu.Unlock()
		_, ok := lb.rejoin[b.LocalName()]
		return ok
	}
	waitFor(t, "the load balancer to declare the backend dead and try to rejoin it", 10*time.Second, attempting)
	// Two refused attempts: the first at reapDelay+1s, the next 1s later.
	waitFor(t, "the rejoin attempts to end", lb.reapDelay+5*time.Second, func() bool { return !attempting() })
	if routed(lb, b.LocalName(), "web") {
		t.Fatal("a dead backend is routed")
	}
}

// A member holding the cluster's key and label sends a draining backend a
// direct acknowledgement in the name of the load balancer, whose proxy
// still routes to the backend (it has not acknowledged): the backend keeps
// waiting for that load balancer, and stops as soon as the load balancer
// really acknowledges (in its beacon).
func TestForgedAckDoesNotEndADrain(t *testing.T) {
	key := bytes.Repeat([]byte{5}, 32)
	const label = "prod"
	lb := keyedNode(t, 131, catalog.RoleLB, [][]byte{key}, label)
	b := keyedNode(t, 132, catalog.RoleBackend, [][]byte{key}, label, app("web", 8080))
	if _, err := b.Join([]string{lb.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the load balancer routes to the backend", 5*time.Second, func() bool { return routed(lb, b.LocalName(), "web") })

	drainingApp := app("web", 8080)
	drainingApp.State = catalog.StateDraining
	if err := b.UpdateApplications(catalog.RoleBackend, []catalog.Application{drainingApp}, time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the load balancer to see the backend draining", 5*time.Second, func() bool { return seesDigest(lb, b) })
	if got := b.Unacknowledged(); !slices.Equal(got, []string{lb.LocalName()}) {
		t.Fatalf("Unacknowledged = %v before any acknowledgement", got)
	}

	// The impostor: a memberlist node with the key and the label, which
	// need not even be a member.
	mallory := impostor(t, "127.0.0.133", key, label)
	to := &memberlist.Node{Name: b.LocalName(), Addr: net.ParseIP("127.0.0.132"), Port: localPort(b)}
	forged := encodeMessage(ackMsg{From: lb.LocalName(), Digest: b.LocalDigest()})
	for range 3 {
		if err := mallory.SendReliable(to, forged); err != nil {
			t.Fatalf("send forged acknowledgement: %v", err)
		}
	}
	// The backend pulls the load balancer's beacon, which acknowledges
	// nothing: it must go on waiting.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if got := b.Unacknowledged(); !slices.Equal(got, []string{lb.LocalName()}) {
			t.Fatalf("after a forged acknowledgement, Unacknowledged = %v, want [%s]", got, lb.LocalName())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !seesDigest(lb, b) {
		t.Fatal("the load balancer lost the draining backend")
	}

	start := time.Now()
	lb.Acknowledge(lb.Snapshot())
	waitFor(t, "the real acknowledgement", 2*time.Second, func() bool { return len(b.Unacknowledged()) == 0 })
	t.Logf("the real acknowledgement reached the backend in %v", time.Since(start).Round(time.Millisecond))
}

// A key holder tells a draining backend that its load balancer left, at
// incarnation 2^32-1: the backend loses the load balancer for a few
// seconds but goes on waiting for it, and finishes once the load balancer,
// back, acknowledges.
func TestForgedLeaveOfTheLoadBalancerDoesNotEndADrain(t *testing.T) {
	key := bytes.Repeat([]byte{6}, 32)
	const label = "prod"
	lb := keyedNode(t, 141, catalog.RoleLB, [][]byte{key}, label)
	drainingApp := app("web", 8080)
	drainingApp.State = catalog.StateDraining
	b := keyedNode(t, 142, catalog.RoleBackend, [][]byte{key}, label, drainingApp)
	if _, err := b.Join([]string{lb.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	sees := func(c *Cluster, name string) bool {
		return slices.ContainsFunc(c.Snapshot().Nodes, func(n catalog.Node) bool { return n.Name == name })
	}
	waitFor(t, "the backend to see the load balancer", 5*time.Second, func() bool { return sees(b, lb.LocalName()) })
	if got := b.Unacknowledged(); !slices.Equal(got, []string{lb.LocalName()}) {
		t.Fatalf("Unacknowledged = %v before any acknowledgement", got)
	}

	sent := time.Now()
	sendUDP(t, b.LocalAddr(), forgeDeadPacket(t, key, label, forgedDead{Incarnation: math.MaxUint32, Node: lb.LocalName(), From: lb.LocalName()}))
	waitFor(t, "the forged leave to remove the load balancer at the backend", 2*time.Second, func() bool { return !sees(b, lb.LocalName()) })
	for !sees(b, lb.LocalName()) {
		if got := b.Unacknowledged(); !slices.Equal(got, []string{lb.LocalName()}) {
			t.Fatalf("while the load balancer is out, Unacknowledged = %v, want [%s]", got, lb.LocalName())
		}
		if time.Since(sent) > rejoinBound {
			t.Fatalf("the load balancer is not back at the backend %v after the forged leave", rejoinBound)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("the load balancer was back at the backend %v after the forged leave", time.Since(sent).Round(time.Millisecond))
	if got := b.Unacknowledged(); !slices.Equal(got, []string{lb.LocalName()}) {
		t.Fatalf("with the load balancer back, Unacknowledged = %v, want [%s]", got, lb.LocalName())
	}
	waitFor(t, "the load balancer to have the draining set", 5*time.Second, func() bool {
		return slices.ContainsFunc(lb.Snapshot().Nodes, func(n catalog.Node) bool {
			return n.Name == b.LocalName() && n.Digest == b.LocalDigest()
		})
	})
	lb.Acknowledge(lb.Snapshot())
	waitFor(t, "the real acknowledgement", 2*time.Second, func() bool { return len(b.Unacknowledged()) == 0 })
}

// impostor starts a memberlist node named mallory on addr with the
// cluster's gossip key and label, which need not even be a member: what a
// key holder could send in the load balancer's name.
func impostor(t *testing.T, addr string, key []byte, label string) *memberlist.Memberlist {
	t.Helper()
	conf := memberlist.DefaultLocalConfig()
	conf.Name, conf.BindAddr, conf.BindPort = "mallory", addr, 0
	conf.Label = label
	kr, err := memberlist.NewKeyring([][]byte{key}, key)
	if err != nil {
		t.Fatal(err)
	}
	conf.Keyring = kr
	conf.Logger = newStdLogger(testLogger(t))
	mallory, err := memberlist.Create(conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mallory.Shutdown() })
	return mallory
}

// TestRestartedNodeIsTakenAtItsJoin: a backend that left and starts again
// under its name, address and port has an incarnation no newer than what
// the load balancer remembers, which therefore ignores its join's first
// push/pull; the second one Join makes takes it at once (not a gossip round
// later), with its application set.
func TestRestartedNodeIsTakenAtItsJoin(t *testing.T) {
	lb := testNode(t, 195, catalog.RoleLB)
	first := testNode(t, 196, catalog.RoleBackend, app("web", 8080))
	if _, err := first.Join([]string{lb.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	name := first.LocalName()
	waitFetch(t, lb, name, fetchValid, digestOf(first))
	port := int(localPort(first))
	if err := first.Close(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the load balancer to see the backend leave", 5*time.Second, func() bool {
		_, known := fetchOf(lb, name)
		return !known
	})

	again, err := New(Config{
		NodeName: name, BindAddr: "127.0.0.196", BindPort: port, Profile: "local",
		Role: catalog.RoleBackend, Applications: []catalog.Application{app("web", 8081)},
		Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { again.Kill() })
	merged := lb.stats.joinStates.Load()
	if _, err := again.Join([]string{lb.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	// The load balancer merges a push/pull's members before its
	// application set, and both after the joiner's Join has returned.
	waitFor(t, "the load balancer to merge both of the restarted node's push/pulls", 5*time.Second, func() bool {
		return lb.stats.joinStates.Load() == merged+2
	})
	if st, known := fetchOf(lb, name); !known {
		t.Fatalf("after the restarted node's second push/pull, the load balancer does not know it (%s)", st)
	}
	waitFetch(t, lb, name, fetchValid, digestOf(again))
}

// digestOf is the digest of the set c advertises.
func digestOf(c *Cluster) catalog.Digest {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.digest
}
