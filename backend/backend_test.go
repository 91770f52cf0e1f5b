package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/config"
)

// TestDirectoryChanges walks one application directory through the
// changes a running backend must follow, each advertised on its own.
func TestDirectoryChanges(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "apps")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	web := filepath.Join(dir, "web.json")
	b, _ := newBackend(t, &config.Backend{ApplicationConfigDir: dir, Applications: []config.Application{staticApp("base", 7000)}})
	adv := &fakeAdv{}
	run(t, b, adv)
	waitCall(t, adv, 0, "base:7000=up")

	steps := []struct {
		name string
		do   func(t *testing.T)
		want string
	}{
		{"file created", func(t *testing.T) { writeFile(t, web, appJSON("web", 8080, "")) }, "base:7000=up web:8080=up"},
		{"file modified", func(t *testing.T) { writeFile(t, web, appJSON("web", 8081, "")) }, "base:7000=up web:8081=up"},
		{"renamed into place", func(t *testing.T) { writeAtomic(t, web, appJSON("web", 8082, "")) }, "base:7000=up web:8082=up"},
		{"second file", func(t *testing.T) { writeAtomic(t, filepath.Join(dir, "api.json"), appJSON("api", 9000, "")) }, "api:9000=up base:7000=up web:8082=up"},
		{"file removed", func(t *testing.T) {
			if err := os.Remove(web); err != nil {
				t.Fatal(err)
			}
		}, "api:9000=up base:7000=up"},
		{"file renamed away from .json", func(t *testing.T) {
			if err := os.Rename(filepath.Join(dir, "api.json"), filepath.Join(dir, "api.json.disabled")); err != nil {
				t.Fatal(err)
			}
		}, "base:7000=up"},
		{"directory removed", func(t *testing.T) {
			writeFile(t, web, appJSON("web", 8083, ""))
			// Wait for the file to be seen, so that the removal is a
			// change of its own.
			waitCall(t, adv, 0, "base:7000=up web:8083=up")
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
		}, "base:7000=up"},
		{"populated directory renamed into place", func(t *testing.T) {
			staging := filepath.Join(root, "staging")
			if err := os.Mkdir(staging, 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(staging, "web.json"), appJSON("web", 8084, ""))
			if err := os.Rename(staging, dir); err != nil {
				t.Fatal(err)
			}
		}, "base:7000=up web:8084=up"},
		{"file in the new directory modified", func(t *testing.T) { writeFile(t, web, appJSON("web", 8085, "")) }, "base:7000=up web:8085=up"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			from := adv.count()
			start := time.Now()
			s.do(t)
			_, c := waitCall(t, adv, from, s.want)
			t.Logf("%s: advertised %v after the change", s.name, c.at.Sub(start).Round(time.Millisecond))
		})
	}
}

// TestAdvertiseLatency measures how long a written application file takes
// to reach UpdateApplications; the issue asks for under a second.
func TestAdvertiseLatency(t *testing.T) {
	dir := t.TempDir()
	b, _ := newBackend(t, &config.Backend{ApplicationConfigDir: dir})
	adv := &fakeAdv{}
	run(t, b, adv)
	waitCall(t, adv, 0, "")
	var lat []time.Duration
	want := ""
	for i := range 10 {
		name := fmt.Sprintf("app%02d", i)
		from := adv.count()
		start := time.Now()
		if i%2 == 0 {
			writeFile(t, filepath.Join(dir, name+".json"), appJSON(name, 8000+i, ""))
		} else {
			writeAtomic(t, filepath.Join(dir, name+".json"), appJSON(name, 8000+i, ""))
		}
		want = strings.TrimSpace(want + fmt.Sprintf(" %s:%d=up", name, 8000+i))
		_, c := waitCall(t, adv, from, want)
		lat = append(lat, c.at.Sub(start))
	}
	slices.Sort(lat)
	t.Logf("file written -> UpdateApplications over %d changes: min %v, median %v, max %v (debounce %v)",
		len(lat), lat[0].Round(time.Millisecond), lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond), Debounce)
	if lat[len(lat)/2] > time.Second {
		t.Errorf("median latency %v, want under a second", lat[len(lat)/2])
	}
}

