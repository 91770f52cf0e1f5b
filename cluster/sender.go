package cluster

import (
	"errors"
	"sync"
	"time"
)

// Sending to members.
//
// Every message this node sends a member on its own (fetch requests,
// answers, acknowledgements, key results, and a backend's pull of a load
// balancer's state after a direct acknowledgement) is a job for the
// sender: a fixed set of goroutines owned by the Cluster, so that the
// worker never waits on the network and one member that does not answer
// never holds up another. The rules:
//
//   - a member has one send in flight at a time; further jobs for it wait,
//     one per kind (the newest replaces an older one), at most
//     maxQueuedPerMember;
//   - a member whose send failed (its dial or write timed out or was
//     refused) is not sent to again until its backoff ends (retryBase,
//     doubling up to retryMax; a successful send resets it), and while it
//     has failed its sends run in the slow lane, whose few goroutines are
//     all that silent members can take up;
//   - acknowledgements, and the pulls they cause, have a lane of their own.
//
// Submitting never blocks: a job that finds its lane full is dropped and
// counted (Stats.DroppedTasks), one to a member in backoff is skipped
// (Stats.SkippedSends). Both are repeated by whoever needs them: fetches by
// the worker's review, acknowledgements by the next Acknowledge. An answer
// that failed or was skipped is also redone by this node as soon as the
// member's backoff ends (sender.due): waiting for the requester's next
// request, which backs off too, left a set unfetched for up to retryMax
// after one failed send.

// lane is a queue of ready jobs and the goroutines that run them.
type lane uint8

const (
	laneFast lane = iota // members whose last send worked
	laneSlow             // members whose last send failed or that did not answer a fetch
	laneAck              // acknowledgements and the pulls they cause
	laneCount
)

// laneWorkers are the goroutines of each lane, 20 in all, idle but for a
// channel receive when there is nothing to send. The fast lane is the
// widest because it also takes the first send to each new member: that
// many members joining at once that never answer (each taking a dial
// limit) delay no other send; more delay the rest by a dial limit per
// laneWorkers[laneFast]. A member that failed once is in the slow lane.
var laneWorkers = [laneCount]int{laneFast: 16, laneSlow: 2, laneAck: 2}

const (
	laneQueue          = 256 // ready jobs per lane
	maxQueuedPerMember = 4   // jobs waiting behind a member's send in flight
	// retryBase and retryMax bound the backoff of fetches a member did not
	// answer and of sends to a member that failed: retryBase after the
	// first, doubling, at most retryMax.
	retryBase = time.Second
	retryMax  = 16 * time.Second
)

// backoffDelay is how long to leave a member alone after fails failures in
// a row: none for 0, base after the first, doubling, at most max.
func backoffDelay(fails int, base, max time.Duration) time.Duration {
	if fails <= 0 {
		return 0
	}
	d := base
	for i := 1; i < fails && d < max; i++ {
		d *= 2
	}
	return min(d, max)
}

// backoff counts a member's failures in a row and when it may be tried
// again. The zero value is open.
type backoff struct {
	fails int
	until time.Time
}

// fail records one more failure at now.
func (b *backoff) fail(now time.Time) {
	b.fails++
	b.until = now.Add(backoffDelay(b.fails, retryBase, retryMax))
}

// open reports whether the member may be tried at now.
func (b *backoff) open(now time.Time) bool { return !now.Before(b.until) }

// sendJob is one send to a member.
type sendJob struct {
	node string
	kind taskKind // what it sends, for coalescing and logs
	lane lane     // laneAck, or laneFast (moved to laneSlow if the member is failing)
	slow bool     // the member did not answer an earlier fetch: laneSlow
	// run does the network I/O; an error means the member did not take
	// the message.
	run func() error
	// redo: if the send fails or is skipped, the worker does the task
	// (kind, node) again once the member's backoff ends, building a
	// fresh message (see sender.due).
	redo bool
}

// memberSends is the sender's record of one member.
type memberSends struct {
	busy   bool
	queued []sendJob
	gate   backoff
	redo   uint32 // bit 1<<kind: tasks to do again when the gate opens
}

// idle reports whether the record holds nothing worth keeping.
func (m *memberSends) idle() bool {
	return !m.busy && len(m.queued) == 0 && m.gate.fails == 0 && m.redo == 0
}

// markRedo remembers j's task for sender.due if j asks for it.
func (m *memberSends) markRedo(j sendJob) {
	if j.redo {
		m.redo |= 1 << uint(j.kind)
	}
}

// sender runs sendJobs; its goroutines belong to the Cluster.
type sender struct {
	c       *Cluster
	mu      sync.Mutex
	members map[string]*memberSends
	lanes   [laneCount]chan sendJob
}

var (
	errSendQueueFull = errors.New("cluster send queue full")
	errMemberQueue   = errors.New("too many sends waiting for this member")
)

func newSender(c *Cluster) *sender {
	s := &sender{c: c, members: map[string]*memberSends{}}
	for i := range s.lanes {
		s.lanes[i] = make(chan sendJob, laneQueue)
	}
	return s
}

