// Package lb is the load balancer's control loop: it turns the live
// membership into proxy configuration with a generator and hands it to a
// proxy, coalescing bursts of changes into few reloads.
package lb

import (
	"bytes"
	"context"
	"crypto/sha256"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/generator"
)

// Membership is the live cluster view the load balancer consumes.
type Membership interface {
	// Snapshot returns the current membership without blocking; the
	// result is immutable.
	Snapshot() catalog.Snapshot
	// Changes receives a value after the membership changes; one receive
	// may stand for many changes.
	Changes() <-chan struct{}
}

// Proxy makes configuration live.
type Proxy interface {
	// Apply checks config and, only if the proxy accepts it, makes it the
	// running configuration (without a restart). On error the previous
	// configuration stays live. Apply may block for the proxy's check and
	// reload; the loop calls it from one goroutine.
	Apply(ctx context.Context, config []byte) error
}

// RuntimeProxy is a Proxy that can also change the server slots of its
// running configuration without a reload (see generator.Runtime), as
// HAProxy's runtime API can.
type RuntimeProxy interface {
	Proxy
	// Update makes config live without a reload, by setting the running
	// proxy's slots to rt.Slots (or handing it rt.Payload, for nginx's
	// lua balancer), and keeps config as the configuration a restart
	// starts from. The loop calls it only while the running
	// configuration has rt's skeleton: instead of Apply when a change
	// touches only slots, and after every Apply of a configuration with
	// slots, to re-assert them (a reload or restart may start from older
	// slot values). On error the loop falls back to Apply. Update may
	// block; the loop calls it from one goroutine, never concurrently
	// with Apply.
	Update(ctx context.Context, config []byte, rt *generator.Runtime) error
}

// Config wires a load balancer.
type Config struct {
	// Members is the membership source.
	Members Membership
	// Generator renders configuration text.
	Generator generator.Generator
	// Input carries the generator settings; its Snapshot is filled in on
	// every render.
	Input generator.Input
	// Proxy applies rendered configuration.
	Proxy Proxy
	// Timing coalesces bursts of changes.
	Timing Timing
	// Resync re-renders from the full membership this often even without
	// a change event; zero disables it.
	Resync time.Duration
	// RetainEmpty is how long an application whose backends are all gone
	// stays in the configuration (answering 503) before it is forgotten.
	RetainEmpty time.Duration
	// Checks tunes the load balancer's own active checks of every backend
	// instance it routes to; an instance that fails them is left out of
	// the configuration while the membership still lists it. The zero
	// value means DefaultCheckConfig.
	Checks CheckConfig
	// Guard tunes the mass-loss guard, which keeps most of an
	// application's backends in the configuration when they are lost at
	// once. The zero value means DefaultGuardConfig.
	Guard GuardConfig
	// ReloadLimit bounds the proxy's reloads per minute; changes beyond
	// it wait and are applied together. The zero value has no limit.
	ReloadLimit ReloadLimit
	// Admission is what members may advertise (see Policy); ownership
	// of application names, domains and listen ports is always kept.
	// The zero value allows every listen port and member.
	Admission Policy
	// Certs, if set, supplies certificates that change at run time (see
	// CertSource); nil means only Input.TLS.
	Certs CertSource
	// OnApplied, if set, is called after the proxy runs a configuration
	// rendered from snap (applied now, or unchanged because the text was
	// identical); the cluster uses it to acknowledge draining backends.
	// snap is the membership as rendered: instances failing the load
	// balancer's checks are marked down and guarded ones are added back;
	// draining backends are exactly those of the membership. It is called
	// from the loop's goroutine and must not block.
	OnApplied func(snap catalog.Snapshot)
	// OnOutcome, if set, is called with the outcome of every pass (see
	// History), from the loop's goroutine; it must not block.
	OnOutcome func(Outcome)
	// Logger receives one line per applied or rejected configuration.
	Logger *slog.Logger
}

// updateQuiet is the quiet period after a pass that changed the proxy
// without a reload (RuntimeProxy.Update): such passes are cheap, so only a
// burst within a few milliseconds is coalesced.
const updateQuiet = 20 * time.Millisecond

// Retry timing of a configuration the proxy refused: a check that fails
// fails again, but a reload can fail for a passing reason.
const (
	minBackoff = time.Second
	maxBackoff = 30 * time.Second
)

