// Package cluster is scrimp's gossip membership, and the only package that
// imports memberlist.
//
// Every node gossips a small beacon in memberlist's node metadata (512
// bytes at most): its role, the digest of its application set and, for a
// load balancer, acknowledgements of draining backends. The application set
// itself can be far larger, so a load balancer fetches it from the backend
// over memberlist's reliable (TCP) messages whenever the digest it gossips
// changes, and accepts it only if it hashes to that digest and passes
// strict validation. Consumers see an immutable snapshot of the live
// membership plus a change notification.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/scrimplb/scrimp/catalog"
)

// MaxStateSize bounds an encoded application set, sent and accepted. 100
// applications with 5 long domains each take about 20 KiB.
const MaxStateSize = 1 << 20

// Config configures one cluster member.
type Config struct {
	// NodeName must be unique in the cluster.
	NodeName string
	// BindAddr and BindPort are where gossip listens (TCP and UDP).
	BindAddr string
	BindPort int
	// AdvertiseAddr and AdvertisePort are where peers reach this node;
	// empty/zero lets memberlist choose (BindAddr, or a private address).
	AdvertiseAddr string
	AdvertisePort int
	// Profile is "local", "lan" or "wan".
	Profile string
	// Role is what this node advertises itself as.
	Role catalog.Role
	// Applications are advertised by a backend.
	Applications []catalog.Application
	// Keys encrypt and authenticate gossip (AES-GCM, 16, 24 or 32 bytes
	// each); the first is the primary, the others are accepted for
	// decryption during a rotation. Empty: plaintext gossip.
	Keys [][]byte
	// Label is bound into every packet and stream: nodes with another
	// label are refused, so two clusters on one network never merge.
	Label string
	// SaveKeys, if set, persists the keyring (primary first) after a key
	// operation changed it, so that a restart keeps it. It is called on
	// the goroutine of KeyOp or the cluster's worker, never on
	// memberlist's, one call at a time; it may block briefly (a file
	// write and sync).
	SaveKeys func(keys [][]byte) error
	// AllowedCIDRs, when not empty, are the only networks a member's
	// address may be in, e.g. "10.0.0.0/8" (memberlist CIDRsAllowed: other
	// nodes and their alive messages are refused; their TCP push/pull is
	// still answered).
	AllowedCIDRs []string
	// AcceptPlaintext and SendPlaintext (memberlist's GossipVerifyIncoming
	// and GossipVerifyOutgoing, inverted so that the zero value is safe)
	// are for turning encryption on in a running plaintext cluster:
	// first both, then only AcceptPlaintext, then neither. Ignored
	// without Keys.
	AcceptPlaintext bool
	SendPlaintext   bool
	// Logger receives membership changes and memberlist's own log lines.
	Logger *slog.Logger
}

// sentAck records a direct acknowledgement set sent to a backend (digest
// is the set's), to resend it only now and then.
type sentAck struct {
	digest catalog.Digest
	at     time.Time
}

// ackResend is how often a load balancer repeats its acknowledgement set
// to a backend that is still draining: a message may be lost, or come
// before the beacon naming it.
const ackResend = time.Second

// member is what this node knows of a peer.
type member struct {
	addr   netip.Addr
	port   uint16
	beacon catalog.Beacon
	// apps is the last verified set, whose digest is have; nil until one
	// is. The snapshot shows it until a newer one is verified, so a change
	// never makes a backend vanish from routing for the length of a fetch.
	apps  []catalog.Application
	have  catalog.Digest
	fetch fetchState // about the set beacon.Digest names

	// On a backend, about a load balancer's full acknowledgement sets
	// (receiveAckSet): acked says ackedFor (this node's name hash and a
	// digest of its own) was in a set that hashed to a digest the member's
	// beacon named. A load balancer's set changes with every configuration
	// it applies while backends drain, so the set a message carries may
	// already be replaced in the beacon, or not be there yet: sums are the
	// last set digests its beacon named, and pending the sets received
	// that it did not (yet), each checked against the other.
	acked    bool
	ackedFor catalog.Ack
	sums     recent[catalog.Digest]
	pending  recent[pendingAck]
}

// pendingAck is an acknowledgement set received from a load balancer whose
// beacon has not named it: its digest, and this node's acknowledgement in
// it.
type pendingAck struct {
	sum catalog.Digest
	ack catalog.Ack
}

