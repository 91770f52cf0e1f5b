package lb

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/scrimplb/scrimp/catalog"
)

// Admission decides which advertised application instances the load
// balancer routes to, between the membership and the generator. A member
// is trusted to run its own applications, not to take over someone else's:
// the first definition of an application name, a domain and path, or a
// listen port that the load balancer routed keeps it (the incumbent), and
// a newcomer that conflicts with it is refused — routed nowhere and
// reported — whatever the order of node or application names. The policy
// adds what no member may do at all (listen ports, this load balancer's
// own addresses and ports) and, optionally, who may advertise what.
//
// admit is pure: previous owners, the snapshot and the policy give the
// admitted snapshot, the next owners and the refusals. The loop keeps the
// owners from one render to the next.

// Policy is what members may advertise, besides what ownership allows. The
// zero value allows every listen port and every member.
type Policy struct {
	// ListenPorts are the listen ports applications may use; empty allows
	// every port (1-65535). Reserved ports are never allowed.
	ListenPorts []PortRange
	// Reserved are the ports scrimp itself and its proxy use on this load
	// balancer (gossip, metrics, admin, stats): never a listen port, and
	// never routed to at one of this load balancer's own addresses.
	Reserved []int
	// Own are this load balancer's own addresses. Loopback and unspecified
	// addresses always count as its own.
	Own []netip.Addr
	// Allow, when not empty, lists what may be admitted: an instance that
	// no rule allows is refused.
	Allow []AllowRule
	// Limits bound what members can make the proxy carry.
	Limits Limits
}

// Limits bound, per member and in total, what admission routes, so that
// one member cannot make the proxy's configuration (and memory) grow
// without bound. Zero means no limit. A member over a per-member limit
// has the excess refused, in order of application name; a newcomer that
// would take a total beyond its limit is refused, incumbents stay.
type Limits struct {
	AppsPerMember        int // applications of one backend
	DomainsPerApp        int // domains of one application
	PathsPerApp          int // paths of one application
	DomainsPerMember     int // distinct domains of one backend's applications
	ListenPortsPerMember int // distinct listen ports of one backend's applications
	UpstreamServers      int // instances routed in total
	Listeners            int // listen ports (and transports) in total
}

// PortRange is an inclusive range of ports; Lo == Hi for a single port.
type PortRange struct{ Lo, Hi int }

// AllowRule allows the applications matching all of its non-empty fields.
type AllowRule struct {
	// Name is a path.Match pattern of application names; empty matches
	// every name.
	Name string
	// Domains are domain patterns, exact ("example.com") or a suffix
	// ("*.example.com" matches every name under example.com, and the
	// wildcard itself). When set, an application matches only if it has
	// domains and every one of them matches a pattern; empty matches any
	// domains and none.
	Domains []string
	// Backends are path.Match patterns of node names that may advertise
	// the application; empty matches every node.
	Backends []string
}

// Refusal is one application instance the load balancer does not route to.
type Refusal struct {
	// Application is the application's name.
	Application string
	// Node is the backend that advertises it.
	Node string
	// Reason says why, for logs and the admin interface.
	Reason string
}

// Owners remembers, from one render to the next, which definition holds
// each application name (and with it its domains, paths and listen port).
// The zero value holds nothing: the state before the first render. It is
// immutable once returned by admit.
type Owners struct {
	apps map[string]owned
	next uint64 // the since of the next new owner
}

type owned struct {
	def   definition
	since uint64 // lower is older; older owners are checked first
}

// Len returns how many application names are held.
func (o Owners) Len() int { return len(o.apps) }

// definition is what an application's owner holds: everything that places
// it on a listener. Domains and paths are normalized (sorted, no
// duplicates), joined by a space, so that a definition is comparable.
type definition struct {
	name     string
	protocol catalog.Protocol
	port     int
	domains  string
	paths    string
}

func defOf(a catalog.Application) definition {
	norm := func(s []string, lower bool) string {
		c := slices.Clone(s)
		if lower {
			for i := range c {
				c[i] = strings.ToLower(c[i])
			}
		}
		slices.Sort(c)
		return strings.Join(slices.Compact(c), " ")
	}
	return definition{name: a.Name, protocol: a.Protocol, port: a.ListenPort,
		domains: norm(a.Domains, true), paths: norm(a.Paths, false)}
}

