// Package seed finds the cluster a new node should join. Providers are
// plugins: each one registers itself by name from its own file, decodes its
// own section of the "seed" configuration, and is looked up with New.
//
// Adding a provider is one new file: a type implementing Provider (and
// Publisher if it can advertise load balancers), and an init func calling
// Register.
package seed

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strconv"

	"github.com/scrimplb/scrimp/config"
	"github.com/scrimplb/scrimp/keyring"
	"github.com/scrimplb/scrimp/plugin"
)

// Provider returns the gossip addresses of nodes to join.
//
// Seeds may block on I/O and must honour ctx. It is called from one
// goroutine at a time, on every join attempt, so providers re-read their
// source each call (a DNS name is re-resolved, a file re-read). An empty
// list with a nil error means "no seeds known yet".
type Provider interface {
	Seeds(ctx context.Context) ([]string, error)
}

// Publisher is implemented by providers where load balancers advertise
// themselves (an S3 object, an external program). Load balancers call
// Publish on start, periodically and when their address changes, and
// Withdraw when they leave gracefully. Both may block on I/O and must honour
// ctx.
type Publisher interface {
	Publish(ctx context.Context, self string) error
	Withdraw(ctx context.Context, self string) error
}

// Rekeyer is implemented by providers that sign or check records with a
// key derived from the cluster's keyring. A node calls Rekey after a key
// rotation changed its keyring (primary first), so that records are
// signed with the new primary and checked against the keys the cluster
// now holds. It never blocks and is safe to call concurrently with the
// provider's other methods.
type Rekeyer interface {
	Rekey(keys keyring.Keys) error
}

// Closer is implemented by providers that hold resources (watchers,
// connections). Close is safe to call more than once.
type Closer interface {
	Close() error
}

// Env is what a provider's factory may use besides its own options.
type Env struct {
	// Logger receives the provider's log lines.
	Logger *slog.Logger
	// DefaultPort is the gossip port to assume for addresses without one.
	DefaultPort int
	// Keys is the cluster keyring (keyring.Load; the primary first), or
	// nil. With keys, records are signed with a key derived from the
	// primary, and records that are unsigned or verify against none of
	// the keys are skipped. Without, records are unsigned and accepted
	// unchecked, as before keys existed.
	Keys keyring.Keys
	// NodeName is this node's memberlist name, carried in the records it
	// publishes so that an operator can tell whose record is whose.
	NodeName string
}

// Factory builds a provider from its raw JSON section (nil when the section
// is absent). It must reject unknown fields and invalid values with errors
// that name the field.
type Factory func(raw json.RawMessage, env Env) (Provider, error)

// providers holds every registered provider's factory.
var providers = plugin.NewRegistry[Factory]("seed provider")

// Register makes a provider available under name. It panics if name is
// registered twice, like database/sql.Register: that is a programming error.
func Register(name string, f Factory) { providers.Register(name, f) }

// Providers returns the registered provider names, sorted.
func Providers() []string { return providers.Names() }

// New builds the provider c names from its section of the configuration.
func New(c config.Seed, env Env) (Provider, error) {
	f, ok := providers.Lookup(c.Provider)
	if !ok {
		return nil, fmt.Errorf("seed.provider: unknown provider %q (known: %v)", c.Provider, Providers())
	}
	if env.Logger == nil {
		env.Logger = slog.New(slog.DiscardHandler)
	}
	p, err := f(c.Section(), env)
	if err != nil {
		return nil, fmt.Errorf("seed.%s: %w", c.Provider, err)
	}
	return p, nil
}

// DecodeStrict decodes a provider's JSON section into v, rejecting unknown
// fields. A nil section leaves v as it is (the provider's defaults).
func DecodeStrict(raw json.RawMessage, v any) error { return plugin.DecodeOptions(raw, v) }

// CheckAddress validates a seed address: host:port with a port in 1-65535,
// or a bare host given defaultPort. It returns the address in host:port form.
// Providers use it on everything they read, so that a garbage record is
// skipped instead of joined.
func CheckAddress(s string, defaultPort int) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if defaultPort == 0 || s == "" {
			return "", fmt.Errorf("seed address %q: %w", s, err)
		}
		host, port = s, strconv.Itoa(defaultPort)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return "", fmt.Errorf("seed address %q: port %q is not in 1-65535", s, port)
	}
	if host == "" {
		return "", fmt.Errorf("seed address %q: empty host", s)
	}
	for _, label := range []byte(host) {
		if label <= ' ' || label > '~' || label == '/' || label == '@' {
			return "", fmt.Errorf("seed address %q: host %q has an invalid character", s, host)
		}
	}
	return net.JoinHostPort(host, port), nil
}
