// Package backend runs a backend node's side of the cluster: it keeps what
// the cluster believes about this node's applications true.
//
// A Backend merges the applications of the main configuration with those
// of an application directory it watches, checks the health of those that
// ask for it, and advertises the result through an Advertiser whenever the
// advertised set actually changes.
package backend

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/config"
)

// Advertiser publishes this node's applications to the cluster.
type Advertiser interface {
	// UpdateApplications validates apps and re-broadcasts them; on error
	// the previous advertisement stays. It may block for up to timeout.
	UpdateApplications(role catalog.Role, apps []catalog.Application, timeout time.Duration) error
}

// Options tune a Backend beyond its configuration section.
type Options struct {
	// ConfigFile is the main configuration file's path; problems with the
	// backend section name it.
	ConfigFile string
	// Timeout bounds each UpdateApplications call; 0 means DefaultTimeout.
	Timeout time.Duration
	// Logger receives the backend's logs; nil means slog.Default().
	Logger *slog.Logger
}

// Timing defaults.
const (
	// DefaultTimeout bounds an advertisement when Options.Timeout is 0.
	DefaultTimeout = 3 * time.Second
	// Debounce is how long the application directory must be quiet after
	// an event before it is read: a save made of several writes, or a
	// temporary file renamed into place, is then one change.
	Debounce = 100 * time.Millisecond
	// MaxDebounce caps how long a stream of events can postpone reading
	// the directory, which keeps changes advertised within a second.
	MaxDebounce = 500 * time.Millisecond
	// FirstCheckGrace is how long an advertisement waits for the first
	// result of a health check that has just started, so that a new
	// healthy application is advertised once, as up, rather than as down
	// and then up a moment later.
	FirstCheckGrace = 250 * time.Millisecond
)

// ErrNotRunning is returned by SetDraining and Drain when Run is not
// running.
var ErrNotRunning = errors.New("backend: not running")

// Backend keeps this node's advertised applications up to date. Its
// methods are safe for concurrent use.
//
// Run does the work: everything below "loop state" is owned by its
// goroutine (and by New before Run starts). Other methods hand their input
// over under mu and wake the loop.
type Backend struct {
	log        *slog.Logger
	timeout    time.Duration
	configFile string

	// Timings; tests shorten them.
	debounce, maxDelay, grace time.Duration
	poll, resync              time.Duration
	retryMin, retryMax        time.Duration

	wake      chan struct{} // capacity 1: wake-ups coalesce
	drainReqs chan drainReq
	done      chan struct{} // closed when Run returns

	mu      sync.Mutex
	started bool
	pending *config.Backend // from Reload, for the loop
	rescan  bool            // the directory needs reading
	current []catalog.Application

	// loop state
	wg        sync.WaitGroup // checkers
	watchStop context.CancelFunc
	watchDone chan struct{}
	checkAddr netip.Addr
	static    []config.Application
	dir       string
	files     map[string]*fileState
	sources   []source
	checkers  map[string]*checker
	conflicts map[string]bool
	draining  bool
	// advertised is the encoding of the last advertisement; nil before
	// the first.
	advertised []byte
}

type drainReq struct {
	on    bool
	reply chan error
}

