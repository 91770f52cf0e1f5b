package lb

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/generator"
)

// Checker is a Proxy that can test a configuration without applying it,
// cheaply (nginx -t, haproxy -c). The loop checks before it applies, and
// narrows a refused configuration down with checks rather than reloads.
type Checker interface {
	// Check returns the proxy's error if it would refuse config, nil if
	// it would accept it; it never changes what runs. It may block for
	// the proxy's check. The loop calls it from its goroutine, never
	// concurrently with Apply; an Apply of the same bytes right after a
	// passing Check may skip its own check.
	Check(ctx context.Context, config []byte) error
}

// Quarantine. When the proxy refuses a configuration, the loop narrows it
// down to the application instances that cause it and applies everything
// else: the instances that are new or changed since the last configuration
// the proxy accepted are the candidates, the rest is the base, which ran
// before and is in every trial. A trial renders the base with a subset of
// the candidates; halving finds the candidates no trial can have. They are
// quarantined: refused (see Refusals) while their advertisement stays the
// same, retried when it changes, when they are withdrawn or their node
// leaves, and on Resync.

// maxTrials bounds the trials of one narrowing; the candidates still
// undecided when it runs out are all quarantined.
const maxTrials = 64

// QuarantineReason starts the Reason of every quarantined instance's
// Refusal; the proxy's first error line follows it.
const QuarantineReason = "quarantined: the proxy refused its configuration: "

// maxReasonError bounds the proxy error a quarantine reason quotes.
const maxReasonError = 300

// errStopped ends a narrowing that waited for the reload limit when the
// loop was stopped.
var errStopped = errors.New("lb: stopped")

// quarantined is one quarantined instance.
type quarantined struct {
	fp     string // its advertisement when quarantined
	reason string
}

// fingerprint is an instance's advertisement, what the generator renders
// from it, without its state: a backend that drains or fails its health
// check advertises the same application.
func fingerprint(n catalog.Node, a catalog.Application) string {
	a.State = ""
	return fmt.Sprintf("%s %#v", n.Addr, a)
}

// fingerprints returns the fingerprint of every backend instance of snap.
func fingerprints(snap catalog.Snapshot) map[instKey]string {
	out := map[instKey]string{}
	for _, n := range snap.Nodes {
		if n.Role != catalog.RoleBackend {
			continue
		}
		for _, a := range n.Applications {
			out[instKey{n.Name, a.Name}] = fingerprint(n, a)
		}
	}
	return out
}

// firstLine returns the first line of a proxy error, bounded, for a
// quarantine reason. Errors from proxy commands carry their output's
// lines joined by " | ".
func firstLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if i := strings.Index(s, " | "); i >= 0 {
		s = s[:i]
	}
	if len(s) > maxReasonError {
		s = strings.ToValidUTF8(s[:maxReasonError], "") + "…"
	}
	return s
}

// quarantineStep ends the quarantine of instances that are gone from snap
// (the admitted snapshot) or advertise something else now, and returns the
// refusals and keys of those that stay quarantined. Resync ends them all.
func (l *LB) quarantineStep(snap catalog.Snapshot) ([]Refusal, map[instKey]bool) {
	if l.retryQuarantine {
		l.retryQuarantine = false
		if len(l.quarantine) > 0 {
			l.log.Info("resync: retrying quarantined instances", "quarantined", len(l.quarantine))
		}
		clear(l.quarantine)
	}
	if len(l.quarantine) == 0 {
		return nil, nil
	}
	now := fingerprints(snap)
	var refusals []Refusal
	set := map[instKey]bool{}
	for k, q := range l.quarantine {
		if now[k] != q.fp {
			delete(l.quarantine, k) // withdrawn, gone or changed: try it again
			continue
		}
		set[k] = true
		refusals = append(refusals, Refusal{Application: k.app, Node: k.node, Reason: q.reason})
	}
	return refusals, set
}

// sortRefusals sorts by application, node and reason, as admit does.
func sortRefusals(r []Refusal) {
	slices.SortFunc(r, func(a, b Refusal) int {
		return cmp.Or(cmp.Compare(a.Application, b.Application), cmp.Compare(a.Node, b.Node), cmp.Compare(a.Reason, b.Reason))
	})
}

