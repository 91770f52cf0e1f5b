package node

import (
	"bytes"
	"math"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// forgedLeave is memberlist's dead message (its net.go) saying Node left:
// From is Node itself.
type forgedLeave struct {
	Incarnation uint32
	Node        string
	From        string
}

// sendForgedLeave sends the load balancer's gossip port a plaintext
// memberlist "dead" packet (message type 5, then msgpack, as memberlist's
// encode does) saying name left at incarnation 2^32-1, which memberlist
// cannot refute. The cluster package's tests send the same, encrypted and
// labelled, as a key holder would.
func sendForgedLeave(t *testing.T, gossipAddr, name string) {
	t.Helper()
	var packet bytes.Buffer
	packet.WriteByte(5) // deadMsg
	if err := codec.NewEncoder(&packet, &codec.MsgpackHandle{}).Encode(forgedLeave{Incarnation: math.MaxUint32, Node: name, From: name}); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("udp", gossipAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(packet.Bytes()); err != nil {
		t.Fatal(err)
	}
}

// TestForgedLeaveThroughNginx forges a "left" for a live backend at the
// highest incarnation: nginx stops sending it requests at once, and within
// seconds requests through nginx reach it again, with none failing after.
func TestForgedLeaveThroughNginx(t *testing.T) {
	tc := newTestCluster(t, "127.0.41", "local")
	tc.addBackend(1)
	tc.addBackend(2)
	tc.waitServed(10*time.Second, "backend-1", "backend-2")

	start := time.Now()
	sendForgedLeave(t, tc.seed, "backend-1")
	tc.waitUnrouted(5*time.Second, "backend-1")
	// nginx takes the new configuration at its reload: wait until
	// requests through it stop reaching backend-1.
	for {
		counts, _ := tc.burst(10)
		if counts["backend-1"] == 0 && counts["backend-2"] == 10 {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("requests still reach backend-1 %v after the forged leave: %v", time.Since(start), counts)
		}
	}
	removed := time.Since(start)
	// The local profile forgets a dead member after 3s, and the probe
	// round and a rejoin attempt take a few more.
	const bound = 12 * time.Second
	tc.waitServed(bound, "backend-1")
	back := time.Since(start)
	t.Logf("forged leave at incarnation 2^32-1: out of nginx after %v, served through nginx again %v after the forged packet",
		removed.Round(time.Millisecond), back.Round(time.Millisecond))

	counts, errs := tc.burst(60)
	if len(errs) > 0 || counts["backend-1"] == 0 || counts["backend-2"] == 0 {
		t.Fatalf("after the forged leave: answers %v, %d failures (first: %v)", counts, len(errs), first(errs))
	}
}
