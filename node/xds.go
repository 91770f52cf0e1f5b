package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"sync"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/cluster"
	"github.com/scrimplb/scrimp/lb"
	"github.com/scrimplb/scrimp/xds"
)

// xdsFeed serves the membership over xDS: every membership change is put
// through the load balancer's admission (the same policy, its own owners)
// and handed to the xDS server, which pushes it to its clients at once,
// with no proxy reload in the way.
type xdsFeed struct {
	srv     *xds.Server
	adm     *lb.Admitter
	members *fanout
}

// buildXDS builds the xDS server when xds.listen-addr is set. It splits
// the cluster's change notices between the load balancer loop and the
// feed (a notice is received once), so it must run before buildLB.
func (n *Node) buildXDS() error {
	c := n.cfg.XDS
	if c == nil || c.ListenAddr == "" {
		return nil
	}
	tc, err := xdsTLS(c.Certificate, c.Key, c.ClientCA)
	if err != nil {
		return fmt.Errorf("%s: xds: %w", n.cfg.File, err)
	}
	ln, err := net.Listen("tcp", c.ListenAddr)
	if err != nil {
		return fmt.Errorf("xds: %w", err)
	}
	srv, err := xds.New(xds.Options{Listener: ln, TLS: tc, MaxConnections: c.MaxConnections, Retries: c.Retries,
		Logger: n.log.With("component", "xds")})
	if err != nil {
		ln.Close()
		return err
	}
	var p lb.Policy
	if n.cfg.LB != nil {
		p = admissionPolicy(n.cfg, n.metricsPort(), n.log)
	}
	n.xds = &xdsFeed{srv: srv, adm: lb.NewAdmitter(p), members: newFanout(n.cluster)}
	return nil
}

// xdsTLS loads the xDS server's TLS configuration; nil without a
// certificate.
func xdsTLS(certFile, keyFile, clientCA string) (*tls.Config, error) {
	if certFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCA != "" {
		pem, err := os.ReadFile(clientCA)
		if err != nil {
			return nil, fmt.Errorf("client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client-ca: %s holds no PEM certificate", clientCA)
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// members is what the load balancer loop watches: the cluster itself, or
// its share of the change notices when the xDS feed takes the other.
func (n *Node) members() lb.Membership {
	if n.xds != nil {
		return n.xds.members
	}
	return n.cluster
}

// run feeds the xDS server until ctx is done, and serves it; it returns
// when the server has stopped.
func (f *xdsFeed) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { f.members.run(ctx) })
	wg.Go(func() { f.srv.Run(ctx) })
	f.push()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-f.members.xds:
			f.push()
		}
	}
}

func (f *xdsFeed) push() {
	snap, _ := f.adm.Admit(f.members.Snapshot())
	f.srv.Update(snap)
}

// XDSAddr is the address the node's xDS server listens on, "" when it
// serves none.
func (n *Node) XDSAddr() string {
	if n.xds == nil {
		return ""
	}
	return n.xds.srv.Addr().String()
}

// fanout hands each change notice of the cluster to two consumers: the
// load balancer loop (Changes) and the xDS feed.
type fanout struct {
	src *cluster.Cluster
	lb  chan struct{}
	xds chan struct{}
}

func newFanout(c *cluster.Cluster) *fanout {
	return &fanout{src: c, lb: make(chan struct{}, 1), xds: make(chan struct{}, 1)}
}

// Snapshot is the cluster's; it never blocks.
func (f *fanout) Snapshot() catalog.Snapshot { return f.src.Snapshot() }

// Changes is the load balancer's share of the notices.
func (f *fanout) Changes() <-chan struct{} { return f.lb }

// run forwards notices until ctx is done; a notice never waits for a slow
// consumer (one pending notice stands for many).
func (f *fanout) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.src.Changes():
			for _, ch := range []chan struct{}{f.lb, f.xds} {
				select {
				case ch <- struct{}{}:
				default:
				}
			}
		}
	}
}
