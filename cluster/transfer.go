package cluster

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/scrimplb/scrimp/catalog"
)

// Retry timing for application-set fetches.
const (
	answerWait = 5 * time.Second        // how long a request from an unknown member is kept
	maxPending = 64                     // bound on such requests, against floods
	fetchRetry = retryBase              // ask again when no answer came, the first time (then backing off)
	workerTick = 250 * time.Millisecond // how often pending fetches are reviewed
	// broadcastWait is how long a re-broadcast waits for memberlist's
	// confirmation, which it does not need (UpdateNode cannot skip it).
	broadcastWait = 10 * time.Millisecond
	// regossipFirst and regossipSecond are when a changed beacon is
	// gossiped again, after the change.
	regossipFirst  = 300 * time.Millisecond
	regossipSecond = 1500 * time.Millisecond
	// dropLogEvery is the least time between two log lines about dropped
	// tasks; Stats counts every one.
	dropLogEvery = time.Second
)

// fetchKind is where this node stands in getting the application set a
// member gossips the digest of.
type fetchKind uint8

const (
	// fetchUnknown: the set is neither held nor asked for. Only a load
	// balancer fetches sets, so on a backend every backend peer stays here
	// (and so does this node's own entry, whose set is Cluster.apps).
	fetchUnknown fetchKind = iota
	// fetchFetching: a request went out at fetchState.since and no valid
	// answer has come; the worker asks again after fetchRetry, doubling
	// for each request unanswered up to retryMax (fetchState.retryAfter).
	fetchFetching
	// fetchValid: member.apps is the set the member gossips.
	fetchValid
	// fetchRejected: the set named fetchState.digest hashed to it but failed
	// validation. It is not asked for again until the member gossips
	// another digest; the snapshot keeps the last valid set meanwhile.
	fetchRejected
)

func (k fetchKind) String() string {
	switch k {
	case fetchUnknown:
		return "unknown"
	case fetchFetching:
		return "fetching"
	case fetchValid:
		return "valid"
	case fetchRejected:
		return "rejected"
	}
	return fmt.Sprintf("fetchKind(%d)", uint8(k))
}

// fetchState is a member's fetchKind and the digest it is about, which is
// always the digest of the member's current beacon.
type fetchState struct {
	kind   fetchKind
	digest catalog.Digest
	since  time.Time // fetchFetching: when the last request went out
	asked  int       // fetchFetching: requests for digest so far, unanswered
}

// retryAfter is how long after since to ask again: a member that did not
// answer is asked less and less often, so that members that never answer
// cost little. A new digest (a new fetchState) starts over.
func (f fetchState) retryAfter() time.Duration {
	return backoffDelay(f.asked, fetchRetry, retryMax)
}

// ask records one more request for f's digest at now.
func (f *fetchState) ask(now time.Time) {
	f.kind, f.since = fetchFetching, now
	f.asked++
}

func (f fetchState) String() string {
	switch f.kind {
	case fetchFetching:
		return fmt.Sprintf("fetching %s since %s (asked %d times)", f.digest, f.since.Format(time.RFC3339Nano), f.asked)
	case fetchValid, fetchRejected:
		return fmt.Sprintf("%s %s", f.kind, f.digest)
	}
	return f.kind.String()
}

// track brings m's fetch state in line with its beacon, just updated, and
// reports whether to ask m for its set now. fetches says whether this node
// fetches m's set at all (a load balancer fetching a peer's).
func (m *member) track(fetches bool, now time.Time) bool {
	d := m.beacon.Digest
	switch {
	case m.beacon.Role == catalog.RoleLB:
		// A load balancer's set is empty by definition: nothing to fetch.
		m.apps, m.have = []catalog.Application{}, d
		m.fetch = fetchState{kind: fetchValid, digest: d}
	case m.apps != nil && m.have == d:
		// Back to (or still at) the set we hold.
		m.fetch = fetchState{kind: fetchValid, digest: d}
	case m.fetch.kind == fetchRejected && m.fetch.digest == d:
		// Same bad set: asking again would bring the same bytes.
	case !fetches:
		m.fetch = fetchState{kind: fetchUnknown, digest: d}
	case m.fetch.kind == fetchFetching && m.fetch.digest == d:
		// A request for this very set is out; the worker repeats it if
		// no answer comes, backing off.
		if now.Sub(m.fetch.since) < m.fetch.retryAfter() {
			return false
		}
		m.fetch.ask(now)
		return true
	default:
		m.fetch = fetchState{digest: d}
		m.fetch.ask(now)
		return true
	}
	return false
}

type taskKind int

