// Package xds serves scrimp's membership to proxyless gRPC clients over the
// xDS protocol (ADS, state of the world), so that gRPC's built-in
// `xds:///APP` resolver balances each call straight to a live backend, with
// no proxy hop. It is the only importer of go-control-plane: it takes a
// catalog.Snapshot in (already through the load balancer's admission) and
// owns its gRPC server.
package xds

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/scrimplb/scrimp/catalog"
)

// Bounds on what a client can make the server hold.
const (
	// maxRecvMsg bounds one DiscoveryRequest (a client lists the names it
	// wants; a few thousand fit).
	maxRecvMsg = 1 << 20
	// maxStreams bounds the streams of one connection: a gRPC client
	// opens one ADS stream per control plane.
	maxStreams = 16
	// stopGrace is how long Run lets streams end after its context is
	// done before it cuts them.
	stopGrace = time.Second
)

// Options configure a Server.
type Options struct {
	// Listener is where the server accepts clients; the server owns it
	// from New on (Close closes it).
	Listener net.Listener
	// TLS, if not nil, is the server's TLS configuration (a certificate;
	// ClientCAs with RequireAndVerifyClientCert to require client
	// certificates). Nil serves plaintext.
	TLS *tls.Config
	// MaxConnections bounds concurrent client connections; 0 means none.
	MaxConnections int
	// Retries, above zero, makes every route retry calls that failed with
	// UNAVAILABLE that many times: only for idempotent services.
	Retries int
	// Logger receives a line per pushed version and per client stream.
	Logger *slog.Logger
}

// Stats counts what the server did.
type Stats struct {
	// Version is the version of the resources served now, 0 before the
	// first Update.
	Version uint64
	// Applications is how many grpc applications the version carries.
	Applications int
	// Streams is how many client streams are open now.
	Streams int64
}

// Server is an xDS control plane fed with membership snapshots. Update may
// be called from any goroutine at any time; Run serves until its context
// ends; Close is safe to call more than once and with or without Run.
type Server struct {
	opts  Options
	log   *slog.Logger
	ln    net.Listener
	grpc  *grpc.Server
	cache cachev3.SnapshotCache

	latest atomic.Pointer[catalog.Snapshot]
	kick   chan struct{} // an Update is pending

	mu      sync.Mutex
	version uint64
	digest  [32]byte
	apps    int
	updated chan struct{} // closed and replaced at every new version

	streams atomic.Int64

	closeOnce sync.Once
	closeErr  error
	ran       atomic.Bool
}

// allNodes gives every client the same snapshot: what a client sees
// depends on the names it asks for, not on who it is.
type allNodes struct{}

func (allNodes) ID(*corev3.Node) string { return "" }

// New builds a server on opts.Listener; nothing is served before Run.
func New(opts Options) (*Server, error) {
	if opts.Listener == nil {
		return nil, errors.New("xds: no listener")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ln := opts.Listener
	if opts.MaxConnections > 0 {
		ln = netutil.LimitListener(ln, opts.MaxConnections)
	}
	sopts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxRecvMsg),
		grpc.MaxConcurrentStreams(maxStreams),
		// Clients ping no more often than every 30s; idle connections
		// are checked so that a vanished client frees its stream.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 30 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second}),
	}
	if opts.TLS != nil {
		sopts = append(sopts, grpc.Creds(credentials.NewTLS(opts.TLS)))
	}
	// Not in ADS mode: a gRPC client asks for the names it dials only,
	// and an ADS-mode cache answers nobody who asks for fewer names than
	// the snapshot holds.
	s := &Server{
		opts: opts, log: opts.Logger, ln: ln,
		grpc:    grpc.NewServer(sopts...),
		cache:   cachev3.NewSnapshotCache(false, allNodes{}, nil),
		kick:    make(chan struct{}, 1),
		updated: make(chan struct{}),
	}
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Update hands the server the membership to serve; the newest one wins. It
// never blocks: Run builds and pushes the resources.
func (s *Server) Update(snap catalog.Snapshot) {
	s.latest.Store(&snap)
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Stats returns the counters. Safe for concurrent use.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Version: s.version, Applications: s.apps, Streams: s.streams.Load()}
}

// Updated returns a channel closed when a version newer than the one
// served now is pushed; for tests and latency measurements.
func (s *Server) Updated() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.updated
}

// Run serves clients and pushes every Update to them until ctx is done,
// then stops the server (open streams get stopGrace to end) and returns.
// Call it once; every goroutine it starts has ended when it returns.
func (s *Server) Run(ctx context.Context) error {
	if !s.ran.CompareAndSwap(false, true) {
		return errors.New("xds: Run called twice")
	}
	cb := serverv3.CallbackFuncs{
		StreamOpenFunc: func(_ context.Context, id int64, typ string) error {
			s.streams.Add(1)
			s.log.Debug("xds stream opened", "stream", id)
			return nil
		},
		StreamClosedFunc: func(id int64, node *corev3.Node) {
			s.streams.Add(-1)
			s.log.Debug("xds stream closed", "stream", id, "client", node.GetId())
		},
	}
	xs := serverv3.NewServer(ctx, s.cache, cb)
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(s.grpc, xs)

	var wg sync.WaitGroup
	serveErr := make(chan error, 1)
	wg.Go(func() {
		if err := s.grpc.Serve(s.ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			serveErr <- err
		}
	})
	var err error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err = <-serveErr:
			err = fmt.Errorf("xds: serving: %w", err)
			break loop
		case <-s.kick:
			if snap := s.latest.Load(); snap != nil {
				if perr := s.push(ctx, *snap); perr != nil {
					s.log.Error("xds: resources not pushed; clients keep the previous version", "err", perr)
				}
			}
		}
	}
	s.stop()
	wg.Wait()
	return err
}

// push builds snap's resources and, if they differ from those served,
// makes them the new version.
func (s *Server) push(ctx context.Context, snap catalog.Snapshot) error {
	res, err := Build(snap, s.opts.Retries)
	if err != nil {
		return fmt.Errorf("xds: building resources: %w", err)
	}
	sum, err := res.digest()
	if err != nil {
		return fmt.Errorf("xds: digest: %w", err)
	}
	s.mu.Lock()
	same := sum == s.digest && s.version > 0
	next := s.version + 1
	s.mu.Unlock()
	if same {
		return nil
	}
	cs, err := cachev3.NewSnapshot(strconv.FormatUint(next, 10), res.byType())
	if err != nil {
		return fmt.Errorf("xds: snapshot: %w", err)
	}
	// No cs.Consistent(): it looks for route names in listeners' filter
	// chains, not in api_listeners; Build names every route it refers to.
	if err := s.cache.SetSnapshot(ctx, "", cs); err != nil {
		return fmt.Errorf("xds: setting snapshot: %w", err)
	}
	s.mu.Lock()
	s.version, s.digest, s.apps = next, sum, len(res.Listeners)
	close(s.updated)
	s.updated = make(chan struct{})
	s.mu.Unlock()
	s.log.Info("xds resources pushed", "version", next, "applications", len(res.Listeners), "streams", s.streams.Load())
	return nil
}

// stop ends the gRPC server: gracefully for stopGrace (an ADS stream
// never ends by itself, so this mostly lets in-flight responses out),
// then at once.
func (s *Server) stop() {
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(stopGrace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.grpc.Stop()
		<-done
	}
}

// Close stops the server and closes its listener; safe to call more than
// once, before, during (Run then returns) or after Run.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.grpc.Stop()
		if err := s.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			s.closeErr = err
		}
	})
	return s.closeErr
}