// recentLen is how many set digests, and pending sets, are kept per load
// balancer.
const recentLen = 4

// recent holds the last recentLen values put in it; the zero value is
// empty.
type recent[T comparable] struct {
	items [recentLen]T
	n     int // how many were put, ever
}

func (r *recent[T]) put(v T) {
	if r.has(func(x T) bool { return x == v }) {
		return
	}
	r.items[r.n%recentLen] = v
	r.n++
}

// has reports whether a value kept satisfies f.
func (r *recent[T]) has(f func(T) bool) bool {
	for i := range min(r.n, recentLen) {
		if f(r.items[i]) {
			return true
		}
	}
	return false
}

// Cluster is one running member. Its methods are safe for concurrent use.
type Cluster struct {
	ml        *memberlist.Memberlist
	log       *slog.Logger
	self      string
	role      catalog.Role
	localAddr string // host:port of this node's gossip, fixed at start

	meta atomic.Pointer[[]byte] // encoded beacon, as NodeMeta returns it
	// updateMu is held around memberlist's UpdateNode, which must not run
	// twice at once; bcastPending asks whoever holds it for one more
	// broadcast (Cluster.broadcast).
	updateMu     sync.Mutex
	bcastPending atomic.Bool
	// remembered is set by merger when a join's push/pull shows that the
	// other side remembers an earlier run of this node (Join). Another
	// node's join may set it too: at worst one push/pull more.
	remembered atomic.Bool

	mu     sync.Mutex
	state  []byte // this node's encoded application set
	digest catalog.Digest
	apps   []catalog.Application
	// acks are the acknowledgements in this load balancer's beacon, the
	// first of ackSet, whose digest is ackSetSum; ackNames are the
	// backends in ackSet, and ackPayload the ackSetMsg carrying it.
	acks       []catalog.Ack
	ackSet     []catalog.Ack
	ackSetSum  catalog.Digest
	ackNames   []string
	ackPayload []byte
	members    map[string]*member
	pending    map[string]time.Time // requests from members not yet known
	// regossip are when to gossip the beacon again after a change: one
	// round of gossip often misses a member in a small cluster, and
	// push/pull would bring the change only much later.
	regossip []time.Time
	ackSent  map[string]sentAck // last direct acknowledgement per backend
	seen     seenBook           // when members were last heard from (members.go)

	// nudges are when this backend last did a push/pull with a load
	// balancer that sent it a direct acknowledgement (rejoin.go).
	nudges map[string]nudge
	// rejoin are members that left or died which this node tries to bring
	// back, by name (rejoin.go); rejoinSlots bounds the attempts in flight.
	rejoin      map[string]*rejoinState
	rejoinSlots chan struct{}
	reapDelay   time.Duration // how long memberlist keeps a dead member
	rejoinSpan  time.Duration // the probe interval, a unit of rejoin timing

	// snap is the membership as Snapshot returns it. publishLocked only
	// marks it stale; Snapshot rebuilds it on the next read, so that a
	// burst of membership events costs one rebuild per read rather than
	// one per event (each is O(n log n): with 1,000 members joining, every
	// member rebuilt it 1,000 times).
	snap      atomic.Pointer[catalog.Snapshot]
	snapStale atomic.Bool
	// keyOps are the key operations of this node waiting for answers,
	// by request id.
	keyOps map[[keyOpIDLen]byte]*keyCollect

	// keyring is memberlist's, nil for plaintext gossip; keyMu serializes
	// changes to it with their saves, so the file follows the keyring.
	keyring  *memberlist.Keyring
	keyMu    sync.Mutex
	saveKeys func(keys [][]byte) error
	// keyOpsSeen are the ids of members' key operations applied lately,
	// with when; guarded by keyMu.
	keyOpsSeen map[[keyOpIDLen]byte]time.Time

	stats      counters
	dropLogged atomic.Int64 // when a dropped task was last logged, Unix ns

	changes chan struct{}
	known   chan struct{} // signalled when a member joins, for pending answers
	// wake restarts a backend's worker tick, stopped while nothing is
	// due (see Cluster.quiet); signalled by whatever schedules work.
	wake chan struct{}
	work chan task
	// ackWork is the worker's queue for acknowledgements and the beacon
	// broadcasts before them, taken before work: a flood of fetches and
	// answers never delays them.
	ackWork chan task
	send    *sender // runs every send to a member (sender.go)
	stop    chan struct{}
	wg      sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// New starts a member: it binds the gossip port and is alone in a cluster
// of its own until Join.
func New(cfg Config) (*Cluster, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	mc, err := profile(cfg.Profile)
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		log:     cfg.Logger,
		self:    cfg.NodeName,
		role:    cfg.Role,
		members: map[string]*member{},
		pending: map[string]time.Time{},
		ackSent: map[string]sentAck{},
		changes: make(chan struct{}, 1),
		known:   make(chan struct{}, 1),
		wake:    make(chan struct{}, 1),
		work:    make(chan task, 256),
		ackWork: make(chan task, 64),
		stop:    make(chan struct{}),

		nudges:      map[string]nudge{},
		rejoin:      map[string]*rejoinState{},
		rejoinSlots: make(chan struct{}, rejoinInFlight),
		reapDelay:   mc.GossipToTheDeadTime,
		rejoinSpan:  mc.ProbeInterval,

		keyOps:     map[[keyOpIDLen]byte]*keyCollect{},
		keyOpsSeen: map[[keyOpIDLen]byte]time.Time{},
		saveKeys:   cfg.SaveKeys,
	}
	if err := c.setApplications(cfg.Applications); err != nil {
		return nil, err
	}
	c.snap.Store(&catalog.Snapshot{})
	c.send = newSender(c)

	mc.Name = cfg.NodeName
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.AdvertisePort = cfg.AdvertisePort
	if mc.AdvertisePort == 0 {
		mc.AdvertisePort = cfg.BindPort
	}
	mc.Label = cfg.Label
	if len(cfg.Keys) > 0 {
		kr, err := memberlist.NewKeyring(cfg.Keys, cfg.Keys[0])
		if err != nil {
			return nil, fmt.Errorf("cluster: keyring: %w", err)
		}
		mc.Keyring, c.keyring = kr, kr
		mc.GossipVerifyIncoming = !cfg.AcceptPlaintext
		mc.GossipVerifyOutgoing = !cfg.SendPlaintext
	}
	if len(cfg.AllowedCIDRs) > 0 {
		nets, err := memberlist.ParseCIDRs(cfg.AllowedCIDRs)
		if err != nil {
			return nil, fmt.Errorf("cluster: allowed CIDRs: %w", err)
		}
		mc.CIDRsAllowed = nets
	}
	mc.Delegate = delegate{c}
	mc.Events = events{c}
	mc.Merge = merger{c}
	mc.Ping = pinger{c}
	mc.Logger = newStdLogger(cfg.Logger)
	tr, err := newTransport(mc.BindAddr, mc.BindPort, limitsFor(cfg.Profile), mc.Logger)
	if err != nil {
		return nil, err
	}
	if mc.BindPort == 0 {
		// As memberlist does with a transport of its own.
		mc.BindPort = tr.GetAutoBindPort()
		mc.AdvertisePort = mc.BindPort
	}
	mc.Transport = tr
	ml, err := memberlist.Create(mc)
	if err != nil {
		tr.Shutdown()
		return nil, fmt.Errorf("cluster: start gossip on %s:%d: %w", cfg.BindAddr, cfg.BindPort, err)
	}
	if !slices.ContainsFunc(ml.Members(), func(n *memberlist.Node) bool { return n.Name == cfg.NodeName }) {
		// memberlist refused this node's own address (CIDRsAllowed) and
		// would fail on first use.
		ml.Shutdown()
		return nil, fmt.Errorf("cluster: this node's own address is outside the allowed CIDRs %v", cfg.AllowedCIDRs)
	}
	c.ml = ml
	// Read once, now: memberlist's LocalNode hands out its own node
	// record, which UpdateNode rewrites concurrently.
	c.localAddr = ml.LocalNode().Address()
	c.wg.Go(c.worker)
	c.send.start()
	return c, nil
}