const (
	taskFetch     taskKind = iota // ask node for its set
	taskAnswer                    // send our set to node
	taskState                     // a set arrived: verify and store
	taskBroadcast                 // re-broadcast our beacon
	taskAck                       // send our acknowledgement set to names
	taskAcked                     // node says it acknowledged digest: pull its beacon
	taskKeyOp                     // apply a member's key operation, answer it
	taskAckSet                    // node sent its acknowledgement set: check it
)

func (k taskKind) String() string {
	switch k {
	case taskFetch:
		return "fetch"
	case taskAnswer:
		return "answer"
	case taskState:
		return "state"
	case taskBroadcast:
		return "broadcast"
	case taskAck:
		return "ack"
	case taskAcked:
		return "acked"
	case taskKeyOp:
		return "keyop"
	case taskAckSet:
		return "ackset"
	}
	return fmt.Sprintf("taskKind(%d)", int(k))
}

// task is work handed from memberlist's callbacks, which must not block,
// to the worker goroutine, which may.
type task struct {
	kind   taskKind
	node   string         // the member to send to, or that sent
	digest catalog.Digest // taskAcked
	state  stateMsg       // taskState
	keyOp  keyOpMsg       // taskKeyOp
	// names and payload are taskAck's: the backends to send the encoded
	// acknowledgement set to.
	names   []string
	payload []byte
	acks    []catalog.Ack // taskAckSet
}

// Why a task is dropped.
var (
	errQueueFull   = errors.New("cluster work queue full")
	errPendingFull = fmt.Errorf("%d requests from members not known yet are waiting already", maxPending)
)

// enqueueAck hands t to the worker's acknowledgement queue without
// blocking: acknowledgements and the beacon broadcasts before them (in
// order), and, on a backend, direct acknowledgements received.
func (c *Cluster) enqueueAck(t task) {
	if c.stopped() {
		return
	}
	select {
	case c.ackWork <- t:
	default:
		c.dropped(t, errQueueFull)
	}
}

// enqueue hands t to the worker without blocking. A dropped fetch is
// retried by the worker's review; a dropped answer by the requester; a
// dropped acknowledgement is sent again by the next Acknowledge.
func (c *Cluster) enqueue(t task) {
	select {
	case <-c.stop:
		return // closed: nothing is dropped, there is no work any more
	default:
	}
	select {
	case c.work <- t:
	default:
		c.dropped(t, errQueueFull)
	}
}

// dropped counts a task that will not be done and logs it, at most once
// per dropLogEvery so that a flood does not flood the log too.
func (c *Cluster) dropped(t task, err error) {
	n := c.stats.droppedTasks.Add(1)
	now := time.Now().UnixNano()
	last := c.dropLogged.Load()
	if last != 0 && now-last < int64(dropLogEvery) || !c.dropLogged.CompareAndSwap(last, now) {
		return
	}
	c.log.Warn("cluster dropped a task", "kind", t.kind.String(), "member", sanitize(t.node), "dropped", n, "err", err)
}

// worker runs application-set transfer until Close. It never waits on the
// network: sends are the sender's (sender.go). Acknowledgements come first.
// On a backend its tick stops while nothing is due (quiet), since every
// wakeup of an idle process costs CPU; what schedules work restarts it
// (kickWorker), and so does any task the worker takes.
func (c *Cluster) worker() {
	tick := time.NewTicker(workerTick)
	defer tick.Stop()
	tickC := tick.C
	for {
		select {
		case <-c.stop:
			return
		case t := <-c.ackWork:
			c.do(t)
			continue
		default:
		}
		ticked := false
		select {
		case <-c.stop:
			return
		case t := <-c.ackWork:
			c.do(t)
		case t := <-c.work:
			c.do(t)
		case <-tickC:
			ticked = true
			c.stats.workerTicks.Add(1)
			c.answerPending()
			c.retryFetches()
			c.regossipDue()
			c.rejoinDue()
			c.nudgesDue(time.Now())
			c.resendAcks(time.Now())
			c.redoSends(time.Now())
		case <-c.known:
			c.answerPending()
		case <-c.wake:
		}
		switch {
		case tickC != nil && ticked && c.quiet():
			tick.Stop()
			tickC = nil
		case tickC == nil && !c.quiet():
			tick.Reset(workerTick)
			tickC = tick.C
		}
	}
}

// kickWorker restarts the worker's tick if it stopped (see quiet). Call it
// after scheduling anything a tick does. It never blocks.
func (c *Cluster) kickWorker() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// quiet reports whether no tick of the worker has anything to do until
// something schedules work (and kicks the worker): never on a load
// balancer, whose fetches and acknowledgements repeat on the tick.
func (c *Cluster) quiet() bool {
	if c.role == catalog.RoleLB {
		return false
	}
	c.mu.Lock()
	q := len(c.pending) == 0 && len(c.regossip) == 0 && len(c.rejoin) == 0
	for _, nu := range c.nudges {
		q = q && !nu.pending
	}
	c.mu.Unlock()
	return q && !c.send.redoPending()
}