// String describes the definition for a refusal's reason.
func (d definition) String() string {
	s := fmt.Sprintf("%s on listen port %d", d.protocol, d.port)
	if d.domains != "" {
		s += " for " + strings.ReplaceAll(d.domains, " ", ", ")
	}
	if d.paths != "" {
		s += " paths " + strings.ReplaceAll(d.paths, " ", ", ")
	}
	return s
}

// exclusive reports whether the definition's listener is its own: tcp and
// udp forward a whole port, http kinds share one by host and path.
func (d definition) exclusive() bool {
	return d.protocol == catalog.ProtocolTCP || d.protocol == catalog.ProtocolUDP
}

// portClaim is a listener: a port and its transport.
type portClaim struct {
	port int
	udp  bool
}

// routeClaim is a host and path prefix. A domain is held across listen
// ports (its name is what is claimed); an application without domains
// catches every host, on its own listen port only.
type routeClaim struct {
	port int // 0 for a domain
	host string
	path string
}

func (r routeClaim) String() string {
	if r.host == "" {
		return fmt.Sprintf("any host path %s on listen port %d", r.path, r.port)
	}
	return fmt.Sprintf("domain %s path %s", r.host, r.path)
}

func (d definition) listener() portClaim {
	return portClaim{port: d.port, udp: d.protocol == catalog.ProtocolUDP}
}

func (d definition) routes() []routeClaim {
	if !d.protocol.IsHTTP() {
		return nil
	}
	paths := strings.Fields(d.paths)
	if len(paths) == 0 {
		paths = []string{"/"}
	}
	var out []routeClaim
	if d.domains == "" {
		for _, p := range paths {
			out = append(out, routeClaim{port: d.port, path: p})
		}
		return out
	}
	for _, h := range strings.Fields(d.domains) {
		for _, p := range paths {
			out = append(out, routeClaim{host: h, path: p})
		}
	}
	return out
}

// candidate is one definition as the snapshot advertises it, by the
// instances the policy allows.
type candidate struct {
	def   definition
	nodes []string // advertising it, sorted
}

// holdings are the claims of the definitions admitted so far.
type holdings struct {
	names  map[string]*candidate
	ports  map[portClaim]*candidate
	routes map[routeClaim]*candidate
}

// conflict returns why c cannot have what h holds, or "".
func (h holdings) conflict(c *candidate) string {
	if o := h.names[c.def.name]; o != nil {
		return fmt.Sprintf("application %s is held as %s; this is %s", strconv.Quote(c.def.name), o.def, c.def)
	}
	if o := h.ports[c.def.listener()]; o != nil && (o.def.exclusive() || c.def.exclusive() || o.def.protocol != c.def.protocol) {
		return fmt.Sprintf("listen port %d is held by application %s for %s", c.def.port, strconv.Quote(o.def.name), o.def.protocol)
	}
	for _, r := range c.def.routes() {
		if o := h.routes[r]; o != nil {
			return fmt.Sprintf("%s is held by application %s", r, strconv.Quote(o.def.name))
		}
	}
	return ""
}

func (h holdings) hold(c *candidate) {
	h.names[c.def.name] = c
	if _, ok := h.ports[c.def.listener()]; !ok {
		h.ports[c.def.listener()] = c
	}
	for _, r := range c.def.routes() {
		h.routes[r] = c
	}
}

// admission is one render's admission.
type admission struct {
	// snap is what to render: the input without refused instances.
	snap catalog.Snapshot
	// ack is snap with the refused instances that are not serving
	// (draining, down) kept: the proxy does not route to them, and a
	// draining backend waits for its acknowledgement.
	ack      catalog.Snapshot
	owners   Owners
	refusals []Refusal // sorted by application, node
}