// profile returns memberlist's defaults for the named profile, with one
// change: GossipToTheDeadTime, how long a dead or left member is kept (and
// its death gossiped to it) before it is forgotten, is a few seconds
// instead of 15-60. A forged "dead" or "leave" naming the highest
// incarnation (2^32-1) leaves a live node unable to refute it (its
// refutation wraps to 0, an older incarnation) until its peers forget it;
// only then can rejoin.go bring it back. The cost: a dead node is
// forgotten sooner, so late gossip still calling it alive (older than the
// death) can show it again until failure detection declares it dead once
// more, and a node wrongly declared dead hears about it by gossip for a
// shorter time (rejoin.go makes up for that).
//
// And compression is off (memberlist's EnableCompression). memberlist packs
// a gossip packet to its UDP size limit before it compresses it, so
// compression never lets a packet carry more; it only shrinks packets that
// are far below the MTU anyway, and costs a fresh LZW writer (a 64 KiB
// table to allocate and clear) for every packet sent and a reader for every
// packet received. In a 1,000-member cluster that was a quarter of the
// gossip's CPU and most of its garbage. Push/pull streams, which it would
// shrink, run once per push/pull interval per member. Peers of either kind
// understand each other: compression is a per-message wrapper.
func profile(name string) (*memberlist.Config, error) {
	var mc *memberlist.Config
	var deadTime time.Duration
	switch name {
	case "local":
		mc, deadTime = memberlist.DefaultLocalConfig(), 3*time.Second // default 15s
	case "lan", "":
		mc, deadTime = memberlist.DefaultLANConfig(), 5*time.Second // default 30s
	case "wan":
		mc, deadTime = memberlist.DefaultWANConfig(), 15*time.Second // default 60s
	default:
		return nil, fmt.Errorf("cluster: unknown profile %q", name)
	}
	mc.GossipToTheDeadTime = deadTime
	mc.EnableCompression = false // see above
	return mc, nil
}

