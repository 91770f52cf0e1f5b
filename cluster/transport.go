package cluster

import (
	"errors"
	"fmt"
	"log"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/memberlist"
)

// streamLimits bound this node's outgoing TCP streams.
type streamLimits struct {
	// dial bounds connecting, for every stream memberlist opens (reliable
	// messages, push/pull, joins): the profile's TCPTimeout (10 s on a
	// LAN) is what a member that never answers TCP would otherwise cost.
	dial time.Duration
	// stream bounds a reliable message from dial to the end of its write;
	// memberlist sets no deadline on those, so a member that accepts and
	// never reads would hold the send for good. memberlist replaces it
	// with its own (TCPTimeout) on push/pulls and pings.
	stream time.Duration
}

// limitsFor returns the stream limits of a profile: a connect takes a few
// round trips, far below these; a 1 MiB set written within stream needs
// 1 MiB/s locally, 200 KiB/s on a LAN, 70 KiB/s over a WAN.
func limitsFor(profile string) streamLimits {
	switch profile {
	case "local":
		return streamLimits{dial: 250 * time.Millisecond, stream: time.Second}
	case "wan":
		return streamLimits{dial: 3 * time.Second, stream: 15 * time.Second}
	}
	return streamLimits{dial: time.Second, stream: 5 * time.Second}
}

const (
	// maxPacket is the largest UDP datagram the transport reads.
	maxPacket = 65536
	// udpReadBuffer is the socket receive buffer asked for, halved until
	// the kernel takes it (as memberlist does).
	udpReadBuffer = 2 << 20
)

// transport is memberlist's network transport (TCP streams and UDP
// packets on one address and port) with two changes over its own
// NetTransport:
//   - every outgoing stream's dial is bounded by limits.dial and the
//     stream by limits.stream, rather than by a lower Config.TCPTimeout,
//     which would also bound whole push/pulls and the reading of incoming
//     streams (a large set on a slow link);
//   - a received packet is read into one reused buffer and copied out at
//     its size. NetTransport allocates (and clears) 64 KiB per packet and
//     keeps all of it alive while the packet waits and is handled: at
//     1,000 members that was an eighth of the gossip's CPU.
//
// memberlist calls its methods from several goroutines at once.
type transport struct {
	tcp     *net.TCPListener
	udp     *net.UDPConn
	limits  streamLimits
	logger  *log.Logger
	packets chan *memberlist.Packet
	streams chan net.Conn
	closing atomic.Bool
	once    sync.Once
	wg      sync.WaitGroup
}

var _ memberlist.NodeAwareTransport = (*transport)(nil)

// newTransport binds TCP and UDP on addr:port (port 0: a port free for
// both, retrying one taken for one protocol but not the other) and starts
// reading them.
func newTransport(addr string, port int, limits streamLimits, logger *log.Logger) (*transport, error) {
	ip := net.ParseIP(addr)
	if ip == nil {
		return nil, fmt.Errorf("cluster: bind address %q is not an IP address", addr)
	}
	tries := 1
	if port == 0 {
		tries = 10
	}
	var err error
	for range tries {
		var t *transport
		if t, err = bindTransport(ip, port, limits, logger); err == nil {
			return t, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	return nil, fmt.Errorf("cluster: bind gossip on %s:%d: %w", addr, port, err)
}

func bindTransport(ip net.IP, port int, limits streamLimits, logger *log.Logger) (*transport, error) {
	tcp, err := net.ListenTCP("tcp", &net.TCPAddr{IP: ip, Port: port})
	if err != nil {
		return nil, err
	}
	port = tcp.Addr().(*net.TCPAddr).Port
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: port})
	if err != nil {
		tcp.Close()
		return nil, err
	}
	for size := udpReadBuffer; size > 0; size /= 2 {
		if err = udp.SetReadBuffer(size); err == nil {
			break
		}
	}
	if err != nil {
		tcp.Close()
		udp.Close()
		return nil, fmt.Errorf("UDP receive buffer: %w", err)
	}
	t := &transport{tcp: tcp, udp: udp, limits: limits, logger: logger,
		packets: make(chan *memberlist.Packet), streams: make(chan net.Conn)}
	t.wg.Go(t.acceptStreams)
	t.wg.Go(t.readPackets)
	return t, nil
}

