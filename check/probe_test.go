package check

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// closedPort returns a loopback address nothing listens on: connections
// to it are refused.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// rawServer listens on loopback and hands every accepted connection to
// serve in its own goroutine; all end when the test does.
func rawServer(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { serve(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// silent accepts connections and never answers, for timeouts.
func silent(c net.Conn) { _, _ = c.Read(make([]byte, 1)) }

// endless answers 200 with a body that never ends.
func endless(c net.Conn) {
	_, _ = bufio.NewReader(c).ReadString('\n')
	if _, err := c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n")); err != nil {
		return
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err := c.Write(chunk); err != nil {
			return
		}
	}
}

// hugeHeader answers 200 with a header larger than MaxHeaderBytes.
func hugeHeader(c net.Conn) {
	_, _ = bufio.NewReader(c).ReadString('\n')
	_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nX-Big: %s\r\nContent-Length: 0\r\n\r\n", strings.Repeat("a", 2*MaxHeaderBytes))
}

func hostOf(s *httptest.Server) string {
	return strings.TrimPrefix(strings.TrimPrefix(s.URL, "https://"), "http://")
}

func TestProbeRun(t *testing.T) {
	var elsewhere atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { elsewhere.Add(1) }))
	t.Cleanup(other.Close)
	// The handler answers the status its path names; a 3xx redirects to
	// another server, which must never be asked.
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		if err != nil || code < 200 || code > 599 {
			code = http.StatusBadRequest
		}
		if code/100 == 3 {
			w.Header().Set("Location", other.URL+"/landing")
		}
		w.WriteHeader(code)
	})
	plain := httptest.NewServer(handler)
	t.Cleanup(plain.Close)
	secure := httptest.NewTLSServer(handler)
	t.Cleanup(secure.Close)
	open := rawServer(t, func(c net.Conn) { c.Close() })
	quiet := rawServer(t, silent)
	flood := rawServer(t, endless)
	big := rawServer(t, hugeHeader)
	success := Range{From: 200, To: 399}
	http := func(addr, path string, accept Statuses) Probe {
		return Probe{Kind: HTTP, Addr: addr, Path: path, UserAgent: "test", Accept: accept}
	}
	https := func(addr, path string, accept Statuses) Probe {
		p := http(addr, path, accept)
		p.TLS = true
		return p
	}

	tests := []struct {
		name        string
		probe       Probe
		wantErr     string // substring; empty means pass
		wantRefused bool
	}{
		{"tcp open port passes", Probe{Kind: TCP, Addr: open}, "", false},
		{"tcp closed port is refused", Probe{Kind: TCP, Addr: closedPort(t)}, "connect", true},
		{"tcp to a silent port passes", Probe{Kind: TCP, Addr: quiet}, "", false},
		{"listed status passes", http(hostOf(plain), "/200", Codes{200}), "", false},
		{"status not listed fails", http(hostOf(plain), "/204", Codes{200}), "status 204, expected [200]", true},
		{"second listed status passes", http(hostOf(plain), "/204", Codes{200, 204}), "", false},
		{"3xx in range passes", http(hostOf(plain), "/302", success), "", false},
		{"3xx not listed fails", http(hostOf(plain), "/302", Codes{200}), "status 302", true},
		{"404 out of range fails", http(hostOf(plain), "/404", success), "status 404, expected 2xx or 3xx", true},
		{"500 fails", http(hostOf(plain), "/500", success), "status 500", true},
		{"https with a self-signed certificate passes", https(hostOf(secure), "/200", Codes{200}), "", false},
		{"https 500 fails", https(hostOf(secure), "/500", success), "status 500", true},
		{"https to a plain server fails", https(hostOf(plain), "/200", success), "TLS handshake", false},
		{"http to a closed port is refused", http(closedPort(t), "/200", success), "connect", true},
		{"http without an answer times out", http(quiet, "/200", success), "read response", false},
		{"an endless body is not read to its end", http(flood, "/200", success), "", false},
		{"a huge header fails", http(big, "/200", success), "larger than", false},
		{"unknown kind fails", Probe{Kind: "udp", Addr: open}, "not one of", false},
		{"http without statuses fails", http(hostOf(plain), "/200", nil), "without accepted statuses", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const timeout = 2 * time.Second
			start := time.Now()
			err := tc.probe.Run(t.Context(), timeout)
			took := time.Since(start)
			if passed := err == nil; passed != (tc.wantErr == "") || !passed && !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Run = %v, want an error with %q (none: a pass)", err, tc.wantErr)
			}
			if err != nil && Refused(err) != tc.wantRefused {
				t.Errorf("Refused(%v) = %v, want %v", err, !tc.wantRefused, tc.wantRefused)
			}
			if took > 2*timeout {
				t.Errorf("Run took %v with a timeout of %v", took, timeout)
			}
		})
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("a redirect to another host was followed %d times", n)
	}
}

