package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/scrimplb/scrimp/catalog"
)

// Message types sent with memberlist's reliable (TCP) user messages.
const (
	// msgRequest asks a node for its application set:
	// type | string requester name.
	msgRequest byte = 1
	// msgState carries an application set:
	// type | string sender name | 8-byte digest | encoded catalog.Meta.
	msgState byte = 2
	// msgAck tells a draining backend that a load balancer runs a
	// configuration without it: type | string sender name | 8-byte digest.
	// It backs up the acknowledgement in the load balancer's beacon, which
	// gossip may take a push/pull interval to deliver to every member.
	msgAck byte = 3
)

// Retry timing for application-set fetches.
const (
	answerWait = 5 * time.Second        // how long a request from an unknown member is kept
	maxPending = 64                     // bound on such requests, against floods
	fetchRetry = time.Second            // ask again when no answer came
	workerTick = 250 * time.Millisecond // how often pending fetches are reviewed
	// broadcastWait is how long a re-broadcast waits for memberlist's
	// confirmation, which it does not need (UpdateNode cannot skip it).
	broadcastWait = 10 * time.Millisecond
	// regossipFirst and regossipSecond are when a changed beacon is
	// gossiped again, after the change.
	regossipFirst  = 300 * time.Millisecond
	regossipSecond = 1500 * time.Millisecond
)

type taskKind int

const (
	taskFetch     taskKind = iota // ask node for its set
	taskAnswer                    // send our set to node
	taskState                     // a set arrived: verify and store
	taskBroadcast                 // re-broadcast our beacon
	taskAck                       // tell node we acknowledge its digest
	taskAcked                     // an acknowledgement arrived
)

// task is work handed from memberlist's callbacks, which must not block,
// to the worker goroutine, which may.
type task struct {
	kind taskKind
	node string
	msg  []byte
}

// enqueue hands t to the worker without blocking. A dropped fetch is
// retried by the worker's review; a dropped answer by the requester.
func (c *Cluster) enqueue(t task) {
	select {
	case c.work <- t:
	default:
		c.log.Debug("cluster work queue full; dropping a task", "kind", t.kind, "node", t.node)
	}
}

// worker runs the network side of application-set transfer until Close.
func (c *Cluster) worker() {
	tick := time.NewTicker(workerTick)
	defer tick.Stop()
	for {
		select {
		case <-c.stop:
			return
		case t := <-c.work:
			c.do(t)
		case <-tick.C:
			c.answerPending()
			c.retryFetches()
			c.regossipDue()
		case <-c.known:
			c.answerPending()
		}
	}
}

