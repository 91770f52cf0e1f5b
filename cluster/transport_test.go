package cluster

import (
	"bytes"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// TestTransportPackets: a packet arrives whole, at its own size (not the
// 64 KiB read buffer, which would keep every queued packet that large),
// from the sender's address, and a later packet does not overwrite an
// earlier one's bytes; streams dialled reach the other side's StreamCh;
// Shutdown may be called twice.
func TestTransportPackets(t *testing.T) {
	newT := func() *transport {
		t.Helper()
		tr, err := newTransport("127.0.0.154", 0, limitsFor("local"), newStdLogger(testLogger(t)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Shutdown() })
		return tr
	}
	a, b := newT(), newT()
	bIP, bPort, err := b.FinalAdvertiseAddr("", 0)
	if err != nil {
		t.Fatal(err)
	}
	bAddr := net.JoinHostPort(bIP.String(), strconv.Itoa(bPort))
	aIP, aPort, _ := a.FinalAdvertiseAddr("", 0)
	if aIP.String() != "127.0.0.154" || aPort != a.GetAutoBindPort() {
		t.Fatalf("advertised %s:%d, want the bound 127.0.0.154:%d", aIP, aPort, a.GetAutoBindPort())
	}

	first, second := bytes.Repeat([]byte("a"), 1200), bytes.Repeat([]byte("b"), 3)
	recv := func() *memberlist.Packet {
		t.Helper()
		select {
		case p := <-b.PacketCh():
			return p
		case <-time.After(10 * time.Second):
			t.Fatal("no packet in 10 s")
			return nil
		}
	}
	if _, err := a.WriteToAddress(first, memberlist.Address{Addr: bAddr, Name: "b"}); err != nil {
		t.Fatal(err)
	}
	p1 := recv()
	if _, err := a.WriteTo(second, bAddr); err != nil {
		t.Fatal(err)
	}
	p2 := recv()
	if !bytes.Equal(p1.Buf, first) || cap(p1.Buf) > 2*len(first) {
		t.Fatalf("first packet: %d bytes (cap %d), want the %d sent, at that size", len(p1.Buf), cap(p1.Buf), len(first))
	}
	if !bytes.Equal(p2.Buf, second) {
		t.Fatalf("second packet: %q, want %q", p2.Buf, second)
	}
	if want := net.JoinHostPort("127.0.0.154", strconv.Itoa(a.GetAutoBindPort())); p1.From.String() != want {
		t.Fatalf("from %s, want %s", p1.From, want)
	}

	conn, err := a.DialAddressTimeout(memberlist.Address{Addr: bAddr}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("stream")); err != nil {
		t.Fatal(err)
	}
	select {
	case in := <-b.StreamCh():
		defer in.Close()
		got := make([]byte, 6)
		if _, err := io.ReadFull(in, got); err != nil || string(got) != "stream" {
			t.Fatalf("stream read %q, %v", got, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no stream in 10 s")
	}
	b.Shutdown()
	b.Shutdown()
}