// setApplications validates and encodes this node's application set and
// the beacon naming it. On error nothing changes.
func (c *Cluster) setApplications(apps []catalog.Application) error {
	for _, a := range apps {
		if errs := a.Validate(); len(errs) > 0 {
			return fmt.Errorf("cluster: application %q: %w", a.Name, errors.Join(errs...))
		}
	}
	if c.role == catalog.RoleLB && len(apps) > 0 {
		return errors.New("cluster: a load balancer advertises no applications")
	}
	meta := catalog.Meta{Role: c.role, Applications: apps}
	state := catalog.EncodeMeta(meta)
	if len(state) > MaxStateSize {
		return fmt.Errorf("cluster: the application set is %d bytes encoded, over the %d-byte limit", len(state), MaxStateSize)
	}
	// Decoding what we encoded yields the sorted set peers will see.
	decoded, err := catalog.DecodeMeta(state)
	if err != nil {
		return fmt.Errorf("cluster: application set: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	digest := catalog.DigestOf(state)
	b := c.beaconLocked()
	b.Digest = digest
	beacon, err := catalog.EncodeBeacon(b)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	c.state, c.digest, c.apps = state, digest, decoded.Applications
	c.meta.Store(&beacon)
	if c.ml != nil {
		c.publishLocked()
	}
	return nil
}

// Snapshot returns the current live membership, sorted by name, this node
// included. A backend appears with its applications once they have been
// fetched and verified (load balancers fetch them; backends see their
// peers without applications). It never blocks on the network; the result
// is shared and must not be modified.
func (c *Cluster) Snapshot() catalog.Snapshot {
	if c.snapStale.Load() {
		c.mu.Lock()
		if c.snapStale.Load() {
			c.rebuildLocked()
		}
		c.mu.Unlock()
	}
	return *c.snap.Load()
}

// Changes returns a channel that receives a value after the membership or
// a member's applications change. Changes coalesce: one receive may stand
// for many events, so a consumer reads Snapshot after each receive. It is
// meant for one consumer.
func (c *Cluster) Changes() <-chan struct{} { return c.changes }

// LocalName returns this node's name.
func (c *Cluster) LocalName() string { return c.self }

// LocalAddr returns the host:port peers reach this node's gossip at.
func (c *Cluster) LocalAddr() string { return c.localAddr }

// LocalDigest returns the digest of the application set this node
// advertises now.
func (c *Cluster) LocalDigest() catalog.Digest {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.digest
}

// Members returns how many members memberlist considers alive, this node
// included, whatever their metadata.
func (c *Cluster) Members() int { return c.ml.NumMembers() }

// Join contacts the given gossip addresses (host:port) and merges their
// state. It returns how many were reached; it blocks for up to the
// profile's dial limit (limitsFor) per unreachable address, and its TCP
// timeout per address that accepts but does not answer.
//
// A node restarted under its old name starts at an incarnation no newer
// than what its peers remember of the old run (left, dead, suspect, or
// alive if they missed its leave, maybe draining), so they ignore the
// state its join carries, and memberlist refutes their record as it
// merges theirs. The refutation would reach them by gossip, a gossip
// interval or more later; instead Join pushes its state once more, and
// the peers take it, with its application set, at once.
func (c *Cluster) Join(addrs []string) (int, error) {
	self := c.LocalAddr()
	others := slices.DeleteFunc(slices.Clone(addrs), func(a string) bool { return a == self })
	if len(others) == 0 {
		return 0, errors.New("no seed other than this node")
	}
	c.remembered.Store(false)
	n, err := c.ml.Join(others)
	if n == 0 {
		return 0, err
	}
	if c.remembered.Swap(false) {
		again, err := c.ml.Join(others)
		c.log.Debug("joined again: a peer remembered an earlier run of this node", "contacted", again, "err", err)
	}
	return n, nil
}

// UpdateApplications changes what this node advertises: the new set is
// validated and stored, and its digest gossiped so load balancers fetch it.
// On error (an invalid set) the old advertisement stays. It blocks up to
// timeout while the beacon is broadcast.
//
// A broadcast not confirmed within timeout is not an error: the new
// beacon is already this node's state and stays queued for gossip, and
// push/pull carries it too. (memberlist confirms a broadcast once it was
// sent often enough, which takes longer when many nodes change at once,
// and can miss a confirmation that comes before it waits for it.) Failing
// here made backends that were stopped together leave without draining.
func (c *Cluster) UpdateApplications(role catalog.Role, apps []catalog.Application, timeout time.Duration) error {
	if role != c.role {
		return fmt.Errorf("cluster: cannot change role from %s to %s", c.role, role)
	}
	if err := c.setApplications(apps); err != nil {
		return err
	}
	c.regossipSoon(time.Now())
	c.updateMu.Lock()
	err := c.ml.UpdateNode(timeout)
	c.updateMu.Unlock()
	c.broadcastPending()
	if err != nil {
		c.log.Debug("beacon broadcast not confirmed yet; gossip carries it on", "err", err, "timeout", timeout)
	}
	return nil
}

// broadcast gossips this node's beacon as it is now, waiting only
// broadcastWait for memberlist's confirmation, or, while an
// UpdateApplications is broadcasting, has it broadcast once more when it
// is done. It never waits for UpdateApplications. memberlist's UpdateNode
// must not run twice at once: it reads this node's record without its
// lock while the other call writes it.
func (c *Cluster) broadcast() {
	c.bcastPending.Store(true)
	c.broadcastPending()
}

// broadcastPending does the broadcast asked for while another held
// updateMu. Whoever releases updateMu calls it, so none is lost.
func (c *Cluster) broadcastPending() {
	for c.bcastPending.Load() && c.updateMu.TryLock() {
		if c.bcastPending.Swap(false) {
			c.ml.UpdateNode(broadcastWait)
		}
		c.updateMu.Unlock()
	}
}

// Acknowledge records that this load balancer's proxy now runs a
// configuration rendered from snap, so draining backends in it may go. It
// returns at once; the beacon is re-broadcast and the acknowledgements sent
// in the background.
//
// Every draining backend in snap is acknowledged. The beacon carries the
// first MaxAcks-1 acknowledgements (the fast path: gossip brings them) and
// the digest of the full set; the full set goes to each draining backend
// in a direct message (ackSetMsg), at once when it changed and every
// ackResend while the backend is still a member (resendAcks), since a
// message may be lost. A backend takes the full set only if it hashes to
// the digest in this node's beacon, so however many drain at once, none
// waits for its drain timeout and none can be fooled by a forged message.
func (c *Cluster) Acknowledge(snap catalog.Snapshot) {
	var full []catalog.Ack
	var names []string
	for _, n := range snap.Nodes {
		if n.Role != catalog.RoleBackend || !draining(n.Applications) || n.Name == c.self {
			continue
		}
		full = append(full, catalog.Ack{Node: catalog.NodeHash(n.Name), Digest: n.Digest})
		names = append(names, n.Name)
	}
	if len(full) > catalog.MaxAckSet {
		c.log.Warn("more draining backends than one acknowledgement set holds; the rest wait for their drain timeout",
			"draining", len(full), "max", catalog.MaxAckSet)
		full, names = full[:catalog.MaxAckSet], names[:catalog.MaxAckSet]
	}
	full = catalog.SortAcks(full)
	var sum catalog.Digest
	inBeacon := full
	if len(full) > 0 {
		sum = catalog.AckSetDigest(full)
		inBeacon = full[:min(len(full), catalog.MaxAcks-1)]
	}
	now := time.Now()
	c.mu.Lock()
	changed := !slices.Equal(full, c.ackSet)
	var beacon []byte
	var err error
	if changed {
		c.acks, c.ackSet, c.ackSetSum = slices.Clone(inBeacon), full, sum
		c.ackNames = names
		c.ackPayload = nil
		if len(full) > 0 {
			c.ackPayload = encodeMessage(ackSetMsg{From: c.self, Acks: full})
		}
		beacon, err = catalog.EncodeBeacon(c.beaconLocked())
	}
	due := c.acksDueLocked(now, changed)
	payload := c.ackPayload
	c.mu.Unlock()
	switch {
	case !changed:
	case err != nil:
		c.log.Error("cannot encode acknowledgements", "err", err)
		return
	default:
		// The beacon first: a backend takes the direct message only once
		// it has the beacon naming its set, and pulls this node's state
		// when it has not: the state must carry the beacon by then (the
		// worker does tasks in order).
		c.meta.Store(&beacon)
		c.enqueueAck(task{kind: taskBroadcast})
		c.log.Debug("acknowledging draining backends", "count", len(full), "set", sum)
	}
	if len(due) > 0 {
		c.enqueueAck(task{kind: taskAck, names: due, payload: payload})
	}
}

// beaconLocked returns this node's beacon as it stands. c.mu must be held.
func (c *Cluster) beaconLocked() catalog.Beacon {
	return catalog.Beacon{Role: c.role, Digest: c.digest, Acks: c.acks, AckSet: c.ackSetSum, HasAckSet: len(c.ackSet) > 0}
}

// acksDueLocked returns the draining backends to send the acknowledgement
// set to now: all of them when the set changed (all), else those that
// were last sent it ackResend ago or more, and records the send. It
// forgets the sends to members that are gone. c.mu must be held.
func (c *Cluster) acksDueLocked(now time.Time, all bool) []string {
	var due []string
	for _, name := range c.ackNames {
		if _, ok := c.members[name]; !ok {
			continue
		}
		last, ok := c.ackSent[name]
		if all || !ok || last.digest != c.ackSetSum || now.Sub(last.at) >= ackResend {
			c.ackSent[name] = sentAck{digest: c.ackSetSum, at: now}
			due = append(due, name)
		}
	}
	for name := range c.ackSent {
		if _, ok := c.members[name]; !ok {
			delete(c.ackSent, name)
		}
	}
	return due
}

// resendAcks sends the acknowledgement set again to the draining backends
// that were last sent it ackResend ago, while they are members. Runs on
// the worker's tick.
func (c *Cluster) resendAcks(now time.Time) {
	if c.role != catalog.RoleLB {
		return
	}
	c.mu.Lock()
	if len(c.ackNames) == 0 {
		c.mu.Unlock()
		return
	}
	due := c.acksDueLocked(now, false)
	payload := c.ackPayload
	c.mu.Unlock()
	c.sendAcks(due, payload)
}

// sendAcks has the sender send an encoded acknowledgement set to each
// named member. It does not block.
func (c *Cluster) sendAcks(names []string, payload []byte) {
	if len(payload) == 0 {
		return
	}
	for _, name := range names {
		c.sendEncoded(name, taskAck, laneAck, payload)
	}
}

func draining(apps []catalog.Application) bool {
	for _, a := range apps {
		if a.State == catalog.StateDraining {
			return true
		}
	}
	return false
}

// Rebroadcast gossips this node's beacon again. Gossip delivers an update
// to most members within a few rounds but guarantees it only at the next
// push/pull; a draining backend repeats its beacon until every load
// balancer has answered. It returns at once.
func (c *Cluster) Rebroadcast() { c.enqueue(task{kind: taskBroadcast}) }

// Unacknowledged returns the load balancers that have not yet acknowledged
// this node's current application set, sorted. A draining backend waits
// until it is empty. An acknowledgement counts when it is in a load
// balancer's own beacon, or in the full acknowledgement set the load
// balancer sent directly (ackSetMsg) if that set hashes to the digest its
// beacon names (receiveAckSet). A direct message alone names its sender,
// which any key holder can forge, so it counts only through the beacon.
// A load balancer that left or died is still waited for while this node
// tries to bring it back (rejoin.go): its leave may be forged.
func (c *Cluster) Unacknowledged() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	want := catalog.Ack{Node: catalog.NodeHash(c.self), Digest: c.digest}
	var out []string
	for name, m := range c.members {
		if name == c.self || m.beacon.Role != catalog.RoleLB {
			continue
		}
		if !slices.Contains(m.beacon.Acks, want) && !(m.acked && m.ackedFor == want) {
			out = append(out, name)
		}
	}
	for name, st := range c.rejoin {
		if st.role == catalog.RoleLB {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// Stats are counters of what this member's transfer side has dropped or
// refused since New. Each only grows.
type Stats struct {
	// DroppedTasks counts work never done because a queue was full: the
	// worker's, the sender's (a lane, or the sends waiting for one
	// member), or the table of requests from members not known yet.
	// Fetches are retried; the other tasks are repeated by their sender.
	DroppedTasks uint64
	// MalformedMessages counts messages from peers that did not decode.
	MalformedMessages uint64
	// RejectedSets counts application sets that hashed to their member's
	// gossiped digest but failed validation.
	RejectedSets uint64
	// SkippedSends counts sends not tried because the member's last send
	// failed and its backoff had not ended (sender.go).
	SkippedSends uint64
	// JoinSets counts application sets a load balancer took from a
	// backend's join push/pull, with no fetch (delegate.LocalState).
	JoinSets uint64
}

// counters back Stats.
type counters struct {
	droppedTasks      atomic.Uint64
	malformedMessages atomic.Uint64
	rejectedSets      atomic.Uint64
	skippedSends      atomic.Uint64
	joinSets          atomic.Uint64
	workerTicks       atomic.Uint64 // for tests of the quiet worker
	joinStates        atomic.Uint64 // joins' push/pull states looked at, for tests
}

// Stats returns the member's counters. It never blocks.
func (c *Cluster) Stats() Stats {
	return Stats{
		DroppedTasks:      c.stats.droppedTasks.Load(),
		MalformedMessages: c.stats.malformedMessages.Load(),
		RejectedSets:      c.stats.rejectedSets.Load(),
		SkippedSends:      c.stats.skippedSends.Load(),
		JoinSets:          c.stats.joinSets.Load(),
	}
}

// Close tells the cluster this node is leaving, waiting up to timeout for
// the news to spread, then stops gossip and its own goroutines. It is safe
// to call more than once and from several goroutines; later calls return
// the first result.
func (c *Cluster) Close(timeout time.Duration) error {
	c.closeOnce.Do(func() {
		if c.ml.NumMembers() <= 1 {
			c.shutdown() // nobody to tell
			return
		}
		if err := c.ml.Leave(timeout); err != nil {
			// Not fatal: peers that missed the news find out through
			// failure detection instead.
			c.log.Warn("leave was not confirmed in time", "err", err, "timeout", timeout)
		}
		c.shutdown()
	})
	return c.closeErr
}

// Kill stops gossip without leaving, as a crash would: peers notice only
// through failure detection. Tests use it to simulate a dead node.
func (c *Cluster) Kill() error {
	c.closeOnce.Do(c.shutdown)
	return c.closeErr
}

func (c *Cluster) shutdown() {
	if err := c.ml.Shutdown(); err != nil {
		c.closeErr = fmt.Errorf("cluster: shutdown: %w", err)
	}
	close(c.stop)
	c.wg.Wait()
}

// upsert records a member's beacon, or forgets the member when it does not
// decode. Called from memberlist's event callbacks: it must not block.
func (c *Cluster) upsert(n *memberlist.Node, joined bool) {
	addr, ok := netip.AddrFromSlice(n.Addr)
	beacon, err := catalog.DecodeBeacon(n.Meta)
	if err == nil && !ok {
		err = fmt.Errorf("address %v is not an IP address", n.Addr)
	}
	if err == nil {
		err = catalog.CheckNodeName(n.Name)
	}
	c.mu.Lock()
	m, known := c.members[n.Name]
	if err != nil {
		delete(c.members, n.Name)
		c.publishLocked()
		c.mu.Unlock()
		c.log.Warn("dropping member with invalid metadata", "member", sanitize(n.Name), "addr", n.Address(), "err", err)
		return
	}
	if !known {
		m = &member{}
		c.members[n.Name] = m
	}
	_, rejoined := c.rejoin[n.Name]
	delete(c.rejoin, n.Name)
	m.addr, m.port, m.beacon = addr.Unmap(), n.Port, beacon
	if beacon.Role == catalog.RoleLB && beacon.HasAckSet && c.role == catalog.RoleBackend {
		m.sums.put(beacon.AckSet)
		want := catalog.Ack{Node: catalog.NodeHash(c.self), Digest: c.digest}
		if m.pending.has(func(p pendingAck) bool { return p.sum == beacon.AckSet && p.ack == want }) {
			// The beacon naming a set received earlier has come.
			m.acked, m.ackedFor = true, want
		}
	}
	c.seen.heard(n.Name, time.Now())
	fetch := m.track(c.role == catalog.RoleLB && n.Name != c.self, time.Now())
	c.publishLocked()
	c.mu.Unlock()

	if fetch {
		c.enqueue(task{kind: taskFetch, node: n.Name})
	}
	if !known {
		select {
		case c.known <- struct{}{}:
		default:
		}
	}
	if joined || !known {
		c.log.Log(context.Background(), c.memberLogLevel(beacon.Role), "member joined", "member", n.Name, "addr", addr.Unmap().String(), "role", beacon.Role.String(), "back", rejoined)
	} else {
		c.log.Debug("member updated", "member", n.Name, "role", beacon.Role.String(), "digest", beacon.Digest)
	}
}

// remove forgets a member that left or died. Must not block.
func (c *Cluster) remove(n *memberlist.Node) {
	c.mu.Lock()
	m, known := c.members[n.Name]
	delete(c.members, n.Name)
	if known {
		c.scheduleRejoinLocked(n.Name, m, time.Now())
		c.lostLocked(n.Name, m, time.Now())
	}
	c.publishLocked()
	c.mu.Unlock()
	c.send.forget(n.Name)
	if known {
		c.log.Log(context.Background(), c.memberLogLevel(m.beacon.Role), "member left", "member", n.Name, "addr", n.Address())
	}
}

// memberLogLevel is the level of a member's joins and departures in this
// node's log: info on a load balancer, and for load balancers on a
// backend; a backend's peer backends are debug, as a thousand of them
// would be a thousand lines on each.
func (c *Cluster) memberLogLevel(peer catalog.Role) slog.Level {
	if c.role == catalog.RoleLB || peer == catalog.RoleLB {
		return slog.LevelInfo
	}
	return slog.LevelDebug
}

// publishLocked marks the snapshot stale (Snapshot rebuilds it) and
// signals consumers without blocking. c.mu must be held.
func (c *Cluster) publishLocked() {
	c.snapStale.Store(true)
	select {
	case c.changes <- struct{}{}:
	default:
	}
}

// rebuildLocked builds the snapshot from the members. c.mu must be held.
func (c *Cluster) rebuildLocked() {
	nodes := make([]catalog.Node, 0, len(c.members))
	for name, m := range c.members {
		node := catalog.Node{Name: name, Addr: m.addr, Role: m.beacon.Role}
		switch {
		case name == c.self:
			node.Applications, node.Digest = c.apps, c.digest
		case m.apps != nil:
			node.Applications, node.Digest = m.apps, m.have
		}
		nodes = append(nodes, node)
	}
	snap := catalog.NewSnapshot(nodes)
	c.snap.Store(&snap)
	c.snapStale.Store(false)
}

// sanitize makes an untrusted node name safe to log.
func sanitize(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return fmt.Sprintf("%q", s)
}