func (c *Cluster) do(t task) {
	switch t.kind {
	case taskFetch:
		c.log.Debug("asking member for its applications", "member", t.node)
		c.sendTo(t.node, appendString([]byte{msgRequest}, c.self))
	case taskAnswer:
		c.mu.Lock()
		msg := appendString([]byte{msgState}, c.self)
		msg = append(msg, c.digest[:]...)
		msg = append(msg, c.state...)
		_, known := c.members[t.node]
		if !known {
			// A load balancer that just learnt of us during our join
			// asks before we have merged its state: answer once we know
			// where it is, rather than at any address a message names.
			if len(c.pending) < maxPending {
				c.pending[t.node] = time.Now().Add(answerWait)
			}
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		c.sendTo(t.node, msg)
	case taskState:
		c.receiveState(t.msg)
	case taskAck:
		msg := appendString([]byte{msgAck}, c.self)
		c.sendTo(t.node, append(msg, t.msg...))
	case taskAcked:
		name, rest, err := readString(t.msg)
		if err != nil || len(rest) != 8 {
			return
		}
		var d catalog.Digest
		copy(d[:], rest)
		c.mu.Lock()
		if m, ok := c.members[name]; ok && m.beacon.Role == catalog.RoleLB && d == c.digest {
			c.directAcks[name] = d
		}
		c.mu.Unlock()
	case taskBroadcast:
		// The broadcast is queued at once; waiting for memberlist to
		// confirm it would hold up every other task (answers, acks).
		c.ml.UpdateNode(broadcastWait)
	}
}

// sendTo sends msg to the named member over TCP.
func (c *Cluster) sendTo(name string, msg []byte) {
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
	if err := c.ml.SendReliable(to, msg); err != nil {
		c.log.Debug("cannot reach member", "member", name, "err", err)
	}
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

// retryFetches asks again for sets that have not arrived.
func (c *Cluster) retryFetches() {
	if c.role != catalog.RoleLB {
		return
	}
	now := time.Now()
	var ask []string
	c.mu.Lock()
	for name, m := range c.members {
		if name != c.self && !m.valid && now.Sub(m.asked) >= fetchRetry {
			m.asked = now
			ask = append(ask, name)
		}
	}
	c.mu.Unlock()
	for _, name := range ask {
		c.do(task{kind: taskFetch, node: name})
	}
}

// handleMsg sorts a user message from memberlist. It runs on memberlist's
// packet path, so it only parses and hands work on.
func (c *Cluster) handleMsg(b []byte) {
	if len(b) == 0 {
		return
	}
	switch b[0] {
	case msgRequest:
		name, _, err := readString(b[1:])
		if err != nil || catalog.CheckNodeName(name) != nil {
			c.log.Debug("malformed application-set request")
			return
		}
		c.enqueue(task{kind: taskAnswer, node: name})
	case msgAck:
		if c.role == catalog.RoleBackend && len(b) < 256 {
			c.enqueue(task{kind: taskAcked, msg: append([]byte(nil), b[1:]...)})
		}
	case msgState:
		if c.role != catalog.RoleLB || len(b) > MaxStateSize+256 {
			return
		}
		c.enqueue(task{kind: taskState, msg: append([]byte(nil), b[1:]...)})
	}
}

// receiveState accepts an application set only if it is the one the sender
// gossips (same digest, and the bytes hash to it) and it passes strict
// validation, so a member can neither forge another's set nor inject
// anything a generator would not expect.
func (c *Cluster) receiveState(b []byte) {
	name, rest, err := readString(b)
	if err == nil && len(rest) < 8 {
		err = errors.New("truncated")
	}
	if err != nil {
		c.log.Debug("malformed application set message", "err", err)
		return
	}
	var digest catalog.Digest
	copy(digest[:], rest[:8])
	payload := rest[8:]
	if catalog.DigestOf(payload) != digest {
		c.log.Warn("dropping application set that does not match its digest", "member", sanitize(name))
		return
	}
	meta, decodeErr := catalog.DecodeMeta(payload)
	c.mu.Lock()
	m, ok := c.members[name]
	if !ok || m.beacon.Digest != digest {
		c.mu.Unlock()
		return // stale: the member left or has changed its set since
	}
	if decodeErr == nil && meta.Role != m.beacon.Role {
		decodeErr = fmt.Errorf("role %s in the set, %s in gossip", meta.Role, m.beacon.Role)
	}
	if decodeErr != nil {
		// Keep it invalid; do not ask again for the same bad digest.
		m.asked = time.Now().Add(time.Hour)
		c.mu.Unlock()
		c.log.Warn("dropping member's invalid application set", "member", sanitize(name), "err", decodeErr)
		return
	}
	m.apps, m.have, m.valid = meta.Applications, digest, true
	if m.apps == nil {
		m.apps = []catalog.Application{}
	}
	c.publishLocked()
	c.mu.Unlock()
	c.log.Info("member applications", "member", name, "apps", len(meta.Applications), "digest", digest)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func readString(b []byte) (string, []byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) || n > catalog.MaxNodeNameLen {
		return "", nil, errors.New("bad string")
	}
	return string(b[k : k+int(n)]), b[k+int(n):], nil
}