func (c *Cluster) do(t task) {
	switch t.kind {
	case taskFetch:
		c.mu.Lock()
		m, ok := c.members[t.node]
		fetching := ok && m.fetch.kind == fetchFetching
		c.mu.Unlock()
		if !fetching {
			return // the set came meanwhile (with the member's join)
		}
		c.log.Debug("asking member for its applications", "member", t.node)
		c.sendTo(t.node, taskFetch, laneFast, requestMsg{From: c.self})
	case taskAnswer:
		c.mu.Lock()
		msg := stateMsg{From: c.self, Digest: c.digest, Set: c.state}
		_, known := c.members[t.node]
		if !known {
			// A load balancer that just learnt of us during our join
			// asks before we have merged its state: answer once we know
			// where it is, rather than at any address a message names.
			_, waiting := c.pending[t.node]
			full := !waiting && len(c.pending) >= maxPending
			if !full {
				c.pending[t.node] = time.Now().Add(answerWait)
			}
			c.mu.Unlock()
			if full {
				c.dropped(t, errPendingFull)
			} else {
				c.log.Debug("request from a member not known yet: answering once it is", "member", sanitize(t.node))
			}
			return
		}
		c.mu.Unlock()
		c.sendTo(t.node, taskAnswer, laneFast, msg)
	case taskState:
		c.receiveState(t.state)
	case taskAck:
		c.sendAcks(t.names, t.payload)
	case taskAckSet:
		c.receiveAckSet(t.node, t.acks, time.Now())
	case taskAcked:
		c.nudged(t.node, t.digest, time.Now())
	case taskKeyOp:
		c.answerKeyOp(t.keyOp)
	case taskBroadcast:
		// The broadcast is queued at once; waiting for memberlist to
		// confirm it would hold up every other task (answers, acks).
		c.broadcast()
	}
}

// sendTo has the sender send msg to the named member over TCP, at the
// address gossip gives for it now, in lane l. It does not block. A fetch
// request to a member that did not answer the last one goes to the slow
// lane.
func (c *Cluster) sendTo(name string, kind taskKind, l lane, msg message) {
	c.mu.Lock()
	m, ok := c.members[name]
	var to *memberlist.Node
	var slow bool
	if ok {
		to = &memberlist.Node{Name: name, Addr: net.IP(m.addr.AsSlice()), Port: m.port}
		slow = kind == taskFetch && m.fetch.asked > 1
	}
	c.mu.Unlock()
	if !ok {
		return
	}
	b := encodeMessage(msg)
	// An answer is redone by this node when it fails (sender.due); a fetch
	// by the worker's review.
	c.send.submit(sendJob{node: name, kind: kind, lane: l, slow: slow, redo: kind == taskAnswer, run: func() error {
		return c.ml.SendReliable(to, b)
	}})
}

// sendEncoded is sendTo for a message encoded already, which several
// members are sent (b is shared and never modified).
func (c *Cluster) sendEncoded(name string, kind taskKind, l lane, b []byte) {
	c.mu.Lock()
	m, ok := c.members[name]
	var to *memberlist.Node
	if ok {
		to = &memberlist.Node{Name: name, Addr: net.IP(m.addr.AsSlice()), Port: m.port}
	}
	c.mu.Unlock()
	if !ok {
		return
	}
	c.send.submit(sendJob{node: name, kind: kind, lane: l, run: func() error {
		return c.ml.SendReliable(to, b)
	}})
}

// answerPending answers requests from members that were not known yet
// when they asked, once they are, and forgets requests older than
// answerWait.
func (c *Cluster) answerPending() {
	now := time.Now()
	var answer []string
	c.mu.Lock()
	for name, deadline := range c.pending {
		if _, ok := c.members[name]; ok {
			answer = append(answer, name)
			delete(c.pending, name)
		} else if now.After(deadline) {
			delete(c.pending, name)
		}
	}
	c.mu.Unlock()
	for _, name := range answer {
		c.do(task{kind: taskAnswer, node: name})
	}
}

// redoSends does again the tasks whose sends failed or were skipped and
// that asked for it (sendJob.redo), once their member's backoff has
// ended, for members still known.
func (c *Cluster) redoSends(now time.Time) {
	for _, t := range c.send.due(now) {
		c.mu.Lock()
		_, known := c.members[t.node]
		c.mu.Unlock()
		if known {
			c.do(t)
		} else {
			c.send.forget(t.node) // it left while a send to it was in flight
		}
	}
}