// Stats counts what the loop did.
type Stats struct {
	// Renders is how many times the generator ran.
	Renders int
	// Applies is how many changed configurations the proxy accepted
	// through Apply: checks and reloads.
	Applies int
	// Updates is how many changed configurations a RuntimeProxy took
	// without a reload.
	Updates int
	// UpdateFailures is how many of those updates failed and fell back
	// to Apply.
	UpdateFailures int
	// Rejected is how many changed configurations the proxy refused.
	Rejected int
	// LastError is the last rejection, or nil after a success.
	LastError error
	// Guarded is how many lost backend instances the mass-loss guard keeps
	// in the configuration now.
	Guarded int
	// GuardEvents is how many mass losses the guard has caught, one per
	// application.
	GuardEvents int
	// CheckDown is how many instances the membership says serve but the
	// last render left out because they fail the load balancer's checks.
	CheckDown int
	// Refused is how many instances the last render refused (see
	// Refusals): routed nowhere.
	Refused int
	// RefusalEvents counts refusals as they began: one per instance
	// and reason that was not refused so in the render before.
	RefusalEvents int
	// Quarantined is how many instances are quarantined now: the proxy
	// refused a configuration with them (see Refusals).
	Quarantined int
	// QuarantineEvents counts instances as they were quarantined.
	QuarantineEvents int
	// Trials is how many configurations were tried (checked or applied)
	// to narrow refused ones down.
	Trials int
	// ReloadsDelayed is how many reloads the reload limit delayed.
	ReloadsDelayed int
	// CertUpdates is how many times new certificate contents were made
	// live without a reload (CertProxy); CertUpdateFailures how many of
	// those attempts failed and fell back to a reload; CertReloads how
	// many reloads of unchanged text were made for new certificate
	// contents.
	CertUpdates, CertUpdateFailures, CertReloads int
}

// LB is a load balancer control loop.
type LB struct {
	cfg Config
	log *slog.Logger

	applied  []byte             // the configuration the proxy runs
	runtime  *generator.Runtime // its slots, nil without
	rejected [32]byte           // hash of the last refused configuration
	// backoff is how long after a refused configuration the loop tries
	// it again (doubling, at most maxBackoff); zero after a success.
	backoff time.Duration
	// retryRefused lets the next apply hand the proxy the configuration
	// it refused last, when backoff has passed.
	retryRefused bool
	warnings     []string // warnings of the last render, to log only changes
	known        map[string]seenApp
	checks       *checks    // nil when checks are disabled or Run is not running
	guard        guardState // the mass-loss guard's memory
	owners       Owners     // who holds each application, from the last render

	// good is every instance of the last configuration the proxy
	// accepted, by fingerprint: what a refused one is narrowed against.
	good map[instKey]string
	// quarantine holds the instances a refused configuration was narrowed
	// down to; retryQuarantine (Resync) ends every quarantine.
	quarantine      map[instKey]quarantined
	retryQuarantine bool
	reloads         []time.Time // when the last reloads started, for ReloadLimit
	limitedAt       time.Time   // when the limit last delayed a reload
	// notBefore is when the reload limit lets the pending changes be
	// applied; zero when it does not delay them.
	notBefore time.Time
	// certsPending: Certs reported a change that no reload or
	// UpdateCerts has made live yet.
	certsPending bool

	refusals []Refusal // the last render's, guarded by mu
	history  []Outcome // passes that changed something, guarded by mu
	last     Outcome   // the newest pass, guarded by mu
	view     View      // the last render's (view.go), guarded by mu

	mu    sync.Mutex
	stats Stats

	kick chan struct{} // Resync requests
}

// seenApp is an application as last seen with backends.
type seenApp struct {
	app  catalog.Application
	last time.Time
}

// New returns a load balancer; Run starts it.
func New(cfg Config) *LB {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &LB{cfg: cfg, log: cfg.Logger, known: map[string]seenApp{}, quarantine: map[instKey]quarantined{},
		kick: make(chan struct{}, 1)}
}

// Stats returns a copy of the counters. Safe for concurrent use.
func (l *LB) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

// Refusals returns the instances the last render refused, with the
// reasons, sorted by application and node. Safe for concurrent use; the
// result is the caller's.
func (l *LB) Refusals() []Refusal {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.refusals)
}