func TestDirectoryCreatedLater(t *testing.T) {
	tests := []struct {
		name string
		sub  string // the directory, below a temporary directory that exists
	}{
		{"parent exists", "apps"},
		{"several levels missing", "a/b/c/apps"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), tt.sub)
			b, logs := newBackend(t, &config.Backend{ApplicationConfigDir: dir, Applications: []config.Application{staticApp("base", 7000)}})
			adv := &fakeAdv{}
			run(t, b, adv)
			waitCall(t, adv, 0, "base:7000=up")
			logs.waitLog(t, "does not exist yet", dir)
			from := adv.count()
			start := time.Now()
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(dir, "web.json"), appJSON("web", 8080, ""))
			_, c := waitCall(t, adv, from, "base:7000=up web:8080=up")
			t.Logf("directory created -> advertised in %v", c.at.Sub(start).Round(time.Millisecond))
			// The directory is watched itself now, not only its parent.
			from = adv.count()
			writeFile(t, filepath.Join(dir, "web.json"), appJSON("web", 8081, ""))
			waitCall(t, adv, from, "base:7000=up web:8081=up")
		})
	}
}

// TestIgnoredFiles checks that editors' and tools' side files are never
// taken for applications, even when they hold a valid one.
func TestIgnoredFiles(t *testing.T) {
	dir := t.TempDir()
	ignored := []string{".web.json.swp", "web.json~", "#web.json#", ".#web.json", ".hidden.json", "web.json.tmp", "web.txt", "..data", ".json"}
	for i, name := range ignored {
		writeFile(t, filepath.Join(dir, name), appJSON(fmt.Sprintf("ignored%d", i), 9000+i, ""))
	}
	if err := os.Mkdir(filepath.Join(dir, "sub.json"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "real.json"), appJSON("real", 8080, ""))
	b, _ := newBackend(t, &config.Backend{ApplicationConfigDir: dir})
	adv := &fakeAdv{}
	run(t, b, adv)
	waitCall(t, adv, 0, "real:8080=up")
	// Touch every ignored file while running too.
	for i, name := range ignored {
		writeFile(t, filepath.Join(dir, name), appJSON(fmt.Sprintf("ignored%d", i), 9100+i, ""))
	}
	s := &sentinel{dir: dir}
	s.mark(t, adv, 0, "real:8080=up")
	for _, c := range adv.since(0) {
		if d := describe(c.apps); strings.Contains(d, "ignored") {
			t.Errorf("an ignored file was advertised: %s", d)
		}
	}
	if ps := CheckDir(dir, nil); len(ps) > 0 {
		t.Errorf("CheckDir: %v", ps)
	}
}

// TestBrokenFile checks that a file that stops parsing keeps its last good
// version advertised and leaves the other files alone.
func TestBrokenFile(t *testing.T) {
	dir := t.TempDir()
	a, bf := filepath.Join(dir, "a.json"), filepath.Join(dir, "b.json")
	writeFile(t, a, appJSON("a", 8001, ""))
	writeFile(t, bf, appJSON("b", 8002, ""))
	b, logs := newBackend(t, &config.Backend{ApplicationConfigDir: dir})
	adv := &fakeAdv{}
	run(t, b, adv)
	waitCall(t, adv, 0, "a:8001=up b:8002=up")
	s := &sentinel{dir: dir}

	steps := []struct {
		name    string
		content string // of b.json
		logs    [][]string
		want    string // the set when the next sentinel is advertised
	}{
		{
			name:    "syntax error keeps the last good version",
			content: `{"name": "b", "listen-port": 80,`,
			logs:    [][]string{{"application file: invalid", bf, "invalid JSON"}, {"last good version stays advertised", bf, "application=b"}},
			want:    "a:8001=up b:8002=up",
		},
		{
			name:    "invalid value keeps the last good version",
			content: appJSON("b", 0, ""),
			logs:    [][]string{{"application file: invalid", bf, "field=application-port", "0 is not a port"}},
			want:    "a:8001=up b:8002=up",
		},
		{
			name:    "unknown field keeps the last good version",
			content: appJSON("b", 8003, `, "colour": "red"`),
			logs:    [][]string{{"application file: invalid", bf, "field=colour", "unknown field"}},
			want:    "a:8001=up b:8002=up",
		},
		{
			name:    "fixed file advertises the new version",
			content: appJSON("b", 8004, ""),
			logs:    [][]string{{"fixed", bf}},
			want:    "a:8001=up b:8004=up",
		},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			from := adv.count()
			writeFile(t, bf, st.content)
			for _, l := range st.logs {
				logs.waitLog(t, l...)
			}
			i := s.mark(t, adv, from, st.want)
			for _, c := range adv.since(from)[:i-from] {
				if d := describe(c.apps); !strings.HasPrefix(d, st.want) {
					t.Errorf("intermediate advertisement %q, want %q", d, st.want)
				}
			}
		})
	}
	t.Run("file broken from the start is not advertised", func(t *testing.T) {
		from := adv.count()
		writeFile(t, filepath.Join(dir, "c.json"), `{"name": "c"}`)
		logs.waitLog(t, "not advertised until it is fixed", "c.json")
		s.mark(t, adv, from, "a:8001=up b:8004=up")
	})
	t.Run("removing a broken file removes its last good version", func(t *testing.T) {
		writeFile(t, bf, "{")
		logs.waitLog(t, "application file: invalid", bf, "line 1, column 2: invalid JSON")
		logs.waitLog(t, "last good version stays advertised", bf, "application=b")
		from := adv.count()
		if err := os.Remove(bf); err != nil {
			t.Fatal(err)
		}
		s.mark(t, adv, from, "a:8001=up")
	})
}

