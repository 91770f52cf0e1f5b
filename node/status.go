package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/scrimplb/scrimp/admin"
	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/cluster"
	"github.com/scrimplb/scrimp/lb"
	"github.com/scrimplb/scrimp/seed"
)

// What the admin interface shows of a node (admin.Views): it reads the
// cluster, the load balancer and the backend, each safe for concurrent
// use, and never blocks on the network except Drain's wait.

// seedRecorder is the seed provider as the join loop uses it, recording
// its last answer for the status. Safe for concurrent use.
type seedRecorder struct {
	p    seed.Provider
	mu   sync.Mutex
	last *admin.SeedAnswer
}

// maxSeedsShown bounds the addresses kept of one answer.
const maxSeedsShown = 64

func (r *seedRecorder) Seeds(ctx context.Context) ([]string, error) {
	start := time.Now()
	addrs, err := r.p.Seeds(ctx)
	a := &admin.SeedAnswer{At: start, Took: admin.Duration(time.Since(start)),
		Addresses: slices.Clone(addrs[:min(len(addrs), maxSeedsShown)])}
	if a.Addresses == nil {
		a.Addresses = []string{}
	}
	if err != nil {
		a.Error = err.Error()
	}
	r.mu.Lock()
	r.last = a
	r.mu.Unlock()
	return addrs, err
}

func (r *seedRecorder) answer() *admin.SeedAnswer {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		return nil
	}
	a := *r.last
	return &a
}

// views is the node as the admin interface sees it.
type views struct{ n *Node }

var _ admin.Views = views{}

// stateName is an advertised state as the admin interface writes it: an
// application without one is up.
func stateName(s catalog.State) string {
	if s == "" {
		return string(catalog.StateUp)
	}
	return string(s)
}

func instanceStates(apps []catalog.Application) []admin.InstanceState {
	out := make([]admin.InstanceState, 0, len(apps))
	for _, a := range apps {
		out = append(out, admin.InstanceState{Name: a.Name, State: stateName(a.State)})
	}
	return out
}

func (v views) MembersView() admin.MembersResponse {
	infos := v.n.cluster.MemberInfos()
	res := admin.MembersResponse{Self: v.n.cfg.NodeName, Members: make([]admin.Member, 0, len(infos))}
	for _, mi := range infos {
		m := admin.Member{Name: mi.Name, Role: mi.Role.String(), Addr: mi.Addr, State: string(mi.State), Self: mi.Self}
		if mi.Applications != nil {
			m.Applications = instanceStates(mi.Applications)
		}
		if !mi.LastSeen.IsZero() {
			t := mi.LastSeen
			m.LastSeen = &t
		}
		if !mi.Since.IsZero() {
			t := mi.Since
			m.Since = &t
		}
		res.Members = append(res.Members, m)
	}
	return res
}

func (v views) StatusView() admin.Status {
	n := v.n
	st := admin.Status{
		Name: n.cfg.NodeName, Role: n.role.String(), Version: cmp.Or(n.Version, "dev"),
		Started: n.started, GossipAddr: n.GossipAddr(), Members: n.Members(),
		Seeds:           admin.SeedStatus{Provider: n.cfg.Seed.Provider, Last: n.seedLog.answer()},
		KeyFingerprints: nonNil(n.cluster.KeyFingerprints()),
	}
	switch {
	case n.lb != nil:
		changes, last := n.lb.History()
		stats := n.lb.Stats()
		ls := &admin.LBStatus{Proxy: n.cfg.LB.Generator, Mode: n.cfg.LB.Mode, ProxyPID: v.proxyPID(),
			Reloads: n.ProxyReloads(), History: nonNil(changes),
			Refused: adminRefusals(n.lb.Refusals()), Guarded: stats.Guarded, CheckDown: stats.CheckDown}
		if !last.At.IsZero() {
			ls.Last = &last
		}
		for _, c := range n.ACMEStatus() {
			ls.ACME = append(ls.ACME, admin.CertStatus{Domain: c.Domain, State: string(c.State), NotAfter: c.NotAfter,
				Issuer: c.Issuer, Serial: c.Serial, LastError: c.LastError})
		}
		st.LB = ls
	case n.backend != nil:
		apps := n.backend.Applications()
		bs := &admin.BackendStatus{Applications: instanceStates(apps), Draining: isDraining(apps), Unacknowledged: []string{}}
		if bs.Draining {
			bs.Unacknowledged = nonNil(n.cluster.Unacknowledged())
		}
		st.Backend = bs
	}
	return st
}

func adminRefusals(rs []lb.Refusal) []admin.Refusal {
	out := make([]admin.Refusal, 0, len(rs))
	for _, r := range rs {
		out = append(out, admin.Refusal{Application: r.Application, Node: r.Node, Reason: r.Reason})
	}
	return out
}

// isDraining reports whether a backend advertises itself as draining.
func isDraining(apps []catalog.Application) bool {
	return slices.ContainsFunc(apps, func(a catalog.Application) bool { return a.State == catalog.StateDraining })
}