// New returns a Backend for the configuration's backend section. It reads
// the application directory once, so that Applications returns the set to
// advertise when joining the cluster; applications with a health check are
// in it as down, since none has been checked yet. Nothing runs until Run.
func New(sec *config.Backend, opts Options) (*Backend, error) {
	if sec == nil {
		sec = &config.Backend{}
	}
	if ps := sec.Validate(opts.ConfigFile); len(ps) > 0 {
		return nil, fmt.Errorf("backend: %w", ps)
	}
	b := &Backend{
		log:        cmp.Or(opts.Logger, slog.Default()),
		timeout:    opts.Timeout,
		configFile: opts.ConfigFile,
		debounce:   Debounce,
		maxDelay:   MaxDebounce,
		grace:      FirstCheckGrace,
		poll:       time.Second,
		resync:     30 * time.Second,
		retryMin:   time.Second,
		retryMax:   30 * time.Second,
		wake:       make(chan struct{}, 1),
		drainReqs:  make(chan drainReq),
		done:       make(chan struct{}),
		files:      map[string]*fileState{},
		checkers:   map[string]*checker{},
		conflicts:  map[string]bool{},
	}
	if b.timeout <= 0 {
		b.timeout = DefaultTimeout
	}
	dir, err := b.setConfig(sec)
	if err != nil {
		return nil, err
	}
	b.dir = dir
	if b.dir != "" {
		if !isDir(b.dir) {
			b.log.Info("application directory does not exist yet: watching for it", "dir", b.dir)
		}
		scanDir(b.dir, b.files, b.log)
	}
	b.mergeSources()
	b.current, _ = b.desired()
	return b, nil
}

// setConfig takes the static applications and the check address from sec
// and returns its directory as an absolute path.
func (b *Backend) setConfig(sec *config.Backend) (dir string, err error) {
	b.static = slices.Clone(sec.Applications)
	b.checkAddr = netip.MustParseAddr("127.0.0.1")
	if sec.HealthCheckAddr != "" {
		b.checkAddr = netip.MustParseAddr(sec.HealthCheckAddr) // validated
	}
	if sec.ApplicationConfigDir == "" {
		return "", nil
	}
	dir, err = filepath.Abs(sec.ApplicationConfigDir)
	if err != nil {
		return "", fmt.Errorf("backend: application-config-dir: %w", err)
	}
	return dir, nil
}

// Applications returns what is advertised now: the last set the
// Advertiser accepted or, before the first, the set New computed.
func (b *Backend) Applications() []catalog.Application {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.current)
}

// Reload replaces the configuration's backend section, as read again from
// the main configuration file on SIGHUP, and re-reads the application
// directory. An invalid section changes nothing and the error lists every
// problem. A new application-config-dir is watched instead of the old
// one, whose applications are withdrawn. Reload does not wait for the new
// set to be advertised.
func (b *Backend) Reload(sec *config.Backend) error {
	if sec == nil {
		sec = &config.Backend{}
	}
	if ps := sec.Validate(b.configFile); len(ps) > 0 {
		return fmt.Errorf("backend: reload: %w", ps)
	}
	c := *sec
	c.Applications = slices.Clone(sec.Applications)
	b.mu.Lock()
	b.pending, b.rescan = &c, true
	b.mu.Unlock()
	b.poke()
	return nil
}

// Rescan re-reads the application directory, for a SIGHUP when the main
// configuration could not be read again. Changes are seen without it; it
// is a way to make sure.
func (b *Backend) Rescan() {
	b.mu.Lock()
	b.rescan = true
	b.mu.Unlock()
	b.poke()
}

// Drain advertises every application as draining, at once, for a graceful
// shutdown: load balancers stop sending new requests while the node is
// still serving the ones in flight. It returns when the Advertiser has
// taken the draining set, with its error if it failed (the loop then
// retries). Applications that appear later are advertised as draining too.
func (b *Backend) Drain(ctx context.Context) error { return b.SetDraining(ctx, true) }

// SetDraining turns draining on or off, as Drain does. It needs Run to be
// running and returns ErrNotRunning otherwise.
func (b *Backend) SetDraining(ctx context.Context, on bool) error {
	b.mu.Lock()
	started := b.started
	b.mu.Unlock()
	if !started {
		return ErrNotRunning
	}
	req := drainReq{on: on, reply: make(chan error, 1)}
	select {
	case b.drainReqs <- req:
	case <-b.done:
		return ErrNotRunning
	case <-ctx.Done():
		return fmt.Errorf("backend: set draining: %w", ctx.Err())
	}
	select {
	case err := <-req.reply:
		return err
	case <-ctx.Done():
		return fmt.Errorf("backend: set draining: %w", ctx.Err())
	}
}