// regossipDue gossips the beacon again when a re-gossip after a change is
// due (see Cluster.regossip).
func (c *Cluster) regossipDue() {
	now := time.Now()
	c.mu.Lock()
	due := len(c.regossip) > 0 && !now.Before(c.regossip[0])
	if due {
		c.regossip = c.regossip[1:]
	}
	c.mu.Unlock()
	if due {
		c.do(task{kind: taskBroadcast})
	}
}

// retryFetches asks again for sets that have not arrived: a member being
// fetched for longer than its backoff (fetchState.retryAfter), or one
// whose set is not even asked for. A rejected set is not asked for again.
func (c *Cluster) retryFetches() {
	if c.role != catalog.RoleLB {
		return
	}
	now := time.Now()
	var ask []string
	c.mu.Lock()
	for name, m := range c.members {
		if name == c.self {
			continue
		}
		switch f := m.fetch; {
		case f.kind == fetchUnknown || f.kind == fetchFetching && f.digest != m.beacon.Digest:
			m.fetch = fetchState{digest: m.beacon.Digest}
		case f.kind == fetchFetching && now.Sub(f.since) >= f.retryAfter():
		default:
			continue
		}
		m.fetch.ask(now)
		ask = append(ask, name)
	}
	c.mu.Unlock()
	for _, name := range ask {
		c.do(task{kind: taskFetch, node: name})
	}
}

// handleMsg decodes a user message from memberlist. It runs on
// memberlist's packet path, so it only decodes and hands work on.
func (c *Cluster) handleMsg(b []byte) {
	msg, err := decodeMessage(b)
	if err != nil {
		c.stats.malformedMessages.Add(1)
		c.log.Debug("dropping malformed cluster message", "err", err)
		return
	}
	switch m := msg.(type) {
	case requestMsg:
		c.enqueue(task{kind: taskAnswer, node: m.From})
	case ackMsg:
		// From a load balancer of an earlier version, which sends no
		// acknowledgement set: pull its beacon.
		if c.role == catalog.RoleBackend {
			c.enqueueAck(task{kind: taskAcked, node: m.From, digest: m.Digest})
		}
	case ackSetMsg:
		if c.role == catalog.RoleBackend {
			c.enqueueAck(task{kind: taskAckSet, node: m.From, acks: m.Acks})
		}
	case stateMsg:
		if c.role == catalog.RoleLB {
			c.enqueue(task{kind: taskState, node: m.From, state: m})
		}
	case keyOpMsg:
		// Applying may write the key file: the worker does it.
		c.enqueue(task{kind: taskKeyOp, node: m.From, keyOp: m})
	case keyResultMsg:
		c.receiveKeyResult(m)
	}
}

// receiveState accepts an application set only if it is the one the sender
// gossips (same digest, and the bytes hash to it) and it passes strict
// validation, so a member can neither forge another's set nor inject
// anything a generator would not expect. A set that hashes to the gossiped
// digest but fails validation leaves the member rejected for that digest.
// It reports whether the set was taken.
func (c *Cluster) receiveState(msg stateMsg) bool {
	if catalog.DigestOf(msg.Set) != msg.Digest {
		c.log.Warn("dropping application set that does not match its digest", "member", sanitize(msg.From))
		return false
	}
	meta, decodeErr := catalog.DecodeMeta(msg.Set)
	c.mu.Lock()
	m, ok := c.members[msg.From]
	if !ok || m.beacon.Digest != msg.Digest {
		var gossiped catalog.Digest
		if ok {
			gossiped = m.beacon.Digest
		}
		c.mu.Unlock()
		c.log.Debug("dropping application set for a digest the member does not gossip", "member", sanitize(msg.From), "known", ok, "digest", msg.Digest, "gossiped", gossiped)
		return false // stale: the member left or has changed its set since
	}
	if m.fetch.kind != fetchFetching && m.fetch.kind != fetchUnknown {
		c.mu.Unlock()
		return false // a repeated answer: this set is decided already
	}
	if decodeErr == nil && meta.Role != m.beacon.Role {
		decodeErr = fmt.Errorf("role %s in the set, %s in gossip", meta.Role, m.beacon.Role)
	}
	if decodeErr != nil {
		m.fetch = fetchState{kind: fetchRejected, digest: msg.Digest}
		c.mu.Unlock()
		c.stats.rejectedSets.Add(1)
		c.log.Warn("dropping member's invalid application set", "member", sanitize(msg.From), "digest", msg.Digest, "err", decodeErr)
		return false
	}
	m.apps, m.have = meta.Applications, msg.Digest
	if m.apps == nil {
		m.apps = []catalog.Application{}
	}
	m.fetch = fetchState{kind: fetchValid, digest: msg.Digest}
	c.seen.heard(msg.From, time.Now())
	c.publishLocked()
	c.mu.Unlock()
	c.log.Info("member applications", "member", msg.From, "apps", len(meta.Applications), "digest", msg.Digest)
	return true
}
