package cluster

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/internal/proctest"
)

// fakeBackend is a real memberlist node that gossips a beacon for a set
// of bytes chosen by the test and, when asked, serves those bytes, valid
// or not. It counts the requests it receives.
type fakeBackend struct {
	name     string
	ml       *memberlist.Memberlist
	d        *rawDelegate
	book     nodeBook
	answer   bool
	mu       sync.Mutex
	set      []byte
	requests atomic.Int64
}

func newFakeBackend(t *testing.T, ip int, set []byte, answer bool) *fakeBackend {
	t.Helper()
	f := &fakeBackend{name: fmt.Sprintf("fake-%d", ip), d: &rawDelegate{}, answer: answer}
	f.setSet(t, set)
	f.d.onMsg = f.onMsg
	conf := memberlist.DefaultLocalConfig()
	conf.Name, conf.BindAddr, conf.BindPort = f.name, fmt.Sprintf("127.0.0.%d", ip), 0
	conf.Delegate = f.d
	conf.Events = &f.book
	conf.LogOutput = newTestWriter(t)
	ml, err := memberlist.Create(conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ml.Shutdown() })
	f.ml = ml
	return f
}

// setSet changes what the fake serves and the beacon naming it; acks
// change the beacon's bytes without changing the digest.
func (f *fakeBackend) setSet(t *testing.T, set []byte, acks ...catalog.Ack) {
	t.Helper()
	beacon, err := catalog.EncodeBeacon(catalog.Beacon{Role: catalog.RoleBackend, Digest: catalog.DigestOf(set), Acks: acks})
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.set = set
	f.mu.Unlock()
	f.d.mu.Lock()
	f.d.meta = beacon
	f.d.mu.Unlock()
}

func (f *fakeBackend) onMsg(b []byte) {
	m, err := decodeMessage(b)
	req, ok := m.(requestMsg)
	if err != nil || !ok {
		return
	}
	f.requests.Add(1)
	if !f.answer {
		return
	}
	to := f.book.node(req.From)
	if to == nil {
		return
	}
	f.mu.Lock()
	set := f.set
	f.mu.Unlock()
	f.ml.SendReliable(to, encodeMessage(stateMsg{From: f.name, Digest: catalog.DigestOf(set), Set: set}))
}

// fetchOf returns what c knows of member name's set.
func fetchOf(c *Cluster, name string) (fetchState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.members[name]
	if !ok {
		return fetchState{}, false
	}
	return m.fetch, true
}

func waitFetch(t *testing.T, c *Cluster, name string, want fetchKind, digest catalog.Digest) fetchState {
	t.Helper()
	var got fetchState
	waitFor(t, fmt.Sprintf("%s to be %s %s at %s", name, want, digest, c.LocalName()), 5*time.Second, func() bool {
		got, _ = fetchOf(c, name)
		return got.kind == want && got.digest == digest
	})
	return got
}

