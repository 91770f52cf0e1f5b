package seed

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scrimplb/scrimp/config"
)

// testPort is the default gossip port the tests' Env carries.
const testPort = 7946

// logRecorder is a slog.Handler that keeps every record, so tests can
// check that a skipped entry was reported, and how often.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Level.String() + " " + rec.Message)
	rec.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	r.mu.Lock()
	r.lines = append(r.lines, b.String())
	r.mu.Unlock()
	return nil
}

// count returns how many records at level (e.g. "WARN") contain every one
// of the substrings.
func (r *logRecorder) count(level string, subs ...string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, l := range r.lines {
		if !strings.HasPrefix(l, level+" ") {
			continue
		}
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(l, s)
		}
		if ok {
			n++
		}
	}
	return n
}

func (r *logRecorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.lines, "\n")
}

// testEnv returns an Env whose logger records into the returned recorder;
// the records are printed if the test fails.
func testEnv(t *testing.T) (Env, *logRecorder) {
	t.Helper()
	rec := &logRecorder{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("provider log:\n%s", rec)
		}
	})
	return Env{Logger: slog.New(rec), DefaultPort: testPort}, rec
}

// newTestProvider builds provider name from section (marshalled to JSON)
// through the registry, as the daemon does, and closes it at cleanup.
func newTestProvider(t *testing.T, name string, section any, env Env) Provider {
	t.Helper()
	p, err := newFromSection(name, section, env)
	if err != nil {
		t.Fatalf("New(%s): %v", name, err)
	}
	if c, ok := p.(Closer); ok {
		t.Cleanup(func() {
			if err := c.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	return p
}

func newFromSection(name string, section any, env Env) (Provider, error) {
	raw, err := json.Marshal(section)
	if err != nil {
		return nil, err
	}
	return New(config.Seed{Provider: name, Sections: map[string]json.RawMessage{name: raw}}, env)
}

// eventually polls cond every 20ms until it returns "" or the deadline
// passes, then fails with cond's last complaint.
func eventually(t *testing.T, within time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", within, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// seedsNow calls p.Seeds with a bounded context and fails the test on
// error.
func seedsNow(t *testing.T, p Provider) []string {
	t.Helper()
	got, err := seedsErr(p)
	if err != nil {
		t.Fatalf("Seeds: %v", err)
	}
	return got
}

func seedsErr(p Provider) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return p.Seeds(ctx)
}

// sameAddrs reports whether got equals want, treating nil and empty alike.
func sameAddrs(got, want []string) bool {
	return slices.Equal(got, want) || (len(got) == 0 && len(want) == 0)
}

// wantErr checks err against a wanted substring: "" means no error.
func wantErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want != "" && err == nil:
		t.Fatalf("no error, want one containing %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Fatalf("error %q does not contain %q", err, want)
	}
}

func TestProvidersRegistered(t *testing.T) {
	got := Providers()
	for _, want := range []string{"dns", "file", "s3", "static"} {
		if !slices.Contains(got, want) {
			t.Errorf("Providers() = %v, missing %q", got, want)
		}
	}
}
