package cluster

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/scrimplb/scrimp/catalog"
)

// Bringing back members declared dead or left while they are alive.
//
// Any member holding the cluster key can gossip that another is dead, or
// that it left, and memberlist believes it. A live node refutes a death it
// hears of with a higher incarnation, but a claim naming incarnation
// 2^32-1 cannot be beaten: the refutation wraps to 0 and peers ignore it
// until they forget the dead node (GossipToTheDeadTime, see profile). And
// a node said to have left is not even told. So:
//
//   - a member that loses a peer that matters to it (a load balancer: any
//     member; a backend: a load balancer) remembers the peer's gossip
//     address and, once memberlist has forgotten the peer, joins it (a
//     push/pull) a few times at growing intervals: a live peer's state is
//     merged back, a gone one refuses the connection (rejoinState);
//   - a member that learns from a push/pull that the other side thinks it
//     dead, left or unknown gossips its beacon again shortly after, with a
//     fresh incarnation (merger), so that a refutation that wrapped to 0
//     is followed by one peers accept;
//   - a draining backend goes on waiting for a load balancer it is trying
//     to bring back (Cluster.Unacknowledged): a forged leave must not
//     count as an acknowledgement. A load balancer that really went costs
//     a drain the two refused attempts (reapDelay and two probe
//     intervals) at most.
//
// A member that keeps being declared dead by a forger is kept out only
// while the forger keeps at it; one claim costs its victim seconds.

// Rejoin limits.
const (
	// rejoinInFlight bounds the push/pulls of rejoin attempts running at
	// once; more wait for a slot at the next worker tick.
	rejoinInFlight = 3
	// rejoinFailures is how many failed joins make a member count as
	// really gone.
	rejoinFailures = 2
	// rejoinMaxWait caps the growing wait between attempts.
	rejoinMaxWait = 8 * time.Second
	// rejoinWindow is how long attempts go on after the first one could
	// have worked (see rejoinState.deadline).
	rejoinWindow = 30 * time.Second
)

// rejoinState is the attempt to bring back one member; c.mu guards it.
// While running, one goroutine is joining addr and nothing else touches
// the attempt: at most one loop per member name.
type rejoinState struct {
	addr     string
	role     catalog.Role
	next     time.Time // when to try next
	wait     time.Duration
	deadline time.Time // no attempt starts after it
	failures int
	running  bool
}

// scheduleRejoinLocked starts trying to bring back m, which just left or
// died, if it matters to this node. c.mu must be held; it never blocks.
func (c *Cluster) scheduleRejoinLocked(name string, m *member, now time.Time) {
	if name == c.self || c.stopped() {
		return
	}
	if c.role != catalog.RoleLB && m.beacon.Role != catalog.RoleLB {
		return // a backend needs only the load balancers (drains wait for them)
	}
	if st, ok := c.rejoin[name]; ok && st.running {
		return // the running attempt carries on
	}
	// memberlist forgets a dead member at the end of the first probe
	// round (a probe interval per live member) after reapDelay; until
	// then it ignores the member's refutation. An attempt before that
	// is not wasted (the member hears it was declared gone), but only
	// one after it can work.
	first := c.reapDelay + c.rejoinSpan
	reaped := c.reapDelay + time.Duration(len(c.members)+1)*c.rejoinSpan
	c.rejoin[name] = &rejoinState{
		addr:     netip.AddrPortFrom(m.addr, m.port).String(),
		role:     m.beacon.Role,
		next:     now.Add(first),
		wait:     c.rejoinSpan,
		deadline: now.Add(reaped + rejoinWindow),
	}
	c.kickWorker()
}

// rejoinDue starts the attempts that are due, as far as slots allow. The
// worker calls it on every tick; it does not block.
func (c *Cluster) rejoinDue() {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, st := range c.rejoin {
		if st.running || now.Before(st.next) {
			continue
		}
		if now.After(st.deadline) {
			delete(c.rejoin, name)
			c.log.Info("member did not come back; no longer trying to rejoin it", "member", name, "addr", st.addr)
			continue
		}
		select {
		case c.rejoinSlots <- struct{}{}:
		default:
			return // all slots busy: the next tick tries again
		}
		st.running = true
		c.wg.Go(func() { c.tryRejoin(name, st) })
	}
}

// tryRejoin makes one attempt: a push/pull with the member's last gossip
// address. It blocks up to the profile's TCP timeout.
func (c *Cluster) tryRejoin(name string, st *rejoinState) {
	defer func() { <-c.rejoinSlots }()
	if c.stopped() {
		return
	}
	n, err := c.ml.Join([]string{st.addr})
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	st.running = false
	if c.rejoin[name] != st {
		return // back already, or left again and rescheduled
	}
	if _, back := c.members[name]; back {
		delete(c.rejoin, name)
		return
	}
	if n == 0 {
		st.failures++
		c.log.Debug("cannot reach a member that left or died", "member", name, "addr", st.addr, "failures", st.failures, "err", err)
		if st.failures >= rejoinFailures {
			delete(c.rejoin, name)
			return
		}
	}
	st.next = now.Add(st.wait)
	st.wait = min(2*st.wait, rejoinMaxWait)
}

func (c *Cluster) stopped() bool {
	select {
	case <-c.stop:
		return true
	default:
		return false
	}
}

// merger watches push/pulls of joins (memberlist calls NotifyMerge only
// for those, with the other side's view of the cluster, before merging
// it). It never refuses a merge and never blocks.
type merger struct{ c *Cluster }

var _ memberlist.MergeDelegate = merger{}