// GetAutoBindPort returns the port bound, the kernel's choice for port 0.
func (t *transport) GetAutoBindPort() int { return t.tcp.Addr().(*net.TCPAddr).Port }

// FinalAdvertiseAddr is where peers reach this node: ip and port when ip
// is given, else the bound address and port (a private address of this
// host when bound to all of them), as NetTransport decides.
func (t *transport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip != "" {
		a := net.ParseIP(ip)
		if a == nil {
			return nil, 0, fmt.Errorf("cluster: advertise address %q is not an IP address", ip)
		}
		if a4 := a.To4(); a4 != nil {
			a = a4
		}
		return a, port, nil
	}
	bound := t.tcp.Addr().(*net.TCPAddr).IP
	if bound.IsUnspecified() {
		private, err := sockaddr.GetPrivateIP()
		if err != nil {
			return nil, 0, fmt.Errorf("cluster: find a private address to advertise: %w", err)
		}
		if bound = net.ParseIP(private); bound == nil {
			return nil, 0, errors.New("cluster: no private address to advertise; set the advertise address")
		}
	}
	return bound, t.GetAutoBindPort(), nil
}

func (t *transport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	ap, err := netip.ParseAddrPort(a.Addr)
	if err != nil {
		// memberlist hands out resolved addresses; a name still works.
		ua, rerr := net.ResolveUDPAddr("udp", a.Addr)
		if rerr != nil {
			return time.Time{}, rerr
		}
		ap = ua.AddrPort()
	}
	_, err = t.udp.WriteToUDPAddrPort(b, ap)
	return time.Now(), err
}

func (t *transport) PacketCh() <-chan *memberlist.Packet { return t.packets }

func (t *transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: min(timeout, t.limits.dial)}
	conn, err := d.Dial("tcp", a.Addr)
	if err != nil {
		return nil, err
	}
	if err := conn.SetDeadline(time.Now().Add(t.limits.stream)); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

func (t *transport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown closes both sockets and waits for the readers. memberlist
// calls it once; more calls do nothing.
func (t *transport) Shutdown() error {
	t.once.Do(func() {
		t.closing.Store(true)
		t.tcp.Close()
		t.udp.Close()
		t.wg.Wait()
	})
	return nil
}

// acceptStreams hands accepted connections to memberlist until Shutdown,
// waiting 5 ms after a failed accept, doubling up to a second.
func (t *transport) acceptStreams() {
	var wait time.Duration
	for {
		conn, err := t.tcp.AcceptTCP()
		if err != nil {
			if t.closing.Load() {
				return
			}
			wait = min(max(2*wait, 5*time.Millisecond), time.Second)
			t.logger.Printf("[ERR] memberlist: Error accepting TCP connection: %v", err)
			time.Sleep(wait)
			continue
		}
		wait = 0
		t.streams <- conn
	}
}

// readPackets hands received packets to memberlist until Shutdown, each
// copied out of the one read buffer at its own size.
func (t *transport) readPackets() {
	buf := make([]byte, maxPacket)
	for {
		n, from, err := t.udp.ReadFromUDPAddrPort(buf)
		at := time.Now()
		if err != nil {
			if t.closing.Load() {
				return
			}
			t.logger.Printf("[ERR] memberlist: Error reading UDP packet: %v", err)
			continue
		}
		if n < 1 {
			continue // memberlist needs at least the message type
		}
		// Unmapped: bound to all addresses, the socket may be IPv6 and
		// name an IPv4 peer ::ffff:a.b.c.d.
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		t.packets <- &memberlist.Packet{
			Buf:       append([]byte(nil), buf[:n]...),
			From:      net.UDPAddrFromAddrPort(from),
			Timestamp: at,
		}
	}
}
