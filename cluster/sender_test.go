package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fails int
		want  time.Duration
	}{
		{"none", 0, 0},
		{"first", 1, retryBase},
		{"second doubles", 2, 2 * retryBase},
		{"fourth", 4, 8 * retryBase},
		{"capped", 5, retryMax},
		{"stays capped", 60, retryMax},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := backoffDelay(tc.fails, retryBase, retryMax); got != tc.want {
				t.Fatalf("backoffDelay(%d) = %v, want %v", tc.fails, got, tc.want)
			}
		})
	}
}

// senderHarness is a sender on a Cluster with no network, inside a
// synctest bubble: jobs are functions the test writes.
type senderHarness struct {
	c   *Cluster
	s   *sender
	mu  sync.Mutex
	ran []string // "member/kind" of each job started, in order
}

func newSenderHarness(t *testing.T) *senderHarness {
	t.Helper()
	c := &Cluster{stop: make(chan struct{}), log: slog.New(slog.DiscardHandler)}
	c.send = newSender(c)
	c.send.start()
	t.Cleanup(func() {
		close(c.stop)
		c.wg.Wait()
	})
	return &senderHarness{c: c, s: c.send}
}

// job returns a send to node that takes d and fails when fail is set.
func (h *senderHarness) job(node string, kind taskKind, l lane, d time.Duration, fail bool) sendJob {
	return sendJob{node: node, kind: kind, lane: l, run: func() error {
		h.mu.Lock()
		h.ran = append(h.ran, node+"/"+kind.String())
		h.mu.Unlock()
		time.Sleep(d)
		if fail {
			return errors.New("i/o timeout")
		}
		return nil
	}}
}

func (h *senderHarness) started() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.ran...)
}

func (h *senderHarness) count(what string) int {
	n := 0
	for _, r := range h.started() {
		if r == what {
			n++
		}
	}
	return n
}

// TestSenderBacksOffSilentMembers: a member whose send failed is left
// alone for retryBase, then twice as long after each further failure, up
// to retryMax; sends in between are skipped and counted; one send that
// works resets the backoff.
func TestSenderBacksOffSilentMembers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newSenderHarness(t)
		const dial = 250 * time.Millisecond
		fail := func() {
			t.Helper()
			before := h.count("hole/fetch")
			h.s.submit(h.job("hole", taskFetch, laneFast, dial, true))
			synctest.Wait()
			if h.count("hole/fetch") != before+1 {
				t.Fatalf("send did not start; started %v", h.started())
			}
			time.Sleep(dial)
			synctest.Wait()
		}
		skipped := func(want uint64) {
			t.Helper()
			if got := h.c.stats.skippedSends.Load(); got != want {
				t.Fatalf("SkippedSends = %d, want %d", got, want)
			}
		}
		fail()
		for fails, wait := 1, retryBase; fails < 7; fails, wait = fails+1, min(2*wait, retryMax) {
			// Just before the backoff ends, a send is skipped.
			time.Sleep(wait - time.Nanosecond)
			h.s.submit(h.job("hole", taskFetch, laneFast, dial, true))
			synctest.Wait()
			skipped(uint64(fails))
			if got := h.count("hole/fetch"); got != fails {
				t.Fatalf("after %d failures %d sends started, want %d", fails, got, fails)
			}
			time.Sleep(time.Nanosecond)
			fail()
		}
		// The seventh failure left it alone for retryMax; a send that
		// works then resets the backoff: the next is not skipped.
		time.Sleep(retryMax)
		h.s.submit(h.job("hole", taskFetch, laneFast, dial, false))
		synctest.Wait()
		time.Sleep(dial)
		synctest.Wait()
		h.s.submit(h.job("hole", taskFetch, laneFast, dial, false))
		synctest.Wait()
		skipped(6)
		if got := h.count("hole/fetch"); got != 9 {
			t.Fatalf("%d sends started, want 9 (%v)", got, h.started())
		}
	})
}