// TestBurstIsOneAdvertisement writes a file many times in a row, as a
// tool writing in pieces would, and expects one advertisement.
func TestBurstIsOneAdvertisement(t *testing.T) {
	dir := t.TempDir()
	b, _ := newBackend(t, &config.Backend{ApplicationConfigDir: dir})
	// A longer quiet period than the default keeps the test robust on a
	// slow machine; the mechanism is the same.
	b.debounce, b.maxDelay = 300*time.Millisecond, 5*time.Second
	adv := &fakeAdv{}
	run(t, b, adv)
	waitCall(t, adv, 0, "")
	from := adv.count()
	path := filepath.Join(dir, "web.json")
	for i := range 20 {
		writeFile(t, path, appJSON("web", 8000+i, ""))
	}
	waitCall(t, adv, from, "web:8019=up")
	s := &sentinel{dir: dir}
	i := s.mark(t, adv, from, "web:8019=up")
	if got := adv.since(from)[:i-from]; len(got) != 1 || describe(got[0].apps) != "web:8019=up" {
		t.Errorf("burst of 20 writes made %d advertisements, want one of web:8019; calls:\n%s", len(got), adv.dump())
	}
}

func TestDrain(t *testing.T) {
	dir := t.TempDir()
	srv := newHealthServer(t)
	writeFile(t, filepath.Join(dir, "checked.json"), appJSON("checked", srv.port, fastCheck(`"type": "http"`)))
	b, _ := newBackend(t, &config.Backend{ApplicationConfigDir: dir, Applications: []config.Application{staticApp("static", 7000)}})
	adv := &fakeAdv{}
	ctx := t.Context()
	if err := b.Drain(ctx); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Drain before Run = %v, want ErrNotRunning", err)
	}
	run(t, b, adv)
	waitCall(t, adv, 0, fmt.Sprintf("checked:%d=up static:7000=up", srv.port))

	from := adv.count()
	if err := b.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	// Drain returns once the draining set was handed over: no polling.
	want := fmt.Sprintf("checked:%d=draining static:7000=draining", srv.port)
	if got := adv.since(from); len(got) != 1 || describe(got[0].apps) != want {
		t.Fatalf("after Drain: calls\n%s\nwant exactly one more: %s", adv.dump(), want)
	}
	if got := describe(b.Applications()); got != want {
		t.Errorf("Applications() = %s, want %s", got, want)
	}
	if err := b.Drain(ctx); err != nil || adv.count() != from+1 {
		t.Errorf("second Drain: %v, %d calls; want nil and no new call", err, adv.count()-from)
	}

	// A health change or a new application while draining stays draining.
	srv.setMode(modeFail)
	writeFile(t, filepath.Join(dir, "late.json"), appJSON("late", 8000, ""))
	waitCall(t, adv, from, fmt.Sprintf("checked:%d=draining late:8000=draining static:7000=draining", srv.port))
	srv.setMode(modeOK)

	from = adv.count()
	if err := b.SetDraining(ctx, false); err != nil {
		t.Fatalf("SetDraining(false): %v", err)
	}
	waitCall(t, adv, from, fmt.Sprintf("checked:%d=up late:8000=up static:7000=up", srv.port))
}