// admit returns what of snap to route, given the owners of the previous
// render. Every instance of snap counts, whatever its state: a backend
// that drains or is down still holds its definition, and so do instances
// the mass-loss guard keeps. An owner keeps its application until no
// instance advertises its definition any more. Definitions without an
// owner are admitted in order of how many instances advertise them; two
// that conflict and are advertised equally often are both refused until
// one is withdrawn, so that no order of names decides.
func (p Policy) admit(prev Owners, snap catalog.Snapshot) admission {
	var refusals []Refusal
	cands := map[definition]*candidate{}
	refused := map[instKey]bool{}
	for _, n := range snap.Nodes {
		if n.Role != catalog.RoleBackend {
			continue
		}
		m := memberUse{ports: map[int]bool{}, domains: map[string]bool{}}
		for _, a := range byName(n.Applications) {
			why := p.check(n, a)
			if why == "" {
				why = p.Limits.member(&m, a)
			}
			if why != "" {
				refusals = append(refusals, Refusal{Application: a.Name, Node: n.Name, Reason: why})
				refused[instKey{n.Name, a.Name}] = true
				continue
			}
			d := defOf(a)
			c := cands[d]
			if c == nil {
				c = &candidate{def: d}
				cands[d] = c
			}
			c.nodes = append(c.nodes, n.Name) // snap.Nodes is sorted by name
		}
	}

	h := holdings{names: map[string]*candidate{}, ports: map[portClaim]*candidate{}, routes: map[routeClaim]*candidate{}}
	next := Owners{apps: map[string]owned{}, next: prev.next}
	refuse := func(c *candidate, why string) {
		for _, node := range c.nodes {
			refusals = append(refusals, Refusal{Application: c.def.name, Node: node, Reason: why})
			refused[instKey{node, c.def.name}] = true
		}
	}
	servers := 0 // instances held, against Limits.UpstreamServers
	// Incumbents first, oldest first. They cannot conflict with each
	// other unless the policy changed; then the older one wins.
	incumbents := slices.SortedFunc(maps.Keys(prev.apps), func(a, b string) int {
		return cmp.Compare(prev.apps[a].since, prev.apps[b].since)
	})
	for _, name := range incumbents {
		o := prev.apps[name]
		c := cands[o.def]
		if c == nil {
			continue // no longer advertised: ownership ends
		}
		delete(cands, o.def)
		if why := h.conflict(c); why != "" {
			refuse(c, why)
			continue
		}
		h.hold(c)
		next.apps[name] = o
		servers += len(c.nodes)
	}

	// Newcomers, most advertised first; equals that conflict are refused.
	rest := slices.SortedFunc(maps.Values(cands), func(a, b *candidate) int {
		return cmp.Or(cmp.Compare(len(b.nodes), len(a.nodes)), compareDefs(a.def, b.def))
	})
	for i := 0; i < len(rest); {
		j := i
		for j < len(rest) && len(rest[j].nodes) == len(rest[i].nodes) {
			j++
		}
		var level []*candidate
		for _, c := range rest[i:j] {
			if why := h.conflict(c); why != "" {
				refuse(c, why)
				continue
			}
			level = append(level, c)
		}
		contested := rivals(level)
		for _, c := range level {
			if rival := contested[c]; rival != nil {
				refuse(c, fmt.Sprintf("contested: application %s (%s) claims the same with as many backends (%d), and neither was here first; neither is routed until one is withdrawn",
					strconv.Quote(rival.def.name), rival.def, len(c.nodes)))
				continue
			}
			if why := p.Limits.total(h, servers, c); why != "" {
				refuse(c, why)
				continue
			}
			h.hold(c)
			servers += len(c.nodes)
			next.apps[c.def.name] = owned{def: c.def, since: next.next}
			next.next++
		}
		i = j
	}

	slices.SortFunc(refusals, func(a, b Refusal) int {
		return cmp.Or(cmp.Compare(a.Application, b.Application), cmp.Compare(a.Node, b.Node), cmp.Compare(a.Reason, b.Reason))
	})
	adm := admission{owners: next, refusals: refusals, snap: snap, ack: snap}
	if len(refused) > 0 {
		adm.snap = without(snap, refused, false)
		adm.ack = without(snap, refused, true)
	}
	return adm
}

// memberUse is what one member's applications admitted so far use,
// against the per-member limits.
type memberUse struct {
	apps    int
	ports   map[int]bool
	domains map[string]bool
}

// byName returns apps sorted by name (a copy if they are not), so that
// which applications of a member exceed a limit does not depend on the
// order of its advertisement.
func byName(apps []catalog.Application) []catalog.Application {
	cmpName := func(a, b catalog.Application) int { return cmp.Compare(a.Name, b.Name) }
	if slices.IsSortedFunc(apps, cmpName) {
		return apps
	}
	return slices.SortedStableFunc(slices.Values(apps), cmpName)
}