// candidates returns the instances of snap that are new or changed since
// the last configuration the proxy accepted, sorted.
func (l *LB) candidates(snap catalog.Snapshot) []instKey {
	var out []instKey
	for k, fp := range fingerprints(snap) {
		if l.good[k] != fp {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, func(a, b instKey) int { return cmp.Or(cmp.Compare(a.node, b.node), cmp.Compare(a.app, b.app)) })
	return out
}

// narrowing is one search for the candidates a refused configuration
// cannot have.
type narrowing struct {
	l     *LB
	ctx   context.Context
	done  <-chan struct{} // the loop's end: stop waiting for the reload limit
	in    generator.Input // the refused render's input
	cands []instKey
	check Checker // nil: trials by Apply
	o     *Outcome

	trials  int
	bad     map[instKey]string // the proxy's first error line for each
	kept    []instKey          // candidates found good
	pass    *generator.Output  // the last trial that passed: the base and kept
	stopped bool
}

// trial renders the base with the candidates keep and has the proxy check
// it, or apply it (a trial that passes is then live).
func (b *narrowing) trial(keep []instKey) error {
	drop := make(map[instKey]bool, len(b.cands))
	for _, k := range b.cands {
		drop[k] = true
	}
	for _, k := range keep {
		delete(drop, k)
	}
	in := b.in
	in.Snapshot = without(in.Snapshot, drop, false)
	b.trials++
	out, err := b.l.cfg.Generator.Render(in)
	if err != nil {
		return fmt.Errorf("render: %w", err)
	}
	if b.check != nil {
		began := time.Now()
		err = b.check.Check(b.ctx, out.Config)
		b.o.Check += time.Since(began)
	} else if len(keep) == 0 || !bytes.Equal(out.Config, b.l.applied) {
		// The base is applied even when it runs already: a proxy that
		// refuses every configuration refuses it too, and then nothing
		// can be narrowed down.
		err = b.l.reload(b.ctx, b.done, out, b.o)
	}
	if errors.Is(err, errStopped) {
		b.stopped = true
	}
	if err == nil {
		b.pass = &out
	}
	return err
}

// run narrows down the candidates, of which all together fail with err.
// It reports false when nothing can be narrowed down (the base alone
// fails too) or the loop stopped.
func (b *narrowing) run(err error) bool {
	b.bad = map[instKey]string{}
	if b.trial(nil) != nil {
		return false
	}
	b.find(b.cands, err)
	return !b.stopped
}

// find puts the candidates of c that fail into bad and the others into
// kept; the base with kept and c fails with err.
func (b *narrowing) find(c []instKey, err error) {
	if b.stopped {
		return
	}
	if len(c) == 1 || b.trials >= maxTrials {
		for _, k := range c {
			b.bad[k] = firstLine(err)
		}
		return
	}
	half, rest := c[:len(c)/2], c[len(c)/2:]
	e := b.trial(append(slices.Clone(b.kept), half...))
	switch {
	case b.stopped:
		return
	case e == nil:
		// The base with kept and rest is what failed: no trial needed.
		b.kept = append(b.kept, half...)
		b.find(rest, err)
		return
	}
	b.find(half, e)
	if b.stopped {
		return
	}
	if b.trials >= maxTrials {
		b.find(rest, err) // out of trials: all of rest is quarantined
		return
	}
	e = b.trial(append(slices.Clone(b.kept), rest...))
	switch {
	case b.stopped:
	case e == nil:
		b.kept = append(b.kept, rest...)
	default:
		b.find(rest, e)
	}
}

// narrow finds the instances that make the proxy refuse the configuration
// rendered from in (with err) and applies everything else. With checked,
// the proxy's check refused it, and trials are checks until the rest
// passes the check; a rest that then fails to apply, like a configuration
// that passed the check and failed to apply, is narrowed down by Apply
// itself. It returns what was applied and the quarantined instances with
// the proxy's error, or ok false when nothing could be narrowed down (the
// caller rejects the configuration as a whole).
func (l *LB) narrow(ctx context.Context, done <-chan struct{}, in generator.Input, err error, checked bool, o *Outcome) (out generator.Output, bad map[instKey]string, ok bool) {
	cands := l.candidates(in.Snapshot)
	if len(cands) == 0 {
		return out, nil, false
	}
	ck, _ := l.cfg.Proxy.(Checker)
	b := &narrowing{l: l, ctx: ctx, done: done, in: in, cands: cands, o: o}
	if checked && ck != nil {
		b.check = ck
		if !b.run(err) {
			o.Trials = b.trials
			return out, nil, false
		}
		bad = b.bad
		err = nil
		if !bytes.Equal(b.pass.Config, l.applied) {
			err = l.reload(ctx, done, *b.pass, o)
		}
		if err == nil {
			o.Trials = b.trials
			return *b.pass, bad, true
		}
		if errors.Is(err, errStopped) {
			o.Trials = b.trials
			return out, nil, false
		}
		// The rest passes the check but not the reload: narrow the
		// candidates kept down by Apply, without the quarantined ones.
		drop := map[instKey]bool{}
		for k := range bad {
			drop[k] = true
		}
		in.Snapshot = without(in.Snapshot, drop, false)
		b = &narrowing{l: l, ctx: ctx, done: done, in: in, cands: b.kept, o: o, trials: b.trials}
		if len(b.cands) == 0 {
			o.Trials = b.trials
			return out, nil, false
		}
	}
	ok = b.run(err)
	o.Trials = b.trials
	if !ok {
		return out, nil, false
	}
	for k, e := range b.bad {
		if bad == nil {
			bad = map[instKey]string{}
		}
		bad[k] = e
	}
	// The last trial that passed is the base with kept; it is live
	// already unless a later one failed after it.
	if !bytes.Equal(b.pass.Config, l.applied) {
		if err := l.reload(ctx, done, *b.pass, o); err != nil {
			return out, nil, false
		}
	}
	return *b.pass, bad, true
}

// reload waits for the reload limit and applies out, keeping it as the
// running configuration when the proxy accepts it.
func (l *LB) reload(ctx context.Context, done <-chan struct{}, out generator.Output, o *Outcome) error {
	if at := l.cfg.ReloadLimit.Next(l.reloads, time.Now()); at.After(time.Now()) {
		l.noteLimited(at)
		t := time.NewTimer(time.Until(at))
		select {
		case <-t.C:
		case <-done:
			t.Stop()
			return errStopped
		}
	}
	began := time.Now()
	l.reloads = l.cfg.ReloadLimit.keep(l.reloads, began)
	err := l.cfg.Proxy.Apply(ctx, out.Config)
	o.Proxy += time.Since(began)
	if err != nil {
		return err
	}
	l.applied, l.runtime = out.Config, out.Runtime
	l.certsPending = false // a reload reads every certificate file again
	if rp, ok := l.cfg.Proxy.(RuntimeProxy); ok && out.Runtime != nil {
		// The configuration carries the slots' values, so a reloaded
		// proxy starts from them; this re-asserts them on the proxy
		// that runs now, whatever it started from.
		if err := rp.Update(ctx, out.Config, out.Runtime); err != nil {
			l.log.Warn("checking the slots after a reload failed", "err", err)
		}
	}
	l.mu.Lock()
	l.stats.Applies++
	l.mu.Unlock()
	return nil
}

// limited reports whether the reload limit delays a reload now; then it
// records that in o, counts and logs it (noteLimited), and sets notBefore
// so the loop tries again when the limit allows.
func (l *LB) limited(o *Outcome) bool {
	now := time.Now()
	at := l.cfg.ReloadLimit.Next(l.reloads, now)
	if !at.After(now) {
		return false
	}
	l.noteLimited(at)
	l.notBefore = at
	o.Result = ResultLimited
	return true
}

// noteLimited counts a reload the limit delays, and logs it unless it
// delayed one within the last window too.
func (l *LB) noteLimited(until time.Time) {
	now := time.Now()
	if l.limitedAt.IsZero() || now.Sub(l.limitedAt) > reloadWindow {
		l.log.Warn("reload limit reached: changes wait and are applied together",
			"reloads-per-minute", l.cfg.ReloadLimit.PerMinute, "next-reload-in", until.Sub(now).Round(time.Millisecond))
	}
	l.limitedAt = now
	l.mu.Lock()
	l.stats.ReloadsDelayed++
	l.mu.Unlock()
}

// quarantineFound quarantines the instances of bad, found in snap, and
// adds them to the refusals, logging each (as logRefusals does).
func (l *LB) quarantineFound(snap catalog.Snapshot, bad map[instKey]string) {
	fps := fingerprints(snap)
	keys := slices.SortedFunc(func(yield func(instKey) bool) {
		for k := range bad {
			if !yield(k) {
				return
			}
		}
	}, func(a, b instKey) int { return cmp.Or(cmp.Compare(a.app, b.app), cmp.Compare(a.node, b.node)) })
	var added []Refusal
	for i, k := range keys {
		q := quarantined{fp: fps[k], reason: QuarantineReason + bad[k]}
		l.quarantine[k] = q
		delete(l.guard.routed, k)
		added = append(added, Refusal{Application: k.app, Node: k.node, Reason: q.reason})
		if i < maxRefusalLines {
			l.log.Warn("refused: not routed", "application", k.app, "node", k.node, "reason", q.reason)
		}
	}
	if len(keys) > maxRefusalLines {
		l.log.Warn("refused: more instances not routed", "more", len(keys)-maxRefusalLines, "quarantined", len(keys))
	}
	l.mu.Lock()
	l.refusals = append(l.refusals, added...)
	sortRefusals(l.refusals)
	l.stats.Refused = len(l.refusals)
	l.stats.RefusalEvents += len(added)
	l.stats.Quarantined = len(l.quarantine)
	l.stats.QuarantineEvents += len(added)
	l.mu.Unlock()
}
