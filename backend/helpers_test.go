package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/cluster"
	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/internal/loopback"
	"github.com/scrimplb/scrimp/internal/proctest"
)

// waitLimit bounds every wait in these tests: generous, because a busy
// 2-core machine running -race can stall for a while, yet finite.
const waitLimit = 15 * time.Second

// call is one accepted UpdateApplications call.
type call struct {
	at   time.Time
	apps []catalog.Application
}

// fakeAdv records UpdateApplications calls. While fail is set it refuses
// them, as the cluster does with metadata over its size limit.
type fakeAdv struct {
	mu       sync.Mutex
	calls    []call
	attempts int
	tried    []time.Time // when each attempt was made
	fail     error
}

func (f *fakeAdv) UpdateApplications(role catalog.Role, apps []catalog.Application, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attempts++
	f.tried = append(f.tried, time.Now())
	if role != catalog.RoleBackend {
		return fmt.Errorf("role %v, want backend", role)
	}
	if f.fail != nil {
		return f.fail
	}
	f.calls = append(f.calls, call{at: time.Now(), apps: slices.Clone(apps)})
	return nil
}

func (f *fakeAdv) setFail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
}

func (f *fakeAdv) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *fakeAdv) attemptCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attempts
}

// triedAt returns when each attempt was made, as offsets from start.
func (f *fakeAdv) triedAt(start time.Time) []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]time.Duration, len(f.tried))
	for i, at := range f.tried {
		out[i] = at.Sub(start)
	}
	return out
}

func (f *fakeAdv) since(from int) []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls[min(from, len(f.calls)):])
}

func (f *fakeAdv) dump() string {
	var b strings.Builder
	for i, c := range f.since(0) {
		fmt.Fprintf(&b, "\t%d: %s\n", i, describe(c.apps))
	}
	return b.String()
}

// describe formats applications as "name:port=state …", the form the tests
// compare.
func describe(apps []catalog.Application) string {
	parts := make([]string, len(apps))
	for i, a := range apps {
		parts[i] = fmt.Sprintf("%s:%d=%s", a.Name, a.ApplicationPort, a.State)
	}
	return strings.Join(parts, " ")
}

// waitCall waits for a call, at index from or later, whose applications
// describe as want, and returns it with its index.
func waitCall(t *testing.T, adv *fakeAdv, from int, want string) (int, call) {
	t.Helper()
	var (
		found int
		c     call
	)
	waitUntil(t, fmt.Sprintf("advertisement %q after call %d", want, from), func() bool {
		for i, got := range adv.since(from) {
			if describe(got.apps) == want {
				found, c = from+i, got
				return true
			}
		}
		return false
	}, func() string { return "calls:\n" + adv.dump() })
	return found, c
}

// waitUntil polls cond until it holds, for tests on the real clock
// (inotify, sockets); on failure it adds what each of detail returns.
func waitUntil(t *testing.T, what string, cond func() bool, detail ...func() string) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, d := range detail {
				b.WriteString("; " + d())
			}
			t.Fatalf("%s: not within %v%s", what, waitLimit, b.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// settle runs the fake clock of the test's synctest bubble on by d, then
// waits until every other goroutine of the bubble is blocked. Only inside
// synctest.Test.
func settle(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

// waitLog waits for a log line containing every one of parts.
// logBuffer collects a backend's logs; they are printed if the test fails.
type logBuffer struct{ proctest.Buffer }

func (l *logBuffer) waitLog(t *testing.T, parts ...string) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("log line with %q", parts), func() bool {
		for line := range strings.Lines(l.String()) {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(line, p)
			}
			if ok {
				return true
			}
		}
		return false
	})
}

// newBackend returns a Backend for sec with short retry timings, logging
// into the returned buffer.
func newBackend(t *testing.T, sec *config.Backend) (*Backend, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("backend logs:\n%s", logs)
		}
	})
	b, err := New(sec, Options{ConfigFile: "main.json", Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	b.retryMin, b.retryMax = 20*time.Millisecond, 100*time.Millisecond
	return b, logs
}

// run runs b until the test ends, then checks that Run returns nil in time.
func run(t *testing.T, b *Backend, adv Advertiser) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- b.Run(ctx, adv) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitLimit):
			t.Errorf("Run did not return within %v of cancel", waitLimit)
		}
	})
}

// appJSON is an application file's content; extra is spliced into the
// object.
func appJSON(name string, port int, extra string) string {
	return fmt.Sprintf(`{"name": %q, "listen-port": 80, "application-port": %d, "protocol": "http"%s}`, name, port, extra)
}

// staticApp is an entry of backend.applications.
func staticApp(name string, port int) config.Application {
	return config.Application{Application: catalog.Application{Name: name, ListenPort: 80, ApplicationPort: port, Protocol: catalog.ProtocolHTTP}}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeAtomic writes content beside path under a temporary name, then
// renames it into place, as editors and configuration tools do.
func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		t.Fatal(err)
	}
}

// sentinel writes a file whose application sorts last and waits for its
// advertisement. Everything the backend did before it is then advertised
// already, so the calls between two sentinels show exactly what one change
// caused, with no sleeping.
type sentinel struct {
	dir string
	n   atomic.Int32
}

// mark writes the next sentinel, waits for the call that carries it (want
// is the rest of the set, without sentinels) and returns that call's index.
func (s *sentinel) mark(t *testing.T, adv *fakeAdv, from int, want string) int {
	t.Helper()
	n := int(s.n.Add(1))
	if n > 1 {
		if err := os.Remove(filepath.Join(s.dir, fmt.Sprintf("zz-sentinel-%d.json", n-1))); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(s.dir, fmt.Sprintf("zz-sentinel-%d.json", n)), appJSON(fmt.Sprintf("zz-sentinel-%d", n), 1000+n, ""))
	desc := fmt.Sprintf("zz-sentinel-%d:%d=up", n, 1000+n)
	if want != "" {
		desc = want + " " + desc
	}
	i, _ := waitCall(t, adv, from, desc)
	return i
}

var errTooLarge = errors.New("metadata over 512 bytes")

// startMember starts a real gossip member on ip (local profile, a free
// port), closed when the test ends.
func startMember(t *testing.T, name, ip string, role catalog.Role, apps []catalog.Application) *cluster.Cluster {
	t.Helper()
	port, err := loopback.FreePort(ip)
	if err != nil {
		t.Fatal(err)
	}
	c, err := cluster.New(cluster.Config{NodeName: name, BindAddr: ip, BindPort: port, Profile: "local",
		Role: role, Applications: apps, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(time.Second) })
	return c
}