// member returns why application a of a member, whose earlier applications
// use m, is over a per-member limit, or "" after counting it in m.
func (l Limits) member(m *memberUse, a catalog.Application) string {
	over := func(n, limit int) bool { return limit > 0 && n > limit }
	if over(len(a.Domains), l.DomainsPerApp) {
		return fmt.Sprintf("limit lb.limits.domains-per-app: %d domains, at most %d allowed", len(a.Domains), l.DomainsPerApp)
	}
	if over(len(a.Paths), l.PathsPerApp) {
		return fmt.Sprintf("limit lb.limits.paths-per-app: %d paths, at most %d allowed", len(a.Paths), l.PathsPerApp)
	}
	if over(m.apps+1, l.AppsPerMember) {
		return fmt.Sprintf("limit lb.limits.apps-per-member: this backend advertises more than %d applications; those after the first %d by name are refused",
			l.AppsPerMember, l.AppsPerMember)
	}
	if !m.ports[a.ListenPort] && over(len(m.ports)+1, l.ListenPortsPerMember) {
		return fmt.Sprintf("limit lb.limits.listen-ports-per-member: this backend's applications use more than %d listen ports", l.ListenPortsPerMember)
	}
	var fresh []string
	for _, d := range a.Domains {
		d = strings.ToLower(d)
		if !m.domains[d] && !slices.Contains(fresh, d) {
			fresh = append(fresh, d)
		}
	}
	if over(len(m.domains)+len(fresh), l.DomainsPerMember) {
		return fmt.Sprintf("limit lb.limits.domains-per-member: this backend's applications name more than %d domains", l.DomainsPerMember)
	}
	m.apps++
	m.ports[a.ListenPort] = true
	for _, d := range fresh {
		m.domains[d] = true
	}
	return ""
}

// total returns why newcomer c, with servers instances held so far, would
// take a total beyond its limit, or "".
func (l Limits) total(h holdings, servers int, c *candidate) string {
	if l.UpstreamServers > 0 && servers+len(c.nodes) > l.UpstreamServers {
		return fmt.Sprintf("limit lb.limits.upstream-servers: %d instances are routed, at most %d allowed in total", servers, l.UpstreamServers)
	}
	if _, ok := h.ports[c.def.listener()]; !ok && l.Listeners > 0 && len(h.ports)+1 > l.Listeners {
		return fmt.Sprintf("limit lb.limits.listeners: %d listeners are in use, at most %d allowed in total", len(h.ports), l.Listeners)
	}
	return ""
}

func compareDefs(a, b definition) int {
	return cmp.Or(cmp.Compare(a.name, b.name), cmp.Compare(a.protocol, b.protocol), cmp.Compare(a.port, b.port),
		cmp.Compare(a.domains, b.domains), cmp.Compare(a.paths, b.paths))
}

// rivals maps each candidate of level that conflicts with another one of
// level to the first such other one (in level's order).
func rivals(level []*candidate) map[*candidate]*candidate {
	names := map[string][]*candidate{}
	routes := map[routeClaim][]*candidate{}
	type port struct {
		excl    []*candidate                      // exclusive users, the first two
		byProto map[catalog.Protocol][]*candidate // sharing users, the first two of each protocol
	}
	ports := map[portClaim]*port{}
	firstTwo := func(s []*candidate, c *candidate) []*candidate {
		if len(s) < 2 {
			s = append(s, c)
		}
		return s
	}
	for _, c := range level {
		names[c.def.name] = firstTwo(names[c.def.name], c)
		for _, r := range c.def.routes() {
			routes[r] = append(routes[r], c)
		}
		pt := ports[c.def.listener()]
		if pt == nil {
			pt = &port{byProto: map[catalog.Protocol][]*candidate{}}
			ports[c.def.listener()] = pt
		}
		if c.def.exclusive() {
			pt.excl = firstTwo(pt.excl, c)
		} else {
			pt.byProto[c.def.protocol] = firstTwo(pt.byProto[c.def.protocol], c)
		}
	}
	other := func(s []*candidate, c *candidate) *candidate {
		for _, d := range s {
			if d != c {
				return d
			}
		}
		return nil
	}
	out := map[*candidate]*candidate{}
	for _, c := range level {
		rival := other(names[c.def.name], c)
		for _, r := range c.def.routes() {
			if rival != nil {
				break
			}
			rival = other(routes[r], c)
		}
		if rival == nil {
			pt := ports[c.def.listener()]
			rival = other(pt.excl, c)
			for _, proto := range slices.Sorted(maps.Keys(pt.byProto)) {
				if rival == nil && (c.def.exclusive() || proto != c.def.protocol) {
					rival = other(pt.byProto[proto], c)
				}
			}
		}
		if rival != nil {
			out[c] = rival
		}
	}
	return out
}