// TestRejectedSetIsNotFetchedAgain: a member whose set hashes to its
// gossiped digest but fails validation is rejected for that digest; more
// gossip of the same digest does not make the load balancer ask again,
// and a new digest is fetched (and here accepted) at once.
func TestRejectedSetIsNotFetchedAgain(t *testing.T) {
	lb := testNode(t, 81, catalog.RoleLB)
	bad := catalog.EncodeMeta(catalog.Meta{Role: catalog.RoleBackend, Applications: []catalog.Application{{
		Name: "evil", ListenPort: 80, ApplicationPort: 8080, Protocol: catalog.ProtocolHTTP,
		Domains: []string{"x; } server { listen 1; location / { proxy_pass http://evil"},
	}}})
	f := newFakeBackend(t, 82, bad, true)
	if _, err := f.ml.Join([]string{lb.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	waitFetch(t, lb, f.name, fetchRejected, catalog.DigestOf(bad))
	if got := lb.Stats().RejectedSets; got != 1 {
		t.Errorf("Stats().RejectedSets = %d, want 1", got)
	}
	asked := f.requests.Load()
	if asked < 1 {
		t.Fatalf("rejected a set it never asked for (%d requests)", asked)
	}

	// The same digest in a changed beacon (memberlist reports only
	// changed metadata): the load balancer hears it and does not ask.
	drain(lb.Changes())
	f.setSet(t, bad, catalog.Ack{Node: 1})
	if err := f.ml.UpdateNode(time.Second); err != nil {
		t.Logf("UpdateNode: %v", err)
	}
	select {
	case <-lb.Changes():
	case <-time.After(5 * time.Second):
		t.Fatal("the load balancer never heard the changed beacon")
	}
	lb.mu.Lock()
	acks := len(lb.members[f.name].beacon.Acks)
	lb.mu.Unlock()
	if acks != 1 {
		t.Fatalf("the change signalled is not the new beacon (%d acks)", acks)
	}
	// Several retry intervals pass: a member being fetched would be asked
	// twice in this time.
	deadline := time.Now().Add(2*fetchRetry + 2*workerTick)
	for time.Now().Before(deadline) {
		if n := f.requests.Load(); n != asked {
			t.Fatalf("asked again for a rejected digest: %d requests, %d before", n, asked)
		}
		if st, _ := fetchOf(lb, f.name); st.kind != fetchRejected {
			t.Fatalf("state left rejected without a new digest: %s", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, n := range lb.Snapshot().Nodes {
		if n.Name == f.name && len(n.Applications) != 0 {
			t.Fatalf("rejected set in the snapshot: %+v", n)
		}
	}

	// A new digest is fetched again, and this time the set is valid.
	good := catalog.EncodeMeta(catalog.Meta{Role: catalog.RoleBackend, Applications: []catalog.Application{app("web", 8080)}})
	f.setSet(t, good)
	if err := f.ml.UpdateNode(time.Second); err != nil {
		t.Logf("UpdateNode: %v", err)
	}
	waitFetch(t, lb, f.name, fetchValid, catalog.DigestOf(good))
	if n := f.requests.Load(); n <= asked {
		t.Fatalf("valid without a new request (%d requests)", n)
	}
	services, _ := lb.Snapshot().Services()
	if len(services) != 1 || services[0].Name != "web" || len(services[0].Servers) != 1 {
		t.Fatalf("services = %+v, want web on the fake backend", services)
	}
	if got := lb.Stats().RejectedSets; got != 1 {
		t.Errorf("Stats().RejectedSets = %d after a valid set, want 1", got)
	}
}

// TestSilentMemberIsFetchingAndAskedAgain: a member that never answers
// stays fetching its digest, asked again after fetchRetry and then less
// often (backing off), with a later since, and appears in the snapshot
// without applications.
func TestSilentMemberIsFetchingAndAskedAgain(t *testing.T) {
	lb := testNode(t, 83, catalog.RoleLB)
	set := catalog.EncodeMeta(catalog.Meta{Role: catalog.RoleBackend, Applications: []catalog.Application{app("web", 8080)}})
	f := newFakeBackend(t, 84, set, false)
	joined := time.Now()
	if _, err := f.ml.Join([]string{lb.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	first := waitFetch(t, lb, f.name, fetchFetching, catalog.DigestOf(set))
	if first.since.Before(joined) {
		t.Fatalf("fetching since %v, before the join at %v", first.since, joined)
	}
	waitFor(t, "two more requests", 5*time.Second, func() bool { return f.requests.Load() >= 3 })
	later := waitFetch(t, lb, f.name, fetchFetching, catalog.DigestOf(set))
	if later.asked < 3 {
		t.Fatalf("asked %d times after three requests", later.asked)
	}
	// Each retry waited the backoff of the requests before it.
	var want time.Duration
	for k := first.asked; k < later.asked; k++ {
		want += backoffDelay(k, fetchRetry, retryMax)
	}
	if d := later.since.Sub(first.since); d < want {
		t.Fatalf("since moved by %v from request %d to %d, want at least %v (backing off)", d, first.asked, later.asked, want)
	}
	var found bool
	for _, n := range lb.Snapshot().Nodes {
		if n.Name == f.name {
			found = true
			if len(n.Applications) != 0 {
				t.Fatalf("unanswered member has applications: %+v", n)
			}
		}
	}
	if !found {
		t.Fatalf("fake backend not in the snapshot: %s", names(lb.Snapshot()))
	}
}

// TestFetchStatesOnEachRole: a load balancer holds every backend's set
// (valid); a backend fetches nothing, so it knows other backends' sets as
// unknown and a load balancer's (empty by definition) as valid.
func TestFetchStatesOnEachRole(t *testing.T) {
	lb := testNode(t, 85, catalog.RoleLB)
	b1 := testNode(t, 86, catalog.RoleBackend, app("web", 8080))
	b2 := testNode(t, 87, catalog.RoleBackend, app("api", 9000))
	for _, b := range []*Cluster{b1, b2} {
		if _, err := b.Join([]string{lb.LocalAddr()}); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range []*Cluster{b1, b2} {
		waitFetch(t, lb, b.LocalName(), fetchValid, b.LocalDigest())
	}
	waitFetch(t, b1, b2.LocalName(), fetchUnknown, b2.LocalDigest())
	waitFetch(t, b1, lb.LocalName(), fetchValid, lb.LocalDigest())
}

// syncBuffer collects log output written from several goroutines.
type syncBuffer struct{ proctest.Buffer }

// lines returns the lines that hold substr.
func (s *syncBuffer) lines(substr string) []string {
	var out []string
	for l := range strings.Lines(s.String()) {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return out
}

// TestDroppedTasksAreCounted: tasks the full work queue cannot take are
// counted one by one in Stats and logged with the reason under "err", at
// most once per dropLogEvery.
func TestDroppedTasksAreCounted(t *testing.T) {
	var logs syncBuffer
	c, err := New(Config{NodeName: "full-88", BindAddr: "127.0.0.88", Profile: "local", Role: catalog.RoleBackend,
		Applications: []catalog.Application{app("web", 8080)}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Kill() })

	// With c.mu held the worker blocks on its first acknowledgement (or
	// its first review), so the queue fills and stays full.
	c.mu.Lock()
	locked := true
	defer func() {
		if locked {
			c.mu.Unlock()
		}
	}()
	acked := task{kind: taskAcked, node: "lb-x", digest: catalog.Digest{1}}
	attempts := 0
	for c.Stats().DroppedTasks == 0 {
		if attempts > 10*cap(c.work) {
			t.Fatal("the work queue never filled")
		}
		c.enqueue(acked)
		attempts++
	}
	if len(c.work) != cap(c.work) {
		t.Fatalf("queue holds %d tasks at the first drop, want %d", len(c.work), cap(c.work))
	}
	const more = 50
	for range more {
		c.enqueue(acked)
		attempts++
	}
	// Every task the full queue refused is counted. The worker takes at
	// most one task from the queue (each blocks it on c.mu), and may take
	// it after the first drop, when it was not yet blocked.
	if got, full := c.Stats().DroppedTasks, uint64(attempts-cap(c.work)); got != full && got != full-1 || got < more {
		t.Fatalf("Stats().DroppedTasks = %d after %d tasks into a queue of %d, want %d (or %d if the worker took one)", got, attempts, cap(c.work), full, full-1)
	}
	c.mu.Unlock()
	locked = false
	waitFor(t, "the worker to drain its queue", 5*time.Second, func() bool { return len(c.work) == 0 })

	lines := logs.lines(`msg="cluster dropped a task"`)
	if len(lines) == 0 || len(lines) >= 1+more {
		t.Fatalf("%d log lines for %d drops, want at least one and rate-limited:\n%s", len(lines), 1+more, strings.Join(lines, ""))
	}
	if !strings.Contains(lines[0], `err="cluster work queue full"`) || !strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[0], "kind=acked") {
		t.Fatalf("log line %q lacks level, kind or err", lines[0])
	}
}

// TestEarlyRequestsAreBounded: requests from members not known yet wait
// for gossip to bring them, up to maxPending; a flood beyond that is
// dropped and counted, and sent over the real network by a peer.
func TestEarlyRequestsAreBounded(t *testing.T) {
	b := testNode(t, 89, catalog.RoleBackend, app("web", 8080))
	conf := memberlist.DefaultLocalConfig()
	conf.Name, conf.BindAddr, conf.BindPort = "flooder", "127.0.0.90", 0
	conf.Delegate = &rawDelegate{}
	conf.LogOutput = newTestWriter(t)
	ml, err := memberlist.Create(conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ml.Shutdown() })
	// Not joined: the flooder sends to the backend's address directly, so
	// none of the names is a member.
	to := &memberlist.Node{Name: b.LocalName(), Addr: []byte{127, 0, 0, 89}, Port: localPort(b)}
	const extra = 6
	for i := range maxPending + extra {
		if err := ml.SendReliable(to, encodeMessage(requestMsg{From: fmt.Sprintf("stranger-%d", i)})); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the flood counted", 5*time.Second, func() bool { return b.Stats().DroppedTasks >= extra })
	b.mu.Lock()
	pending := len(b.pending)
	b.mu.Unlock()
	if got := b.Stats().DroppedTasks; got != extra || pending != maxPending {
		t.Fatalf("dropped %d with %d pending, want %d dropped and %d pending", got, pending, extra, maxPending)
	}
	// A malformed message is counted apart.
	if err := ml.SendReliable(to, []byte{byte(msgRequest), 3, 'a', ';', 'b'}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the malformed message counted", 5*time.Second, func() bool { return b.Stats().MalformedMessages == 1 })
}

// TestJoinCarriesSet: a backend's join push/pull carries its application
// set, and the load balancer takes it with no fetch answered (the fake
// never answers requests); a set in a join that is not the one the
// member gossips, or that names another member, is not taken.
func TestJoinCarriesSet(t *testing.T) {
	lb := testNode(t, 181, catalog.RoleLB)
	good := catalog.EncodeMeta(catalog.Meta{Role: catalog.RoleBackend, Applications: []catalog.Application{app("web", 8080)}})
	other := catalog.EncodeMeta(catalog.Meta{Role: catalog.RoleBackend, Applications: []catalog.Application{app("evil", 8081)}})

	honest := newFakeBackend(t, 182, good, false)
	honest.d.local = encodeMessage(stateMsg{From: honest.name, Digest: catalog.DigestOf(good), Set: good})
	if _, err := honest.ml.Join([]string{lb.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	waitFetch(t, lb, honest.name, fetchValid, catalog.DigestOf(good))
	waitFor(t, "JoinSets to count the join's set", 5*time.Second, func() bool { return lb.Stats().JoinSets == 1 })

	// A member whose join carries a set it does not gossip (another
	// digest), and one claiming the honest member's name with another
	// set: neither is taken.
	liar := newFakeBackend(t, 183, good, false)
	liar.d.local = encodeMessage(stateMsg{From: liar.name, Digest: catalog.DigestOf(other), Set: other})
	if _, err := liar.ml.Join([]string{lb.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	thief := newFakeBackend(t, 184, good, false)
	thief.d.local = encodeMessage(stateMsg{From: honest.name, Digest: catalog.DigestOf(other), Set: other})
	if _, err := thief.ml.Join([]string{lb.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	// The load balancer merges a join's state after the joiner's Join
	// has returned: wait until it has looked at all three.
	waitFor(t, "the load balancer to look at three joins' states", 5*time.Second, func() bool { return lb.stats.joinStates.Load() == 3 })
	waitFetch(t, lb, thief.name, fetchFetching, catalog.DigestOf(good))
	if st, _ := fetchOf(lb, liar.name); st.kind != fetchFetching {
		t.Fatalf("the liar's set is %s, want still fetching", st)
	}
	waitFetch(t, lb, honest.name, fetchValid, catalog.DigestOf(good))
	if got := lb.Stats().JoinSets; got != 1 {
		t.Errorf("Stats().JoinSets = %d after the forged joins, want 1", got)
	}
	services, _ := lb.Snapshot().Services()
	if len(services) != 1 || services[0].Name != "web" || len(services[0].Servers) != 1 {
		t.Fatalf("services = %+v, want only web on the honest member", services)
	}
}

// TestJoinSetOfARealBackend: a real backend's join hands the load balancer
// its set (JoinSets), and the load balancer's snapshot has it.
func TestJoinSetOfARealBackend(t *testing.T) {
	lb := testNode(t, 185, catalog.RoleLB)
	// memberlist calls NotifyJoin (which queues a fetch) before it hands
	// over the joiner's state, so on a loaded machine the fetch's answer
	// may come first and the join's set is then not needed: up to three
	// backends join, and the join must carry the set of at least one.
	for i := range 3 {
		be := testNode(t, 186+i, catalog.RoleBackend, app("web", 8080))
		if _, err := be.Join([]string{lb.LocalAddr()}); err != nil {
			t.Fatal(err)
		}
		digest := digestOf(be)
		waitFetch(t, lb, be.LocalName(), fetchValid, digest)
		// The counter follows the set's acceptance, just after it, in
		// the same call.
		deadline := time.Now().Add(2 * time.Second)
		for lb.Stats().JoinSets == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := lb.Stats().JoinSets; n > 0 {
			if n != 1 {
				t.Fatalf("JoinSets = %d after one set taken from a join", n)
			}
			return
		}
		t.Logf("join %d: the fetch's answer came before the join's set", i+1)
	}
	t.Fatal("none of 3 joins carried a set the load balancer took")
}