// proxyPID is the managed proxy's master process from its pid file in the
// state directory, if that process runs; 0 otherwise.
func (v views) proxyPID() int {
	d, ok := v.n.proxy.(interface{ Dir() string })
	if !ok {
		return 0
	}
	b, err := os.ReadFile(filepath.Join(d.Dir(), v.n.cfg.LB.Generator+".pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

func (v views) AppsView() admin.AppsResponse {
	n := v.n
	type key struct{ app, node string }
	var view lb.View
	if n.lb != nil {
		view = n.lb.View()
	}
	refused := map[key]string{}
	for _, r := range view.Refusals {
		refused[key{r.Application, r.Node}] = r.Reason
	}
	guarded, checkDown := map[key]bool{}, map[key]bool{}
	for _, i := range view.Guarded {
		guarded[key{i.Application, i.Node}] = true
	}
	for _, i := range view.CheckDown {
		checkDown[key{i.Application, i.Node}] = true
	}
	apps := map[string]*admin.App{}
	defined := map[string]bool{} // by an instance not refused
	add := func(node catalog.Node, a catalog.Application, state, reason string) {
		app, ok := apps[a.Name]
		if !ok {
			app = &admin.App{Name: a.Name, Backends: []admin.AppBackend{}}
			apps[a.Name] = app
		}
		if !defined[a.Name] && (reason == "" || app.Protocol == "") {
			app.Protocol, app.ListenPort = string(a.Protocol), a.ListenPort
			app.Domains, app.Paths = slices.Clone(a.Domains), slices.Clone(a.Paths)
			defined[a.Name] = reason == ""
		}
		app.Backends = append(app.Backends, admin.AppBackend{Node: node.Name,
			Addr: netip.AddrPortFrom(node.Addr, uint16(a.ApplicationPort)).String(), State: state, Reason: reason})
	}
	seen := map[key]bool{}
	for _, node := range n.cluster.Snapshot().Nodes {
		if node.Role != catalog.RoleBackend {
			continue
		}
		for _, a := range node.Applications {
			k := key{a.Name, node.Name}
			seen[k] = true
			state, reason := stateName(a.State), ""
			switch r, ok := refused[k]; {
			case ok:
				state, reason = admin.StateRefused, r
			case guarded[k]:
				state = admin.StateGuarded
			case checkDown[k] && a.State.Serving():
				state = admin.StateCheckDown
			}
			add(node, a, state, reason)
		}
	}
	// Guarded instances whose nodes vanished from the membership are
	// still routed: the render has them.
	for _, node := range view.Routed.Nodes {
		for _, a := range node.Applications {
			if k := (key{a.Name, node.Name}); guarded[k] && !seen[k] {
				add(node, a, admin.StateGuarded, "")
			}
		}
	}
	res := admin.AppsResponse{Applications: make([]admin.App, 0, len(apps))}
	for _, app := range apps {
		slices.SortFunc(app.Backends, func(a, b admin.AppBackend) int { return strings.Compare(a.Node, b.Node) })
		res.Applications = append(res.Applications, *app)
	}
	slices.SortFunc(res.Applications, func(a, b admin.App) int { return strings.Compare(a.Name, b.Name) })
	return res
}

func (v views) Render() ([]byte, error) {
	b, err := v.n.RenderedConfig()
	if errors.Is(err, ErrNotLB) {
		return nil, fmt.Errorf("%w: this node is a backend; ask a load balancer", admin.ErrWrongRole)
	}
	return b, err
}

// Drain turns a backend's draining on or off through the backend loop,
// as SIGTERM's drain does but without leaving, and with Wait waits for
// the load balancers' acknowledgements, re-gossiping the beacon as
// backend.RunDrain does. The end of ctx ends the wait, not the drain.
func (v views) Drain(ctx context.Context, req admin.DrainRequest) (admin.DrainResponse, error) {
	n := v.n
	if n.backend == nil {
		return admin.DrainResponse{}, fmt.Errorf("%w: this node is a load balancer; drain a backend", admin.ErrWrongRole)
	}
	if err := n.backend.SetDraining(ctx, !req.Cancel); err != nil {
		return admin.DrainResponse{}, fmt.Errorf("drain: %w", err)
	}
	if req.Cancel {
		n.log.Info("admin: back in service: draining cancelled")
	} else {
		n.log.Info("admin: draining: the load balancers stop routing here; the node keeps running")
	}
	n.cluster.Rebroadcast()
	if req.Cancel {
		// Load balancers acknowledge only draining sets: nothing to wait for.
		return admin.DrainResponse{Pending: []string{}}, nil
	}
	pending := n.cluster.Unacknowledged()
	if req.Wait {
		pending = waitAcknowledged(ctx, n.cluster)
	}
	return admin.DrainResponse{Draining: true, Pending: nonNil(pending), Acknowledged: len(pending) == 0}, nil
}

// waitAcknowledged polls until every load balancer acknowledged this
// node's current application set or ctx ends, re-gossiping the beacon
// meanwhile; it returns those still pending.
func waitAcknowledged(ctx context.Context, c *cluster.Cluster) []string {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last := time.Now()
	for {
		pending := c.Unacknowledged()
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return pending
		case <-tick.C:
		}
		if time.Since(last) >= 250*time.Millisecond {
			c.Rebroadcast()
			last = time.Now()
		}
	}
}

// nonNil makes a nil slice empty, so that JSON shows [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
