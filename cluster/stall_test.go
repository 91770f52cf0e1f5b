package cluster

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/scrimplb/scrimp/catalog"
)

// blackholeTransport is a memberlist transport that gossips over UDP like
// any other but whose TCP port never answers: its listening socket has a
// backlog of zero, filled by one connection nobody accepts, so the kernel
// drops every further SYN and a peer's dial hangs until its own timeout.
// This is what a member behind a firewall dropping TCP, or a fake member
// advertising an address that never answers, looks like to its peers.
// Its own outgoing streams work (it can join).
type blackholeTransport struct {
	udp     *net.UDPConn
	tcpFD   int
	filler  net.Conn
	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{}
	wg      sync.WaitGroup
}

var _ memberlist.Transport = (*blackholeTransport)(nil)

func newBlackholeTransport(t *testing.T, ip string) *blackholeTransport {
	t.Helper()
	for range 20 {
		bt, err := tryBlackhole(ip)
		if err == nil {
			return bt
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatal(err)
		}
	}
	t.Fatal("no free port for a blackholed member")
	return nil
}

func tryBlackhole(ip string) (*blackholeTransport, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	addr := &syscall.SockaddrInet4{}
	copy(addr.Addr[:], net.ParseIP(ip).To4())
	if err := syscall.Bind(fd, addr); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("bind: %w", err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("listen: %w", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("getsockname: %w", err)
	}
	port := sa.(*syscall.SockaddrInet4).Port
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip), Port: port})
	if err != nil {
		syscall.Close(fd)
		return nil, err
	}
	// One connection fills a backlog of zero; the kernel drops later SYNs.
	filler, err := net.DialTimeout("tcp", net.JoinHostPort(ip, strconv.Itoa(port)), time.Second)
	if err != nil {
		udp.Close()
		syscall.Close(fd)
		return nil, fmt.Errorf("fill the backlog: %w", err)
	}
	bt := &blackholeTransport{udp: udp, tcpFD: fd, filler: filler,
		packets: make(chan *memberlist.Packet, 64), streams: make(chan net.Conn), done: make(chan struct{})}
	bt.wg.Go(bt.readPackets)
	return bt, nil
}

func (bt *blackholeTransport) readPackets() {
	for {
		buf := make([]byte, 65536)
		n, from, err := bt.udp.ReadFrom(buf)
		if err != nil {
			return
		}
		select {
		case bt.packets <- &memberlist.Packet{Buf: buf[:n], From: from, Timestamp: time.Now()}:
		case <-bt.done:
			return
		}
	}
}

func (bt *blackholeTransport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	a := bt.udp.LocalAddr().(*net.UDPAddr)
	return a.IP, a.Port, nil
}

func (bt *blackholeTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	to, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		return time.Time{}, err
	}
	_, err = bt.udp.WriteTo(b, to)
	return time.Now(), err
}

func (bt *blackholeTransport) PacketCh() <-chan *memberlist.Packet { return bt.packets }

func (bt *blackholeTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", addr, timeout)
}

func (bt *blackholeTransport) StreamCh() <-chan net.Conn { return bt.streams }

// Shutdown closes the sockets and stops the reader, which memberlist may
// have stopped reading from.
func (bt *blackholeTransport) Shutdown() error {
	close(bt.done)
	bt.udp.Close()
	bt.filler.Close()
	syscall.Close(bt.tcpFD)
	bt.wg.Wait()
	return nil
}

// newBlackholedMember starts a memberlist node gossiping a backend beacon
// whose set can never be fetched, and joins it to join.
func newBlackholedMember(t *testing.T, ip string, i int, join string) {
	t.Helper()
	set := catalog.EncodeMeta(catalog.Meta{Role: catalog.RoleBackend, Applications: []catalog.Application{app(fmt.Sprintf("hole%d", i), 8080)}})
	beacon, err := catalog.EncodeBeacon(catalog.Beacon{Role: catalog.RoleBackend, Digest: catalog.DigestOf(set)})
	if err != nil {
		t.Fatal(err)
	}
	conf := memberlist.DefaultLocalConfig()
	conf.Name = fmt.Sprintf("hole-%d", i)
	conf.Transport = newBlackholeTransport(t, ip)
	conf.Delegate = &rawDelegate{meta: beacon}
	conf.LogOutput = newTestWriter(t)
	ml, err := memberlist.Create(conf)
	if err != nil {
		conf.Transport.Shutdown()
		t.Fatal(err)
	}
	t.Cleanup(func() { ml.Shutdown() })
	if _, err := ml.Join([]string{join}); err != nil {
		t.Fatalf("blackholed member %d cannot join: %v", i, err)
	}
}

