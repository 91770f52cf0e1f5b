package cluster

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/keyring"
)

// The operator's view of the membership (the admin interface's members).
//
// memberlist v0.7 exposes neither a member's suspicion nor whether a lost
// member left or died (its Node.State is never set), so both are inferred
// from what this node sees: the acks to its own probes (a PingDelegate),
// and whether probes were still answered when the member was lost.

// MemberState is how this node sees a member.
type MemberState string

// The member states.
const (
	// MemberAlive: memberlist lists it and its probes are answered.
	MemberAlive MemberState = "alive"
	// MemberSuspect: memberlist still lists it, but this node's probes of
	// it have gone unanswered for two probe rounds.
	MemberSuspect MemberState = "suspect"
	// MemberDead: lost after its probes went unanswered (failure
	// detection).
	MemberDead MemberState = "dead"
	// MemberLeft: lost while its probes were still answered: a graceful
	// leave.
	MemberLeft MemberState = "left"
)

// MemberInfo is one member as this node knows it; a value the caller owns.
type MemberInfo struct {
	Name string
	Role catalog.Role
	// Addr is its gossip address, host:port.
	Addr  string
	State MemberState
	// Applications are its verified application set with each instance's
	// state, sorted by name; nil while unknown (backends see peers without
	// applications; a load balancer until the set is fetched).
	Applications []catalog.Application
	// Digest names the set it gossips; Fetched reports whether that set
	// has been verified (Applications may show the previous one).
	Digest  catalog.Digest
	Fetched bool
	// LastSeen is when this node last heard from it: a probe it answered,
	// a beacon or an application set; zero when never.
	LastSeen time.Time
	// Since is when a dead or left member was lost; zero otherwise.
	Since time.Time
	// Self marks this node.
	Self bool
}

// goneKeep bounds how long, and goneMax how many, lost members are shown.
const (
	goneKeep = 10 * time.Minute
	goneMax  = 128
)

// seenBook records when members were last heard from and the members lost
// lately; guarded by Cluster.mu. The zero value is ready.
type seenBook struct {
	last map[string]time.Time
	gone map[string]MemberInfo
}

func (b *seenBook) heard(name string, at time.Time) {
	if b.last == nil {
		b.last = map[string]time.Time{}
	}
	if at.After(b.last[name]) {
		b.last[name] = at
	}
	delete(b.gone, name)
}

// pinger records the acks to this node's probes (memberlist's
// PingDelegate); called on memberlist's goroutines, it must not block.
type pinger struct{ c *Cluster }

func (pinger) AckPayload() []byte { return nil }

func (p pinger) NotifyPingComplete(other *memberlist.Node, _ time.Duration, _ []byte) {
	p.c.mu.Lock()
	if _, ok := p.c.members[other.Name]; ok {
		p.c.seen.heard(other.Name, time.Now())
	}
	p.c.mu.Unlock()
}

// probeRound is how long this node takes to probe every member once.
func (c *Cluster) probeRoundLocked() time.Duration {
	return time.Duration(max(len(c.members), 2)) * c.rejoinSpan
}

// lostLocked records that m, a member just removed, is gone. c.mu must be
// held.
func (c *Cluster) lostLocked(name string, m *member, now time.Time) {
	if name == c.self {
		return
	}
	state := MemberLeft
	if last := c.seen.last[name]; now.Sub(last) > c.probeRoundLocked()+c.rejoinSpan {
		state = MemberDead
	}
	if c.seen.gone == nil {
		c.seen.gone = map[string]MemberInfo{}
	}
	c.seen.gone[name] = MemberInfo{Name: name, Role: m.beacon.Role, Addr: netip.AddrPortFrom(m.addr, m.port).String(),
		State: state, Digest: m.beacon.Digest, LastSeen: c.seen.last[name], Since: now}
	delete(c.seen.last, name)
	for n, g := range c.seen.gone {
		if now.Sub(g.Since) > goneKeep {
			delete(c.seen.gone, n)
		}
	}
	if len(c.seen.gone) > goneMax {
		oldest := ""
		for n, g := range c.seen.gone {
			if oldest == "" || g.Since.Before(c.seen.gone[oldest].Since) {
				oldest = n
			}
		}
		delete(c.seen.gone, oldest)
	}
}

// MemberInfos returns every member this node knows, sorted by name: the
// live ones, this node included, and those lost within the last ten
// minutes. It never blocks on the network; the result is the caller's.
func (c *Cluster) MemberInfos() []MemberInfo {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	suspectAfter := 2 * c.probeRoundLocked()
	out := make([]MemberInfo, 0, len(c.members)+len(c.seen.gone))
	for name, m := range c.members {
		mi := MemberInfo{Name: name, Role: m.beacon.Role, Addr: netip.AddrPortFrom(m.addr, m.port).String(),
			State: MemberAlive, Digest: m.beacon.Digest, LastSeen: c.seen.last[name]}
		switch {
		case name == c.self:
			mi.Self, mi.LastSeen, mi.Fetched = true, now, true
			mi.Addr = c.localAddr
			mi.Applications = slices.Clone(c.apps)
			mi.Digest = c.digest
		case m.apps != nil:
			mi.Applications = slices.Clone(m.apps)
			mi.Fetched = m.have == m.beacon.Digest
		}
		if !mi.Self && !mi.LastSeen.IsZero() && now.Sub(mi.LastSeen) > suspectAfter {
			mi.State = MemberSuspect
		}
		out = append(out, mi)
	}
	for name, g := range c.seen.gone {
		if _, live := c.members[name]; !live && now.Sub(g.Since) <= goneKeep {
			out = append(out, g)
		}
	}
	slices.SortFunc(out, func(a, b MemberInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// KeyFingerprints returns the fingerprints (keyring.Fingerprint) of the
// gossip keyring, primary first; nil for plaintext gossip. Never a key.
func (c *Cluster) KeyFingerprints() []string {
	if c.keyring == nil {
		return nil
	}
	c.keyMu.Lock()
	keys := c.keyring.GetKeys() // memberlist's: primary first
	c.keyMu.Unlock()
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = keyring.Fingerprint(k)
	}
	return out
}
