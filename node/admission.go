package node

import (
	"log/slog"
	"net"
	"net/netip"
	"slices"

	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/lb"
)

// admissionPolicy builds the load balancer's admission policy from cfg:
// lb.listen-ports and lb.applications, and what only the node knows —
// the ports scrimp uses here (gossip, metrics), which no member may take
// as a listen port or send traffic to at one of this host's addresses,
// and those addresses. cfg has been validated.
// metricsPort is the metrics listener's port, 0 without one.
func admissionPolicy(cfg *config.Config, metricsPort int, log *slog.Logger) lb.Policy {
	var p lb.Policy
	for _, r := range cfg.LB.ListenPorts {
		if lo, hi, err := r.Bounds(); err == nil {
			p.ListenPorts = append(p.ListenPorts, lb.PortRange{Lo: lo, Hi: hi})
		}
	}
	for _, r := range cfg.LB.Applications {
		p.Allow = append(p.Allow, lb.AllowRule{Name: r.Name, Domains: r.Domains, Backends: r.Backends})
	}
	l := cfg.LB.Limits
	p.Limits = lb.Limits{
		AppsPerMember: l.AppsPerMember, DomainsPerApp: l.DomainsPerApp, PathsPerApp: l.PathsPerApp,
		DomainsPerMember: l.DomainsPerMember, ListenPortsPerMember: l.ListenPortsPerMember,
		UpstreamServers: l.UpstreamServers, Listeners: l.Listeners,
	}
	p.Reserved = reservedPorts(cfg, metricsPort)

	own := func(s string) {
		if a, err := netip.ParseAddr(s); err == nil && !a.IsUnspecified() {
			p.Own = append(p.Own, a.Unmap())
		}
	}
	own(cfg.Cluster.BindAddr)
	own(cfg.Cluster.AdvertiseAddr)
	own(cfg.LB.ListenAddr)
	if ap, err := netip.ParseAddrPort(cfg.MetricsAddr); err == nil {
		own(ap.Addr().String())
	}
	// Every address of this host is its own: a wildcard bind listens on
	// all of them.
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		log.Warn("cannot list this host's addresses; only the configured ones count as the load balancer's own", "err", err)
	}
	for _, a := range addrs {
		if pfx, err := netip.ParsePrefix(a.String()); err == nil {
			p.Own = append(p.Own, pfx.Addr().Unmap())
		}
	}
	slices.SortFunc(p.Own, netip.Addr.Compare)
	p.Own = slices.Compact(p.Own)
	return p
}

// reservedPorts are the ports scrimp itself uses on this node: gossip
// (bind and advertised), metrics (0: none) and xDS.
func reservedPorts(cfg *config.Config, metricsPort int) []int {
	ports := []int{cfg.Cluster.BindPort}
	if cfg.Cluster.AdvertisePort != 0 {
		ports = append(ports, cfg.Cluster.AdvertisePort)
	}
	if metricsPort != 0 {
		ports = append(ports, metricsPort)
	}
	if cfg.XDS != nil {
		if ap, err := netip.ParseAddrPort(cfg.XDS.ListenAddr); err == nil {
			ports = append(ports, int(ap.Port()))
		}
	}
	slices.Sort(ports)
	return slices.Compact(ports)
}

// metricsPort is the port the metrics listener is bound to, 0 without one.
func (n *Node) metricsPort() int {
	if n.metricsLn == nil {
		return 0
	}
	if ap, err := netip.ParseAddrPort(n.metricsLn.Addr().String()); err == nil {
		return int(ap.Port())
	}
	return 0
}