// NotifyMerge schedules this node's beacon to be gossiped again when the
// other side thinks this node dead, left, or does not know it: memberlist
// refutes such a claim as it merges, but a refutation of incarnation
// 2^32-1 wraps to 0, which no peer accepts over anything it has. Gossiping
// again a little later takes a fresh incarnation (1 after the wrap). Any
// record of this node on the other side has Join push once more.
func (g merger) NotifyMerge(peers []*memberlist.Node) error {
	for _, p := range peers {
		if p.Name == g.c.self {
			g.c.remembered.Store(true)
			if p.State == memberlist.StateAlive || p.State == memberlist.StateSuspect {
				return nil
			}
			break
		}
	}
	g.c.regossipSoon(time.Now())
	return nil
}

// regossipSoon schedules the beacon to be gossiped again (see
// Cluster.regossip). It does not block.
func (c *Cluster) regossipSoon(now time.Time) {
	c.mu.Lock()
	c.regossip = []time.Time{now.Add(regossipFirst), now.Add(regossipSecond)}
	c.mu.Unlock()
	c.kickWorker()
}

// nudge is when a backend last pulled a load balancer's state because the
// load balancer sent it a direct acknowledgement, and whether another
// acknowledgement came too soon after that one.
type nudge struct {
	last    time.Time
	pending bool
}

// nudgeEvery is the least time between two pulls of one load balancer's
// state: a flood of forged acknowledgements costs one push/pull per load
// balancer every nudgeEvery.
const nudgeEvery = 250 * time.Millisecond

// nudged handles a direct acknowledgement, which says load balancer name
// acknowledges digest. Anyone with the key can send one in any name, so it
// is not taken as an acknowledgement: if name is a load balancer this node
// knows and the digest is this node's, this node pulls that load
// balancer's state from the address gossip gives for it, which brings its
// current beacon, the only place an acknowledgement counts. Runs on the
// worker; the push/pull is the sender's, in the acknowledgement lane.
func (c *Cluster) nudged(name string, digest catalog.Digest, now time.Time) {
	c.mu.Lock()
	m, ok := c.members[name]
	if !ok || name == c.self || m.beacon.Role != catalog.RoleLB || digest != c.digest {
		c.mu.Unlock()
		return
	}
	nu := c.nudges[name]
	want := catalog.Ack{Node: catalog.NodeHash(c.self), Digest: digest}
	if slices.Contains(m.beacon.Acks, want) || m.acked && m.ackedFor == want {
		nu.pending = false // the beacon has it already
		c.nudges[name] = nu
		c.mu.Unlock()
		return
	}
	if now.Sub(nu.last) < nudgeEvery {
		nu.pending = true
		c.nudges[name] = nu
		c.mu.Unlock()
		return
	}
	c.nudges[name] = nudge{last: now}
	addr := netip.AddrPortFrom(m.addr, m.port).String()
	c.mu.Unlock()
	c.send.submit(sendJob{node: name, kind: taskAcked, lane: laneAck, run: func() error {
		_, err := c.ml.Join([]string{addr})
		return err
	}})
}

// nudgesDue pulls the state of load balancers whose acknowledgement came
// too soon after the last pull, once nudgeEvery has passed, and forgets
// members that are gone. Runs on the worker.
func (c *Cluster) nudgesDue(now time.Time) {
	var due []string
	c.mu.Lock()
	for name, nu := range c.nudges {
		if _, ok := c.members[name]; !ok {
			delete(c.nudges, name)
			continue
		}
		if nu.pending && now.Sub(nu.last) >= nudgeEvery {
			due = append(due, name)
		}
	}
	digest := c.digest
	c.mu.Unlock()
	for _, name := range due {
		c.nudged(name, digest, now)
	}
}

// receiveAckSet handles load balancer from's full acknowledgement set
// (ackSetMsg), received directly. Anyone with the key can send one in any
// name, so it counts only through from's beacon: if from is a load
// balancer this node knows and acks holds this node's current
// acknowledgement (its name hash and its current digest), the set counts
// once it hashes to a set digest from's beacon names or named lately
// (catalog.AckSetNode, member.sums). If not, this node keeps the set's
// digest and pulls from's state (nudged, rate-limited), which brings the
// current beacon; upsert completes the check when it names a kept digest. A
// flood of such messages costs a hash each, the worker's acknowledgement
// queue bounds them, and the pulls they cause are those of nudged. Runs on
// the worker.
func (c *Cluster) receiveAckSet(from string, acks []catalog.Ack, now time.Time) {
	c.mu.Lock()
	m, ok := c.members[from]
	want := catalog.Ack{Node: catalog.NodeHash(c.self), Digest: c.digest}
	if !ok || from == c.self || m.beacon.Role != catalog.RoleLB || !containsAck(acks, want) {
		c.mu.Unlock()
		return
	}
	sum := catalog.AckSetDigest(acks)
	if m.sums.has(func(d catalog.Digest) bool { return d == sum }) {
		m.acked, m.ackedFor = true, want
		c.mu.Unlock()
		c.log.Debug("acknowledged by a load balancer's set", "member", from, "set", sum)
		return
	}
	m.pending.put(pendingAck{sum: sum, ack: want})
	digest := c.digest
	c.mu.Unlock()
	c.nudged(from, digest, now)
}

// containsAck reports whether acks, in catalog.SortAcks order, holds a.
func containsAck(acks []catalog.Ack, a catalog.Ack) bool {
	i, found := slices.BinarySearchFunc(acks, a.Node, func(e catalog.Ack, n uint64) int { return cmp.Compare(e.Node, n) })
	return found && acks[i] == a
}