// TestAdvertiseFailure checks that a refused advertisement leaves the
// previous one in force and is retried.
func TestAdvertiseFailure(t *testing.T) {
	dir := t.TempDir()
	b, logs := newBackend(t, &config.Backend{ApplicationConfigDir: dir, Applications: []config.Application{staticApp("base", 7000)}})
	adv := &fakeAdv{}
	run(t, b, adv)
	waitCall(t, adv, 0, "base:7000=up")

	adv.setFail(errTooLarge)
	attempts := adv.attemptCount()
	writeFile(t, filepath.Join(dir, "big.json"), appJSON("big", 8000, ""))
	waitUntil(t, "a refused attempt", func() bool { return adv.attemptCount() > attempts })
	logs.waitLog(t, "advertising applications failed", errTooLarge.Error())
	if got := describe(b.Applications()); got != "base:7000=up" {
		t.Errorf("Applications() after a refused advertisement = %s, want the previous base:7000=up", got)
	}
	// Retried on the next change, and with backoff meanwhile.
	attempts = adv.attemptCount()
	writeFile(t, filepath.Join(dir, "more.json"), appJSON("more", 8001, ""))
	waitUntil(t, "another refused attempt", func() bool { return adv.attemptCount() > attempts+1 })
	from := adv.count()
	adv.setFail(nil)
	waitCall(t, adv, from, "base:7000=up big:8000=up more:8001=up")
}

func TestReload(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(dir, "file.json"), appJSON("file", 8000, ""))
	writeFile(t, filepath.Join(other, "elsewhere.json"), appJSON("elsewhere", 8500, ""))
	sec := func(d string, apps ...config.Application) *config.Backend {
		return &config.Backend{ApplicationConfigDir: d, Applications: apps}
	}
	b, logs := newBackend(t, sec(dir, staticApp("a", 7000)))
	adv := &fakeAdv{}
	run(t, b, adv)
	waitCall(t, adv, 0, "a:7000=up file:8000=up")

	tests := []struct {
		name string
		sec  *config.Backend
		want string
		logs []string
	}{
		{"static application added", sec(dir, staticApp("a", 7000), staticApp("c", 7001)), "a:7000=up c:7001=up file:8000=up", nil},
		{"static name wins over a file", sec(dir, staticApp("a", 7000), staticApp("file", 7002)), "a:7000=up file:7002=up",
			[]string{"application file: ignored", "file.json", "field=name", "backend.applications[1] of the main configuration"}},
		{"name freed again", sec(dir, staticApp("a", 7000)), "a:7000=up file:8000=up", nil},
		{"other directory", sec(other, staticApp("a", 7000)), "a:7000=up elsewhere:8500=up", []string{"application directory changed"}},
		{"no directory", sec(""), "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			from := adv.count()
			if err := b.Reload(tt.sec); err != nil {
				t.Fatalf("Reload: %v", err)
			}
			waitCall(t, adv, from, tt.want)
			if tt.logs != nil {
				logs.waitLog(t, tt.logs...)
			}
		})
	}
	t.Run("invalid section is refused", func(t *testing.T) {
		bad := sec(dir, staticApp("a", 0))
		err := b.Reload(bad)
		var ps config.Problems
		if !errors.As(err, &ps) || !strings.Contains(err.Error(), "main.json: backend.applications[0].application-port") {
			t.Errorf("Reload(invalid) = %v, want Problems naming main.json and the path", err)
		}
	})
	t.Run("the old directory is no longer watched", func(t *testing.T) {
		if err := b.Reload(sec(other)); err != nil {
			t.Fatal(err)
		}
		s := &sentinel{dir: other}
		from := adv.count()
		s.mark(t, adv, from, "elsewhere:8500=up")
		writeFile(t, filepath.Join(dir, "file.json"), appJSON("file", 8001, ""))
		i := s.mark(t, adv, from, "elsewhere:8500=up")
		for _, c := range adv.since(from)[:i-from] {
			if strings.Contains(describe(c.apps), "file:") {
				t.Errorf("an application of the old directory was advertised: %s", describe(c.apps))
			}
		}
	})
}

