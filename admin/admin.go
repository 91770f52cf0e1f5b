// Package admin is a node's local admin interface: JSON over HTTP on a
// unix socket that only the node's user can reach (mode 0600), with
// versioned paths (/v1/...), and optionally on a TCP address where every
// request must carry a bearer token. It is how `scrimp keys` changes the
// gossip keyring of a running cluster, and what `scrimp members`,
// `status`, `apps`, `render` and `drain` ask. Nothing it answers or logs
// holds key material or the token.
//
// Adding an endpoint is one line in Server.routes and a handler.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// MaxSocketPath is the longest socket path accepted: sun_path holds 108
// bytes on Linux (104 on BSDs), and the socket is first created in a
// temporary directory beside its final path, a few bytes longer.
const MaxSocketPath = 100

// Config configures a Server.
type Config struct {
	// Socket is the unix socket's path. Its directory is created, mode
	// 0700, if missing.
	Socket string
	// Keys serves /v1/keys; nil answers those paths with 501.
	Keys KeyManager
	// Views serves /v1/members, status, apps, render and drain; nil
	// answers those paths with 501.
	Views Views
	// Addr, if set, is a TCP address (host:port) to serve on as well;
	// every request there must carry "Authorization: Bearer TOKEN".
	Addr string
	// Token is the bearer token of Addr; required with Addr.
	Token []byte
	// OpTimeout bounds one cluster-wide operation; 0 means 15s.
	OpTimeout time.Duration
	// Logger receives one line per request (method, path, status) and
	// server errors.
	Logger *slog.Logger
}

// Server is a listening admin interface. Its methods are safe for
// concurrent use.
type Server struct {
	cfg  Config
	log  *slog.Logger
	ln   net.Listener // the socket's; nil without Socket
	tcp  net.Listener // Addr's; nil without
	srv  *http.Server
	tsrv *http.Server // serves tcp
	mux  *http.ServeMux
	sock os.FileInfo // the socket file created, to remove only that

	running   atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// New creates the socket (see Config.Socket) and the TCP listener (see
// Config.Addr) and returns a server that serves nothing until Run. A stale
// socket left by an earlier run is replaced; any other file at the path,
// or a socket some process still accepts on, is an error. Close it even
// if Run is never called.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = 15 * time.Second
	}
	if cfg.Socket == "" && cfg.Addr == "" {
		return nil, errors.New("admin: neither a socket nor an address to serve on")
	}
	if cfg.Addr != "" && len(cfg.Token) < MinTokenLen {
		return nil, fmt.Errorf("admin address %s: a token of at least %d bytes is required", cfg.Addr, MinTokenLen)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux()}
	s.routes()
	if cfg.Socket != "" {
		ln, fi, err := listen(cfg.Socket)
		if err != nil {
			return nil, err
		}
		s.ln, s.sock = ln, fi
	}
	if cfg.Addr != "" {
		tcp, err := net.Listen("tcp", cfg.Addr)
		if err != nil {
			if s.ln != nil {
				s.ln.Close()
				os.Remove(cfg.Socket)
			}
			return nil, fmt.Errorf("admin address %s: %w", cfg.Addr, err)
		}
		s.tcp = tcp
	}
	s.srv = s.httpServer(s.logged(s.mux))
	s.tsrv = s.httpServer(s.logged(s.authorized(s.mux)))
	return s, nil
}

func (s *Server) httpServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      s.cfg.OpTimeout + 10*time.Second,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelWarn),
	}
}

// routes registers every endpoint. A path registered with a method also
// gets a method-less fallback answering 405, so wrong methods get JSON.
func (s *Server) routes() {
	s.handle("GET", "/v1/keys", s.listKeys)
	s.handle("POST", "/v1/keys/{op}", s.changeKeys)
	s.handle("GET", "/v1/members", s.members)
	s.handle("GET", "/v1/status", s.status)
	s.handle("GET", "/v1/apps", s.apps)
	s.handle("GET", "/v1/render", s.render)
	s.handle("POST", "/v1/drain", s.drain)
	s.uiRoutes()
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no endpoint %s", r.URL.Path))
	})
}

func (s *Server) handle(method, path string, h http.HandlerFunc) {
	s.mux.HandleFunc(method+" "+path, h)
	s.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", method)
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s takes %s", path, method))
	})
}

// Socket returns the socket's path; "" when it serves none.
func (s *Server) Socket() string { return s.cfg.Socket }

