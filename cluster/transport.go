package cluster

import (
	"fmt"
	"log"
	"net"
	"strings"
	"time"

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

// boundedTransport is memberlist's own network transport with the dial of
// every outgoing stream bounded and a deadline on the stream. It is used
// rather than a lower Config.TCPTimeout because that one also bounds whole
// push/pulls and the reading of incoming streams (a large set on a slow
// link), which must keep the profile's value.
type boundedTransport struct {
	*memberlist.NetTransport
	limits streamLimits
}

var _ memberlist.NodeAwareTransport = (*boundedTransport)(nil)

// newTransport binds memberlist's transport as memberlist would (retrying
// an automatic port taken for one protocol but not the other).
func newTransport(addr string, port int, limits streamLimits, logger *log.Logger) (*boundedTransport, error) {
	nc := &memberlist.NetTransportConfig{BindAddrs: []string{addr}, BindPort: port, Logger: logger}
	tries := 1
	if port == 0 {
		tries = 10
	}
	var err error
	for range tries {
		var nt *memberlist.NetTransport
		if nt, err = memberlist.NewNetTransport(nc); err == nil {
			return &boundedTransport{NetTransport: nt, limits: limits}, nil
		}
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, fmt.Errorf("cluster: bind gossip on %s:%d: %w", addr, port, err)
}

func (t *boundedTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.bound(t.NetTransport.DialTimeout(addr, min(timeout, t.limits.dial)))
}

func (t *boundedTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.bound(t.NetTransport.DialAddressTimeout(a, min(timeout, t.limits.dial)))
}

func (t *boundedTransport) bound(conn net.Conn, err error) (net.Conn, error) {
	if err != nil {
		return nil, err
	}
	if err := conn.SetDeadline(time.Now().Add(t.limits.stream)); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}
