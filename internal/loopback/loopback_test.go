package loopback

import (
	"net"
	"strconv"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestFreePort checks that the ports FreePort returns lie below the
// kernel's ephemeral range, where a test's outgoing connections cannot
// take them, and can be bound for TCP and UDP.
func TestFreePort(t *testing.T) {
	lo, hi := pickRange()
	if lo < 10000 || hi-lo < 1000 {
		t.Fatalf("pick range [%d, %d): want at least 1,000 ports from 10000 up", lo, hi)
	}
	seen := map[int]bool{}
	for range 20 {
		port, err := FreePort("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		if port < lo || port >= hi {
			t.Fatalf("port %d outside [%d, %d)", port, lo, hi)
		}
		seen[port] = true
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("listen tcp on the free port: %v", err)
		}
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err != nil {
			t.Fatalf("listen udp on the free port: %v", err)
		}
		pc.Close()
	}
	if len(seen) < 10 {
		t.Errorf("20 calls gave %d distinct ports: the pick is not spread", len(seen))
	}
}

// TestFreePortSkipsTaken holds a port and checks FreePort never returns it
// while held.
func TestFreePortSkipsTaken(t *testing.T) {
	port, err := FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if !portFree("127.0.0.1", port) {
		t.Fatalf("port %d reported taken right after FreePort", port)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if portFree("127.0.0.1", port) {
		t.Fatalf("port %d reported free while a listener holds it", port)
	}
}