// Addr returns the TCP address it serves on, with the port chosen; ""
// when it serves none.
func (s *Server) Addr() string {
	if s.tcp == nil {
		return ""
	}
	return s.tcp.Addr().String()
}

// Run serves requests until ctx ends or Close is called, then shuts down
// gracefully (in-flight requests get a few seconds). It returns once
// every connection is closed; a second call returns an error at once.
func (s *Server) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("admin: Run called twice")
	}
	type served struct {
		srv *http.Server
		ln  net.Listener
	}
	var all []served
	if s.ln != nil {
		all = append(all, served{s.srv, s.ln})
	}
	if s.tcp != nil {
		all = append(all, served{s.tsrv, s.tcp})
	}
	done := make(chan error, len(all))
	for _, sv := range all {
		go func() { done <- sv.srv.Serve(sv.ln) }()
	}
	var err error
	select {
	case err = <-done:
		// One stopped by itself: stop the other too.
		for _, sv := range all {
			sv.srv.Close()
		}
	case <-ctx.Done():
		shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		for _, sv := range all {
			if serr := sv.srv.Shutdown(shutCtx); serr != nil {
				sv.srv.Close()
			}
		}
		cancel()
		err = <-done
	}
	for range len(all) - 1 {
		if e := <-done; err == nil || errors.Is(err, http.ErrServerClosed) {
			err = e
		}
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("admin %s: %w", cmpOr(s.cfg.Socket, s.cfg.Addr), err)
	}
	return nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Close stops serving at once and removes the socket. Safe to call more
// than once and concurrently with Run.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		for _, srv := range []*http.Server{s.srv, s.tsrv} {
			if err := srv.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
		for _, ln := range []net.Listener{s.ln, s.tcp} {
			if ln == nil {
				continue
			}
			if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
		// Remove the socket only if it is still the one we made.
		if s.ln != nil {
			if fi, serr := os.Lstat(s.cfg.Socket); serr == nil && os.SameFile(fi, s.sock) {
				if rerr := os.Remove(s.cfg.Socket); rerr != nil {
					errs = append(errs, rerr)
				}
			}
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// listen creates the socket at path with mode 0600, race-free: it is bound
// in a private (0700) temporary directory beside path, made 0600 there,
// then renamed into place.
func listen(path string) (net.Listener, os.FileInfo, error) {
	if path == "" || !filepath.IsAbs(path) {
		return nil, nil, fmt.Errorf("admin socket %q: not an absolute path", path)
	}
	if len(path) > MaxSocketPath {
		return nil, nil, fmt.Errorf("admin socket %s: %d bytes long, at most %d fit a unix socket address", path, len(path), MaxSocketPath)
	}
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, nil, fmt.Errorf("admin socket %s: %w", path, err)
		}
		if err := os.Chmod(dir, 0o700); err != nil { // whatever the umask
			return nil, nil, fmt.Errorf("admin socket %s: %w", path, err)
		}
	}
	if err := removeStale(path); err != nil {
		return nil, nil, err
	}
	tmp, err := os.MkdirTemp(dir, ".a")
	if err != nil {
		return nil, nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	defer os.RemoveAll(tmp)
	tmpSock := filepath.Join(tmp, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmpSock, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	// The listener must not unlink the temporary name on Close: the
	// socket lives at path by then, and Server.Close removes it.
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, os.FileInfo, error) {
		ln.Close()
		return nil, nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	if err := os.Chmod(tmpSock, 0o600); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmpSock, path); err != nil {
		return fail(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail(err)
	}
	return ln, fi, nil
}

// removeStale removes a socket file left at path by a process that is
// gone. Anything else at path is an error: a file that is not a socket,
// or a socket that still accepts connections.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("admin socket %s: %w", path, err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("admin socket %s: a file that is not a socket is in the way (mode %s); remove it or set admin-socket", path, fi.Mode())
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("admin socket %s: another process (another scrimp node?) is listening on it", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("admin socket %s: remove stale socket: %w", path, err)
	}
	return nil
}

// logged logs each request's method, path and status; never a body.
func (s *Server) logged(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		start := time.Now()
		h.ServeHTTP(sw, r)
		s.log.Info("admin request", "method", r.Method, "path", r.URL.Path, "status", sw.status, "took", time.Since(start).Round(time.Millisecond))
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Error is the body of every error response.
type Error struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, Error{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