// start runs the lanes' goroutines until c.stop.
func (s *sender) start() {
	for l, n := range laneWorkers {
		for range n {
			s.c.wg.Go(func() { s.run(lane(l)) })
		}
	}
}

// submit hands j to its lane, or queues it behind the member's send in
// flight. It never blocks.
func (s *sender) submit(j sendJob) {
	if s.c.stopped() {
		return
	}
	now := time.Now()
	s.mu.Lock()
	m, ok := s.members[j.node]
	if !ok {
		m = &memberSends{}
		s.members[j.node] = m
	}
	if !m.gate.open(now) {
		m.markRedo(j)
		if m.idle() {
			delete(s.members, j.node)
		}
		s.mu.Unlock()
		s.c.kickWorker() // the redo is the worker's
		s.c.stats.skippedSends.Add(1)
		s.c.log.Debug("not sending to a member that did not answer lately", "member", sanitize(j.node), "message", j.kind.String(), "failures", m.gate.fails)
		return
	}
	if m.busy {
		err := m.enqueue(j)
		s.mu.Unlock()
		if err != nil {
			s.c.dropped(task{kind: j.kind, node: j.node}, err)
		}
		return
	}
	m.busy = true
	err := s.dispatchLocked(m, j)
	s.mu.Unlock()
	if err != nil {
		s.c.dropped(task{kind: j.kind, node: j.node}, err)
	}
}

// enqueue keeps j until the member's send in flight is done: it replaces
// a waiting job of its kind (key results, each answering its own request,
// are kept apart).
func (m *memberSends) enqueue(j sendJob) error {
	if j.kind != taskKeyOp {
		for i, q := range m.queued {
			if q.kind == j.kind {
				m.queued[i] = j
				return nil
			}
		}
	}
	if len(m.queued) >= maxQueuedPerMember {
		return errMemberQueue
	}
	m.queued = append(m.queued, j)
	return nil
}

// dispatchLocked puts j, whose member m has just been marked busy, on its
// lane; when the lane is full the member is free again and the error says
// why. s.mu must be held.
func (s *sender) dispatchLocked(m *memberSends, j sendJob) error {
	l := j.lane
	if l == laneFast && (j.slow || m.gate.fails > 0) {
		l = laneSlow
	}
	select {
	case s.lanes[l] <- j:
		return nil
	default:
		m.busy = false
		if m.idle() {
			delete(s.members, j.node)
		}
		return errSendQueueFull
	}
}

// run is one goroutine of lane l.
func (s *sender) run(l lane) {
	for {
		select {
		case <-s.c.stop:
			return
		case j := <-s.lanes[l]:
			if s.c.stopped() {
				return
			}
			err := j.run()
			s.done(j, err)
		}
	}
}

// done records how j went and starts the member's next job, if any.
func (s *sender) done(j sendJob, err error) {
	now := time.Now()
	var next []sendJob
	s.mu.Lock()
	m := s.members[j.node]
	if err != nil {
		m.gate.fail(now)
		// What waited is dropped: the member is in backoff now.
		next = m.queued
		m.queued = nil
		m.markRedo(j)
		for _, q := range next {
			m.markRedo(q)
		}
	} else {
		m.gate = backoff{}
	}
	m.busy = false
	var derr error
	var dj sendJob
	if len(m.queued) > 0 {
		dj = m.queued[0]
		m.queued = m.queued[1:]
		m.busy = true
		derr = s.dispatchLocked(m, dj)
	}
	if m.idle() {
		delete(s.members, j.node)
	}
	fails := m.gate.fails
	s.mu.Unlock()
	if err != nil {
		s.c.kickWorker() // the redo is the worker's
		s.c.log.Debug("cannot reach member", "member", sanitize(j.node), "message", j.kind.String(), "failures", fails, "err", err)
		s.c.stats.skippedSends.Add(uint64(len(next)))
	}
	if derr != nil {
		s.c.dropped(task{kind: dj.kind, node: dj.node}, derr)
	}
}

// due returns the tasks to do again (sendJob.redo) for members whose
// backoff has ended and that have no send in flight, and forgets them.
// The worker calls it on its tick.
func (s *sender) due(now time.Time) []task {
	var out []task
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, m := range s.members {
		if m.redo == 0 || m.busy || !m.gate.open(now) {
			continue
		}
		for k := taskKind(0); k < 32; k++ {
			if m.redo&(1<<uint(k)) != 0 {
				out = append(out, task{kind: k, node: name})
			}
		}
		m.redo = 0
		if m.idle() {
			delete(s.members, name)
		}
	}
	return out
}

// redoPending reports whether a task waits for sender.due.
func (s *sender) redoPending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.members {
		if m.redo != 0 {
			return true
		}
	}
	return false
}

// forget drops what is known of a member that left, unless a send to it
// is in flight (its end cleans up).
func (s *sender) forget(name string) {
	s.mu.Lock()
	if m, ok := s.members[name]; ok && !m.busy {
		delete(s.members, name)
	}
	s.mu.Unlock()
}
