// Package loopback is the harness that the end-to-end tests, the node
// tests, the demo and the bench share to run servers on loopback addresses
// (127.0.x.y; Linux routes all of 127.0.0.0/8 to the loopback interface):
// a free-port finder, the demo's HTTP app and a steady client load. It
// imports nothing beyond the standard library, so the scrimp binary can
// use it without pulling test-only packages.
package loopback

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// FreePort returns a port free for both TCP and UDP on ip, as gossip
// needs both. It is picked below the kernel's ephemeral range (see
// pickRange), where no outgoing connection and no listener on port 0 can
// take it between this check and the caller's bind; another caller of
// FreePort still may, and callers that can retry do (see node.StartLocal).
func FreePort(ip string) (int, error) {
	lo, hi := pickRange()
	for range 50 {
		port := lo + rand.IntN(hi-lo)
		if portFree(ip, port) {
			return port, nil
		}
	}
	// A crowded range: let the kernel choose, as before.
	for range 20 {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			return 0, fmt.Errorf("find a free port on %s: %w", ip, err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(port)))
		ln.Close()
		if err == nil {
			pc.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("no port free for both TCP and UDP on %s", ip)
}

// portFree reports whether port can be bound on ip for TCP and UDP.
func portFree(ip string, port int) bool {
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	pc.Close()
	return true
}

// pickRange is where FreePort picks ports: the 12,000 below the start of
// the kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768 by
// default), and not below 10000. A port the kernel chose for a test's
// outgoing connection, or for a listener on port 0, was the cause of
// "address already in use" when a proxy bound a port found free a moment
// before.
func pickRange() (lo, hi int) {
	hi = 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 11000 {
				hi = n
			}
		}
	}
	return max(10000, hi-12000), hi
}

// AppAnswer is the prefix of every answer of the app ServeApp starts:
// "hello from NAME\n".
const AppAnswer = "hello from "

// ServeApp starts a tiny HTTP app on ip that answers every request with
// "hello from NAME", and returns its port. It stops when ctx is done; wg
// tracks its goroutines, so wg.Wait after ctx's end waits for the stop.
func ServeApp(ctx context.Context, wg *sync.WaitGroup, ip, name string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, fmt.Errorf("app on %s: %w (Linux routes all of 127.0.0.0/8 to loopback; other systems may need an alias)", ip, err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s%s\n", AppAnswer, name)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	wg.Go(func() { srv.Serve(ln) })
	wg.Go(func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(shutdownCtx)
	})
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Load is a steady client load: goroutines each calling a send function
// with their own keep-alive client once per interval. Only requests sent
// or answered while counting count. Its methods are safe for concurrent
// use.
type Load struct {
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	client   *http.Client
	counting atomic.Bool

	mu       sync.Mutex
	since    time.Time     // counting since, when counting
	window   time.Duration // counted time before since
	sent     int
	failures []Failure
	nFailed  int
}

// Failure is a failed request: when it was sent, relative to the start of
// the counting window it fell in, and why it failed.
type Failure struct {
	At  time.Duration
	Err string
}

// Result is what a load saw while counting.
type Result struct {
	Sent, Failed int
	Window       time.Duration
	Failures     []Failure // the first few
}

// Rate is the counted requests per second.
func (r Result) Rate() float64 { return float64(r.Sent) / r.Window.Seconds() }

func (r Result) String() string {
	return fmt.Sprintf("%d of %d GETs failed at %.0f req/s", r.Failed, r.Sent, r.Rate())
}

// First is the first failure's text for a markdown table cell, "" without
// one.
func (r Result) First() string {
	if len(r.Failures) == 0 {
		return ""
	}
	return " (first: " + strings.ReplaceAll(r.Failures[0].Err, "|", "/") + ")"
}

// StartLoad starts clients goroutines, each calling send with its own
// keep-alive client once per interval until Stop; send's error is a
// failed request. Nothing is counted until Count(true).
func StartLoad(clients int, interval time.Duration, send func(*http.Client) error) *Load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Load{cancel: cancel,
		// Generous: a request slower than this is a failure of the proxy,
		// not of a tight client.
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients}}}
	for range clients {
		l.wg.Go(func() {
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for {
				on, sentAt := l.counting.Load(), time.Now()
				err := send(l.client)
				if on || l.counting.Load() {
					l.record(sentAt, err)
				}
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		})
	}
	return l
}

func (l *Load) record(sentAt time.Time, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent++
	if err != nil {
		l.nFailed++
		if len(l.failures) < 10 {
			l.failures = append(l.failures, Failure{At: sentAt.Sub(l.since), Err: err.Error()})
		}
	}
}

// Count starts or stops counting requests.
func (l *Load) Count(on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if on == l.counting.Load() {
		return
	}
	if on {
		l.since = time.Now()
	} else {
		l.window += time.Since(l.since)
	}
	l.counting.Store(on)
}

// Stop ends the load, waiting for requests in flight, and returns what it
// counted. Call it once.
func (l *Load) Stop() Result {
	l.Count(false)
	l.cancel()
	l.wg.Wait()
	l.client.CloseIdleConnections()
	l.mu.Lock()
	defer l.mu.Unlock()
	return Result{Sent: l.sent, Failed: l.nFailed, Window: l.window, Failures: slices.Clone(l.failures)}
}

// StopProcess sends cmd SIGTERM (a scrimp node then drains, leaves and
// stops its proxy; SIGKILL would orphan the proxy) and reaps it, killing
// it if it has not exited within grace. It blocks until the process is
// reaped; cmd must have been started and not waited for.
func StopProcess(cmd *exec.Cmd, grace time.Duration) {
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(grace):
		cmd.Process.Kill()
		<-done
	}
}