// without returns snap without the refused instances; keepIdle keeps
// those that do not serve. It copies what it changes: snap is shared.
func without(snap catalog.Snapshot, refused map[instKey]bool, keepIdle bool) catalog.Snapshot {
	nodes := make([]catalog.Node, 0, len(snap.Nodes))
	for _, n := range snap.Nodes {
		var apps []catalog.Application
		cut := false
		for _, a := range n.Applications {
			if refused[instKey{n.Name, a.Name}] && !(keepIdle && !a.State.Serving()) {
				cut = true
				continue
			}
			apps = append(apps, a)
		}
		if cut {
			n.Applications = apps
		}
		nodes = append(nodes, n)
	}
	return catalog.Snapshot{Nodes: nodes} // still sorted by name
}

// check returns why the policy refuses application a of node n, or "".
func (p Policy) check(n catalog.Node, a catalog.Application) string {
	if slices.Contains(p.Reserved, a.ListenPort) {
		return fmt.Sprintf("listen port %d is used by scrimp or its proxy on this load balancer", a.ListenPort)
	}
	if len(p.ListenPorts) > 0 && !slices.ContainsFunc(p.ListenPorts, func(r PortRange) bool {
		return r.Lo <= a.ListenPort && a.ListenPort <= r.Hi
	}) {
		return fmt.Sprintf("listen port %d is not one lb.listen-ports allows", a.ListenPort)
	}
	if slices.Contains(p.Reserved, a.ApplicationPort) && p.own(n.Addr) {
		return fmt.Sprintf("address %s is this load balancer's own, and port %d is scrimp's or its proxy's",
			n.Addr, a.ApplicationPort)
	}
	if len(p.Allow) > 0 && !slices.ContainsFunc(p.Allow, func(r AllowRule) bool { return r.allows(n.Name, a) }) {
		return "no rule of lb.applications allows this application from this backend"
	}
	return ""
}

// own reports whether addr is one of this load balancer's addresses.
func (p Policy) own(addr netip.Addr) bool {
	addr = addr.Unmap()
	if addr.IsLoopback() || addr.IsUnspecified() {
		return true
	}
	return slices.ContainsFunc(p.Own, func(o netip.Addr) bool { return o.Unmap() == addr })
}

// allows reports whether the rule allows application a from node.
func (r AllowRule) allows(node string, a catalog.Application) bool {
	if r.Name != "" {
		if ok, _ := path.Match(r.Name, a.Name); !ok {
			return false
		}
	}
	if len(r.Domains) > 0 {
		if len(a.Domains) == 0 {
			return false
		}
		for _, d := range a.Domains {
			if !slices.ContainsFunc(r.Domains, func(pat string) bool { return DomainMatch(pat, d) }) {
				return false
			}
		}
	}
	if len(r.Backends) > 0 && !slices.ContainsFunc(r.Backends, func(pat string) bool {
		ok, _ := path.Match(pat, node)
		return ok
	}) {
		return false
	}
	return true
}

// DomainMatch reports whether domain matches pattern: the same name, or,
// for a pattern "*.suffix", any name ending in ".suffix" (a wildcard
// domain "*.suffix" included). Case does not matter.
func DomainMatch(pattern, domain string) bool {
	pattern, domain = strings.ToLower(pattern), strings.ToLower(domain)
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok && strings.HasPrefix(suffix, ".") {
		return strings.HasSuffix(domain, suffix) && len(domain) > len(suffix)
	}
	return pattern == domain
}

// retainable returns the retained applications that conflict with no
// owner, and the names of those that do: a name, domain or listen port
// that another application holds now is no longer kept for one that has
// lost every backend.
func (o Owners) retainable(retained []catalog.Application) (keep []catalog.Application, dropped []string) {
	h := holdings{names: map[string]*candidate{}, ports: map[portClaim]*candidate{}, routes: map[routeClaim]*candidate{}}
	for _, name := range slices.Sorted(maps.Keys(o.apps)) {
		h.hold(&candidate{def: o.apps[name].def})
	}
	for _, a := range retained {
		d := defOf(a)
		if owner, ok := o.apps[a.Name]; ok && owner.def == d {
			keep = append(keep, a) // still owned, only draining or down
			continue
		}
		if h.conflict(&candidate{def: d}) != "" {
			dropped = append(dropped, a.Name)
			continue
		}
		keep = append(keep, a)
	}
	return keep, dropped
}
