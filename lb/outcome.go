package lb

import (
	"slices"
	"time"
)

// Result names what one pass of the loop did with a render.
type Result string

// The results of a pass.
const (
	// ResultApplied: the proxy checked and loaded the new configuration.
	ResultApplied Result = "applied"
	// ResultUpdated: a RuntimeProxy took it without a reload.
	ResultUpdated Result = "updated"
	// ResultUnchanged: the text equals the running configuration.
	ResultUnchanged Result = "unchanged"
	// ResultRejected: the proxy refused it; the previous one runs on.
	ResultRejected Result = "rejected"
	// ResultRenderFailed: the generator failed; nothing was handed on.
	ResultRenderFailed Result = "render-failed"
	// ResultDeferred: the same text was refused before and its backoff
	// has not passed; the proxy was not asked.
	ResultDeferred Result = "deferred"
	// ResultQuarantined: the proxy refused the configuration; the
	// instances that caused it were found and quarantined (see
	// Refusals), and the rest was applied.
	ResultQuarantined Result = "quarantined"
	// ResultLimited: the reload limit (ReloadLimit) delays the reload;
	// the proxy was not asked, and a later pass applies what changed
	// meanwhile too.
	ResultLimited Result = "rate-limited"
	// ResultCertsUpdated: the text was unchanged but certificate files
	// got new contents (Config.Certs), which a CertProxy loaded without
	// a reload.
	ResultCertsUpdated Result = "certs-updated"
	// ResultCertsReloaded: the text was unchanged but certificate files
	// got new contents, and the proxy reloaded the running text to load
	// them.
	ResultCertsReloaded Result = "certs-reloaded"
)

// Outcome is one pass of the loop, returned as a value for the status
// interface and metrics rather than read back from counters.
type Outcome struct {
	// At is when the pass started.
	At time.Time `json:"at"`
	// Result is what the pass did.
	Result Result `json:"result"`
	// Render is how long admission and the generator took.
	Render time.Duration `json:"render"`
	// Check is how long the proxy's check took when it ran apart from
	// the apply (zero when the proxy checks inside Apply).
	Check time.Duration `json:"check,omitempty"`
	// Proxy is how long the proxy took to apply or update (its check
	// included when it checks inside Apply); zero when it was not asked.
	Proxy time.Duration `json:"proxy,omitempty"`
	// Latency is from the first membership change this pass answered to
	// the end of the pass; zero for passes no change started (the first
	// render, a retry, a resync with nothing pending).
	Latency time.Duration `json:"latency,omitempty"`
	// Bytes is the size of the rendered configuration.
	Bytes int `json:"bytes"`
	// Applications and Backends are how many applications and backend
	// nodes the render routed to.
	Applications int `json:"applications"`
	Backends     int `json:"backends"`
	// Error is the generator's or the proxy's error, empty on success;
	// after a quarantine, the error of the configuration as a whole.
	Error string `json:"error,omitempty"`
	// Trials is how many configurations the pass tried (checked or
	// applied) to narrow a refused one down; Quarantined is how many
	// instances it quarantined.
	Trials      int `json:"trials,omitempty"`
	Quarantined int `json:"quarantined,omitempty"`
}

// historySize is how many passes that changed something (or failed)
// History keeps; unchanged passes only replace the newest pass, so a
// quiet load balancer's history still shows its last reloads.
const historySize = 32

// History returns the last passes that did something (applied, updated,
// rejected, failed), oldest first, and the newest pass of any kind. Safe
// for concurrent use; the result is the caller's.
func (l *LB) History() (changes []Outcome, last Outcome) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.history), l.last
}

// record keeps o and hands it to OnOutcome. Called from the loop.
func (l *LB) record(o Outcome) {
	l.mu.Lock()
	l.last = o
	if o.Result != ResultUnchanged && o.Result != ResultDeferred && o.Result != ResultLimited {
		if len(l.history) == historySize {
			l.history = slices.Delete(l.history, 0, 1)
		}
		l.history = append(l.history, o)
	}
	l.mu.Unlock()
	if l.cfg.OnOutcome != nil {
		l.cfg.OnOutcome(o)
	}
}
