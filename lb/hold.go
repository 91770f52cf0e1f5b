package lb

import (
	"context"
	"net"
	"sync/atomic"
	"time"
)

// holdKeepAlive is the TCP keepalive of a held connection: a probe after
// a second without traffic, the connection dropped when one goes
// unanswered for a second. A host that vanished (no FIN, no RST) ends its
// held connections within about two seconds; Linux counts these in whole
// seconds, so one is the shortest.
var holdKeepAlive = net.KeepAliveConfig{Enable: true, Idle: time.Second, Interval: time.Second, Count: 1}

// holdMaxBytes bounds what is read from a held connection. Some protocols
// greet a new client (SMTP, SSH, MySQL); an application that keeps sending
// to a client that never asked is not held any longer.
const holdMaxBytes = 64 << 10

// hold is an idle connection a checker keeps open to its instance, so that
// it learns at once when the instance's process dies: the kernel closes
// the process's sockets, and the read of the held connection returns.
// Its watcher goroutine owns the reads; the checker's loop owns the rest.
type hold struct {
	conn    net.Conn
	since   time.Time
	ended   chan struct{} // closed when the connection ended and the watcher is done
	dropped atomic.Bool   // the checker closed it: no wake-up
}

// over reports whether the held connection has ended. It does not block.
func (h *hold) over() bool {
	select {
	case <-h.ended:
		return true
	default:
		return false
	}
}

// dialHold opens a connection to addr to hold, within timeout.
func dialHold(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout, KeepAliveConfig: holdKeepAlive}
	return d.DialContext(ctx, "tcp", addr)
}

// watch reads conn until it ends (closed by the peer, by the keepalive, by
// drop, or holdMaxBytes read), then closes it, marks h ended and, unless
// it was dropped, sends on wake without blocking. It runs in its own
// goroutine.
func (h *hold) watch(wake chan<- struct{}) {
	buf := make([]byte, 512)
	for read := 0; read <= holdMaxBytes; {
		n, err := h.conn.Read(buf)
		read += n
		if err != nil {
			break
		}
	}
	h.conn.Close()
	close(h.ended)
	if h.dropped.Load() {
		return
	}
	select {
	case wake <- struct{}{}:
	default:
	}
}

// drop closes the held connection for the checker: its watcher ends
// without waking it.
func (h *hold) drop() {
	h.dropped.Store(true)
	h.conn.Close()
}