// TestRunStops checks that Run ends every goroutine it started, and that
// the methods behave after it returned.
func TestRunStops(t *testing.T) {
	before := runtime.NumGoroutine()
	dir := t.TempDir()
	srv := newHealthServer(t)
	writeFile(t, filepath.Join(dir, "up.json"), appJSON("up", srv.port, fastCheck(`"type": "http"`)))
	dead := closedPort(t)
	writeFile(t, filepath.Join(dir, "down.json"), appJSON("down", dead, fastCheck(`"type": "tcp"`)))
	b, _ := newBackend(t, &config.Backend{ApplicationConfigDir: dir})
	adv := &fakeAdv{}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- b.Run(ctx, adv) }()
	waitCall(t, adv, 0, fmt.Sprintf("down:%d=down up:%d=up", dead, srv.port))
	if err := b.Run(ctx, adv); err == nil {
		t.Error("a second Run returned nil, want an error")
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Run did not return")
	}
	srv.Close()
	waitUntil(t, fmt.Sprintf("goroutines back to %d", before), func() bool { return runtime.NumGoroutine() <= before })
	if err := b.Drain(context.Background()); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Drain after Run = %v, want ErrNotRunning", err)
	}
	if err := b.Reload(&config.Backend{}); err != nil {
		t.Errorf("Reload after Run = %v", err)
	}
}

func TestNew(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "file.json"), appJSON("file", 8000, ""))
	writeFile(t, filepath.Join(dir, "checked.json"), appJSON("checked", 8001, `, "health-check": {}`))
	tests := []struct {
		name    string
		sec     *config.Backend
		want    string
		wantErr string
	}{
		{"nil section", nil, "", ""},
		{"static only", &config.Backend{Applications: []config.Application{staticApp("a", 7000)}}, "a:7000=up", ""},
		{"directory read at once, checked applications down until checked", &config.Backend{ApplicationConfigDir: dir},
			"checked:8001=down file:8000=up", ""},
		{"invalid section", &config.Backend{HealthCheckAddr: "localhost"}, "", `backend.health-check-addr: "localhost" is not an IP address`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := New(tt.sec, Options{Logger: slog.New(slog.DiscardHandler)})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := describe(b.Applications()); got != tt.want {
				t.Errorf("Applications() = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestSummary pins the log format of advertised sets.
func TestSummary(t *testing.T) {
	apps := []catalog.Application{{Name: "a", State: catalog.StateUp}, {Name: "b", State: catalog.StateDown}}
	if got := summary(apps); got != "a=up b=down" {
		t.Errorf("summary = %q", got)
	}
}

// TestAdvertiseRetryBackoff runs the loop on synctest's fake clock (static
// applications only: no directory to watch, no health checks, nothing
// outside the bubble): a refused advertisement is tried again on its own,
// the delay doubling from retryMin up to retryMax; a success ends the
// retries, and a change after it starts again from retryMin.
func TestAdvertiseRetryBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, logs := newBackend(t, &config.Backend{Applications: []config.Application{staticApp("base", 7000)}})
		// newBackend's retry bounds, which the expected times follow.
		if b.retryMin != 20*time.Millisecond || b.retryMax != 100*time.Millisecond {
			t.Fatalf("retry bounds %v..%v; the test expects 20ms..100ms", b.retryMin, b.retryMax)
		}
		ms := time.Millisecond
		adv := &fakeAdv{fail: errTooLarge}
		start := time.Now()
		run(t, b, adv)
		settle(350 * ms)
		want := []time.Duration{0, 20 * ms, 60 * ms, 140 * ms, 240 * ms, 340 * ms}
		if got := adv.triedAt(start); !slices.Equal(got, want) {
			t.Fatalf("attempts at %v, want %v", got, want)
		}
		logs.waitLog(t, "advertising applications failed", errTooLarge.Error())

		adv.setFail(nil)
		settle(100 * ms) // the next retry, at 440ms, succeeds
		if got := adv.count(); got != 1 {
			t.Fatalf("%d advertisements after the refusals ended, want 1", got)
		}
		if at := adv.since(0)[0].at.Sub(start); at != 440*ms {
			t.Errorf("advertised at %v, want at the retry at 440ms", at)
		}
		settle(time.Second)
		if n := len(adv.triedAt(start)); n != 7 {
			t.Errorf("%d attempts a second after a success, want 7: nothing to retry", n)
		}

		// Refused again on a change: the backoff starts from retryMin.
		adv.setFail(errTooLarge)
		changed := time.Now()
		if err := b.Reload(&config.Backend{Applications: []config.Application{staticApp("base", 7000), staticApp("more", 7001)}}); err != nil {
			t.Fatal(err)
		}
		settle(30 * ms)
		if got := adv.triedAt(changed)[7:]; !slices.Equal(got, []time.Duration{0, 20 * ms}) {
			t.Errorf("attempts after the change at %v, want [0s 20ms]", got)
		}
	})
}

// TestSpecialFilesAreSkipped puts a FIFO, a directory, a socket and a link
// to a FIFO with application files' names into the directory, before start
// and while running: none blocks the backend, each is logged once as
// skipped, and the real files beside them are advertised. A FIFO that
// replaces a good file withdraws its application.
func TestSpecialFilesAreSkipped(t *testing.T) {
	dir := t.TempDir()
	special := specialEntries(t, dir)
	writeFile(t, filepath.Join(dir, "web.json"), appJSON("web", 8080, ""))
	var (
		b    *Backend
		logs *logBuffer
	)
	withTimeout(t, "New", func() { b, logs = newBackend(t, &config.Backend{ApplicationConfigDir: dir}) })
	adv := &fakeAdv{}
	run(t, b, adv)
	waitCall(t, adv, 0, "web:8080=up")
	for name, kind := range special {
		logs.waitLog(t, "skipped: not a regular file", filepath.Join(dir, name), kind)
	}

	// While running: a new FIFO, then a good file replaced by a FIFO.
	from := adv.count()
	if err := syscall.Mkfifo(filepath.Join(dir, "late.json"), 0o644); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "api.json"), appJSON("api", 8081, ""))
	waitCall(t, adv, from, "api:8081=up web:8080=up")
	logs.waitLog(t, "skipped: not a regular file", filepath.Join(dir, "late.json"), "named pipe")

	from = adv.count()
	web := filepath.Join(dir, "web.json")
	if err := os.Remove(web); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(web, 0o644); err != nil {
		t.Fatal(err)
	}
	waitCall(t, adv, from, "api:8081=up")
	s := &sentinel{dir: dir}
	s.mark(t, adv, from, "api:8081=up")
	// Each special entry is logged once however often the directory is
	// read again.
	for name := range special {
		if n := strings.Count(logs.String(), "file="+filepath.Join(dir, name)+" "); n != 1 {
			t.Errorf("%s logged %d times, want once", name, n)
		}
	}
}

