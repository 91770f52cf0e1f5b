// Package generator turns a membership snapshot into proxy configuration
// text. Generators are pure: no I/O, no clock, no randomness; the same input
// always yields byte-identical output, so an unchanged cluster never causes a
// reload. Generators are plugins registered by name, like seed providers.
package generator

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"github.com/scrimplb/scrimp/catalog"
	"github.com/scrimplb/scrimp/plugin"
)

// Input is everything a generator renders from.
type Input struct {
	// Snapshot is the live membership; its values are already validated.
	Snapshot catalog.Snapshot
	// ListenAddr is the IP address the proxy accepts traffic on.
	ListenAddr string
	// Standalone asks for a complete configuration file for a proxy that
	// scrimp runs itself (managed mode) instead of a fragment to include in
	// a system proxy's configuration (external mode).
	Standalone bool
	// StateDir is where a standalone configuration keeps pid, log and temp
	// files.
	StateDir string
	// AsRoot says that the standalone proxy is started as root (the
	// managed runner decides; never from the network): a generator whose
	// proxy does not drop privileges by itself must then name an
	// unprivileged user for the workers. HAProxy's does; nginx switches
	// to its default user on its own.
	AsRoot bool
	// TLS holds the load balancer's certificates (files on the load
	// balancer, never sent over gossip), for https applications.
	TLS []TLSCert
	// ACME, when set, routes the HTTP-01 challenge path of its domains on
	// its plain-HTTP port to scrimp's challenge handler (see ACMERoute).
	ACME *ACMERoute
	// Retained are applications that had backends and lost them all. A
	// generator keeps their listeners and answers 503 with Retry-After
	// (HTTP) instead of refusing connections or routing them elsewhere.
	Retained []catalog.Application
	// NginxLua says that the managed runner's nginx can run the lua
	// balancer (Debian's libnginx-mod-http-lua, -ndk and lua-resty-core
	// load): the runner found out, since generators do no I/O. The nginx
	// generator's "auto" balancer uses lua then.
	NginxLua bool
	// Previous is the Runtime of the configuration the proxy runs now, nil
	// if none. A generator that renders server slots keeps every backend
	// in the slot it had, so that a membership change only fills or frees
	// slots. Render must not modify it.
	Previous *Runtime
}

// TLSCert is a certificate and key for a set of domains.
type TLSCert struct {
	// Domains the certificate serves; a leading "*." matches one label.
	Domains []string
	// Cert and Key are PEM file paths on the load balancer.
	Cert, Key string
}

// CertFor returns the certificate for domain: an exact match first, then a
// wildcard one. ok is false when none matches.
func CertFor(certs []TLSCert, domain string) (TLSCert, bool) {
	for _, c := range certs {
		for _, d := range c.Domains {
			if d == domain {
				return c, true
			}
		}
	}
	_, parent, found := strings.Cut(domain, ".")
	for _, c := range certs {
		for _, d := range c.Domains {
			if found && d == "*."+parent || d == domain {
				return c, true
			}
		}
	}
	return TLSCert{}, false
}

// Output is a rendered configuration.
type Output struct {
	// Config is the configuration text.
	Config []byte
	// Warnings name what was left out of Config and why (an application
	// whose backends disagree, a protocol the generator cannot serve). The
	// caller logs them when they change.
	Warnings []string
	// Runtime, when not nil, says which parts of Config a running proxy
	// can change without a reload; nil means every change needs one.
	Runtime *Runtime
}

// Runtime describes the server slots of a configuration: server lines a
// proxy can point at another address, reweight or take out while it runs
// (HAProxy's runtime API), so that backends joining and leaving need no
// reload.
type Runtime struct {
	// Skeleton is a hash of the configuration without the slots' values.
	// Two configurations with the same Skeleton differ only in Slots: a
	// proxy running one becomes the other by applying the other's Slots.
	Skeleton [32]byte
	// Slots are every slot of the configuration, grouped by Backend in
	// the configuration's order, then in slot order.
	Slots []Slot
	// Payload, when not nil, is what a proxy whose servers are not slots
	// takes instead: for nginx's lua balancer, the JSON membership of
	// every upstream, which its runner posts to the running nginx.
	Payload []byte
}

// SlotState is what a slot does with new requests.
type SlotState string

// Slot states.
const (
	// SlotReady sends requests to the slot's address.
	SlotReady SlotState = "ready"
	// SlotDrain sends no new requests; those in flight finish. It holds a
	// backend that is draining.
	SlotDrain SlotState = "drain"
	// SlotMaint is a free slot: no traffic, no checks.
	SlotMaint SlotState = "maint"
)

// Slot is one server line of a backend section.
type Slot struct {
	// Backend and Server name the slot in the proxy ("backend/server").
	Backend, Server string
	// Node is the backend node in the slot, empty when it is free.
	Node string
	// Addr is where the slot sends requests; unset when the slot is free.
	Addr netip.AddrPort
	// Weight is the slot's weight when it is not free.
	Weight int
	// State is the slot's state.
	State SlotState
}

// Generator renders proxy configuration. Render must be safe for
// concurrent use, must not retain in, and must not do I/O. An error means
// nothing usable could be rendered; a problem confined to one application
// leaves that application out and is reported in Output.Warnings.
type Generator interface {
	Render(in Input) (Output, error)
}

// Factory builds a generator from its raw JSON options (nil when absent).
// It must reject unknown fields.
type Factory func(raw json.RawMessage) (Generator, error)

// generators holds every registered generator's factory.
var generators = plugin.NewRegistry[Factory]("generator")

// Register makes a generator available under name; it panics on a duplicate
// name, a programming error.
func Register(name string, f Factory) { generators.Register(name, f) }

// Names returns the registered generator names, sorted.
func Names() []string { return generators.Names() }

// New builds the generator registered as name.
func New(name string, raw json.RawMessage) (Generator, error) {
	f, ok := generators.Lookup(name)
	if !ok {
		return nil, fmt.Errorf("lb.generator: unknown generator %q (known: %v)", name, Names())
	}
	g, err := f(raw)
	if err != nil {
		return nil, fmt.Errorf("lb.generator-options (%s): %w", name, err)
	}
	return g, nil
}

// checkServer re-checks what a backend contributes to a server line; the
// catalog validated it on arrival, and this keeps every generator safe on
// its own.
func checkServer(s catalog.Server) error {
	if err := catalog.CheckNodeName(s.Node); err != nil {
		return fmt.Errorf("node name: %w", err)
	}
	if !s.Addr.IsValid() || s.Addr.Zone() != "" {
		return fmt.Errorf("address %q is not an IP address without zone", s.Addr)
	}
	if err := catalog.CheckPort(s.Port); err != nil {
		return fmt.Errorf("application port: %w", err)
	}
	if s.Weight < 1 || s.Weight > catalog.MaxWeight {
		return fmt.Errorf("weight %d is not in 1-%d", s.Weight, catalog.MaxWeight)
	}
	if s.MaxFails < 0 || s.MaxFails > catalog.MaxMaxFails {
		return fmt.Errorf("max-fails %d is not in 0-%d", s.MaxFails, catalog.MaxMaxFails)
	}
	if s.FailTimeout != "" {
		if err := catalog.CheckTimeout(s.FailTimeout); err != nil {
			return fmt.Errorf("fail-timeout: %w", err)
		}
	}
	return nil
}
