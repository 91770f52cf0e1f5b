// Package check holds what the load balancer's active checks and a
// backend's local health checks have in common: one probe (a TCP connect,
// or an HTTP GET over a new connection), one rise/fall counter that turns
// results into up and down, and the loop that runs a check at an interval.
// Where the two differ (accepted statuses, the first result, what a refusal
// means to the caller) the difference is a parameter, not a second copy.
package check

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"
)

// Kind is what a probe does once connected.
type Kind string

// Probe kinds.
const (
	// TCP only connects: the application accepts connections.
	TCP Kind = "tcp"
	// HTTP connects, then sends one GET and expects an accepted status.
	HTTP Kind = "http"
)

// Limits on what a probe reads from the network.
const (
	// MaxHeaderBytes bounds the status line and header of an HTTP
	// answer; a health answer larger than that fails.
	MaxHeaderBytes = 64 << 10
	// DrainBytes is how much of the body is read, so that the server is
	// not cut off mid-write (some servers log that as an error). The rest
	// is never read.
	DrainBytes = 4096
)

// Probe is one check of one application instance. Each Run opens a new
// connection and closes it before returning, so a pass proves that the
// application still accepts connections, and nothing outlives a Run: no
// connection pool, no transport goroutine. Redirects are never followed:
// a 3xx is the application's answer. A Probe is a value; Run may be
// called from several goroutines at once.
type Probe struct {
	// Kind is TCP or HTTP.
	Kind Kind
	// Addr is the host:port to connect to.
	Addr string
	// TLS makes an HTTP probe speak TLS, without verifying the
	// certificate: the probe connects to an address, and the certificate
	// names the application's public domains, not that address.
	TLS bool
	// Path is what an HTTP probe requests: a path with an optional query.
	Path string
	// Host is the Host header and TLS server name of an HTTP probe;
	// empty means Addr (and no server name).
	Host string
	// UserAgent is the User-Agent header of an HTTP probe, so that the
	// application's logs tell who asks.
	UserAgent string
	// Accept is the statuses that pass an HTTP probe.
	Accept Statuses
}

// Run performs one check within timeout and returns why it failed, or nil.
// Its errors say the stage that failed: "connect: ...", "TLS handshake:
// ...", "send request: ...", "read response: ..." or a StatusError.
// Cancelling ctx ends it at once.
func (p Probe) Run(ctx context.Context, timeout time.Duration) error {
	if p.Kind != TCP && p.Kind != HTTP {
		return fmt.Errorf("probe kind %q is not one of tcp, http", p.Kind)
	}
	if p.Kind == HTTP && p.Accept == nil {
		return errors.New("HTTP probe without accepted statuses")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", p.Addr)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	if p.Kind == TCP {
		return nil
	}
	// Cancelling ctx (timeout, or the caller stopping) unblocks a read or
	// write at once. It closes the TCP connection, which the TLS one
	// (assigned to conn below) wraps: the closure must not read conn.
	raw := conn
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	if deadline, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(deadline); err != nil {
			return fmt.Errorf("set deadline: %w", err)
		}
	}
	scheme := "http"
	if p.TLS {
		scheme = "https"
		tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, ServerName: p.Host})
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("TLS handshake: %w", err)
		}
		conn = tc
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+p.Addr+p.Path, nil)
	if err != nil {
		return fmt.Errorf("health check request: %w", err)
	}
	if p.Host != "" {
		req.Host = p.Host
	}
	req.Close = true
	req.Header.Set("User-Agent", p.UserAgent)
	if err := req.Write(conn); err != nil {
		return fmt.Errorf("send request: %w", err)
	}
	body := &capped{r: conn, n: MaxHeaderBytes}
	resp, err := http.ReadResponse(bufio.NewReader(body), req)
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	// The header is in; what is left to read is the bufio buffer and at
	// most DrainBytes more.
	body.n = DrainBytes
	_, _ = io.CopyN(io.Discard, resp.Body, DrainBytes)
	resp.Body.Close()
	if !p.Accept.Accepts(resp.StatusCode) {
		return StatusError{Code: resp.StatusCode, Accept: p.Accept}
	}
	return nil
}

// errTooLarge is an HTTP answer whose header exceeds MaxHeaderBytes.
var errTooLarge = fmt.Errorf("answer header larger than %d bytes", MaxHeaderBytes)

// capped reads from r until n bytes have been read, then fails with
// errTooLarge rather than waiting for more.
type capped struct {
	r io.Reader
	n int64
}

func (c *capped) Read(b []byte) (int, error) {
	if c.n <= 0 {
		return 0, errTooLarge
	}
	if int64(len(b)) > c.n {
		b = b[:c.n]
	}
	n, err := c.r.Read(b)
	c.n -= int64(n)
	return n, err
}

// Statuses decides which HTTP statuses pass a probe; String describes them
// for error messages ("expected ...").
type Statuses interface {
	Accepts(code int) bool
	String() string
}

// Codes accepts exactly the listed statuses.
type Codes []int

// Accepts reports whether code is listed.
func (c Codes) Accepts(code int) bool {
	for _, x := range c {
		if x == code {
			return true
		}
	}
	return false
}

// String writes the list as fmt does, e.g. "[200 204]".
func (c Codes) String() string { return fmt.Sprint([]int(c)) }

// Range accepts the statuses from From to To, both included.
type Range struct{ From, To int }

// Accepts reports whether code is in the range.
func (r Range) Accepts(code int) bool { return code >= r.From && code <= r.To }

// String writes whole classes as classes ("2xx or 3xx"), other ranges as
// numbers ("200 to 204").
func (r Range) String() string {
	if r.From > r.To || r.From%100 != 0 || r.To%100 != 99 {
		return fmt.Sprintf("%d to %d", r.From, r.To)
	}
	first, last := r.From/100, r.To/100
	switch last - first {
	case 0:
		return fmt.Sprintf("%dxx", first)
	case 1:
		return fmt.Sprintf("%dxx or %dxx", first, last)
	}
	return fmt.Sprintf("%dxx to %dxx", first, last)
}

// StatusError is an HTTP probe answered with a status it does not accept.
type StatusError struct {
	Code   int
	Accept Statuses
}

func (e StatusError) Error() string {
	return fmt.Sprintf("status %d, expected %v", e.Code, e.Accept)
}

// Refused reports whether a failed probe proves that it reached the
// target's host: the host refused the connection, or the application
// answered with a status it does not accept. Such a failure is the
// application's, not the network's. Timeouts, unreachable hosts and
// broken connections prove nothing: they are what a network partition
// looks like. What a refusal means is the caller's policy.
func Refused(err error) bool {
	var status StatusError
	return errors.Is(err, syscall.ECONNREFUSED) || errors.As(err, &status)
}

// Target is p as written in logs: the address of a TCP probe, the URL of
// an HTTP one.
func (p Probe) Target() string {
	if p.Kind != HTTP {
		return p.Addr
	}
	scheme := "http"
	if p.TLS {
		scheme = "https"
	}
	return scheme + "://" + p.Addr + p.Path
}