// TestBadFileAtStartup starts a backend whose directory holds a bad file
// beside a good one, in a real two-node gossip cluster on loopback: New
// does not fail, the bad file is reported with its file, field and
// reason, and the load balancer member sees the good application only.
func TestBadFileAtStartup(t *testing.T) {
	const lbIP, backendIP = "127.0.33.1", "127.0.33.2"
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	writeFile(t, filepath.Join(dir, "good.json"), appJSON("good", 8080, ""))
	writeFile(t, bad, appJSON("bad", 0, ""))
	b, logs := newBackend(t, &config.Backend{ApplicationConfigDir: dir})
	logs.waitLog(t, "application file: invalid", "file="+bad, "field=application-port", "0 is not a port")
	logs.waitLog(t, "not advertised until it is fixed", "file="+bad)
	if got := describe(b.Applications()); got != "good:8080=up" {
		t.Fatalf("Applications() = %q, want the good application only", got)
	}

	lbc := startMember(t, "lb-1", lbIP, catalog.RoleLB, nil)
	bc := startMember(t, "backend-1", backendIP, catalog.RoleBackend, b.Applications())
	run(t, b, bc)
	if _, err := bc.Join([]string{lbc.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	seen := func() string {
		var names []string
		for _, n := range lbc.Snapshot().Nodes {
			for _, a := range n.Applications {
				names = append(names, fmt.Sprintf("%s@%s=%s", a.Name, n.Name, a.State))
			}
		}
		return strings.Join(names, " ")
	}
	waitUntil(t, "the load balancer sees the good application", func() bool { return seen() == "good@backend-1=up" },
		func() string { return "it sees " + seen() })

	// Fixing the bad file advertises it too.
	writeFile(t, bad, appJSON("bad", 8081, ""))
	waitUntil(t, "the load balancer sees the fixed application", func() bool { return seen() == "bad@backend-1=up good@backend-1=up" },
		func() string { return "it sees " + seen() })
}
