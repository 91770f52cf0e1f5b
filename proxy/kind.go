package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/plugin"
)

// Kind is everything scrimp knows about one sort of proxy: which
// generator renders for it, how managed mode runs it, and what external
// mode uses for what the configuration leaves empty. Kinds register
// themselves from their own file (kind_nginx.go, kind_haproxy.go, …), so
// adding a proxy touches no switch; lb.generator names the kind.
type Kind struct {
	// Name is the kind's name, the value of lb.generator.
	Name string
	// Generator names the registered generator (package generator) that
	// renders this kind's configuration.
	Generator string
	// NewManaged builds the runner of managed mode; nil when the kind runs
	// only in external mode.
	NewManaged NewManagedFunc
	// Binary is the executable managed mode runs when lb.proxy-binary is
	// empty, looked up in PATH.
	Binary string
	// ConfigFile and PidFile are the names of the configuration and pid
	// files the managed runner keeps in its state directory.
	ConfigFile, PidFile string
	// External holds external mode's defaults.
	External ExternalDefaults
}

// ExternalDefaults are what external mode uses for the settings a
// configuration leaves empty. A zero field has no default: the
// configuration must give that setting.
type ExternalDefaults struct {
	// Target is the file scrimp writes (lb.generator-target).
	Target string
	// Check returns the check command (lb.check-command) for the file
	// target, the configured or the default one.
	Check func(target string) []string
	// Reload is the reload command (lb.reload-command).
	Reload []string
}

// Managed is a proxy instance scrimp runs itself from a complete
// configuration in its state directory. Apply is called from one
// goroutine (the load balancer loop); Close stops the proxy and is safe to
// call twice.
type Managed interface {
	// Apply checks config and only if the proxy accepts it makes it live;
	// the first Apply starts the proxy.
	Apply(ctx context.Context, config []byte) error
	// Dir is the absolute state directory, which a standalone
	// configuration names.
	Dir() string
	Close() error
}

// NewManagedFunc prepares a managed runner: binary is the proxy
// executable, stateDir its state directory (created), timeout bounds each
// check and reload. Nothing runs until the first Apply.
type NewManagedFunc func(binary, stateDir string, timeout time.Duration, log *slog.Logger) (Managed, error)

// kinds holds every registered proxy kind.
var kinds = plugin.NewRegistry[Kind]("proxy kind")

// RegisterKind makes k available under k.Name. It panics on a name
// registered twice, a programming error.
func RegisterKind(k Kind) { kinds.Register(k.Name, k) }

// LookupKind returns the kind registered as name.
func LookupKind(name string) (Kind, bool) { return kinds.Lookup(name) }

// KindNames returns the registered kind names, sorted.
func KindNames() []string { return kinds.Names() }

// Setup is a load balancer's proxy configuration resolved against its
// kind: what the configuration left empty is filled from the kind.
type Setup struct {
	// Kind is the kind lb.generator names.
	Kind Kind
	// Binary is the proxy executable of managed mode.
	Binary string
	// Target, Check and Reload are the file and commands of external
	// mode.
	Target        string
	Check, Reload []string
}

// Resolve looks up the proxy kind cfg.LB names and fills the settings the
// configuration left empty from it. It reports, with their JSON paths, an
// unknown kind, a mode the kind cannot run in and a setting external mode
// needs that neither the configuration nor the kind gives. It does no I/O;
// `scrimp validate` runs it as startup does.
func Resolve(cfg *config.Config) (Setup, config.Problems) {
	var ps config.Problems
	add := func(path, reason string) { ps = append(ps, config.Problem{File: cfg.File, Path: path, Reason: reason}) }
	c := cfg.LB
	if c == nil {
		add("lb", "required to set up a proxy")
		return Setup{}, ps
	}
	k, ok := LookupKind(c.Generator)
	if !ok {
		add("lb.generator", fmt.Sprintf("unknown generator %q (known: %s)", c.Generator, strings.Join(KindNames(), ", ")))
		return Setup{}, ps
	}
	s := Setup{Kind: k}
	switch c.Mode {
	case "managed":
		if k.NewManaged == nil {
			add("lb.mode", fmt.Sprintf("managed mode runs %s; generator %q needs mode \"external\"", strings.Join(managedKinds(), " or "), k.Name))
		}
		s.Binary = c.ProxyBinary
		if s.Binary == "" {
			s.Binary = k.Binary
		}
	case "external":
		s.Target = c.GeneratorTarget
		if s.Target == "" {
			s.Target = k.External.Target
		}
		s.Check, s.Reload = c.CheckCommand, c.ReloadCommand
		if len(s.Check) == 0 && k.External.Check != nil && s.Target != "" {
			s.Check = k.External.Check(s.Target)
		}
		if len(s.Reload) == 0 {
			s.Reload = k.External.Reload
		}
		noDefault := fmt.Sprintf("required in external mode: generator %q has no default", k.Name)
		if s.Target == "" {
			add("lb.generator-target", noDefault)
		}
		if len(s.Check) == 0 && k.External.Check == nil {
			add("lb.check-command", noDefault)
		}
		if len(s.Reload) == 0 {
			add("lb.reload-command", noDefault)
		}
	}
	// Any other mode is config.Validate's to report.
	return s, ps
}

// managedKinds names the kinds that run in managed mode.
func managedKinds() []string {
	var names []string
	for _, n := range KindNames() {
		if k, _ := LookupKind(n); k.NewManaged != nil {
			names = append(names, n)
		}
	}
	return names
}