// TestBlackholedMembersDoNotDelayAJoin: 20 members that gossip but whose
// TCP never answers (every fetch of their sets hangs until its dial times
// out) must not hold up a healthy backend: the load balancer fetches it
// and shows it with its applications promptly, and when it drains, the
// load balancer's acknowledgement reaches it promptly too. Before sends
// left the worker, each hanging fetch blocked it for the profile's TCP
// timeout in turn, and the healthy join waited for all of them.
func TestBlackholedMembersDoNotDelayAJoin(t *testing.T) {
	for _, tc := range []struct {
		name         string
		lb, b, holes int // last byte of each one's loopback address
		settle       bool
	}{
		// The members are there and the load balancer has tried each: a
		// new backend joins a cluster they already sit in.
		{"members already there", 150, 151, 152, true},
		// They join just before it: its fetch is queued behind theirs.
		{"members joining with it", 154, 155, 156, false},
	} {
		t.Run(tc.name, func(t *testing.T) { blackholedJoin(t, tc.lb, tc.b, tc.holes, tc.settle) })
	}
}

func blackholedJoin(t *testing.T, lbIP, bIP, holesIP int, settle bool) {
	const holes = 20
	const bound = 2 * time.Second // target 1 s; slack for a busy 2-core machine
	lb := testNode(t, lbIP, catalog.RoleLB)
	for i := range holes {
		newBlackholedMember(t, fmt.Sprintf("127.0.0.%d", holesIP), i, lb.LocalAddr())
	}
	if settle {
		waitFor(t, "the load balancer to fail to fetch every blackholed member", 30*time.Second, func() bool {
			n := 0
			for i := range holes {
				if f, ok := fetchOf(lb, fmt.Sprintf("hole-%d", i)); ok && f.kind == fetchFetching && f.asked >= 1 {
					n++
				}
			}
			return n == holes && failedSends(lb) == holes
		})
	}

	web := app("web", 8080)
	b := testNode(t, bIP, catalog.RoleBackend, web)
	joined := time.Now()
	if _, err := b.Join([]string{lb.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	served := func() bool {
		for _, n := range lb.Snapshot().Nodes {
			if n.Name == b.LocalName() && len(n.Applications) == 1 {
				return true
			}
		}
		return false
	}
	waitFor(t, "the healthy backend in the load balancer's snapshot", 60*time.Second, served)
	took := time.Since(joined)
	t.Logf("healthy backend served %v after its join, with %d blackholed members", took, holes)
	if took > bound {
		t.Fatalf("healthy backend served %v after its join, want under %v", took, bound)
	}

	// Drain: the load balancer acknowledges the draining set as soon as
	// its snapshot shows it (as lb does after a reload).
	web.State = catalog.StateDraining
	drained := time.Now()
	if err := b.UpdateApplications(catalog.RoleBackend, []catalog.Application{web}, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	var snap catalog.Snapshot
	waitFor(t, "the load balancer to see the drain", 60*time.Second, func() bool {
		snap = lb.Snapshot()
		for _, n := range snap.Nodes {
			if n.Name == b.LocalName() && n.Digest == b.LocalDigest() {
				return true
			}
		}
		return false
	})
	seen := time.Since(drained)
	acked := time.Now()
	lb.Acknowledge(snap)
	waitFor(t, "the acknowledgement to reach the draining backend", 60*time.Second, func() bool { return len(b.Unacknowledged()) == 0 })
	ackTook := time.Since(acked)
	t.Logf("drain seen by the load balancer after %v; acknowledged at the backend %v after Acknowledge", seen, ackTook)
	if seen > bound || ackTook > bound {
		t.Fatalf("drain seen after %v, acknowledged after %v, want each under %v", seen, ackTook, bound)
	}
}

// failedSends counts the members c's sender holds a failure against.
func failedSends(c *Cluster) uint64 {
	c.send.mu.Lock()
	defer c.send.mu.Unlock()
	var n uint64
	for _, m := range c.send.members {
		if m.gate.fails > 0 {
			n++
		}
	}
	return n
}

// TestTransportBoundsStreams: the transport gives up a dial to a member
// whose TCP never answers at its dial limit, not memberlist's timeout
// (10 s on a LAN), and a write to a member that accepts but never reads
// at its stream limit; memberlist sets no deadline on those writes.
func TestTransportBoundsStreams(t *testing.T) {
	limits := streamLimits{dial: 200 * time.Millisecond, stream: 300 * time.Millisecond}
	tr, err := newTransport("127.0.0.153", 0, limits, newStdLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Shutdown() })

	hole := newBlackholeTransport(t, "127.0.0.153")
	t.Cleanup(func() { hole.Shutdown() })
	ip, port, _ := hole.FinalAdvertiseAddr("", 0)
	start := time.Now()
	_, err = tr.DialAddressTimeout(memberlist.Address{Addr: net.JoinHostPort(ip.String(), strconv.Itoa(port)), Name: "hole"}, 10*time.Second)
	if took := time.Since(start); err == nil || took > 5*time.Second {
		t.Fatalf("dial to a blackholed port: err %v after %v, want a timeout near %v", err, took, limits.dial)
	}

	// A listener that accepts and never reads.
	ln, err := net.Listen("tcp", "127.0.0.153:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		for _, c := range held {
			c.Close()
		}
	})
	conn, err := tr.DialTimeout(ln.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	big := make([]byte, 64<<20) // far more than the sockets' buffers
	_, err = conn.Write(big)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write to a peer that never reads: %v, want the stream deadline", err)
	}
}