// Resync asks the loop to render from the full membership again, as after
// a change, and to retry the quarantined instances (SIGHUP does this). It
// never blocks.
func (l *LB) Resync() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// Run renders and applies the configuration at once, then again after
// every membership change, as Timing schedules, and every Resync. It
// returns when ctx is done; an apply in progress is finished first (the
// proxy is not left half-configured).
//
// While it runs it checks every backend instance it routes to (see
// CheckConfig) in goroutines of its own, and a check that changes an
// instance's state counts as a change; so does the end of a guard's grace
// period (see GuardConfig). Every check goroutine has returned when Run
// returns.
func (l *LB) Run(ctx context.Context) {
	var (
		lastDone     time.Time
		first, last  time.Time // pending changes, zero when none
		timer        = time.NewTimer(0)
		resync       <-chan time.Time
		resyncTicker *time.Ticker
		checkChanged <-chan struct{}
		certChanges  <-chan struct{}
		expiry       = time.NewTimer(time.Hour) // the next guard's end
		retry        = time.NewTimer(time.Hour) // the next try of a failed apply
		quiet        = l.cfg.Timing.Quiet       // after the last pass that worked
	)
	expiry.Stop()
	defer expiry.Stop()
	retry.Stop()
	defer retry.Stop()
	if !l.cfg.Checks.Disabled {
		l.checks = newChecks(ctx, l.cfg.Checks, l.log)
		checkChanged = l.checks.changed
		defer func() {
			l.checks.close()
			l.checks = nil
		}()
	}
	if l.cfg.Resync > 0 {
		resyncTicker = time.NewTicker(l.cfg.Resync)
		defer resyncTicker.Stop()
		resync = resyncTicker.C
	}
	if l.cfg.Certs != nil {
		certChanges = l.cfg.Certs.Changes()
	}
	defer timer.Stop()
	// The first render happens at once (timer is at 0); last is set by
	// the first change that comes before it.
	pending := true
	first = time.Now()
	initial := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.cfg.Members.Changes():
		case <-resync:
		case <-l.kick:
			l.retryQuarantine = true
		case <-checkChanged:
		case <-certChanges:
			// New contents of a file the proxy may already have loaded:
			// even an unchanged text must be made live again.
			l.certsPending = true
		case <-expiry.C:
		case <-retry.C:
			// A reload can fail for a passing reason (a slow machine, a
			// port briefly taken), and the membership may not change
			// again for long: try the same text again.
			l.retryRefused = true
		case <-timer.C:
			if !pending {
				continue
			}
			pending = false
			changed := first
			if initial {
				changed, initial = time.Time{}, false // no change started the first pass
			}
			first, last = time.Time{}, time.Time{}
			// Only work for the proxy makes the load balancer busy: a
			// render that changed nothing (a member joined, its
			// applications not fetched yet) must not delay the change
			// that follows it by a quiet period.
			refused := l.Stats().Rejected
			l.notBefore = time.Time{}
			if l.apply(context.WithoutCancel(ctx), ctx.Done(), changed) {
				lastDone = time.Now()
				// An update without a reload costs the proxy a few
				// milliseconds: the next change waits only updateQuiet,
				// so joins a second apart are each served at once.
				quiet = l.cfg.Timing.Quiet
				l.mu.Lock()
				if l.last.Result == ResultUpdated {
					quiet = min(quiet, updateQuiet)
				}
				l.mu.Unlock()
			}
			if !l.notBefore.IsZero() {
				// The reload limit delays this pass: the changes stay
				// pending, and those that come meanwhile join them.
				pending, first, last = true, changed, time.Now()
				if first.IsZero() {
					first = last
				}
				timer.Reset(time.Until(l.notBefore))
			}
			switch {
			case l.backoff == 0:
				retry.Stop()
			case l.Stats().Rejected != refused:
				// Refused now: retry after the backoff. A render that
				// changed nothing leaves a pending retry as it is.
				retry.Reset(l.backoff)
			}
			if at, ok := l.guard.nextExpiry(); ok {
				expiry.Reset(time.Until(at))
			} else {
				expiry.Stop()
			}
			continue
		}
		now := time.Now()
		if !pending {
			pending, first = true, now
		}
		last = now
		timing := l.cfg.Timing
		timing.Quiet = quiet
		next := timing.Next(lastDone, first, last)
		if next.Before(l.notBefore) {
			next = l.notBefore
		}
		timer.Reset(time.Until(next))
	}
}