// Run watches the application directory, runs the health checks and
// advertises through adv until ctx is done. The first advertisement is made
// at once (after FirstCheckGrace at most), whatever adv advertised before;
// after that adv is called only when the advertised set changes. A failed
// advertisement is logged and retried on the next change, and with backoff
// meanwhile; the previous one stays in force. Run returns nil when ctx is
// done, after every goroutine it started has ended; it may be called only
// once.
func (b *Backend) Run(ctx context.Context, adv Advertiser) error {
	b.mu.Lock()
	if b.started {
		b.mu.Unlock()
		return errors.New("backend: Run called twice")
	}
	b.started, b.rescan = true, true // files may have changed since New
	b.mu.Unlock()
	defer close(b.done)
	defer b.stopAll()
	b.startWatcher(ctx)

	var (
		graceC, retryC <-chan time.Time
		backoff        = b.retryMin
	)
	step := func(force bool) error {
		wait, err := b.step(ctx, adv, force)
		graceC = nil
		switch {
		case wait > 0:
			graceC = time.After(wait)
		case err != nil:
			b.log.Error("advertising applications failed: the previous advertisement stays; retrying on the next change",
				"err", err, "retry-in", backoff)
			retryC = time.After(backoff)
			backoff = min(2*backoff, b.retryMax)
		default:
			retryC, backoff = nil, b.retryMin
		}
		return err
	}
	step(false)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-b.wake:
		case <-graceC:
		case <-retryC:
		case r := <-b.drainReqs:
			if b.draining != r.on {
				b.log.Info("draining", "on", r.on)
			}
			b.draining = r.on
			r.reply <- step(true)
			continue
		}
		step(false)
	}
}

// poke wakes the loop; wake-ups coalesce.
func (b *Backend) poke() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// startWatcher watches b.dir, if any, until stopWatcher.
func (b *Backend) startWatcher(ctx context.Context) {
	if b.dir == "" {
		return
	}
	ctx, b.watchStop = context.WithCancel(ctx)
	b.watchDone = make(chan struct{})
	w := &watcher{dir: b.dir, log: b.log, notify: b.Rescan,
		debounce: b.debounce, maxDelay: b.maxDelay, poll: b.poll, resync: b.resync}
	w.start(ctx, b.watchDone)
}

func (b *Backend) stopWatcher() {
	if b.watchStop != nil {
		b.watchStop()
		<-b.watchDone
		b.watchStop, b.watchDone = nil, nil
	}
}

// stopAll ends every goroutine Run started.
func (b *Backend) stopAll() {
	b.stopWatcher()
	for name, c := range b.checkers {
		c.stop()
		delete(b.checkers, name)
	}
	b.wg.Wait()
}

// step applies new input, brings the checkers in line with the
// applications and advertises the result if it differs from the last
// advertisement. While a new health check has no result yet it advertises
// nothing and returns how long to wait for one, unless force is set.
func (b *Backend) step(ctx context.Context, adv Advertiser, force bool) (wait time.Duration, err error) {
	b.mu.Lock()
	pending, rescan := b.pending, b.rescan
	b.pending, b.rescan = nil, false
	b.mu.Unlock()
	if pending != nil {
		b.applyReload(ctx, pending)
	}
	if rescan && b.dir != "" {
		scanDir(b.dir, b.files, b.log)
	}
	b.mergeSources()
	b.syncCheckers(ctx)
	apps, deadline := b.desired()
	if !force && !deadline.IsZero() {
		if wait := time.Until(deadline); wait > 0 {
			return wait, nil
		}
	}
	return 0, b.advertise(adv, apps)
}

