package cluster

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/scrimplb/scrimp/catalog"
)

// massNode starts a member named name on addr (a loopback address) with
// the cluster's key and label, logging warnings and errors only (a hundred
// members each logging every join would flood the test's output).
func massNode(t *testing.T, name, addr string, role catalog.Role, key []byte, label string, apps ...catalog.Application) *Cluster {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(newTestWriter(t), &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := New(Config{NodeName: name, BindAddr: addr, Profile: "local", Role: role, Applications: apps,
		Keys: [][]byte{key}, Label: label, Logger: logger})
	if err != nil {
		t.Fatalf("New %s on %s: %v", name, addr, err)
	}
	t.Cleanup(func() { c.Kill() })
	return c
}

// setDraining advertises every application of b as draining.
func setDraining(t *testing.T, b *Cluster, port int) {
	t.Helper()
	a := app("web", port)
	a.State = catalog.StateDraining
	if err := b.UpdateApplications(catalog.RoleBackend, []catalog.Application{a}, time.Second); err != nil {
		t.Errorf("drain %s: %v", b.LocalName(), err)
	}
}

// seesDigest reports whether lb holds b's current application set.
func seesDigest(lb, b *Cluster) bool {
	return slices.ContainsFunc(lb.Snapshot().Nodes, func(n catalog.Node) bool {
		return n.Name == b.LocalName() && n.Digest == b.LocalDigest()
	})
}

// settle waits, at the end of a test with many members, for the probes
// memberlist left running at shutdown to end (one probe interval at most),
// so that the package's leak check finds none.
func settle(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// Many more backends drain at once than acknowledgements fit in a load
// balancer's beacon (catalog.MaxAcks): every one of them is acknowledged
// all the same, through the acknowledgement set sent to each directly,
// within a bound far below a drain timeout. The load balancer acknowledges
// what it has every 200 ms, as its coalesced configuration applies would.
func TestMassDrainIsAcknowledged(t *testing.T) {
	// Far more than a beacon's acknowledgements (catalog.MaxAcks) either
	// way; 150 take about 10 s on two cores, 48 with the race detector did
	// not converge within a minute on a busy one.
	backends := 60
	if raceEnabled {
		backends = catalog.MaxAcks + 6
	}
	settle(t)
	key := bytes.Repeat([]byte{11}, 32)
	const label = "mass"
	lb := massNode(t, "lb", "127.0.231.250", catalog.RoleLB, key, label)
	bs := make([]*Cluster, backends)
	for i := range bs {
		bs[i] = massNode(t, fmt.Sprintf("backend-%d", i), fmt.Sprintf("127.0.231.%d", i+1), catalog.RoleBackend, key, label, app("web", 8000+i))
	}
	// Joins a few at a time, as a fleet starting would spread them: a
	// hundred push/pulls at once time out on a busy machine.
	var wg sync.WaitGroup
	slots := make(chan struct{}, 4)
	for _, b := range bs {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			for attempt := 0; ; attempt++ {
				if _, err := b.Join([]string{lb.LocalAddr()}); err == nil || attempt == 5 {
					if err != nil {
						t.Errorf("%s join: %v", b.LocalName(), err)
					}
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	joined := time.Now()
	waitFor(t, "the load balancer to route every backend", 60*time.Second, func() bool {
		for _, b := range bs {
			if !routed(lb, b.LocalName(), "web") {
				return false
			}
		}
		return true
	})
	for _, b := range bs {
		waitFor(t, "every backend to see the load balancer", 30*time.Second, func() bool {
			return slices.ContainsFunc(b.Snapshot().Nodes, func(n catalog.Node) bool { return n.Name == lb.LocalName() })
		})
	}

	t.Logf("%d backends routed %v after the last join", backends, time.Since(joined).Round(time.Millisecond))
	start := time.Now()
	for i, b := range bs {
		wg.Go(func() { setDraining(t, b, 8000+i) })
	}
	wg.Wait()
	stop := make(chan struct{})
	var acker sync.WaitGroup
	acker.Go(func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				lb.Acknowledge(lb.Snapshot())
			}
		}
	})
	defer func() {
		close(stop)
		acker.Wait()
	}()
	var seen, acked time.Duration
	waitFor(t, "the load balancer to hold every draining set", 30*time.Second, func() bool {
		for _, b := range bs {
			if !seesDigest(lb, b) {
				return false
			}
		}
		seen = time.Since(start)
		return true
	})
	waitFor(t, "every draining backend to be acknowledged", 30*time.Second, func() bool {
		for _, b := range bs {
			if len(b.Unacknowledged()) > 0 {
				return false
			}
		}
		acked = time.Since(start)
		return true
	})
	t.Logf("%d backends drained at once: the load balancer held every draining set after %v, every backend was acknowledged after %v",
		backends, seen.Round(time.Millisecond), acked.Round(time.Millisecond))
}

// Acknowledgement sets that the load balancer's beacon does not name end
// no drain: one from a backend in its own name (not a load balancer), one
// forged in the load balancer's name by a key holder that is not even a
// member, and one forged while the load balancer acknowledges another
// backend. The draining backend keeps waiting, and is acknowledged as soon
// as the load balancer really acknowledges it.
func TestForgedAckSetDoesNotEndADrain(t *testing.T) {
	key := bytes.Repeat([]byte{12}, 32)
	const label = "prod"
	lb := massNode(t, "lb", "127.0.232.1", catalog.RoleLB, key, label)
	victim := massNode(t, "victim", "127.0.232.2", catalog.RoleBackend, key, label, app("web", 8080))
	other := massNode(t, "other", "127.0.232.3", catalog.RoleBackend, key, label, app("web", 8081))
	for _, b := range []*Cluster{victim, other} {
		if _, err := b.Join([]string{lb.LocalAddr()}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the load balancer routes both backends", 5*time.Second, func() bool {
		return routed(lb, victim.LocalName(), "web") && routed(lb, other.LocalName(), "web")
	})
	waitFor(t, "the victim to see both members", 5*time.Second, func() bool { return len(victim.Snapshot().Nodes) == 3 })
	setDraining(t, victim, 8080)
	waitFor(t, "the load balancer to see the victim draining", 5*time.Second, func() bool { return seesDigest(lb, victim) })
	mine := catalog.Ack{Node: catalog.NodeHash(victim.LocalName()), Digest: victim.LocalDigest()}

	mallory := impostor(t, "127.0.232.4", key, label)
	to := &memberlist.Node{Name: victim.LocalName(), Addr: net.ParseIP("127.0.232.2"), Port: localPort(victim)}

	keepsWaiting := func(what string) {
		t.Helper()
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) {
			if got := victim.Unacknowledged(); !slices.Equal(got, []string{lb.LocalName()}) {
				t.Fatalf("after %s, Unacknowledged = %v, want [%s]", what, got, lb.LocalName())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	forged := []catalog.Ack{mine}
	// A backend, a member with the key, acknowledges in its own name.
	for range 3 {
		if err := other.ml.SendReliable(to, encodeMessage(ackSetMsg{From: other.LocalName(), Acks: forged})); err != nil {
			t.Fatal(err)
		}
	}
	keepsWaiting("a set from a backend")
	// A key holder in the load balancer's name, which acknowledges nothing.
	for range 3 {
		if err := mallory.SendReliable(to, encodeMessage(ackSetMsg{From: lb.LocalName(), Acks: forged})); err != nil {
			t.Fatal(err)
		}
	}
	keepsWaiting("a forged set while the load balancer acknowledges nothing")

	// The load balancer acknowledges the other backend, drained too, but
	// not the victim (its snapshot without the victim's draining set).
	setDraining(t, other, 8081)
	waitFor(t, "the load balancer to see the other backend draining", 5*time.Second, func() bool { return seesDigest(lb, other) })
	snap := lb.Snapshot()
	snap.Nodes = slices.DeleteFunc(slices.Clone(snap.Nodes), func(n catalog.Node) bool { return n.Name == victim.LocalName() })
	lb.Acknowledge(snap)
	waitFor(t, "the other backend to be acknowledged", 5*time.Second, func() bool { return len(other.Unacknowledged()) == 0 })
	withVictim := catalog.SortAcks([]catalog.Ack{mine, {Node: catalog.NodeHash(other.LocalName()), Digest: other.LocalDigest()}})
	for range 3 {
		if err := mallory.SendReliable(to, encodeMessage(ackSetMsg{From: lb.LocalName(), Acks: withVictim})); err != nil {
			t.Fatal(err)
		}
	}
	keepsWaiting("a forged set adding the victim to the load balancer's")
	if victim.Stats().MalformedMessages != 0 {
		t.Fatalf("%d malformed messages: the forged sets were not even decoded", victim.Stats().MalformedMessages)
	}

	start := time.Now()
	lb.Acknowledge(lb.Snapshot())
	waitFor(t, "the real acknowledgement", 5*time.Second, func() bool { return len(victim.Unacknowledged()) == 0 })
	t.Logf("the real acknowledgement reached the victim in %v", time.Since(start).Round(time.Millisecond))
}