// remember notes the applications of snap, a configuration the proxy
// accepted, as seen with backends at now: only those are retained.
func (l *LB) remember(snap catalog.Snapshot, now time.Time) {
	services, _ := snap.Services()
	for _, s := range services {
		l.known[s.Name] = seenApp{app: s.Application, last: now}
	}
}

// retained returns the applications that have no backends in snap but
// had some, within RetainEmpty, in a configuration the proxy accepted
// (see remember), sorted by name; it forgets those seen longer ago. An
// application the proxy only ever refused (quarantined, say) is not
// retained: its listener never worked.
func (l *LB) retained(snap catalog.Snapshot, now time.Time) []catalog.Application {
	services, _ := snap.Services()
	live := map[string]bool{}
	for _, s := range services {
		live[s.Name] = true
	}
	var out []catalog.Application
	for name, seen := range l.known {
		switch {
		case live[name]:
		case now.Sub(seen.last) > l.cfg.RetainEmpty:
			delete(l.known, name)
			l.log.Info("forgetting application without backends", "application", name, "empty-for", now.Sub(seen.last).Round(time.Second))
		default:
			out = append(out, seen.app)
		}
	}
	slices.SortFunc(out, func(a, b catalog.Application) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// apply renders the current membership and, if the text changed, hands it
// to the proxy. It reports whether the proxy was asked to do anything.
// changed is when the first change it answers was seen, zero if none.
// done is the loop's end, which stops a wait for the reload limit.
func (l *LB) apply(ctx context.Context, done <-chan struct{}, changed time.Time) (worked bool) {
	in := l.cfg.Input
	members := l.cfg.Members.Snapshot()
	start := time.Now()
	o := Outcome{At: start}
	defer func() {
		if !changed.IsZero() && o.Result != ResultDeferred && o.Result != ResultLimited {
			o.Latency = time.Since(changed)
		}
		l.record(o)
	}()
	// Health first: the last results of instances that just vanished
	// tell the guard whether their hosts were still reachable.
	var checked map[instKey]health
	if l.checks != nil {
		checked = l.checks.health()
	}
	res := l.cfg.Guard.step(l.guard, members, checked, start)
	l.guard = res.state
	if l.checks != nil {
		// Refused instances are not checked: the load balancer does not
		// connect to what it will not route to (its own address, say).
		l.checks.sync(l.withoutRefused(members), res.kept)
	}
	started := l.logGuard(res.events)
	adm := l.cfg.Admission.admit(l.owners, res.snap)
	l.owners = adm.owners
	if q, set := l.quarantineStep(adm.snap); len(set) > 0 {
		adm.snap = without(adm.snap, set, false)
		adm.ack = without(adm.ack, set, true)
		adm.refusals = append(adm.refusals, q...)
		sortRefusals(adm.refusals)
	}
	// The guard keeps only what was routed: never a refused instance.
	l.guard.routed = routedIn(adm.snap)
	newRefusals := l.logRefusals(adm.refusals)
	in.Snapshot = adm.snap
	retained, dropped := l.owners.retainable(l.retained(in.Snapshot, start))
	for _, name := range dropped {
		delete(l.known, name)
		l.log.Warn("forgetting application without backends: another application holds its name, domains or listen port now", "application", name)
	}
	in.Retained = retained
	in.Previous = l.runtime
	var certs []generator.TLSCert
	if l.cfg.Certs != nil {
		var route *generator.ACMERoute
		certs, route = l.cfg.Certs.Certs()
		in.TLS = append(slices.Clip(in.TLS), certs...)
		in.ACME = route
	}
	out, err := l.cfg.Generator.Render(in)
	l.mu.Lock()
	l.stats.Renders++
	l.stats.Guarded = len(res.state.guarded())
	l.stats.GuardEvents += started
	l.stats.CheckDown = res.checkDown
	l.stats.Refused = len(adm.refusals)
	l.stats.RefusalEvents += newRefusals
	l.stats.Quarantined = len(l.quarantine)
	l.refusals = adm.refusals
	l.view = newView(start, members, res, adm.snap)
	l.mu.Unlock()
	o.Render = time.Since(start)
	if err != nil {
		o.Result, o.Error = ResultRenderFailed, err.Error()
		l.log.Error("render failed; the running configuration stays", "err", err)
		return
	}
	services, _ := in.Snapshot.Services()
	o.Bytes, o.Applications, o.Backends = len(out.Config), len(services), in.Snapshot.Backends()
	if !slices.Equal(out.Warnings, l.warnings) {
		for _, w := range out.Warnings {
			l.log.Warn("left out of the configuration", "reason", w)
		}
		l.warnings = out.Warnings
	}
	if bytes.Equal(out.Config, l.applied) {
		o.Result = ResultUnchanged
		l.backoff = 0 // nothing refused is pending
		if l.certsPending && l.applied != nil {
			worked = l.liveCerts(ctx, certs, &o)
		}
		l.accepted(in.Snapshot, start)
		l.notifyApplied(adm.ack)
		return worked
	}
	sum := sha256.Sum256(out.Config)
	retrying := l.retryRefused
	l.retryRefused = false
	if sum == l.rejected && !retrying {
		o.Result = ResultDeferred
		return // already refused, and nothing changed since: not before the backoff
	}
	rp, slotted := l.cfg.Proxy.(RuntimeProxy)
	slotted = slotted && out.Runtime != nil
	if slotted && l.runtime != nil && out.Runtime.Skeleton == l.runtime.Skeleton {
		began := time.Now()
		err := rp.Update(ctx, out.Config, out.Runtime)
		o.Proxy = time.Since(began)
		if err == nil {
			o.Result = ResultUpdated
			l.applied, l.runtime = out.Config, out.Runtime
			l.rejected, l.backoff = [32]byte{}, 0
			l.mu.Lock()
			l.stats.Updates++
			l.stats.LastError = nil
			l.mu.Unlock()
			l.log.Info("configuration updated without a reload", "backends", in.Snapshot.Backends(), "applications", len(services),
				"check-down", res.checkDown, "guarded", len(res.state.guarded()), "took", time.Since(start).Round(time.Microsecond))
			if l.certsPending {
				l.liveCerts(ctx, certs, &o)
			}
			l.accepted(in.Snapshot, start)
			l.notifyApplied(adm.ack)
			return true
		}
		l.mu.Lock()
		l.stats.UpdateFailures++
		l.mu.Unlock()
		l.log.Warn("updating the running proxy failed; reloading instead", "err", err)
	}
	if l.limited(&o) {
		return false
	}
	// The proxy's own check first, when it has one: a refused
	// configuration is then narrowed down by checks, not reloads.
	checkRefused := false
	if ck, ok := l.cfg.Proxy.(Checker); ok {
		began := time.Now()
		err = ck.Check(ctx, out.Config)
		o.Check = time.Since(began)
		checkRefused = err != nil
	}
	if err == nil {
		err = l.reload(ctx, done, out, &o)
	}
	if err == nil {
		o.Result = ResultApplied
		l.rejected, l.backoff = [32]byte{}, 0
		l.mu.Lock()
		l.stats.LastError = nil
		l.mu.Unlock()
		l.log.Info("configuration applied", "backends", in.Snapshot.Backends(), "applications", len(services),
			"check-down", res.checkDown, "guarded", len(res.state.guarded()),
			"bytes", len(out.Config), "took", time.Since(start).Round(time.Microsecond))
		l.accepted(in.Snapshot, start)
		l.notifyApplied(adm.ack)
		return true
	}
	full := err
	o.Error = full.Error()
	good, bad, ok := l.narrow(ctx, done, in, full, checkRefused, &o)
	l.mu.Lock()
	l.stats.Trials += o.Trials
	l.mu.Unlock()
	if !ok {
		o.Result = ResultRejected
		l.rejected = sum
		l.mu.Lock()
		l.stats.Rejected++
		l.stats.LastError = full
		l.mu.Unlock()
		l.backoff = min(max(2*l.backoff, minBackoff), maxBackoff)
		l.log.Error("configuration rejected; the running configuration stays", "err", full, "retry-in", l.backoff, "trials", o.Trials)
		return true
	}
	o.Result, o.Quarantined = ResultQuarantined, len(bad)
	o.Bytes = len(good.Config)
	drop := make(map[instKey]bool, len(bad))
	for k := range bad {
		drop[k] = true
	}
	snap := without(in.Snapshot, drop, false)
	services, _ = snap.Services()
	o.Applications, o.Backends = len(services), snap.Backends()
	l.quarantineFound(in.Snapshot, bad)
	l.rejected, l.backoff = [32]byte{}, 0
	l.mu.Lock()
	l.stats.Rejected++
	l.stats.LastError = nil
	l.mu.Unlock()
	l.log.Warn("configuration refused; applied it without the instances that cause it, which are quarantined until their advertisement changes",
		"err", full, "quarantined", len(bad), "trials", o.Trials, "backends", snap.Backends(), "applications", len(services),
		"bytes", len(good.Config), "took", time.Since(start).Round(time.Microsecond))
	l.accepted(snap, start)
	l.notifyApplied(without(adm.ack, drop, true))
	return true
}

// accepted notes snap as rendered into the configuration the proxy runs:
// its instances are the base a refused configuration is narrowed against,
// and its applications may be retained.
func (l *LB) accepted(snap catalog.Snapshot, now time.Time) {
	l.good = fingerprints(snap)
	l.remember(snap, now)
}

// notifyApplied reports that the proxy runs a configuration rendered from snap.
func (l *LB) notifyApplied(snap catalog.Snapshot) {
	if l.cfg.OnApplied != nil {
		l.cfg.OnApplied(snap)
	}
}

// withoutRefused returns snap without the instances the last render
// refused. An instance refused no longer is checked from the next render
// on; until then its checks count as passing.
func (l *LB) withoutRefused(snap catalog.Snapshot) catalog.Snapshot {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.refusals) == 0 {
		return snap
	}
	refused := make(map[instKey]bool, len(l.refusals))
	for _, r := range l.refusals {
		refused[instKey{r.Node, r.Application}] = true
	}
	return without(snap, refused, false)
}

// maxRefusalLines bounds the refusal lines one render logs, so that a
// member advertising thousands of applications floods no log; Refusals
// has them all.
const maxRefusalLines = 20

// logRefusals logs the refusals that began since the last render (Warn)
// and those that ended (Info), and returns how many began.
func (l *LB) logRefusals(now []Refusal) (began int) {
	l.mu.Lock()
	before := l.refusals
	l.mu.Unlock()
	was := make(map[Refusal]bool, len(before))
	for _, r := range before {
		was[r] = true
	}
	is := make(map[Refusal]bool, len(now))
	for _, r := range now {
		is[r] = true
		if was[r] {
			continue
		}
		began++
		if began <= maxRefusalLines {
			l.log.Warn("refused: not routed", "application", r.Application, "node", r.Node, "reason", r.Reason)
		}
	}
	if began > maxRefusalLines {
		l.log.Warn("refused: more instances not routed", "more", began-maxRefusalLines, "refused", len(now))
	}
	ended := 0
	for _, r := range before {
		if is[r] {
			continue
		}
		ended++
		if ended <= maxRefusalLines {
			l.log.Info("no longer refused", "application", r.Application, "node", r.Node, "reason", r.Reason)
		}
	}
	if ended > maxRefusalLines {
		l.log.Info("more instances no longer refused", "more", ended-maxRefusalLines)
	}
	return began
}

// logGuard logs the guard's events, one line per event and application,
// and returns how many mass losses started.
func (l *LB) logGuard(events []guardEvent) (started int) {
	for _, e := range events {
		switch e.kind {
		case guardStarted:
			started++
			l.log.Warn("mass loss: most backends of an application were lost at once, which is more often this load balancer's network than the backends; keeping the lost ones behind the proxy's passive checks",
				"application", e.app, "lost", e.lost, "of", e.of, "kept", e.nodes, "until", e.until.Format(time.RFC3339))
		case guardGrew:
			l.log.Warn("mass loss: more backends lost; keeping them too",
				"application", e.app, "lost", e.lost, "of", e.of, "kept", e.nodes, "until", e.until.Format(time.RFC3339))
		case guardRenewed:
			l.log.Warn("mass loss: grace period over, but the lost backends still pass the load balancer's checks (gossip, not the backends, seems cut off); keeping them",
				"application", e.app, "nodes", e.nodes, "until", e.until.Format(time.RFC3339))
		case guardExpired:
			l.log.Warn("mass loss: grace period over; removing the backends that did not come back",
				"application", e.app, "removed", e.nodes)
		case guardEnded:
			var msg string
			switch e.status {
			case statusRoutable:
				msg = "mass loss: guarded backends are back"
			case statusRefused:
				msg = "mass loss: guarded backends refused the load balancer's checks: removing them"
			default:
				msg = "mass loss: guarded backends were withdrawn by their backends (draining, down or removed)"
			}
			l.log.Info(msg, "application", e.app, "nodes", e.nodes)
		}
	}
	return started
}