func TestProbeRequest(t *testing.T) {
	type seen struct{ host, agent, uri, conn string }
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Host, r.UserAgent(), r.RequestURI, r.Header.Get("Connection")}
	}))
	t.Cleanup(srv.Close)
	tests := []struct {
		name string
		host string
		want seen
	}{
		{"host header is the probe's host", "app.example.com", seen{"app.example.com", "scrimp-test", "/healthz?full=1", "close"}},
		{"no host: the address", "", seen{hostOf(srv), "scrimp-test", "/healthz?full=1", "close"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := Probe{Kind: HTTP, Addr: hostOf(srv), Path: "/healthz?full=1", Host: tc.host, UserAgent: "scrimp-test", Accept: Codes{200}}
			if err := p.Run(t.Context(), time.Second); err != nil {
				t.Fatal(err)
			}
			if s := <-got; s != tc.want {
				t.Errorf("server saw %+v, want %+v", s, tc.want)
			}
		})
	}
}

// TestProbeCancel checks that cancelling the caller's context ends a
// check that waits for an answer, long before its timeout.
func TestProbeCancel(t *testing.T) {
	quiet := rawServer(t, silent)
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	err := Probe{Kind: HTTP, Addr: quiet, Path: "/", Accept: Codes{200}}.Run(ctx, time.Minute)
	if err == nil {
		t.Fatal("a cancelled check passed")
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("a cancelled check took %v", took)
	}
}

func TestRefused(t *testing.T) {
	_, dialErr := net.Dial("tcp", closedPort(t))
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", fmt.Errorf("connect: %w", dialErr), true},
		{"error status", fmt.Errorf("check: %w", StatusError{Code: 503, Accept: Codes{200}}), true},
		{"timeout", fmt.Errorf("connect: %w", context.DeadlineExceeded), false},
		{"unreachable host", fmt.Errorf("connect: %w", syscall.EHOSTUNREACH), false},
		{"reset", fmt.Errorf("read response: %w", syscall.ECONNRESET), false},
		{"header too large", fmt.Errorf("read response: %w", errTooLarge), false},
		{"other", errors.New("something"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Refused(tc.err); got != tc.want {
				t.Errorf("Refused(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestStatuses(t *testing.T) {
	tests := []struct {
		name     string
		s        Statuses
		text     string
		accepted []int
		refused  []int
	}{
		{"codes", Codes{200, 204}, "[200 204]", []int{200, 204}, []int{201, 302, 500}},
		{"one class", Range{From: 200, To: 299}, "2xx", []int{200, 299}, []int{199, 300}},
		{"two classes", Range{From: 200, To: 399}, "2xx or 3xx", []int{200, 302, 399}, []int{100, 404}},
		{"three classes", Range{From: 200, To: 499}, "2xx to 4xx", []int{404}, []int{500}},
		{"not whole classes", Range{From: 200, To: 204}, "200 to 204", []int{204}, []int{205}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.s.String(); got != tc.text {
				t.Errorf("String = %q, want %q", got, tc.text)
			}
			for _, c := range tc.accepted {
				if !tc.s.Accepts(c) {
					t.Errorf("%v refuses %d", tc.s, c)
				}
			}
			for _, c := range tc.refused {
				if tc.s.Accepts(c) {
					t.Errorf("%v accepts %d", tc.s, c)
				}
			}
		})
	}
}

func TestTarget(t *testing.T) {
	tests := []struct {
		name  string
		probe Probe
		want  string
	}{
		{"tcp is the address", Probe{Kind: TCP, Addr: "[::1]:80"}, "[::1]:80"},
		{"http is the URL", Probe{Kind: HTTP, Addr: "127.0.0.1:80", Path: "/healthz"}, "http://127.0.0.1:80/healthz"},
		{"https is the URL", Probe{Kind: HTTP, TLS: true, Addr: "127.0.0.1:443", Path: "/"}, "https://127.0.0.1:443/"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.probe.Target(); got != tc.want {
				t.Errorf("Target = %q, want %q", got, tc.want)
			}
		})
	}
}