// applyReload takes a reloaded backend section.
func (b *Backend) applyReload(ctx context.Context, sec *config.Backend) {
	dir, err := b.setConfig(sec)
	if err != nil {
		b.log.Error("reload: keeping the application directory", "err", err)
		return
	}
	b.log.Info("reloaded the backend configuration", "static-applications", len(b.static))
	if dir == b.dir {
		return
	}
	b.log.Info("reload: application directory changed: withdrawing the old one's applications",
		"old", b.dir, "new", dir, "withdrawn", goodNames(b.files))
	b.stopWatcher()
	clear(b.files)
	b.dir = dir
	b.startWatcher(ctx)
}

// mergeSources merges the static and directory applications into
// b.sources and logs conflicts not logged before. It starts nothing, so New
// can call it before Run.
func (b *Backend) mergeSources() {
	good := map[string]*config.Application{}
	for name, st := range b.files {
		if st.good != nil {
			good[name] = st.good
		}
	}
	srcs, conflicts := merge(b.static, b.dir, good)
	b.sources = srcs
	seen := map[string]bool{}
	for _, p := range conflicts {
		key := p.String()
		seen[key] = true
		if !b.conflicts[key] {
			logProblem(b.log, "application file: ignored", p)
		}
	}
	b.conflicts = seen
}

// syncCheckers starts, restarts and stops health checkers to match
// b.sources. Only the Run loop calls it; the checkers live until ctx is
// done or stopAll.
func (b *Backend) syncCheckers(ctx context.Context) {
	want := map[string]bool{}
	for _, s := range b.sources {
		if s.app.HealthCheck == nil {
			continue
		}
		want[s.app.Name] = true
		p := newProbe(s.app, b.checkAddr)
		if c := b.checkers[s.app.Name]; c != nil {
			if c.probe.equal(p) {
				continue
			}
			c.stop()
		}
		b.checkers[s.app.Name] = startChecker(ctx, &b.wg, s.app.Name, p, b.log, b.poke)
	}
	for _, name := range slices.Sorted(maps.Keys(b.checkers)) {
		if !want[name] {
			b.checkers[name].stop()
			delete(b.checkers, name)
		}
	}
}

// desired returns the set to advertise: every merged application with its
// state. deadline is when the last health check still waiting for its
// first result stops being waited for; zero when none waits.
func (b *Backend) desired() (apps []catalog.Application, deadline time.Time) {
	apps = make([]catalog.Application, 0, len(b.sources))
	for _, s := range b.sources {
		a := s.app.Application
		a.State = catalog.StateUp
		if s.app.HealthCheck != nil {
			a.State = catalog.StateDown
			if c := b.checkers[a.Name]; c != nil {
				state, known, started := c.status()
				a.State = state
				if d := started.Add(b.grace); !known && d.After(deadline) {
					deadline = d
				}
			}
		}
		if b.draining {
			a.State = catalog.StateDraining
		}
		apps = append(apps, a)
	}
	return apps, deadline
}

// advertise hands apps to adv unless they encode exactly as the last
// advertisement.
func (b *Backend) advertise(adv Advertiser, apps []catalog.Application) error {
	enc := catalog.EncodeMeta(catalog.Meta{Role: catalog.RoleBackend, Applications: apps})
	if b.advertised != nil && bytes.Equal(enc, b.advertised) {
		return nil
	}
	if err := adv.UpdateApplications(catalog.RoleBackend, slices.Clone(apps), b.timeout); err != nil {
		return fmt.Errorf("backend: advertise %d applications (%d bytes): %w", len(apps), len(enc), err)
	}
	b.advertised = enc
	b.mu.Lock()
	b.current = apps
	b.mu.Unlock()
	b.log.Info("advertised applications", "applications", summary(apps))
	return nil
}

// summary lists applications as "name=state" for logs.
func summary(apps []catalog.Application) string {
	parts := make([]string, len(apps))
	for i, a := range apps {
		parts[i] = a.Name + "=" + string(a.State)
	}
	return strings.Join(parts, " ")
}