// TestSenderKeepsMembersApart: jobs for one member run one at a time, the
// newest of a kind replacing a waiting one; members whose sends hang take
// up the fast lane but not the acknowledgement lane; a member whose send
// failed goes to the slow lane and leaves the fast lane to others.
func TestSenderKeepsMembersApart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newSenderHarness(t)
		const hang = time.Second

		// One member: an answer waits behind a fetch; two acks coalesce.
		h.s.submit(h.job("a", taskFetch, laneFast, hang, false))
		h.s.submit(h.job("a", taskAnswer, laneFast, 0, false))
		h.s.submit(h.job("a", taskAck, laneAck, 0, false))
		h.s.submit(h.job("a", taskAck, laneAck, 0, false))
		synctest.Wait()
		if got := fmt.Sprint(h.started()); got != "[a/fetch]" {
			t.Fatalf("started %s while a's fetch is in flight, want only it", got)
		}
		time.Sleep(hang)
		synctest.Wait()
		if got := fmt.Sprint(h.started()); got != "[a/fetch a/answer a/ack]" {
			t.Fatalf("started %s, want a's answer then one ack after its fetch", got)
		}

		// Hanging members fill the fast lane; an ack still goes at once.
		for i := range laneWorkers[laneFast] + 3 {
			h.s.submit(h.job(fmt.Sprintf("hang-%d", i), taskFetch, laneFast, hang, true))
		}
		h.s.submit(h.job("drainer", taskAck, laneAck, 0, false))
		synctest.Wait()
		if h.count("drainer/ack") != 1 {
			t.Fatalf("the ack waited behind hanging fetches: started %v", h.started())
		}
		// Once they failed, their retries run in the slow lane and a
		// healthy member's fetch runs at once.
		time.Sleep(2 * hang)
		synctest.Wait()
		time.Sleep(retryBase)
		for i := range laneWorkers[laneFast] + 3 {
			h.s.submit(h.job(fmt.Sprintf("hang-%d", i), taskFetch, laneFast, hang, true))
		}
		h.s.submit(h.job("healthy", taskFetch, laneFast, 0, false))
		synctest.Wait()
		if h.count("healthy/fetch") != 1 {
			t.Fatalf("a healthy member's fetch waited behind failing members: started %v", h.started())
		}
	})
}

// TestSenderRedoesAnswers: an answer whose send failed, or that was
// skipped while its member was in backoff, is handed back once (due) when
// the backoff ends and not before; a fetch is not (the worker's review
// repeats fetches); a send that works leaves nothing to redo.
func TestSenderRedoesAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newSenderHarness(t)
		const dial = 250 * time.Millisecond
		answer := func(node string, fail bool) sendJob {
			j := h.job(node, taskAnswer, laneFast, dial, fail)
			j.redo = true
			return j
		}
		due := func(want string) {
			t.Helper()
			var got []string
			for _, t := range h.s.due(time.Now()) {
				got = append(got, t.node+"/"+t.kind.String())
			}
			if fmt.Sprint(got) != want {
				t.Fatalf("due = %s, want %s", got, want)
			}
		}

		h.s.submit(answer("lb", true))
		h.s.submit(h.job("other", taskFetch, laneFast, dial, true))
		h.s.submit(answer("fine", false))
		synctest.Wait()
		time.Sleep(dial)
		synctest.Wait()
		due("[]") // in backoff: nothing yet

		// Skipped while in backoff: still one redo.
		h.s.submit(answer("lb", false))
		synctest.Wait()
		if got := h.c.stats.skippedSends.Load(); got != 1 {
			t.Fatalf("SkippedSends = %d, want 1", got)
		}
		time.Sleep(retryBase - dial - time.Nanosecond)
		due("[]")
		time.Sleep(dial + time.Nanosecond)
		due("[lb/answer]")
		due("[]") // handed back once

		// The redone answer works: the member's record is gone.
		h.s.submit(answer("lb", false))
		synctest.Wait()
		time.Sleep(dial)
		synctest.Wait()
		due("[]")
		h.s.mu.Lock()
		_, kept := h.s.members["lb"]
		h.s.mu.Unlock()
		if kept {
			t.Fatal("a member whose send worked is still recorded")
		}
	})
}
